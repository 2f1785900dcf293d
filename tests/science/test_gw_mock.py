"""Mock catalogues: detections obey the threshold, posteriors cover the truths, files round-trip."""

import numpy as np
import pytest

from science.gw import _detector as det, _mock


@pytest.fixture(scope="module")
def cat():
    return _mock.make_catalogue(5, n_events=40, n_samples=200, n_injections=60_000)


def test_bns_horizon_is_aligo_like():
    # Optimal SNR 8 horizon of a 1.4 + 1.4 Msun binary for aLIGO design is ~450 Mpc; the analytic
    # PSD fit and inspiral-only SNR should land within 25% of it.
    horizon = det.optimal_snr(1.4, 1.4, 1.0) / 8.0
    assert 340 < horizon < 560, horizon


def test_catalogue_shapes_and_selection(cat):
    assert cat.pe_prior.shape == (40, 200)
    assert set(cat.posteriors) == {"mass_1", "mass_ratio", "redshift"}
    assert np.all(cat.snr > _mock.SNR_THRESHOLD)
    assert np.all(cat.pe_prior > 0) and np.all(np.isfinite(cat.pe_prior))
    assert np.all((cat.posteriors["mass_ratio"] > 0) & (cat.posteriors["mass_ratio"] <= 1))
    # Injections: nothing found beyond the injection redshift range, enough found to use.
    assert cat.injections["redshift"].max() < _mock.Z_MAX_INJECTIONS
    assert cat.p_draw.size > 300


def test_posteriors_cover_truths(cat):
    # Each posterior is exact for its measurement model, so the truth's posterior quantile is
    # uniform: about 90% of truths fall inside the central 90% interval.
    for k in ("mass_1", "redshift"):
        lo = np.quantile(cat.posteriors[k], 0.05, axis=1)
        hi = np.quantile(cat.posteriors[k], 0.95, axis=1)
        inside = np.mean((cat.true_events[k] > lo) & (cat.true_events[k] < hi))
        assert 0.7 <= inside <= 1.0, (k, inside)


def test_save_load_roundtrip(cat, tmp_path):
    path = cat.save(tmp_path / "c.npz")
    back = _mock.Catalogue.load(path)
    np.testing.assert_array_equal(back.pe_prior, cat.pe_prior)
    np.testing.assert_array_equal(back.posteriors["mass_1"], cat.posteriors["mass_1"])
    assert back.truths == cat.truths and back.n_draw == cat.n_draw
