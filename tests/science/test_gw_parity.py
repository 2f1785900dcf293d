"""Parity with gwpopulation (jax backend): our GW population densities and hierarchical likelihood
equal gwpopulation's on the same samples, injections and hyperparameters, in float64.

What is compared, and to what tolerance (measured values: gwpopulation 1.4.0):

* mass (``power_law_peak`` x ``mass_ratio_power_law`` vs ``SinglePeakSmoothedMassDistribution``,
  and ``broken_power_law`` x ``mass_ratio_power_law`` vs ``BrokenPowerLawSmoothedMassDistribution``,
  all on m1 in [2, 100] x 1000 and q in [0.001, 1] x 500): 1e-6 relative per sample (measured
  <= 9e-14). Densities below 1e-12 of the largest are compared in absolute terms, for two known
  differences there, both without weight in any sum: our ``mass_ratio_power_law`` is 0 where the
  kept fraction of the power law is below 1e-12 of its maximum (m1 a few per cent of ``delta_m``
  above ``mmin``: a float32 gradient guard), where gwpopulation's is ~1e-15; and our smoothing
  clips its exponent at 80, so the window never drops below ``sigmoid(-80) ~ 1.8e-35`` inside
  ``(mmin, mmin + delta_m / 80)``, where gwpopulation's falls as ``exp(-delta_m / (m - mmin))``.
  (``delta_m = 0``, not tested: gwpopulation uses the closed-form normalisers, ours still the
  trapezoid on the grid, ~0.5% apart.)
* spin magnitudes (``spin_magnitude_beta`` per spin vs ``iid_spin_magnitude_beta``) and tilts:
  1e-6 (measured <= 2e-13). gwpopulation's ``iid_spin_orientation_gaussian_isotropic`` (the GWTC-3
  "Default" model) mixes the *pair*: ``xi N(z1) N(z2) + (1 - xi) / 4``, which is our
  ``spin_tilt_pair``; ``spin_tilt_mixture`` is a one-spin density, and the product of two of them
  is a different model (checked below).
* redshift (``redshift_power_law`` vs ``PowerLawRedshift``): gwpopulation takes dVc/dz from wcosmo's
  Planck15, a flat LambdaCDM without radiation or massive neutrinos, where ours is astropy's
  Planck15 (with both): the shapes differ by up to ~4e-3 over [0, 2.3] by that definition alone.
  With gwpopulation given astropy's Planck15 the densities agree to 2e-6 (measured <= 1e-6: our
  1000-point trapezoid normalisation from z = 0 vs their 2500 points from 1e-6, and our linear
  interpolation of dVc/dz / z^2 where they evaluate dVc/dz exactly); the shape alone to 1e-6
  (measured 5e-7).
* log-likelihood (ours with ``neff_policy="report"`` vs ``HyperparameterLikelihood`` +
  ``ResamplingVT(enforce_convergence=False)`` on the same injections): 1e-6 relative (measured
  <= 2e-16 for mass + spin, <= 3e-7 with redshift, from the 5e-7 shape residual). gwpopulation's
  ``log_likelihood_ratio`` is ``sum_i [ln sum_j w_ij - ln S] - N ln mu``, exactly our estimator:
  no constant between them (its ``log_likelihood`` would add the sum of per-event evidences, NaN
  when none are given). A normalisation-only difference (e.g. the redshift grids') is a factor
  that cancels exactly between the events' and the selection term, so only shapes reach ln L.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from science.gw import _models as m
from science.gw._likelihood import HierarchicalLikelihood

N_EVENTS, N_SAMPLES, N_DRAW = 10, 200, 5000
N_FOUND = N_EVENTS * N_SAMPLES  # the same shape as the flattened PE samples: see _data_sets
Z_MAX = 2.3

# GWTC-3 Power Law + Peak / Default spin / power-law redshift medians, and two perturbed points.
HYPER_POINTS = {
    "gwtc3": dict(
        alpha=3.4, beta=1.1, mmin=5.08, mmax=86.9, lam=0.039, mpp=33.7, sigpp=3.6, delta_m=4.8,
        alpha_chi=1.6, beta_chi=4.1, xi_spin=0.66, sigma_spin=1.5, lamb=2.9,
    ),
    "shallow": dict(
        alpha=2.5, beta=0.4, mmin=4.0, mmax=95.0, lam=0.1, mpp=30.0, sigpp=5.0, delta_m=6.5,
        alpha_chi=2.5, beta_chi=3.0, xi_spin=0.3, sigma_spin=0.8, lamb=1.0,
    ),
    "steep": dict(
        alpha=4.3, beta=2.6, mmin=6.3, mmax=72.0, lam=0.02, mpp=36.0, sigpp=2.0, delta_m=2.5,
        alpha_chi=1.2, beta_chi=6.0, xi_spin=0.9, sigma_spin=2.4, lamb=4.5,
    ),
}  # fmt: skip
MASS_KEYS = ("alpha", "beta", "mmin", "mmax", "lam", "mpp", "sigpp", "delta_m")


def _catalogue():
    """Synthetic PE samples with a known PE prior, and found injections with their p_draw."""
    rng = np.random.default_rng(20240611)
    shape = (N_EVENTS, N_SAMPLES)
    m1 = rng.uniform(8, 60, (N_EVENTS, 1)) * np.exp(0.15 * rng.standard_normal(shape))
    z = rng.uniform(0.05, 1.0, (N_EVENTS, 1)) * np.exp(0.25 * rng.standard_normal(shape))
    posteriors = dict(
        mass_1=np.clip(m1, 2.5, 99.0),
        mass_ratio=rng.beta(4.0, 1.5, shape),
        redshift=np.clip(z, 1e-3, Z_MAX - 1e-3),
        a_1=rng.uniform(0, 1, shape),
        a_2=rng.uniform(0, 1, shape),
        cos_tilt_1=rng.uniform(-1, 1, shape),
        cos_tilt_2=rng.uniform(-1, 1, shape),
    )
    # PE prior: uniform m1 on [2, 100] and q, p(z) ∝ z^2 on [0, 2.3], uniform spins and tilts.
    pe_prior = (1 / 98) * 3 * posteriors["redshift"] ** 2 / Z_MAX**3 * 0.25

    # injections: m1 ∝ m^-1.5 on [2, 100] (inverse CDF), q and z uniform, uniform spins/tilts
    u = rng.uniform(size=N_FOUND)
    lo, hi = 2.0**-0.5, 100.0**-0.5
    inj_m1 = (lo - u * (lo - hi)) ** -2
    injections = dict(
        mass_1=inj_m1,
        mass_ratio=rng.uniform(0.02, 1, N_FOUND),
        redshift=rng.uniform(0, 1.5, N_FOUND),
        a_1=rng.uniform(0, 1, N_FOUND),
        a_2=rng.uniform(0, 1, N_FOUND),
        cos_tilt_1=rng.uniform(-1, 1, N_FOUND),
        cos_tilt_2=rng.uniform(-1, 1, N_FOUND),
    )
    p_m1 = 0.5 * inj_m1**-1.5 / (lo - hi)
    p_draw = p_m1 * (1 / 0.98) * (1 / 1.5) * 0.25
    return posteriors, pe_prior, injections, p_draw


@pytest.fixture(scope="module")
def gwpop():
    """gwpopulation on its jax backend, in float64 and JAX's standard promotion rules (its code
    mixes dtypes and ranks, which the suite's strict settings refuse); all restored afterwards.

    JAX's caches are cleared before and after: while a function jitted in one precision is
    cached, the numpy constants it captured (our models' cached dVc/dz grid) come back from
    ``jnp.asarray`` in that precision even after x64 is switched (JAX 0.10), which would give
    these tests a float32 grid after the float32 tests, or those a float64 one after these."""
    gwpopulation = pytest.importorskip("gwpopulation")
    pytest.importorskip("pandas")
    x64 = jax.config.jax_enable_x64
    jax.clear_caches()
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        gwpopulation.set_backend("jax")  # turns on jax_enable_x64 (globally)
        jax.config.update("jax_enable_x64", True)
        try:
            yield gwpopulation
        finally:
            gwpopulation.set_backend("numpy")
            jax.config.update("jax_enable_x64", x64)
            jax.clear_caches()


@pytest.fixture(scope="module")
def catalogue(gwpop):
    return _catalogue()


def _astropy_power_law_redshift(gwpop):
    """gwpopulation's PowerLawRedshift with dVc/dz from astropy's Planck15 (ours) instead of
    wcosmo's."""
    from astropy.cosmology import Planck15
    from gwpopulation.models.redshift import PowerLawRedshift

    class AstropyPowerLawRedshift(PowerLawRedshift):
        def dvc_dz(self, redshift, **parameters):  # 4 pi dVc/dz/dOmega [Mpc^3], as theirs
            dvc = Planck15.differential_comoving_volume(np.asarray(redshift))
            return jnp.asarray(4 * np.pi * dvc.to("Mpc3 / sr").value)

    return AstropyPowerLawRedshift(z_max=Z_MAX)


def _ours(h):
    return {k: jnp.asarray(v, jnp.float64) for k, v in h.items()}


def _theirs(h):
    return dict(h, amax=1.0, mu_spin=1.0)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def our_mass(d, h):
    return m.power_law_peak(d["mass_1"], h) * m.mass_ratio_power_law(
        d["mass_ratio"], d["mass_1"], h
    )


def our_spin_magnitude(d, h):
    return m.spin_magnitude_beta(d["a_1"], h) * m.spin_magnitude_beta(d["a_2"], h)


def our_spin_tilt(d, h):
    """GWTC-3's pair mixture (ours: ``spin_tilt_pair``)."""
    return m.spin_tilt_pair(d["cos_tilt_1"], d["cos_tilt_2"], h)


def our_spin(d, h):
    return our_spin_magnitude(d, h) * our_spin_tilt(d, h)


def our_redshift(d, h):
    return m.redshift_power_law(d["redshift"], h, z_max=Z_MAX)


@jax.jit
def our_densities(d, h):
    """Everything compared per sample, in one compilation per data shape (eager evaluation
    compiles each operation separately: tens of seconds on a small machine)."""
    tilt_product = m.spin_tilt_mixture(d["cos_tilt_1"], h) * m.spin_tilt_mixture(d["cos_tilt_2"], h)
    return dict(
        mass=our_mass(d, h),
        magnitude=our_spin_magnitude(d, h),
        tilt=our_spin_tilt(d, h),
        tilt_product=tilt_product,
        redshift=our_redshift(d, h),
    )


def _data_sets(catalogue):
    """The PE samples (flattened) and the injections as float64 JAX arrays. Both hold 2000 points:
    one shape, so each operation gwpopulation runs eagerly compiles once for both."""
    posteriors, _, injections, _ = catalogue
    return [
        {k: jnp.asarray(np.ravel(v), jnp.float64) for k, v in t.items()}
        for t in (posteriors, injections)
    ]


# GWTC-3 Broken Power Law medians and a perturbed point (break at mmin + f (mmax - mmin))
BPL_POINTS = {
    "bpl_gwtc3": dict(
        alpha_1=1.58, alpha_2=5.59, break_fraction=0.43, beta=1.4, mmin=3.96, mmax=87.14,
        delta_m=4.83,
    ),
    "bpl_other": dict(
        alpha_1=0.5, alpha_2=3.0, break_fraction=0.2, beta=-0.5, mmin=6.0, mmax=60.0, delta_m=1.5
    ),
}  # fmt: skip


@jax.jit
def our_broken_power_law(d, h):
    return m.broken_power_law(d["mass_1"], h) * m.mass_ratio_power_law(
        d["mass_ratio"], d["mass_1"], h
    )


@pytest.mark.parametrize("point", [*HYPER_POINTS, *BPL_POINTS])
def test_mass_density_per_sample(gwpop, catalogue, point):
    from gwpopulation.models import mass as gw_mass

    assert (m.M1_GRID, m.Q_GRID) == ((2.0, 100.0, 1000), (0.001, 1.0, 500))
    if point in HYPER_POINTS:
        h = HYPER_POINTS[point]
        ours_fn = lambda d, h: our_densities(d, h)["mass"]
        model = gw_mass.SinglePeakSmoothedMassDistribution
        theirs_h = {k: h[k] for k in MASS_KEYS}
    else:
        h = theirs_h = BPL_POINTS[point]
        ours_fn = our_broken_power_law
        model = gw_mass.BrokenPowerLawSmoothedMassDistribution
    for data in _data_sets(catalogue):
        ours = np.asarray(ours_fn(data, _ours(h)))
        mass = {k: data[k] for k in ("mass_1", "mass_ratio")}
        theirs = model(mmin=2.0, mmax=100.0, normalization_shape=(1000, 500))
        theirs = np.exp(np.asarray(theirs.ln_prob(mass, **theirs_h)))
        assert ours.dtype == theirs.dtype == np.float64
        floor = 1e-12 * theirs.max()  # see the module docstring
        live = theirs > floor
        assert live.mean() > 0.2  # a good part of the samples is inside the support
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=floor)
        assert _rel(ours[live], theirs[live]) < 1e-6


@pytest.mark.parametrize("point", list(HYPER_POINTS))
def test_spin_densities_per_sample(gwpop, catalogue, point):
    from gwpopulation.models import spin

    h = HYPER_POINTS[point]
    for data in _data_sets(catalogue):
        ours = our_densities(data, _ours(h))
        theirs = spin.iid_spin_magnitude_beta(
            data, amax=1.0, alpha_chi=h["alpha_chi"], beta_chi=h["beta_chi"]
        )
        assert _rel(ours["magnitude"], theirs) < 1e-6
        theirs = spin.iid_spin_orientation_gaussian_isotropic(
            data, xi_spin=h["xi_spin"], sigma_spin=h["sigma_spin"]
        )
        assert _rel(ours["tilt"], theirs) < 1e-6
        # The product of two one-spin mixtures is not gwpopulation's (GWTC-3's) pair mixture.
        assert _rel(ours["tilt_product"], theirs) > 1e-3


@pytest.mark.parametrize("lamb", [-1.5, 0.0, 2.9, 5.0])
def test_redshift_density(gwpop, catalogue, lamb):
    model = _astropy_power_law_redshift(gwpop)
    edges = {"redshift": jnp.asarray([1e-4, 1e-3, 1e-2, 0.1, 2.29])}
    for data in [*_data_sets(catalogue), edges]:
        ours = np.asarray(jax.jit(our_redshift)(data, _ours({"lamb": lamb})))
        theirs = np.exp(np.asarray(model.ln_prob({"redshift": data["redshift"]}, lamb=lamb)))
        assert _rel(ours, theirs) < 2e-6  # normalisation grids + dVc/dz / z^2 interpolation
        ratio = ours / theirs
        assert _rel(ratio, np.median(ratio)) < 1e-6  # the shape alone


def test_redshift_wcosmo_cosmology_differs_by_definition(gwpop):
    """gwpopulation's own Planck15 (wcosmo) has no radiation or massive neutrinos: a ~0.4% shape
    difference over [0, 2.3] that is a choice of cosmology, not an error on either side."""
    from gwpopulation.models.redshift import PowerLawRedshift

    z = np.linspace(1e-3, Z_MAX, 200)
    dvc = PowerLawRedshift(z_max=Z_MAX).cosmology({}).differential_comoving_volume(z)
    ours = np.asarray(jax.jit(our_redshift)({"redshift": jnp.asarray(z)}, _ours({"lamb": 2.9})))
    ratio = ours / (dvc * (1 + z) ** 1.9)
    assert 1e-3 < _rel(ratio, ratio[0]) < 1e-2


def _likelihoods(gwpop, catalogue, with_redshift):
    import pandas as pd
    from gwpopulation.hyperpe import HyperparameterLikelihood, Model
    from gwpopulation.models import spin
    from gwpopulation.models.mass import SinglePeakSmoothedMassDistribution
    from gwpopulation.vt import ResamplingVT

    posteriors, pe_prior, injections, p_draw = catalogue
    factors = dict(mass=our_mass, spin=our_spin)
    if with_redshift:
        factors["redshift"] = our_redshift
    keys = ["mass_1", "mass_ratio", "a_1", "a_2", "cos_tilt_1", "cos_tilt_2"]
    keys += ["redshift"] if with_redshift else []
    ours = HierarchicalLikelihood(
        m.Population(**factors),
        {k: posteriors[k] for k in keys},
        pe_prior,
        {k: injections[k] for k in keys},
        p_draw,
        N_DRAW,
        neff_policy="report",
    )

    def models():  # one set per data set: the mass model caches per-shape interpolants
        out = [
            SinglePeakSmoothedMassDistribution(),
            spin.iid_spin_magnitude_beta,
            spin.iid_spin_orientation_gaussian_isotropic,
        ]
        return out + ([_astropy_power_law_redshift(gwpop)] if with_redshift else [])

    events = [
        pd.DataFrame({**{k: posteriors[k][i] for k in keys}, "prior": pe_prior[i]})
        for i in range(N_EVENTS)
    ]
    vt = ResamplingVT(
        Model(models()),
        {**{k: injections[k] for k in keys}, "prior": p_draw, "total_generated": N_DRAW},
        n_events=N_EVENTS,
        enforce_convergence=False,
    )
    # (samples flattened, summed per event: gwpopulation's default, and the injections' shape)
    theirs = HyperparameterLikelihood(events, Model(models()), selection_function=vt)
    return ours, theirs, vt


@pytest.mark.parametrize("with_redshift", [False, True], ids=["mass_spin", "mass_spin_redshift"])
def test_log_likelihood(gwpop, catalogue, with_redshift):
    ours, theirs, vt = _likelihoods(gwpop, catalogue, with_redshift)
    ours_all = jax.jit(lambda h: (ours.log_likelihood(h), *ours.selection(h)))
    for h in HYPER_POINTS.values():
        ln_l_ours, log_mu, neff = ours_all(_ours(h))
        ln_l_ours = float(ln_l_ours)
        ln_l_theirs = theirs.log_likelihood_ratio(_theirs(h))
        assert np.isfinite(ln_l_ours) and np.isfinite(ln_l_theirs)
        assert _rel(ln_l_ours, ln_l_theirs) < 1e-6, (ln_l_ours, ln_l_theirs)
        # the pieces: ln mu and the injections' N_eff (Farr 2019) on both sides
        mu, var = vt(_theirs(h))
        # ln mu: equal, but for the redshift normalisation grids (the factor that cancels in ln L)
        assert abs(float(log_mu) - np.log(mu)) < (2e-6 if with_redshift else 1e-12)
        assert _rel(neff, mu**2 / var) < (1e-6 if with_redshift else 1e-9)
