"""science.mri physics, masks, metrics and the compressed-sensing baseline, against independent
references: NumPy's FFT, adjoint identities, fastMRI's mask definitions, scikit-image's SSIM/PSNR
(what fastMRI's ``evaluate`` calls) and the CS objective."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from science import mri
from science.mri import _cs, _metrics

SLICE = Path(__file__).resolve().parents[3] / "shared" / "data" / "mri" / "t1_coronal_slice.npy"


def _phantom(n=64):
    y, x = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
    img = ((x / 0.8) ** 2 + (y / 0.9) ** 2 < 1) * 0.8
    img = img + ((x - 0.2) ** 2 / 0.05 + (y + 0.1) ** 2 / 0.1 < 1) * 0.5
    img = img - ((x + 0.3) ** 2 / 0.03 + (y - 0.3) ** 2 / 0.02 < 1) * 0.4
    return np.clip(img, 0, None).astype(np.float32)


def _crandn(key, shape):
    a, b = jax.random.split(key)
    return jax.lax.complex(jax.random.normal(a, shape), jax.random.normal(b, shape))


def test_fft2c_is_unitary_and_centred():
    x = _crandn(jax.random.key(0), (3, 32, 48))
    k = mri.fft2c(x)
    np.testing.assert_allclose(jnp.linalg.norm(k), jnp.linalg.norm(x), rtol=1e-5)
    np.testing.assert_allclose(mri.ifft2c(k), x, atol=1e-5)
    ref = np.fft.fftshift(
        np.fft.fft2(np.fft.ifftshift(np.asarray(x), axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
    )
    np.testing.assert_allclose(k, ref, atol=1e-4)
    # a constant image puts all its energy at the centre sample (H/2, W/2)
    c = mri.fft2c(jnp.ones((32, 48), jnp.complex64))
    assert abs(c[16, 24]) == pytest.approx(np.sqrt(32 * 48), rel=1e-5)


def test_sense_operators_are_adjoint():
    key = jax.random.key(1)
    maps = mri.birdcage_maps(6, (32, 32))
    np.testing.assert_allclose(mri.rss(maps), 1.0, atol=1e-5)
    mask = mri.random_mask((32, 32), 4, 0.1, key=key)
    x = _crandn(jax.random.key(2), (32, 32))
    y = _crandn(jax.random.key(3), (6, 32, 32))
    lhs = jnp.vdot(mri.sense_forward(x, maps, mask), y)
    rhs = jnp.vdot(x, mri.sense_adjoint(y, maps, mask))
    assert complex(lhs) == pytest.approx(complex(rhs), rel=1e-4)


@pytest.mark.parametrize("name", ["haar", "db4"])
def test_wavelet_is_orthonormal_and_its_transpose_inverts_it(name):
    w = _cs.Wavelet(name, 3)
    z = _crandn(jax.random.key(4), (64, 64))
    c = w.forward(z)
    np.testing.assert_allclose(jnp.linalg.norm(c), jnp.linalg.norm(z), rtol=1e-5)
    np.testing.assert_allclose(w.inverse(c), z, atol=1e-4)
    # the explicit synthesis is the transpose JAX derives from the analysis
    (t,) = jax.linear_transpose(w.forward, jax.ShapeDtypeStruct(c.shape, c.dtype))(c)
    np.testing.assert_allclose(w.inverse(c), t, atol=1e-5)
    # linear: adjoint identity with a real test vector
    u = jax.random.normal(jax.random.key(5), (64, 64))
    v = jax.random.normal(jax.random.key(6), (64, 64))
    assert float(jnp.vdot(w.forward(u), v)) == pytest.approx(
        float(jnp.vdot(u, w.inverse(v))), rel=1e-4
    )


@pytest.mark.parametrize("accel,frac", [(4, 0.08), (8, 0.04)])
def test_cartesian_masks_follow_fastmri(accel, frac):
    shape = (256, 368)
    num_low = round(368 * frac)
    pad = (368 - num_low + 1) // 2
    accs = []
    for s in range(40):
        m = mri.random_mask(shape, accel, frac, key=jax.random.key(s))
        assert m.shape == (1, 368) and m[0, pad : pad + num_low].all()
        accs.append(mri.acceleration(m, shape))
    # expected number of lines is num_cols / R: mean achieved acceleration close to R
    assert np.mean([1 / a for a in accs]) == pytest.approx(1 / accel, rel=0.05)
    e = mri.equispaced_mask(shape, accel, frac, key=jax.random.key(0))
    assert e[0, pad : pad + num_low].all()
    assert mri.acceleration(e, shape) == pytest.approx(accel, rel=0.06)
    # deterministic per key
    np.testing.assert_array_equal(
        mri.random_mask(shape, accel, frac, key=jax.random.key(3)),
        mri.random_mask(shape, accel, frac, key=jax.random.key(3)),
    )


def test_poisson_disc_mask_acceleration_centre_and_density():
    m = mri.poisson_disc_mask((96, 96), 5, calib=16, key=jax.random.key(0))
    assert mri.acceleration(m) == pytest.approx(5, rel=0.05)
    assert m[40:56, 40:56].all()
    # variable density: the centre quarter is sampled more densely than the periphery
    inner = m[24:72, 24:72].mean()
    outer = (m.sum() - m[24:72, 24:72].sum()) / (m.size - 48 * 48)
    assert inner > 1.5 * outer


def test_simulation_and_coil_combination():
    img = _phantom(64)
    full = mri.simulate(img, np.ones((1, 64), np.float32), n_coils=4, key=jax.random.key(0))
    np.testing.assert_allclose(jnp.abs(mri.sense_combine(full.kspace, full.maps)), img, atol=1e-5)
    np.testing.assert_allclose(mri.rss(mri.ifft2c(full.kspace)), img, atol=1e-5)
    a = mri.simulate(
        img,
        mri.random_mask((64, 64), 4, 0.1, key=jax.random.key(1)),
        noise=0.02,
        key=jax.random.key(1),
    )
    b = mri.simulate(
        img,
        mri.random_mask((64, 64), 4, 0.1, key=jax.random.key(1)),
        noise=0.02,
        key=jax.random.key(1),
    )
    np.testing.assert_array_equal(a.kspace, b.kspace)
    est = mri.estimate_maps(a.kspace, a.mask)
    inside = img > 0.2
    agreement = jnp.abs((jnp.conj(est) * a.maps).sum(0))[inside]
    assert float(agreement.mean()) > 0.98


@pytest.mark.skipif(not SLICE.exists(), reason="../shared/data/mri not present")
def test_metrics_equal_fastmri_skimage_reference():
    skm = pytest.importorskip("skimage.metrics")
    gt = np.load(SLICE)
    pred = np.clip(gt + 0.05 * np.random.default_rng(0).normal(size=gt.shape), 0, None)
    # fastmri.evaluate: structural_similarity / peak_signal_noise_ratio with data_range = gt.max()
    assert float(_metrics.ssim(gt, pred)) == pytest.approx(
        skm.structural_similarity(gt, pred, data_range=gt.max()), abs=1e-5
    )
    assert float(_metrics.psnr(gt, pred)) == pytest.approx(
        skm.peak_signal_noise_ratio(gt, pred, data_range=gt.max()), abs=1e-4
    )
    ref_nmse = np.linalg.norm(gt - pred) ** 2 / np.linalg.norm(gt) ** 2
    assert float(_metrics.nmse(gt, pred)) == pytest.approx(ref_nmse, rel=1e-5)
    # inside the brain: the SSIM map averaged over the mask
    brain = gt > 0
    _, smap = skm.structural_similarity(gt, pred, data_range=gt.max(), full=True)
    assert float(_metrics.ssim(gt, pred, brain)) == pytest.approx(
        smap[3:-3, 3:-3][brain[3:-3, 3:-3]].mean(), abs=1e-5
    )
    mse = ((gt - pred)[brain] ** 2).mean()
    assert float(_metrics.psnr(gt, pred, brain)) == pytest.approx(
        10 * np.log10(gt.max() ** 2 / mse), abs=1e-4
    )


def test_cs_objective_decreases_and_beats_zero_filled():
    img = _phantom(64)
    mask = mri.random_mask((64, 64), 4, 0.1, key=jax.random.key(2))
    s = mri.simulate(img, mask, n_coils=4, noise=0.005, key=jax.random.key(2))
    res = _cs.cs_reconstruct(
        s.kspace,
        s.mask,
        s.maps,
        lam_wavelet=2e-3,
        lam_tv=2e-3,
        iterations=80,
        wavelet=_cs.Wavelet("db4", 3),
    )
    obj = np.asarray(res.objective)
    assert (np.diff(obj) <= 1e-6 * obj[0]).all() and obj[-1] < 0.8 * obj[0]
    zf = jnp.abs(mri.sense_adjoint(s.kspace, s.maps, s.mask))
    assert float(_metrics.ssim(img, jnp.abs(res.image))) > float(_metrics.ssim(img, zf)) + 0.05
    assert np.isfinite(np.asarray(res.image)).all()


def test_bad_input_errors():
    k = _crandn(jax.random.key(0), (4, 32, 32))
    maps = mri.birdcage_maps(4, (32, 32))
    with pytest.raises(mri.MRIError, match="kspace: expected complex"):
        mri.check_kspace(jnp.abs(k))
    with pytest.raises(mri.MRIError, match="even H and W"):
        mri.check_kspace(k[:, :31])
    with pytest.raises(mri.MRIError, match="NaN"):
        mri.check_kspace(k.at[0, 0, 0].set(jnp.nan))
    with pytest.raises(mri.MRIError, match="mask: shape"):
        mri.check_kspace(k, np.ones((1, 30), np.float32))
    with pytest.raises(mri.MRIError, match="maps: expected shape"):
        mri.check_kspace(k, None, maps[:3])
    no_centre = np.zeros((1, 32), np.float32)
    no_centre[0, ::4] = 1
    no_centre[0, 16] = 0
    with pytest.raises(mri.MRIError, match="no fully sampled centre"):
        mri.estimate_maps(k, no_centre)
    with pytest.raises(mri.MRIError, match="center_fraction"):
        mri.random_mask((32, 32), 8, 0.2, key=jax.random.key(0))
    with pytest.raises(mri.MRIError, match="magnitude: expected even"):
        mri.simulate(np.ones((31, 32)), np.ones((1, 32)), key=jax.random.key(0))


def test_acs_band_host_and_traced_agree():
    from science.mri._physics import _acs_window, acs_width

    for s in range(5):
        m = mri.random_mask((64, 64), 4, 0.1, key=jax.random.key(s))
        traced = jax.jit(lambda mm: (_acs_window(mm, 64) > 0).sum())(m)
        assert acs_width(m) == int(traced) >= round(64 * 0.1)
