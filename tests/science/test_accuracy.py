"""Accuracy of `science.samplers` against analytic posteriors and evidences (STYLE C9).

Every check compares to a reference computed independently of the samplers (closed-form moments,
``scipy.stats`` densities) with a stated statistical tolerance:

- posterior means within ``N_SE_MEAN`` Monte-Carlo standard errors (the result's own ``mcse()``,
  whose calibration `test_mcse_is_calibrated_across_seeds` checks separately);
- posterior standard deviations within ``N_SE_STD`` standard errors of a sample standard deviation,
  ``se(s) = sqrt((m4 / sigma^4 - 1) / (4 ESS)) * sigma`` (delta method, with the true kurtosis
  ``m4 / sigma^4`` of the marginal; 3 for a Gaussian);
- ``log Z`` within ``N_SE_LOGZ`` of the run's own standard error, plus ``LOGZ_FLOOR``: the log
  densities are float32 sums of O(d) terms of size O(d) (round-off ~1e-5 for d=20), and the log of
  a mean weight is biased by ``-se^2 / 2``; 5e-3 covers both with a wide margin and is far below
  any error that matters for model comparison (an error of 0.005 in log Z is 0.5% in Z).

Settings are small so each run takes seconds on 2 CPU cores (most of it compilation); the runs are
seeded, so the tests are deterministic. Long ones are marked ``slow``.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.stats

from science import samplers as ss

N_SE_MEAN = 4.0
N_SE_STD = 5.0
N_SE_LOGZ = 3.0
LOGZ_FLOOR = 5e-3

VI = ss.FlowVI(steps=600, n_draws=4000, draw_batch=4000, chunk=200)
MCMC = ss.FlowMCMC(n_chains=32, train_loops=4, cycles_per_loop=20, n_samples=100)
NUTS = ss.NUTS(n_chains=4, n_warmup=300, n_samples=400, chunk=100)


def _f(x) -> jax.Array:
    """A constant in JAX's default float dtype (float32, or float64 under x64)."""
    return jnp.asarray(x, dtype=float)


def run(sampler, target, seed: int = 0) -> ss.Result:
    return ss.sample(jax.random.key(seed), target, sampler, progress=False)


def describe(r: ss.Result) -> str:
    """The run's summary and diagnostics, for assertion messages."""
    return f"\n{r.summary()}\n{r.diagnostics}"


def check_moments(r: ss.Result, mean, std, *, kurtosis=3.0, names=None):
    """Means within N_SE_MEAN MCSE and stds within N_SE_STD standard errors of the truth."""
    names = r.names if names is None else names
    mean = np.broadcast_to(np.asarray(mean, float), (len(names),))
    std = np.broadcast_to(np.asarray(std, float), (len(names),))
    kurtosis = np.broadcast_to(np.asarray(kurtosis, float), (len(names),))
    m, s, mcse, ess = r.mean(), r.std(), r.mcse(), r.ess()
    for i, n in enumerate(names):
        z = (m[n] - mean[i]) / mcse[n]
        assert abs(z) < N_SE_MEAN, (
            f"{n}: mean {m[n]:.4f} vs {mean[i]:.4f} is {z:.1f} MCSE off{describe(r)}"
        )
        se_std = std[i] * math.sqrt((kurtosis[i] - 1.0) / (4.0 * ess[n]))
        z = (s[n] - std[i]) / se_std
        assert abs(z) < N_SE_STD, (
            f"{n}: std {s[n]:.4f} vs {std[i]:.4f} is {z:.1f} SE off{describe(r)}"
        )


def check_log_z(r: ss.Result, log_z: float):
    err = r.log_z - log_z
    tol = N_SE_LOGZ * r.log_z_err + LOGZ_FLOOR
    assert abs(err) < tol, (
        f"log Z {r.log_z:.4f} +- {r.log_z_err:.4f} vs analytic {log_z:.4f}: off by {err:.4f} "
        f"(tolerance {tol:.4f}){describe(r)}"
    )


# ---------------------------------------------------------------------- targets
def correlated_gaussian(d: int, seed: int = 0):
    """A Gaussian with a random rotation, scales 0.5..2 and a nonzero mean.

    Returns the target (unnormalised log-density ``-r^T P r / 2``), mean, covariance and the
    analytic ``log Z = log integral exp(logp) = (1/2) log det(2 pi Sigma)``.
    """
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    cov = (q * np.geomspace(0.25, 4.0, d)) @ q.T
    mean = rng.normal(size=d)
    prec, mu = _f(np.linalg.inv(cov)), _f(mean)

    def logp(x):
        r = x - mu
        return -0.5 * r @ prec @ r

    target = ss.Target.from_log_density(logp, init=jnp.zeros(d))
    log_z = 0.5 * np.linalg.slogdet(2 * np.pi * cov)[1]
    return target, mean, cov, log_z


def funnel(d: int = 3):
    """Neal's funnel: ``v ~ N(0, 3)``, ``x_i | v ~ N(0, exp(v / 2))``; normalised (log Z = 0)."""

    def logp(p):
        v, x = p["v"], p["x"]
        lv = -0.5 * (v / 3.0) ** 2 - math.log(3.0 * math.sqrt(2 * math.pi))
        lx = -0.5 * jnp.sum(x**2) * jnp.exp(-v) - (d - 1) * (0.5 * v + 0.5 * math.log(2 * math.pi))
        return lv + lx

    return ss.Target.from_log_density(logp, init={"v": _f(0.0), "x": jnp.zeros(d - 1)})


# ---------------------------------------------------------------------- correlated Gaussians
@pytest.mark.parametrize("sampler", [VI, MCMC, NUTS], ids=["FlowVI", "FlowMCMC", "NUTS"])
def test_gaussian_2d(sampler):
    target, mean, cov, log_z = correlated_gaussian(2)
    r = run(sampler, target)
    check_moments(r, mean, np.sqrt(np.diag(cov)))
    check_log_z(r, log_z)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", [VI, MCMC], ids=["FlowVI", "FlowMCMC"])
def test_gaussian_20d(sampler):
    target, mean, cov, log_z = correlated_gaussian(20)
    r = run(sampler, target)
    check_moments(r, mean, np.sqrt(np.diag(cov)))
    check_log_z(r, log_z)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", [VI, MCMC], ids=["FlowVI", "FlowMCMC"])
def test_mcse_is_calibrated_across_seeds(sampler):
    """Across 3 seeds, every mean is within N_SE_MEAN MCSE of the truth, and the pooled squared
    z-scores follow chi^2 with 6 degrees of freedom (two-sided p > 1e-3): an MCSE that is too
    small fails the upper tail, one that is too large (a vacuous tolerance) the lower."""
    target, mean, _, _ = correlated_gaussian(2)
    zs = []
    for seed in (1, 2, 3):
        r = run(sampler, target, seed)
        m, mcse = r.mean(), r.mcse()
        zs += [(m[n] - mean[i]) / mcse[n] for i, n in enumerate(r.names)]
    zs = np.asarray(zs)
    assert np.all(np.abs(zs) < N_SE_MEAN), zs
    p = scipy.stats.chi2.sf(np.sum(zs**2), df=zs.size)
    assert 1e-3 < p < 1 - 1e-3, (zs, p)


# ---------------------------------------------------------------------- Neal's funnel
FUNNEL_SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def funnel_mcmc_runs():
    """Flow MCMC on the 3-d funnel with three seeds (shared by the two tests below)."""
    target = funnel(3)
    return [run(MCMC, target, seed) for seed in FUNNEL_SEEDS]


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="FlowMCMC under-samples the funnel's neck: v mean +0.14..+0.44 and std 2.35..2.55 "
    "(truth 0 and 3) over seeds 0-3, also with default settings (seed 2: mean 0.32, std 2.56, "
    "9 SE low); R-hat(v) 1.02-1.09 is the only sign (see test_funnel_flow_mcmc_rhat_flags_bias)",
)
def test_funnel_flow_mcmc(funnel_mcmc_runs):
    """The marginal of ``v`` (``N(0, 3)``), pooled over independent runs: the pooled mean is
    the runs' average with ``se = sqrt(sum mcse^2) / k``, and likewise for the std."""
    rs = funnel_mcmc_runs
    k = len(rs)
    mean = sum(r.mean()["v"] for r in rs) / k
    mcse = math.sqrt(sum(r.mcse()["v"] ** 2 for r in rs)) / k
    std = sum(r.std()["v"] for r in rs) / k
    se_std = math.sqrt(sum(3.0**2 * 2.0 / (4.0 * r.ess()["v"]) for r in rs)) / k
    summary = "".join(describe(r) for r in rs)
    assert abs(mean) < N_SE_MEAN * mcse, f"pooled v mean {mean:.3f} +- {mcse:.3f}{summary}"
    assert abs(std - 3.0) < N_SE_STD * se_std, f"pooled v std {std:.3f} +- {se_std:.3f}{summary}"


@pytest.mark.slow
def test_funnel_flow_mcmc_rhat_flags_bias(funnel_mcmc_runs):
    """Each run either gets the marginal of ``v`` right or its split R-hat exceeds 1.01 (the
    threshold of Vehtari et al. 2021): a wrong answer never comes with a converged R-hat."""
    for r in funnel_mcmc_runs:
        if r.diagnostics["rhat"]["v"] <= 1.01:
            check_moments(r, [0.0], [3.0], names=["v"])


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="FlowVI misses part of the funnel's mass yet reports k-hat 0.61 with no warning: v "
    "mean -0.32 (7.5 MCSE off), std 2.56 (truth 3), log Z -0.064 +- 0.015 (truth 0); defaults "
    "(20000 draws, seed 0) likewise: k-hat 0.63, v mean -0.25 (13 MCSE), log Z -0.043 +- 0.003",
)
def test_funnel_flow_vi_reports_khat_honestly():
    """Flow VI either reports success (k-hat below its threshold, no warning) and then has the
    right marginal of ``v`` and log Z, or it warns with the k-hat it measured."""
    r = run(VI, funnel(3))
    khat = r.diagnostics["khat"]
    assert np.isfinite(khat)
    if khat > VI.khat_threshold:
        assert f"k-hat {khat:.2f}" in r.diagnostics.get("warning", ""), describe(r)
    else:
        assert "warning" not in r.diagnostics, describe(r)
        check_moments(r, [0.0], [3.0], names=["v"])
        check_log_z(r, 0.0)


# ---------------------------------------------------------------------- banana
BANANA_B = 1.0


def banana():
    """``x1 ~ N(0, 1)``, ``x2 | x1 ~ N(b (x1^2 - 1), 1)``: normalised, so log Z = 0.

    Marginals: ``E x2 = 0``, ``Var x2 = 2 b^2 + 1``, and ``E (x2)^4 = 60 b^4 + 12 b^2 + 3``
    (the central moments of ``x1^2 - 1`` are those of chi^2_1: 2 and 60).
    """

    def logp(x):
        r = x[1] - BANANA_B * (x[0] ** 2 - 1.0)
        return -0.5 * (x[0] ** 2 + r**2) - math.log(2 * math.pi)

    return ss.Target.from_log_density(logp, init=jnp.zeros(2))


@pytest.mark.slow
@pytest.mark.parametrize("sampler", [VI, MCMC], ids=["FlowVI", "FlowMCMC"])
def test_banana(sampler):
    b2 = BANANA_B**2
    var2 = 2 * b2 + 1
    r = run(sampler, banana())
    check_moments(
        r, [0.0, 0.0], [1.0, math.sqrt(var2)], kurtosis=[3.0, (60 * b2**2 + 12 * b2 + 3) / var2**2]
    )
    check_log_z(r, 0.0)


# ---------------------------------------------------------------------- two-mode mixture
MIX_W = 0.7  # weight of the mode at +MIX_C (the other, 0.3, at -MIX_C)
MIX_C = np.array([4.0, 4.0])


def mixture():
    """``0.3 N(-c, I) + 0.7 N(c, I)`` in 2-d, c = (4, 4): normalised (log Z = 0); the modes are
    11 standard deviations apart, so a local sampler cannot move between them."""
    c = _f(MIX_C)

    def logp(x):
        lp_minus = -0.5 * jnp.sum((x + c) ** 2) + math.log(1 - MIX_W)
        lp_plus = -0.5 * jnp.sum((x - c) ** 2) + math.log(MIX_W)
        return jnp.logaddexp(lp_minus, lp_plus) - math.log(2 * math.pi)

    return ss.Target.from_log_density(logp, init=jnp.zeros(2))


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="FlowVI collapses onto the 0.3 mode (weight of the 0.7 mode 0.000, log Z = log 0.3) "
    "and reports k-hat 0.23 with no warning; defaults do the same for seeds 1 and 2 (k-hat 0.45, "
    "0.44) and recover 0.70 for seed 0",
)
def test_mixture_weight_flow_vi():
    """Importance weights correct the flow's mode masses when the flow covers both modes."""
    r = run(VI, mixture())
    w = r.weights()
    plus = r.samples.reshape(-1, 2) @ MIX_C > 0
    frac = float(w @ plus)
    se = math.sqrt(frac * (1 - frac) / r.diagnostics["ess_is"])
    assert abs(frac - MIX_W) < N_SE_MEAN * se, f"weight {frac:.3f} +- {se:.3f}{describe(r)}"
    # The run must be precise enough that the check means something (0.7 vs 0.5 or 0.65).
    assert se < 0.0125, describe(r)
    check_log_z(r, 0.0)


@pytest.mark.slow
def test_mixture_weight_flow_mcmc():
    """Flow proposals move chains between the modes, so the chains' mode occupancy converges."""
    import arviz

    r = run(MCMC, mixture())
    plus = (r.samples @ MIX_C > 0).astype(float)  # [chain, draw]
    frac = float(plus.mean())
    # ESS of the indicator from the chains (classic autocorrelation ESS of a mean): chains
    # that never switch mode make it small, so the precision check below fails.
    ess = float(arviz.ess(plus, method="mean"))
    se = math.sqrt(frac * (1 - frac) / ess)
    assert abs(frac - MIX_W) < N_SE_MEAN * se, f"weight {frac:.3f} +- {se:.3f}{describe(r)}"
    assert se < 0.0125, f"ESS of the mode indicator {ess:.0f}{describe(r)}"
    check_log_z(r, 0.0)


# ---------------------------------------------------------------------- 1-parameter model, prior
def conjugate_model(n: int = 10, prior_sd: float = 3.0, seed: int = 1):
    """``mu ~ N(0, prior_sd)``, ``y_i ~ N(mu, 1)``: Gaussian posterior and, as the reference
    evidence, ``y ~ N(0, I + prior_sd^2 11^T)`` evaluated by scipy."""
    y = np.random.default_rng(seed).normal(1.3, 1.0, n)
    yj = _f(y)

    def loglik(p):
        return jnp.sum(-0.5 * (yj - p["mu"]) ** 2) - 0.5 * n * math.log(2 * math.pi)

    target = ss.Target(loglik, prior={"mu": dist.Normal(0.0, prior_sd)})
    prec = prior_sd**-2 + n
    log_z = scipy.stats.multivariate_normal(np.zeros(n), np.eye(n) + prior_sd**2).logpdf(y)
    return target, y.sum() / prec, prec**-0.5, float(log_z)


@pytest.mark.parametrize("sampler", [VI, MCMC], ids=["FlowVI-importance", "FlowMCMC-harmonic"])
def test_one_parameter_evidence(sampler):
    """Importance (flow VI) and learned harmonic mean (flow MCMC) evidence in one dimension."""
    target, mean, sd, log_z = conjugate_model()
    r = run(sampler, target)
    check_moments(r, [mean], [sd])
    check_log_z(r, log_z)


# ---------------------------------------------------------------------- SBC
@pytest.mark.slow
@pytest.mark.nightly  # ~25 min on 2 cores: kept out of CI's slow run
def test_simulation_based_calibration_flow_vi():
    """SBC (Talts et al. 2018) on ``mu ~ N(0, 1)``, ``y_i ~ N(mu, 1)``, 5 points: the rank of the
    true ``mu`` among L posterior draws is uniform on {0..L} when the posteriors are right.

    Ranks are made continuous with uniform jitter and tested with KS, and binned into 10 bins
    for a chi^2 test; p > 1e-3 for both. Lenient, for gross miscalibration only: simulating the
    ranks of analytic posteriors (400 repeats of 50 datasets) this rejects a correct posterior
    0.5% of the time, one shifted by one posterior sd always, one 2x too narrow 77% and 2x too
    wide 68% of the time, one shifted by half an sd 41%.

    Each dataset is a new target, so each run recompiles (~8 s); the flow is one elementwise
    spline layer, enough for this 1-d Gaussian posterior."""
    n_data, n_sets, n_ranks = 5, 50, 99
    vi = ss.FlowVI(
        steps=200,
        chunk=200,
        n_draws=1000,
        draw_batch=1000,
        max_refine=0,
        flow=ss.FlowConfig(layers=1, knots=4, width=8),
    )
    rng = np.random.default_rng(7)
    ranks = []
    for i in range(n_sets):
        mu = rng.normal()
        y = _f(rng.normal(mu, 1.0, n_data))

        def loglik(p, y=y):
            return jnp.sum(-0.5 * (y - p["mu"]) ** 2)

        r = run(vi, ss.Target(loglik, prior={"mu": dist.Normal(0.0, 1.0)}), seed=i)
        draws = r.resample(jax.random.key(10_000 + i), n_ranks)[:, 0]
        ranks.append(int(np.sum(draws < mu)))
        # 50 targets compile 50 programs: drop them as we go (the process's memory grew until
        # LLVM aborted a compile on a machine shared with a benchmark)
        jax.clear_caches()
    ranks = np.asarray(ranks)
    u = (ranks + rng.uniform(size=n_sets)) / (n_ranks + 1)
    p_ks = scipy.stats.kstest(u, "uniform").pvalue
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    p_chi2 = scipy.stats.chisquare(counts).pvalue
    assert p_ks > 1e-3 and p_chi2 > 1e-3, (ranks.tolist(), p_ks, p_chi2)


@pytest.mark.slow
def test_mixture_flow_vi_never_silently_wrong():
    """With the defensive reference mixture in the importance proposal, a dropped mode can no
    longer hide: either the weights recover the mode masses, or k-hat is above the threshold and
    the result carries a warning."""
    r = run(VI, mixture())
    w = r.weights()
    frac = float(w @ (r.samples.reshape(-1, 2) @ MIX_C > 0))
    se = math.sqrt(frac * (1 - frac) / r.diagnostics["ess_is"])
    correct = abs(frac - MIX_W) < N_SE_MEAN * se and se < 0.05
    if not correct:
        assert r.diagnostics["khat"] > VI.khat_threshold, describe(r)
        assert "warning" in r.diagnostics, describe(r)
