"""Property tests: every format's round trip stays within its stated error bound."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import jaxaccel as ja
from jaxaccel._formats import error_bound
from pallas_kernels import E2M1_VALUES, NF4_VALUES

FORMATS = [
    ja.Int8(),
    ja.Int8(symmetric=False),
    ja.Int4(),
    ja.Int4(symmetric=False),
    ja.FP8(),
    ja.FP8("e5m2"),
    ja.NF4(),
    ja.FP4(),
    ja.MXFP4(),
    ja.NVFP4(),
    ja.AFPQ(),
]
GRANULARITIES = [ja.PerTensor(), ja.PerChannel(), ja.Group(32)]

# A fixed shape keeps compilation to one program per format; values vary freely.
K, N = 64, 6
weights = hnp.arrays(
    np.float32,
    (K, N),
    elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32),
)
scales = st.sampled_from([1e-3, 1.0, 30.0])


def _roundtrip(w, fmt, gran):
    q = ja.quantize_array(jnp.asarray(w), fmt, gran)
    return q, np.asarray(q.materialise())


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: repr(f))
@pytest.mark.parametrize("gran", GRANULARITIES, ids=lambda g: type(g).__name__)
@settings(max_examples=15, deadline=None)
@given(w=weights, scale=scales)
def test_roundtrip_within_bound(fmt, gran, w, scale):
    w = (w * np.float32(scale)).astype(np.float32)
    q, d = _roundtrip(w, fmt, gran)
    gk = fmt.fixed_block or gran.group_rows(K, where="w")
    params = fmt.fit(jnp.asarray(w), gk, gran.per_column or fmt.fixed_block is not None)
    bound = np.asarray(error_bound(fmt, jnp.asarray(w), params))
    err = np.abs(d - w)
    assert np.all(err <= bound * (1 + 1e-5) + 1e-30), (float(err.max()), float(bound.max()))
    assert d.dtype == np.float32 and d.shape == w.shape


def test_bits_per_weight():
    w = jax.random.normal(jax.random.key(0), (4096, 4096), jnp.float32)
    fbytes = w.size * 4
    int4 = ja.quantize_array(w, ja.Int4(), ja.Group(128))
    assert fbytes / int4.nbytes() >= 7.5  # the goal: int4 >= 7.5x smaller than fp32
    assert 8 * int4.nbytes() / w.size == pytest.approx(4.25, abs=0.01)  # 4 bits + f32 per 128
    mx = ja.quantize_array(w, ja.MXFP4())
    assert 8 * mx.nbytes() / w.size == pytest.approx(4.25, abs=0.01)  # 4 + 8/32
    nv = ja.quantize_array(w, ja.NVFP4())
    assert 8 * nv.nbytes() / w.size == pytest.approx(4.5, abs=0.01)  # 4 + 8/16
    i8 = ja.quantize_array(w, ja.Int8())
    assert 8 * i8.nbytes() / w.size == pytest.approx(8.0, abs=0.02)


def test_codes_match_numpy_reference():
    """Decode with independent numpy tables and compare to materialise."""
    w = jax.random.normal(jax.random.key(1), (64, 8), jnp.float32)
    for fmt, table in [(ja.NF4(), NF4_VALUES), (ja.FP4(), E2M1_VALUES)]:
        q = ja.quantize_array(w, fmt, ja.Group(32))
        p = np.asarray(q.payload)
        codes = np.concatenate([p & 0xF, p >> 4], axis=1)
        s = np.repeat(np.asarray(q.scales, np.float32), 32, axis=0)
        ref = table[codes] * s
        np.testing.assert_allclose(np.asarray(q.materialise()), ref, rtol=1e-6, atol=1e-7)
    q = ja.quantize_array(w, ja.Int4(), ja.Group(32))
    p = np.asarray(q.payload)
    codes = np.concatenate([p & 0xF, p >> 4], axis=1).astype(np.int32)
    codes = np.where(codes >= 8, codes - 16, codes)
    ref = codes * np.repeat(np.asarray(q.scales), 32, axis=0)
    np.testing.assert_allclose(np.asarray(q.materialise()), ref, rtol=1e-6)
    mx = ja.quantize_array(w, ja.MXFP4())
    sc = np.asarray(mx.scales).astype(np.float64)
    assert np.all(np.log2(2.0 ** (sc - 127)) == sc - 127)  # E8M0: powers of two
    assert mx.scales.dtype == jnp.uint8
    assert ja.quantize_array(w, ja.NVFP4()).scales.dtype == jnp.float8_e4m3fn


def test_int4_packs_two_per_byte_and_odd_columns():
    w = jax.random.normal(jax.random.key(2), (32, 7), jnp.float32)
    q = ja.quantize_array(w, ja.Int4(), ja.PerChannel())
    assert q.payload.dtype == jnp.uint8 and q.payload.shape == (32, 4)
    assert q.shape == (32, 7)
    np.testing.assert_allclose(q.materialise(), w, atol=float(jnp.abs(w).max()) / 7)


def test_afpq_uses_separate_sides():
    # A skewed block: positives up to 6, negatives only to -0.6. AFPQ keeps the negatives fine.
    w = jnp.concatenate([jnp.linspace(0, 6, 32), jnp.linspace(-0.6, 0, 32)])[:, None]
    w = jnp.tile(w, (1, 2)).astype(jnp.float32)
    err_afpq = jnp.abs(ja.quantize_array(w, ja.AFPQ(), ja.PerChannel()).materialise() - w)
    err_fp4 = jnp.abs(ja.quantize_array(w, ja.FP4(), ja.PerChannel()).materialise() - w)
    assert float(err_afpq[32:].max()) < 0.5 * float(err_fp4[32:].max())


def test_adaptive_group_coarsens():
    assert ja.AdaptiveGroup(128).group_rows(4096, where="w") == 128
    assert ja.AdaptiveGroup(128).group_rows(1000, where="w") == 200
    assert ja.AdaptiveGroup(128).group_rows(192, where="w") == 192
    assert ja.AdaptiveGroup(128).group_rows(100, where="w") == 100
    q = ja.quantize_array(jnp.ones((1000, 4), jnp.float32), ja.Int4(), ja.AdaptiveGroup(128))
    assert q.scales.shape == (5, 4)
    with pytest.raises(ValueError, match="w: group size 128 does not divide"):
        ja.Group(128).group_rows(1000, where="w")
