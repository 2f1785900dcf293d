"""CPU timings of `flash_attention`, to choose what ``backend="auto"`` runs on CPU.

SmolLM2 attention heads (Hq = 9 query heads sharing Hkv = 3 key/value heads, D = 64), float32:

- prefill without a cache: ``T = S = 128`` and ``512``, causal (``q_slots = arange(T)``);
- decode: one token (``T = 1``) against a preallocated cache of ``S = 512`` and ``2048`` slots
  filled to ``kv_len`` = S/2 (rows differ by a few slots), the token at slot ``kv_len - 1``;

each at batch B = 1 and 8. "ours" is ``backend="auto"``; the peers are the two paths it chooses
between: ``xla reference`` (``backend="xla"``, `flash_attention_reference`: full ``[T, S]``
float32 scores) and ``interpret kernel`` (``backend="interpret"``, the Pallas kernel run by
Pallas' interpreter with the default CPU tiles). ``--sweep`` adds other kernel tiles (how the
defaults were chosen). Each path is jitted and warmed up, then the paths are timed in
interleaved rounds in a fresh random order (`_common.time_paths`) and the medians reported.

Run: ``.venv/bin/python benchmarks/attention_cpu.py``; it writes
``benchmarks/results/attention_cpu.json``.
"""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Callable
from typing import Any

import _common as common  # benchmarks/ is on sys.path when this file runs as a script
import jax
import jax.numpy as jnp

from pallas_kernels import AttentionBlockSizes, flash_attention, flash_attention_backend

HQ, HKV, D = 9, 3, 64
# (name, B, T, S): prefill has T = S and no cache; decode has T = 1 and kv_len = S / 2.
CASES = [
    (f"{kind} B={b} T={t} S={s}", b, t, s)
    for kind, t, s in (
        ("prefill", 128, 128),
        ("prefill", 512, 512),
        ("decode", 1, 512),
        ("decode", 1, 2048),
    )
    for b in (1, 8)
]
SWEEP = [
    AttentionBlockSizes(block_q=bq, block_kv=bkv)
    for bq in (96, 384, 1536)
    for bkv in (64, 256, 512)
]


def _inputs(key: jax.Array, b: int, t: int, s: int, dtype: jnp.dtype) -> dict[str, Any]:
    kq, kk, kv = jax.random.split(key, 3)
    q = jax.random.normal(kq, (b, HQ, t, D)).astype(dtype)
    k = jax.random.normal(kk, (b, HKV, s, D)).astype(dtype)
    v = jax.random.normal(kv, (b, HKV, s, D)).astype(dtype)
    if t == 1:
        kv_len = s // 2 - 3 * jnp.arange(b, dtype=jnp.int32)  # about S/2, a little ragged
        q_slots = (kv_len - 1)[:, None]
    else:
        kv_len = jnp.full((b,), s, jnp.int32)
        q_slots = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    return dict(q=q, k=k, v=v, q_slots=q_slots, kv_len=kv_len)


def _path(
    inputs: dict[str, Any], backend: str, block_sizes: AttentionBlockSizes | None = None
) -> Callable[[], jax.Array]:
    fn = jax.jit(
        lambda q, k, v, q_slots, kv_len: flash_attention(
            q, k, v, q_slots=q_slots, kv_len=kv_len, backend=backend, block_sizes=block_sizes
        )
    )
    return lambda: fn(**inputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--sweep", action="store_true", help="also time other kernel tiles")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--out", type=pathlib.Path, default=common.RESULTS / "attention_cpu.json")
    args = parser.parse_args()
    dtype = jnp.dtype(args.dtype)
    default = AttentionBlockSizes.get_default("cpu")
    rows = []
    for i, (case, b, t, s) in enumerate(CASES):
        inputs = _inputs(jax.random.key(i), b, t, s, dtype)
        auto = flash_attention_backend(t, D)
        paths = {
            "auto": _path(inputs, "auto"),
            "xla reference": _path(inputs, "xla"),
            "interpret kernel": _path(inputs, "interpret"),
        }
        if args.sweep:
            for bs in SWEEP:
                if bs != default:
                    paths[f"interpret q{bs.block_q} kv{bs.block_kv}"] = _path(
                        inputs, "interpret", bs
                    )
        timings = common.time_paths(paths, reps=args.reps, budget_s=3.0, seed=i)
        ours = timings["auto"]
        for peer, timing in timings.items():
            if peer == "auto":
                continue
            rows.append(
                common.row(
                    f"{case} {dtype.name}",
                    "ms",
                    ours.median_ms,
                    peer,
                    timing.median_ms,
                    note=(
                        f"auto runs {auto}; {ours.note}; interpret tiles "
                        f"q{default.block_q} kv{default.block_kv} unless named"
                    ),
                )
            )
        print(
            f"{case:28s} auto={auto:9s} "
            + "  ".join(f"{n}={t.median_ms:.3f}" for n, t in timings.items()),
            flush=True,
        )
    report = common.write_results(
        "attention_cpu",
        rows,
        path=args.out,
        extra={"shape": f"Hq={HQ}, Hkv={HKV}, D={D}, {dtype.name}; decode kv_len ~ S/2"},
    )
    common.print_table(report["rows"])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
