"""Image-quality metrics exactly as fastMRI defines them (``fastmri.evaluate``), in JAX.

- NMSE = ||gt - pred||^2 / ||gt||^2;
- PSNR = 10 log10(max(gt)^2 / MSE) (``skimage.metrics.peak_signal_noise_ratio`` with
  ``data_range = gt.max()``);
- SSIM: ``skimage.metrics.structural_similarity`` with ``data_range = gt.max()`` and its defaults
  (7 x 7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance), averaged over the pixels whose
  window lies inside the image (skimage crops 3 pixels at each edge).

The ``mask=`` variants score only inside a region (e.g. the brain, ``gt > 0``): the SSIM map and
squared errors are averaged over the masked pixels (of the cropped map for SSIM); ``data_range``
stays ``gt.max()``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["nmse", "psnr", "ssim", "ssim_map"]

_WIN = 7
_K1, _K2 = 0.01, 0.03


def _mean(x, mask):
    if mask is None:
        return x.mean()
    m = mask.astype(x.dtype)
    return (x * m).sum() / m.sum()


def nmse(gt, pred, mask=None):
    """Normalised mean squared error (fastMRI)."""
    gt, pred = jnp.asarray(gt, jnp.float32), jnp.asarray(pred, jnp.float32)
    return _mean((gt - pred) ** 2, mask) / _mean(gt**2, mask)


def psnr(gt, pred, mask=None, data_range=None):
    """Peak signal-to-noise ratio in dB with the ground truth's maximum as the peak (fastMRI)."""
    gt, pred = jnp.asarray(gt, jnp.float32), jnp.asarray(pred, jnp.float32)
    peak = gt.max() if data_range is None else data_range
    return 10 * jnp.log10(peak**2 / _mean((gt - pred) ** 2, mask))


def _box(x):
    """Mean over every 7 x 7 window fully inside the image ('valid')."""
    s = jax.lax.reduce_window(x, 0.0, jax.lax.add, (_WIN, _WIN), (1, 1), "VALID")
    return s / (_WIN * _WIN)


def ssim_map(gt, pred, data_range=None):
    """The SSIM map over the valid (cropped) region, (H - 6, W - 6)."""
    x, y = jnp.asarray(gt, jnp.float32), jnp.asarray(pred, jnp.float32)
    peak = x.max() if data_range is None else data_range
    c1, c2 = (_K1 * peak) ** 2, (_K2 * peak) ** 2
    n = _WIN * _WIN
    cov = n / (n - 1)
    ux, uy = _box(x), _box(y)
    vx = cov * (_box(x * x) - ux * ux)
    vy = cov * (_box(y * y) - uy * uy)
    vxy = cov * (_box(x * y) - ux * uy)
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))


def ssim(gt, pred, mask=None, data_range=None):
    """Structural similarity (fastMRI / skimage defaults); with ``mask``, averaged inside it."""
    s = ssim_map(gt, pred, data_range)
    if mask is None:
        return s.mean()
    pad = (_WIN - 1) // 2
    return _mean(s, jnp.asarray(mask)[pad:-pad, pad:-pad])
