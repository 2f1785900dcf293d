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
# # What made the nanohertz background? Model comparison on real PTA data
#
# Pulsar timing arrays see a common red process in their residuals. Supermassive black-hole binaries
# (SMBHBs) predict a power law; cosmic strings, phase transitions, domain walls or scalar-induced
# waves predict other spectral shapes. Here we compare them on real data with `science.pta`:
#
# 1. the published **free spectra** of EPTA DR2new, PPTA DR3 and IPTA DR2 (per-frequency-bin
#    densities of the residual power),
# 2. a **refit** of spectral models to those densities, with evidences from flow VI checked against
#    exact quadrature,
# 3. the **full Gaussian-process likelihood** of the EPTA DR2 timing data (25 pulsars), uncorrelated
#    (CURN) and Hellings–Downs (HD).
#
# Environment: `PTA_NOTEBOOK_SIZE` (`tiny` for the test suite, `small` by default) and
# `PTA_NOTEBOOK_OUT` (where the figures go). The data live in `../shared/data/pta`.

# %%
import json
import os
import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

jax.config.update("jax_enable_x64", True)  # the full likelihood works in float64

from science import pta, samplers as ss  # noqa: E402

SIZE = os.environ.get("PTA_NOTEBOOK_SIZE", "small")
OUT = Path(os.environ.get("PTA_NOTEBOOK_OUT", "out/pta_notebook"))
OUT.mkdir(parents=True, exist_ok=True)
STEPS = {"tiny": 200, "small": 800}[SIZE]
print(f"size {SIZE}: {STEPS} flow-VI steps per model; figures in {OUT}")

# %% [markdown]
# ## 1. The free spectra
# Each data set gives, per frequency bin $f_k = k/T$, a density over $\log_{10}\rho_k$, the
# GW-induced residual standard deviation in that bin. The lowest bins carry the signal; the
# higher ones are noise dominated.

# %%
data = {name: pta.load_free_spectrum(name) for name in pta.DATASETS}
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
for ax, (name, d) in zip(axes, data.items(), strict=True):
    n = min(d.n_freqs, 15)
    for i in range(n):
        pdf = np.exp(d.log_density[i] - d.log_density[i].max())
        keep = pdf > 1e-3
        w = 0.4 * pdf[keep]
        ax.fill_betweenx(d.grid[keep], i + 1 - w, i + 1 + w, color="C0", alpha=0.6, lw=0)
    ax.axvline(pta.DEFAULT_BINS[name] + 0.5, color="k", ls=":", lw=1)
    ax.set_title(f"{name} (T = {d.tspan_s / 3.15576e7:.1f} yr)")
    ax.set_xlabel("frequency bin k")
axes[0].set_ylabel("log10 rho [s]")
axes[0].set_ylim(-9.5, -5.5)
fig.tight_layout()
fig.savefig(OUT / "free_spectra.png", dpi=90)

# %% [markdown]
# ## 2. Spectral models
# Each model in `science.pta.spectra` is a pure JAX function $\log_{10}\Omega_{\rm GW}h^2(f;\theta)$;
# conversions to $h_c$ and to $\rho$ per bin live in `science.pta.units`.

# %%
for name, model in pta.MODELS.items():
    prior = ", ".join(f"{p.name}" for p in model.params)
    print(f"{name:11s} ({prior})")

# %% [markdown]
# ## 3. Evidence: flow VI against exact quadrature
# For a two-parameter model the evidence can be integrated on a grid. We do that for the SMBHB
# power law on EPTA DR2new and compare with flow VI + importance sampling.

# %%
epta = data["epta_dr2new"]
bins = pta.DEFAULT_BINS["epta_dr2new"]
smbhb = pta.MODELS["SMBHB"]
target, lik = pta.refit_target(epta, smbhb, bins=bins)
grid_a = np.linspace(-18, -11, 701)
grid_g = np.linspace(0, 7, 701)
batched = jax.jit(
    jax.vmap(jax.vmap(lambda a, g: lik({"log10_A": a, "gamma": g}), (None, 0)), (0, None))
)
ll = np.asarray(batched(grid_a, grid_g))
peak = ll.max()
z = np.trapezoid(np.trapezoid(np.exp(ll - peak), grid_g, axis=1), grid_a)
log_z_grid = float(np.log(z) + peak - np.log(7 * 7))
sampler = ss.FlowVI(steps=STEPS, n_draws=8000, draw_batch=4000, chunk=STEPS // 2, max_refine=1)
res = ss.sample(jax.random.key(0), target, sampler, progress=False)
print(
    f"SMBHB on EPTA DR2new: ln Z grid {log_z_grid:.3f}, flow VI {res.log_z:.3f} +- {res.log_z_err:.3f}"
)

# %% [markdown]
# ## 4. Bayes factors of a few models on three data sets

# %%
models = ["SMBHB", "SIGW-DELTA", "DW"] if SIZE == "tiny" else list(pta.MODELS)
datasets = ["epta_dr2new"] if SIZE == "tiny" else list(pta.DATASETS)
runs = []
for name in datasets:
    for m in models:
        run, _ = pta.run_model(
            jax.random.key(1),
            data[name],
            pta.MODELS[m],
            sampler,
            bins=pta.DEFAULT_BINS[name],
            out=OUT / "runs" / name / m,
        )
        runs.append(run)
rows = pta.bayes_factors(runs)
print(pta.format_table(rows))

# %% [markdown]
# The models' posterior spectra over the EPTA violins (`spectrum_curves` draws from each fit's
# saved posterior; `plot_spectra` returns the figure, shown below in Jupyter):

# %%
epta_runs = [r for r in runs if r.dataset == "epta_dr2new"]
curves = pta.spectrum_curves(epta, epta_runs, bins=bins, key=jax.random.key(4))
pta.plot_spectra(OUT / "spectra_epta_dr2new.png", epta, curves, bins=bins)

# %% [markdown]
# ## 5. The full likelihood on EPTA DR2 timing data
# White and DM noise fixed at the data's own noise analysis; per-pulsar red noise and the common
# process sampled. HD correlations against an uncorrelated common process at the same parameters:

# %%
names = sorted(p.stem for p in pta.epta_dr2_folder().glob("*.feather"))
pulsars = pta.load_epta_dr2(pulsars=names[:4] if SIZE == "tiny" else None)
curn = pta.PTALikelihood(pulsars, orf="curn")
hd = pta.PTALikelihood(pulsars, orf="hd")
p0 = curn.reference_params(gw_log10_A=-14.5, gw_gamma=13 / 3)
print(
    f"{len(pulsars)} pulsars: ln L(HD) - ln L(CURN) at the reference point = "
    f"{float(hd.log_likelihood(p0) - curn.log_likelihood(p0)):.2f}"
)
full = ss.sample(
    jax.random.key(2),
    ss.Target(curn.log_likelihood, curn.priors()),
    ss.FlowVI(steps=STEPS, n_draws=4000, draw_batch=2000, chunk=STEPS // 2, max_refine=0),
    progress=False,
)
x = full.resample(jax.random.key(3), 4000)
ia, ig = full.names.index("gw_log10_A"), full.names.index("gw_gamma")
fig, ax = plt.subplots(figsize=(4.5, 4))
ax.hist2d(x[:, ig], x[:, ia], bins=40, cmap="Blues")
ax.set_xlabel("gamma")
ax.set_ylabel("log10 A")
ax.set_title(f"CURN, {len(pulsars)} EPTA DR2 pulsars")
fig.tight_layout()
fig.savefig(OUT / "curn_posterior.png", dpi=90)
qa = np.quantile(x[:, ia], [0.05, 0.5, 0.95])
qg = np.quantile(x[:, ig], [0.05, 0.5, 0.95])
print(
    f"log10 A = {qa[1]:.2f} [{qa[0]:.2f}, {qa[2]:.2f}], gamma = {qg[1]:.2f} [{qg[0]:.2f}, {qg[2]:.2f}]"
)

# %% [markdown]
# The HD posterior differs from the CURN one only through the cross-correlations, so the CURN draws
# are a good proposal for it: reweighting them by ln L_HD - ln L_CURN gives the HD evidence and the
# Bayes factor, with a paired error (the same draws enter both). `k-hat` says whether it worked.

# %%
draws = {n: jnp.asarray(full.samples[0, :, j]) for j, n in enumerate(full.names)}
ll_curn = jax.jit(curn.log_likelihood_batch)(draws)
ll_hd = jax.jit(jax.vmap(hd.sequential()))(draws)  # one point at a time (see `sequential`)
hd_res = ss.reweight(full, np.asarray(ll_hd - ll_curn))
d = hd_res.diagnostics
print(f"ln BF(HD / CURN) = {d['log_bf']:.2f} +- {d['log_bf_err']:.2f}  (k-hat {d['khat']:.2f})")

# %%
summary = {
    "size": SIZE,
    "smbhb_log_z_grid": log_z_grid,
    "smbhb_log_z_flow": res.log_z,
    "smbhb_log_z_err": res.log_z_err,
    "bayes_factors": rows,
    "curn_log10_A": qa.tolist(),
    "curn_gamma": qg.tolist(),
    "ln_bf_hd_vs_curn": d["log_bf"],
}
(OUT / "summary.json").write_text(json.dumps(summary, indent=1))
