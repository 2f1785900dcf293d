"""GPTQ: second-order, error-compensating post-training weight quantization.

Implements the algorithm of Frantar, Ashkboos, Hoefler & Alistarh, *"GPTQ: Accurate
Post-Training Quantization for Generative Pre-trained Transformers"*, ICLR 2023
(arXiv:2210.17323), written from the paper.

This module is format agnostic: the caller supplies a ``fit`` callable that computes
quantization parameters for one group of rows and a ``fake`` callable that
quantizes-then-dequantizes rows with those parameters. Any integer / float / codebook
format that can be expressed this way can be plugged in.

Conventions (note: transposed with respect to the paper, which stores ``W[d_row, d_col]``
with columns as inputs):

* ``w`` has shape ``[K, N]``: ``K`` is the input (contraction) dimension, ``N`` the
  outputs, so a layer computes ``y = x @ w`` for ``x[T, K]``.
* ``hessian`` is ``2 X^T X`` (or ``X^T X``; a global scale is irrelevant) of shape
  ``[K, K]`` accumulated over the calibration inputs ``X[T, K]``.
* Quantization groups are contiguous runs of ``group_size`` rows (input channels).
"""

from collections.abc import Callable
from typing import TypeVar

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jax import lax
from jaxtyping import Array, Float, PyTree

from ._errors import InputError

__all__ = ["gptq"]

P = TypeVar("P")

_HI = lax.Precision.HIGHEST


def _effective_block_size(k: int, group_size: int, block_size: int, act_order: bool) -> int:
    """Block size actually used by the lazy-batch loop.

    Blocking is an exact algebraic re-ordering of the updates, so it never changes the result
    (up to float rounding). Without ``act_order`` the group parameters are fitted on the
    error-updated weights when the group's first row is reached; for those rows to carry *all*
    updates from earlier rows, every group must either start on a block boundary or lie
    entirely inside one block. We therefore round the block size to a multiple of
    ``group_size`` (if larger) or to a divisor of ``group_size`` (if smaller).
    """
    b = max(1, min(block_size, k))
    if act_order:
        return b
    if b >= group_size:
        return (b // group_size) * group_size
    return max(d for d in range(1, b + 1) if group_size % d == 0)


def _upper_cholesky_of_inverse(h: Array) -> Array:
    """Upper-triangular ``U`` with ``H^{-1} = U^T U``."""
    n = h.shape[0]
    chol = jnp.linalg.cholesky(h)
    h_inv = jsl.cho_solve((chol, True), jnp.eye(n, dtype=h.dtype))
    h_inv = 0.5 * (h_inv + h_inv.T)
    return jnp.linalg.cholesky(h_inv).T


def gptq(
    w: Float[Array, "K N"],
    hessian: Float[Array, "K K"],
    *,
    group_size: int,
    fit: Callable[[Float[Array, "g N"]], P],
    fake: Callable[[Float[Array, "r N"], P], Float[Array, "r N"]],
    block_size: int = 128,
    act_order: bool = True,
    damp: float = 0.01,
) -> tuple[Float[Array, "K N"], PyTree]:
    r"""Quantize a linear layer's weight with GPTQ.

    GPTQ (Frantar et al., 2023, arXiv:2210.17323) minimises the layer-output error
    :math:`\|X W_q - X W\|_F^2` one input row at a time. Quantizing row :math:`k` to
    :math:`q_k` incurs the error :math:`e_k = w_k - q_k`; the Optimal Brain Surgeon update
    compensates it on the not-yet-quantized rows :math:`F`:

    .. math::
        W_F \leftarrow W_F - \frac{[H_F^{-1}]_{F,k}}{[H_F^{-1}]_{kk}}\, e_k,
        \qquad H_F^{-1} \leftarrow H_F^{-1} - \frac{[H_F^{-1}]_{:,k}[H_F^{-1}]_{k,:}}
        {[H_F^{-1}]_{kk}}.

    All the successive inverses :math:`H_F^{-1}` are encoded in the upper Cholesky factor
    :math:`U` of :math:`H^{-1} = U^T U` (row :math:`k` of :math:`U` equals row :math:`k` of
    the current :math:`H_F^{-1}` divided by :math:`\sqrt{[H_F^{-1}]_{kk}}`), so the update
    becomes ``W[j] -= U[k, j] * (w_k - q_k) / U[k, k]`` for ``j > k``. Rows are processed in
    blocks of ``block_size``: inside a block updates are applied eagerly, to the rest of the
    matrix lazily with one matrix product per block ("lazy batch updates").

    Numerical details follow the paper: ``damp * mean(diag(H))`` is added to the diagonal,
    and dead inputs (``H_kk == 0``) get ``H_kk = 1`` and a zeroed weight row.

    Args:
        w: weight ``[K, N]`` (``K`` inputs, ``N`` outputs; the layer computes ``x @ w``).
        hessian: ``[K, K]`` proxy Hessian ``2 X^T X`` of the calibration inputs ``X[T, K]``.
        group_size: number of contiguous input rows sharing quantization parameters; must
            divide ``K``. ``group_size == K`` gives per-output-channel quantization.
        fit: ``fit(rows[group_size, N]) -> params`` computes the quantization parameters (any
            pytree, e.g. ``scale[1, N]``) of one group.
        fake: ``fake(rows[r, N], params) -> rows[r, N]`` quantizes and dequantizes rows.
        block_size: rows per lazy-batch block (a performance knob; does not change the
            result beyond float rounding). Without ``act_order`` it is rounded to a multiple
            or divisor of ``group_size``; ``K`` need not be divisible by it.
        act_order: process rows in order of decreasing ``diag(H)`` (the paper's "act-order"
            heuristic). Group parameters then stay per *original* contiguous group and are
            fitted on the original weights before the loop ("static groups"). Without it the
            rows are processed in order and each group is fitted lazily, on the error-updated
            weights, when its first row is reached (as in the paper).
        damp: relative diagonal dampening. If ``H`` plus dampening is not positive definite
            the Cholesky factorisation fails and the result contains NaNs; increase it.

    Returns:
        ``(w_q, params)``: the fake-quantized weight ``[K, N]`` in the original row order and
        dtype, and the group parameters stacked along a new leading axis of length
        ``K // group_size`` in original group order.

    Raises:
        ValueError: for inconsistent shapes or invalid sizes (the message names the argument).

    Jittable with ``group_size``, ``fit``, ``fake``, ``block_size`` and ``act_order`` static.
    """
    if w.ndim != 2:
        raise InputError(f"w must be 2-D [K, N], got shape {w.shape}")
    k, n = w.shape
    if hessian.shape != (k, k):
        raise InputError(
            f"hessian must have shape (K, K) = {(k, k)} to match w, got {hessian.shape}"
        )
    if not isinstance(group_size, int) or group_size < 1 or k % group_size != 0:
        raise InputError(f"group_size must be a positive divisor of K={k}, got {group_size!r}")
    if not isinstance(block_size, int) or block_size < 1:
        raise InputError(f"block_size must be a positive int, got {block_size!r}")
    if isinstance(damp, int | float) and damp < 0:
        raise InputError(f"damp must be >= 0, got {damp}")

    g = group_size
    n_groups = k // g
    dtype = jnp.float64 if w.dtype == jnp.float64 else jnp.float32
    wf = w.astype(dtype)
    h = hessian.astype(dtype)

    # Dead inputs: never active in calibration, so their weights cannot matter.
    diag = jnp.diagonal(h)
    dead = diag == 0
    h = h.at[jnp.arange(k), jnp.arange(k)].set(jnp.where(dead, jnp.ones_like(diag), diag))
    wf = jnp.where(dead[:, None], jnp.zeros_like(wf), wf)

    group_shape = jax.ShapeDtypeStruct((g, n), dtype)
    if act_order:
        # Static groups: fit every original contiguous group up-front.
        params_buf = jax.vmap(fit)(wf.reshape(n_groups, g, n))
        perm = jnp.argsort(-jnp.diagonal(h), stable=True)
        wf = wf[perm]
        h = h[perm][:, perm]
    else:
        params_buf = jax.tree.map(
            lambda s: jnp.zeros((n_groups, *s.shape), s.dtype), jax.eval_shape(fit, group_shape)
        )
        perm = jnp.arange(k)

    mean_diag = jnp.mean(jnp.diagonal(h))
    h = h + (damp * mean_diag) * jnp.eye(k, dtype=dtype)
    u = _upper_cholesky_of_inverse(h)

    # Pad to a whole number of blocks; padded rows have zero weight, identity Hessian (so they
    # never interact with real rows) and their errors are masked out.
    bs = _effective_block_size(k, g, block_size, act_order)
    n_blocks = -(-k // bs)
    kp = n_blocks * bs
    pad = kp - k
    if pad:
        wf = jnp.concatenate([wf, jnp.zeros((pad, n), dtype)], axis=0)
        u = jnp.block(
            [
                [u, jnp.zeros((k, pad), dtype)],
                [jnp.zeros((pad, k), dtype), jnp.eye(pad, dtype=dtype)],
            ]
        )
        perm_p = jnp.concatenate([perm, jnp.arange(k, kp, dtype=perm.dtype)])
    else:
        perm_p = perm
    group_of_pos = jnp.minimum(perm_p // g, n_groups - 1)
    cols = jnp.arange(kp)
    local = jnp.arange(bs)

    def set_params(buf, params, gidx):
        return jax.tree.map(
            lambda b, p: lax.dynamic_update_index_in_dim(b, p.astype(b.dtype), gidx, 0), buf, params
        )

    def block_body(b, carry):
        wmat, qmat, buf = carry
        i1 = b * bs
        wb = lax.dynamic_slice_in_dim(wmat, i1, bs, axis=0)
        ub = lax.dynamic_slice(u, (i1, i1), (bs, bs))

        if not act_order and bs < g:
            # bs divides g: a group starts on this block's boundary, where every remaining
            # row of ``wmat`` already carries all previous updates.
            buf = lax.cond(
                i1 % g == 0,
                lambda bf: set_params(bf, fit(lax.dynamic_slice_in_dim(wmat, i1, g, 0)), i1 // g),
                lambda bf: bf,
                buf,
            )

        def row_body(i, rcarry):
            wb, qb, eb, buf = rcarry
            row = i1 + i
            if not act_order and bs >= g:
                # bs is a multiple of g: the whole group lies in this block and is up to date.
                buf = lax.cond(
                    (row % g == 0) & (row < k),
                    lambda bf: set_params(bf, fit(lax.dynamic_slice_in_dim(wb, i, g, 0)), row // g),
                    lambda bf: bf,
                    buf,
                )
            params = jax.tree.map(
                lambda a: lax.dynamic_index_in_dim(a, group_of_pos[row], 0, keepdims=False), buf
            )
            w_row = lax.dynamic_slice_in_dim(wb, i, 1, 0)
            q_row = fake(w_row, params).astype(dtype)
            err = (w_row - q_row) / ub[i, i]
            err = jnp.where(row < k, err, jnp.zeros_like(err))
            u_row = jnp.where(local > i, ub[i], jnp.zeros_like(ub[i]))
            wb = wb - u_row[:, None] * err
            qb = lax.dynamic_update_slice_in_dim(qb, q_row, i, 0)
            eb = lax.dynamic_update_slice_in_dim(eb, err, i, 0)
            return wb, qb, eb, buf

        zeros_b = jnp.zeros((bs, n), dtype)
        _, qb, eb, buf = lax.fori_loop(0, bs, row_body, (wb, zeros_b, zeros_b, buf))
        # Lazy batch update of all rows after this block.
        u_rows = lax.dynamic_slice_in_dim(u, i1, bs, axis=0)
        u_rows = jnp.where((cols >= i1 + bs)[None, :], u_rows, jnp.zeros_like(u_rows))
        wmat = wmat - jnp.matmul(u_rows.T, eb, precision=_HI)
        qmat = lax.dynamic_update_slice_in_dim(qmat, qb, i1, 0)
        return wmat, qmat, buf

    _, q, params_buf = lax.fori_loop(
        0, n_blocks, block_body, (wf, jnp.zeros((kp, n), dtype), params_buf)
    )
    q = q[:k][jnp.argsort(perm)]
    return q.astype(w.dtype), params_buf
