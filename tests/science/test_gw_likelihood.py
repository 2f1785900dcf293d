"""Hierarchical likelihood vs independent references (scipy densities, analytic selection)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from science.gw import GWDataError, HierarchicalLikelihood, models as m

LO, HI = 5.0, 50.0


def pl_model(data, hyper):
    return m.truncated_power_law(data["mass_1"], -hyper["alpha"], LO, HI)


def scipy_pl(alpha):
    # p(m) ∝ m^-alpha on [LO, HI]: truncpareto(b = alpha - 1, c = HI/LO, scale = LO)
    return scipy.stats.truncpareto(alpha - 1, HI / LO, scale=LO)


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    true = scipy_pl(2.5)
    population = true.rvs(size=2000, random_state=rng)
    events = population[population > 20.0][:30]  # the detected ones (selection: m > 20)
    assert events.size == 30
    # Sharp "posteriors": every sample at the true mass (flat PE prior 1) -> per-event average is
    # exactly p(m_i | alpha).
    post = {"mass_1": np.repeat(events[:, None], 25, axis=1)}
    prior = np.ones((30, 25))
    inj = scipy_pl(1.5).rvs(size=20000, random_state=rng)
    found = inj[inj > 20.0]
    p_draw = scipy_pl(1.5).pdf(found)
    return events, post, prior, found, p_draw


def test_likelihood_without_selection_bias_matches_scipy(setup):
    events, post, prior, _, _ = setup
    events = np.asarray(post["mass_1"][:, 0])
    # Injections that are all found: mu == 1 up to Monte-Carlo error, identical for all alphas
    # when drawn from the model itself; use p_draw = model at the evaluated alpha -> mu = 1 exactly.
    for alpha in (1.8, 2.5, 3.3):
        inj = scipy_pl(alpha).rvs(size=500, random_state=np.random.default_rng(1))
        lik = HierarchicalLikelihood(
            pl_model,
            post,
            prior,
            {"mass_1": inj},
            scipy_pl(alpha).pdf(inj),
            500,
            neff_policy="report",
        )
        got = float(lik.log_likelihood({"alpha": jnp.asarray(alpha)}))
        want = float(np.sum(scipy_pl(alpha).logpdf(events)))
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_selection_fraction_matches_analytic(setup):
    _, post, prior, found, p_draw = setup
    lik = HierarchicalLikelihood(pl_model, post, prior, {"mass_1": found}, p_draw, 20000)
    for alpha in (1.5, 2.5):
        log_mu, neff = lik.selection({"alpha": jnp.asarray(alpha)})
        want = scipy_pl(alpha).sf(20.0)
        # Monte-Carlo error of mu is mu / sqrt(N_eff): allow 4 sigma
        assert abs(float(jnp.exp(log_mu)) - want) < 4 * want / np.sqrt(float(neff)), alpha


def test_steep_slopes_do_not_overflow():
    x = jnp.asarray([6.0, 49.0])
    for alpha in (-40.0, 40.0):
        p = m.truncated_power_law(x, alpha, LO, HI)
        want = scipy.stats.truncpareto(-alpha - 1, HI / LO, scale=LO).pdf(np.asarray(x))
        np.testing.assert_allclose(np.asarray(p), want, rtol=1e-4, atol=1e-30)


def test_maximum_likelihood_recovers_alpha(setup):
    _, post, prior, found, p_draw = setup
    lik = HierarchicalLikelihood(pl_model, post, prior, {"mass_1": found}, p_draw, 20000)
    alphas = jnp.linspace(1.0, 4.5, 71)
    ll = jax.vmap(lambda a: lik.log_likelihood({"alpha": a}))(alphas)
    # With 30 events, the MLE sits within ~2 standard errors (~0.3 each) of the truth 2.5.
    assert abs(float(alphas[jnp.argmax(ll)]) - 2.5) < 0.8


def test_neff_collapse_is_rejected_and_reported(setup):
    _, post, prior, found, p_draw = setup
    # 50 found of 185 drawn: N_eff of mu is at most ~0.37 x 185 < 4 x 30 events -> rejected (GWTC-3)
    lik = HierarchicalLikelihood(pl_model, post, prior, {"mass_1": found[:50]}, p_draw[:50], 185)
    hyper = {"alpha": jnp.asarray(2.5)}
    assert float(lik.log_likelihood(hyper)) == -np.inf
    d = lik.diagnostics(hyper)
    assert d["neff_injections"] < d["neff_threshold"] and "does not cover" in d["warning"]


def test_bad_inputs(setup):
    _, post, prior, found, p_draw = setup
    with pytest.raises(GWDataError, match="10 samples per event; expected at least 20"):
        HierarchicalLikelihood(
            pl_model,
            {"mass_1": post["mass_1"][:, :10]},
            prior[:, :10],
            {"mass_1": found},
            p_draw,
            20000,
        )
    bad = post["mass_1"].copy()
    bad[3, 7] = np.nan
    with pytest.raises(GWDataError, match="non-finite value at event 3, sample 7"):
        HierarchicalLikelihood(pl_model, {"mass_1": bad}, prior, {"mass_1": found}, p_draw, 20000)
    zero = prior.copy()
    zero[2, 1] = 0.0
    with pytest.raises(GWDataError, match="pe_prior: must be finite and > 0.*event 2, sample 1"):
        HierarchicalLikelihood(pl_model, post, zero, {"mass_1": found}, p_draw, 20000)
    with pytest.raises(GWDataError, match="time_volume: required"):
        HierarchicalLikelihood(
            pl_model, post, prior, {"mass_1": found}, p_draw, 20000, rate="sampled"
        )


def test_hyperparameters_outside_support():
    from science.gw import default_catalogue, population

    cat = default_catalogue()
    lik = HierarchicalLikelihood(
        population, cat.posteriors, cat.pe_prior, cat.injections, cat.p_draw, cat.n_draw
    )
    truth = {k: jnp.asarray(v) for k, v in cat.truths.items()}
    lik.check(truth)  # fine
    assert np.isfinite(float(lik.log_likelihood(truth)))
    cases = [
        ({"lam": 1.3}, r"hyper\['lam'\] = 1.3: expected a value in \[0, 1\]"),
        ({"sigpp": -2.0}, r"hyper\['sigpp'\] = -2: expected a value in \(0, inf\)"),
        ({"delta_m": -1.0}, r"hyper\['delta_m'\]"),
        ({"mmin": 90.0}, r"hyper\['mmin'\] = 90 must be below hyper\['mmax'\] = 86.9"),
        ({"alpha": np.nan}, r"hyper\['alpha'\] = nan: expected a finite value"),
    ]
    for change, message in cases:
        hyper = {**truth, **{k: jnp.asarray(v) for k, v in change.items()}}
        with pytest.raises(GWDataError, match=message):
            lik.check(hyper)
        # traced: a zero density, never NaN, and no NaN gradient either
        ll, grad = jax.value_and_grad(lambda h: lik.log_likelihood(h))(hyper)
        assert float(ll) == -np.inf, change
        assert all(np.isfinite(np.asarray(g)).all() for g in grad.values()), change
    missing = {k: v for k, v in truth.items() if k != "lamb"}
    with pytest.raises(GWDataError, match="the model needs 'lamb'"):
        lik.check(missing)
