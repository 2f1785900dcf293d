"""`quantize`: replace selected weights of a model by `QTensor`s, following a recipe.

Every recipe is a final `jaxaccel.Recipe` (the engine's abstract strategy): ``rewrite`` turns one
selected weight (and, for calibrated recipes, its activation statistics) into a `QTensor`; the
walking, selection, calibration and rebuilding are the shared engine's (`jaxaccel.transform`).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar, final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _select as select
from ._arrays import ActQuant, QTensor, _check_float, quantize_array
from ._engine import Calibration, LeafStats, Recipe, describe_leaves, transform
from ._errors import InputError
from ._formats import (
    NVFP4,
    BlockParams,
    Format,
    Granularity,
    Group,
    Int4,
    Int8,
    PerChannel,
    PerTensor,
)
from ._gptq import gptq
from ._smooth import smoothquant_factors, static_act_scale

__all__ = [
    "QuantRecipe",
    "RTN",
    "SmoothQuant",
    "MergeQuant",
    "GPTQ",
    "quantize",
    "describe_leaves",
]


# ----------------------------------------------------------------------------------------------
# Recipes
# ----------------------------------------------------------------------------------------------


class QuantRecipe(Recipe):
    """The family of quantization recipes (`RTN`, `SmoothQuant`, `MergeQuant`, `GPTQ`): each
    rewrites a selected weight into a `QTensor`."""

    @abc.abstractmethod
    def rewrite(
        self, leaf: select.Leaf, stats: LeafStats | None, *, key: jax.Array | None
    ) -> QTensor:
        """The `QTensor` replacing ``leaf``."""


def _check_fmt(name: str, fmt: Any, gran: Any) -> None:
    if not isinstance(fmt, Format):
        raise InputError(
            f"{name}.fmt: unknown format {fmt!r}; expected a jaxaccel format such as Int8(), "
            "Int4(), FP8(), NF4(), FP4(), MXFP4(), NVFP4() or AFPQ()"
        )
    if not isinstance(gran, Granularity):
        raise InputError(
            f"{name}.granularity: expected PerTensor(), PerChannel(), Group(n) or "
            f"AdaptiveGroup(n), got {gran!r}"
        )


def _check_select(name: str, sel: Any) -> None:
    if not isinstance(sel, select.Selector):
        raise InputError(
            f"{name}.select: expected a jaxaccel.select selector (e.g. select.linear_weights() & "
            f"~select.path('lm_head')), got {sel!r}"
        )


def _check_w8a8_weights(name: str, fmt: Format, gran: Granularity) -> None:
    if not (isinstance(fmt, Int8) and fmt.symmetric):
        raise InputError(f"{name}: W8A8 needs symmetric Int8() weights, got {fmt!r}")
    if not isinstance(gran, PerChannel | PerTensor):
        raise InputError(
            f"{name}: W8A8 accumulates in int32 over the whole contraction, so weight scales must "
            f"be per channel or per tensor, got {gran!r}"
        )


def _contract_axes(info: select.Leaf) -> tuple[int, ...]:
    w = info.value
    if not eqx.is_array(w):
        raise InputError(f"{info.path}: selected leaf is not an array ({type(w).__name__})")
    if w.ndim - info.batch_ndim < 2:
        raise InputError(
            f"{info.path}: only matrices and higher-rank kernels can be quantized, got shape "
            f"{w.shape}"
        )
    if info.contract_axes is not None:
        return info.contract_axes
    nd = w.ndim - info.batch_ndim
    return (0,) if nd == 2 else tuple(range(max(nd - 1, 0)))


def _storage(w: jax.Array, c: tuple[int, ...]) -> tuple[jax.Array, tuple[int, ...]]:
    """``w`` as a float32 ``[K, N]`` matrix (contraction axes first) and its output axes."""
    o = tuple(a for a in range(w.ndim) if a not in c)
    k = math.prod(w.shape[a] for a in c)
    return jnp.transpose(w, c + o).reshape(k, -1).astype(jnp.float32), o


def _from_storage(w2: jax.Array, like: jax.Array, c: tuple[int, ...], o: tuple[int, ...]):
    shape = tuple(like.shape[a] for a in c + o)
    return jnp.transpose(w2.reshape(shape), tuple(int(i) for i in np.argsort(c + o)))


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class RTN(QuantRecipe):
    """Round-to-nearest quantization of the selected weights.

    Attributes:
        fmt: number format of the weights.
        granularity: scale blocking along the contraction axis.
        activations: ``None`` for weight-only; ``ActQuant()`` for W8A8 (int8 activations with a
            dynamic per-token scale, int8×int8→int32 matmuls).
        select: which leaves to quantize.
    """

    fmt: Format = Int8()
    granularity: Granularity = PerChannel()
    activations: ActQuant | None = None
    select: select.Selector = dataclasses.field(default_factory=select.linear_weights)
    calibration: ClassVar[Calibration] = None

    def __post_init__(self):
        _check_fmt("RTN", self.fmt, self.granularity)
        _check_select("RTN", self.select)
        if self.activations is not None:
            if not isinstance(self.activations, ActQuant):
                raise InputError(
                    f"RTN.activations: expected None or ActQuant(), got {self.activations!r}"
                )
            _check_w8a8_weights("RTN", self.fmt, self.granularity)

    def rewrite(
        self, leaf: select.Leaf, stats: LeafStats | None, *, key: jax.Array | None
    ) -> QTensor:
        """Round ``leaf`` to the format (stacked layers are quantized layer by layer by vmap)."""
        where, w = leaf.path, leaf.value
        core_axes = tuple(a - leaf.batch_ndim for a in _contract_axes(leaf))
        fn = lambda v: quantize_array(
            v,
            self.fmt,
            self.granularity,
            contract_axes=core_axes,
            act=self.activations,
            where=where,
        )
        if leaf.batch_ndim:
            _check_float(w, where)
            if w.size == 0:
                raise InputError(f"{where}: cannot quantize an empty array (shape {w.shape})")
            if not bool(jnp.isfinite(w).all()):
                raise InputError(f"{where}: weight has NaN/inf entries; refusing to quantize it")
            for _ in range(leaf.batch_ndim):
                fn = eqx.filter_vmap(fn)
        return fn(w)


def _smooth_or_merge(leaf: select.Leaf, stats: LeafStats | None, alpha: float | None) -> QTensor:
    assert stats is not None
    where, w = leaf.path, leaf.value
    _check_float(w, where)
    c = _contract_axes(leaf)
    w2, o = _storage(w, c)
    absmax = jnp.asarray(stats.absmax)
    if alpha is not None:
        a = smoothquant_factors(absmax, w2, alpha=alpha)
        act = ActQuant(static=False)
    else:
        a = static_act_scale(absmax, bits=8)
        a = jnp.where(a > 0, a, jnp.float32(1.0))
        act = ActQuant(static=True)
    scaled = _from_storage(w2 * a[:, None], w, c, o).astype(w.dtype)
    return quantize_array(
        scaled, Int8(), PerChannel(), contract_axes=c, act=act, act_scale=a, where=where
    )


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class SmoothQuant(QuantRecipe):
    """SmoothQuant W8A8 (Xiao et al. 2023, arXiv:2211.10438).

    Per-input-channel factors ``s = max|X|^alpha / max|W|^(1-alpha)`` migrate activation outliers
    into the weights: the layer computes ``(x / s) @ (s * W)`` with ``x / s`` quantized per token
    and ``s * W`` per output channel. Needs calibration ``data``.
    """

    alpha: float = 0.5
    select: select.Selector = dataclasses.field(default_factory=select.linear_weights)
    calibration: ClassVar[Calibration] = "absmax"

    def __post_init__(self):
        if not isinstance(self.alpha, int | float) or not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"SmoothQuant.alpha: expected a number in [0, 1], got {self.alpha!r}")
        _check_select("SmoothQuant", self.select)

    def rewrite(
        self, leaf: select.Leaf, stats: LeafStats | None, *, key: jax.Array | None
    ) -> QTensor:
        """Fold the smoothing factors into the weight and quantize it per output channel."""
        return _smooth_or_merge(leaf, stats, float(self.alpha))


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class MergeQuant(QuantRecipe):
    """W8A8 with *static* per-channel activation scales folded into the weights (MergeQuant,
    Wang et al. 2025, arXiv:2503.14981): ``x_q = round(x / a)`` with calibrated ``a = max|X| / 127``
    per input channel, and weights ``quantize(a * W)``; no per-token scale at run time."""

    select: select.Selector = dataclasses.field(default_factory=select.linear_weights)
    calibration: ClassVar[Calibration] = "absmax"

    def __post_init__(self):
        _check_select("MergeQuant", self.select)

    def rewrite(
        self, leaf: select.Leaf, stats: LeafStats | None, *, key: jax.Array | None
    ) -> QTensor:
        """Fold the static activation scales into the weight and quantize it."""
        return _smooth_or_merge(leaf, stats, None)


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class GPTQ(QuantRecipe):
    """GPTQ (Frantar et al. 2023, arXiv:2210.17323): quantize input rows one at a time and spread
    each row's error over the rows not yet quantized, weighted by the inverse Hessian ``X^T X`` of
    the calibration activations. Weight-only. Needs calibration ``data``.
    """

    fmt: Format = Int4()
    granularity: Granularity = Group(128)
    block_size: int = 128
    act_order: bool = True
    damp: float = 0.01
    select: select.Selector = dataclasses.field(default_factory=select.linear_weights)
    calibration: ClassVar[Calibration] = "hessian"

    def __post_init__(self):
        _check_fmt("GPTQ", self.fmt, self.granularity)
        _check_select("GPTQ", self.select)
        if isinstance(self.fmt, NVFP4):
            raise InputError(
                "GPTQ.fmt: NVFP4's tensor-level scale is not supported by GPTQ; use MXFP4"
            )
        if not isinstance(self.block_size, int) or self.block_size < 1:
            raise InputError(f"GPTQ.block_size: expected a positive int, got {self.block_size!r}")
        if (
            not isinstance(self.damp, int | float)
            or not self.damp > 0
            or not math.isfinite(self.damp)
        ):
            raise InputError(f"GPTQ.damp: expected a positive finite number, got {self.damp!r}")

    def rewrite(
        self, leaf: select.Leaf, stats: LeafStats | None, *, key: jax.Array | None
    ) -> QTensor:
        """Quantize row by row with Hessian-weighted error feedback."""
        assert stats is not None and stats.hessian is not None
        where, w = leaf.path, leaf.value
        _check_float(w, where)
        c = _contract_axes(leaf)
        w2, o = _storage(w, c)
        fmt = self.fmt
        k = w2.shape[0]
        gk = fmt.fixed_block or self.granularity.group_rows(k, where=where)
        if k % gk:
            raise InputError(f"{where}: {type(fmt).__name__} block {gk} does not divide K={k}")
        per_column = self.granularity.per_column or fmt.fixed_block is not None
        fq, params = gptq(
            w2,
            jnp.asarray(stats.hessian, jnp.float32),
            group_size=gk,
            fit=lambda rows: fmt.fit(rows, rows.shape[0], per_column),
            fake=lambda rows, p: fmt.fake_quant(rows, p),
            block_size=self.block_size,
            act_order=self.act_order,
            damp=self.damp,
        )
        flat = lambda x: None if x is None else x.reshape(k // gk, -1)
        params = BlockParams(flat(params.scales), flat(params.zero), flat(params.scales_neg), None)
        qw = _from_storage(fq, w, c, o).astype(w.dtype)
        return quantize_array(
            qw, fmt, self.granularity, contract_axes=c, params=params, where=where
        )


# ----------------------------------------------------------------------------------------------
# quantize
# ----------------------------------------------------------------------------------------------


def quantize(
    model: Any,
    recipe: QuantRecipe,
    *,
    data: Any = None,
    key: jax.Array | None = None,
    apply: Callable[[Any, Any], Any] | None = None,
) -> Any:
    """Return a copy of ``model`` whose selected weights are `QTensor`s.

    Works on Equinox modules, Flax NNX modules and plain parameter pytrees; the input is never
    modified. Run the result with `jaxaccel.accelerate` (under ``jax.jit``) so its matmuls use
    quantized kernels. This is `jaxaccel.transform` restricted to quantization recipes.

    Args:
        model: the model or parameter pytree.
        recipe: `RTN`, `SmoothQuant`, `MergeQuant` or `GPTQ`.
        data: calibration inputs for recipes that need them (`SmoothQuant`, `MergeQuant`,
            `GPTQ`): one batch or an iterable of batches, each passed as ``apply(model, batch)``;
            they must be finite.
        key: unused by these deterministic recipes; accepted for the uniform transform signature.
        apply: how to run the model on a batch (default ``model(batch)``). Runs eagerly.

    Returns:
        The quantized model (same type as ``model``).

    Raises:
        jaxaccel.InputError (a ValueError and TypeError) naming the argument or leaf path for
        unsupported leaves, bad granularity, NaN weights, bad or non-finite calibration data, or
        a recipe that selects nothing.

    Example:
        >>> q = jaxaccel.quantize(model, jaxaccel.RTN(fmt=jaxaccel.Int4(), granularity=jaxaccel.Group(64)))
    """
    if not isinstance(recipe, QuantRecipe):
        raise InputError(
            f"recipe: expected a quantization recipe (RTN, SmoothQuant, MergeQuant, GPTQ), got "
            f"{recipe!r}"
        )
    return transform(model, recipe, data=data, key=key, apply=apply)
