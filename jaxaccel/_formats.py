"""Number formats and granularities for quantized weights.

Every format works on a weight in *kernel layout* ``w[K, N]`` (``K`` is the contraction axis) cut into
blocks of ``gk`` consecutive rows (the granularity) and one or all columns. A format turns each block
into integer/fp8/fp4 *codes* plus block parameters (scales, and where the format has them a zero point,
negative-side scales or a tensor-level scale). The codes and the layout of the parameters are the ones
`pallas_kernels.quant_matmul` reads, so the kernels dequantize exactly what we store.

Error bounds (per element, ``s`` the block scale after any rounding of the scale itself):

===========  =========================================================================
format       bound on ``|w - dequantize(quantize(w))|``
===========  =========================================================================
Int8/Int4    ``s / 2`` (symmetric: ``s = absmax / (2^(b-1) - 1/2)``; asymmetric: ``s = range / (2^b - 1)``)
FP8          ``|w| * 2^-(m+1)`` plus the subnormal step ``s * 2^(emin - m) / 2``
NF4          ``s * max_gap / 2`` with ``s = absmax`` and NF4's widest gap
FP4/MXFP4/   ``s * 1`` (E2M1's widest gap, between 4 and 6, is 2) with ``s = absmax / 6``
NVFP4/AFPQ   (MXFP4 rounds ``s`` up to a power of two: at most 2x larger)
===========  =========================================================================
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, final

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from pallas_kernels import (
    E2M1_VALUES,
    NF4_VALUES,
    ElementCode,
    decode_codes,
    decode_scales,
    encode_e8m0,
)

from ._errors import InputError

__all__ = [
    "Format",
    "Int8",
    "Int4",
    "FP8",
    "NF4",
    "FP4",
    "MXFP4",
    "NVFP4",
    "AFPQ",
    "Granularity",
    "PerTensor",
    "PerChannel",
    "Group",
    "AdaptiveGroup",
    "BlockParams",
]

_TINY = np.float32(1e-30)


# --------------------------------------------------------------------------------------------
# Granularity
# --------------------------------------------------------------------------------------------


class Granularity(abc.ABC):
    """How many consecutive rows along the contraction axis share one scale."""

    @abc.abstractmethod
    def group_rows(self, k: int, *, where: str) -> int:
        """Rows per block for a contraction axis of length ``k``; ``where`` names the leaf."""

    per_column: ClassVar[bool] = True


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PerTensor(Granularity):
    """One scale for the whole tensor."""

    per_column: ClassVar[bool] = False

    def group_rows(self, k: int, *, where: str) -> int:
        return k


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PerChannel(Granularity):
    """One scale per output channel (column of the kernel-layout weight)."""

    def group_rows(self, k: int, *, where: str) -> int:
        return k


@dataclasses.dataclass(frozen=True, slots=True)
class Group(Granularity):
    """One scale per output channel and per ``size`` consecutive inputs; ``size`` must divide K."""

    size: int = 128

    def __post_init__(self):
        if not isinstance(self.size, int) or self.size < 1:
            raise InputError(f"Group.size must be a positive int, got {self.size!r}")

    def group_rows(self, k: int, *, where: str) -> int:
        if k % self.size:
            raise InputError(
                f"{where}: group size {self.size} does not divide the contraction axis of length "
                f"{k}; pick a divisor of {k} or use AdaptiveGroup({self.size}) to fall back to a "
                "coarser group automatically"
            )
        return self.size


@dataclasses.dataclass(frozen=True, slots=True)
class AdaptiveGroup(Granularity):
    """FineQuant-style group-wise scales that become coarser where ``size`` does not divide K.

    Uses ``size`` when it divides ``K``, else the smallest divisor of ``K`` above ``size`` (one
    group per channel when ``K`` is prime). (Kim et al. 2023, "FineQuant: Unlocking Efficiency with
    Fine-Grained Weight-Only Quantization for LLMs", arXiv:2308.09723, uses groups of 32-128 and
    coarser ones where a matrix calls for it.)
    """

    size: int = 128

    def group_rows(self, k: int, *, where: str) -> int:
        for g in range(min(self.size, k), k + 1):
            if k % g == 0:
                return g
        return k


# --------------------------------------------------------------------------------------------
# Block parameters
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BlockParams:
    """Per-block parameters of a quantized ``[K, N]`` weight.

    ``scales`` is ``[K // gk, Ns]`` with ``Ns`` 1 (per tensor) or N; ``zero`` and ``scales_neg``
    have the same shape; ``tensor_scale`` is a float32 scalar (NVFP4's second level).
    """

    scales: Any
    zero: Any = None
    scales_neg: Any = None
    tensor_scale: Any = None


jax.tree_util.register_dataclass(
    BlockParams, data_fields=["scales", "zero", "scales_neg", "tensor_scale"], meta_fields=[]
)


def _blocks(w: Float[Array, "K N"], gk: int, per_column: bool) -> Array:
    """Reshape to ``[K//gk, gk, N]`` blocks (``N`` collapsed into the block when per tensor)."""
    k, n = w.shape
    b = w.reshape(k // gk, gk, n)
    if not per_column:
        b = b.reshape(k // gk, gk * n, 1)
    return b


def _expand(p: Array, gk: int, n: int) -> Array:
    """Broadcast block parameters ``[K//gk, Ns]`` to the full ``[K, N]`` weight."""
    full = jnp.repeat(p, gk, axis=0)
    return jnp.broadcast_to(full, (full.shape[0], n))


def _nearest(values: np.ndarray, y: Array) -> Array:
    """Index of the nearest entry of a sorted-or-not code book (ties to the lower index)."""
    table = jnp.asarray(values, jnp.float32).reshape((1,) * y.ndim + (-1,))
    d = jnp.abs(y[..., None] - table)
    return jnp.argmin(d, axis=-1).astype(jnp.uint8)


_E2M1_POS = E2M1_VALUES[:8]  # 0 .. 6, codes 0..7; the sign bit is code bit 3


def _e2m1_encode(y: Array) -> Array:
    """Round-to-nearest E2M1 code of ``y`` (already divided by its scale, |y| <= 6)."""
    mag = _nearest(_E2M1_POS, jnp.minimum(jnp.abs(y), jnp.float32(6.0)))
    return jnp.where(y < 0, mag | jnp.uint8(8), mag)


# --------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------


class Format(abc.ABC):
    """A number format: how a ``[K, N]`` block of weights becomes codes plus block parameters."""

    code: ClassVar[ElementCode]
    #: Fixed block size along K imposed by the format (MX/NV formats), or ``None``.
    fixed_block: ClassVar[int | None] = None

    @property
    def bits(self) -> int:
        return self.element_code.bits

    @property
    def element_code(self) -> ElementCode:
        return self.code

    @abc.abstractmethod
    def fit(self, w: Float[Array, "K N"], gk: int, per_column: bool) -> BlockParams:
        """Choose block parameters for ``w`` (blocks of ``gk`` rows; one column or all)."""

    @abc.abstractmethod
    def encode(self, w: Float[Array, "K N"], p: BlockParams) -> Array:
        """Codes of ``w`` given its block parameters (unpacked: one code per element)."""

    def decode(self, codes: Array, p: BlockParams) -> Float[Array, "K N"]:
        """Dequantize unpacked codes to float32."""
        k, n = codes.shape
        gk = k // p.scales.shape[0]
        v = decode_codes(codes, self.element_code)
        if p.zero is not None:
            v = v - _expand(p.zero, gk, n)
        s = _expand(decode_scales(p.scales), gk, n)
        if p.scales_neg is not None:
            s = jnp.where(v < 0, _expand(p.scales_neg, gk, n), s)
        out = v * s
        if p.tensor_scale is not None:
            out = out * p.tensor_scale
        return out

    @abc.abstractmethod
    def error_bound(self, w: Float[Array, "K N"], p: BlockParams) -> Float[Array, "K N"]:
        """Per-element bound on ``|w - decode(encode(w, p), p)|`` (see the module docstring)."""

    def fake_quant(self, w: Float[Array, "K N"], p: BlockParams) -> Float[Array, "K N"]:
        """Quantize then dequantize ``w`` with fixed block parameters (used by GPTQ)."""
        return self.decode(self.encode(w, p), p)

    def scale_bytes(self, p: BlockParams) -> int:
        """Bytes taken by the block parameters."""
        leaves = [x for x in (p.scales, p.zero, p.scales_neg, p.tensor_scale) if x is not None]
        return int(sum(x.size * x.dtype.itemsize for x in leaves))


def _absmax(b: Array) -> Array:
    return jnp.max(jnp.abs(b), axis=1)


def _scale_grid(p: BlockParams, k: int, n: int) -> Array:
    """The decoded block scale of every element (tensor scale included), ``[K, N]``."""
    s = _expand(decode_scales(p.scales), k // p.scales.shape[0], n)
    return s if p.tensor_scale is None else s * p.tensor_scale


@dataclasses.dataclass(frozen=True, slots=True)
class _IntFormat(Format):
    symmetric: bool = True
    qbits: ClassVar[int] = 8

    @property
    def element_code(self) -> ElementCode:
        sym, asym = {
            8: (ElementCode.INT8, ElementCode.UINT8),
            4: (ElementCode.INT4, ElementCode.UINT4),
        }[self.qbits]
        return sym if self.symmetric else asym

    def fit(self, w, gk, per_column):
        b = _blocks(w, gk, per_column)
        if self.symmetric:
            # absmax maps to 2^(b-1) - 1/2 so the whole code range [-2^(b-1), 2^(b-1) - 1] is used;
            # the clipped end (+absmax -> 2^(b-1) - 1) is still within half a step.
            half = np.float32(2 ** (self.qbits - 1) - 0.5)
            return BlockParams(scales=jnp.maximum(_absmax(b) / half, _TINY))
        lo, hi = jnp.min(b, axis=1), jnp.max(b, axis=1)
        # The zero point stays a float so the grid's ends are exactly lo and hi. A (near-)constant
        # block would make s tiny and the zero point huge, losing float32 precision in
        # w / s + zero: keep s >= 2^-12 of the block's magnitude.
        mag = jnp.maximum(jnp.abs(lo), jnp.abs(hi))
        s = jnp.maximum((hi - lo) / np.float32(2**self.qbits - 1), mag * np.float32(2.0**-12))
        s = jnp.maximum(s, _TINY)
        return BlockParams(scales=s, zero=-lo / s)

    def encode(self, w, p):
        k, n = w.shape
        gk = k // p.scales.shape[0]
        s = _expand(p.scales, gk, n)
        if self.symmetric:
            lo, hi = -(2 ** (self.qbits - 1)), 2 ** (self.qbits - 1) - 1
            q = jnp.clip(jnp.round(w / s), np.float32(lo), np.float32(hi))
            if self.qbits == 8:
                return q.astype(jnp.int8)
            return (q.astype(jnp.int32) & 0xF).astype(jnp.uint8)
        z = _expand(p.zero, gk, n)
        q = jnp.clip(jnp.round(w / s + z), np.float32(0), np.float32(2**self.qbits - 1))
        return q.astype(jnp.uint8)

    def error_bound(self, w, p):
        # Half a step, plus float32 rounding of w / s (+ zero) and of code * s: with a zero
        # point |w / s + zero| can reach 2^12 + 2^b, otherwise it stays below 2^(b-1).
        s = _scale_grid(p, *w.shape)
        return s * np.float32(0.5 + (2.0**-9 if not self.symmetric else 2.0**-14))


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Int8(_IntFormat):
    """8-bit integers: symmetric (int8 codes in [-128, 127]) or asymmetric (uint8 + zero point)."""

    qbits: ClassVar[int] = 8
    code: ClassVar[ElementCode] = ElementCode.INT8


@final
@dataclasses.dataclass(frozen=True, slots=True)
class Int4(_IntFormat):
    """4-bit integers packed two per byte: symmetric ([-8, 7]) or asymmetric ([0, 15] + zero)."""

    qbits: ClassVar[int] = 4
    code: ClassVar[ElementCode] = ElementCode.INT4


@final
@dataclasses.dataclass(frozen=True, slots=True)
class FP8(Format):
    """fp8 with a float32 block scale mapping the block's absmax to the format's largest value.

    Args:
        variant: ``"e4m3"`` (float8_e4m3fn, max 448, 3 mantissa bits) or ``"e5m2"`` (max 57344).
    """

    variant: str = "e4m3"

    def __post_init__(self):
        if self.variant not in ("e4m3", "e5m2"):
            raise InputError(f"FP8.variant must be 'e4m3' or 'e5m2', got {self.variant!r}")

    @property
    def element_code(self) -> ElementCode:
        return ElementCode.FP8_E4M3 if self.variant == "e4m3" else ElementCode.FP8_E5M2

    code: ClassVar[ElementCode] = ElementCode.FP8_E4M3

    @property
    def dtype(self):
        return self.element_code.storage_dtype

    @property
    def mantissa_bits(self) -> int:
        return 3 if self.variant == "e4m3" else 2

    @property
    def max_value(self) -> float:
        return float(jnp.finfo(self.dtype).max)

    def fit(self, w, gk, per_column):
        b = _blocks(w, gk, per_column)
        return BlockParams(scales=jnp.maximum(_absmax(b) / np.float32(self.max_value), _TINY))

    def encode(self, w, p):
        k, n = w.shape
        s = _expand(p.scales, k // p.scales.shape[0], n)
        y = jnp.clip(w / s, -self.max_value, self.max_value)
        return y.astype(self.dtype)

    def error_bound(self, w, p):
        m = self.mantissa_bits
        emin = float(jnp.finfo(self.dtype).minexp)
        s = _scale_grid(p, *w.shape)
        return jnp.abs(w) * np.float32(2.0 ** -(m + 1)) + s * np.float32(2.0 ** (emin - m - 1))


@final
@dataclasses.dataclass(frozen=True, slots=True)
class NF4(Format):
    """4-bit NormalFloat (Dettmers et al. 2023, QLoRA): 16 normal quantiles, absmax block scale."""

    code: ClassVar[ElementCode] = ElementCode.NF4

    def fit(self, w, gk, per_column):
        return BlockParams(scales=jnp.maximum(_absmax(_blocks(w, gk, per_column)), _TINY))

    def encode(self, w, p):
        k, n = w.shape
        s = _expand(p.scales, k // p.scales.shape[0], n)
        return _nearest(NF4_VALUES, w / s)

    def error_bound(self, w, p):
        return _scale_grid(p, *w.shape) * np.float32(np.max(np.diff(NF4_VALUES)) / 2)


class _E2M1Blocks(Format):
    """FP4 E2M1 elements with one scale per block: the shared encoder of `FP4`, `MXFP4` and
    `NVFP4`, which differ in how they choose (and store) the block scales."""

    code: ClassVar[ElementCode] = ElementCode.E2M1

    def encode(self, w, p):
        return _e2m1_encode(w / _scale_grid(p, *w.shape))


@final
@dataclasses.dataclass(frozen=True, slots=True)
class FP4(_E2M1Blocks):
    """FP4 E2M1 codes with a float32 scale per block (absmax maps to 6)."""

    def fit(self, w, gk, per_column):
        b = _blocks(w, gk, per_column)
        return BlockParams(scales=jnp.maximum(_absmax(b) / np.float32(6.0), _TINY))

    def error_bound(self, w, p):
        return _scale_grid(p, *w.shape) * np.float32(1.0)


@final
@dataclasses.dataclass(frozen=True, slots=True)
class MXFP4(_E2M1Blocks):
    """OCP Microscaling FP4: E2M1 elements, one E8M0 (power-of-two) scale per 32 inputs.

    The shared exponent is rounded *up* so the block maximum never clips (the OCP MX v1.0 spec
    rounds down and saturates; rounding up trades at most one binade of resolution for no clipping).
    """

    fixed_block: ClassVar[int | None] = 32

    def fit(self, w, gk, per_column):
        b = _blocks(w, gk, per_column)
        return BlockParams(scales=encode_e8m0(_absmax(b) / np.float32(6.0)))

    def error_bound(self, w, p):
        return _scale_grid(p, *w.shape) * np.float32(1.0)


_E4M3_MAX = np.float32(448.0)


@final
@dataclasses.dataclass(frozen=True, slots=True)
class NVFP4(_E2M1Blocks):
    """NVIDIA NVFP4: E2M1 elements, an e4m3 scale per 16 inputs, and a float32 tensor scale."""

    fixed_block: ClassVar[int | None] = 16

    def fit(self, w, gk, per_column):
        b = _blocks(w, gk, per_column)
        amax = _absmax(b)
        ts = jnp.maximum(jnp.max(amax) / (_E4M3_MAX * np.float32(6.0)), _TINY)
        bs = jnp.clip(amax / np.float32(6.0) / ts, np.float32(2.0**-9), _E4M3_MAX)
        return BlockParams(scales=bs.astype(jnp.float8_e4m3fn), tensor_scale=ts)

    def error_bound(self, w, p):
        # The e4m3 block scale is rounded (rel. error 2^-4), which can push |w/s| past 6 by that
        # much before saturating: add that clipping margin.
        return _scale_grid(p, *w.shape) * np.float32(1.0) + jnp.abs(w) * np.float32(2.0**-3)


@final
@dataclasses.dataclass(frozen=True, slots=True)
class AFPQ(Format):
    """Asymmetric FP4 (Zhang et al. 2023, arXiv:2311.01792): E2M1 codes with separate scales for
    the positive and the negative side of each block, so skewed blocks use the whole grid."""

    code: ClassVar[ElementCode] = ElementCode.E2M1

    def fit(self, w, gk, per_column):
        b = _blocks(w, gk, per_column)
        pos = jnp.maximum(jnp.max(b, axis=1) / np.float32(6.0), _TINY)
        neg = jnp.maximum(-jnp.min(b, axis=1) / np.float32(6.0), _TINY)
        return BlockParams(scales=pos, scales_neg=neg)

    def encode(self, w, p):
        k, n = w.shape
        gk = k // p.scales.shape[0]
        s = jnp.where(w < 0, _expand(p.scales_neg, gk, n), _expand(p.scales, gk, n))
        return _e2m1_encode(w / s)

    def error_bound(self, w, p):
        k, n = w.shape
        gk = k // p.scales.shape[0]
        return jnp.where(w < 0, _expand(p.scales_neg, gk, n), _scale_grid(p, k, n))


def error_bound(fmt: Format, w: Float[Array, "K N"], p: BlockParams) -> Float[Array, "K N"]:
    """Per-element bound on ``|w - dequantize(quantize(w))|`` (``fmt.error_bound``)."""
    return fmt.error_bound(w, p)


def describe(fmt: Format) -> str:
    """Short human name of a format (used in tables)."""
    name = type(fmt).__name__
    if isinstance(fmt, _IntFormat) and not fmt.symmetric:
        return name.lower() + "-asym"
    if isinstance(fmt, FP8):
        return f"fp8-{fmt.variant}"
    return name.lower()


def _is_format(x: Any) -> bool:
    return isinstance(x, Format)
