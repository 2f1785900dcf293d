"""W8A8 matmul: ``int8[M, K] @ int8[K, N]`` accumulated in int32, then rescaled.

``out[m, n] = (sum_k xq[m, k] * wq[k, n]) * x_scale[m] * w_scale[n]``, with per-row activation
scales and per-column weight scales applied once to the exact int32 sum.
"""

from __future__ import annotations

import dataclasses
import functools
import typing

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jaxtyping import Array, Float, Int8

from ._backend import Backend, BlockSizes, Resolved, resolve_backend, round_up, triton_params

# What backend="auto" runs on CPU: the interpreted kernel. Against expectation it beats XLA's own
# int8 dot_general (preferred_element_type=int32). benchmarks/kernels_cpu.py (2-core AMD EPYC,
# jax 0.10.2, int8 [M, 4096] @ int8 [4096, 4096], median ms for M = 1 / 8 / 32):
#   interpret (512-long K steps) 2.1 / 1.3 / 2.8    xla reference 16.8 / 2.6 / 5.3
# XLA's one big int8 GEMV at M = 1 is slow, and the same kernel with a single 4096-long K step was
# too (25 ms), so it is the K split that pays. At M = 512 the two tie (54 vs 53 ms).
_CPU_AUTO: Resolved = "interpret"


def _reference(
    xq: Int8[Array, "M K"],
    wq: Int8[Array, "K N"],
    x_scale: Float[Array, "M 1"],
    w_scale: Float[Array, "1 N"],
    out_dtype: jnp.dtype,
) -> Float[Array, "M N"]:
    acc = jax.lax.dot_general(xq, wq, (((1,), (0,)), ((), ())), preferred_element_type=jnp.int32)
    out = acc.astype(jnp.float32) * x_scale.astype(jnp.float32) * w_scale.astype(jnp.float32)
    return out.astype(out_dtype)


def _int8_matmul_kernel(x_ref, w_ref, xs_ref, ws_ref, o_ref, *, block_k: int, num_k: int):
    def body(k, acc):
        x = x_ref[:, pl.ds(k * block_k, block_k)]
        w = w_ref[pl.ds(k * block_k, block_k), :]
        return acc + jnp.dot(x, w, preferred_element_type=jnp.int32)

    acc = jnp.zeros((x_ref.shape[0], w_ref.shape[1]), jnp.int32)
    acc = jax.lax.fori_loop(0, num_k, body, acc)
    # Same operation order as the reference, so the result is bit-identical.
    out = acc.astype(jnp.float32) * xs_ref[...] * ws_ref[...]
    o_ref[...] = out.astype(o_ref.dtype)


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    block_m: int
    block_n: int
    block_k: int
    interpret: bool
    out_dtype: jnp.dtype


def _fit(dim: int, block: int, compiled: bool, minimum: int) -> int:
    if compiled:  # Triton: power-of-two tiles, int8 MMA wants >= 16 (M, N) and >= 32 (K)
        return max(minimum, min(1 << (block.bit_length() - 1), pl.next_power_of_2(dim)))
    return min(block, dim)


def _plan(
    shape: tuple[int, int, int],
    block_sizes: BlockSizes | None,
    compiled: bool,
    out_dtype: jnp.dtype,
) -> _Plan:
    if block_sizes is None:
        block_sizes = BlockSizes.get_default("gpu" if compiled else jax.default_backend())
    m, k, n = shape
    return _Plan(
        block_m=_fit(m, block_sizes.block_m, compiled, 16),
        block_n=_fit(n, block_sizes.block_n, compiled, 16),
        block_k=_fit(k, block_sizes.block_k, compiled, 32),
        interpret=not compiled,
        out_dtype=out_dtype,
    )


def _run_kernel(
    plan: _Plan,
    xq: Int8[Array, "M K"],
    wq: Int8[Array, "K N"],
    x_scale: Float[Array, "M 1"],
    w_scale: Float[Array, "1 N"],
) -> Float[Array, "M N"]:
    bm, bn, bk = plan.block_m, plan.block_n, plan.block_k
    (m, k), n = xq.shape, wq.shape[1]
    mp, np_, kp = round_up(m, bm), round_up(n, bn), round_up(k, bk)
    xq = jnp.pad(xq, ((0, mp - m), (0, kp - k)))
    wq = jnp.pad(wq, ((0, kp - k), (0, np_ - n)))
    x_scale = jnp.pad(x_scale.astype(jnp.float32), ((0, mp - m), (0, 0)))
    w_scale = jnp.pad(w_scale.astype(jnp.float32), ((0, 0), (0, np_ - n)))
    out = pl.pallas_call(
        functools.partial(_int8_matmul_kernel, block_k=bk, num_k=kp // bk),
        grid=(mp // bm, np_ // bn),
        in_specs=[
            pl.BlockSpec((bm, kp), lambda i, j: (i, 0)),
            pl.BlockSpec((kp, bn), lambda i, j: (0, j)),
            pl.BlockSpec((bm, 1), lambda i, j: (i, 0)),
            pl.BlockSpec((1, bn), lambda i, j: (0, j)),
        ],
        out_specs=pl.BlockSpec((bm, bn), lambda i, j: (i, j)),
        out_shape=jax.ShapeDtypeStruct((mp, np_), plan.out_dtype),
        interpret=plan.interpret,
        compiler_params=triton_params(plan.interpret),
        name="int8_matmul",
    )(xq, wq, x_scale, w_scale)
    return out[:m, :n]


# pallas_call has no transpose rule: tangents (to the scales; the int8 inputs get float0) come
# from the reference, which computes the same function. custom_jvp serves both AD modes.
@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _kernel_matmul(plan: _Plan, xq, wq, x_scale, w_scale):
    return _run_kernel(plan, xq, wq, x_scale, w_scale)


@_kernel_matmul.defjvp
def _kernel_matmul_jvp(plan: _Plan, primals, tangents):
    _, out_dot = jax.jvp(lambda *a: _reference(*a, plan.out_dtype), primals, tangents)
    return _kernel_matmul(plan, *primals), out_dot


def _check_args(xq, wq, x_scale, w_scale, out_dtype, block_sizes):
    """Raise ValueError naming the argument; return the broadcast scales and the out dtype."""
    for name, a in (("xq", xq), ("wq", wq), ("x_scale", x_scale), ("w_scale", w_scale)):
        if not hasattr(a, "shape") or not hasattr(a, "dtype"):
            raise ValueError(f"{name} must be an array, got {type(a).__name__}")
    for name, a in (("xq", xq), ("wq", wq)):
        if a.ndim != 2:
            raise ValueError(f"{name} must be 2-D, got shape {a.shape}")
        if a.dtype != jnp.int8:
            raise ValueError(f"{name} must be int8, got {a.dtype}")
    (m, k), (kw, n) = xq.shape, wq.shape
    if k != kw:
        raise ValueError(f"xq has K={k} (shape {xq.shape}) but wq has K={kw} (shape {wq.shape})")
    for name, a, want in (("x_scale", x_scale, (m, 1)), ("w_scale", w_scale, (1, n))):
        if a.shape not in (want, (1, 1)):
            raise ValueError(f"{name} must have shape {want} (or (1, 1)), got {a.shape}")
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise ValueError(f"{name} must be floating, got {a.dtype}")
    if block_sizes is not None and not isinstance(block_sizes, BlockSizes):
        raise ValueError(f"block_sizes must be a BlockSizes or None, got {block_sizes!r}")
    out_dtype = jnp.dtype(out_dtype)
    if not jnp.issubdtype(out_dtype, jnp.floating):
        raise ValueError(f"out_dtype must be floating, got {out_dtype}")
    x_scale = jnp.broadcast_to(x_scale, (m, 1))
    w_scale = jnp.broadcast_to(w_scale, (1, n))
    return x_scale, w_scale, out_dtype


@functools.partial(jax.jit, static_argnames=["out_dtype"])
@typing.no_type_check  # hand-written checks raise ValueError naming the argument
def int8_matmul_reference(
    xq: Int8[Array, "M K"],
    wq: Int8[Array, "K N"],
    x_scale: Float[Array, "M 1"],
    w_scale: Float[Array, "1 N"],
    *,
    out_dtype: jnp.dtype = jnp.float32,
) -> Float[Array, "M N"]:
    """Pure-XLA `int8_matmul`: one int8 ``dot_general`` into int32, then the two scales.

    This is the specification the kernel is tested against, and the ``"xla"`` backend.
    Arguments are those of `int8_matmul`.

    Returns:
        ``(xq @ wq)_int32 * x_scale * w_scale`` as ``[M, N]`` in ``out_dtype``.
    """
    x_scale, w_scale, out_dtype = _check_args(xq, wq, x_scale, w_scale, out_dtype, None)
    return _reference(xq, wq, x_scale, w_scale, out_dtype)


@functools.partial(jax.jit, static_argnames=["backend", "block_sizes", "out_dtype"])
# Checked by hand (ValueError naming the argument) rather than by the jaxtyping test hook, which
# would raise a TypeError first; the private functions are type-checked.
@typing.no_type_check
def int8_matmul(
    xq: Int8[Array, "M K"],
    wq: Int8[Array, "K N"],
    x_scale: Float[Array, "M 1"],
    w_scale: Float[Array, "1 N"],
    *,
    backend: Backend = "auto",
    block_sizes: BlockSizes | None = None,
    out_dtype: jnp.dtype = jnp.float32,
) -> Float[Array, "M N"]:
    """W8A8 matmul: int8 activations times int8 weights, exact int32 accumulation, then scales.

    Computes ``out[m, n] = (sum_k xq[m, k] * wq[k, n]) * x_scale[m, 0] * w_scale[0, n]``. The
    int32 sum is exact for ``K < 2**17``, so every backend returns the same bits.

    Args:
        xq: quantized activations ``int8[M, K]``.
        wq: quantized weight ``int8[K, N]``.
        x_scale: per-row activation scales ``[M, 1]`` (or ``[1, 1]`` per-tensor), float.
        w_scale: per-column weight scales ``[1, N]`` (or ``[1, 1]``), float.
        backend: ``"xla"`` (`int8_matmul_reference`), ``"pallas"`` (compiled, GPU),
            ``"interpret"`` or ``"auto"`` (compiled on GPU, XLA on TPU, the measured-fastest
            path on CPU, which is the interpreted kernel).
        block_sizes: tiles (`BlockSizes`); default `BlockSizes.get_default()` for the platform.
        out_dtype: output dtype, float32 by default.

    Returns:
        ``[M, N]`` in ``out_dtype``.

    Raises:
        ValueError: a shape, dtype or option does not fit (the message names the argument), or
            ``backend="pallas"`` on CPU.
    """
    x_scale, w_scale, out_dtype = _check_args(xq, wq, x_scale, w_scale, out_dtype, block_sizes)
    chosen = resolve_backend(backend, pallas_supported=True, cpu_auto=_CPU_AUTO)
    if chosen == "xla":
        return _reference(xq, wq, x_scale, w_scale, out_dtype)
    plan = _plan((*xq.shape, wq.shape[1]), block_sizes, chosen == "pallas", out_dtype)
    return _kernel_matmul(plan, xq, wq, x_scale, w_scale)


def int8_matmul_backend(backend: Backend = "auto") -> Resolved:
    """The backend `int8_matmul` runs (``"auto"`` resolved on this device)."""
    return resolve_backend(backend, pallas_supported=True, cpu_auto=_CPU_AUTO)
