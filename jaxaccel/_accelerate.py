"""`accelerate`: run any function whose inputs hold accelerated array values.

Built on `quax` (multiple dispatch through a custom JAX trace). Rules:

- ``dot_general`` with a `QTensor` operand contracting over the weight's contraction axes goes to
  `pallas_kernels.quant_matmul` (weight-only, dequantized inside the kernel) or
  `pallas_kernels.int8_matmul` (W8A8: the activation is quantized to int8 on the fly);
- ``transpose`` of a `QTensor` is free (it only relabels axes), so ``x @ w.T`` still hits a kernel;
- ``conv_general_dilated`` with a W8A8 int8 kernel runs as an int8×int8→int32 convolution;
  weight-only kernels are dequantized inside the jitted graph;
- every other primitive, or a layout no kernel covers, materialises the value (always correct).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import quax
from flax import nnx
from jax import lax
from jaxtyping import ArrayLike

import pallas_kernels as pk
from pallas_kernels import ElementCode

from ._arrays import QTensor

__all__ = ["accelerate", "qmatmul"]

_BACKEND: contextvars.ContextVar[str] = contextvars.ContextVar("jaxaccel_backend", default="auto")


@contextlib.contextmanager
def _use_backend(backend: str) -> Iterator[None]:
    token = _BACKEND.set(backend)
    try:
        yield
    finally:
        _BACKEND.reset(token)


# ----------------------------------------------------------------------------------------------
# The 2-D product x[M, K] @ W[K, N] for one QTensor (no batch axes)
# ----------------------------------------------------------------------------------------------


def _quantize_rows(xs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Dynamic symmetric int8 quantization, one absmax scale per row."""
    amax = jnp.max(jnp.abs(xs), axis=1, keepdims=True)
    sx = jnp.maximum(amax / np.float32(127.0), np.float32(1e-30))
    xq = jnp.clip(jnp.round(xs / sx), -127, 127).astype(jnp.int8)
    return xq, sx


def _w8a8_operands(xm: jax.Array, q: QTensor) -> tuple[jax.Array, jax.Array, jax.Array]:
    xs = xm.astype(jnp.float32)
    if q.act_scale is not None:
        xs = xs / q.act_scale[None, :]
    if q.act.static:
        xq = jnp.clip(jnp.round(xs), -127, 127).astype(jnp.int8)
        sx = jnp.ones((xs.shape[0], 1), jnp.float32)
    else:
        xq, sx = _quantize_rows(xs)
    ws = jnp.broadcast_to(q.scales.astype(jnp.float32), (1, q.payload.shape[1]))
    return xq, sx, ws


def _qmatmul_impl(xm: jax.Array, q: QTensor, backend: str) -> jax.Array:
    if q.act is not None:
        xq, sx, ws = _w8a8_operands(xm, q)
        y = pk.int8_matmul(xq, q.payload, sx, ws, backend=backend)
    else:
        y = pk.quant_matmul(
            xm.astype(jnp.float32),
            q.payload,
            q.scales,
            code=q.fmt.element_code,
            zero=q.zero,
            scales_neg=q.scales_neg,
            backend=backend,
            out_dtype=jnp.float32,
        )
    if q.tensor_scale is not None:
        y = y * q.tensor_scale
    return y[:, : q.n]


def _qmatmul_reference(xm: jax.Array, q: QTensor) -> jax.Array:
    """The same product computed by plain XLA (dequantize then dot): the spec and the VJP."""
    if q.act is not None:
        xq, sx, ws = _w8a8_operands(xm, q)
        y = lax.dot_general(
            xq, q.payload, (((1,), (0,)), ((), ())), preferred_element_type=jnp.int32
        )
        return (y.astype(jnp.float32) * sx * ws)[:, : q.n]
    return jnp.dot(xm.astype(jnp.float32), q.dequantize_2d(), preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _qmatmul(xm: jax.Array, q: QTensor, backend: str) -> jax.Array:
    return _qmatmul_impl(xm, q, backend)


def _qmatmul_fwd(xm, q, backend):
    return _qmatmul_impl(xm, q, backend), (xm, q)


def _qmatmul_bwd(backend, res, g):
    # Kernels have no autodiff rules of their own: differentiate the XLA reference instead. For
    # W8A8 the rounding of activations has zero derivative almost everywhere, so use the
    # straight-through estimator (the gradient of the dequantized float product).
    xm, q = res
    if q.act is not None:

        def ste(xm, q):
            w = q.dequantize_2d()  # the logical weight: act_scale already divided out
            return jnp.dot(xm.astype(jnp.float32), w, preferred_element_type=jnp.float32)

        _, vjp = jax.vjp(ste, xm, q)
    else:
        _, vjp = jax.vjp(_qmatmul_reference, xm, q)
    return vjp(g)


_qmatmul.defvjp(_qmatmul_fwd, _qmatmul_bwd)


def qmatmul(x: jax.Array, q: QTensor, *, backend: str = "auto") -> jax.Array:
    """``x[..., K] @ w[K, N]`` for a 2-D-layout `QTensor` ``q`` (kernel layout), returns ``[..., N]``."""
    lead = x.shape[:-1]
    xm = x.reshape(math.prod(lead), x.shape[-1])
    return _qmatmul(xm, q, backend).reshape(lead + (q.n,))


# ----------------------------------------------------------------------------------------------
# dispatch rules
# ----------------------------------------------------------------------------------------------


def _out_dtype(x: Any, q: QTensor, params: dict[str, Any]) -> Any:
    return jax.eval_shape(
        lambda a, b: lax.dot_general_p.bind(a, b, **params),
        jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)),
        jax.ShapeDtypeStruct(q.shape, q.dtype),
    ).dtype


def _dot(x: ArrayLike, q: QTensor, q_is_rhs: bool, params: dict[str, Any]) -> jax.Array:
    (lc, rc), (lb, rb) = params["dimension_numbers"]
    x_c, q_c = (lc, rc) if q_is_rhs else (rc, lc)
    x = jnp.asarray(x)
    fits = (
        not q.batch_shape
        and not lb
        and not rb
        and sorted(q_c) == sorted(q.contract_axes)
        and jnp.issubdtype(x.dtype, jnp.floating)
    )
    if not fits:
        w = q.materialise()
        args = (x, w) if q_is_rhs else (w, x)
        return lax.dot_general_p.bind(*args, **params)
    out_dtype = _out_dtype(x, q, params) if q_is_rhs else None
    order = [x_c[list(q_c).index(a)] for a in q.contract_axes]
    x_free = [i for i in range(x.ndim) if i not in x_c]
    xm = jnp.transpose(x, x_free + order).reshape(-1, q.k)
    y = _qmatmul(xm, q, _BACKEND.get())
    free_shape = [x.shape[i] for i in x_free]
    y = y.reshape(free_shape + [q.core_shape[a] for a in q.out_axes])
    # dot_general lists the weight's free axes in increasing logical order.
    nx = len(free_shape)
    q_perm = [nx + q.out_axes.index(a) for a in sorted(q.out_axes)]
    if q_is_rhs:
        y = jnp.transpose(y, list(range(nx)) + q_perm)
    else:
        y = jnp.transpose(y, q_perm + list(range(nx)))
        out_dtype = _out_dtype(x, q, {**params, "dimension_numbers": ((rc, lc), (rb, lb))})
    return y.astype(out_dtype)


@quax.register(lax.dot_general_p)
def _(lhs: ArrayLike, rhs: QTensor, **params: Any) -> jax.Array:
    return _dot(lhs, rhs, True, params)


@quax.register(lax.dot_general_p)
def _(lhs: QTensor, rhs: ArrayLike, **params: Any) -> jax.Array:
    return _dot(rhs, lhs, False, params)


@quax.register(lax.dot_general_p)
def _(lhs: QTensor, rhs: QTensor, **params: Any) -> jax.Array:
    return lax.dot_general_p.bind(lhs.materialise(), rhs.materialise(), **params)


@quax.register(lax.transpose_p)
def _(q: QTensor, *, permutation: tuple[int, ...]) -> QTensor | jax.Array:
    if q.batch_shape:
        return lax.transpose(q.materialise(), permutation)
    perm = list(permutation)
    return dataclasses.replace(
        q,
        core_shape=tuple(q.core_shape[p] for p in perm),
        contract_axes=tuple(perm.index(a) for a in q.contract_axes),
        out_axes=tuple(perm.index(a) for a in q.out_axes),
    )


@quax.register(lax.conv_general_dilated_p)
def _(lhs: ArrayLike, rhs: QTensor, **params: Any) -> jax.Array:
    x = jnp.asarray(lhs)
    w8a8 = (
        rhs.act is not None
        and rhs.fmt.element_code is ElementCode.INT8
        and not rhs.batch_shape
        and params.get("preferred_element_type") is None
    )
    if not w8a8:
        return lax.conv_general_dilated_p.bind(x, rhs.materialise(), **params)
    # int8 conv: per-tensor dynamic activation scale, per-output-channel weight scales.
    dn = params["dimension_numbers"]
    out_feature_axis = dn.rhs_spec[0]
    if rhs.out_axes != (out_feature_axis,) or rhs.act_scale is not None:
        return lax.conv_general_dilated_p.bind(x, rhs.materialise(), **params)
    xf = x.astype(jnp.float32)
    sx = jnp.maximum(jnp.max(jnp.abs(xf)) / np.float32(127.0), np.float32(1e-30))
    xq = jnp.clip(jnp.round(xf / sx), -127, 127).astype(jnp.int8)
    storage = tuple(rhs.core_shape[a] for a in rhs.contract_axes + rhs.out_axes)
    wq = rhs.payload.reshape(storage)
    inv = tuple(int(i) for i in np.argsort(rhs.contract_axes + rhs.out_axes))
    wq = jnp.transpose(wq, inv)
    y = lax.conv_general_dilated_p.bind(xq, wq, **{**params, "preferred_element_type": jnp.int32})
    ws = jnp.broadcast_to(rhs.scales.astype(jnp.float32).reshape(-1), (rhs.n,))
    out_c = dn.out_spec[1]
    shape = [1] * y.ndim
    shape[out_c] = rhs.n
    return (y.astype(jnp.float32) * sx * ws.reshape(shape)).astype(x.dtype)


# ----------------------------------------------------------------------------------------------
# accelerate
# ----------------------------------------------------------------------------------------------


class _NNXSplit(eqx.Module):
    graphdef: Any = eqx.field(static=True)
    state: Any


def _is_nnx(x: Any) -> bool:
    return isinstance(x, nnx.Module)


def _split_nnx(tree: Any) -> Any:
    return jax.tree.map(
        lambda x: _NNXSplit(*nnx.split(x)) if _is_nnx(x) else x, tree, is_leaf=_is_nnx
    )


def _merge_nnx(tree: Any) -> Any:
    is_split = lambda x: isinstance(x, _NNXSplit)
    return jax.tree.map(
        lambda x: nnx.merge(x.graphdef, x.state) if is_split(x) else x, tree, is_leaf=is_split
    )


def accelerate(fn: Callable[..., Any], *, backend: str = "auto") -> Callable[..., Any]:
    """Make ``fn`` run on accelerated array values (`QTensor`, ...) anywhere in its inputs.

    Matmuls against quantized weights run in quantized kernels; every other operation sees the
    materialised array. The result composes with `jax.jit`, `jax.vmap`, `jax.grad` (use
    `equinox.filter_grad` so integer payloads are skipped; gradients reach float leaves) and
    `lax.scan` over stacked weights. Flax NNX modules among the arguments are split and merged
    around the call.

    Args:
        fn: any function of pytrees.
        backend: kernel backend, ``"auto"`` (fastest correct on this device), ``"xla"``,
            ``"pallas"`` or ``"interpret"``.

    Returns:
        A function with the same signature.

    Example:
        >>> qmodel = jaxaccel.quantize(model, jaxaccel.RTN(fmt=jaxaccel.Int8()))
        >>> y = jax.jit(jaxaccel.accelerate(lambda m, x: m(x)))(qmodel, x)
    """
    pk.check_backend(backend)

    def inner(args, kwargs):
        args, kwargs = _merge_nnx((args, kwargs))
        return fn(*args, **kwargs)

    qinner = quax.quaxify(inner)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = _split_nnx((args, kwargs))
        with _use_backend(backend):
            return qinner(args, kwargs)

    return wrapper
