"""``jaxaccel pta-compare``: gravitational-wave background model comparison on real PTA data.

Part 1 (refit): every spectral model of `science.pta.spectra` (NANOGrav 15-yr new-physics set) is
fitted with flow VI to the shipped free spectra of EPTA DR2new, PPTA DR3 and IPTA DR2 on their lowest
bins; the job writes the evidences and Bayes factors against the SMBHB power law
(``bayes_factors.md``/``.json``), each data set's free-spectrum violins with the models' posterior
spectra (``spectra_<data>.png``) and per-model corner plots (``runs/<data>/<model>/``). At size
``full`` also, on EPTA DR2new, every new-physics model plus the SMBHB background and the Hellinger
distances between the flow's and NumPyro NUTS' marginal posteriors (by default for the
closed-form models, `HELLINGER_MODELS`; in ``summary.json``).
Part 2 (full likelihood): the EPTA DR2 timing data (25 pulsars; white noise and DM noise fixed at
the data's own noise-analysis values, 25 x 2 red-noise parameters + the common power law sampled).
CURN is fitted with flow VI; the Hellings-Downs posterior and evidence come from reweighting the
CURN draws by ln L_HD - ln L_CURN (likelihood reweighting), which gives ln BF(HD/CURN) with a paired
error (``full_likelihood.json``, ``full/<orf>/gw_corner.png``). With ``free_spectrum`` the same for
a 10-bin free spectrum, plotted next to the shipped EPTA DR2new HD free spectrum
(``free_spectrum_hd.png``).

Interrupted runs resume: finished models are read back from ``runs/``. Sizes: ``tiny`` (tests:
one data set, two models, 4 pulsars), ``small`` (EPTA DR2new, all models; a short full-likelihood
fit on all pulsars), ``full`` (all three data sets, + combinations, Hellinger distances, long fits).
Config (TOML, all optional): ``datasets``, ``models``, ``bins`` (table data set -> number of lowest
bins), ``steps``, ``n_draws``, ``combos`` and ``hellinger`` (bool or list of data sets),
``hellinger_models`` and ``combo_models`` (lists of models), ``full_likelihood`` (bool),
``pulsars`` (number or list of names), ``full_steps``, ``full_draws``, ``free_spectrum`` (bool).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from . import _compare as cmp
from ._freespec import DATASETS, DEFAULT_BINS, PTADataError, load_free_spectrum

__all__ = ["main", "run", "JobConfig", "SIZES"]

SIZES = {
    "tiny": {
        "datasets": ("epta_dr2new",),
        "models": ("SMBHB", "IGW"),
        "steps": 150,
        "n_draws": 2000,
        "combos": False,
        "hellinger": False,
        "full_likelihood": True,
        "pulsars": 4,
        "full_steps": 150,
        "full_draws": 2000,
        "free_spectrum": True,
    },
    "small": {
        "datasets": ("epta_dr2new",),
        "models": None,  # all
        "steps": 600,
        "n_draws": 8000,
        "combos": False,
        "hellinger": False,
        "full_likelihood": True,
        "pulsars": None,  # all 25
        "full_steps": 600,
        "full_draws": 8000,
        "free_spectrum": True,
    },
    "full": {
        "datasets": tuple(DATASETS),
        "models": None,
        "steps": 800,
        "n_draws": 20000,
        "combos": ("epta_dr2new",),
        "hellinger": ("epta_dr2new",),
        "full_likelihood": True,
        "pulsars": None,
        "full_steps": 2500,
        "full_draws": 20000,
        "free_spectrum": True,
    },
}
KEYS = set(SIZES["tiny"]) | {"bins", "hellinger_models", "combo_models"}
# Hellinger distances need a NUTS run per model: minutes for the closed-form spectra, tens of
# minutes for the numerically integrated ones (SIGW-GAUSS/BOX, strings) on 2 CPU cores, so by
# default only these (config ``hellinger_models`` lists others).
HELLINGER_MODELS = (
    "SMBHB", "SMBHB-HOLO", "SMBHB-TURN", "IGW", "SIGW-DELTA", "PT-BUBBLE", "PT-SOUND", "DW",
)  # fmt: skip


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobConfig:
    datasets: tuple[str, ...]
    models: tuple[str, ...]
    bins: dict[str, int]
    steps: int
    n_draws: int
    combos: tuple[str, ...]
    hellinger: tuple[str, ...]
    hellinger_models: tuple[str, ...]
    combo_models: tuple[str, ...] | None
    full_likelihood: bool
    pulsars: int | tuple[str, ...] | None
    full_steps: int
    full_draws: int
    free_spectrum: bool

    @classmethod
    def for_size(cls, size: str, overrides: dict) -> JobConfig:
        from . import _spectra

        unknown = set(overrides) - KEYS
        if unknown:
            raise SystemExit(f"--config: unknown keys {sorted(unknown)}; known {sorted(KEYS)}")
        base = dict(SIZES[size])
        base.update({k: v for k, v in overrides.items() if k != "bins"})
        datasets = tuple(base["datasets"])
        for d in datasets:
            if d not in DATASETS:
                raise SystemExit(f"--config: datasets: {d!r} is not one of {list(DATASETS)}")
        models = tuple(base["models"] or _spectra.MODELS)
        for m in models:
            if m not in _spectra.MODELS:
                raise SystemExit(f"--config: models: {m!r} is not one of {list(_spectra.MODELS)}")
        if "SMBHB" not in models:
            models = ("SMBHB", *models)  # the reference of every Bayes factor
        bins = dict(DEFAULT_BINS)
        for k, v in overrides.get("bins", {}).items():
            if k not in DATASETS:
                raise SystemExit(f"--config: bins.{k}: unknown data set; known {list(DATASETS)}")
            if not isinstance(v, int) or v < 1:
                raise SystemExit(f"--config: bins.{k}: expected a positive number of lowest bins")
            bins[k] = v
        per_dataset = {}
        for k in ("combos", "hellinger"):
            v = base[k]
            per_dataset[k] = datasets if v is True else tuple(v or ())
            for d in per_dataset[k]:
                if d not in datasets:
                    raise SystemExit(f"--config: {k}: {d!r} is not among datasets {datasets}")
        pulsars = base["pulsars"]
        if isinstance(pulsars, list):
            pulsars = tuple(pulsars)
        for k in ("steps", "n_draws", "full_steps", "full_draws"):
            if not isinstance(base[k], int) or base[k] < 1:
                raise SystemExit(f"--config: {k}: expected a positive integer, got {base[k]!r}")
        return cls(
            datasets=datasets,
            models=models,
            bins=bins,
            steps=base["steps"],
            n_draws=base["n_draws"],
            combos=per_dataset["combos"],
            hellinger=per_dataset["hellinger"],
            hellinger_models=tuple(overrides.get("hellinger_models", HELLINGER_MODELS)),
            combo_models=(
                tuple(overrides["combo_models"]) if "combo_models" in overrides else None
            ),
            full_likelihood=bool(base["full_likelihood"]),
            pulsars=pulsars,
            full_steps=base["full_steps"],
            full_draws=base["full_draws"],
            free_spectrum=bool(base["free_spectrum"]),
        )


def flow_vi(steps: int, n_draws: int, *, refine: bool = True):
    from science import samplers as ss

    return ss.FlowVI(
        steps=steps,
        n_elbo=32,
        chunk=min(250, steps),
        n_draws=n_draws,
        draw_batch=min(1000, n_draws),  # SIGW-GAUSS needs ~3 GB per 1000 draws
        refine_steps=steps,
        max_refine=1 if refine else 0,
    )


def _posterior_draws(run: cmp.ModelRun, n: int = 300) -> dict[str, np.ndarray]:
    z = np.load(Path(run.folder) / "samples.npz")
    x = z["samples"].reshape(-1, len(run.names))
    w = np.exp(z["log_weights"].reshape(-1)) if "log_weights" in z else np.ones(len(x))
    idx = np.random.default_rng(0).choice(len(x), size=n, p=w / w.sum())
    return {name: x[idx, j] for j, name in enumerate(run.names)}


def _spectrum_curves(data, runs, models, bins) -> dict[str, np.ndarray]:
    from ._compare import refit_target

    curves = {}
    for run in runs:
        name, _, plus = run.label.partition("+")
        _, lik = refit_target(data, models[name], bins=bins, plus=models[plus] if plus else None)
        draws = _posterior_draws(run)
        curves[run.label] = np.asarray(jax.vmap(lik.log10_rho)(jax.tree.map(np.asarray, draws)))
    return curves


def _hellinger_vs_nuts(key, data, model, run, bins) -> dict[str, float]:
    from science import samplers as ss

    target, _ = cmp.refit_target(data, model, bins=bins)
    nuts = ss.sample(
        key,
        target,
        ss.NUTS(n_chains=4, n_warmup=500, n_samples=1000, evidence=False),
        progress=False,
    )
    flow = _posterior_draws(run, n=4000)
    x = nuts.samples.reshape(-1, len(nuts.names))
    bounds = model.bounds()
    return {
        name: cmp.hellinger(flow[name], x[:, j], bounds=bounds.get(name))
        for j, name in enumerate(nuts.names)
    }


def run_refit(config: JobConfig, seed: int, out: Path) -> tuple[list[cmp.ModelRun], dict]:
    """Every model (and combination) on every data set; returns the runs and the Hellinger
    distances ``{data set: {model: {parameter: H}}}``."""
    from . import _spectra

    models = _spectra.MODELS
    sampler = flow_vi(config.steps, config.n_draws)
    runs: list[cmp.ModelRun] = []
    distances: dict[str, dict] = {}
    key = jax.random.key(seed)
    for dataset in config.datasets:
        data = load_free_spectrum(dataset)
        bins = config.bins[dataset]
        todo = [(m, None) for m in config.models]
        if dataset in config.combos:
            todo += [
                (m, "SMBHB")
                for m in config.models
                if not m.startswith("SMBHB")
                and (config.combo_models is None or m in config.combo_models)
            ]
        here = []
        for name, plus in todo:
            label = name if plus is None else f"{name}+{plus}"
            key, k = jax.random.split(key)
            t0 = time.perf_counter()
            run, _ = cmp.run_model(
                k,
                data,
                models[name],
                sampler,
                bins=bins,
                plus=None if plus is None else models[plus],
                out=out / "runs" / dataset / label,
                label=label,
            )
            print(
                f"  {dataset:12s} {label:22s} ln Z {run.log_z:8.2f} +- {run.log_z_err:.2f}  "
                f"k-hat {run.khat:5.2f}  ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
            here.append(run)
        runs += here
        shown = [r for r in here if "+" not in r.label]
        cmp.plot_spectra(
            out / f"spectra_{dataset}.png",
            data,
            _spectrum_curves(data, shown, models, bins),
            bins=bins,
        )
        if dataset in config.hellinger:
            for run in (r for r in shown if r.label in config.hellinger_models):
                key, k = jax.random.split(key)
                done = out / "runs" / dataset / run.label / "hellinger.json"
                if done.exists():
                    h = json.loads(done.read_text())
                else:
                    h = _hellinger_vs_nuts(k, data, models[run.label], run, bins)
                    done.write_text(json.dumps(h))
                distances.setdefault(dataset, {})[run.label] = h
                print(
                    f"  {dataset:12s} {run.label:22s} Hellinger flow vs NUTS: max {max(h.values()):.3f}"
                )
    return runs, distances


def _corner(path, x, names):
    import corner
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = corner.corner(x, labels=list(names), quantiles=[0.05, 0.5, 0.95], show_titles=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _draws(res, names) -> dict[str, jax.Array]:
    x = res.samples.reshape(-1, res.samples.shape[-1])
    return {n: jax.numpy.asarray(x[:, res.names.index(n)]) for n in names}


def _log_lik_at_draws(fn, res, names, chunk: int = 2000) -> np.ndarray:
    """``fn`` (a batched log-likelihood over a dict of arrays) at every draw of ``res``."""
    draws = _draws(res, names)
    n = next(iter(draws.values())).shape[0]
    f = jax.jit(fn)
    parts = [
        np.asarray(f({k: v[i : i + chunk] for k, v in draws.items()})) for i in range(0, n, chunk)
    ]
    return np.concatenate(parts)


def _fit_curn_then_hd(key, config, pulsars, folder: Path, gw: str, label: str) -> dict:
    """CURN by flow VI; HD by reweighting the CURN draws with ln L_HD - ln L_CURN.

    The two posteriors differ only through the cross-correlations, so the CURN flow is a good HD
    proposal (its k-hat says so), and the Bayes factor's paired error is small: the likelihood
    reweighting NANOGrav used for its 15-yr HD evidence, here with the flow's exact proposal.
    """
    from science import samplers as ss

    from . import _full

    results = {}
    curn_dir, hd_dir = folder / "curn", folder / "hd"
    lik_c = _full.PTALikelihood(pulsars, orf="curn", gw=gw)
    if (curn_dir / "result.json").exists():
        res_c = ss.Result.load(curn_dir)
    else:
        target = ss.Target(lik_c.log_likelihood, lik_c.priors())
        res_c = ss.sample(
            key, target, flow_vi(config.full_steps, config.full_draws), out=curn_dir / "ckpt"
        )
        res_c.save(curn_dir, plot=False)
    if (hd_dir / "result.json").exists():
        res_h = ss.Result.load(hd_dir)
    else:
        t0 = time.perf_counter()
        lik_h = _full.PTALikelihood(pulsars, orf="hd", gw=gw)
        names = lik_c.param_names
        ll_c = _log_lik_at_draws(lik_c.log_likelihood_batch, res_c, names)
        # HD one point at a time (batched HD graphs hang XLA's CPU backend; see `sequential`).
        ll_h = _log_lik_at_draws(jax.vmap(lik_h.sequential()), res_c, names)
        res_h = ss.reweight(res_c, ll_h - ll_c, sampler="CURN flow VI draws reweighted to HD")
        res_h = dataclasses.replace(res_h, wall_seconds=time.perf_counter() - t0)
        res_h.save(hd_dir, plot=False)
    for orf, res in (("curn", res_c), ("hd", res_h)):
        d = res.diagnostics
        results[orf] = {
            "orf": orf,
            "gw": gw,
            "method": res.sampler,
            "n_pulsars": len(pulsars),
            "n_params": len(res.names),
            "log_z": res.log_z,
            "log_z_err": res.log_z_err,
            "khat": d["khat"],
            "ess": d["ess_is"],
            "wall_seconds": res.wall_seconds,
        }
    results["ln_bf_hd_vs_curn"] = res_h.diagnostics["log_bf"]
    results["ln_bf_err"] = res_h.diagnostics["log_bf_err"]
    print(
        f"  {label}: CURN ln Z {res_c.log_z:.2f} +- {res_c.log_z_err:.2f} (k-hat "
        f"{res_c.diagnostics['khat']:.2f}); HD by reweighting: k-hat {res_h.diagnostics['khat']:.2f}, "
        f"ln BF(HD/CURN) {results['ln_bf_hd_vs_curn']:.2f} +- {results['ln_bf_err']:.2f}",
        flush=True,
    )
    return results, res_c, res_h


def _free_spectrum_vs_shipped(res, tspan_s: float, out: Path) -> dict:
    """Our HD free spectrum (EPTA DR2 timing data) against the shipped EPTA DR2new densities.

    Compared per bin k in ``log10(rho^2 T)`` (the power per unit frequency, which does not depend
    on the span T, so spans that differ are compared correctly). ``z`` = difference of medians over
    the quadrature sum of the two 68% half-widths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = load_free_spectrum("epta_dr2new")
    x = res.resample(jax.random.key(5), 8000)
    rows = []
    n = min(sum(nm.startswith("gw_log10_rho_") for nm in res.names), data.n_freqs)
    fig, ax = plt.subplots(figsize=(8, 4.5))
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
    fig.tight_layout()
    fig.savefig(out / "free_spectrum_hd.png", dpi=90)
    plt.close(fig)
    return {"bins": rows, "max_abs_z": max(abs(r["z"]) for r in rows)}


def run_full(config: JobConfig, seed: int, out: Path) -> dict:
    """CURN and HD evidences on the EPTA DR2 timing data with the full likelihood (and, with
    ``free_spectrum``, the HD free spectrum next to the shipped EPTA DR2new one)."""
    from . import _full

    pulsars = _full.load_epta_dr2(
        pulsars=None
        if config.pulsars is None or isinstance(config.pulsars, int)
        else config.pulsars
    )
    if isinstance(config.pulsars, int):
        pulsars = pulsars[: config.pulsars]
    key = jax.random.key(seed + 1)
    key, k1 = jax.random.split(key)
    key, k2 = jax.random.split(key)
    results, res_c, res_h = _fit_curn_then_hd(
        k1, config, pulsars, out / "full", "powerlaw", "power law"
    )
    for orf, res in (("curn", res_c), ("hd", res_h)):
        gw = [n for n in res.names if n.startswith("gw_")]
        x = res.resample(jax.random.key(3), 4000)
        results[orf]["gw_quantiles"] = {
            n: np.quantile(x[:, res.names.index(n)], [0.05, 0.5, 0.95]).tolist() for n in gw
        }
        _corner(out / "full" / orf / "gw_corner.png", x[:, [res.names.index(n) for n in gw]], gw)
    if config.free_spectrum:
        fs, _, res_fh = _fit_curn_then_hd(
            k2, config, pulsars, out / "full_free_spectrum", "free_spectrum", "free spectrum"
        )
        tspan = max(float(p.toas.max()) for p in pulsars) - min(
            float(p.toas.min()) for p in pulsars
        )
        fs["vs_shipped"] = _free_spectrum_vs_shipped(res_fh, tspan, out)
        results["free_spectrum"] = fs
    return results


def run(size: str, seed: int, out: Path, overrides: dict | None = None) -> dict:
    """Run the comparison (float64 throughout: the full likelihood needs it)."""
    with jax.enable_x64(True):
        return _run(size, seed, out, overrides)


def _run(size: str, seed: int, out: Path, overrides: dict | None) -> dict:
    config = JobConfig.for_size(size, overrides or {})
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"pta-compare ({size}): {len(config.models)} models on {list(config.datasets)}")
    try:
        runs, distances = run_refit(config, seed, out)
    except PTADataError as e:
        raise SystemExit(str(e)) from None
    rows = cmp.bayes_factors(runs)
    table = cmp.format_table(rows)
    (out / "bayes_factors.json").write_text(json.dumps(rows, indent=1))
    (out / "bayes_factors.md").write_text(
        "ln Z (refit, relative to each free spectrum's flat prior) and ln Bayes factors against the "
        "SMBHB power law, flow VI + importance sampling; errors are Monte-Carlo standard errors.\n\n"
        + table
        + "\n"
    )
    print("\n" + table + "\n")
    summary = {"job": "pta-compare", "size": size, "seed": seed, "bins": config.bins, "refit": rows}
    if distances:
        summary["hellinger_flow_vs_nuts"] = distances
    if config.full_likelihood:
        try:
            full = run_full(config, seed, out)
        except PTADataError as e:
            raise SystemExit(str(e)) from None
        (out / "full_likelihood.json").write_text(json.dumps(full, indent=1))
        summary["full_likelihood"] = full
        for orf in ("curn", "hd"):
            r = full[orf]
            q = r["gw_quantiles"]
            print(
                f"EPTA DR2 full likelihood, {orf.upper()} ({r['n_pulsars']} pulsars, {r['n_params']} "
                f"parameters): ln Z {r['log_z']:.2f} +- {r['log_z_err']:.2f}, k-hat {r['khat']:.2f}; "
                + ", ".join(f"{n} {v[1]:.2f} [{v[0]:.2f}, {v[2]:.2f}]" for n, v in q.items())
            )
        print(f"ln BF (HD vs CURN) = {full['ln_bf_hd_vs_curn']:.2f} +- {full['ln_bf_err']:.2f}")
        if "free_spectrum" in full:
            vs = full["free_spectrum"]["vs_shipped"]
            print(
                "HD free spectrum vs shipped EPTA DR2new: per-bin |z| <= "
                f"{vs['max_abs_z']:.2f} over {len(vs['bins'])} bins (free_spectrum_hd.png)"
            )
    summary["wall_seconds"] = time.perf_counter() - t0
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    print(
        f"wrote {out}/bayes_factors.md, spectra_*.png, summary.json ({summary['wall_seconds']:.0f} s)"
    )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    from jaxaccel import _cli

    return _cli.run_job("pta-compare", __doc__ or "", run, argv)
