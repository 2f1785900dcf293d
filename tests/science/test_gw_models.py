"""GW population densities: normalised by numerical integration, equal to scipy where it has one."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats

from science.gw import _models as m

PLP = {
    "alpha": 3.4,
    "beta": 1.1,
    "mmin": 5.08,
    "mmax": 86.9,
    "lam": 0.039,
    "mpp": 33.7,
    "sigpp": 3.6,
    "delta_m": 4.8,
}


def integrate(f, lo, hi, n=200001):
    x = np.linspace(lo, hi, n)
    return scipy.integrate.trapezoid(np.asarray(f(jnp.asarray(x, jnp.float32))), x)


def test_truncated_power_law_matches_closed_form():
    for alpha in (-2.3, -1.0, 0.7):
        x = jnp.asarray([2.0, 5.0, 9.0])
        got = np.asarray(m.truncated_power_law(x, alpha, 1.5, 10.0))
        if alpha == -1.0:
            want = 1 / (np.asarray(x) * np.log(10 / 1.5))
        else:
            want = np.asarray(x) ** alpha * (alpha + 1) / (10 ** (alpha + 1) - 1.5 ** (alpha + 1))
        np.testing.assert_allclose(got, want, rtol=1e-5)
    assert float(m.truncated_power_law(jnp.asarray(11.0), -2.0, 1.5, 10.0)) == 0.0


def test_truncated_normal_matches_scipy():
    x = jnp.linspace(-0.9, 0.9, 7)
    a, b = (-1 - 0.2) / 0.5, (1 - 0.2) / 0.5
    want = scipy.stats.truncnorm(a, b, loc=0.2, scale=0.5).pdf(np.asarray(x))
    np.testing.assert_allclose(
        np.asarray(m.truncated_normal(x, 0.2, 0.5, -1.0, 1.0)), want, rtol=1e-5
    )


def test_spin_magnitude_matches_scipy():
    a = jnp.linspace(0.05, 0.95, 9)
    want = scipy.stats.beta(1.6, 4.1).pdf(np.asarray(a))
    got = m.spin_magnitude_beta(a, {"alpha_chi": 1.6, "beta_chi": 4.1})
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5)


@pytest.mark.parametrize(
    ("fn", "hyper"),
    [
        (m.power_law_peak, PLP),
        (
            m.broken_power_law,
            {
                "alpha_1": 1.6,
                "alpha_2": 5.6,
                "mmin": 4.0,
                "mmax": 87.0,
                "break_fraction": 0.4,
                "delta_m": 4.8,
            },
        ),
        (
            m.multi_peak,
            {
                "alpha": 3.0,
                "mmin": 5.0,
                "mmax": 90.0,
                "lam": 0.1,
                "lam_1": 0.6,
                "mpp_1": 10.0,
                "sigpp_1": 1.0,
                "mpp_2": 35.0,
                "sigpp_2": 4.0,
                "delta_m": 3.0,
            },
        ),
    ],
    ids=["power_law_peak", "broken_power_law", "multi_peak"],
)
def test_primary_mass_models_normalised(fn, hyper):
    hyper = {k: jnp.asarray(v) for k, v in hyper.items()}
    total = integrate(lambda x: fn(x, hyper), 2.0, 100.0)
    assert abs(total - 1) < 2e-3, total
    assert float(fn(jnp.asarray(hyper["mmin"] - 0.1), hyper)) == 0.0


def test_smoothing_window():
    s = m.smoothing(jnp.asarray([4.0, 5.0, 5.1, 7.0, 9.0, 10.0, 20.0]), 5.0, 5.0)
    s = np.asarray(s)
    assert s[0] == 0 and s[1] == 0 and s[-1] == 1 and s[-2] == 1
    assert 0 < s[2] < s[3] < s[4] < 1
    sharp = m.smoothing(jnp.asarray([4.9, 5.1]), 5.0, 0.0)
    np.testing.assert_array_equal(np.asarray(sharp), [0.0, 1.0])


@pytest.mark.parametrize("m1", [12.0, 40.0, 80.0])
def test_mass_ratio_normalised_per_m1(m1):
    hyper = {k: jnp.asarray(v) for k, v in PLP.items()}
    total = integrate(lambda q: m.mass_ratio_power_law(q, jnp.full_like(q, m1), hyper), 0.0, 1.0)
    assert abs(total - 1) < 5e-3, total


@pytest.mark.parametrize(
    ("fn", "hyper"),
    [
        (m.redshift_power_law, {"lamb": 2.7}),
        (m.madau_dickinson, {"gamma": 2.7, "kappa": 2.9, "z_peak": 1.9}),
    ],
    ids=["power_law", "madau_dickinson"],
)
def test_redshift_models_normalised_and_follow_volume(fn, hyper):
    hyper = {k: jnp.asarray(v) for k, v in hyper.items()}
    assert abs(integrate(lambda z: fn(z, hyper), 0.0, 2.3) - 1) < 2e-3
    # Shape check against astropy directly: ratio of densities at two redshifts.
    from astropy.cosmology import Planck15

    z1, z2 = 0.2, 1.0
    dv = Planck15.differential_comoving_volume([z1, z2]).value
    if "lamb" in hyper:
        shape = (1 + np.array([z1, z2])) ** 2.7
    else:
        zz = 1 + np.array([z1, z2])
        shape = zz**2.7 / (1 + (zz / 2.9) ** 5.6)
    want = dv[1] * shape[1] / (1 + z2) / (dv[0] * shape[0] / (1 + z1))
    got = fn(jnp.asarray([z1, z2]), hyper)
    np.testing.assert_allclose(float(got[1] / got[0]), want, rtol=2e-3)


def test_tilt_and_eccentricity_normalised():
    h = {"xi_spin": jnp.asarray(0.7), "sigma_spin": jnp.asarray(0.4)}
    assert abs(integrate(lambda c: m.spin_tilt_mixture(c, h), -1.0, 1.0) - 1) < 1e-4
    e = {"sigma_ecc": jnp.asarray(0.1)}
    assert abs(integrate(lambda x: m.eccentricity_half_normal(x, e), 0.0, 1.0) - 1) < 1e-4


def test_mixture_is_rate_weighted_sum():
    pop_a = m.Population(
        mass=lambda d, h: m.truncated_power_law(d["mass_1"], -h["alpha"], 5.0, 50.0)
    )
    mix = m.Mixture(BBH=(pop_a, "rate_bbh"), NSBH=(pop_a, "rate_nsbh"))
    hyper = {
        "rate_bbh": jnp.asarray(20.0),
        "rate_nsbh": jnp.asarray(5.0),
        "BBH.alpha": jnp.asarray(2.0),
        "NSBH.alpha": jnp.asarray(1.0),
    }
    d = {"mass_1": jnp.asarray([10.0, 30.0])}
    want = 20 * m.truncated_power_law(d["mass_1"], -2.0, 5.0, 50.0) + 5 * m.truncated_power_law(
        d["mass_1"], -1.0, 5.0, 50.0
    )
    np.testing.assert_allclose(np.asarray(mix(d, hyper)), np.asarray(want), rtol=1e-6)
    assert float(mix.total_rate(hyper)) == 25.0


def test_gradients_finite_at_support_edges():
    import jax

    hyper = {k: jnp.asarray(v) for k, v in PLP.items()}
    m1 = jnp.asarray([5.03, 5.09, 5.2, 60.0, 101.0])  # below/at/above mmin, inside, above grid
    q = jnp.asarray([0.49, 0.999, 0.98, 0.5, 0.5])

    def total(beta, alpha):
        h = dict(hyper, beta=beta, alpha=alpha)
        return jnp.sum(m.mass_ratio_power_law(q, m1, h) + m.power_law_peak(m1, h))

    g = jax.grad(total, argnums=(0, 1))(jnp.asarray(1.5), jnp.asarray(3.0))
    assert all(bool(jnp.isfinite(x)) for x in g), g


NSBH = {"alpha": 2.0, "mmin": 3.0, "mmax": 20.0, "m2min": 1.0, "m2max": 2.5}


def test_nsbh_mass_models_normalised():
    assert integrate(lambda x: m.power_law_primary(x, NSBH), 2.0, 25.0) == pytest.approx(
        1, abs=1e-4
    )
    # m1 below m2max truncates the neutron-star range at q = 1
    for m1 in (1.8, 5.0, 15.0):
        total = integrate(
            lambda q, m1=m1: m.secondary_mass_uniform(q, jnp.full_like(q, m1), NSBH), 0.0, 1.0
        )
        assert total == pytest.approx(1, abs=2e-3), m1
    # uniform in m2 = q m1: p(q | m1) = m1 / (2.5 - 1.0) inside
    got = m.secondary_mass_uniform(jnp.asarray([0.1, 0.2, 0.05]), jnp.asarray(10.0), NSBH)
    np.testing.assert_allclose(np.asarray(got), [10 / 1.5, 10 / 1.5, 0.0], rtol=1e-6)


def test_local_rate_matches_astropy_volume_integral():
    from astropy.cosmology import Planck15

    def dvc(z):  # Gpc^3 per unit redshift
        return 4 * np.pi * Planck15.differential_comoving_volume(z).to("Gpc3 / sr").value

    lamb = 2.7
    volume, _ = scipy.integrate.quad(lambda z: dvc(z) * (1 + z) ** (lamb - 1), 0.0, 2.3)
    got = float(m.local_rate(jnp.asarray(6.0e4), {"lamb": jnp.asarray(lamb)}))
    assert got == pytest.approx(6.0e4 / volume, rel=1e-3)
