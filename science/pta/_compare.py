"""Model comparison: evidences of spectral models on free spectra, Bayes factors with Monte-Carlo
errors, Hellinger distances between sampler posteriors, and the plots a reader looks at first (the
models' spectra over the free-spectrum violins).

Every evidence is flow VI + importance reweighting (`science.samplers.FlowVI`): ``ln Z`` is the log
mean importance weight, its error the delta-method standard error, k-hat the Pareto diagnostic of
the weights (below 0.7 the error is trustworthy).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxaccel import runtime

from ._freespec import FreeSpectrum, RefitLikelihood

__all__ = [
    "flow_vi",
    "posterior_draws",
    "spectrum_curves",
    "hellinger_vs_nuts",
    "free_spectrum_vs_shipped",
    "ModelRun",
    "refit_target",
    "run_model",
    "bayes_factors",
    "hellinger",
    "plot_spectra",
    "format_table",
]

PLUS_PREFIX = "smbhb_"


def _prefixed(key):
    if isinstance(key, tuple):
        return tuple(PLUS_PREFIX + k for k in key)
    return PLUS_PREFIX + key


def refit_target(data: FreeSpectrum, model, *, bins=None, plus=None):
    """The `Target` of ``model`` (plus, optionally, a second model's spectrum added in power,
    its parameters prefixed ``smbhb_``) on the free spectrum ``data``, and the likelihood."""
    from science import samplers as ss

    tspan = data.tspan_s
    prior = dict(model.sampling_prior())
    if plus is None:

        def spectrum(f, p):
            return model.log10_rho_s(f, p, tspan)

    else:
        prior.update({_prefixed(k): v for k, v in plus.sampling_prior().items()})
        ln10 = math.log(10.0)

        def spectrum(f, p):
            a = model.log10_rho_s(f, {k: p[k] for k in model.names}, tspan)
            b = plus.log10_rho_s(f, {k: p[PLUS_PREFIX + k] for k in plus.names}, tspan)
            return 0.5 * jnp.logaddexp(2.0 * ln10 * a, 2.0 * ln10 * b) / ln10

    lik = RefitLikelihood(data, spectrum, bins=bins)
    return ss.Target(lik, prior), lik


@dataclasses.dataclass
class ModelRun:
    """One evidence run: ``label`` (model name, ``+SMBHB`` for combinations) on ``dataset``."""

    dataset: str
    label: str
    log_z: float
    log_z_err: float
    khat: float
    ess: float
    names: tuple[str, ...]
    quantiles: dict[str, list[float]]  # name -> [5%, 50%, 95%]
    wall_seconds: float
    folder: str | None = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _quantiles(result, key) -> dict[str, list[float]]:
    x = result.resample(key, 4000)
    return {n: np.quantile(x[:, j], [0.05, 0.5, 0.95]).tolist() for j, n in enumerate(result.names)}


def run_model(
    key,
    data: FreeSpectrum,
    model,
    sampler,
    *,
    bins=None,
    plus=None,
    out=None,
    label=None,
    checkpoint: bool = True,
):
    """Fit ``model`` (+ ``plus``) to ``data`` with ``sampler``; returns a `ModelRun` and the `Result`.

    ``key`` drives the sampler and the resampling behind the quantiles. With ``out``, the result
    is saved there (samples, result.json, corner.png) and a later call with a finished
    ``out/run.json`` returns it (and ``None`` for the `Result`) without sampling again; with
    ``checkpoint`` the sampler also checkpoints its chunks in ``out/ckpt`` (an interrupted fit
    resumes mid-way).
    """
    from science import samplers as ss

    label = label or (model.name if plus is None else f"{model.name}+{plus.name}")
    done = None if out is None else Path(out) / "run.json"
    if done is not None and done.exists():
        info = json.loads(done.read_text())
        info["names"] = tuple(info["names"])
        return ModelRun(**info), None
    target, lik = refit_target(data, model, bins=bins, plus=plus)
    k_sample, k_quantiles = jax.random.split(key)
    t0 = time.perf_counter()
    result = ss.sample(
        k_sample,
        target,
        sampler,
        progress=False,
        out=None if out is None or not checkpoint else Path(out) / "ckpt",
    )
    run = ModelRun(
        dataset=data.name,
        label=label,
        log_z=float(result.log_z),
        log_z_err=float(result.log_z_err),
        khat=float(result.diagnostics["khat"]),
        ess=float(result.diagnostics["ess_is"]),
        names=tuple(result.names),
        quantiles=_quantiles(result, k_quantiles),
        wall_seconds=time.perf_counter() - t0,
        folder=None if out is None else str(out),
    )
    if out is not None:
        result.save(out, plot=True)
        runtime.write_json(done, run.to_json())
    return run, result


def bayes_factors(runs: list[ModelRun], reference: str = "SMBHB") -> list[dict]:
    """Per data set, ``ln BF`` of every model against ``reference`` with its Monte-Carlo error
    (the two evidences' errors added in quadrature)."""
    rows = []
    by_data: dict[str, dict[str, ModelRun]] = {}
    for r in runs:
        by_data.setdefault(r.dataset, {})[r.label] = r
    for dataset, models in by_data.items():
        ref = models.get(reference)
        for label, r in models.items():
            row = {
                "dataset": dataset,
                "model": label,
                "log_z": r.log_z,
                "log_z_err": r.log_z_err,
                "khat": r.khat,
                "ln_bf": None,
                "ln_bf_err": None,
            }
            if ref is not None:
                row["ln_bf"] = r.log_z - ref.log_z
                row["ln_bf_err"] = math.hypot(r.log_z_err, ref.log_z_err)
            rows.append(row)
    return rows


def format_table(rows: list[dict], reference: str = "SMBHB") -> str:
    """A Markdown table of `bayes_factors` rows: one row per model, one column per data set."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    cell = {(r["dataset"], r["model"]): r for r in rows}
    head = (
        "| model | " + " | ".join(f"{d}: ln Z | {d}: ln BF vs {reference}" for d in datasets) + " |"
    )
    lines = [head, "|" + "---|" * (1 + 2 * len(datasets))]
    for m in models:
        parts = []
        for d in datasets:
            r = cell.get((d, m))
            if r is None:
                parts += ["", ""]
                continue
            flag = "" if r["khat"] < 0.7 else f" (k-hat {r['khat']:.2f})"
            parts.append(f"{r['log_z']:.2f} ± {r['log_z_err']:.2f}{flag}")
            parts.append("" if r["ln_bf"] is None else f"{r['ln_bf']:+.2f} ± {r['ln_bf_err']:.2f}")
        lines.append(f"| {m} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def hellinger(x, y, *, weights_x=None, weights_y=None, bins: int = 40, bounds=None) -> float:
    """Hellinger distance between two 1-d sample sets (weighted histograms on common bins):
    ``H^2 = 1 - sum_i sqrt(p_i q_i)``; 0 for identical, 1 for disjoint distributions."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    lo, hi = bounds if bounds is not None else (min(x.min(), y.min()), max(x.max(), y.max()))
    edges = np.linspace(lo, hi, bins + 1)
    p, _ = np.histogram(x, edges, weights=weights_x)
    q, _ = np.histogram(y, edges, weights=weights_y)
    p = p / p.sum()
    q = q / q.sum()
    return float(math.sqrt(max(0.0, 1.0 - np.sum(np.sqrt(p * q)))))


def plot_spectra(path, data: FreeSpectrum, curves: dict[str, np.ndarray], *, bins=None, title=None):
    """The free-spectrum densities as violins (one per bin, log10 rho vertical) with each model's
    posterior-predictive log10 rho (``curves[label][draw, bin]``: median line and 90% band),
    saved to ``path`` (``None``: not saved); returns the `matplotlib.figure.Figure`."""
    idx = data.select(bins)
    f = data.freqs_hz[idx]
    fig, ax = runtime.figure(figsize=(7.5, 4.8), layout="constrained")
    logf = np.log10(f)
    width = 0.8 * (np.log10(f[1]) - np.log10(f[0])) if f.size > 1 else 0.1
    width = min(width, 0.8 * np.min(np.diff(logf))) if f.size > 1 else width
    for j, i in enumerate(idx):
        pdf = np.exp(data.log_density[i] - data.log_density[i].max())
        keep = pdf > 1e-3
        g = data.grid[keep]
        w = pdf[keep] * width / 2
        ax.fill_betweenx(g, logf[j] - w, logf[j] + w, color="0.7", lw=0)
    for label, c in curves.items():
        lo, med, hi = np.quantile(np.asarray(c), [0.05, 0.5, 0.95], axis=0)
        line = ax.plot(logf, med, lw=1.5, label=label)[0]
        ax.fill_between(logf, lo, hi, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("log10 frequency [Hz]")
    ax.set_ylabel("log10 rho [s]")
    ax.set_title(title or f"{data.name}: free spectrum (violins) and model spectra (90%)")
    ax.set_ylim(max(data.grid[0], -10.0), min(data.grid[-1], -5.0))
    ax.legend(fontsize=7, ncol=2)
    if path is not None:
        runtime.save_figure(fig, path, dpi=90)
    return fig


def flow_vi(steps: int, n_draws: int, *, max_refine: int = 1):
    """The flow-VI settings pta-compare fits with (`science.samplers.FlowVI`): ``steps`` Adam
    steps, ``n_draws`` importance draws, up to ``max_refine`` refinement stages."""
    from science import samplers as ss

    return ss.FlowVI(
        steps=steps,
        n_elbo=32,
        chunk=min(250, steps),
        n_draws=n_draws,
        draw_batch=min(1000, n_draws),  # SIGW-GAUSS needs ~3 GB per 1000 draws
        refine_steps=steps,
        max_refine=max_refine,
    )


def posterior_draws(run: ModelRun, n: int = 300, *, key: jax.Array) -> dict[str, np.ndarray]:
    """``n`` equally weighted posterior draws of a finished `ModelRun` (read from its folder)."""
    if run.folder is None:
        raise runtime.InputError(f"run: {run.label} was fitted without out=, so no draws are kept")
    with np.load(Path(run.folder) / "samples.npz") as z:
        x = z["samples"].reshape(-1, len(run.names))
        w = np.exp(z["log_weights"].reshape(-1)) if "log_weights" in z else np.ones(len(x))
    idx = np.asarray(jax.random.choice(key, len(x), (n,), p=jax.numpy.asarray(w / w.sum())))
    return {name: x[idx, j] for j, name in enumerate(run.names)}


def spectrum_curves(data, runs, *, bins, key: jax.Array) -> dict[str, np.ndarray]:
    """Posterior-predictive ``log10 rho`` per bin of each run (``{label: (draw, bin)}``), the
    curves `plot_spectra` draws over the free-spectrum violins."""
    from ._spectra import MODELS as models

    curves = {}
    for i, run in enumerate(runs):
        name, _, plus = run.label.partition("+")
        _, lik = refit_target(data, models[name], bins=bins, plus=models[plus] if plus else None)
        draws = posterior_draws(run, key=jax.random.fold_in(key, i))
        curves[run.label] = np.asarray(jax.vmap(lik.log10_rho)(jax.tree.map(np.asarray, draws)))
    return curves


def hellinger_vs_nuts(key, data, model, run, bins) -> dict[str, float]:
    """Hellinger distance per parameter between a finished flow-VI `ModelRun`'s marginals and
    NumPyro NUTS' (4 chains x 1000 draws) on the same refit target."""
    from science import samplers as ss

    k_nuts, k_flow = jax.random.split(key)
    target, _ = refit_target(data, model, bins=bins)
    nuts = ss.sample(
        k_nuts,
        target,
        ss.NUTS(n_chains=4, n_warmup=500, n_samples=1000, evidence=False),
        progress=False,
    )
    flow = posterior_draws(run, n=4000, key=k_flow)
    x = nuts.samples.reshape(-1, len(nuts.names))
    bounds = model.bounds()
    return {
        name: hellinger(flow[name], x[:, j], bounds=bounds.get(name))
        for j, name in enumerate(nuts.names)
    }


def free_spectrum_vs_shipped(res, tspan_s: float, *, key: jax.Array, path=None) -> dict:
    """A free spectrum fitted with the full likelihood against the shipped EPTA DR2new densities.

    ``res``: a `science.samplers.Result` with parameters ``gw_log10_rho_<k>`` (the HD free
    spectrum of the EPTA DR2 timing data, as pta-compare fits it) over a span of ``tspan_s``
    seconds. Compared per bin k in ``log10(rho^2 T)`` (the power per unit frequency, which does
    not depend on the span T, so spans that differ are compared correctly); ``z`` = difference of
    medians over the quadrature sum of the two 68% half-widths. ``key`` resamples ``res``; the
    figure (both spectra, medians and 68%) is saved to ``path`` if given.

    Returns:
        ``{"bins": [per-bin quantiles and z], "max_abs_z": ...}``.
    """
    from ._freespec import load_free_spectrum

    data = load_free_spectrum("epta_dr2new")
    x = res.resample(key, 8000)
    rows = []
    n = min(sum(nm.startswith("gw_log10_rho_") for nm in res.names), data.n_freqs)
    fig, ax = runtime.figure(figsize=(8, 4.5), layout="constrained")
    for k in range(n):
        ours = 2.0 * x[:, res.names.index(f"gw_log10_rho_{k}")] + math.log10(tspan_s)
        dens = np.exp(data.log_density[k] - data.log_density[k].max())
        cdf = np.cumsum(dens) / dens.sum()
        theirs_q = np.interp([0.16, 0.5, 0.84], cdf, data.grid)
        theirs = 2.0 * theirs_q + math.log10(data.tspan_s)
        q = np.quantile(ours, [0.16, 0.5, 0.84])
        half = math.hypot((q[2] - q[0]) / 2, (theirs[2] - theirs[0]) / 2)
        rows.append(
            {
                "bin": k,
                "f_ours_hz": (k + 1) / tspan_s,
                "f_shipped_hz": float(data.freqs_hz[k]),
                "ours_log10_psd_q16_50_84": q.tolist(),
                "shipped_log10_psd_q16_50_84": theirs.tolist(),
                "z": float((q[1] - theirs[1]) / half),
            }
        )
        for f, qq, c, dx in (
            ((k + 1) / tspan_s, q, "C0", 0.985),
            (data.freqs_hz[k], theirs, "C3", 1.015),
        ):
            ax.errorbar(
                f * dx, qq[1], yerr=[[qq[1] - qq[0]], [qq[2] - qq[1]]], fmt="o", color=c, ms=4
            )
    ax.set_xscale("log")
    ax.set_xlabel("frequency [Hz]")
    ax.set_ylabel("log10(rho^2 T) [s^3]")
    ax.plot([], [], "o", color="C0", label="ours: EPTA DR2 timing data, HD (median, 68%)")
    ax.plot([], [], "o", color="C3", label="shipped EPTA DR2new HD free spectrum")
    ax.legend(fontsize=8)
    ax.set_title("HD free spectrum: recovered vs published densities")
    if path is not None:
        runtime.save_figure(fig, path, dpi=90)
    return {"bins": rows, "max_abs_z": max(abs(r["z"]) for r in rows)}
