"""Design: balance diagnostics per covariate and the pre-analysis choice of the acceptance threshold.

Theory used (Morgan & Rubin 2012, Ann. Statist. 40:1263): with Mahalanobis acceptance ``M <= a``
and normal covariate means, each covariate's mean difference has its variance multiplied by
``v_a = P(chi2_{d+2} <= a) / P(chi2_d <= a)``, and the difference-in-means estimator's variance
shrinks by ``(1 - v_a) R^2`` where R^2 is the outcome's squared multiple correlation with the
covariates. Smaller acceptance probabilities buy little once ``v_a`` is small, cost ``1 / p_a``
candidates per accepted assignment, and, in small experiments, leave an acceptable set so small
that randomization p-values cannot get below ``1 / (p_a C(n, n_t))``. `choose_threshold` tabulates
that trade-off and simulates the power and interval width of the randomization test under an
assumed outcome model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import numpy as np

from ._balance import Covariates, RerandomizationError, check_units
from ._inference import DiffMeans, invert_test
from ._pool import Pool, acceptance_threshold, draw_pool

__all__ = ["variance_reduction", "balance_table", "BalanceRow", "choose_threshold", "DesignRow"]


def variance_reduction(accept_prob, dim: int):
    """Morgan & Rubin's ``v_a``: the factor on each covariate mean difference's variance when
    accepting the ``accept_prob`` fraction with the smallest Mahalanobis distance (normal theory)."""
    from scipy import stats

    p = np.asarray(accept_prob, dtype=np.float64)
    a = stats.chi2.ppf(p, dim)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = np.where(p >= 1, 1.0, stats.chi2.cdf(a, dim + 2) / p)
    return v


@dataclasses.dataclass(frozen=True)
class BalanceRow:
    """Balance of one covariate.

    Attributes:
        name: covariate.
        observed_smd: the observed assignment's mean difference in units of its
            complete-randomization sd, ``sqrt(S_jj (1/n_t + 1/n_c))`` (None without treatment).
        observed_std_diff: the usual standardised difference (x_t - x_c) / sqrt((s_t^2 + s_c^2)/2).
        pool_sd: sd of that standardised mean difference over the pool (1 under complete
            randomization).
        variance_ratio: pool variance / complete-randomization variance (= pool_sd^2).
        expected_ratio: Morgan-Rubin ``v_a`` for the pool's acceptance rate (Mahalanobis only).
    """

    name: str
    observed_smd: float | None
    observed_std_diff: float | None
    pool_sd: float
    variance_ratio: float
    expected_ratio: float | None


def balance_table(
    pool: Pool, covariates, *, treatment=None, names: Sequence[str] | None = None, max_rows=100_000
) -> list[BalanceRow]:
    """Per-covariate balance of ``pool`` (and of the observed ``treatment``, if given)."""
    cov = Covariates.build(covariates, names=names, balance="standardized")
    if cov.n_units != pool.n_units:
        raise RerandomizationError(
            f"covariates: expected {pool.n_units} rows (the pool's units), got {cov.n_units}"
        )
    n, nt = pool.n_units, pool.n_treated
    xc = cov.values - cov.values.mean(0)
    sd_cr = np.sqrt(np.diag(xc.T @ xc) / (n - 1) * n / (nt * (n - nt)))
    w = pool.assignments(0, max_rows).astype(np.float64)
    smd = (w @ xc) * (n / (nt * (n - nt))) / sd_cr
    pool_sd = smd.std(axis=0, ddof=1) if smd.shape[0] > 1 else np.full(cov.dim, np.nan)
    expected = None
    if pool.balance_name == "mahalanobis":
        expected = float(variance_reduction(min(1.0, pool.acceptance_rate), cov.dim))
    obs_smd = obs_sd = [None] * cov.dim
    if treatment is not None:
        t = np.asarray(treatment).reshape(-1).astype(bool)
        if t.size != n:
            raise RerandomizationError(f"treatment: expected {n} values, got {t.size}")
        x = cov.values
        diff = x[t].mean(0) - x[~t].mean(0)
        obs_smd = list(diff / sd_cr)
        pooled = np.sqrt(0.5 * (x[t].var(0, ddof=1) + x[~t].var(0, ddof=1)))
        obs_sd = list(diff / pooled)
    return [
        BalanceRow(
            name=cov.names[j],
            observed_smd=None if obs_smd[j] is None else float(obs_smd[j]),
            observed_std_diff=None if obs_sd[j] is None else float(obs_sd[j]),
            pool_sd=float(pool_sd[j]),
            variance_ratio=float(pool_sd[j] ** 2),
            expected_ratio=expected,
        )
        for j in range(cov.dim)
    ]


@dataclasses.dataclass(frozen=True)
class DesignRow:
    """One acceptance probability of `choose_threshold`.

    Attributes:
        accept_prob, threshold: acceptance probability and its Mahalanobis threshold (empirical
            quantile of the candidates drawn for the simulation; ``chi2_threshold``: chi^2_d's).
        v_a: Morgan-Rubin covariate variance factor; ``variance_reduction``: (1 - v_a) r2, the
            expected fractional variance reduction of the difference in means.
        log10_acceptable: log10 of the expected acceptable-set size p_a C(n, n_t).
        min_p: smallest attainable p-value over the whole acceptable set.
        candidates_per_accept: 1 / p_a.
        power, power_se: simulated rejection rate of H0: tau = 0 at ``alpha``, and its MC error.
        mean_width, width_se: simulated mean width of the (1 - alpha) interval and its MC error.
        estimator_sd: simulated sd of the difference in means.
    """

    accept_prob: float
    threshold: float
    chi2_threshold: float
    v_a: float
    variance_reduction: float
    log10_acceptable: float
    min_p: float
    candidates_per_accept: float
    power: float
    power_se: float
    mean_width: float
    width_se: float
    estimator_sd: float


def choose_threshold(
    key,
    covariates,
    n_treated: int,
    *,
    accept_probs: Sequence[float] = (1.0, 0.5, 0.2, 0.1, 0.05, 0.01, 0.001),
    r2: float = 0.5,
    effect: float | None = None,
    alpha: float = 0.05,
    n_sims: int = 200,
    pool_size: int = 2000,
    names=None,
    ridge: float = 0.0,
    progress: bool = False,
) -> tuple[list[DesignRow], float]:
    """Pre-analysis choice of the acceptance probability: returns (rows, recommended p_a).

    The outcome model for the simulation: ``y = X beta + e``, beta along the first principal axis
    of the standardised covariates scaled so that ``R^2 = r2``, ``e ~ N(0, 1 - r2)``, and a
    constant effect ``effect`` (default: 2.5 complete-randomization standard errors of the
    difference in means times sqrt(1 - r2), i.e. detectable but not trivial once balanced).
    For each p_a a pool of ``pool_size`` acceptable assignments is drawn; each simulation takes
    one of them as the observed assignment, tests H0: tau = 0 and inverts the test for the
    interval width.

    Recommendation: among the p_a whose acceptable set can still give p-values <= alpha / 10,
    the largest (cheapest, closest to complete randomization) whose simulated mean interval width
    is within two Monte-Carlo standard errors of the narrowest (width, not power, is the criterion:
    it moves smoothly with p_a where simulated power is noisy). The simulations share their noise
    draws across p_a (common random numbers).
    """
    cov = Covariates.build(covariates, names=names, ridge=ridge)
    n = cov.n_units
    n_treated = check_units(n, n_treated)
    if not 0 <= r2 < 1:
        raise RerandomizationError(f"r2: expected 0 <= r2 < 1, got {r2}")
    probs = sorted({float(p) for p in accept_probs}, reverse=True)
    if not probs or not all(0 < p <= 1 for p in probs):
        raise RerandomizationError(f"accept_probs: expected values in (0, 1], got {accept_probs}")
    nc = n - n_treated
    se_cr = math.sqrt(n / (n_treated * nc))  # sd of the difference in means for unit-variance y
    tau = 2.5 * se_cr * math.sqrt(1 - r2) if effect is None else float(effect)
    z = cov.values - cov.values.mean(0)
    z = z / z.std(0, ddof=1)
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    signal = z @ vt[0]
    signal = signal / signal.std(ddof=1) * math.sqrt(r2)
    log10_total = (
        math.lgamma(n + 1) - math.lgamma(n_treated + 1) - math.lgamma(nc + 1)
    ) / math.log(10)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    noise = rng.normal(0.0, math.sqrt(1 - r2), (n_sims, n))  # common to every p_a
    rows = []
    for i, p in enumerate(probs):
        pool = draw_pool(
            jax.random.fold_in(key, i),
            cov.values,
            n_treated,
            accept_prob=p if p < 1 else None,
            n_accepted=pool_size,
            method="monte_carlo",
            ridge=ridge,
            calibration=max(20_000, math.ceil(200 / p)),
            max_candidates=math.ceil(5 * pool_size / p),
            progress=progress,
        )
        pvals, widths, ests = [], [], []
        for s in range(n_sims):
            w = pool.assignments(s % pool.size, s % pool.size + 1)[0]
            y = signal + noise[s] + tau * w
            st = DiffMeans(pool, y, w)
            pvals.append(float(st.p(0.0)[0]))
            ests.append(st.estimate)
            lo, hi = invert_test(st, alpha, float(np.std(y)), 1e-4 * float(np.std(y)))
            widths.append(hi - lo)
        power = float(np.mean(np.asarray(pvals) <= alpha))
        v_a = float(variance_reduction(p, cov.dim))
        log10_acc = log10_total + math.log10(p)
        rows.append(
            DesignRow(
                accept_prob=p,
                threshold=pool.threshold,
                chi2_threshold=acceptance_threshold(p, cov.dim) if p < 1 else math.inf,
                v_a=v_a,
                variance_reduction=(1 - v_a) * r2,
                log10_acceptable=log10_acc,
                min_p=10.0 ** (-log10_acc),
                candidates_per_accept=1 / p,
                power=power,
                power_se=math.sqrt(max(power * (1 - power), 1 / n_sims) / n_sims),
                mean_width=float(np.mean(widths)),
                width_se=float(np.std(widths, ddof=1) / math.sqrt(n_sims)),
                estimator_sd=float(np.std(ests, ddof=1)),
            )
        )
    ok = [r for r in rows if r.min_p <= alpha / 10] or rows
    best = min(ok, key=lambda r: r.mean_width)
    recommended = max(
        r.accept_prob
        for r in ok
        if r.mean_width <= best.mean_width + 2 * math.hypot(r.width_se, best.width_se)
    )
    return rows, recommended
