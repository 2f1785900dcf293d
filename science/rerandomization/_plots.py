"""Plots: the randomization distribution, p(tau) with its interval, a balance ("love") plot and the
pool's balance distribution against the chi^2_d law.

Each function draws on ``ax`` (``axes``) if given, else on a new figure made with matplotlib's
object API (`jaxaccel.runtime.figure`: no pyplot state, no backend change), and returns the axes;
``ax.figure`` is the figure (save it with `jaxaccel.runtime.save_figure` or ``savefig``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxaccel import runtime

from ._design import BalanceRow, DesignRow
from ._inference import Interval, TestResult
from ._pool import Pool

__all__ = [
    "plot_randomization",
    "plot_interval",
    "plot_balance",
    "plot_balance_distribution",
    "plot_design",
]


def _axes(ax, size=(5.5, 3.6)):
    if ax is None:
        _, ax = runtime.figure(figsize=size, layout="constrained")
    return ax


def plot_randomization(result: TestResult, ax=None, *, label="difference in means"):
    """Histogram of the statistic over the pool under the null, with the observed value."""
    ax = _axes(ax)
    ax.hist(result.distribution, bins=80, color="0.65", density=True, label="under the sharp null")
    ax.axvline(result.statistic, color="C3", lw=2, label=f"observed (p = {result.p_value:.3g})")
    if result.alternative == "two-sided" and np.isfinite(result.null_effect):
        mirror = 2 * result.null_effect - result.statistic
        ax.axvline(mirror, color="C3", lw=1, ls="--")
    kind = "exact (enumerated)" if result.exact else "Monte-Carlo"
    ax.set(
        xlabel=label,
        ylabel="density",
        title=f"randomization distribution, {kind}, K = {result.n_pool}",
    )
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_interval(interval: Interval, ax=None, *, alpha=None):
    """p(tau) of the sharp null tau against tau, with the interval {p > alpha}."""
    ax = _axes(ax)
    alpha = 1 - interval.level if alpha is None else alpha
    ax.step(interval.taus, interval.p_values, where="mid", color="C0")
    ax.axhline(alpha, color="0.4", ls=":", lw=1)
    ax.axvspan(
        interval.low,
        interval.high,
        color="C0",
        alpha=0.12,
        label=f"{100 * interval.level:.0f}% interval [{interval.low:.4g}, {interval.high:.4g}]",
    )
    ax.axvline(interval.estimate, color="C3", lw=1, label=f"estimate {interval.estimate:.4g}")
    ax.set(
        xlabel="constant additive effect tau",
        ylabel="p-value of H0: tau",
        ylim=(0, 1.02),
        title="test inversion",
    )
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_balance(rows: Sequence[BalanceRow], ax=None):
    """Observed standardised mean differences per covariate, with the pool's +-2 sd band and the
    complete-randomization band (+-2)."""
    ax = _axes(ax, (5.5, 0.35 * len(rows) + 1.2))
    y = np.arange(len(rows))[::-1]
    sd = np.array([r.pool_sd for r in rows])
    ax.barh(
        y, 4 * np.ones(len(rows)), left=-2, height=0.7, color="0.9", label="complete rand. +-2 sd"
    )
    ax.barh(y, 4 * sd, left=-2 * sd, height=0.7, color="C0", alpha=0.35, label="pool +-2 sd")
    obs = [r.observed_smd for r in rows]
    if all(o is not None for o in obs):
        ax.plot(obs, y, "o", color="C3", label="observed")
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_yticks(y, [r.name for r in rows])
    ax.set(xlabel="mean difference / its complete-randomization sd", title="covariate balance")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


def plot_balance_distribution(pool: Pool, dim: int | None = None, ax=None, *, observed=None):
    """Histogram of the pool's balance values, with the chi^2_d density (Mahalanobis) scaled to
    the acceptance region and the observed assignment's balance."""
    from scipy import stats

    ax = _axes(ax)
    ax.hist(pool.balance, bins=80, density=True, color="0.65", label=f"pool (K = {pool.size})")
    if dim is not None and pool.balance_name == "mahalanobis":
        hi = float(np.max(pool.balance))
        x = np.linspace(0, hi, 400)
        mass = stats.chi2.cdf(min(pool.threshold, hi), dim)
        ax.plot(
            x,
            stats.chi2.pdf(x, dim) / max(mass, 1e-300),
            color="C0",
            label=f"chi^2_{dim} (truncated at the threshold)",
        )
    if observed is not None:
        ax.axvline(observed, color="C3", lw=2, label=f"observed {observed:.3g}")
    if np.isfinite(pool.threshold):
        ax.axvline(
            pool.threshold, color="0.3", ls="--", lw=1, label=f"threshold {pool.threshold:.3g}"
        )
    ax.set(xlabel=f"balance ({pool.balance_name})", ylabel="density")
    ax.legend(frameon=False, fontsize=8)
    return ax


def plot_design(rows: Sequence[DesignRow], recommended: float | None = None, axes=None):
    """The threshold trade-off: simulated power and interval width, and Morgan-Rubin's variance
    reduction, against the acceptance probability."""
    if axes is None:
        _, axes = runtime.figure(1, 2, figsize=(9, 3.4), layout="constrained")
    p = np.array([r.accept_prob for r in rows])
    ax = axes[0]
    ax.errorbar(
        p, [r.power for r in rows], yerr=[r.power_se for r in rows], fmt="o-", label="power"
    )
    ax.plot(
        p, [r.variance_reduction for r in rows], "s--", label="variance reduction (1 - v_a) R^2"
    )
    ax.set(xscale="log", xlabel="acceptance probability p_a", ylim=(0, 1))
    ax.legend(frameon=False, fontsize=8)
    ax = axes[1]
    ax.plot(p, [r.mean_width for r in rows], "o-", color="C2")
    ax.set(xscale="log", xlabel="acceptance probability p_a", ylabel="mean interval width")
    for a in axes:
        if recommended is not None:
            a.axvline(recommended, color="C3", ls=":", lw=1)
    return axes
