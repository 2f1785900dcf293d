"""Weight-only quantized matmul ``x @ dequant(W)`` with the dequantization inside the kernel.

Layout (shared with ``jaxaccel``'s quantizers; codes per `pallas_kernels._codecs.ElementCode`):

- The weight has logical shape ``[K, N]`` (``K`` is the contraction).
- ``payload``: 8-bit codes are ``[K, N]`` of ``code.storage_dtype``; 4-bit codes are packed as
  ``uint8[K, N // 2]``, the low nibble of column ``j`` holding code column ``j`` and the high
  nibble code column ``j + N // 2`` (`pack_nibbles`).
- ``scales``: ``[K // gk, Ns]`` with ``Ns`` in ``{1, N}``; row ``g`` scales rows
  ``g * gk : (g + 1) * gk`` of the weight (``gk = K`` is per-channel, ``[1, 1]`` per-tensor).
  float32, ``uint8`` (E8M0 exponent bytes, MXFP4) or ``float8_e4m3fn`` (NVFP4 block scales).
- ``zero`` (optional, like ``scales``, float): ``value = (code - zero) * scale``.
- ``scales_neg`` (optional, like ``scales``, float; AFPQ): negative values use ``scales_neg``.

The kernel tiles the output (grid ``[M / block_m, N / block_n]``) and loops over ``K`` inside the
kernel, unpacking and scaling one ``[block_k, block_n]`` weight tile per step, so the float
weight is never materialised. A 4-bit tile produces two output blocks (columns ``j`` and
``j + N / 2``), written through a ``[M, 2, N / 2]`` view of the output.
"""

from __future__ import annotations

import dataclasses
import functools
import typing

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jaxtyping import Array, Float, Shaped

from ._backend import Backend, BlockSizes, Resolved, resolve_backend, round_up, triton_params
from ._codecs import ElementCode, decode_codes, decode_scales, unpack_nibbles

# What backend="auto" runs on CPU: the interpreted kernel, with whole-output tiles and 512-long K
# steps. benchmarks/kernels_cpu.py (2-core AMD EPYC, jax 0.10.2, x f32 [M, 4096] @ W [4096, 4096],
# median ms for M = 1 / 8 / 32; results/kernels_cpu.json):
#   INT8 per-channel   interpret 1.7 / 2.5 / 4.2   xla reference 14.4 / 16.0 / 19.8
#   INT4 group 128     interpret 1.8 / 3.5 / 8.2   xla reference 22.2 / 22.2 / 24.4
#                                                   jnp.int4 + XLA dot 18.3 / 20.5 / 22.6
#   MXFP4 (E2M1 + E8M0, group 32) interpret 3.6 / 4.4 / 6.6   xla reference 22.2 / 22.0 / 24.4
# The interpreter runs the kernel as compiled XLA loops, and dequantizing one [512, N] tile per
# step keeps it in cache, where the reference writes and rereads a 64 MB float32 weight. A spot
# check at M = 512 still favoured it (INT4: 82 vs 102 ms for f32 x, 29 vs 59 ms for bf16 x).
_CPU_AUTO: Resolved = "interpret"


# ---------------------------------------------------------------------------------------------
# Dequantization (shared by the kernel body and the reference)


def _apply_scales(
    v: Float[Array, "rows n"],
    s: Float[Array, "groups ns"],
    z: Float[Array, "groups ns"] | None,
    s_neg: Float[Array, "groups ns"] | None,
) -> Float[Array, "rows n"]:
    """Scale decoded codes ``v``, whose rows form ``groups`` equal groups (one per scale row)."""
    rows, n = v.shape
    groups = s.shape[0]
    if groups > 1:
        v = v.reshape(groups, rows // groups, n)
        s = s.reshape(groups, 1, s.shape[1])
        z = None if z is None else z.reshape(groups, 1, z.shape[1])
        s_neg = None if s_neg is None else s_neg.reshape(groups, 1, s_neg.shape[1])
    if z is not None:
        v = v - z
    w = v * s if s_neg is None else jnp.where(v < 0, v * s_neg, v * s)
    return w.reshape(rows, n)


def _check_weight(
    payload: object,
    scales: object,
    zero: object,
    scales_neg: object,
    code: object,
) -> tuple[int, int]:
    """Raise ValueError naming the argument unless the weight follows the layout; return (K, N)."""
    if not isinstance(code, ElementCode):
        raise ValueError(f"code must be an ElementCode, got {code!r}")
    for name, a in (("payload", payload), ("scales", scales)):
        if not hasattr(a, "shape") or not hasattr(a, "dtype"):
            raise ValueError(f"{name} must be an array, got {type(a).__name__}")
    if payload.ndim != 2:
        raise ValueError(f"payload must be 2-D, got shape {payload.shape}")
    if payload.dtype != code.storage_dtype:
        raise ValueError(
            f"payload dtype must be {code.storage_dtype} for code={code}, got {payload.dtype}"
        )
    k, n = payload.shape
    if code.is_4bit:
        n *= 2
    if scales.ndim != 2:
        raise ValueError(f"scales must be 2-D [K // group, 1 or N], got shape {scales.shape}")
    groups, ns = scales.shape
    if groups < 1 or k % groups:
        raise ValueError(
            f"scales.shape[0]={groups} must divide K={k} (it is K // group_size), "
            f"got scales of shape {scales.shape}"
        )
    if ns not in (1, n):
        raise ValueError(f"scales.shape[1] must be 1 or N={n}, got scales of shape {scales.shape}")
    if not (scales.dtype == jnp.uint8 or jnp.issubdtype(scales.dtype, jnp.floating)):
        raise ValueError(
            f"scales dtype must be floating or uint8 (E8M0 exponents), got {scales.dtype}"
        )
    for name, a in (("zero", zero), ("scales_neg", scales_neg)):
        if a is None:
            continue
        if not hasattr(a, "shape") or a.shape != scales.shape:
            raise ValueError(
                f"{name} must have the shape of scales {scales.shape}, "
                f"got {getattr(a, 'shape', type(a).__name__)}"
            )
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise ValueError(f"{name} must be floating, got {a.dtype}")
    return k, n


def _dequantize(
    payload: Shaped[Array, "K Np"],
    scales: Shaped[Array, "G Ns"],
    zero: Float[Array, "G Ns"] | None,
    scales_neg: Float[Array, "G Ns"] | None,
    code: ElementCode,
) -> Float[Array, "K N"]:
    if code.is_4bit:
        codes = jnp.concatenate(unpack_nibbles(payload), axis=1)
    else:
        codes = payload
    return _apply_scales(
        decode_codes(codes, code),
        decode_scales(scales),
        None if zero is None else zero.astype(jnp.float32),
        None if scales_neg is None else scales_neg.astype(jnp.float32),
    )


@functools.partial(jax.jit, static_argnames=["code"])
@typing.no_type_check  # hand-written checks raise ValueError; see `quant_matmul`
def dequantize_weight(
    payload: Shaped[Array, "K Np"],
    scales: Shaped[Array, "G Ns"],
    *,
    code: ElementCode,
    zero: Float[Array, "G Ns"] | None = None,
    scales_neg: Float[Array, "G Ns"] | None = None,
) -> Float[Array, "K N"]:
    """Dequantize a stored weight to a dense float32 ``[K, N]`` matrix.

    Args:
        payload: the codes, ``[K, N]`` for 8-bit codes or packed ``uint8[K, N // 2]`` for 4-bit
            codes (see the module docstring for the nibble layout).
        scales: ``[K // group_size, 1 or N]``; float, ``uint8`` (E8M0) or ``float8_e4m3fn``.
        code: how codes are read (`ElementCode`).
        zero: optional zero point, shape of ``scales``: ``value = (code - zero) * scale``.
        scales_neg: optional scale for negative values (AFPQ), shape of ``scales``.

    Returns:
        The float32 weight ``[K, N]``.

    Raises:
        ValueError: when an argument does not follow the layout (the message names it).

    Examples:
        >>> import jax.numpy as jnp
        >>> from pallas_kernels import ElementCode, dequantize_weight
        >>> payload = jnp.array([[1, -2], [3, 4]], jnp.int8)
        >>> dequantize_weight(payload, jnp.array([[0.5]]), code=ElementCode.INT8).tolist()
        [[0.5, -1.0], [1.5, 2.0]]
    """
    _check_weight(payload, scales, zero, scales_neg, code)
    return _dequantize(payload, scales, zero, scales_neg, code)


# ---------------------------------------------------------------------------------------------
# Reference


def _reference(
    x: Float[Array, "M K"],
    payload: Shaped[Array, "K Np"],
    scales: Shaped[Array, "G Ns"],
    zero: Float[Array, "G Ns"] | None,
    scales_neg: Float[Array, "G Ns"] | None,
    code: ElementCode,
    out_dtype: jnp.dtype,
) -> Float[Array, "M N"]:
    w = _dequantize(payload, scales, zero, scales_neg, code)
    out = jnp.dot(
        x.astype(jnp.float32),
        w,
        precision=jax.lax.Precision.HIGHEST,  # no TF32 on GPU: this is the spec
        preferred_element_type=jnp.float32,
    )
    return out.astype(out_dtype)


@functools.partial(jax.jit, static_argnames=["code", "out_dtype"])
@typing.no_type_check  # hand-written checks raise ValueError; see `quant_matmul`
def quant_matmul_reference(
    x: Float[Array, "M K"],
    payload: Shaped[Array, "K Np"],
    scales: Shaped[Array, "G Ns"],
    *,
    code: ElementCode,
    zero: Float[Array, "G Ns"] | None = None,
    scales_neg: Float[Array, "G Ns"] | None = None,
    out_dtype: jnp.dtype | None = None,
) -> Float[Array, "M N"]:
    """Pure-jnp `quant_matmul`: dequantize the whole weight to float32, then one float32 dot.

    This is the specification the kernel is tested against, and the ``"xla"`` backend. Arguments
    and layout are those of `quant_matmul`.

    Returns:
        ``x @ dequantize_weight(...)``, ``[M, N]`` in ``out_dtype`` (default ``x.dtype``).
    """
    out_dtype = _check_args(x, payload, scales, zero, scales_neg, code, out_dtype, None)
    return _reference(x, payload, scales, zero, scales_neg, code, out_dtype)


# ---------------------------------------------------------------------------------------------
# Kernel


def _quant_matmul_kernel(
    x_ref,
    w_ref,
    s_ref,
    *refs,
    code: ElementCode,
    block_k: int,
    group_k: int,
    num_k: int,
    has_zero: bool,
    has_neg: bool,
):
    # refs = ([z_ref], [sn_ref], o_ref). For 4-bit codes w_ref is packed and the scale refs and
    # o_ref have a middle axis of 2 (low / high nibble half).
    z_ref = refs[0] if has_zero else None
    sn_ref = refs[int(has_zero)] if has_neg else None
    o_ref = refs[-1]
    halves = 2 if code.is_4bit else 1
    block_m, block_n = x_ref.shape[0], w_ref.shape[1]

    def scale_rows(ref, k, half):
        if ref is None:
            return None
        if group_k >= block_k:  # the whole K step lies in one group
            rows = pl.ds((k * block_k) // group_k, 1)
        else:
            rows = pl.ds(k * (block_k // group_k), block_k // group_k)
        tile = ref[rows, half, :] if code.is_4bit else ref[rows, :]
        return tile

    def body(k, accs):
        x = x_ref[:, pl.ds(k * block_k, block_k)]
        w = w_ref[pl.ds(k * block_k, block_k), :]
        codes = unpack_nibbles(w) if code.is_4bit else (w,)
        new = []
        for half in range(halves):
            s = decode_scales(scale_rows(s_ref, k, half))
            z = scale_rows(z_ref, k, half)
            sn = scale_rows(sn_ref, k, half)
            wq = _apply_scales(
                decode_codes(codes[half], code),
                s,
                None if z is None else z.astype(jnp.float32),
                None if sn is None else sn.astype(jnp.float32),
            )
            new.append(
                accs[half] + jnp.dot(x, wq.astype(x.dtype), preferred_element_type=jnp.float32)
            )
        return tuple(new)

    zeros = tuple(jnp.zeros((block_m, block_n), jnp.float32) for _ in range(halves))
    accs = jax.lax.fori_loop(0, num_k, body, zeros)
    if code.is_4bit:
        o_ref[:, 0, :] = accs[0].astype(o_ref.dtype)
        o_ref[:, 1, :] = accs[1].astype(o_ref.dtype)
    else:
        o_ref[...] = accs[0].astype(o_ref.dtype)


def _pow2_floor(n: int) -> int:
    return 1 << (max(n, 1).bit_length() - 1)


def _fit(dim: int, block: int, compiled: bool) -> int:
    """A tile for ``dim``: clamped to it; on GPU a power of two of at least 16 (Triton)."""
    if compiled:
        return max(16, min(_pow2_floor(block), pl.next_power_of_2(dim)))
    return min(block, dim)


def _k_tiling(k: int, groups: int, block_k: int, compiled: bool) -> tuple[int, int, int] | None:
    """Pick ``(block_k, padded K, group_k)`` compatible with the scale groups, or None.

    A K step either lies inside one scale group (``group_k % block_k == 0``: one scale row per
    step) or covers whole groups (``block_k % group_k == 0``: ``block_k // group_k`` rows).
    """
    group_k = k // groups
    if groups == 1:  # per-channel / per-tensor: any step, pad K; scale row 0 throughout
        bk = _fit(k, block_k, compiled)
        kp = round_up(k, bk)
        return bk, kp, kp
    want = _pow2_floor(block_k) if compiled else block_k
    if group_k >= want or (compiled and group_k & (group_k - 1)):
        # Steps inside a group: the largest (power-of-two, on GPU) divisor of group_k <= want.
        if compiled:
            bk = group_k & -group_k  # largest power of two dividing group_k
            bk = min(bk, want)
            if bk < 16:
                return None
        else:
            bk = max(d for d in range(1, min(want, group_k) + 1) if group_k % d == 0)
        return bk, k, group_k
    per_step = min(want // group_k, groups)
    if compiled:
        per_step = _pow2_floor(per_step)
        if per_step * group_k < 16:
            per_step = 16 // group_k
    bk = per_step * group_k
    return bk, round_up(groups, per_step) * group_k, group_k


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    code: ElementCode
    block_m: int
    block_n: int
    block_k: int
    padded_k: int
    group_k: int
    interpret: bool
    out_dtype: jnp.dtype


def _plan(
    x_shape: tuple[int, int],
    payload_shape: tuple[int, int],
    groups: int,
    code: ElementCode,
    block_sizes: BlockSizes | None,
    compiled: bool,
    out_dtype: jnp.dtype,
) -> _Plan | None:
    """Tiles for the kernel, or None when the compiled kernel cannot handle the group size."""
    if block_sizes is None:
        block_sizes = BlockSizes.get_default("gpu" if compiled else jax.default_backend())
    m, k = x_shape
    tiling = _k_tiling(k, groups, block_sizes.block_k, compiled)
    if tiling is None:
        return None
    bk, kp, group_k = tiling
    return _Plan(
        code=code,
        block_m=_fit(m, block_sizes.block_m, compiled),
        block_n=_fit(payload_shape[1], block_sizes.block_n, compiled),
        block_k=bk,
        padded_k=kp,
        group_k=group_k,
        interpret=not compiled,
        out_dtype=out_dtype,
    )


def _run_kernel(
    plan: _Plan,
    x: Float[Array, "M K"],
    payload: Shaped[Array, "K Np"],
    scales: Shaped[Array, "G Ns"],
    zero: Float[Array, "G Ns"] | None,
    scales_neg: Float[Array, "G Ns"] | None,
) -> Float[Array, "M N"]:
    code, bm, bn, bk, kp = plan.code, plan.block_m, plan.block_n, plan.block_k, plan.padded_k
    m, k = x.shape
    nh = payload.shape[1]
    n = 2 * nh if code.is_4bit else nh
    mp, nhp = round_up(m, bm), round_up(nh, bn)
    groups = scales.shape[0]
    gp = 1 if groups == 1 else kp // plan.group_k

    x = jnp.pad(x, ((0, mp - m), (0, kp - k)))
    payload = jnp.pad(payload, ((0, kp - k), (0, nhp - nh)))

    def prep(a):  # [G, 1 or N] -> [Gp, Np] or, for 4-bit, [Gp, 2, Np / 2]; padding scales 0
        a = jnp.broadcast_to(a, (groups, n))
        if code.is_4bit:
            return jnp.pad(a.reshape(groups, 2, nh), ((0, gp - groups), (0, 0), (0, nhp - nh)))
        return jnp.pad(a, ((0, gp - groups), (0, nhp - nh)))

    side = [prep(a) for a in (scales, zero, scales_neg) if a is not None]
    if code.is_4bit:
        side_spec = pl.BlockSpec((gp, 2, bn), lambda i, j: (0, 0, j))
        out_spec = pl.BlockSpec((bm, 2, bn), lambda i, j: (i, 0, j))
        out_shape = jax.ShapeDtypeStruct((mp, 2, nhp), plan.out_dtype)
    else:
        side_spec = pl.BlockSpec((gp, bn), lambda i, j: (0, j))
        out_spec = pl.BlockSpec((bm, bn), lambda i, j: (i, j))
        out_shape = jax.ShapeDtypeStruct((mp, nhp), plan.out_dtype)
    kernel = functools.partial(
        _quant_matmul_kernel,
        code=code,
        block_k=bk,
        group_k=plan.group_k,
        num_k=kp // bk,
        has_zero=zero is not None,
        has_neg=scales_neg is not None,
    )
    out = pl.pallas_call(
        kernel,
        grid=(mp // bm, nhp // bn),
        in_specs=[
            pl.BlockSpec((bm, kp), lambda i, j: (i, 0)),
            pl.BlockSpec((kp, bn), lambda i, j: (0, j)),
            *([side_spec] * len(side)),
        ],
        out_specs=out_spec,
        out_shape=out_shape,
        interpret=plan.interpret,
        compiler_params=triton_params(plan.interpret),
        name=f"quant_matmul_{code.value}",
    )(x, payload, *side)
    if code.is_4bit:
        return out[:m, :, :nh].reshape(m, n)
    return out[:m, :n]


# Derivatives: pallas_call has no transpose rule, so the kernel's tangents come from the
# reference (the same function up to float rounding). A custom_jvp rather than a custom_vjp keeps
# forward mode working too; reverse mode transposes the reference's linear tangent map. Tangents
# flow to x, scales, zero and scales_neg; the integer payload gets float0.
@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _kernel_matmul(plan: _Plan, x, payload, scales, zero, scales_neg):
    return _run_kernel(plan, x, payload, scales, zero, scales_neg)


@_kernel_matmul.defjvp
def _kernel_matmul_jvp(plan: _Plan, primals, tangents):
    def ref(*args):
        return _reference(*args, plan.code, plan.out_dtype)

    _, out_dot = jax.jvp(ref, primals, tangents)
    return _kernel_matmul(plan, *primals), out_dot


# ---------------------------------------------------------------------------------------------
# Public wrapper


def _check_args(x, payload, scales, zero, scales_neg, code, out_dtype, block_sizes) -> jnp.dtype:
    k, _ = _check_weight(payload, scales, zero, scales_neg, code)
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise ValueError(f"x must be an array, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D [M, K] (vmap for batches), got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be floating, got {x.dtype}")
    if x.shape[1] != k:
        raise ValueError(
            f"x has K={x.shape[1]} (shape {x.shape}) but payload has K={k} rows "
            f"(shape {payload.shape})"
        )
    if block_sizes is not None and not isinstance(block_sizes, BlockSizes):
        raise ValueError(f"block_sizes must be a BlockSizes or None, got {block_sizes!r}")
    out_dtype = jnp.dtype(x.dtype if out_dtype is None else out_dtype)
    if not jnp.issubdtype(out_dtype, jnp.floating):
        raise ValueError(f"out_dtype must be floating, got {out_dtype}")
    return out_dtype


@functools.partial(jax.jit, static_argnames=["code", "backend", "block_sizes", "out_dtype"])
# Arguments are checked by hand so that bad input raises ValueError naming the argument; the
# jaxtyping import hook used in tests would pre-empt that with a TypeError. The annotations
# still document the shapes, and the private functions below this one are type-checked.
@typing.no_type_check
def quant_matmul(
    x: Float[Array, "M K"],
    payload: Shaped[Array, "K Np"],
    scales: Shaped[Array, "G Ns"],
    *,
    code: ElementCode,
    zero: Float[Array, "G Ns"] | None = None,
    scales_neg: Float[Array, "G Ns"] | None = None,
    backend: Backend = "auto",
    block_sizes: BlockSizes | None = None,
    out_dtype: jnp.dtype | None = None,
) -> Float[Array, "M N"]:
    """Weight-only quantized matmul ``x @ dequant(payload, scales)``, dequantizing in-kernel.

    The weight is read in its stored form (4 or 8 bits per value plus group scales) and each
    ``[block_k, block_n]`` tile is decoded and scaled inside the kernel, so a dense float weight
    never exists in memory. Accumulation is float32; for bfloat16 ``x`` the decoded tile is cast
    to bfloat16 before the dot (as tensor cores want), so results differ from the float32
    reference by bfloat16 rounding of the weight.

    Args:
        x: activations ``[M, K]``, float32 or bfloat16. Use `jax.vmap` for leading batch axes.
        payload: the weight codes: ``[K, N]`` of ``code.storage_dtype`` for 8-bit codes, or
            ``uint8[K, N // 2]`` for 4-bit codes, low nibble of column ``j`` = column ``j``,
            high nibble = column ``j + N // 2``.
        scales: ``[K // group_size, 1 or N]``: float32, ``uint8`` E8M0 exponents (MXFP4) or
            ``float8_e4m3fn`` (NVFP4 block scales; the per-tensor second-level scale is applied
            by the caller).
        code: the `ElementCode` of the payload.
        zero: optional float zero point shaped like ``scales``: ``value = (code - zero) * s``.
        scales_neg: optional float scales shaped like ``scales`` for negative values (AFPQ
            asymmetric FP4): ``value = decoded * (scales_neg if decoded < 0 else scales)``.
        backend: ``"xla"`` (`quant_matmul_reference`), ``"pallas"`` (compiled, GPU), ``"interpret"``
            (the kernel run by Pallas' interpreter) or ``"auto"`` (compiled on GPU when the
            group size allows, XLA on TPU, the measured-fastest path on CPU).
        block_sizes: tiles (`BlockSizes`); default `BlockSizes.get_default()` for the platform.
        out_dtype: output dtype; default ``x.dtype``.

    Returns:
        ``[M, N]`` in ``out_dtype``, with ``N = payload.shape[1]`` (8-bit codes) or
        ``2 * payload.shape[1]`` (4-bit codes).

    Raises:
        ValueError: a shape, dtype or option does not fit (the message names the argument), or
            ``backend="pallas"`` on CPU.
    """
    out_dtype = _check_args(x, payload, scales, zero, scales_neg, code, out_dtype, block_sizes)
    groups = scales.shape[0]
    gpu_plan = _plan(x.shape, payload.shape, groups, code, block_sizes, True, out_dtype)
    chosen = resolve_backend(backend, pallas_supported=gpu_plan is not None, cpu_auto=_CPU_AUTO)
    if chosen == "xla":
        return _reference(x, payload, scales, zero, scales_neg, code, out_dtype)
    if chosen == "pallas":
        plan = gpu_plan
    else:
        plan = _plan(x.shape, payload.shape, groups, code, block_sizes, False, out_dtype)
    return _kernel_matmul(plan, x, payload, scales, zero, scales_neg)


def quant_matmul_backend(
    m: int, k: int, n_packed: int, groups: int, code: ElementCode, backend: Backend = "auto"
) -> Resolved:
    """The backend `quant_matmul` runs for these shapes (``"auto"`` resolved on this device).

    Args:
        m, k: the activation shape ``[M, K]``.
        n_packed: ``payload.shape[1]``.
        groups: ``scales.shape[0]``.
        code: the payload's `ElementCode`.
        backend: the backend that would be requested.
    """
    gpu_plan = _plan((m, k), (k, n_packed), groups, code, None, True, jnp.dtype(jnp.float32))
    return resolve_backend(backend, pallas_supported=gpu_plan is not None, cpu_auto=_CPU_AUTO)
