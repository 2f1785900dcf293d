"""Compressed-sensing baseline: SENSE reconstruction with wavelet L1 and (smoothed) total variation,
solved by monotone FISTA (Beck & Teboulle 2009, MFISTA), jitted.

    min_x  1/2 ||A x - y||^2 + lam_tv TV_eps(x) + lam_w ||W x||_1      (W: detail coefficients)

``A`` is the SENSE operator (coil maps, centred unitary FFT, mask), ``W`` a periodic orthonormal
wavelet transform written here (Haar or Daubechies-4 with 8 taps, coefficients from Daubechies
1992; its circular filters applied by FFT), so the L1 term has an exact proximal step (``W^T soft(W z)``; its transpose, made by
``jax.linear_transpose``, is its inverse). TV is the Huber-smoothed isotropic total variation
(``eps`` in image units), part of the smooth term. MFISTA keeps the objective non-increasing.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from ._physics import MRIError, check_kspace, sense_adjoint, sense_forward

__all__ = ["Wavelet", "CSResult", "cs_reconstruct", "total_variation"]

_FILTERS = {
    "haar": np.array([1.0, 1.0]) / math.sqrt(2.0),
    "db4": np.array(
        [
            -0.010597401784997278,
            0.032883011666982945,
            0.030841381835986965,
            -0.18703481171888114,
            -0.02798376941698385,
            0.6308807679295904,
            0.7148465705525415,
            0.23037781330885523,
        ]
    ),
}


def _highpass(h):
    return np.array([(-1) ** m * h[len(h) - 1 - m] for m in range(len(h))])


def _folded(h, n: int) -> np.ndarray:
    """The taps ``h`` wrapped onto a period of ``n`` samples (tap m at m mod n)."""
    out = np.zeros(n)
    np.add.at(out, np.arange(len(h)) % n, h)
    return out


def _along(vec: np.ndarray, ndim: int, axis: int):
    """A complex64 constant ``vec`` shaped to broadcast along ``axis`` of an ``ndim`` array."""
    shape = [1] * ndim
    shape[axis] = -1
    return jnp.asarray(vec.astype(np.complex64)).reshape(shape)


def _real_like(x, y):
    return y if jnp.iscomplexobj(x) else jnp.real(y).astype(x.dtype)


def _analysis_1d(x, h, axis):
    """One periodic orthonormal analysis step along ``axis``: (low, high), each half length.

    ``low[j] = sum_m h[m] x[(2j + m) mod n]`` (``high`` with the quadrature mirror filter): a
    circular correlation, computed with one FFT of ``x`` and two inverse FFTs (the same values as
    the sum of shifted copies to float precision, and ~5x quicker to compile, which is most of the
    cost of compiling `cs_reconstruct`), then every other sample."""
    n = x.shape[axis]
    spectrum = jnp.fft.fft(x, axis=axis)
    take = [slice(None)] * x.ndim
    take[axis] = slice(0, None, 2)
    bands = []
    for taps in (h, _highpass(h)):
        filt = _along(np.conj(np.fft.fft(_folded(taps, n))), x.ndim, axis)
        bands.append(_real_like(x, jnp.fft.ifft(spectrum * filt, axis=axis))[tuple(take)])
    return bands[0], bands[1]


def _synthesis_1d(lo, hi, h, axis):
    """The transpose (= inverse) of `_analysis_1d`: upsample each band by 2 (zeros at odd
    positions) and convolve circularly with the taps, ``x = sum_m h[m] roll(lo_up, m) + g[m] ...``
    (in Fourier: the spectrum of an upsampled band is the band's spectrum repeated twice)."""
    n = 2 * lo.shape[axis]
    out = 0
    for band, taps in ((lo, h), (hi, _highpass(h))):
        spec = jnp.fft.fft(band, axis=axis)
        filt = _along(np.fft.fft(_folded(taps, n)), lo.ndim, axis)
        out = out + jnp.concatenate([spec, spec], axis=axis) * filt
    return _real_like(lo, jnp.fft.ifft(out, axis=axis))


@dataclasses.dataclass(frozen=True)
class Wavelet:
    """A periodic orthonormal 2D wavelet transform of ``levels`` levels on (H, W) images, laid out
    in place (approximation band top-left). ``forward`` and ``inverse`` are linear and exact
    inverses; ``detail_mask`` marks the coefficients the L1 term penalises."""

    name: str = "db4"
    levels: int = 4

    def forward(self, x):
        if self.name not in _FILTERS:
            raise MRIError(f"wavelet: expected one of {sorted(_FILTERS)}, got {self.name!r}")
        h = _FILTERS[self.name]
        out = x
        size = x.shape[-2:]
        for lev in range(self.levels):
            hh, ww = size[0] >> lev, size[1] >> lev
            if hh % 2 or ww % 2:
                raise MRIError(f"wavelet levels: {self.levels} halvings of {size} hit an odd size")
            band = out[..., :hh, :ww]
            lo, hi = _analysis_1d(band, h, -1)
            band = jnp.concatenate([lo, hi], axis=-1)
            lo, hi = _analysis_1d(band, h, -2)
            band = jnp.concatenate([lo, hi], axis=-2)
            out = out.at[..., :hh, :ww].set(band)
        return out

    def inverse(self, c):
        """Exact inverse (the transpose: the transform is orthonormal), level by level."""
        h = _FILTERS[self.name]
        out = c
        size = c.shape[-2:]
        for lev in reversed(range(self.levels)):
            hh, ww = size[0] >> lev, size[1] >> lev
            band = out[..., :hh, :ww]
            band = _synthesis_1d(band[..., : hh // 2, :], band[..., hh // 2 :, :], h, -2)
            band = _synthesis_1d(band[..., : ww // 2], band[..., ww // 2 :], h, -1)
            out = out.at[..., :hh, :ww].set(band)
        return out

    def detail_mask(self, shape):
        m = np.ones(shape, np.float32)
        m[: shape[0] >> self.levels, : shape[1] >> self.levels] = 0.0
        return jnp.asarray(m)


def total_variation(x, eps: float):
    """Huber-smoothed isotropic TV with periodic differences: sum sqrt(|dx|^2 + |dy|^2 + eps^2) - eps."""
    dx = jnp.roll(x, -1, axis=-1) - x
    dy = jnp.roll(x, -1, axis=-2) - x
    return (jnp.sqrt(jnp.abs(dx) ** 2 + jnp.abs(dy) ** 2 + eps * eps) - eps).sum()


@dataclasses.dataclass(frozen=True)
class CSResult:
    """``image`` (H, W) complex; ``objective`` per iteration (non-increasing)."""

    image: jax.Array
    objective: jax.Array


def _soft(z, t):
    mag = jnp.abs(z)
    return jnp.where(mag > t, (1 - t / jnp.maximum(mag, 1e-30)).astype(z.dtype) * z, 0)


def cs_reconstruct(
    kspace,
    mask,
    maps,
    *,
    lam_wavelet: float = 1e-3,
    lam_tv: float = 0.0,
    tv_eps: float = 1e-2,
    iterations: int = 100,
    wavelet: Wavelet = Wavelet(),
) -> CSResult:
    """Reconstruct an image from multi-coil k-space (C, H, W), mask and coil maps by MFISTA.

    ``lam_*`` are relative to the zero-filled image's maximum magnitude (so values carry over
    between scans of different scale)."""
    k = check_kspace(kspace, mask, maps)
    if iterations < 1:
        raise MRIError(f"iterations: expected >= 1, got {iterations}")
    if lam_wavelet < 0 or lam_tv < 0 or tv_eps <= 0:
        raise MRIError("lam_wavelet, lam_tv: expected >= 0; tv_eps: expected > 0")
    image, objective = _mfista(
        k,
        jnp.asarray(mask, jnp.float32),
        jnp.asarray(maps, jnp.complex64),
        float(lam_wavelet),
        float(lam_tv),
        float(tv_eps),
        int(iterations),
        wavelet,
    )
    return CSResult(image=image, objective=objective)


@jax.jit(static_argnums=(6, 7))
def _mfista(k, mask, maps, lam_w, lam_tv, eps, iterations, wavelet):
    """Monotone FISTA (Beck & Teboulle 2009). Each iteration applies A once and A^H once: the
    carry holds A x and A y alongside x and y (A is linear, so A of the momentum combination is
    the same combination of the A's), and the objective reuses A z."""
    fwd = lambda x: sense_forward(x, maps, mask)  # noqa: E731
    x0 = sense_adjoint(k, maps, mask)
    scale = jnp.abs(x0).max()
    lw, ltv, e = lam_w * scale, lam_tv * scale, eps * scale
    detail = wavelet.detail_mask(k.shape[-2:])

    def objective(x, ax):
        return (
            0.5 * jnp.sum(jnp.abs(ax - k) ** 2)
            + ltv * total_variation(x, e)
            + lw * jnp.sum(detail * jnp.abs(wavelet.forward(x)))
        )

    lipschitz = 1.0 + ltv * 8.0 / e  # ||A|| <= 1 (unit-RSS maps, unitary FFT, mask <= 1)
    step = 1.0 / lipschitz
    tv_grad = jax.grad(lambda x: total_variation(x, e))

    def prox(z):
        c = wavelet.forward(z)
        return wavelet.inverse(jnp.where(detail > 0, _soft(c, lw * step), c))

    def body(carry, _):
        x, ax, y, ay, t, fx = carry
        # jax.grad of a real function of complex y gives conj(dF/dy*)
        g = sense_adjoint(ay - k, maps, mask) + jnp.asarray(ltv).astype(y.dtype) * jnp.conj(
            tv_grad(y)
        )
        z = prox(y - jnp.asarray(step).astype(y.dtype) * g)
        az = fwd(z)
        fz = objective(z, az)
        better = fz <= fx
        x_new, ax_new = jnp.where(better, z, x), jnp.where(better, az, ax)
        f_new = jnp.minimum(fz, fx)
        t_new = 0.5 * (1 + jnp.sqrt(1 + 4 * t * t))
        a, b = (t / t_new).astype(z.dtype), ((t - 1) / t_new).astype(z.dtype)
        y_new = x_new + a * (z - x_new) + b * (x_new - x)
        ay_new = ax_new + a * (az - ax_new) + b * (ax_new - ax)
        return (x_new, ax_new, y_new, ay_new, t_new, f_new), f_new

    a0 = fwd(x0)
    init = (x0, a0, x0, a0, jnp.float32(1.0), objective(x0, a0))
    (x, *_), hist = jax.lax.scan(body, init, None, length=iterations)
    return x, hist
