"""MRI physics: centred orthonormal FFTs, coil sensitivities, SENSE operators, coil combination,
noise and the retrospective simulation pipeline (image -> smooth phase -> coils -> k-space -> mask).

Conventions: images are complex64 arrays (..., H, W); multi-coil data (..., C, H, W); a mask is a
float32 {0, 1} array broadcastable to (H, W) (Cartesian 1D masks are (1, W): every row of a
sampled column). ``fft2c`` is the unitary 2D DFT with the zero frequency at the centre, as
fastMRI's ``fft2c`` defines it: ``fftshift(fft2(ifftshift(x), norm="ortho"))`` over the last two
axes.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxaccel import Error

__all__ = [
    "MRIError",
    "fft2c",
    "ifft2c",
    "birdcage_maps",
    "estimate_maps",
    "sense_forward",
    "sense_adjoint",
    "rss",
    "sense_combine",
    "smooth_phase",
    "Sample",
    "simulate",
    "check_kspace",
]


class MRIError(Error, ValueError):
    """Bad input to an MRI operator, model or job (the message names the argument).

    A `jaxaccel.Error` (the ``jaxaccel`` command prints it as one line) and a `ValueError`."""


def _c(x):
    """Cast to complex64 (the tests run with strict dtype promotion)."""
    return jnp.asarray(x).astype(jnp.complex64)


def _bmask(mask, like):
    """A real mask (or window), cast to complex and broadcast explicitly to ``like``'s shape."""
    m = _c(mask)
    return jnp.broadcast_to(m.reshape((1,) * (like.ndim - m.ndim) + m.shape), like.shape)


def fft2c(x):
    """Centred unitary 2D FFT over the last two axes."""
    axes = (-2, -1)
    return jnp.fft.fftshift(jnp.fft.fft2(jnp.fft.ifftshift(x, axes=axes), norm="ortho"), axes=axes)


def ifft2c(k):
    """Inverse of `fft2c` (its adjoint: the transform is unitary)."""
    axes = (-2, -1)
    return jnp.fft.fftshift(jnp.fft.ifft2(jnp.fft.ifftshift(k, axes=axes), norm="ortho"), axes=axes)


def birdcage_maps(
    n_coils: int, shape: tuple[int, int], *, radius: float = 1.5, dtype=jnp.complex64
):
    """Simulated sensitivities of ``n_coils`` loops evenly spaced on a circle of ``radius`` (in
    units of the half field of view) around the object: magnitude falling as 1/distance, phase
    turning with the azimuth seen from each coil (the quasi-static field of a wire), normalised so
    that the root-sum-of-squares over coils is 1 everywhere. Returns (C, H, W)."""
    if n_coils < 1:
        raise MRIError(f"n_coils: expected >= 1, got {n_coils}")
    h, w = shape
    y, x = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    maps = []
    for c in range(n_coils):
        theta = 2 * math.pi * c / n_coils
        dx, dy = x - radius * math.cos(theta), y - radius * math.sin(theta)
        dist = np.hypot(dx, dy)
        phase = np.arctan2(dx, -dy) - theta
        maps.append(np.exp(1j * phase) / dist)
    maps = np.stack(maps)
    maps /= np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))
    return jnp.asarray(maps, dtype)


def smooth_phase(shape: tuple[int, int], *, key, max_phase: float = math.pi, order: int = 4):
    """A smooth random phase map: a random real combination of the lowest ``order`` x ``order``
    2D Fourier modes, scaled to peak at ``max_phase`` radians (float32 (H, W))."""
    h, w = shape
    kc, ks = jax.random.split(key)
    coef = jax.random.normal(kc, (2, order, order))
    y = jnp.linspace(0, 1, h)[:, None, None, None]
    x = jnp.linspace(0, 1, w)[None, :, None, None]
    fy = jnp.arange(order, dtype=jnp.float32)[None, None, :, None]
    fx = jnp.arange(order, dtype=jnp.float32)[None, None, None, :]
    arg = math.pi * (fy * y + fx * x)
    field = (coef[0][None, None] * jnp.cos(arg) + coef[1][None, None] * jnp.sin(arg)).sum((-2, -1))
    shift = jax.random.uniform(ks, (), minval=-math.pi, maxval=math.pi)
    return (field / (jnp.abs(field).max() + 1e-12) * max_phase + shift).astype(jnp.float32)


def sense_forward(image, maps, mask):
    """A x: coil images ``maps * image``, to k-space, masked. (H, W) -> (C, H, W)."""
    k = fft2c(maps * image[..., None, :, :])
    return _bmask(mask, k) * k


def sense_adjoint(kspace, maps, mask):
    """A^H y: masked k-space to coil images, combined with conj(maps). (C, H, W) -> (H, W)."""
    return (jnp.conj(maps) * ifft2c(_bmask(mask, kspace) * kspace)).sum(-3)


def rss(coil_images, axis: int = -3):
    """Root-sum-of-squares coil combination (magnitude)."""
    return jnp.sqrt((jnp.abs(coil_images) ** 2).sum(axis))


def sense_combine(kspace, maps, eps: float = 1e-8):
    """SENSE (coil-weighted) combination of fully or zero-filled k-space: sum_c conj(S_c) x_c /
    sum_c |S_c|^2 (complex (H, W))."""
    coil = ifft2c(kspace)
    return (jnp.conj(maps) * coil).sum(-3) / _c((jnp.abs(maps) ** 2).sum(-3) + eps)


def estimate_maps(kspace, mask, *, threshold: float = 0.05):
    """Coil sensitivities from the fully sampled centre (autocalibration region, ACS): the coil
    images of the Hann-windowed ACS columns divided by their root-sum-of-squares, zero where that
    falls below ``threshold`` of its maximum. A documented simpler alternative to ESPIRiT (the
    low-resolution estimate E2E-VarNet starts its sensitivity refinement from). Traceable: the
    ACS band (the contiguous sampled columns around the centre) is found with jnp, so a traced
    mask works under ``jit``. Returns (C, H, W) complex64."""
    kspace = jnp.asarray(kspace)
    if not isinstance(mask, jax.core.Tracer) and acs_width(mask) < 2:
        raise MRIError(
            "mask: no fully sampled centre (autocalibration region) to estimate coil maps from"
        )
    window = _acs_window(mask, kspace.shape[-1])
    low = ifft2c(kspace * _bmask(window[None, :], kspace))
    norm = rss(low)[None]
    keep = jnp.broadcast_to(norm > threshold * norm.max(), low.shape)
    safe = _c(jnp.broadcast_to(jnp.where(norm > 0, norm, 1.0), low.shape))
    return jnp.where(keep, low / safe, 0).astype(jnp.complex64)


def acs_width(mask) -> int:
    """Width of the contiguous block of sampled columns around the centre of a Cartesian mask
    (NumPy, on a concrete mask; `_acs_window` is the traceable twin)."""
    m = np.asarray(mask)
    cols = m.reshape(-1, m.shape[-1]).max(0) > 0
    c = cols.size // 2
    if not cols[c]:
        return 0
    right = int(np.cumprod(cols[c:]).sum())
    left = int(np.cumprod(cols[: c + 1][::-1]).sum())
    return left + right - 1


def _acs_window(mask, w: int):
    """A Hann window over the contiguous sampled columns around the centre column (jnp)."""
    m = jnp.asarray(mask, jnp.float32)
    cols = (m.reshape(-1, m.shape[-1]).max(0) > 0).astype(jnp.int32)
    cols = jnp.broadcast_to(cols, (w,))
    c = w // 2
    right = jnp.cumprod(cols[c:]).sum()  # sampled run from the centre rightwards
    left = jnp.cumprod(cols[: c + 1][::-1]).sum()  # and leftwards (both include the centre)
    width = jnp.maximum(left + right - 1, 1)
    lo = c - left + 1
    j = jnp.arange(w)
    inside = (j >= lo) & (j < lo + width)
    phase = jnp.pi * (j - lo + 1).astype(jnp.float32) / (width + 1).astype(jnp.float32)
    return jnp.where(inside, jnp.sin(phase) ** 2, 0.0)


def check_kspace(kspace, mask=None, maps=None, *, name: str = "kspace"):
    """Validate multi-coil k-space (C, H, W) complex (and a mask / maps against it)."""
    k = jnp.asarray(kspace)
    if not jnp.issubdtype(k.dtype, jnp.complexfloating):
        raise MRIError(
            f"{name}: expected complex k-space (C, H, W), got dtype {k.dtype} (pass real and "
            "imaginary parts as a complex array, e.g. re + 1j * im)"
        )
    if k.ndim != 3:
        raise MRIError(f"{name}: expected (coils, H, W), got shape {k.shape}")
    h, w = k.shape[-2:]
    if h % 2 or w % 2:
        raise MRIError(f"{name}: expected even H and W (centred FFT), got {h} x {w}")
    if not isinstance(k, jax.core.Tracer) and not bool(jnp.isfinite(k).all()):
        raise MRIError(f"{name}: contains NaN or inf")
    if mask is not None:
        m = jnp.asarray(mask)
        try:
            jnp.broadcast_shapes(m.shape, (h, w))
        except ValueError:
            raise MRIError(
                f"mask: shape {m.shape} does not broadcast to the k-space grid {(h, w)}"
            ) from None
        if m.ndim > 2:
            raise MRIError(f"mask: expected (H, W) or (1, W), got shape {m.shape}")
    if maps is not None and tuple(jnp.shape(maps)) != tuple(k.shape):
        raise MRIError(
            f"maps: expected shape {tuple(k.shape)} (coils, H, W), got {jnp.shape(maps)}"
        )
    return k


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Sample:
    """One simulated acquisition.

    Attributes:
        kspace: undersampled noisy multi-coil k-space (C, H, W) complex64.
        mask: the sampling mask, broadcastable to (H, W).
        maps: the true coil sensitivities (C, H, W).
        image: the complex ground-truth image (H, W) (magnitude x smooth phase).
        target: its magnitude (H, W) float32, what reconstructions are scored against.
    """

    kspace: jax.Array
    mask: jax.Array
    maps: jax.Array
    image: jax.Array
    target: jax.Array


def simulate(
    magnitude,
    mask,
    *,
    key,
    n_coils: int = 8,
    noise: float = 0.0,
    maps=None,
    max_phase: float = math.pi,
) -> Sample:
    """Retrospective undersampling of a magnitude image: smooth random phase, coil sensitivities
    (birdcage unless ``maps``), centred FFT, complex Gaussian noise of standard deviation ``noise``
    times the k-space RMS, then the mask. Deterministic per key."""
    mag = jnp.asarray(magnitude, jnp.float32)
    if mag.ndim != 2:
        raise MRIError(f"magnitude: expected a 2D image, got shape {mag.shape}")
    h, w = mag.shape
    if h % 2 or w % 2:
        raise MRIError(f"magnitude: expected even H and W, got {h} x {w}")
    if not bool(jnp.isfinite(mag).all()):
        raise MRIError("magnitude: contains NaN or inf")
    maps = birdcage_maps(n_coils, (h, w)) if maps is None else jnp.asarray(maps, jnp.complex64)
    return _simulate(key, mag, jnp.asarray(mask, jnp.float32), maps, float(noise), float(max_phase))


@jax.jit(static_argnums=(4, 5))
def _simulate(key, mag, mask, maps, noise, max_phase):
    """`simulate` after its checks: one compiled program (the same values as op by op, compiled
    once per shape instead of once per operation)."""
    kp, kn = jax.random.split(key)
    image = _c(mag) * jnp.exp(1j * _c(smooth_phase(mag.shape, max_phase=max_phase, key=kp)))
    full = fft2c(maps * image[None])
    if noise > 0:
        scale = noise * jnp.sqrt(jnp.mean(jnp.abs(full) ** 2))
        kr, ki = jax.random.split(kn)
        full = full + _c(scale / math.sqrt(2)) * jax.lax.complex(
            jax.random.normal(kr, full.shape), jax.random.normal(ki, full.shape)
        )
    return Sample(
        kspace=(_bmask(mask, full) * full).astype(jnp.complex64),
        mask=mask,
        maps=maps,
        image=image.astype(jnp.complex64),
        target=mag,
    )
