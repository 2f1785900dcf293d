"""``jaxaccel pta-compare``: gravitational-wave background model comparison on real PTA data.

Part 1 (refit): every spectral model of `science.pta.spectra` (NANOGrav 15-yr new-physics set) is
fitted with flow VI to the shipped free spectra of EPTA DR2new, PPTA DR3 and IPTA DR2 on their lowest
bins; the job writes the evidences and Bayes factors against the SMBHB power law
(``bayes_factors.md``/``.json``), each data set's free-spectrum violins with the models' posterior
spectra (``spectra_<data>.png``) and per-model corner plots (``runs/<data>/<model>/``). At size
``full`` also every new-physics model plus the SMBHB background, and Hellinger distances between the
flow's and NumPyro NUTS' marginal posteriors for every model.
Part 2 (full likelihood): the EPTA DR2 timing data (25 pulsars; white noise and DM noise fixed at
the data's own noise-analysis values, 25 x 2 red-noise parameters + the common power law sampled),
CURN and Hellings-Downs, with their evidences and Bayes factor (``full_likelihood.json``).

Interrupted runs resume: finished models are read back from ``runs/``. Sizes: ``tiny`` (tests:
one data set, two models, 4 pulsars), ``small`` (EPTA DR2new, all models; a short full-likelihood
fit on all pulsars), ``full`` (all three data sets, + combinations, Hellinger distances, long fits).
Config (TOML, all optional): ``datasets``, ``models``, ``bins`` (table data set -> number of lowest
bins), ``steps``, ``n_draws``, ``combos`` (bool), ``hellinger`` (bool), ``full_likelihood`` (bool),
``pulsars`` (number or list of names), ``full_steps``.
"""

from __future__ import annotations

import dataclasses
import json
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
    },
    "full": {
        "datasets": tuple(DATASETS),
        "models": None,
        "steps": 1500,
        "n_draws": 20000,
        "combos": True,
        "hellinger": True,
        "full_likelihood": True,
        "pulsars": None,
        "full_steps": 2500,
        "full_draws": 20000,
    },
}
KEYS = set(SIZES["tiny"]) | {"bins"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobConfig:
    datasets: tuple[str, ...]
    models: tuple[str, ...]
    bins: dict[str, int]
    steps: int
    n_draws: int
    combos: bool
    hellinger: bool
    full_likelihood: bool
    pulsars: int | tuple[str, ...] | None
    full_steps: int
    full_draws: int

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
            combos=bool(base["combos"]),
            hellinger=bool(base["hellinger"]),
            full_likelihood=bool(base["full_likelihood"]),
            pulsars=pulsars,
            full_steps=base["full_steps"],
            full_draws=base["full_draws"],
        )


def flow_vi(steps: int, n_draws: int, *, refine: bool = True):
    from science import samplers as ss

    return ss.FlowVI(
        steps=steps,
        n_elbo=32,
        chunk=min(250, steps),
        n_draws=n_draws,
        draw_batch=min(5000, n_draws),
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


def run_refit(config: JobConfig, seed: int, out: Path) -> list[cmp.ModelRun]:
    from . import _spectra

    models = _spectra.MODELS
    sampler = flow_vi(config.steps, config.n_draws)
    runs: list[cmp.ModelRun] = []
    key = jax.random.key(seed)
    for dataset in config.datasets:
        data = load_free_spectrum(dataset)
        bins = config.bins[dataset]
        todo = [(m, None) for m in config.models]
        if config.combos:
            todo += [(m, "SMBHB") for m in config.models if not m.startswith("SMBHB")]
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
        if config.hellinger:
            for run in shown:
                key, k = jax.random.split(key)
                h = _hellinger_vs_nuts(k, data, models[run.label], run, bins)
                (out / "runs" / dataset / run.label / "hellinger.json").write_text(json.dumps(h))
                print(
                    f"  {dataset:12s} {run.label:22s} Hellinger flow vs NUTS: max {max(h.values()):.3f}"
                )
    return runs


def _corner(path, x, names):
    import corner
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = corner.corner(x, labels=list(names), quantiles=[0.05, 0.5, 0.95], show_titles=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run_full(config: JobConfig, seed: int, out: Path) -> dict:
    """CURN and HD evidences on the EPTA DR2 timing data with the full likelihood."""
    from science import samplers as ss

    from . import _full

    pulsars = _full.load_epta_dr2(
        pulsars=None
        if config.pulsars is None or isinstance(config.pulsars, int)
        else config.pulsars
    )
    if isinstance(config.pulsars, int):
        pulsars = pulsars[: config.pulsars]
    results = {}
    key = jax.random.key(seed + 1)
    for orf in ("curn", "hd"):
        folder = out / "full" / orf
        done = folder / "run.json"
        if done.exists():
            results[orf] = json.loads(done.read_text())
            continue
        lik = _full.PTALikelihood(pulsars, orf=orf)
        # HD: batches one point at a time (XLA's CPU backend hangs on the batched HD gradient).
        target = ss.Target(lik.sequential() if orf == "hd" else lik.log_likelihood, lik.priors())
        key, k = jax.random.split(key)
        t0 = time.perf_counter()
        res = ss.sample(
            k, target, flow_vi(config.full_steps, config.full_draws), out=folder / "ckpt"
        )
        res.save(folder, plot=False)
        gw = [n for n in res.names if n.startswith("gw_")]
        x = res.resample(jax.random.key(3), 4000)
        q = {n: np.quantile(x[:, res.names.index(n)], [0.05, 0.5, 0.95]).tolist() for n in gw}
        _corner(folder / "gw_corner.png", x[:, [res.names.index(n) for n in gw]], gw)
        info = {
            "orf": orf,
            "n_pulsars": len(pulsars),
            "n_params": len(res.names),
            "log_z": res.log_z,
            "log_z_err": res.log_z_err,
            "khat": res.diagnostics["khat"],
            "ess": res.diagnostics["ess_is"],
            "gw_quantiles": q,
            "wall_seconds": time.perf_counter() - t0,
        }
        done.write_text(json.dumps(info, indent=1))
        results[orf] = info
    c, h = results["curn"], results["hd"]
    results["ln_bf_hd_vs_curn"] = h["log_z"] - c["log_z"]
    results["ln_bf_err"] = float(np.hypot(h["log_z_err"], c["log_z_err"]))
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
        runs = run_refit(config, seed, out)
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
    summary["wall_seconds"] = time.perf_counter() - t0
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    print(
        f"wrote {out}/bayes_factors.md, spectra_*.png, summary.json ({summary['wall_seconds']:.0f} s)"
    )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    from jaxaccel import _cli

    return _cli.run_job("pta-compare", __doc__ or "", run, argv)
