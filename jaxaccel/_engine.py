"""The transform engine every transform shares: describe leaves, select them, rewrite them.

A one-shot transform is ``transform(model, recipe, *, data=None, key=None) -> model``: the
engine flattens the model (Equinox module, Flax NNX module or plain pytree) into described
leaves (`Leaf`: path, value, layer kind, contraction axes, stacked axes), keeps those the recipe's
selector picks, gathers calibration statistics if the recipe asks for them (by running the model
on ``data`` with probes standing in for the chosen weights), asks the recipe for each leaf's
replacement (`Recipe.rewrite`) and rebuilds a model of the same type. The input is never
modified. Stateful transforms (schedules, QAT) are `Transform` pairs of pure ``init``/``update``
functions with NamedTuple state, like optax's.

How to add a transform (see the README section "Adding a transform"): write a frozen,
keyword-only, `typing.final` dataclass subclassing `Recipe`, with a ``select`` field, a
``calibration`` class variable (``None``, ``"absmax"`` or ``"hessian"``) and ``rewrite(leaf,
stats, *, key)`` returning the new leaf (an array value such as `QTensor`, or an array); the
public function is then ``return transform(model, recipe, data=data, key=key)``.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Literal, NamedTuple

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
from ._errors import InputError

__all__ = [
    "Recipe",
    "LeafStats",
    "Transform",
    "Described",
    "describe",
    "describe_leaves",
    "map_leaves",
    "transform",
]

Calibration = Literal["absmax", "hessian"] | None


# ----------------------------------------------------------------------------------------------
# Recipes and stateful transforms
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class LeafStats:
    """Calibration statistics of the activations entering one weight's matmuls (one layer).

    Attributes:
        absmax: ``[K]`` max |x| per input channel.
        hessian: ``[K, K]`` ``X^T X`` (float64), when the recipe asked for ``"hessian"``.
        rows: activation rows seen.
    """

    absmax: np.ndarray
    hessian: np.ndarray | None
    rows: int


class Recipe(abc.ABC):
    """How a transform turns one selected leaf into its replacement (an abstract strategy).

    Concrete recipes are frozen keyword-only dataclasses marked ``typing.final``, with a
    ``select`` field (a `jaxaccel.select.Selector`) and a ``calibration`` class variable saying
    which statistics `rewrite` needs: ``None`` (none: no data), ``"absmax"`` or ``"hessian"``
    (per-channel max |x|, plus ``X^T X``), gathered by running the model on ``data``.
    """

    select: select.Selector
    calibration: ClassVar[Calibration] = None

    @abc.abstractmethod
    def rewrite(self, leaf: select.Leaf, stats: LeafStats | None, *, key: jax.Array | None) -> Any:
        """The replacement of ``leaf``.

        Args:
            leaf: the described leaf. Without calibration a stacked leaf (``batch_ndim > 0``)
                comes whole; with calibration, one layer at a time (``batch_ndim == 0``).
            stats: the leaf's calibration statistics, or ``None`` when ``calibration`` is None.
            key: a PRNG key for this leaf (derived from the transform's ``key``), or ``None``.
        """


class Transform(NamedTuple):
    """A stateful transform: pure ``init(params) -> state`` and ``update(params, state, ...) ->
    (params, state)`` (optax's shape; the state is a NamedTuple)."""

    init: Callable[..., Any]
    update: Callable[..., tuple[Any, Any]]


# ----------------------------------------------------------------------------------------------
# Describing leaves (Equinox, NNX, plain pytrees)
# ----------------------------------------------------------------------------------------------


def _key_name(k: Any) -> str:
    if isinstance(k, jax.tree_util.GetAttrKey):
        return str(k.name)
    if isinstance(k, jax.tree_util.DictKey):
        return str(k.key)
    if isinstance(k, jax.tree_util.SequenceKey | jax.tree_util.FlattenedIndexKey):
        return str(k.idx)
    return str(k)


def _path_str(path: tuple[Any, ...]) -> str:
    parts = [_key_name(k) for k in path]
    if parts and parts[-1] == "value":
        parts = parts[:-1]
    return ".".join(parts)


_Kind = tuple[str, tuple[int, ...], int]


def _layer_kinds(model: Any) -> dict[int, _Kind]:
    """Map id(weight array) -> (kind, contract_axes, batch_ndim) for known layer types."""
    kinds: dict[int, _Kind] = {}
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


@dataclasses.dataclass(frozen=True)
class Described:
    """A model flattened for a transform: every leaf, its description (``None`` for non-arrays),
    and ``rebuild(new_leaves)`` giving a model of the input's type."""

    leaves: list[Any]
    infos: list[select.Leaf | None]
    rebuild: Callable[[list[Any]], Any]


def _is_model(x: Any) -> bool:
    if isinstance(x, eqx.Module | nnx.Module) or eqx.is_array(x):
        return True
    # any registered pytree node (dict, list, NamedTuple, a flax struct, ...) is a parameter tree
    return not jax.tree_util.treedef_is_leaf(jax.tree.structure(x))


def describe(model: Any) -> Described:
    """Flatten ``model`` into described leaves (see `Described`).

    Raises:
        InputError: if ``model`` is not a model or parameter pytree (a string, a number, ...).
    """
    if not _is_model(model):
        raise InputError(
            f"model: expected an Equinox module, a Flax NNX module or a pytree of arrays, got "
            f"{type(model).__name__} {model!r:.60}"
        )
    if isinstance(model, nnx.Module):
        graphdef, state = nnx.split(model)
        tree: Any = state
        rebuild_top = lambda t: nnx.merge(graphdef, t)
    else:
        tree = model
        rebuild_top = lambda t: t
    kinds = _layer_kinds(model)
    with_path, treedef = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: isinstance(x, quax.ArrayValue)
    )
    leaves: list[Any] = []
    infos: list[select.Leaf | None] = []
    plain = not kinds and not isinstance(model, nnx.Module | eqx.Module)
    for p, leaf in with_path:
        leaves.append(leaf)
        if not (eqx.is_array(leaf) or isinstance(leaf, quax.ArrayValue)):
            infos.append(None)
            continue
        name = _path_str(p)
        kind, axes, nb = kinds.get(id(leaf), ("other", None, 0))
        if (
            plain
            and kind == "other"
            and leaf.ndim == 2
            and name.split(".")[-1] in ("weight", "kernel", "w")
        ):
            kind, axes, nb = "linear", (0,), 0  # plain params: x @ W
        infos.append(select.Leaf(name, leaf, kind, axes, nb))
    return Described(leaves, infos, lambda new: rebuild_top(jax.tree.unflatten(treedef, new)))


def describe_leaves(model: Any) -> list[select.Leaf]:
    """The `Leaf` descriptions selectors see for ``model`` (handy to write a selector)."""
    return [i for i in describe(model).infos if i is not None]


def map_leaves(model: Any, selector: select.Selector, fn: Callable[[select.Leaf], Any]) -> Any:
    """A copy of ``model`` whose leaves picked by ``selector`` are replaced by ``fn(leaf)``.

    Raises:
        InputError: if ``selector`` picks no leaf (the message lists some paths).
    """
    d = describe(model)
    chosen = _choose(d, selector)
    new = list(d.leaves)
    for i in chosen:
        info = d.infos[i]
        assert info is not None
        new[i] = fn(info)
    return d.rebuild(new)


def _choose(d: Described, selector: select.Selector) -> list[int]:
    if not isinstance(selector, select.Selector):
        raise InputError(
            f"select: expected a jaxaccel.select selector (e.g. select.linear_weights()), got "
            f"{selector!r}"
        )
    chosen = [
        i
        for i, info in enumerate(d.infos)
        if info is not None and not isinstance(info.value, quax.ArrayValue) and selector(info)
    ]
    if not chosen:
        paths = [i.path for i in d.infos if i is not None][:12]
        raise InputError(
            f"select: {selector!r} matched no leaf of this model; leaf paths include {paths}"
        )
    return chosen


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


class _Accumulator:
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

    def stats(self) -> LeafStats:
        return LeafStats(self.absmax, self.h, self.rows)


# The statistics being collected, one list of per-layer accumulators per probed leaf; a stack so
# calibration can nest.
_COLLECT: list[dict[int, list[_Accumulator]]] = []


def _store(index: int, layer: Any, xm: Any) -> None:
    acc = _COLLECT[-1].get(index) if _COLLECT else None
    if acc is not None:
        acc[int(np.asarray(layer).reshape(-1)[0])].add(np.asarray(xm, np.float32))


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
    if isinstance(data, Iterable) and not isinstance(data, dict | str | bytes):
        batches = list(data)
        if not batches:
            raise InputError("data: the calibration data is empty (no batches)")
        return batches
    return [data]


def _check_batch(bi: int, batch: Any) -> None:
    for path, x in jax.tree_util.tree_flatten_with_path(batch)[0]:
        if eqx.is_array(x) and jnp.issubdtype(x.dtype, jnp.inexact):
            bad = int(np.size(x) - np.isfinite(np.asarray(x)).sum())
            if bad:
                where = _path_str(path) or "batch"
                raise InputError(
                    f"data: calibration batch {bi} ({where}, shape {tuple(x.shape)}) has {bad} "
                    f"NaN/inf values of {np.size(x)}; calibration statistics would be meaningless"
                )


def _bad_data(bi: int, batch: Any, e: Exception) -> str:
    shapes = jax.tree.map(lambda a: getattr(a, "shape", type(a).__name__), batch)
    return (
        f"data: calibration batch {bi} with shape {shapes} could not be run through the model "
        f"({type(e).__name__}: {str(e).splitlines()[0][:300]})"
    )


def _calibrate(
    d: Described,
    chosen: list[int],
    data: Any,
    apply: Callable[[Any, Any], Any],
    hessian: bool,
) -> dict[int, list[LeafStats]]:
    probed = list(d.leaves)
    acc: dict[int, list[_Accumulator]] = {}
    for i in chosen:
        info = d.infos[i]
        assert info is not None
        if info.batch_ndim > 1:
            raise InputError(
                f"{info.path}: calibrated recipes support one stacked (scan-over-layers) axis, "
                f"this leaf has {info.batch_ndim}"
            )
        if info.contract_axes is None:
            raise InputError(
                f"{info.path}: calibration needs a layer weight (linear/conv) whose contraction "
                "axes are known; select linear or conv weights"
            )
        nb = info.batch_ndim
        k = math.prod(info.value.shape[a] for a in info.contract_axes)
        n_layers = info.value.shape[0] if nb else 1
        acc[i] = [_Accumulator(k, hessian) for _ in range(n_layers)]
        layer = jnp.arange(n_layers, dtype=jnp.int32) if nb else jnp.zeros((), jnp.int32)
        core = tuple(a - nb for a in info.contract_axes)
        probed[i] = _Probe(info.value, layer, i, core)
    probed_model = d.rebuild(probed)
    run = quax.quaxify(lambda args: apply(*_merge_nnx(args)))
    batches = _batches(data)
    for bi, batch in enumerate(batches):
        _check_batch(bi, batch)
    _COLLECT.append(acc)
    try:
        for bi, batch in enumerate(batches):
            try:
                run(_split_nnx((probed_model, batch)))
                jax.effects_barrier()
            except InputError:
                raise
            except (ValueError, TypeError) as e:
                raise InputError(_bad_data(bi, batch, e)) from e
    finally:
        _COLLECT.pop()
    out: dict[int, list[LeafStats]] = {}
    for i, per_layer in acc.items():
        info = d.infos[i]
        assert info is not None
        for layer, a in enumerate(per_layer):
            where = info.path + (f"[{layer}]" if len(per_layer) > 1 else "")
            if a.rows == 0:
                raise InputError(
                    f"{where}: calibration data never reached this weight's matmul; check `data` "
                    "and `apply`"
                )
            if not np.isfinite(a.absmax).all() or (a.h is not None and not np.isfinite(a.h).all()):
                raise InputError(
                    f"{where}: the activations entering this weight overflowed to NaN/inf during "
                    "calibration (the model itself produces them from this data)"
                )
        out[i] = [a.stats() for a in per_layer]
    return out


# ----------------------------------------------------------------------------------------------
# The one-shot transform
# ----------------------------------------------------------------------------------------------


def transform(
    model: Any,
    recipe: Recipe,
    *,
    data: Any = None,
    key: jax.Array | None = None,
    apply: Callable[[Any, Any], Any] | None = None,
) -> Any:
    """Apply ``recipe`` to the leaves of ``model`` it selects; returns a new model.

    Args:
        model: an Equinox module, a Flax NNX module or a pytree of arrays (never modified).
        recipe: a `Recipe` (e.g. `jaxaccel.RTN`, `jaxaccel.GPTQ`).
        data: calibration inputs for recipes with ``calibration``: one batch or an iterable of
            batches, each run as ``apply(model, batch)``; must be finite.
        key: PRNG key for randomised recipes (each leaf gets ``fold_in(key, leaf index)``).
        apply: how to run the model on a batch (default ``model(batch)``); runs eagerly.

    Returns:
        The transformed model, of the same type as ``model``.

    Raises:
        InputError: naming the argument or the leaf path (bad recipe, nothing selected, missing
            or non-finite data, a leaf the recipe cannot take).
    """
    if not isinstance(recipe, Recipe):
        raise InputError(
            f"recipe: expected a jaxaccel recipe (e.g. RTN(), SmoothQuant(), GPTQ()), got {recipe!r}"
        )
    if key is not None and not isinstance(key, jax.Array):
        raise InputError(f"key: expected a JAX PRNG key or None, got {key!r}")
    d = describe(model)
    chosen = _choose(d, recipe.select)
    stats: dict[int, list[LeafStats]] = {}
    name = type(recipe).__name__
    if recipe.calibration is not None:
        if data is None:
            raise InputError(f"data: {name} needs calibration data, got None")
        stats = _calibrate(
            d, chosen, data, apply or _default_apply, recipe.calibration == "hessian"
        )
    elif data is not None:
        raise InputError(f"data: {name} does not use calibration data; pass data=None")
    new = list(d.leaves)
    for i in chosen:
        info = d.infos[i]
        assert info is not None
        k = None if key is None else jax.random.fold_in(key, i)
        per_layer = stats.get(i)
        if per_layer is not None and info.batch_ndim:
            # One calibrated rewrite per stacked layer, stacked back into one value.
            axes = tuple(a - 1 for a in info.contract_axes or ())
            parts = [
                recipe.rewrite(
                    select.Leaf(f"{info.path}[{layer}]", info.value[layer], info.kind, axes),
                    st,
                    key=None if k is None else jax.random.fold_in(k, layer),
                )
                for layer, st in enumerate(per_layer)
            ]
            new[i] = jax.tree.map(lambda *xs: jnp.stack(xs), *parts)
        else:
            new[i] = recipe.rewrite(info, None if per_layer is None else per_layer[0], key=k)
    return d.rebuild(new)
