"""``jaxaccel quantize-demo``: quantize a transformer-MLP-sized model with several recipes and
print bytes, output error against float32, and speed on this device."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from . import _cli
from ._accelerate import accelerate
from ._arrays import ActQuant
from ._explain import _median_time, explain
from ._formats import FP8, MXFP4, NF4, NVFP4, Group, Int4, Int8
from ._quantize import GPTQ, RTN, MergeQuant, Recipe, SmoothQuant, quantize

_SIZES = {  # d_model, blocks, tokens per call, calibration tokens
    "tiny": (128, 1, 8, 512),
    "small": (1024, 2, 32, 2048),
    "full": (4096, 2, 32, 4096),
}


class Block(eqx.Module):
    """A transformer MLP block: x + W2 gelu(W1 x)."""

    up: eqx.nn.Linear
    down: eqx.nn.Linear

    def __init__(self, d: int, *, key: jax.Array):
        k1, k2 = jax.random.split(key)
        self.up = eqx.nn.Linear(d, 4 * d, key=k1)
        self.down = eqx.nn.Linear(4 * d, d, key=k2)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.down(jax.nn.gelu(self.up(x)))


class MLPModel(eqx.Module):
    blocks: tuple[Block, ...]

    def __call__(self, x: jax.Array) -> jax.Array:
        for b in self.blocks:
            x = b(x)
        return x


def make_inputs(key: jax.Array, tokens: int, d: int, outliers: jax.Array) -> jax.Array:
    """Activations whose ``outliers`` channels are 20x larger in every token, as observed in
    LLMs (Dettmers et al. 2022, "LLM.int8()"): the outlier channels persist across inputs."""
    x = jax.random.normal(key, (tokens, d), jnp.float32)
    return x.at[:, outliers].multiply(jnp.float32(20.0))


def recipes() -> dict[str, Recipe]:
    """The recipes compared by the demo."""
    return {
        "int8 weight-only": RTN(fmt=Int8()),
        "int4 g128": RTN(fmt=Int4(), granularity=Group(128)),
        "nf4 g64": RTN(fmt=NF4(), granularity=Group(64)),
        "fp8 e4m3": RTN(fmt=FP8()),
        "mxfp4": RTN(fmt=MXFP4()),
        "nvfp4": RTN(fmt=NVFP4()),
        "gptq int4 g128": GPTQ(fmt=Int4(), granularity=Group(128)),
        "w8a8 dynamic": RTN(fmt=Int8(), activations=ActQuant()),
        "w8a8 smoothquant": SmoothQuant(alpha=0.5),
        "w8a8 mergequant": MergeQuant(),
    }


def run(size: str, seed: int, out: Any = None, only: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the demo; returns the summary (also written to ``out/summary.json`` when given)."""
    d, nblocks, tokens, ncal = _SIZES[size]
    key = jax.random.key(seed)
    kb, kc, kx, ko = jax.random.split(key, 4)
    model = MLPModel(tuple(Block(d, key=k) for k in jax.random.split(kb, nblocks)))
    outliers = jax.random.choice(ko, d, (max(d // 64, 2),), replace=False)
    calib = [make_inputs(k, ncal // 4, d, outliers) for k in jax.random.split(kc, 4)]
    x = make_inputs(kx, tokens, d, outliers)
    apply = lambda m, b: jax.vmap(m)(b)
    run_fn = jax.jit(accelerate(apply))
    ref = apply(model, x)
    reps = 5 if size == "tiny" else 20
    fp32_ms = _median_time(jax.jit(apply), model, x, reps=reps) * 1e3
    fbytes = sum(leaf.nbytes for leaf in jax.tree.leaves(eqx.filter(model, eqx.is_array)))
    rows = [
        dict(
            recipe="fp32", bytes=int(fbytes), ratio_bytes=1.0, rel_err=0.0, ms=fp32_ms, speedup=1.0
        )
    ]
    print(
        f"quantize-demo: {nblocks} MLP block(s), d={d}, {tokens} tokens per call, device {jax.devices()[0]}"
    )
    header = f"{'recipe':<18} {'bytes':>11} {'smaller':>8} {'rel.err':>9} {'ms':>9} {'vs fp32':>8}"
    print(header)
    print("-" * len(header))
    print(f"{'fp32':<18} {fbytes:>11} {1.0:>7.2f}x {0.0:>9.2e} {fp32_ms:>9.3f} {1.0:>7.2f}x")
    for name, recipe in recipes().items():
        if only and name not in only:
            continue
        qm = quantize(model, recipe, data=calib if recipe.needs_data else None, apply=apply)
        y = run_fn(qm, x)
        err = float(jnp.linalg.norm(y - ref) / jnp.linalg.norm(ref))
        ms = _median_time(run_fn, qm, x, reps=reps) * 1e3
        rep = explain(qm, batch=tokens, measure=False)
        row = dict(
            recipe=name,
            bytes=rep.total_bytes,
            ratio_bytes=fbytes / rep.total_bytes,
            rel_err=err,
            ms=ms,
            speedup=fp32_ms / ms,
            kernels=sorted({r.kernel for r in rep.layers}),
        )
        rows.append(row)
        print(
            f"{name:<18} {row['bytes']:>11} {row['ratio_bytes']:>7.2f}x {err:>9.2e} {ms:>9.3f} "
            f"{row['speedup']:>7.2f}x"
        )
    summary = dict(
        job="quantize-demo",
        size=size,
        seed=seed,
        device=str(jax.devices()[0]),
        d_model=d,
        blocks=nblocks,
        tokens=tokens,
        rows=rows,
    )
    if out is not None:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"wrote {out / 'summary.json'}")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of ``jaxaccel quantize-demo``."""
    p = _cli.common_parser("quantize-demo", __doc__ or "")
    p.add_argument("--recipes", nargs="*", default=None, help=f"subset of {list(recipes())}")
    ns = p.parse_args(argv)
    args = _cli.parse_common(ns)
    if ns.recipes:
        unknown = sorted(set(ns.recipes) - set(recipes()))
        if unknown:
            p.error(f"--recipes: unknown recipe(s) {unknown}; known: {list(recipes())}")
    size = args.config.get("size", args.size)
    run(size, args.seed, args.out, only=ns.recipes)
    return 0
