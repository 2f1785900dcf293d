"""Accelerated array values: pytree leaves that stand in for float arrays.

`QTensor` (quantized), `ScaledTensor` (low-precision data times a scale) and `MaskedTensor` (value
and a pruning mask) are frozen Equinox modules, hence registered dataclass pytrees, and
`quax.ArrayValue`s, so `jaxaccel.accelerate` can dispatch on them. Each one can always be
`materialise`d into the plain array it represents; that is the safe fall-through for every
primitive that has no faster rule.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import quax
from jax._src import core
from jaxtyping import Array, Float, Shaped

from pallas_kernels import pack_nibbles, unpack_nibbles

from ._errors import InputError
from ._formats import (
    BlockParams,
    Format,
    Granularity,
    PerChannel,
    describe,
)

__all__ = ["ActQuant", "QTensor", "ScaledTensor", "MaskedTensor", "quantize_array", "materialise"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ActQuant:
    """How activations entering a W8A8 matmul are quantized to int8.

    Attributes:
        static: ``False``: a dynamic absmax scale per token (row), computed at run time.
            ``True``: per-channel static scales calibrated offline and stored in the weight's
            ``act_scale`` (MergeQuant); the activation is then ``round(x / act_scale)``.
    """

    static: bool = False


class QTensor(quax.ArrayValue):
    """A quantized array: codes, block parameters and static format metadata.

    The logical array (what `materialise` returns) has shape ``core_shape`` (plus any leading
    batch axes the payload gained from ``vmap``/stacking). It is stored in *kernel layout*: the
    logical axes ``contract_axes`` are flattened into the rows ``K`` and ``out_axes`` into the
    columns ``N`` of a ``[K, N]`` matrix, as `pallas_kernels.quant_matmul` reads it.

    Attributes:
        payload: codes ``[*batch, K, N]`` (8-bit) or ``uint8[*batch, K, Np // 2]`` (4-bit, packed
            two per byte, ``Np`` = N rounded up to even).
        scales: block scales ``[*batch, K // gk, Ns]`` (Ns is 1 or Np).
        zero: float32 zero points (asymmetric integer formats) or ``None``.
        scales_neg: negative-side scales (AFPQ) or ``None``.
        tensor_scale: second-level float32 scale (NVFP4) or ``None``.
        act_scale: ``[*batch, K]`` divisor applied to activations before a W8A8 matmul
            (SmoothQuant smoothing factors, or MergeQuant static scales) or ``None``.
        fmt: the `Format` (static).
        core_shape: logical shape without batch axes (static).
        contract_axes, out_axes: the logical axes forming K and N, in storage order (static).
        logical_dtype: dtype of the represented array (static).
        act: `ActQuant` for W8A8 weights, ``None`` for weight-only (static).
    """

    payload: Array
    scales: Array
    zero: Array | None
    scales_neg: Array | None
    tensor_scale: Array | None
    act_scale: Array | None
    fmt: Format = eqx.field(static=True)
    core_shape: tuple[int, ...] = eqx.field(static=True)
    contract_axes: tuple[int, ...] = eqx.field(static=True)
    out_axes: tuple[int, ...] = eqx.field(static=True)
    logical_dtype: Any = eqx.field(static=True)
    act: ActQuant | None = eqx.field(static=True, default=None)

    # -- shapes -------------------------------------------------------------------------------
    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.payload.shape[:-2])

    @property
    def k(self) -> int:
        return math.prod(self.core_shape[a] for a in self.contract_axes)

    @property
    def n(self) -> int:
        return math.prod(self.core_shape[a] for a in self.out_axes)

    def aval(self) -> core.ShapedArray:
        return core.ShapedArray(self.batch_shape + self.core_shape, self.logical_dtype)

    @property
    def params(self) -> BlockParams:
        return BlockParams(self.scales, self.zero, self.scales_neg, self.tensor_scale)

    # -- values -------------------------------------------------------------------------------
    def codes(self) -> Array:
        """Unpacked codes ``[*batch, K, Np]``."""
        if self.fmt.element_code.is_4bit:
            lo, hi = unpack_nibbles(self.payload)
            return jnp.concatenate([lo, hi], axis=-1)
        return self.payload

    def dequantize_2d(self) -> Float[Array, "*batch K N"]:
        """The logical weight in kernel layout ``[*batch, K, N]`` as float32 (padding removed).

        For W8A8 weights with an ``act_scale`` the stored codes represent ``act_scale * W``; the
        division is undone here so that ``x @ dequantize_2d()`` approximates ``x @ W``.
        """

        def one(codes, p, a):
            w = self.fmt.decode(codes, p)
            return w if a is None else w / a[:, None]

        codes = self.codes()
        fn = one
        for _ in self.batch_shape:
            fn = jax.vmap(fn)
        return fn(codes, self.params, self.act_scale)[..., : self.n]

    def materialise(self) -> Array:
        w2 = self.dequantize_2d()
        nb = len(self.batch_shape)
        storage_shape = tuple(self.core_shape[a] for a in self.contract_axes + self.out_axes)
        w = w2.reshape(self.batch_shape + storage_shape)
        perm = self.contract_axes + self.out_axes
        inv = tuple(int(i) for i in np.argsort(perm))
        w = jnp.transpose(w, tuple(range(nb)) + tuple(nb + i for i in inv))
        return w.astype(self.logical_dtype)

    def nbytes(self) -> int:
        """Bytes of storage: payload plus every block parameter."""
        leaves = [
            x
            for x in (
                self.payload,
                self.scales,
                self.zero,
                self.scales_neg,
                self.tensor_scale,
                self.act_scale,
            )
            if x is not None
        ]
        return int(sum(x.size * jnp.dtype(x.dtype).itemsize for x in leaves))

    def __repr__(self) -> str:
        kind = "W8A8 " if self.act is not None else ""
        return (
            f"QTensor({kind}{describe(self.fmt)}, shape={self.batch_shape + self.core_shape}, "
            f"K={self.k}, groups={self.scales.shape[-2]}, {self.nbytes()} bytes)"
        )


def _check_float(w: Any, where: str) -> None:
    dt = jnp.dtype(getattr(w, "dtype", None) or np.asarray(w).dtype)
    if jnp.issubdtype(dt, jnp.complexfloating):
        raise InputError(
            f"{where}: cannot quantize a complex array (dtype {dt}); split it into real parts"
        )
    if not jnp.issubdtype(dt, jnp.floating):
        raise InputError(
            f"{where}: can only quantize floating-point arrays, got dtype {dt}; "
            "exclude this leaf from the selection"
        )


def quantize_array(
    w: Shaped[Array, "..."],
    fmt: Format,
    granularity: Granularity = PerChannel(),
    *,
    contract_axes: tuple[int, ...] | None = None,
    act: ActQuant | None = None,
    act_scale: Array | None = None,
    params: BlockParams | None = None,
    where: str = "array",
) -> QTensor:
    """Quantize one float array into a `QTensor` (round to nearest).

    Args:
        w: the float array (at least 2-D).
        fmt: the number format.
        granularity: scale blocking along the contraction axes (ignored by formats with a fixed
            block, MXFP4 and NVFP4).
        contract_axes: logical axes that a matmul contracts over; default ``(0,)`` for 2-D
            (``x @ w``) and all but the last axis for N-D (HWIO convolution kernels).
        act: `ActQuant` to make a W8A8 weight, or ``None`` for weight-only.
        act_scale: per-input divisor of the activations (SmoothQuant / MergeQuant), shape ``[K]``.
        params: precomputed block parameters (GPTQ); by default fitted to ``w``.
        where: the leaf's path, used in error messages.

    Returns:
        A `QTensor` whose `materialise` is within the format's error bound of ``w``.
    """
    _check_float(w, where)
    w = jnp.asarray(w)
    if w.ndim < 2:
        raise InputError(
            f"{where}: only matrices and higher-rank kernels can be quantized, got shape {w.shape}"
        )
    if w.size == 0:
        raise InputError(f"{where}: cannot quantize an empty array (shape {w.shape})")
    if not isinstance(w, jax.core.Tracer) and not bool(jnp.isfinite(w).all()):
        bad = int(jnp.size(w) - jnp.isfinite(w).sum())
        raise InputError(f"{where}: weight has {bad} NaN/inf entries; refusing to quantize it")
    if contract_axes is None:
        contract_axes = (0,) if w.ndim == 2 else tuple(range(w.ndim - 1))
    contract_axes = tuple(a % w.ndim for a in contract_axes)
    out_axes = tuple(a for a in range(w.ndim) if a not in contract_axes)
    if not out_axes or not contract_axes:
        raise InputError(
            f"{where}: contract_axes {contract_axes} must leave at least one output axis"
        )
    k = math.prod(w.shape[a] for a in contract_axes)
    n = math.prod(w.shape[a] for a in out_axes)
    w2 = jnp.transpose(w, contract_axes + out_axes).reshape(k, n).astype(jnp.float32)

    if fmt.fixed_block is not None:
        gk = fmt.fixed_block
        if k % gk:
            raise InputError(
                f"{where}: {describe(fmt)} needs the contraction axis to be a multiple of its "
                f"block of {gk}, got length {k}"
            )
        per_column = True
    else:
        gk = granularity.group_rows(k, where=where)
        per_column = granularity.per_column
    if fmt.element_code.is_4bit and n % 2:
        w2 = jnp.pad(w2, ((0, 0), (0, 1)))
    if params is None:
        params = fmt.fit(w2, gk, per_column)
    codes = fmt.encode(w2, params)
    payload = pack_nibbles(codes) if fmt.element_code.is_4bit else codes
    if act_scale is not None:
        act_scale = jnp.asarray(act_scale, jnp.float32).reshape(k)
    return QTensor(
        payload=payload,
        scales=params.scales,
        zero=params.zero,
        scales_neg=params.scales_neg,
        tensor_scale=params.tensor_scale,
        act_scale=act_scale,
        fmt=fmt,
        core_shape=tuple(w.shape),
        contract_axes=contract_axes,
        out_axes=out_axes,
        logical_dtype=jnp.dtype(w.dtype),
        act=act,
    )


class ScaledTensor(quax.ArrayValue):
    """Low-precision ``data`` times a float32 ``scale`` (broadcastable), for scale propagation.

    The base for ``scalify``; for now it materialises for every primitive.
    """

    data: Array
    scale: Array
    logical_dtype: Any = eqx.field(static=True, default=jnp.dtype(jnp.float32))

    def aval(self) -> core.ShapedArray:
        return core.ShapedArray(self.data.shape, self.logical_dtype)

    def materialise(self) -> Array:
        return (self.data.astype(jnp.float32) * self.scale).astype(self.logical_dtype)


class MaskedTensor(quax.ArrayValue):
    """A value with a 0/1 ``mask`` (pruning); ``pattern`` names its static structure.

    The base for ``prune``; for now it materialises (``value * mask``) for every primitive.
    """

    value: Array
    mask: Array
    pattern: Any = eqx.field(static=True, default=None)

    def aval(self) -> core.ShapedArray:
        return core.ShapedArray(self.value.shape, self.value.dtype)

    def materialise(self) -> Array:
        return self.value * self.mask.astype(self.value.dtype)


def _is_value(x: Any) -> bool:
    return isinstance(x, quax.ArrayValue)


def materialise(tree: Any) -> Any:
    """Replace every accelerated array value in ``tree`` by the plain array it represents."""
    return jax.tree.map(lambda x: x.materialise() if _is_value(x) else x, tree, is_leaf=_is_value)
