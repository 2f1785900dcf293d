"""Training data generated on the fly: random textured ellipse phantoms, simulated multi-coil
acquisitions at several accelerations, all inside ``jit`` (deterministic per key).

The pipeline is one function of a key: phantom -> smooth phase -> coils -> k-space -> noise ->
mask (`simulate_batch`); augmentations that act on the acquisition (e.g. VORTEX's motion as random
phase errors on k-space lines, or extra noise) slot in between the k-space and the mask without
changing its inputs or outputs, and a conditional flow can consume the same ``Sample`` batches.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from ._masks import equispaced_mask, random_mask
from ._physics import MRIError, Sample, _bmask, _c, birdcage_maps, fft2c, smooth_phase

__all__ = ["phantom", "MaskBank", "simulate_batch"]


def phantom(shape: tuple[int, int], *, key, n_ellipses: int = 8):
    """A random head-like phantom in [0, 1] (float32 (H, W)): an outer ellipse, ``n_ellipses``
    random inner ellipses (some darker, some brighter), multiplied by a smooth random texture."""
    h, w = shape
    keys = jax.random.split(key, 7)
    y, x = jnp.meshgrid(jnp.linspace(-1, 1, h), jnp.linspace(-1, 1, w), indexing="ij")

    def ellipse(cx, cy, ax, ay, th):
        xr = (x - cx) * jnp.cos(th) + (y - cy) * jnp.sin(th)
        yr = -(x - cx) * jnp.sin(th) + (y - cy) * jnp.cos(th)
        return ((xr / ax) ** 2 + (yr / ay) ** 2 <= 1).astype(jnp.float32)

    outer_axes = jax.random.uniform(keys[0], (2,), minval=0.6, maxval=0.9)
    img = 0.6 * ellipse(0.0, 0.0, outer_axes[0], outer_axes[1], 0.0)
    centres = jax.random.uniform(keys[1], (n_ellipses, 2), minval=-0.5, maxval=0.5)
    axes = jax.random.uniform(keys[2], (n_ellipses, 2), minval=0.05, maxval=0.35)
    angles = jax.random.uniform(keys[3], (n_ellipses,), minval=0.0, maxval=math.pi)
    levels = jax.random.uniform(keys[4], (n_ellipses,), minval=-0.4, maxval=0.4)
    inner = jax.vmap(ellipse)(centres[:, 0], centres[:, 1], axes[:, 0], axes[:, 1], angles)
    img = img + (levels[:, None, None] * inner).sum(0) * (img > 0).astype(jnp.float32)
    texture = 1 + 0.15 * jnp.cos(smooth_phase(shape, max_phase=math.pi, order=8, key=keys[5]))
    return jnp.clip(img * texture, 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class MaskBank:
    """Pre-drawn Cartesian masks (P, 1, W) with their accelerations, to pick from inside ``jit``."""

    masks: np.ndarray
    accelerations: np.ndarray

    @classmethod
    def build(
        cls,
        width: int,
        accelerations=(4, 8),
        center_fractions=(0.08, 0.04),
        per_acceleration: int = 16,
        kind: str = "random",
        *,
        key,
    ):
        if len(accelerations) != len(center_fractions):
            raise MRIError("center_fractions: expected one per acceleration")
        if kind not in ("random", "equispaced"):
            raise MRIError(f"kind: expected 'random' or 'equispaced', got {kind!r}")
        make = random_mask if kind == "random" else equispaced_mask
        masks, accs = [], []
        for i, (r, f) in enumerate(zip(accelerations, center_fractions, strict=True)):
            for j in range(per_acceleration):
                masks.append(make((width, width), r, f, key=jax.random.fold_in(key, 1000 * i + j)))
                accs.append(r)
        return cls(np.stack(masks).astype(np.float32), np.asarray(accs, np.float32))


def _simulate_one(key, magnitude, mask, maps, noise):
    kp, kn = jax.random.split(key)
    image = _c(magnitude) * jnp.exp(1j * _c(smooth_phase(magnitude.shape, key=kp)))
    full = fft2c(maps * image[None])
    scale = noise * jnp.sqrt(jnp.mean(jnp.abs(full) ** 2))
    kr, ki = jax.random.split(kn)
    full = full + _c(scale / math.sqrt(2)) * jax.lax.complex(
        jax.random.normal(kr, full.shape), jax.random.normal(ki, full.shape)
    )
    return Sample(_bmask(mask, full) * full, mask, maps, image, magnitude)


def simulate_batch(
    batch: int,
    shape: tuple[int, int],
    bank: MaskBank,
    *,
    key,
    n_coils: int = 8,
    noise: float = 0.01,
) -> Sample:
    """A batch of simulated acquisitions of random phantoms, each with a mask drawn from ``bank``
    (a ``Sample`` whose fields have a leading batch axis). Jittable."""
    kph, kmask, ksim = jax.random.split(key, 3)
    mags = jax.vmap(lambda k: phantom(shape, key=k))(jax.random.split(kph, batch))
    idx = jax.random.randint(kmask, (batch,), 0, bank.masks.shape[0])
    masks = jnp.asarray(bank.masks)[idx]
    maps = birdcage_maps(n_coils, shape)
    return jax.vmap(lambda k, m, mk: _simulate_one(k, m, mk, maps, noise))(
        jax.random.split(ksim, batch), mags, masks
    )
