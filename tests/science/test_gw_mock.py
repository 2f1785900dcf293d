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


def test_event_posteriors_are_calibrated():
    # Truths drawn from the PE prior itself (flat in u = (ln Mc_det, q, ln d_L)), kept when
    # detected: the posteriors given (u_obs, rho_obs) are then exact, so each truth's posterior
    # quantile is uniform — a check that the SNR-term rejection sampler keeps them exact. (Per
    # event, leaving the SNR term out shifts the quantiles by only ~0.01-0.03, too little to see
    # here; it adds up over a catalogue, which the population SBC checks. Truths drawn from a
    # population rather than the PE prior need not be covered 90% of the time.)
    from scipy import stats

    rng = np.random.default_rng(11)
    n = 6000
    u = np.stack(
        [
            rng.uniform(np.log(3.0), np.log(60.0), n),
            rng.uniform(0.02, 1.0, n),
            rng.uniform(np.log(50.0), np.log(det.luminosity_distance(_mock.Z_MAX)), n),
        ],
        axis=1,
    )
    m1, q, z = _mock._theta_of(u[:, 0], u[:, 1], u[:, 2])
    src = {"mass_1": m1, "mass_ratio": q, "redshift": z}
    found, snr = _mock._detect(rng, src)
    idx = np.flatnonzero(found)[:150]
    assert idx.size == 150
    quantiles = []
    for i in idx:
        post, _ = _mock._posterior_samples(rng, {k: v[i] for k, v in src.items()}, snr[i], 200)
        ps = np.stack(_mock._u_of(post["mass_1"], post["mass_ratio"], post["redshift"]), axis=1)
        quantiles.append(np.mean(ps < u[i], axis=0))
    quantiles = np.array(quantiles)
    for j in range(3):
        # 200 samples per posterior quantise the quantiles to 1/200: KS is fine at this n
        assert stats.kstest(quantiles[:, j], "uniform").pvalue > 1e-3, j
        inside = np.mean((quantiles[:, j] > 0.05) & (quantiles[:, j] < 0.95))
        assert 0.82 <= inside <= 0.97, (j, inside)


def test_save_load_roundtrip(cat, tmp_path):
    path = cat.save(tmp_path / "c.npz")
    back = _mock.Catalogue.load(path)
    np.testing.assert_array_equal(back.pe_prior, cat.pe_prior)
    np.testing.assert_array_equal(back.posteriors["mass_1"], cat.posteriors["mass_1"])
    assert back.truths == cat.truths and back.n_draw == cat.n_draw
