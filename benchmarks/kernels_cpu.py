"""CPU timings of the floor-1 matmul kernels, to choose what ``backend="auto"`` runs on CPU.

``x[M, 4096] @ W[4096, 4096]`` for M = 1, 8, 32, with weights stored as

- INT8: weight-only int8, per-channel float32 scales ``[1, N]``;
- INT4: packed int4, float32 scales per group of 128 along K;
- MXFP4: packed E2M1 with E8M0 (``uint8``) scales per group of 32;
- W8A8: int8 activations and weights (`int8_matmul`).

Each path is jitted and warmed up, then the paths are timed in interleaved rounds (so that load
from other processes on the machine hits them alike) and the median is reported. "ours" is what
``backend="auto"`` runs; each peer is another way to compute the same product:

- ``xla reference``: ``backend="xla"``: dequantize the whole weight to float32, then one dot;
- ``interpret kernel``: ``backend="interpret"`` with the default CPU tiles (for W8A8 only);
- ``jnp.int4 + XLA``: the weight stored as XLA's native ``jnp.int4``, dequantized and dotted;
- ``interpret block_k=...``: the kernel with other K steps (how the default tile was chosen).

Run: ``.venv/bin/python benchmarks/kernels_cpu.py``; it writes
``benchmarks/results/kernels_cpu.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import random
import statistics
import time
from collections.abc import Callable

import _common as common  # benchmarks/ is on sys.path when this file runs as a script
import jax
import jax.numpy as jnp

from pallas_kernels import BlockSizes, ElementCode, int8_matmul, quant_matmul

K = N = 4096
MS = (1, 8, 32)
SWEEP_BLOCK_K = (128, 256, 1024)


def _weights(key: jax.Array) -> dict[str, tuple]:
    k1, k2, k3, k4 = jax.random.split(key, 4)
    codes = jax.random.randint(k1, (K, N), -8, 8)
    packed = jax.random.randint(k2, (K, N // 2), 0, 256).astype(jnp.uint8)
    return {
        "INT8": (
            jax.random.randint(k3, (K, N), -127, 128).astype(jnp.int8),
            jax.random.uniform(k4, (1, N), minval=0.005, maxval=0.02),
            ElementCode.INT8,
        ),
        "INT4 g128": (
            packed,
            jax.random.uniform(k4, (K // 128, N), minval=0.005, maxval=0.02),
            ElementCode.INT4,
            codes.astype(jnp.int4),
        ),
        "MXFP4 g32": (
            packed,
            jax.random.randint(k4, (K // 32, N), 118, 124).astype(jnp.uint8),
            ElementCode.E2M1,
        ),
    }


def _int4_native(x, w, scales):
    # XLA's own sub-byte path: the weight lives as jnp.int4 and XLA unpacks it.
    g = scales.shape[0]
    wf = (w.astype(jnp.float32).reshape(g, K // g, N) * scales.reshape(g, 1, N)).reshape(K, N)
    return jnp.dot(x, wf, preferred_element_type=jnp.float32)


def _time(paths: dict[str, tuple[Callable, tuple]], repeats: int) -> dict[str, float]:
    for fn, args in paths.values():  # compile + warm up
        for _ in range(2):
            jax.block_until_ready(fn(*args))
    times: dict[str, list[float]] = {name: [] for name in paths}
    order = random.Random(0)
    for _ in range(repeats):
        # A fresh order every round: a path timed right after the XLA reference (which streams
        # a 64 MB float32 weight through memory) was seen to run up to 1.5x slower.
        for name in order.sample(list(paths), len(paths)):
            fn, args = paths[name]
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(1e3 * (time.perf_counter() - t0))
    return {name: statistics.median(ts) for name, ts in times.items()}


def _qm(code: ElementCode, backend: str, block_sizes: BlockSizes | None = None) -> Callable:
    return jax.jit(
        lambda x, p, s: quant_matmul(x, p, s, code=code, backend=backend, block_sizes=block_sizes)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-sweep", action="store_true", help="skip the block_k sweep")
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(__file__).parent / "results" / "kernels_cpu.json",
    )
    args = parser.parse_args()
    note = f"median of {args.repeats} interleaved runs after 2 warm-up calls"
    rows = []

    def add(case, ours_name, result, peers, paths):
        fn, fn_args = paths[ours_name]
        runs = (
            "interpreted Pallas kernel"
            if "pallas_call" in str(jax.make_jaxpr(fn)(*fn_args))
            else "XLA"
        )
        for peer in peers:
            rows.append(
                {
                    "case": case,
                    "metric": "ms",
                    "ours": round(result[ours_name], 3),
                    "ours_path": f"{ours_name} (runs the {runs})",
                    "peer": peer,
                    "peer_value": round(result[peer], 3),
                    "ratio": round(result[peer] / result[ours_name], 3),
                    "better": "lower",
                    "note": note,
                }
            )
        print(case, "  ".join(f"{k}={v:.2f}" for k, v in result.items()), flush=True)

    key = jax.random.key(0)
    weights = _weights(key)
    default_k = BlockSizes.get_default("cpu").block_k
    for name, (payload, scales, code, *native) in weights.items():
        for m in MS:
            x = jax.random.normal(jax.random.fold_in(key, m), (m, K), jnp.float32)
            paths = {
                "auto": (_qm(code, "auto"), (x, payload, scales)),
                "xla reference": (_qm(code, "xla"), (x, payload, scales)),
                f"interpret block_k={default_k}": (_qm(code, "interpret"), (x, payload, scales)),
            }
            if native:
                paths["jnp.int4 + XLA"] = (jax.jit(_int4_native), (x, native[0], scales))
            if not args.no_sweep:
                for bk in SWEEP_BLOCK_K:
                    bs = BlockSizes(block_m=1 << 16, block_n=1 << 16, block_k=bk)
                    paths[f"interpret block_k={bk}"] = (
                        _qm(code, "interpret", bs),
                        (x, payload, scales),
                    )
            result = _time(paths, args.repeats)
            add(f"{name} M={m}", "auto", result, [p for p in paths if p != "auto"], paths)

    k1, k2, k3 = jax.random.split(jax.random.fold_in(key, 99), 3)
    wq = jax.random.randint(k1, (K, N), -127, 128).astype(jnp.int8)
    w_scale = jax.random.uniform(k2, (1, N), minval=0.005, maxval=0.02)
    for m in MS:
        xq = jax.random.randint(k3, (m, K), -127, 128).astype(jnp.int8)
        x_scale = jnp.full((m, 1), 0.01, jnp.float32)
        operands = (xq, wq, x_scale, w_scale)
        paths = {
            name: (jax.jit(lambda *a, b=b: int8_matmul(*a, backend=b)), operands)
            for name, b in (
                ("auto", "auto"),
                ("xla reference", "xla"),
                ("interpret kernel", "interpret"),
            )
        }
        result = _time(paths, args.repeats)
        add(f"W8A8 M={m}", "auto", result, ["xla reference", "interpret kernel"], paths)

    report = {
        "benchmark": "kernels_cpu",
        "device": common.device_string(),
        "jax": jax.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "shape": f"x float32 [M, {K}] @ W [{K}, {N}]",
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
