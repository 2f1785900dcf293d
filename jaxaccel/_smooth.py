"""Activation-aware rescaling of linear layers: SmoothQuant and static activation scales.

Two per-input-channel rescalings that leave a linear layer ``y = x @ w`` (``x[T, K]``,
``w[K, N]``) mathematically unchanged while moving quantization difficulty around:

* **SmoothQuant** (Xiao, Lin, Seznec, Wu, Demouth & Han, *"SmoothQuant: Accurate and Efficient
  Post-Training Quantization for Large Language Models"*, ICML 2023, arXiv:2211.10438):
  activations of LLMs have a few outlier channels that make per-token activation quantization
  inaccurate, while weights are easy to quantize. Dividing input channel ``k`` of the
  activation by ``s_k`` and multiplying row ``k`` of the weight by ``s_k`` migrates the
  difficulty from activations to weights: ``(x / s) @ (s[:, None] * w) == x @ w``.
* **Static activation scales folded into the weight** (MergeQuant-style): with per-channel
  static activation quantization ``x_q = round(x / a)`` (an integer tensor), the scale ``a``
  can be folded into the weight rows, ``x_q @ (a[:, None] * w) ~= x @ w``, so no per-channel
  dequantization of the activation is needed at run time.

All functions are pure, format agnostic and jittable.
"""

import jax.numpy as jnp
from jaxtyping import Array, Float

from ._errors import InputError

__all__ = ["apply_smoothing", "fold_act_scale", "smoothquant_factors", "static_act_scale"]


def smoothquant_factors(
    act_absmax: Float[Array, " K"],
    w: Float[Array, "K N"],
    *,
    alpha: float = 0.5,
    eps: float = 1e-5,
) -> Float[Array, " K"]:
    r"""SmoothQuant per-input-channel smoothing factors.

    Following Xiao et al. (2023, arXiv:2211.10438, Eq. 4), for input channel :math:`k`

    .. math::
        s_k = \frac{\max_t |X_{tk}|^{\alpha}}{\max_n |W_{kn}|^{1-\alpha}},

    where the migration strength :math:`\alpha \in [0, 1]` balances the two maxima: after
    smoothing, :math:`\max|X_k / s_k| = \max|X_k|^{1-\alpha}\max|W_k|^{1-\alpha}` and
    :math:`\max|s_k W_k| = \max|X_k|^{\alpha}\max|W_k|^{\alpha}`, so ``alpha = 0.5`` equalises
    them. ``alpha = 0`` gives ``s = 1 / max|W|``; ``alpha = 1`` gives ``s = max|X|``.

    For numerical safety the weight maxima are clamped to ``>= eps``, channels whose
    activation is never non-zero (``act_absmax == 0``, or not finite) get ``s = 1``, and the
    result is clamped to ``[eps, finfo.max]``.

    Args:
        act_absmax: ``[K]`` per-input-channel calibration maxima ``max_t |x_tk|``.
        w: ``[K, N]`` weight of the layer ``y = x @ w``.
        alpha: migration strength in ``[0, 1]``.
        eps: lower clamp for the weight maxima and the factors.

    Returns:
        ``s[K]``, in ``act_absmax``'s dtype. Use :func:`apply_smoothing` on the weight and
        divide the activation by ``s`` (typically folded into the preceding norm/linear).
    """
    if act_absmax.ndim != 1 or w.ndim != 2 or act_absmax.shape[0] != w.shape[0]:
        raise InputError(
            f"act_absmax must have shape (K,) matching w's first axis, got act_absmax "
            f"{act_absmax.shape} and w {w.shape}"
        )
    if isinstance(alpha, int | float) and not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    dtype = act_absmax.dtype
    a = jnp.abs(act_absmax)
    w_max = jnp.maximum(jnp.max(jnp.abs(w), axis=1).astype(dtype), eps)
    s = jnp.power(a, alpha) / jnp.power(w_max, 1.0 - alpha)
    valid = (a > 0) & jnp.isfinite(a) & jnp.isfinite(s)
    s = jnp.where(valid, s, jnp.ones_like(s))
    return jnp.clip(s, eps, jnp.finfo(dtype).max)


def apply_smoothing(w: Float[Array, "K N"], s: Float[Array, " K"]) -> Float[Array, "K N"]:
    """Scale weight row ``k`` by ``s_k`` (SmoothQuant, arXiv:2211.10438).

    The matching activation transform is ``x / s`` (per input channel), so that
    ``(x / s) @ apply_smoothing(w, s) == x @ w``.

    Args:
        w: ``[K, N]`` weight.
        s: ``[K]`` smoothing factors from :func:`smoothquant_factors`.

    Returns:
        ``w * s[:, None]`` in ``w``'s dtype.
    """
    if s.shape != (w.shape[0],):
        raise InputError(f"s must have shape (K,) = {(w.shape[0],)}, got {s.shape}")
    return w * s.astype(w.dtype)[:, None]


def static_act_scale(act_absmax: Float[Array, " K"], *, bits: int = 8) -> Float[Array, " K"]:
    """Per-channel static symmetric activation quantization scales.

    ``scale_k = max|x_k| / (2**(bits-1) - 1)`` (``absmax / 127`` for int8), so that
    ``round(x_k / scale_k)`` lies in ``[-qmax, qmax]`` on calibration data. Channels with
    zero (or non-finite) range get ``scale = 1`` (any positive value is exact for zeros).

    Args:
        act_absmax: ``[K]`` per-input-channel calibration maxima.
        bits: integer width of the activation quantization (``>= 2``).

    Returns:
        ``[K]`` positive scales in ``act_absmax``'s dtype.
    """
    if not isinstance(bits, int) or bits < 2:
        raise InputError(f"bits must be an int >= 2, got {bits!r}")
    qmax = float(2 ** (bits - 1) - 1)
    a = jnp.abs(act_absmax)
    scale = a / qmax
    valid = (a > 0) & jnp.isfinite(a)
    return jnp.where(valid, scale, jnp.ones_like(scale))


def fold_act_scale(w: Float[Array, "K N"], act_scale: Float[Array, " K"]) -> Float[Array, "K N"]:
    """Fold per-channel static activation scales into the weight (MergeQuant-style).

    With static per-channel activation quantization ``x_q = round(x / act_scale)`` (an
    integer-valued tensor), ``x ~= x_q * act_scale`` and therefore

    ``x @ w ~= (x_q * act_scale) @ w = x_q @ (act_scale[:, None] * w)``.

    Folding the scale into the weight removes the per-channel activation dequantization from
    the run-time path: the (possibly further quantized) folded weight multiplies the integer
    activation directly.

    Args:
        w: ``[K, N]`` weight.
        act_scale: ``[K]`` scales from :func:`static_act_scale`.

    Returns:
        ``w * act_scale[:, None]`` in ``w``'s dtype.
    """
    if act_scale.shape != (w.shape[0],):
        raise InputError(f"act_scale must have shape (K,) = {(w.shape[0],)}, got {act_scale.shape}")
    return w * act_scale.astype(w.dtype)[:, None]
