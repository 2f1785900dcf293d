"""Element codes shared by the kernels and by jaxaccel's formats.

A quantized weight is stored as integer *codes* plus scales. This module says how codes become
real numbers (before scaling) and how sub-byte codes are packed, so that the quantizers in
``jaxaccel`` and the kernels here agree on one layout.

Packing of 4-bit codes (``ElementCode.is_4bit``): a ``[K, N]`` code matrix (``N`` even) is stored as
``uint8[K, N // 2]``; the low nibble of column ``j`` holds code column ``j`` and the high nibble
holds code column ``j + N // 2``. Splitting into halves (rather than interleaving neighbours)
lets a kernel unpack with two masks and write two contiguous output blocks, with no shuffles.
"""

from __future__ import annotations

import enum

import jax
import jax.numpy as jnp
import numpy as np

# FP4 E2M1 (OCP MX spec): sign bit 3, two exponent bits (bias 1), one mantissa bit.
E2M1_VALUES = np.array(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
    dtype=np.float32,
)

# NormalFloat4 (Dettmers et al. 2023, QLoRA): quantiles of N(0, 1) rescaled to [-1, 1], with an
# exact zero. Values as published in the paper's appendix.
NF4_VALUES = np.array(
    [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ],
    dtype=np.float32,
)


class ElementCode(enum.Enum):
    """How one stored code is read as a real number (before the block scale is applied)."""

    INT8 = "int8"  # int8 payload, value = code
    UINT8 = "uint8"  # uint8 payload, value = code (used with a zero point)
    FP8_E4M3 = "fp8_e4m3"  # float8_e4m3fn payload
    FP8_E5M2 = "fp8_e5m2"  # float8_e5m2 payload
    INT4 = "int4"  # packed nibbles, two's complement in [-8, 7]
    UINT4 = "uint4"  # packed nibbles in [0, 15] (used with a zero point)
    NF4 = "nf4"  # packed nibbles indexing NF4_VALUES
    E2M1 = "e2m1"  # packed nibbles indexing E2M1_VALUES

    @property
    def is_4bit(self) -> bool:
        return self in (ElementCode.INT4, ElementCode.UINT4, ElementCode.NF4, ElementCode.E2M1)

    @property
    def storage_dtype(self) -> jnp.dtype:
        return {
            ElementCode.INT8: jnp.dtype(jnp.int8),
            ElementCode.UINT8: jnp.dtype(jnp.uint8),
            ElementCode.FP8_E4M3: jnp.dtype(jnp.float8_e4m3fn),
            ElementCode.FP8_E5M2: jnp.dtype(jnp.float8_e5m2),
        }.get(self, jnp.dtype(jnp.uint8))

    @property
    def bits(self) -> int:
        return 4 if self.is_4bit else 8


def pack_nibbles(codes: jax.Array) -> jax.Array:
    """Pack ``uint8`` codes in ``[0, 16)``, shape ``[..., N]`` (N even), into ``uint8[..., N//2]``."""
    n = codes.shape[-1]
    if n % 2:
        raise ValueError(f"pack_nibbles needs an even last axis, got shape {codes.shape}")
    codes = codes.astype(jnp.uint8)
    lo, hi = codes[..., : n // 2], codes[..., n // 2 :]
    return (lo & jnp.uint8(0x0F)) | ((hi & jnp.uint8(0x0F)) << jnp.uint8(4))


def unpack_nibbles(packed: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Inverse of `pack_nibbles`: returns the (low, high) halves as ``uint8`` codes."""
    return packed & jnp.uint8(0x0F), packed >> jnp.uint8(4)


def _lut(values: np.ndarray, codes: jax.Array) -> jax.Array:
    # A 16-way select chain: cheap for XLA and Pallas alike (no gather inside kernels).
    out = jnp.zeros(codes.shape, jnp.float32)
    for i, v in enumerate(values.tolist()):
        out = jnp.where(codes == i, jnp.float32(v), out)
    return out


def decode_e2m1(codes: jax.Array) -> jax.Array:
    """Decode 4-bit E2M1 codes to float32 arithmetically (no table)."""
    c = codes.astype(jnp.int32)
    sign = jnp.where((c & 8) != 0, jnp.float32(-1.0), jnp.float32(1.0))
    e = (c >> 1) & 3
    m = (c & 1).astype(jnp.float32)
    sub = m * jnp.float32(0.5)
    normal = (jnp.float32(1.0) + m * jnp.float32(0.5)) * jnp.exp2((e - 1).astype(jnp.float32))
    return sign * jnp.where(e == 0, sub, normal)


def decode_codes(codes: jax.Array, code: ElementCode) -> jax.Array:
    """Read unpacked codes as float32 values (before scaling)."""
    if code in (ElementCode.INT8, ElementCode.UINT8, ElementCode.UINT4):
        return codes.astype(jnp.float32)
    if code in (ElementCode.FP8_E4M3, ElementCode.FP8_E5M2):
        return codes.astype(jnp.float32)
    if code is ElementCode.INT4:
        c = codes.astype(jnp.int32)
        return jnp.where(c >= 8, c - 16, c).astype(jnp.float32)
    if code is ElementCode.NF4:
        return _lut(NF4_VALUES, codes)
    if code is ElementCode.E2M1:
        return decode_e2m1(codes)
    raise ValueError(f"unknown element code {code!r}")


def decode_scales(scales: jax.Array) -> jax.Array:
    """Scales to float32: ``uint8`` is read as OCP E8M0 (2**(s-127)), floats are upcast."""
    if scales.dtype == jnp.uint8:
        # E8M0: an exponent byte. Build the float32 bit pattern directly (exact, branch-free);
        # 0 and 255 (NaN in the spec) are never produced by our quantizers.
        bits = scales.astype(jnp.int32) << 23
        return jax.lax.bitcast_convert_type(bits, jnp.float32)
    return scales.astype(jnp.float32)


def encode_e8m0(scale: jax.Array) -> jax.Array:
    """Round a positive float32 scale *up* to a power of two and store its E8M0 byte."""
    e = jnp.ceil(jnp.log2(jnp.maximum(scale, jnp.float32(2.0**-126))))
    return jnp.clip(e + 127, 1, 254).astype(jnp.uint8)
