"""`quantize`: replace selected weights of a model by `QTensor`s, following a recipe."""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import quax
from flax import nnx
from jax import lax
from jaxtyping import ArrayLike

from . import _select as select
from ._accelerate import _merge_nnx, _split_nnx
from ._arrays import ActQuant, QTensor, _check_float, quantize_array
from ._formats import (
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

__all__ = ["Recipe", "RTN", "SmoothQuant", "MergeQuant", "GPTQ", "quantize", "describe_leaves"]


# ----------------------------------------------------------------------------------------------
# Recipes
# ----------------------------------------------------------------------------------------------


class Recipe(abc.ABC):
    """A quantization recipe: which leaves (``select``), which format, which method."""

    select: select.Selector
    needs_data: bool = False

    def _check(self) -> None:
        fmt = getattr(self, "fmt", None)
        if fmt is not None and not isinstance(fmt, Format):
            raise TypeError(
                f"{type(self).__name__}.fmt: unknown format {fmt!r}; expected a jaxaccel format "
                "such as Int8(), Int4(), FP8(), NF4(), FP4(), MXFP4(), NVFP4() or AFPQ()"
            )
        gran = getattr(self, "granularity", None)
        if gran is not None and not isinstance(gran, Granularity):
            raise TypeError(
                f"{type(self).__name__}.granularity: expected PerTensor(), PerChannel(), Group(n) "
                f"or AdaptiveGroup(n), got {gran!r}"
            )


def _check_w8a8_weights(name: str, fmt: Format, gran: Granularity) -> None:
    if not (isinstance(fmt, Int8) and fmt.symmetric):
        raise ValueError(f"{name}: W8A8 needs symmetric Int8() weights, got {fmt!r}")
    if not isinstance(gran, PerChannel | PerTensor):
        raise ValueError(
            f"{name}: W8A8 accumulates in int32 over the whole contraction, so weight scales must "
            f"be per channel or per tensor, got {gran!r}"
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class RTN(Recipe):
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

    def __post_init__(self):
        self._check()
        if self.activations is not None:
            _check_w8a8_weights("RTN", self.fmt, self.granularity)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SmoothQuant(Recipe):
    """SmoothQuant W8A8 (Xiao et al. 2023, arXiv:2211.10438).

    Per-input-channel factors ``s = max|X|^alpha / max|W|^(1-alpha)`` migrate activation outliers
    into the weights: the layer computes ``(x / s) @ (s * W)`` with ``x / s`` quantized per token
    and ``s * W`` per output channel. Needs calibration ``data``.
    """

    alpha: float = 0.5
    select: select.Selector = dataclasses.field(default_factory=select.linear_weights)
    needs_data: bool = True

    def __post_init__(self):
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"SmoothQuant.alpha must lie in [0, 1], got {self.alpha}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MergeQuant(Recipe):
    """W8A8 with *static* per-channel activation scales folded into the weights (MergeQuant,
    Wang et al. 2025, arXiv:2503.14981): ``x_q = round(x / a)`` with calibrated ``a = max|X| / 127``
    per input channel, and weights ``quantize(a * W)``; no per-token scale at run time."""

    select: select.Selector = dataclasses.field(default_factory=select.linear_weights)
    needs_data: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class GPTQ(Recipe):
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
    needs_data: bool = True

    def __post_init__(self):
        self._check()
        if (
            getattr(self.fmt, "fixed_block", None) is not None
            and type(self.fmt).__name__ == "NVFP4"
        ):
            raise ValueError("GPTQ: NVFP4's tensor-level scale is not supported by GPTQ; use MXFP4")


# ----------------------------------------------------------------------------------------------
# Describing leaves (Equinox, NNX, plain pytrees)
# ----------------------------------------------------------------------------------------------


def _key_name(k: Any) -> str:
    for attr in ("name", "key", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _path_str(path: tuple[Any, ...]) -> str:
    parts = [_key_name(k) for k in path]
    if parts and parts[-1] == "value":
        parts = parts[:-1]
    return ".".join(parts)


def _layer_kinds(model: Any) -> dict[int, tuple[str, tuple[int, ...], int]]:
    """Map id(weight array) -> (kind, contract_axes, batch_ndim) for known layer types."""
    kinds: dict[int, tuple[str, tuple[int, ...], int]] = {}
    if isinstance(model, nnx.Module):
        for _, node in nnx.iter_graph(model):
            if isinstance(node, nnx.Linear):
                w = node.kernel.get_value()
                kinds[id(w)] = ("linear", (w.ndim - 2,), w.ndim - 2)
            elif isinstance(node, nnx.Conv):
                w = node.kernel.get_value()
                kinds[id(w)] = ("conv", tuple(range(w.ndim - 1)), 0)
            elif isinstance(node, nnx.Embed):
                w = node.embedding.get_value()
                kinds[id(w)] = ("embedding", (w.ndim - 1,), w.ndim - 2)
        return kinds
    is_layer = lambda x: isinstance(x, eqx.nn.Linear | eqx.nn.Conv | eqx.nn.Embedding)
    for node in jax.tree.leaves(model, is_leaf=is_layer):
        if isinstance(node, eqx.nn.Linear):
            w = node.weight  # [out, in]: the layer computes weight @ x
            kinds[id(w)] = ("linear", (w.ndim - 1,), w.ndim - 2)
        elif isinstance(node, eqx.nn.Conv):
            w = node.weight  # [out, in, *kernel]
            kinds[id(w)] = ("conv", tuple(range(1, w.ndim)), 0)
        elif isinstance(node, eqx.nn.Embedding):
            w = node.weight
            kinds[id(w)] = ("embedding", (w.ndim - 1,), w.ndim - 2)
    return kinds


def _describe(model: Any) -> tuple[list[Any], Any, list[select.Leaf | None], Callable[[Any], Any]]:
    """Flatten a model into leaves + descriptions; returns a rebuild function."""
    if isinstance(model, nnx.Module):
        graphdef, state = nnx.split(model)
        tree = state
        rebuild_top = lambda t: nnx.merge(graphdef, t)
    else:
        tree = model
        rebuild_top = lambda t: t
    kinds = _layer_kinds(model)
    with_path, treedef = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: isinstance(x, quax.ArrayValue)
    )
    leaves, infos = [], []
    plain = not kinds and not isinstance(model, nnx.Module | eqx.Module)
    for p, leaf in with_path:
        leaves.append(leaf)
        if not (eqx.is_array(leaf) or isinstance(leaf, QTensor)):
            infos.append(None)
            continue
        name = _path_str(p)
        kind, axes, nb = kinds.get(id(leaf), ("other", None, 0))
        if (
            plain
            and kind == "other"
            and leaf.ndim == 2
            and name.split(".")[-1]
            in (
                "weight",
                "kernel",
                "w",
            )
        ):
            kind, axes, nb = "linear", (0,), 0  # plain params: x @ W
        infos.append(select.Leaf(name, leaf, kind, axes, nb))
    return leaves, treedef, infos, lambda new: rebuild_top(jax.tree.unflatten(treedef, new))


def describe_leaves(model: Any) -> list[select.Leaf]:
    """The `Leaf` descriptions selectors see for ``model`` (handy to write a selector)."""
    return [i for i in _describe(model)[2] if i is not None]


# ----------------------------------------------------------------------------------------------
# Calibration: record the activations entering each selected weight's matmuls
# ----------------------------------------------------------------------------------------------


class _Probe(quax.ArrayValue):
    """Stands in for a float weight during calibration and records what it is multiplied by.

    ``layer`` is an int32 array shaped like the weight's stacked (scan-over-layers) axes, so that
    when `lax.scan` slices the weight it slices the layer number with it; the record is made by a
    `jax.debug.callback`, which runs with concrete values inside scans and jitted code alike.
    """

    weight: jax.Array
    layer: jax.Array
    index: int = eqx.field(static=True)
    contract_axes: tuple[int, ...] = eqx.field(static=True)  # of one layer's weight

    def aval(self):
        return jax.core.ShapedArray(self.weight.shape, self.weight.dtype)

    def materialise(self):
        return self.weight


class _Stats:
    def __init__(self, k: int, hessian: bool):
        self.absmax = np.zeros(k, np.float32)
        self.h = np.zeros((k, k), np.float64) if hessian else None
        self.rows = 0

    def add(self, xm: np.ndarray) -> None:
        self.absmax = np.maximum(self.absmax, np.abs(xm).max(axis=0))
        if self.h is not None:
            xd = xm.astype(np.float64)
            self.h += xd.T @ xd
        self.rows += xm.shape[0]


# The statistics being collected, one list of per-layer `_Stats` per probed leaf; a stack so
# calibration can nest.
_COLLECT: list[dict[int, list[_Stats]]] = []


def _store(index: int, layer: Any, xm: Any) -> None:
    stats = _COLLECT[-1].get(index) if _COLLECT else None
    if stats is not None:
        stats[int(np.asarray(layer).reshape(-1)[0])].add(np.asarray(xm, np.float32))


def _record(x: ArrayLike, probe: _Probe, x_c: tuple[int, ...], p_c: tuple[int, ...]) -> None:
    if probe.layer.ndim or sorted(p_c) != sorted(probe.contract_axes):
        return  # still stacked (not sliced by a scan) or contracted another way: not a layer matmul
    x = jnp.asarray(x)
    order = [x_c[list(p_c).index(a)] for a in probe.contract_axes]
    free = [i for i in range(x.ndim) if i not in x_c]
    k = math.prod(x.shape[i] for i in order)
    xm = jnp.transpose(x, free + order).reshape(-1, k).astype(jnp.float32)
    jax.debug.callback(functools.partial(_store, probe.index), probe.layer, xm)


@quax.register(lax.dot_general_p)
def _(lhs: ArrayLike, rhs: _Probe, **params: Any):
    (lc, rc), _ = params["dimension_numbers"]
    _record(lhs, rhs, lc, rc)
    return lax.dot_general_p.bind(lhs, rhs.weight, **params)


@quax.register(lax.dot_general_p)
def _(lhs: _Probe, rhs: ArrayLike, **params: Any):
    (lc, rc), _ = params["dimension_numbers"]
    _record(rhs, lhs, rc, lc)
    return lax.dot_general_p.bind(lhs.weight, rhs, **params)


def _default_apply(model: Any, batch: Any) -> Any:
    return model(batch)


def _batches(data: Any) -> list[Any]:
    if isinstance(data, jax.Array | np.ndarray):
        return [data]
    if isinstance(data, Iterable) and not isinstance(data, dict):
        return list(data)
    return [data]


def _calibrate(
    leaves: list[Any],
    rebuild: Callable[[Any], Any],
    chosen: list[select.Leaf],
    index_of: dict[int, int],
    data: Any,
    apply: Callable[[Any, Any], Any],
    hessian: bool,
) -> dict[int, list[_Stats]]:
    probed = list(leaves)
    stats: dict[int, list[_Stats]] = {}
    for info in chosen:
        i = index_of[id(info)]
        if info.batch_ndim > 1:
            raise ValueError(
                f"{info.path}: calibrated recipes support one stacked (scan-over-layers) axis, "
                f"this leaf has {info.batch_ndim}"
            )
        nb = info.batch_ndim
        k = math.prod(info.value.shape[a] for a in info.contract_axes)
        n_layers = info.value.shape[0] if nb else 1
        stats[i] = [_Stats(k, hessian) for _ in range(n_layers)]
        layer = jnp.arange(n_layers, dtype=jnp.int32) if nb else jnp.zeros((), jnp.int32)
        core = tuple(a - nb for a in info.contract_axes)
        probed[i] = _Probe(info.value, layer, i, core)
    probed_model = rebuild(probed)
    run = quax.quaxify(lambda args: apply(*_merge_nnx(args)))
    _COLLECT.append(stats)
    try:
        for bi, batch in enumerate(_batches(data)):
            try:
                run(_split_nnx((probed_model, batch)))
                jax.effects_barrier()
            except ValueError as e:
                if str(e).startswith("data:"):
                    raise
                raise ValueError(_bad_data(bi, batch, e)) from e
            except TypeError as e:
                raise ValueError(_bad_data(bi, batch, e)) from e
    finally:
        _COLLECT.pop()
    for i, per_layer in stats.items():
        for layer, st in enumerate(per_layer):
            if st.rows == 0:
                where = _path_of(chosen, index_of, i) + (f"[{layer}]" if len(per_layer) > 1 else "")
                raise ValueError(
                    f"{where}: calibration data never reached this weight's matmul; check `data` "
                    "and `apply`"
                )
    return stats


def _path_of(chosen: list[select.Leaf], index_of: dict[int, int], i: int) -> str:
    for info in chosen:
        if index_of[id(info)] == i:
            return info.path
    return "?"


def _bad_data(bi: int, batch: Any, e: Exception) -> str:
    shapes = jax.tree.map(lambda a: getattr(a, "shape", type(a).__name__), batch)
    return (
        f"data: calibration batch {bi} with shape {shapes} could not be run through the model "
        f"({type(e).__name__}: {str(e).splitlines()[0][:300]})"
    )


# ----------------------------------------------------------------------------------------------
# quantize
# ----------------------------------------------------------------------------------------------


def _storage(info: select.Leaf) -> tuple[jax.Array, tuple[int, ...], tuple[int, ...]]:
    w = info.value
    c = info.contract_axes
    o = tuple(a for a in range(w.ndim) if a not in c)
    k = math.prod(w.shape[a] for a in c)
    return jnp.transpose(w, c + o).reshape(k, -1).astype(jnp.float32), c, o


def _from_storage(w2: jax.Array, like: jax.Array, c: tuple[int, ...], o: tuple[int, ...]):
    shape = tuple(like.shape[a] for a in c + o)
    return jnp.transpose(w2.reshape(shape), tuple(int(i) for i in np.argsort(c + o)))


def _quantize_leaf(info: select.Leaf, recipe: Recipe, st: _Stats | None) -> QTensor:
    where = info.path
    w = info.value
    if not eqx.is_array(w):
        raise TypeError(f"{where}: selected leaf is not an array ({type(w).__name__})")
    axes = info.contract_axes
    if axes is None:
        nd = w.ndim - info.batch_ndim
        axes = (0,) if nd == 2 else tuple(range(max(nd - 1, 0)))
    if w.ndim - info.batch_ndim < 2:
        raise ValueError(
            f"{where}: only matrices and higher-rank kernels can be quantized, got shape {w.shape}"
        )
    core_axes = tuple(a - info.batch_ndim for a in axes)

    if isinstance(recipe, RTN):
        fn = lambda v: quantize_array(
            v,
            recipe.fmt,
            recipe.granularity,
            contract_axes=core_axes,
            act=recipe.activations,
            where=where,
        )
        if info.batch_ndim:
            _check_float(w, where)
            if not bool(jnp.isfinite(w).all()):
                raise ValueError(f"{where}: weight has NaN/inf entries; refusing to quantize it")
            for _ in range(info.batch_ndim):
                fn = eqx.filter_vmap(fn)
        return fn(w)

    assert st is not None
    _check_float(w, where)
    w2, c, o = _storage(select.Leaf(where, w, info.kind, axes))
    if isinstance(recipe, SmoothQuant | MergeQuant):
        absmax = jnp.asarray(st.absmax)
        if isinstance(recipe, SmoothQuant):
            a = smoothquant_factors(absmax, w2, alpha=recipe.alpha)
            act = ActQuant(static=False)
        else:
            a = static_act_scale(absmax, bits=8)
            a = jnp.where(a > 0, a, jnp.float32(1.0))
            act = ActQuant(static=True)
        scaled = _from_storage(w2 * a[:, None], w, c, o).astype(w.dtype)
        return quantize_array(
            scaled, Int8(), PerChannel(), contract_axes=c, act=act, act_scale=a, where=where
        )
    if isinstance(recipe, GPTQ):
        fmt = recipe.fmt
        k = w2.shape[0]
        gk = fmt.fixed_block or recipe.granularity.group_rows(k, where=where)
        if k % gk:
            raise ValueError(f"{where}: {type(fmt).__name__} block {gk} does not divide K={k}")
        per_column = recipe.granularity.per_column or fmt.fixed_block is not None
        fq, params = gptq(
            w2,
            jnp.asarray(st.h, jnp.float32),
            group_size=gk,
            fit=lambda rows: fmt.fit(rows, rows.shape[0], per_column),
            fake=lambda rows, p: fmt.fake_quant(rows, p),
            block_size=recipe.block_size,
            act_order=recipe.act_order,
            damp=recipe.damp,
        )
        flat = lambda x: None if x is None else x.reshape(k // gk, -1)
        params = BlockParams(flat(params.scales), flat(params.zero), flat(params.scales_neg), None)
        qw = _from_storage(fq, w, c, o).astype(w.dtype)
        return quantize_array(
            qw, fmt, recipe.granularity, contract_axes=c, params=params, where=where
        )
    raise TypeError(f"unknown recipe {recipe!r}")


def quantize(
    model: Any,
    recipe: Recipe,
    *,
    data: Any = None,
    apply: Callable[[Any, Any], Any] | None = None,
    key: jax.Array | None = None,
) -> Any:
    """Return a copy of ``model`` whose selected weights are `QTensor`s.

    Works on Equinox modules, Flax NNX modules and plain parameter pytrees; the input is never
    modified. Run the result with `jaxaccel.accelerate` (under ``jax.jit``) so its matmuls use
    quantized kernels.

    Args:
        model: the model or parameter pytree.
        recipe: `RTN`, `SmoothQuant`, `MergeQuant` or `GPTQ`.
        data: calibration inputs for recipes that need them: one batch or an iterable of
            batches, each passed as ``apply(model, batch)``.
        apply: how to run the model on a batch (default ``model(batch)``). Runs eagerly.
        key: unused by the deterministic recipes; accepted for a uniform transform signature.

    Returns:
        The quantized model (same type as ``model``).

    Raises:
        ValueError / TypeError naming the leaf path for unsupported leaves, bad granularity, NaN
        weights, bad calibration data, or a recipe that selects nothing.

    Example:
        >>> q = jaxaccel.quantize(model, jaxaccel.RTN(fmt=jaxaccel.Int4(), granularity=jaxaccel.Group(64)))
    """
    del key
    if not isinstance(recipe, Recipe):
        raise TypeError(
            f"recipe: expected a jaxaccel recipe (RTN, SmoothQuant, ...), got {recipe!r}"
        )
    leaves, _, infos, rebuild = _describe(model)
    chosen = [
        i for i in infos if i is not None and not isinstance(i.value, QTensor) and recipe.select(i)
    ]
    if not chosen:
        paths = [i.path for i in infos if i is not None][:12]
        raise ValueError(
            f"recipe.select {recipe.select!r} matched no leaf of this model; leaf paths include "
            f"{paths}"
        )
    index_of = {id(info): infos.index(info) for info in chosen}
    stats: dict[int, list[_Stats]] = {}
    if recipe.needs_data:
        if data is None:
            raise ValueError(f"data: {type(recipe).__name__} needs calibration data, got None")
        stats = _calibrate(
            leaves,
            rebuild,
            chosen,
            index_of,
            data,
            apply or _default_apply,
            hessian=isinstance(recipe, GPTQ),
        )
    elif data is not None:
        warnings.warn(
            f"data: {type(recipe).__name__} does not use calibration data; ignored", stacklevel=2
        )
    new = list(leaves)
    for info in chosen:
        i = index_of[id(info)]
        per_layer = stats.get(i)
        if per_layer is not None and info.batch_ndim:
            # One calibrated quantization per stacked layer, stacked back into one QTensor.
            axes = tuple(a - 1 for a in info.contract_axes)
            qs = [
                _quantize_leaf(
                    select.Leaf(f"{info.path}[{layer}]", info.value[layer], info.kind, axes),
                    recipe,
                    st,
                )
                for layer, st in enumerate(per_layer)
            ]
            new[i] = jax.tree.map(lambda *xs: jnp.stack(xs), *qs)
        else:
            new[i] = _quantize_leaf(info, recipe, None if per_layer is None else per_layer[0])
    return rebuild(new)
