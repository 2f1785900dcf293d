# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Rerandomization and exact randomization inference on real experiments
#
# In a completely randomized experiment, some assignments happen to be badly balanced on the
# covariates, and the estimate then carries that imbalance. **Rerandomization** (Morgan & Rubin
# 2012) draws assignments until one is balanced, *Mahalanobis distance below a threshold*, and
# analyses the experiment with **randomization tests over the pool of acceptable assignments**:
# the p-value of the sharp null is exact whatever the outcome's distribution, and inverting the
# test gives an interval for a constant additive effect.
#
# With `science.rerandomization` we:
#
# 1. look at the balance of the **LaLonde NSW job-training experiment** (Dehejia–Wahba sample,
#    445 men, shipped by the `causaldata` package) and test the effect of training on 1978
#    earnings with an exact randomization test and a test-inversion interval;
# 2. ask what the experiment would have gained from rerandomization: the pre-analysis choice of
#    the acceptance threshold, balance diagnostics per covariate, and how the randomization
#    distribution narrows;
# 3. enumerate a small design exactly;
# 4. analyse **Thornton's HIV-information experiment** (cash incentives to learn one's HIV
#    result, Malawi 2004).
#
# Environment: `RR_NOTEBOOK_SIZE` (`tiny` for the test suite, `small` by default) and
# `RR_NOTEBOOK_OUT` (where figures and `summary.json` go).

# %%
import json
import os
import sys
import time
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

from science import rerandomization as rr

SIZE = os.environ.get("RR_NOTEBOOK_SIZE", "small")
OUT = Path(os.environ.get("RR_NOTEBOOK_OUT", "out/rerandomization_notebook"))
OUT.mkdir(parents=True, exist_ok=True)
K = {"tiny": 4000, "small": 200_000}[SIZE]  # pool size for the Monte-Carlo pools
SIMS = {"tiny": 20, "small": 200}[SIZE]  # simulations per acceptance probability (design)
summary = {"size": SIZE}
key = jax.random.key(2012)

# %% [markdown]
# ## 1. The NSW experiment
#
# Training was assigned at random; covariates are age, years of education, Black, Hispanic,
# married, no high-school degree, and earnings in 1974 and 1975. The outcome is 1978 earnings (US$).

# %%
df, tcol, ycol, covs = rr.load_dataset("nsw")
w = df[tcol].to_numpy().astype(bool)
y = df[ycol].to_numpy(dtype=np.float64)
X = df[covs]
n, n_t, d = len(df), int(w.sum()), len(covs)
cov = rr.Covariates.build(X)
m_obs = float(cov.distance(w[None])[0])
print(f"n = {n} units, {n_t} treated, d = {d} covariates")
print(
    f"observed Mahalanobis balance M = {m_obs:.2f}: chi^2_{d} percentile {stats.chi2.cdf(m_obs, d):.3f}"
)
summary["nsw"] = {
    "n": n,
    "n_treated": n_t,
    "M_obs": m_obs,
    "M_obs_chi2_cdf": float(stats.chi2.cdf(m_obs, d)),
}

# %% [markdown]
# The observed assignment is in the worst ~3% for balance: a rerandomized design with any acceptance
# probability below ~0.97 would have rejected it. Which covariates? The pool of complete
# randomizations tells us how large each mean difference typically is.

# %%
t0 = time.perf_counter()
pool_cr = rr.draw_pool(key, X, n_t, n_accepted=K)
dt = time.perf_counter() - t0
print(
    f"{pool_cr.size} complete randomizations drawn and balance-checked in {dt:.2f} s (incl. compile)"
)
rows = rr.balance_table(pool_cr, X, treatment=w)
for r in rows:
    print(
        f"{r.name:>9}: observed SMD {r.observed_smd:+.2f} randomization sd, std. diff {r.observed_std_diff:+.3f}"
    )
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
rr.plot_balance(rows, ax=axes[0])
rr.plot_balance_distribution(pool_cr, d, ax=axes[1], observed=m_obs)
fig.savefig(OUT / "nsw_balance.png", dpi=120)

# %% [markdown]
# `nodegree` is off by more than 3 randomization standard deviations: the treated group had fewer
# men without a degree. The pool's Mahalanobis distances follow the chi^2_8 law (right), as
# Morgan & Rubin's asymptotics say.
#
# ### The randomization test and interval
#
# The sharp null "training changed nobody's earnings" fixes every unit's outcome under every
# assignment, so the p-value is the share of pool assignments whose difference in means is at
# least as extreme as the observed one. Inverting the test over constant additive effects gives the
# interval.

# %%
test = rr.randomization_test(pool_cr, y, w)
interval = rr.fiducial_interval(pool_cr, y, w, alpha=0.05)
welch = stats.ttest_ind(y[w], y[~w], equal_var=False)
print(f"difference in means: ${test.statistic:,.2f}")
print(
    f"randomization p = {test.p_value:.4f} (smallest possible {test.min_p:.1e}); Welch t-test p = {welch.pvalue:.4f}"
)
print(f"95% interval by test inversion: [{interval.low:,.0f}, {interval.high:,.0f}]")
summary["nsw"] |= {
    "estimate": test.statistic,
    "p_value": test.p_value,
    "interval": [interval.low, interval.high],
    "welch_p": float(welch.pvalue),
    "pool": pool_cr.size,
}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True)
rr.plot_randomization(test, ax=axes[0], label="difference in 1978 earnings ($)")
rr.plot_interval(interval, ax=axes[1])
fig.savefig(OUT / "nsw_test.png", dpi=120)

# %% [markdown]
# Any statistic works: a rank-sum (Wilcoxon) statistic is robust to the long right tail of
# earnings. It is recomputed over the pool for each null.


# %%
def rank_sum(yy, ww):
    """Sum of the treated units' mid-ranks (ties, e.g. the many zero earnings, share a rank)."""
    srt = jnp.sort(yy)
    lo = jnp.searchsorted(srt, yy, side="left")
    hi = jnp.searchsorted(srt, yy, side="right")
    return jnp.where(ww, 0.5 * (lo + hi - 1).astype(jnp.float32), 0.0).sum()


sub = rr.draw_pool(jax.random.fold_in(key, 1), X, n_t, n_accepted=min(K, 20_000))
rank_test = rr.randomization_test(sub, y, w, statistic=rank_sum)
mw = stats.mannwhitneyu(y[w], y[~w])
print(
    f"rank-sum randomization p = {rank_test.p_value:.4f} ({sub.size} assignments); Mann-Whitney p = {mw.pvalue:.4f}"
)
summary["nsw"]["rank_sum_p"] = rank_test.p_value

# %% [markdown]
# ## 2. Had NSW been rerandomized
#
# Before the experiment, a designer chooses the acceptance probability p_a. Smaller p_a balances
# the covariates better: each covariate mean difference's variance shrinks by Morgan & Rubin's
# v_a, and the estimator's variance by (1 - v_a) R^2, but it costs 1/p_a candidates per accepted
# assignment and shrinks the acceptable set. `choose_threshold` tabulates the trade-off and
# simulates power and interval width under an outcome model with R^2 = 0.3.

# %%
drows, recommended = rr.choose_threshold(
    jax.random.fold_in(key, 2),
    X,
    n_t,
    r2=0.3,
    n_sims=SIMS,
    pool_size=2000 if SIZE == "small" else 300,
    accept_probs=(1.0, 0.5, 0.2, 0.1, 0.05, 0.01, 0.001) if SIZE == "small" else (1.0, 0.1),
)
print(" p_a    threshold  v_a    var.red.  power        width")
for r in drows:
    print(
        f"{r.accept_prob:6.3f} {r.threshold:8.3f}  {r.v_a:.3f}  {r.variance_reduction:.3f}    "
        f"{r.power:.2f}+-{r.power_se:.2f}   {r.mean_width:.3f}"
    )
print("recommended p_a:", recommended)
design_axes = rr.plot_design(drows, recommended)
design_axes[0].figure.savefig(OUT / "design.png", dpi=120)
summary["design"] = {"recommended": recommended, "rows": [r.__dict__ for r in drows]}

# %% [markdown]
# A rerandomized pool at the recommended p_a: each covariate's randomization variance against v_a,
# and how the randomization distribution of the difference in means of 1978 earnings narrows
# (under the sharp null of no effect the outcomes are fixed, so this is the design's own spread).

# %%
p_a = recommended if recommended < 1 else 0.1
t0 = time.perf_counter()
pool_rr = rr.draw_pool(
    jax.random.fold_in(key, 3), X, n_t, accept_prob=p_a, n_accepted=min(K, 50_000)
)
dt = time.perf_counter() - t0
print(
    f"p_a = {p_a}: {pool_rr.size} acceptable of {pool_rr.n_candidates} candidates in {dt:.2f} s; "
    f"threshold {pool_rr.threshold:.3f} (chi^2_{d} quantile {rr.acceptance_threshold(p_a, d):.3f})"
)
rows_rr = rr.balance_table(pool_rr, X)
for r in rows_rr:
    print(
        f"{r.name:>9}: variance ratio {r.variance_ratio:.3f} (Morgan-Rubin v_a {r.expected_ratio:.3f})"
    )
w_rr = pool_rr.assignments(0, 1)[0]  # a rerandomized assignment; null outcomes y are fixed
spread_cr = rr.randomization_test(pool_cr, y, w).distribution.std()
spread_rr = rr.randomization_test(pool_rr, y, w_rr).distribution.std()
design_matrix = np.c_[np.ones(n), X.to_numpy()]
resid = y - design_matrix @ np.linalg.lstsq(design_matrix, y, rcond=None)[0]
r2 = 1 - resid.var() / y.var()  # R^2 of 1978 earnings on the covariates
print(
    f"sd of the difference in means under the null: complete {spread_cr:,.0f}, rerandomized {spread_rr:,.0f} "
    f"({100 * (1 - spread_rr**2 / spread_cr**2):.1f}% less variance; (1 - v_a) R^2 = "
    f"{100 * (1 - rows_rr[0].expected_ratio) * r2:.1f}% with R^2 = {r2:.3f})"
)
summary["rerandomized"] = {
    "accept_prob": p_a,
    "threshold": pool_rr.threshold,
    "variance_ratios": {r.name: r.variance_ratio for r in rows_rr},
    "v_a": rows_rr[0].expected_ratio,
    "null_sd_complete": float(spread_cr),
    "null_sd_rerandomized": float(spread_rr),
}
fig, ax = plt.subplots(figsize=(5.5, 3.6), constrained_layout=True)
bins = np.linspace(-2500, 2500, 80)
ax.hist(
    rr.randomization_test(pool_cr, y, w).distribution,
    bins=bins,
    density=True,
    alpha=0.5,
    label="complete randomization",
)
ax.hist(
    rr.randomization_test(pool_rr, y, w_rr).distribution,
    bins=bins,
    density=True,
    alpha=0.5,
    label=f"rerandomized, p_a = {p_a}",
)
ax.set(xlabel="difference in means under the null ($)", ylabel="density")
ax.legend(frameon=False)
fig.savefig(OUT / "nsw_rerandomized.png", dpi=120)

# %% [markdown]
# ## 3. Exact enumeration
#
# For small experiments, the whole acceptable set can be enumerated and the p-value is exact, not
# Monte-Carlo. Here: 10 treated and 10 control NSW men drawn at random, balanced on age,
# education and degree; all C(20, 10) = 184,756 assignments, the best-balanced 20% acceptable.

# %%
pick = np.random.default_rng(7)
idx = np.r_[
    pick.choice(np.nonzero(w)[0], 10, replace=False),
    pick.choice(np.nonzero(~w)[0], 10, replace=False),
]
X20 = X.iloc[idx][["age", "educ", "nodegree"]]
small = rr.draw_pool(jax.random.fold_in(key, 4), X20, 10, accept_prob=0.2, method="exact")
m_small = float(rr.Covariates.build(X20).distance(w[idx][None])[0])
print(
    f"{small.size} acceptable of {small.n_candidates} (threshold {small.threshold:.3f}); the observed split has M = {m_small:.2f}"
)
if m_small <= small.threshold:
    exact = rr.randomization_test(small, y[idx], w[idx])
    print(f"exact p = {exact.p_value:.4f}")
else:
    exact = rr.randomization_test(rr.draw_pool(key, X20, 10, method="exact"), y[idx], w[idx])
    print(
        f"(the observed split is not acceptable at p_a = 0.2: complete randomization) exact p = {exact.p_value:.4f}"
    )
summary["exact20"] = {"pool": small.size, "p_value": exact.p_value}

# %% [markdown]
# ## 4. Thornton's HIV-information experiment
#
# Thornton (2008) offered randomly assigned cash incentives to learn one's HIV test result in rural
# Malawi. Outcome: whether the person collected the result; treatment: any incentive; covariates:
# age, distance to the results centre, HIV status. (The original assignment was a lottery per
# person; here it is analysed as complete randomization of the analysed sample.)

# %%
dh, th, yh_col, covh = rr.load_dataset("thornton_hiv")
wh = dh[th].to_numpy().astype(bool)
yh = dh[yh_col].to_numpy(dtype=np.float64)
pool_h = rr.draw_pool(jax.random.fold_in(key, 5), dh[covh], int(wh.sum()), n_accepted=K)
test_h = rr.randomization_test(pool_h, yh, wh)
int_h = rr.fiducial_interval(pool_h, yh, wh)
print(f"n = {len(dh)}, {int(wh.sum())} offered an incentive")
print(
    f"share who learned their result: {yh[wh].mean():.3f} with incentive vs {yh[~wh].mean():.3f} without"
)
print(
    f"difference {test_h.statistic:.3f}, randomization p = {test_h.p_value:.2g} (smallest possible {test_h.min_p:.1g}), "
    f"95% interval [{int_h.low:.3f}, {int_h.high:.3f}]"
)
summary["thornton"] = {
    "n": len(dh),
    "estimate": test_h.statistic,
    "p_value": test_h.p_value,
    "interval": [int_h.low, int_h.high],
}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True)
rr.plot_randomization(test_h, ax=axes[0], label="difference in share who learned their result")
rr.plot_balance(rr.balance_table(pool_h, dh[covh], treatment=wh), ax=axes[1])
fig.savefig(OUT / "thornton.png", dpi=120)
(OUT / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
