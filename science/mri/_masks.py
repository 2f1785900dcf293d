"""Undersampling masks: fastMRI's 1D Cartesian masks (random and equispaced, with a fully sampled
centre) and a 2D variable-density Poisson-disc mask. Masks are made on the host with NumPy (they
are data, not traced), from a seed derived from a ``jax.random`` key: deterministic per key.

fastMRI's definitions (``RandomMaskFunc`` / ``EquispacedMaskFunc``), for ``num_cols`` columns,
acceleration R and centre fraction f:
- ``num_low = round(num_cols * f)`` centre columns are always sampled, starting at
  ``(num_cols - num_low + 1) // 2``;
- random: every other column is sampled with probability
  ``(num_cols / R - num_low) / (num_cols - num_low)``, so the expected acceleration is R;
- equispaced: columns ``offset, offset + a, offset + 2a, ...`` (rounded) with the adjusted spacing
  ``a = R (num_low - num_cols) / (num_low R - num_cols)`` and a random offset in [0, round(a)), so
  that centre plus lines give acceleration R.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from ._physics import MRIError

__all__ = ["random_mask", "equispaced_mask", "poisson_disc_mask", "acceleration"]


def _rng(key) -> np.random.Generator:
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


def _check(num_cols, accel, center_fraction):
    if num_cols < 2:
        raise MRIError(f"shape: expected at least 2 columns, got {num_cols}")
    if not accel >= 1:
        raise MRIError(f"acceleration: expected >= 1, got {accel}")
    if not 0 < center_fraction < 1:
        raise MRIError(f"center_fraction: expected 0 < f < 1, got {center_fraction}")
    num_low = round(num_cols * center_fraction)
    if num_low < 1:
        raise MRIError(
            f"center_fraction: {center_fraction} of {num_cols} columns rounds to no centre line"
        )
    if num_low * accel > num_cols:
        raise MRIError(
            f"center_fraction: the centre alone ({num_low} of {num_cols} columns) exceeds "
            f"1 / acceleration = 1/{accel} of k-space"
        )
    return num_low


def _centre(num_cols, num_low):
    mask = np.zeros(num_cols, bool)
    pad = (num_cols - num_low + 1) // 2
    mask[pad : pad + num_low] = True
    return mask


def random_mask(shape: tuple[int, int], acceleration: float, center_fraction: float = 0.08, *, key):
    """fastMRI ``RandomMaskFunc``: (1, W) float32 column mask."""
    num_cols = shape[-1]
    num_low = _check(num_cols, acceleration, center_fraction)
    prob = (num_cols / acceleration - num_low) / (num_cols - num_low)
    mask = _rng(key).uniform(size=num_cols) < prob
    mask |= _centre(num_cols, num_low)
    return mask.astype(np.float32)[None, :]


def equispaced_mask(
    shape: tuple[int, int], acceleration: float, center_fraction: float = 0.08, *, key
):
    """fastMRI ``EquispacedMaskFunc``: (1, W) float32 column mask."""
    num_cols = shape[-1]
    num_low = _check(num_cols, acceleration, center_fraction)
    mask = _centre(num_cols, num_low)
    adjusted = acceleration * (num_low - num_cols) / (num_low * acceleration - num_cols)
    offset = int(_rng(key).integers(0, max(1, round(adjusted))))
    lines = np.round(np.arange(offset, num_cols - 1, adjusted)).astype(int)
    mask[lines] = True
    return mask.astype(np.float32)[None, :]


def acceleration(mask, shape: tuple[int, int] | None = None) -> float:
    """Achieved acceleration: grid size over sampled points."""
    m = np.asarray(mask, dtype=np.float64)
    if shape is not None:
        m = np.broadcast_to(m, shape)
    return float(m.size / max(m.sum(), 1.0))


def poisson_disc_mask(
    shape: tuple[int, int],
    acceleration: float,
    *,
    key,
    calib: int = 24,
    density_power: float = 1.0,
    tol: float = 0.03,
):
    """2D variable-density Poisson-disc mask (H, W) float32 with a fully sampled ``calib`` x
    ``calib`` centre. Points are accepted in random order if no accepted point lies within the
    local radius ``r(k) = r0 (1 + (|k| / k_max) * density_power * 2)``, |k| the distance to the
    k-space centre; ``r0`` is found by bisection so the achieved acceleration is within ``tol``
    (relative) of the requested one."""
    h, w = shape
    if not acceleration > 1:
        raise MRIError(f"acceleration: expected > 1 for a Poisson-disc mask, got {acceleration}")
    if not 0 <= calib < min(h, w):
        raise MRIError(f"calib: expected 0 <= calib < {min(h, w)}, got {calib}")
    if calib * calib * acceleration > h * w:
        raise MRIError(f"calib: a {calib}x{calib} centre alone exceeds 1/{acceleration} of k-space")
    rng = _rng(key)
    order = rng.permutation(h * w)
    yy, xx = np.meshgrid(np.arange(h) - h / 2, np.arange(w) - w / 2, indexing="ij")
    rel = np.hypot(yy / (h / 2), xx / (w / 2)) / math.sqrt(2)
    centre = (yy >= -calib / 2) & (yy < calib / 2) & (xx >= -calib / 2) & (xx < calib / 2)

    def draw(r0):
        radius = r0 * (1 + 2 * density_power * rel)
        free = np.ones((h, w), bool)
        mask = centre.copy()
        for idx in order:
            i, j = divmod(int(idx), w)
            if not free[i, j]:
                continue
            mask[i, j] = True
            r = radius[i, j]
            ri = int(r)
            i0, i1, j0, j1 = max(0, i - ri), min(h, i + ri + 1), max(0, j - ri), min(w, j + ri + 1)
            di = np.arange(i0, i1)[:, None] - i
            dj = np.arange(j0, j1)[None, :] - j
            free[i0:i1, j0:j1] &= (di * di + dj * dj) >= r * r
        return mask

    lo, hi = 0.5, 0.5 * math.sqrt(acceleration) * 2 + 1
    best = None
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        m = draw(mid)
        achieved = m.size / m.sum()
        best = m
        if abs(achieved / acceleration - 1) <= tol:
            break
        if achieved < acceleration:
            lo = mid
        else:
            hi = mid
    return best.astype(np.float32)
