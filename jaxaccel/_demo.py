"""``jaxaccel quantize-demo``: quantize a transformer-MLP-sized model with several recipes and
print bytes, output error against float32, and speed on this device."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

import equinox as eqx
import jax
import jax.numpy as jnp

from . import runtime
from ._accelerate import accelerate
from ._arrays import ActQuant
from ._explain import _median_time, explain
from ._formats import FP8, MXFP4, NF4, NVFP4, Group, Int4, Int8
from ._quantize import GPTQ, RTN, MergeQuant, QuantRecipe, SmoothQuant, quantize


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


def recipes() -> dict[str, QuantRecipe]:
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


RecipeName = Literal[
    "int8 weight-only",
    "int4 g128",
    "nf4 g64",
    "fp8 e4m3",
    "mxfp4",
    "nvfp4",
    "gptq int4 g128",
    "w8a8 dynamic",
    "w8a8 smoothquant",
    "w8a8 mergequant",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """Keys of ``jaxaccel quantize-demo`` (defaults: the ``small`` size).

    Attributes:
        d_model: width of the MLP blocks (a multiple of 128, for the grouped formats).
        blocks: number of MLP blocks.
        tokens: tokens per timed call.
        calibration_tokens: tokens of calibration data (4 batches).
        recipes: the subset of recipes to compare (default: all).
        reps: timed repetitions (median reported).
    """

    d_model: Annotated[int, runtime.Range(ge=128)] = 1024
    blocks: Annotated[int, runtime.Range(ge=1)] = 2
    tokens: Annotated[int, runtime.Range(ge=1)] = 32
    calibration_tokens: Annotated[int, runtime.Range(ge=4)] = 2048
    recipes: tuple[RecipeName, ...] | None = None
    reps: Annotated[int, runtime.Range(ge=1)] = 20

    def __post_init__(self):
        if self.d_model % 128:
            raise runtime.ConfigError(
                f"expected a multiple of 128 (the int4 g128 groups), got {self.d_model}",
                key="d_model",
            )


def _science(cfg: DemoConfig, *, key: jax.Array, out: Path, progress: bool) -> runtime.Summary:
    d, tokens = cfg.d_model, cfg.tokens
    kb, kc, kx, ko = jax.random.split(key, 4)
    model = MLPModel(tuple(Block(d, key=k) for k in jax.random.split(kb, cfg.blocks)))
    outliers = jax.random.choice(ko, d, (max(d // 64, 2),), replace=False)
    calib = [
        make_inputs(k, cfg.calibration_tokens // 4, d, outliers) for k in jax.random.split(kc, 4)
    ]
    x = make_inputs(kx, tokens, d, outliers)
    apply = lambda m, b: jax.vmap(m)(b)
    run_fn = jax.jit(accelerate(apply))
    ref = apply(model, x)
    fp32_ms = _median_time(jax.jit(apply), model, x, reps=cfg.reps) * 1e3
    fbytes = sum(leaf.nbytes for leaf in jax.tree.leaves(eqx.filter(model, eqx.is_array)))
    rows = [
        dict(
            recipe="fp32", bytes=int(fbytes), ratio_bytes=1.0, rel_err=0.0, ms=fp32_ms, speedup=1.0
        )
    ]
    chosen = {n: r for n, r in recipes().items() if not cfg.recipes or n in cfg.recipes}
    with runtime.Progress(len(chosen), "quantize-demo", unit="recipe", enabled=progress) as bar:
        for name, recipe in chosen.items():
            data = calib if recipe.calibration is not None else None
            qm = quantize(model, recipe, data=data, apply=apply)
            y = run_fn(qm, x)
            err = float(jnp.linalg.norm(y - ref) / jnp.linalg.norm(ref))
            ms = _median_time(run_fn, qm, x, reps=cfg.reps) * 1e3
            rep = explain(qm, batch=tokens, measure=False)
            rows.append(
                dict(
                    recipe=name,
                    bytes=rep.total_bytes,
                    ratio_bytes=fbytes / rep.total_bytes,
                    rel_err=err,
                    ms=ms,
                    speedup=fp32_ms / ms,
                    kernels=sorted({r.kernel for r in rep.layers}),
                )
            )
            bar.update(1)
    header = f"{'recipe':<18} {'bytes':>11} {'smaller':>8} {'rel.err':>9} {'ms':>9} {'vs fp32':>8}"
    lines = [
        f"quantize-demo: {cfg.blocks} MLP block(s), d={d}, {tokens} tokens per call, "
        f"device {jax.devices()[0]}",
        header,
        "-" * len(header),
    ]
    for r in rows:
        lines.append(
            f"{r['recipe']:<18} {r['bytes']:>11} {r['ratio_bytes']:>7.2f}x {r['rel_err']:>9.2e} "
            f"{r['ms']:>9.3f} {r['speedup']:>7.2f}x"
        )
    return runtime.Summary(
        job="quantize-demo",
        results=dict(d_model=d, blocks=cfg.blocks, tokens=tokens, rows=rows),
        table="\n".join(lines),
    )


JOB = runtime.Job(
    name="quantize-demo",
    description=__doc__ or "",
    config=DemoConfig,
    science=_science,
    sizes={
        "tiny": dict(d_model=128, blocks=1, tokens=8, calibration_tokens=512, reps=5),
        "full": dict(d_model=4096, blocks=2, tokens=32, calibration_tokens=4096),
    },
    options=(
        runtime.Option(
            flag="--recipes", key="recipes", help="comma-separated subset, e.g. 'int4 g128,mxfp4'"
        ),
    ),
)
