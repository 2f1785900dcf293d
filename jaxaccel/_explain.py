"""`explain`: what quantization buys on this device, layer by layer, said plainly."""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import pallas_kernels as pk

from ._arrays import QTensor
from ._engine import describe as describe_model
from ._errors import InputError
from ._formats import describe

__all__ = ["explain", "Explanation", "LayerReport", "DeviceSpec"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSpec:
    """Peak compute and memory bandwidth used for roofline bounds."""

    name: str
    flops: float  # float32 FLOP/s
    bandwidth: float  # bytes/s
    measured: bool

    @staticmethod
    @functools.cache
    def detect() -> DeviceSpec:
        """Look up accelerators by kind; on CPU measure (once per process, ~1 s)."""
        dev = jax.devices()[0]
        kind = dev.device_kind.lower()
        table = {  # datasheet dense figures: (fp32-ish matmul FLOP/s, HBM bytes/s)
            "h100": (4.9e14, 3.35e12),  # TF32 tensor cores
            "h200": (4.9e14, 4.8e12),
            "a100": (1.56e14, 2.0e12),
            "v5e": (1.97e14, 8.2e11),
        }
        for key, (f, b) in table.items():
            if key in kind:
                return DeviceSpec(name=dev.device_kind, flops=f, bandwidth=b, measured=False)
        return DeviceSpec(
            name=f"{dev.platform}: {dev.device_kind}",
            flops=_measure_flops(),
            bandwidth=_measure_bandwidth(),
            measured=True,
        )


def _median_time(fn: Any, *args: Any, reps: int = 5) -> float:
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def _measure_bandwidth() -> float:
    x = jnp.ones((32 * 1024 * 1024 // 4,), jnp.float32)  # 32 MiB, larger than caches
    t = _median_time(jax.jit(jnp.sum), x)
    return x.nbytes / t


def _measure_flops() -> float:
    a = jnp.ones((1024, 1024), jnp.float32)
    t = _median_time(jax.jit(jnp.dot), a, a)
    return 2 * 1024**3 / t


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LayerReport:
    """One weight leaf: its storage, the kernel that runs it and its roofline bound."""

    path: str
    shape: tuple[int, ...]
    fmt: str
    bits_per_weight: float
    bytes: int
    float_bytes: int
    kernel: str
    bound_ms: float
    float_bound_ms: float
    measured_ms: float | None
    measured_float_ms: float | None
    warning: str | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Explanation:
    """The report returned by `explain`; ``str()`` renders it as a table."""

    device: DeviceSpec
    tokens: int
    layers: tuple[LayerReport, ...]
    total_bytes: int
    total_float_bytes: int

    @property
    def compression(self) -> float:
        return self.total_float_bytes / max(self.total_bytes, 1)

    def __str__(self) -> str:
        head = (
            f"device {self.device.name}: {self.device.flops / 1e9:.0f} GFLOP/s, "
            f"{self.device.bandwidth / 1e9:.1f} GB/s ({'measured' if self.device.measured else 'datasheet'}); "
            f"{self.tokens} token(s) per matmul"
        )
        cols = f"{'leaf':<34} {'format':<12} {'bits/w':>6} {'bytes':>10} {'kernel':<26} {'bound ms':>9} {'fp32 ms':>8}"
        lines = [head, cols, "-" * len(cols)]
        for r in self.layers:
            lines.append(
                f"{r.path[-34:]:<34} {r.fmt:<12} {r.bits_per_weight:>6.2f} {r.bytes:>10} "
                f"{r.kernel:<26} {r.bound_ms:>9.4f} {r.float_bound_ms:>8.4f}"
            )
        lines.append(
            f"total: {self.total_bytes} bytes vs {self.total_float_bytes} float "
            f"({self.compression:.2f}x smaller)"
        )
        if not self.layers:
            lines.insert(
                2, "(no quantized leaf: this model holds float weights only; run jaxaccel.quantize)"
            )
        warns = [f"warning: {r.path}: {r.warning}" for r in self.layers if r.warning]
        return "\n".join(lines + sorted(set(warns)))


def _kernel_name(q: QTensor, m: int, backend: str) -> str:
    if q.act is not None:
        return f"int8_matmul/{pk.int8_matmul_backend(backend)}"
    code = q.fmt.element_code
    chosen = pk.quant_matmul_backend(m, q.k, q.payload.shape[-1], q.scales.shape[-2], code, backend)
    return f"quant_matmul[{code.value}]/{chosen}"


def _time_layer(q: QTensor, m: int, backend: str) -> tuple[float, float]:
    """Median ms of this layer's quantized matmul and of the float32 matmul it replaces."""
    from ._accelerate import qmatmul

    x = jnp.ones((m, q.k), jnp.float32)
    w = q.dequantize_2d()
    run = jax.jit(lambda x, q: qmatmul(x, q, backend=backend))
    return _median_time(run, x, q) * 1e3, _median_time(jax.jit(jnp.dot), x, w) * 1e3


def explain(
    model: Any, *, batch: Any = 1, measure: bool = True, backend: str = "auto"
) -> Explanation:
    """Report bytes per weight, the kernel chosen and the roofline bound for every quantized leaf.

    Args:
        model: a model returned by `jaxaccel.quantize` (Equinox, NNX or a pytree).
        batch: tokens per matmul: an int, or an example input whose leading axes are the tokens.
        measure: time each distinct quantized matmul against the float32 matmul it replaces, on
            this device (about a second per distinct layer shape); slower paths get a warning.
        backend: the kernel backend to report (as passed to `jaxaccel.accelerate`).

    Returns:
        An `Explanation`; print it for a table. Layers measured slower than float32 carry a
        plain warning.
    """
    if isinstance(batch, bool) or isinstance(batch, int) and batch < 1:
        raise InputError(
            f"batch: expected a positive number of tokens or an example input, got {batch!r}"
        )
    if isinstance(batch, int):
        m = batch
    else:
        shape = np.shape(batch)
        m = int(math.prod(shape[:-1])) if len(shape) > 1 else 1
    spec = DeviceSpec.detect()
    infos = describe_model(model).infos
    reports = []
    timings: dict[Any, tuple[float, float]] = {}
    total = total_f = 0
    for info in infos:
        if info is None:
            continue
        leaf = info.value
        if not isinstance(leaf, QTensor):
            nb = int(leaf.size * leaf.dtype.itemsize)
            total += nb
            total_f += int(leaf.size * 4) if jnp.issubdtype(leaf.dtype, jnp.floating) else nb
            continue
        layers = math.prod(leaf.batch_shape)
        nbytes = leaf.nbytes()
        fbytes = int(math.prod(leaf.shape) * 4)
        total += nbytes
        total_f += fbytes
        k, n = leaf.k, leaf.n
        act = m * k * 4 + m * n * 4
        flops = 2.0 * m * k * n * layers
        bound = max(flops / spec.flops, (nbytes + act * layers) / spec.bandwidth) * 1e3
        fbound = max(flops / spec.flops, (fbytes + act * layers) / spec.bandwidth) * 1e3
        kernel = _kernel_name(leaf, m, backend)
        meas = meas_f = None
        warning = None
        if measure and not leaf.batch_shape:
            sig = (k, n, leaf.fmt, leaf.act, leaf.scales.shape, m)
            if sig not in timings:
                timings[sig] = _time_layer(leaf, m, backend)
            meas, meas_f = timings[sig]
            if meas > meas_f:
                warning = (
                    f"measured {meas:.3f} ms vs float32 {meas_f:.3f} ms at {m} token(s): "
                    f"{meas / meas_f:.1f}x slower than float on this device (it still saves memory)"
                )
        reports.append(
            LayerReport(
                path=info.path,
                shape=tuple(leaf.shape),
                fmt=("w8a8-" if leaf.act is not None else "") + describe(leaf.fmt),
                bits_per_weight=8.0 * nbytes / math.prod(leaf.shape),
                bytes=nbytes,
                float_bytes=fbytes,
                kernel=kernel,
                bound_ms=bound,
                float_bound_ms=fbound,
                measured_ms=meas,
                measured_float_ms=meas_f,
                warning=warning,
            )
        )
    return Explanation(
        device=spec, tokens=m, layers=tuple(reports), total_bytes=total, total_float_bytes=total_f
    )
