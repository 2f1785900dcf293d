"""jaxaccel quantization vs Qwix PTQ vs float32, same weights, same inputs, same process.

Models (Flax NNX, float32, fixed seed):

- ``MLP 1024→4096→1024``: ``nnx.Linear`` ×2 with GELU between, at batch M = 8 and 32;
- ``x[M,4096]·W[4096,4096]``: one ``nnx.Linear(4096, 4096, use_bias=False)``, M = 1, 8, 32.

Methods, each run by jaxaccel and by Qwix on the same model:

- ``W8A8``: int8 per-channel weights, int8 activations with a dynamic per-token scale;
  ours ``RTN(fmt=Int8(), activations=ActQuant())``, Qwix ``weight_qtype=int8, act_qtype=int8``;
- ``int8 weight-only``: ours ``RTN(fmt=Int8())``, Qwix ``weight_qtype=int8``;
- ``int4 g128 weight-only``: ours ``RTN(fmt=Int4(), granularity=Group(128))`` (packed two per
  byte), Qwix ``weight_qtype=int4, tile_size=128`` (stored as ``jnp.int4``).

Qwix runs as ``qwix.quantize_model(model, qwix.PtqProvider([rule]), x)`` (which quantizes the
model's own weights). Every path is one ``jax.jit`` of ``(state, x) -> nnx.merge(graphdef,
state)(x)`` (ours wrapped in ``jaxaccel.accelerate``), so all pay the same dispatch cost.

Metrics per (model, M, method):

- ``ms``: median wall time after warm-up, the paths timed in interleaved rounds (a fresh random
  order each round); peers float32 and Qwix;
- ``rel_err``: ``||y - y_fp32|| / ||y_fp32||`` on the timed input; peer Qwix;
- ``bytes``: storage of the quantized weight matrices (codes and scales; biases excluded);
  ours from ``jaxaccel.explain``, Qwix from its quantized arrays' ``nbytes``; peers float32 and Qwix.

Inputs: ``normal(0, 1)`` with 8 fixed input channels scaled ×20 (activation outliers).

Run: ``.venv/bin/python benchmarks/quantize.py [--quick]``; writes
``benchmarks/results/quantize.json`` and the ``quantize`` section of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import traceback
from collections.abc import Callable
from typing import Any

import _common as common  # benchmarks/ is on sys.path when this file runs as a script
import jax
import jax.numpy as jnp
import numpy as np
import qwix
from flax import nnx

import jaxaccel as ja

SEED = 0
OUTLIER_CHANNELS = 8
OUTLIER_GAIN = 20.0
INPUTS = f"x ~ normal(0, 1) with {OUTLIER_CHANNELS} fixed input channels scaled ×{OUTLIER_GAIN:g}"
FP32_PEER = "fp32 (same NNX model, jitted)"


# ----------------------------------------------------------------------------------------------
# models and inputs
# ----------------------------------------------------------------------------------------------


class MLP(nnx.Module):
    def __init__(self, d: int, h: int, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(d, h, rngs=rngs)
        self.fc2 = nnx.Linear(h, d, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(nnx.gelu(self.fc1(x)))


@dataclasses.dataclass(frozen=True)
class ModelCase:
    name: str  # e.g. "MLP 1024→4096→1024"
    make: Callable[[], nnx.Module]
    d_in: int
    batches: tuple[int, ...]
    weights: str  # the weights' shapes, for the bytes rows

    def case(self, m: int) -> str:
        if self.name.startswith("x[M"):
            return self.name.replace("M", str(m), 1)
        return f"{self.name} x[{m},{self.d_in}]"


MODELS = (
    ModelCase(
        "MLP 1024→4096→1024",
        lambda: MLP(1024, 4096, rngs=nnx.Rngs(SEED)),
        1024,
        (8, 32),
        "MLP 1024→4096→1024 weights (W[1024,4096] + W[4096,1024])",
    ),
    ModelCase(
        "x[M,4096]·W[4096,4096]",
        lambda: nnx.Linear(4096, 4096, use_bias=False, rngs=nnx.Rngs(SEED)),
        4096,
        (1, 8, 32),
        "W[4096,4096]",
    ),
)


def make_input(m: int, k: int) -> jax.Array:
    key = jax.random.fold_in(jax.random.key(SEED + 1), m * 100003 + k)
    x = jax.random.normal(key, (m, k), jnp.float32)
    channels = np.random.default_rng(SEED).choice(k, OUTLIER_CHANNELS, replace=False)
    gain = np.ones(k, np.float32)
    gain[channels] = OUTLIER_GAIN
    return x * jnp.asarray(gain)


# ----------------------------------------------------------------------------------------------
# methods
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    recipe: ja.Recipe
    qwix_rule: dict[str, Any]
    qwix_desc: str


METHODS = (
    Method(
        "W8A8",
        ja.RTN(fmt=ja.Int8(), activations=ja.ActQuant()),
        dict(weight_qtype=jnp.int8, act_qtype=jnp.int8),
        "Qwix W8A8 (PtqProvider: int8 weights, int8 dynamic acts)",
    ),
    Method(
        "int8 weight-only",
        ja.RTN(fmt=ja.Int8()),
        dict(weight_qtype=jnp.int8),
        "Qwix int8 weight-only (PtqProvider: weight_qtype=int8)",
    ),
    Method(
        "int4 g128 weight-only",
        ja.RTN(fmt=ja.Int4(), granularity=ja.Group(128)),
        dict(weight_qtype=jnp.int4, tile_size=128),
        "Qwix int4 weight-only (PtqProvider: weight_qtype=int4, tile_size=128)",
    ),
)


@dataclasses.dataclass
class Path:
    """One way to run the model: a jitted ``fn(state, x)``, its state, its weight bytes."""

    fn: Callable[[Any, jax.Array], jax.Array] | None
    state: Any
    bytes: int | None
    error: str | None = None
    info: str = ""
    model: Any = None  # the quantized model (ours), for `jaxaccel.explain`

    def call(self, x: jax.Array) -> Callable[[], jax.Array]:
        fn, state = self.fn, self.state
        return lambda: fn(state, x)


def _error_text(e: BaseException) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"


def _jitted(graphdef: Any, wrap: Callable[[Callable], Callable] = lambda f: f) -> Callable:
    return jax.jit(wrap(lambda state, x: nnx.merge(graphdef, state)(x)))


def _kernel_bytes(state: nnx.State) -> int:
    """Bytes of every array under a ``kernel`` entry of an NNX state (codes, scales, ...)."""
    total = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        if any(getattr(k, "key", None) == "kernel" for k in path):
            total += int(leaf.nbytes)
    return total


def fp32_path(model: nnx.Module) -> Path:
    graphdef, state = nnx.split(model)
    return Path(_jitted(graphdef), state, _kernel_bytes(state))


def ours_path(model: nnx.Module, method: Method) -> Path:
    try:
        q = ja.quantize(model, method.recipe)
        explanation = ja.explain(q, batch=1, measure=False)
        nbytes = sum(layer.bytes for layer in explanation.layers)
        graphdef, state = nnx.split(q)
        return Path(_jitted(graphdef, ja.accelerate), state, nbytes, model=q)
    except Exception as e:  # noqa: BLE001 - a failing path becomes a row note
        traceback.print_exc()
        return Path(None, None, None, error=_error_text(e))


def qwix_path(model: nnx.Module, method: Method, sample: jax.Array) -> Path:
    try:
        rule = qwix.QuantizationRule(module_path=".*", **method.qwix_rule)
        q = qwix.quantize_model(model, qwix.PtqProvider([rule]), sample)
        graphdef, state = nnx.split(q)
        info = ""
        int4 = [
            leaf
            for leaf in jax.tree.leaves(state)
            if getattr(leaf, "dtype", None) == jnp.dtype(jnp.int4)
        ]
        if int4:
            packed = sum(math.ceil(a.size / 2) for a in int4)
            stored = sum(int(a.nbytes) for a in int4)
            info = (
                f"Qwix stores jnp.int4 codes at {stored / sum(a.size for a in int4):g} "
                f"byte/element (jax nbytes); packed they would be {stored - packed} bytes fewer"
            )
        return Path(_jitted(graphdef), state, _kernel_bytes(state), info=info)
    except Exception as e:  # noqa: BLE001 - a failing Qwix config becomes a row note
        traceback.print_exc()
        return Path(None, None, None, error=_error_text(e))


def _ours_kernels(path: Path, m: int) -> str:
    """The kernels `jaxaccel.explain` says our quantized matmuls run at ``m`` tokens."""
    try:
        layers = ja.explain(path.model, batch=m, measure=False).layers
        return ", ".join(sorted({layer.kernel for layer in layers}))
    except Exception:  # noqa: BLE001
        return "?"


def _time_note(
    t: dict[str, common.Timing], errors: dict[str, str], a: str, b: str, kernels: str
) -> str:
    if a in errors:
        return f"ours failed: {errors[a]}"
    if b in errors:
        return f"peer failed: {errors[b]}"
    ta, tb = t[a], t[b]
    s = f"ours ({kernels}): {ta.note}" if kernels else ta.note
    return s if (ta.reps, ta.warmup) == (tb.reps, tb.warmup) else f"{s}; peer: {tb.note}"


# ----------------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------------


def _rel_err(y: jax.Array, ref: jax.Array) -> float:
    y64, r64 = np.asarray(y, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(y64 - r64) / np.linalg.norm(r64))


def run_model(mc: ModelCase, batches: tuple[int, ...], args: argparse.Namespace) -> list[dict]:
    rows: list[dict] = []
    model = mc.make()
    fp32 = fp32_path(model)
    sample = make_input(batches[0], mc.d_in)
    ours = {meth.name: ours_path(model, meth) for meth in METHODS}
    peers = {meth.name: qwix_path(model, meth, sample) for meth in METHODS}

    for meth in METHODS:  # bytes: independent of M
        o, p = ours[meth.name], peers[meth.name]
        case = f"{meth.name} {mc.weights}"
        note = o.error or "ours: QTensor payload + scales (jaxaccel.explain)"
        rows.append(common.row(case, "bytes", o.bytes, FP32_PEER, fp32.bytes, note=note))
        pnote = p.error or "; ".join(
            s for s in ("Qwix: qvalue + scale arrays' nbytes", p.info) if s
        )
        rows.append(common.row(case, "bytes", o.bytes, meth.qwix_desc, p.bytes, note=pnote))

    for m in batches:
        x = make_input(m, mc.d_in)
        paths: dict[str, Callable[[], jax.Array]] = {"fp32": fp32.call(x)}
        outputs: dict[str, jax.Array] = {}
        errors: dict[str, str] = {}
        for meth in METHODS:
            for who, path in (("ours", ours[meth.name]), ("qwix", peers[meth.name])):
                key = f"{who}:{meth.name}"
                if path.error:
                    errors[key] = path.error
                    continue
                try:  # compile and check once before timing
                    outputs[key] = jax.block_until_ready(path.call(x)())
                    paths[key] = path.call(x)
                except Exception as e:  # noqa: BLE001
                    traceback.print_exc()
                    errors[key] = _error_text(e)
        y_ref = jax.block_until_ready(paths["fp32"]())
        print(f"timing {mc.case(m)}: {len(paths)} paths ...", flush=True)
        t = common.time_paths(
            paths, warmup=args.warmup, reps=args.reps, min_reps=args.min_reps, budget_s=args.budget
        )
        for meth in METHODS:
            case = f"{meth.name} {mc.case(m)}"
            ok, pk = f"ours:{meth.name}", f"qwix:{meth.name}"
            t_ours = t[ok].median_ms if ok in t else None
            t_qwix = t[pk].median_ms if pk in t else None
            kernels = _ours_kernels(ours[meth.name], m) if ok in t else ""
            rows.append(
                common.row(
                    case,
                    "ms",
                    t_ours,
                    FP32_PEER,
                    t["fp32"].median_ms,
                    note=_time_note(t, errors, ok, "fp32", kernels),
                )
            )
            rows.append(
                common.row(
                    case,
                    "ms",
                    t_ours,
                    meth.qwix_desc,
                    t_qwix,
                    note=_time_note(t, errors, ok, pk, kernels),
                )
            )
            e_ours = _rel_err(outputs[ok], y_ref) if ok in outputs else None
            e_qwix = _rel_err(outputs[pk], y_ref) if pk in outputs else None
            enote = (
                f"ours failed: {errors[ok]}"
                if ok in errors
                else f"peer failed: {errors[pk]}"
                if pk in errors
                else "||y - y_fp32|| / ||y_fp32|| on the timed input"
            )
            rows.append(common.row(case, "rel_err", e_ours, meth.qwix_desc, e_qwix, note=enote))
            if e_ours is not None and e_qwix is not None and e_ours > 1.5 * e_qwix:
                print(
                    f"WARNING: {case}: our rel_err {e_ours:.4g} is {e_ours / e_qwix:.2f}x Qwix's "
                    f"{e_qwix:.4g} at the same bits",
                    flush=True,
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="M=8 only, few repetitions")
    parser.add_argument("--reps", type=int, default=None, help="timed calls per path (20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per path (3)")
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds of timed calls per slow path (4)"
    )
    parser.add_argument("--no-md", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()
    args.reps = args.reps or (5 if args.quick else 20)
    args.min_reps = min(5, args.reps)
    args.budget = args.budget or (2.0 if args.quick else 4.0)

    rows: list[dict] = []
    for mc in MODELS:
        batches = (8,) if args.quick else mc.batches
        rows += run_model(mc, batches, args)

    mode = "quick (--quick: M=8 only, few repetitions)" if args.quick else "full"
    report = common.write_results(
        "quantize",
        rows,
        extra={"mode": mode, "inputs": INPUTS, "qwix": qwix.__version__},
    )
    common.print_table(rows)
    print(f"\nwrote {common.RESULTS / 'quantize.json'}")
    if not args.no_md:
        intro = (
            "jaxaccel `quantize` + `accelerate` vs Qwix PTQ (`qwix.quantize_model` + `PtqProvider`, "
            f"qwix {qwix.__version__}) vs the float32 model, on the same Flax NNX models, the same "
            f"weights and the same inputs ({INPUTS}). Timed paths are jitted `(state, x)` "
            "functions run in interleaved rounds. `bytes` counts the weight matrices' codes and "
            f"scales (biases excluded). Mode: {mode}."
        )
        path = common.update_benchmarks_md(
            "quantize", report, title="Quantization (`benchmarks/quantize.py`)", intro=intro
        )
        print(f"updated {path}")


if __name__ == "__main__":
    main()
