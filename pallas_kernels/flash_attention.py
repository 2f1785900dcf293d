"""Flash attention for decoder inference: prefill and single-token decode against a KV cache.

``out[b, h, t] = softmax_s(scale * q[b, h, t] . k[b, h // G, s]) @ v[b, h // G, s]`` over the
visible key slots ``s`` (``G = Hq // Hkv`` query heads share one key/value head, GQA). Key slot
``s`` is visible to query ``(b, t)`` iff ``kv_start[b] <= s < kv_len[b]`` and
``s <= q_slots[b, t]``: ``q_slots`` is the cache slot each query occupies, so the causal mask
and the cache's fill level are both expressed in slots. A query that sees no key returns 0.

The kernel packs the ``G`` query heads that share a key/value head into the rows of one tile
(row ``t * G + g``), so every key block is loaded once per group, and a single decode token is
one ``[G, D]`` tile. Compiled (GPU), the grid is ``[B, Hkv, rows / block_q]``; interpreted (CPU)
a tile spans the whole batch and all heads and the grid is ``[rows / block_q]`` (see `_Plan`).
Each program runs an online softmax (running max and running sum, float32) over
``block_kv``-long key blocks, looping only over the blocks between ``kv_start`` and
``min(kv_len, max query slot + 1)`` of its rows (a `jax.lax.fori_loop` with traced bounds): key
blocks that are entirely masked (left padding, the unfilled cache, the causal future) are never
read.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import typing

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jaxtyping import Array, Float, Int

from ._backend import Backend, Resolved, resolve_backend, round_up, triton_params

# What backend="auto" runs on CPU: the interpreted kernel for decode (T = 1) and for long
# prefills (T >= _CPU_PREFILL_MIN_T), the XLA reference for short prefills.
# benchmarks/attention_cpu.py (2-core AMD EPYC shared with other jobs, jax 0.10.2, SmolLM2 heads
# Hq = 9, Hkv = 3, D = 64, float32, default CPU tiles; median ms, two runs as "run 1 / run 2";
# results/attention_cpu.json is run 2):
#                               B = 1                            B = 8
#                     xla reference  interpret         xla reference  interpret
#   prefill T=S=128     0.43 / 0.41  0.39 / 0.40         2.75 / 2.70  2.95 / 2.90
#   prefill T=S=512     2.75 / 5.39  2.94 / 3.28          106 / 105   36.1 / 33.6
#   decode S=512        0.08 / 0.10  0.05 / 0.05         0.25 / 0.28  0.32 / 0.32
#   decode S=2048       0.22 / 0.23  0.16 / 0.15         1.47 / 1.53  1.11 / 1.29
# (decode: kv_len ~ S/2, the token at slot kv_len - 1; prefill: causal, no cache.) The reference
# materialises [B, Hq, T, S] float32 scores and computes the causal future too; the kernel
# streams 128-key blocks and skips those past the tile's last query slot (about half at T = S)
# and past kv_len (half the cache here). At T = 128 the scores fit in cache and the two are
# within noise (XLA ahead at B = 8), so short prefills stay on XLA. Decode B = 8, S = 512 is the
# one decode case XLA won (by ~0.04 ms) in these runs; an earlier run had the kernel ahead (0.36
# vs 0.38), so decode is not split further. A bfloat16 spot check (--dtype bfloat16) agreed:
# kernel 2.9 / 31 ms vs XLA 7.0 / 113 ms at T = 512 (B = 1 / 8), kernel 0.61 vs XLA 0.78 ms at
# decode B = 8, S = 512, and the two within 10% at T = 128.
_CPU_PREFILL_MIN_T = 256

_FLOATS = tuple(jnp.dtype(d) for d in (jnp.float32, jnp.bfloat16, jnp.float16))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AttentionBlockSizes:
    """Tile sizes of `flash_attention`.

    Frozen, so it can be a static argument of `jax.jit`. Tiles are clamped to the problem and
    shapes that do not divide are padded by the wrapper, so any positive sizes are valid. A key
    length ``S`` that is not a multiple of ``block_kv`` costs a padded copy of ``k`` and ``v``
    (interpreted, a shorter step of at least half ``block_kv`` that divides ``S`` is taken
    instead when there is one). On GPU the compiled kernel rounds both sizes to powers of two of
    at least 16 (Triton's requirement).

    Attributes:
        block_q: query rows per tile. Rows are (query position, head of the group) pairs, so a
            decode step with ``G = Hq // Hkv`` heads per key/value head has ``G`` rows.
        block_kv: key slots per step of the in-kernel online-softmax loop.
    """

    block_q: int
    block_kv: int

    def __post_init__(self):
        for name in ("block_q", "block_kv"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"AttentionBlockSizes.{name} must be a positive int, got {value!r}"
                )

    @classmethod
    def get_default(cls, platform: str | None = None) -> AttentionBlockSizes:
        """Default tiles for ``platform`` (``jax.default_backend()`` when None).

        On CPU (interpret mode) a tile holds the whole batch and all heads, ``block_q`` rows of
        ``(position, head)`` pairs (384 = 128 positions of SmolLM2's 3-head groups) and 128-key
        steps: in ``benchmarks/attention_cpu.py --sweep`` (block_q 96 / 384 / 1536 by block_kv
        64 / 128 / 256 / 512) it was the fastest or within noise of it for prefill at T = 512
        (B = 8: 33 ms, vs 48-68 ms with 96-row tiles or 512-key steps); decode, where block_q
        does not matter, was within ~10% across block_kv. On GPU these are ordinary Triton tiles.
        """
        platform = jax.default_backend() if platform is None else platform
        if platform == "cpu":
            return cls(block_q=384, block_kv=128)
        return cls(block_q=64, block_kv=64)


# ---------------------------------------------------------------------------------------------
# Reference


def _reference(
    q: Float[Array, "B Hq T D"],
    k: Float[Array, "B Hkv S D"],
    v: Float[Array, "B Hkv S D"],
    q_slots: Int[Array, "B T"],
    kv_start: Int[Array, " B"],
    kv_len: Int[Array, " B"],
    scale: float,
) -> Float[Array, "B Hq T D"]:
    b, hq, t, d = q.shape
    hkv, s = k.shape[1], k.shape[2]
    qg = q.reshape(b, hkv, hq // hkv, t, d).astype(jnp.float32)
    hi = jax.lax.Precision.HIGHEST  # no TF32 on GPU: this is the spec
    scores = scale * jnp.einsum("bhgtd,bhsd->bhgts", qg, k.astype(jnp.float32), precision=hi)
    slot = jnp.arange(s, dtype=jnp.int32)[None, None, :]
    visible = (
        (slot >= kv_start[:, None, None])
        & (slot < kv_len[:, None, None])
        & (slot <= q_slots[:, :, None])
    )  # [B, T, S]
    scores = jnp.where(visible[:, None, None], scores, -jnp.inf)
    m = jnp.max(scores, axis=-1, keepdims=True)
    # Softmax does not depend on m; a row with no visible key has m = -inf, shifted by 0 instead
    # so that every exp below is exp(-inf) = 0 and the row (and its gradient) is 0, not NaN.
    m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
    p = jnp.exp(scores - m)
    denom = jnp.sum(p, axis=-1, keepdims=True)
    out = jnp.einsum("bhgts,bhsd->bhgtd", p, v.astype(jnp.float32), precision=hi)
    out = out / jnp.where(denom > 0, denom, 1.0)
    return out.reshape(b, hq, t, d).astype(q.dtype)


# ---------------------------------------------------------------------------------------------
# Kernel


def _flash_attention_kernel(
    q_ref, k_ref, v_ref, slots_ref, start_ref, end_ref, o_ref, *, scale: float, block_kv: int
):
    # One tile of query rows against the whole key range, in one of two layouts (`_Plan.batched`):
    #   per head (GPU):  q_ref / o_ref [bq, D], k_ref / v_ref [S, D], slots_ref [bq],
    #                    start_ref / end_ref [] (scalars);
    #   batched (CPU):   q_ref / o_ref [B, Hkv, bq, D], k_ref / v_ref [B, Hkv, S, D],
    #                    slots_ref [B, bq], start_ref / end_ref [B].
    # Rows are t * G + g; slots are -1 on padding rows; end is kv_len clamped to S.
    q = q_ref[...]
    lead = q.ndim - 2  # 0 or 2 leading (batch, head) axes
    bq = q.shape[-2]
    start = jnp.maximum(start_ref[...], 0)
    end = end_ref[...]
    slots = slots_ref[...]
    limit = jnp.maximum(jnp.minimum(end, jnp.max(slots, axis=-1) + 1), 0)  # keys >= limit: masked
    if lead:
        # Bounds of the loop: the key blocks that some row of the tile can see.
        lo, hi = jnp.min(start), jnp.max(limit)
        start = start.reshape(start.shape + (1,) * (lead + 1))  # [B, 1, 1, 1]
        end = end.reshape(end.shape + (1,) * (lead + 1))
    else:
        lo, hi = start, limit
    q_slot = slots.reshape(slots.shape[:-1] + (1,) * (lead - slots.ndim + 1) + (bq, 1))
    lo = jax.lax.div(lo, block_kv)
    hi = jax.lax.div(hi + (block_kv - 1), block_kv)
    dot_dtype = q.dtype if q.dtype == k_ref.dtype else jnp.float32
    q = q.astype(dot_dtype)
    batch = (tuple(range(lead)), tuple(range(lead)))

    def body(j, carry):
        acc, m_prev, l_prev = carry
        keys = (slice(None),) * lead + (pl.ds(j * block_kv, block_kv), slice(None))
        k = k_ref[keys].astype(dot_dtype)
        s = jax.lax.dot_general(
            q,
            k,
            (((lead + 1,), (lead + 1,)), batch),
            precision=jax.lax.Precision.HIGHEST,
            preferred_element_type=jnp.float32,
        )  # [..., bq, block_kv]
        s = s * scale
        slot = j * block_kv + jax.lax.broadcasted_iota(
            jnp.int32, (1,) * (lead + 1) + (block_kv,), lead + 1
        )
        visible = (slot >= start) & (slot < end) & (slot <= q_slot)
        s = jnp.where(visible, s, -jnp.inf)
        # m starts at the lowest finite float, so exp(m_prev - m_next) and exp(s - m_next) stay
        # well defined (1 and 0) while a row has seen no visible key.
        m_next = jnp.maximum(m_prev, jnp.max(s, axis=-1))
        correction = jnp.exp(m_prev - m_next)
        p = jnp.exp(s - m_next[..., None])
        v = v_ref[keys]
        pv = jax.lax.dot_general(
            p.astype(v.dtype),
            v,
            (((lead + 1,), (lead,)), batch),
            precision=jax.lax.Precision.HIGHEST,
            preferred_element_type=jnp.float32,
        )
        acc = acc * correction[..., None] + pv
        return acc, m_next, l_prev * correction + jnp.sum(p, axis=-1)

    acc = jnp.zeros(q.shape, jnp.float32)
    m = jnp.full(q.shape[:-1], jnp.finfo(jnp.float32).min, jnp.float32)
    denom = jnp.zeros(q.shape[:-1], jnp.float32)
    acc, m, denom = jax.lax.fori_loop(lo, hi, body, (acc, m, denom))
    seen = denom > 0
    out = acc / jnp.where(seen, denom, 1.0)[..., None]
    o_ref[...] = jnp.where(seen[..., None], out, 0.0).astype(o_ref.dtype)


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    block_q: int
    block_kv: int
    padded_rows: int
    padded_s: int
    scale: float
    interpret: bool
    # The whole batch and all heads in one tile (grid [rows / block_q]) instead of one (row,
    # key/value head) per program (grid [B, Hkv, rows / block_q]). Pallas' interpreter carries
    # every operand through its grid loop and copies the blocks of each step, so on CPU few big
    # steps win (decode B = 8, S = 2048: ~50 ms per head vs ~1.2 ms batched); Triton's dot has no
    # batch dimensions, so the compiled kernel is per head.
    batched: bool


def _pow2_floor(n: int) -> int:
    return 1 << (max(n, 1).bit_length() - 1)


def _fit(dim: int, block: int, compiled: bool) -> int:
    """A tile for ``dim``: clamped to it; on GPU a power of two of at least 16 (Triton)."""
    if compiled:
        return max(16, min(_pow2_floor(block), pl.next_power_of_2(dim)))
    return min(block, dim)


def _pallas_supported(head_dim: int, dtypes: typing.Iterable[jnp.dtype]) -> bool:
    # Triton tiles are powers of two; the head dimension is one whole tile dimension.
    pow2 = head_dim >= 16 and head_dim & (head_dim - 1) == 0
    return pow2 and all(jnp.dtype(d) in _FLOATS for d in dtypes)


def _plan(
    rows: int,
    s: int,
    scale: float,
    block_sizes: AttentionBlockSizes | None,
    compiled: bool,
    batched: bool | None = None,
) -> _Plan:
    if block_sizes is None:
        block_sizes = AttentionBlockSizes.get_default("gpu" if compiled else jax.default_backend())
    bq = _fit(rows, block_sizes.block_q, compiled)
    bkv = _fit(s, block_sizes.block_kv, compiled)
    if not compiled and s % bkv:
        # Rather than copy the whole cache to pad it (every decode step), take a key step down to
        # half as long that divides S, when there is one.
        bkv = max((x for x in range(bkv // 2 + 1, bkv) if s % x == 0), default=bkv)
    return _Plan(
        block_q=bq,
        block_kv=bkv,
        padded_rows=round_up(rows, bq),
        padded_s=round_up(s, bkv),
        scale=scale,
        interpret=not compiled,
        batched=not compiled if batched is None else batched,
    )


def _run_kernel(
    plan: _Plan,
    q: Float[Array, "B Hq T D"],
    k: Float[Array, "B Hkv S D"],
    v: Float[Array, "B Hkv S D"],
    q_slots: Int[Array, "B T"],
    kv_start: Int[Array, " B"],
    kv_len: Int[Array, " B"],
) -> Float[Array, "B Hq T D"]:
    b, hq, t, d = q.shape
    hkv, s = k.shape[1], k.shape[2]
    g = hq // hkv
    rows, bq, sp = t * g, plan.block_q, plan.padded_s
    # Pack the G query heads of each key/value head into rows t * G + g (a copy only if T > 1).
    q = q.reshape(b, hkv, g, t, d).transpose(0, 1, 3, 2, 4).reshape(b, hkv, rows, d)
    q = jnp.pad(q, ((0, 0), (0, 0), (0, plan.padded_rows - rows), (0, 0)))
    slots = jnp.repeat(q_slots, g, axis=1)
    slots = jnp.pad(slots, ((0, 0), (0, plan.padded_rows - rows)), constant_values=-1)
    if sp != s:  # padded keys lie at slots >= S >= kv_len: always masked
        pad = ((0, 0), (0, 0), (0, sp - s), (0, 0))
        k, v = jnp.pad(k, pad), jnp.pad(v, pad)
    kv_len = jnp.minimum(kv_len, s)

    if plan.batched:
        grid = (plan.padded_rows // bq,)
        row_spec = pl.BlockSpec((b, hkv, bq, d), lambda r: (0, 0, r, 0))
        kv_spec = pl.BlockSpec((b, hkv, sp, d), lambda r: (0, 0, 0, 0))
        slot_spec = pl.BlockSpec((b, bq), lambda r: (0, r))
        bound_spec = pl.BlockSpec((b,), lambda r: (0,))
    else:
        grid = (b, hkv, plan.padded_rows // bq)
        row_spec = pl.BlockSpec((None, None, bq, d), lambda i, h, r: (i, h, r, 0))
        kv_spec = pl.BlockSpec((None, None, sp, d), lambda i, h, r: (i, h, 0, 0))
        slot_spec = pl.BlockSpec((None, bq), lambda i, h, r: (i, r))
        bound_spec = pl.BlockSpec((None,), lambda i, h, r: (i,))
    out = pl.pallas_call(
        functools.partial(_flash_attention_kernel, scale=plan.scale, block_kv=plan.block_kv),
        grid=grid,
        in_specs=[row_spec, kv_spec, kv_spec, slot_spec, bound_spec, bound_spec],
        out_specs=row_spec,
        out_shape=jax.ShapeDtypeStruct((b, hkv, plan.padded_rows, d), q.dtype),
        interpret=plan.interpret,
        compiler_params=triton_params(plan.interpret),
        name="flash_attention",
    )(q, k, v, slots, kv_start, kv_len)
    out = out[:, :, :rows].reshape(b, hkv, t, g, d).transpose(0, 1, 3, 2, 4)
    return out.reshape(b, hq, t, d)


# Derivatives: pallas_call has no transpose rule, so the kernel's tangents come from the
# reference (the same function up to float rounding). A custom_jvp rather than a custom_vjp keeps
# forward mode working too; reverse mode transposes the reference's linear tangent map. The
# integer slot arguments get float0 tangents.
@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _kernel_attention(plan: _Plan, q, k, v, q_slots, kv_start, kv_len):
    return _run_kernel(plan, q, k, v, q_slots, kv_start, kv_len)


@_kernel_attention.defjvp
def _kernel_attention_jvp(plan: _Plan, primals, tangents):
    def ref(*args):
        return _reference(*args, plan.scale)

    _, out_dot = jax.jvp(ref, primals, tangents)
    return _kernel_attention(plan, *primals), out_dot


# ---------------------------------------------------------------------------------------------
# Public wrapper


def _is_array(a: object) -> bool:
    return hasattr(a, "shape") and hasattr(a, "dtype")


def _check_args(q, k, v, q_slots, kv_start, kv_len, scale, block_sizes):
    """Raise ValueError naming the argument unless the inputs fit; return (kv_start, kv_len, scale)."""
    for name, a in (("q", q), ("k", k), ("v", v), ("q_slots", q_slots)):
        if not _is_array(a):
            raise ValueError(f"{name} must be an array, got {type(a).__name__}")
    for name, a in (("q", q), ("k", k), ("v", v)):
        if a.ndim != 4:
            raise ValueError(f"{name} must be 4-D [B, heads, length, D], got shape {a.shape}")
        if jnp.dtype(a.dtype) not in _FLOATS:
            raise ValueError(f"{name} must be float32, bfloat16 or float16, got {a.dtype}")
    b, hq, t, d = q.shape
    if k.shape[0] != b:
        raise ValueError(f"k has batch {k.shape[0]} (shape {k.shape}) but q has {b} ({q.shape})")
    if k.shape[3] != d:
        raise ValueError(
            f"k has head dim D={k.shape[3]} (shape {k.shape}) but q has D={d} ({q.shape})"
        )
    if v.shape != k.shape:
        raise ValueError(f"v must have the shape of k {k.shape}, got {v.shape}")
    hkv, s = k.shape[1], k.shape[2]
    if hkv < 1 or hq % hkv:
        raise ValueError(
            f"q has Hq={hq} heads, which must be a multiple of k's Hkv={hkv} heads "
            f"(q {q.shape}, k {k.shape})"
        )
    if q_slots.shape != (b, t) or not jnp.issubdtype(q_slots.dtype, jnp.integer):
        raise ValueError(
            f"q_slots must be an integer array of shape [B, T] = {(b, t)}, "
            f"got {q_slots.dtype}{list(q_slots.shape)}"
        )
    bounds = []
    for name, a, default in (("kv_start", kv_start, 0), ("kv_len", kv_len, s)):
        if a is None:
            a = jnp.full((b,), default, jnp.int32)
        elif not _is_array(a) or a.shape != (b,) or not jnp.issubdtype(a.dtype, jnp.integer):
            shape = f"{a.dtype}{list(a.shape)}" if _is_array(a) else type(a).__name__
            raise ValueError(f"{name} must be an integer array of shape [B] = ({b},), got {shape}")
        bounds.append(a.astype(jnp.int32))
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    elif not isinstance(scale, numbers.Real) or isinstance(scale, bool) or not scale > 0:
        raise ValueError(f"scale must be a positive Python float or None, got {scale!r}")
    if block_sizes is not None and not isinstance(block_sizes, AttentionBlockSizes):
        raise ValueError(f"block_sizes must be an AttentionBlockSizes or None, got {block_sizes!r}")
    return bounds[0], bounds[1], float(scale)


def _cpu_auto(t: int) -> Resolved:
    return "interpret" if t == 1 or t >= _CPU_PREFILL_MIN_T else "xla"


@functools.partial(jax.jit, static_argnames=["scale"])
@typing.no_type_check  # hand-written checks raise ValueError; see `flash_attention`
def flash_attention_reference(
    q: Float[Array, "B Hq T D"],
    k: Float[Array, "B Hkv S D"],
    v: Float[Array, "B Hkv S D"],
    *,
    q_slots: Int[Array, "B T"],
    kv_start: Int[Array, " B"] | None = None,
    kv_len: Int[Array, " B"] | None = None,
    scale: float | None = None,
) -> Float[Array, "B Hq T D"]:
    """Pure-jnp `flash_attention`: float32 scores, mask, softmax, weighted sum.

    This is the specification the kernel is tested against, and the ``"xla"`` backend. It
    materialises the ``[B, Hq, T, S]`` scores. Arguments are those of `flash_attention`.

    Returns:
        ``[B, Hq, T, D]`` in ``q.dtype``; rows whose every key is masked are 0.
    """
    kv_start, kv_len, scale = _check_args(q, k, v, q_slots, kv_start, kv_len, scale, None)
    return _reference(q, k, v, q_slots.astype(jnp.int32), kv_start, kv_len, scale)


@functools.partial(jax.jit, static_argnames=["scale", "backend", "block_sizes"])
# Arguments are checked by hand so that bad input raises ValueError naming the argument; the
# jaxtyping import hook used in tests would pre-empt that with a TypeError. The annotations
# still document the shapes, and the private functions above are type-checked.
@typing.no_type_check
def flash_attention(
    q: Float[Array, "B Hq T D"],
    k: Float[Array, "B Hkv S D"],
    v: Float[Array, "B Hkv S D"],
    *,
    q_slots: Int[Array, "B T"],
    kv_start: Int[Array, " B"] | None = None,
    kv_len: Int[Array, " B"] | None = None,
    scale: float | None = None,
    backend: Backend = "auto",
    block_sizes: AttentionBlockSizes | None = None,
) -> Float[Array, "B Hq T D"]:
    """Masked multi-head attention with grouped key/value heads, for prefill and decode.

    Key slot ``s`` is visible to query ``(b, t)`` iff ``kv_start[b] <= s < kv_len[b]`` and
    ``s <= q_slots[b, t]``. For a prefill without a cache pass the sequence as ``k``/``v`` and
    ``q_slots = arange(T)``; with a preallocated cache of ``S`` slots pass the whole cache,
    the slots the new queries were written to, and the cache's fill level as ``kv_len``; left
    padding goes in ``kv_start``. Scores, the running max and sum, and the accumulator are
    float32 whatever the input dtype (FlashAttention-2, Dao 2023, arXiv:2307.08691).

    Args:
        q: queries ``[B, Hq, T, D]``, float32, bfloat16 or float16.
        k: keys ``[B, Hkv, S, D]``; ``Hq`` must be a multiple of ``Hkv`` and query head ``h``
            reads key/value head ``h // (Hq // Hkv)``.
        v: values, shaped like ``k``.
        q_slots: ``int[B, T]``, the cache slot of each query (its causal limit).
        kv_start: ``int[B]``, the first valid key slot of each row (left padding); default 0.
        kv_len: ``int[B]``, keys at slots ``>= kv_len`` are masked; default ``S``.
        scale: the score scale, a static Python float (a new value recompiles); default
            ``1 / sqrt(D)``.
        backend: ``"xla"`` (`flash_attention_reference`), ``"pallas"`` (compiled, GPU),
            ``"interpret"`` (the kernel run by Pallas' interpreter) or ``"auto"`` (compiled on
            GPU when ``D`` is a power of two >= 16, XLA on TPU, the measured-fastest path on CPU;
            see `flash_attention_backend`).
        block_sizes: tiles (`AttentionBlockSizes`); default
            `AttentionBlockSizes.get_default()` for the platform.

    Returns:
        ``[B, Hq, T, D]`` in ``q.dtype``; a query that sees no key gets 0.

    Raises:
        ValueError: a shape, dtype or option does not fit (the message names the argument), or
            ``backend="pallas"`` on CPU.

    Examples:
        >>> import jax.numpy as jnp
        >>> from pallas_kernels import flash_attention
        >>> q = jnp.ones((1, 2, 1, 4))          # one decode token, 2 query heads
        >>> k = v = jnp.ones((1, 1, 8, 4))      # a cache of 8 slots, 1 key/value head
        >>> out = flash_attention(q, k, v, q_slots=jnp.array([[3]]), kv_len=jnp.array([4]))
        >>> out.shape
        (1, 2, 1, 4)
    """
    kv_start, kv_len, scale = _check_args(q, k, v, q_slots, kv_start, kv_len, scale, block_sizes)
    q_slots = q_slots.astype(jnp.int32)
    b, hq, t, d = q.shape
    hkv, s = k.shape[1], k.shape[2]
    supported = _pallas_supported(d, (q.dtype, k.dtype, v.dtype))
    chosen = resolve_backend(backend, pallas_supported=supported, cpu_auto=_cpu_auto(t))
    if chosen == "xla":
        return _reference(q, k, v, q_slots, kv_start, kv_len, scale)
    plan = _plan(t * (hq // hkv), s, scale, block_sizes, chosen == "pallas")
    return _kernel_attention(plan, q, k, v, q_slots, kv_start, kv_len)


def flash_attention_backend(t: int, head_dim: int = 64, backend: Backend = "auto") -> Resolved:
    """The backend `flash_attention` runs (``"auto"`` resolved on this device).

    Args:
        t: the number of queries per row ``T`` (1 for a decode step).
        head_dim: ``D``; the compiled GPU kernel needs a power of two >= 16.
        backend: the backend that would be requested.
    """
    supported = _pallas_supported(head_dim, (jnp.dtype(jnp.float32),))
    return resolve_backend(backend, pallas_supported=supported, cpu_auto=_cpu_auto(t))
