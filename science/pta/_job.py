"""``jaxaccel pta-compare``: gravitational-wave background model comparison on real PTA data.

Part 1 (refit): every spectral model of `science.pta.spectra` (NANOGrav 15-yr new-physics set) is
fitted with flow VI to the shipped free spectra of EPTA DR2new, PPTA DR3 and IPTA DR2 on their lowest
bins; the job writes the evidences and Bayes factors against the SMBHB power law
(``bayes_factors.md``/``.json``), each data set's free-spectrum violins with the models' posterior
spectra (``spectra_<data>.png``) and per-model corner plots (``runs/<data>/<model>/``). With
``combos`` also every new-physics model plus the SMBHB background, and with ``hellinger`` the
Hellinger distances between the flow's and NumPyro NUTS' marginal posteriors (for
``hellinger_models``, by default the closed-form models, `HELLINGER_MODELS`; in ``summary.json``).
Part 2 (full likelihood): the EPTA DR2 timing data (25 pulsars; white noise and DM noise fixed at
the data's own noise-analysis values, pulsars x 2 red-noise parameters + the common power law
sampled). CURN is fitted with flow VI; the Hellings-Downs posterior and evidence come from
reweighting the CURN draws by ln L_HD - ln L_CURN (likelihood reweighting), which gives
ln BF(HD/CURN) with a paired error (``full_likelihood.json``, ``full/<orf>/gw_corner.png``). With
``free_spectrum`` the same for a 10-bin free spectrum, plotted next to the shipped EPTA DR2new HD
free spectrum (``free_spectrum_hd.png``).

Every finished fit is checkpointed (``checkpoint/``): an interrupted run resumes after the last one.
Sizes: ``tiny`` (tests: one data set, two models, 3 pulsars, short fits), ``small`` (the defaults:
EPTA DR2new, all models; a short full-likelihood fit on all pulsars with the free spectrum),
``full`` (all three data sets, + combinations, Hellinger distances, long fits).

Config keys (TOML, all optional; see `PTACompareConfig`): ``datasets``, ``models`` (SMBHB, the
reference, is always fitted), ``bins`` (table data set -> number of lowest bins), ``steps``,
``n_draws``, ``max_refine``, ``combos`` and ``hellinger`` (true/false or a list of data sets),
``hellinger_models`` and ``combo_models`` (lists of models), ``full_likelihood``, ``pulsars`` (a
number or a list of names), ``full_steps``, ``full_draws``, ``free_spectrum``.
"""

from __future__ import annotations

import dataclasses
import json
import time
import typing
import zlib
from pathlib import Path
from typing import Annotated, Literal

import jax
import numpy as np

from jaxaccel import runtime

from . import _compare as cmp, _spectra
from ._freespec import DATASETS, DEFAULT_BINS, data_folder, load_free_spectrum

__all__ = ["JOB", "PTACompareConfig", "Bins", "HELLINGER_MODELS"]

Dataset = Literal["epta_dr2new", "ppta_dr3", "ipta_dr2"]
Model = Literal[tuple(_spectra.MODELS)]  # type: ignore[valid-type]
Positive = Annotated[int, runtime.Range(ge=1)]
# fewer importance draws give no usable evidence error or k-hat
Draws = Annotated[int, runtime.Range(ge=100)]

# Hellinger distances need a NUTS run per model: minutes for the closed-form spectra, tens of
# minutes for the numerically integrated ones (SIGW-GAUSS/BOX, strings) on 2 CPU cores, so by
# default only these (config ``hellinger_models`` lists others).
HELLINGER_MODELS = (
    "SMBHB", "SMBHB-HOLO", "SMBHB-TURN", "IGW", "SIGW-DELTA", "PT-BUBBLE", "PT-SOUND", "DW",
)  # fmt: skip


@dataclasses.dataclass(frozen=True, kw_only=True)
class Bins:
    """Number of lowest frequency bins fitted per data set (at most the bins it ships)."""

    epta_dr2new: Annotated[int, runtime.Range(ge=1, le=20)] = DEFAULT_BINS["epta_dr2new"]
    ppta_dr3: Annotated[int, runtime.Range(ge=1, le=40)] = DEFAULT_BINS["ppta_dr3"]
    ipta_dr2: Annotated[int, runtime.Range(ge=1, le=30)] = DEFAULT_BINS["ipta_dr2"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PTACompareConfig:
    """Settings of ``jaxaccel pta-compare`` (defaults: the ``small`` size).

    Attributes:
        datasets: free spectra to refit (`science.pta.DATASETS`).
        models: spectral models to fit (`science.pta.MODELS`); SMBHB is always added (every Bayes
            factor is against it).
        bins: lowest bins fitted per data set.
        steps, n_draws: flow-VI Adam steps and importance draws per refit.
        max_refine: extra flow-VI refinement stages while k-hat > 0.7.
        combos: data sets (or ``true``: all) on which every new-physics model is also fitted
            together with the SMBHB background (``combo_models``: which ones; default all).
        hellinger: data sets (or ``true``: all) on which ``hellinger_models`` are also sampled
            with NUTS and the flow's marginals compared with NUTS' (Hellinger distance).
        full_likelihood: part 2 (the EPTA DR2 timing data).
        pulsars: number of EPTA DR2 pulsars (the first by name) or a list of names; default all.
        full_steps, full_draws: flow-VI settings of the full-likelihood fits.
        free_spectrum: also fit a 10-bin free spectrum with the full likelihood.
    """

    datasets: Annotated[tuple[Dataset, ...], runtime.Range(ge=1, length=True)] = ("epta_dr2new",)
    models: Annotated[tuple[Model, ...], runtime.Range(ge=1, length=True)] = tuple(_spectra.MODELS)
    bins: Bins = Bins()
    steps: Positive = 600
    n_draws: Draws = 8000
    max_refine: Annotated[int, runtime.Range(ge=0, le=5)] = 1
    combos: bool | tuple[Dataset, ...] = False
    hellinger: bool | tuple[Dataset, ...] = False
    hellinger_models: tuple[Model, ...] = HELLINGER_MODELS
    combo_models: tuple[Model, ...] | None = None
    full_likelihood: bool = True
    # HD correlations need at least two pulsars
    pulsars: Annotated[int, runtime.Range(ge=2)] | tuple[str, ...] | None = None
    full_steps: Positive = 600
    full_draws: Draws = 8000
    free_spectrum: bool = True

    def __post_init__(self):
        for key in ("datasets", "models", "hellinger_models", "combo_models", "pulsars"):
            value = getattr(self, key)
            if isinstance(value, tuple):
                twice = sorted({v for v in value if value.count(v) > 1})
                if twice:
                    raise runtime.ConfigError(f"{twice[0]!r} is listed twice", key=key)
        if isinstance(self.pulsars, tuple) and len(self.pulsars) < 2:
            raise runtime.ConfigError(
                "expected at least 2 pulsar names (HD correlations need pairs), got "
                f"{list(self.pulsars)}",
                key="pulsars",
            )
        for key in ("combos", "hellinger"):
            value = getattr(self, key)
            for d in value if isinstance(value, tuple) else ():
                if d not in self.datasets:
                    raise runtime.ConfigError(
                        f"{d!r} is not among datasets {list(self.datasets)}", key=key
                    )

    @property
    def fitted_models(self) -> tuple[str, ...]:
        """``models`` with SMBHB first (the reference of every Bayes factor)."""
        return ("SMBHB", *(m for m in self.models if m != "SMBHB"))

    def _per_dataset(self, value: bool | tuple[str, ...]) -> tuple[str, ...]:
        return self.datasets if value is True else tuple(value or ())

    @property
    def combo_datasets(self) -> tuple[str, ...]:
        return self._per_dataset(self.combos)

    @property
    def hellinger_datasets(self) -> tuple[str, ...]:
        return self._per_dataset(self.hellinger)

    def bins_of(self, dataset: str) -> int:
        return int(getattr(self.bins, dataset))


SIZES = {
    "tiny": {
        "models": ("SMBHB", "IGW"),
        "steps": 100,
        "n_draws": 1000,
        "max_refine": 0,
        "pulsars": 3,
        "full_steps": 100,
        "full_draws": 1000,
        "free_spectrum": False,
    },
    "full": {
        "datasets": tuple(typing.get_args(Dataset)),
        "steps": 800,
        "n_draws": 20000,
        "combos": ("epta_dr2new",),
        "hellinger": ("epta_dr2new",),
        "full_steps": 2500,
        "full_draws": 20000,
    },
}


def check_data(config: PTACompareConfig) -> None:
    """Cheap checks before any fit: the data files are there and the bins and pulsars exist."""
    from . import _freespec, _full

    for d in config.datasets:
        folder = data_folder() / "freespec" / DATASETS[d][0]
        freqs = folder / "freqs.npy"
        if not freqs.is_file():
            raise _freespec.PTADataError(
                f"datasets: free-spectrum data for {d!r} not found: {freqs} does not exist. "
                f"{_freespec._HOW_TO_GET}"
            )
        n = int(np.load(freqs).size)
        if config.bins_of(d) > n:
            raise runtime.ConfigError(
                f"expected at most {n} (the bins {d} ships), got {config.bins_of(d)}",
                key=f"bins.{d}",
            )
    if not config.full_likelihood:
        return
    folder = _full.default_data_folder()
    names = sorted(p.stem for p in folder.glob("*.feather")) if folder.is_dir() else []
    if not names:
        raise _freespec.PTADataError(
            f"full_likelihood: no EPTA DR2 .feather files in {folder}. {_full._DATA_HINT}"
        )
    if isinstance(config.pulsars, int) and config.pulsars > len(names):
        raise runtime.ConfigError(
            f"expected at most {len(names)} (the pulsars in {folder}), got {config.pulsars}",
            key="pulsars",
        )
    if isinstance(config.pulsars, tuple):
        unknown = [p for p in config.pulsars if p not in names]
        if unknown:
            raise runtime.ConfigError(
                f"unknown pulsar {unknown[0]!r}; known: {', '.join(names)}", key="pulsars"
            )


def _key(key: jax.Array, unit: str) -> jax.Array:
    """The key of one unit of work, by name: it does not depend on what else the run fits."""
    return jax.random.fold_in(key, zlib.crc32(unit.encode()))


class _Ledger:
    """Finished units of work (JSON records), checkpointed after each one."""

    def __init__(self, out: Path, config: PTACompareConfig, key: jax.Array):
        self._ckpt = runtime.Checkpointer(
            out / "checkpoint", runtime.fingerprint("pta-compare", config, key)
        )
        found = self._ckpt.restore({})
        self.done: dict = {} if found is None else dict(found.meta["done"])

    def record(self, unit: str, value) -> None:
        # kept as the checkpoint will give it back (JSON; NaN stays NaN), fresh or resumed
        self.done[unit] = json.loads(json.dumps(value, default=float))
        self._ckpt.save(len(self.done), {}, meta={"done": self.done})


def run_refit(config, key, out: Path, ledger: _Ledger, bar: runtime.Progress):
    """Every model (and combination) on every data set; returns the runs and the Hellinger
    distances ``{data set: {model: {parameter: H}}}``."""
    models = _spectra.MODELS
    sampler = cmp.flow_vi(config.steps, config.n_draws, max_refine=config.max_refine)
    runs: list[cmp.ModelRun] = []
    distances: dict[str, dict] = {}
    for dataset in config.datasets:
        data = load_free_spectrum(dataset)
        bins = config.bins_of(dataset)
        here = []
        for name, plus in _refit_units(config, dataset):
            label = name if plus is None else f"{name}+{plus}"
            unit = f"refit/{dataset}/{label}"
            if unit in ledger.done:
                info = dict(ledger.done[unit])
                run = cmp.ModelRun(**{**info, "names": tuple(info["names"])})
            else:
                t0 = time.perf_counter()
                with bar.phase(f"{dataset} {label}"):
                    run, _ = cmp.run_model(
                        _key(key, unit),
                        data,
                        models[name],
                        sampler,
                        bins=bins,
                        plus=None if plus is None else models[plus],
                        out=out / "runs" / dataset / label,
                        label=label,
                        checkpoint=False,  # a refit takes a minute: the ledger checkpoints
                    )
                ledger.record(unit, run.to_json())
                bar.write(
                    f"  {dataset:12s} {label:22s} ln Z {run.log_z:8.2f} +- {run.log_z_err:.2f}  "
                    f"k-hat {run.khat:5.2f}  ({time.perf_counter() - t0:.0f} s)"
                )
                bar.update(1)
            here.append(run)
        runs += here
        shown = [r for r in here if "+" not in r.label]
        curves = cmp.spectrum_curves(data, shown, bins=bins, key=_key(key, f"curves/{dataset}"))
        cmp.plot_spectra(out / f"spectra_{dataset}.png", data, curves, bins=bins)
        if dataset in config.hellinger_datasets:
            for run in (r for r in shown if r.label in config.hellinger_models):
                unit = f"hellinger/{dataset}/{run.label}"
                if unit not in ledger.done:
                    with bar.phase(f"NUTS {dataset} {run.label}"):
                        h = cmp.hellinger_vs_nuts(
                            _key(key, unit), data, models[run.label], run, bins
                        )
                    ledger.record(unit, h)
                    bar.write(
                        f"  {dataset:12s} {run.label:22s} Hellinger flow vs NUTS: max "
                        f"{max(h.values()):.3f}"
                    )
                    bar.update(1)
                distances.setdefault(dataset, {})[run.label] = ledger.done[unit]
    return runs, distances


def _refit_units(config: PTACompareConfig, dataset: str) -> list[tuple[str, str | None]]:
    todo: list[tuple[str, str | None]] = [(m, None) for m in config.fitted_models]
    if dataset in config.combo_datasets:
        todo += [
            (m, "SMBHB")
            for m in config.fitted_models
            if not m.startswith("SMBHB")
            and (config.combo_models is None or m in config.combo_models)
        ]
    return todo


def _n_units(config: PTACompareConfig) -> int:
    n = 0
    for d in config.datasets:
        units = _refit_units(config, d)
        n += len(units)
        if d in config.hellinger_datasets:
            n += sum(m in config.hellinger_models for m, plus in units if plus is None)
    if config.full_likelihood:
        n += 4 if config.free_spectrum else 2
    return n


def _corner(path: Path, x: np.ndarray, names) -> None:
    import corner

    k = len(names)
    fig, _ = runtime.figure(k, k, figsize=(2.0 * k, 2.0 * k))
    corner.corner(x, labels=list(names), quantiles=[0.05, 0.5, 0.95], show_titles=True, fig=fig)
    runtime.save_figure(fig, path, dpi=80)


def _log_lik_at_draws(fn, res, names, chunk: int = 2000) -> np.ndarray:
    """``fn`` (a batched log-likelihood over a dict of arrays) at every draw of ``res``."""
    x = res.samples.reshape(-1, res.samples.shape[-1])
    draws = {n: jax.numpy.asarray(x[:, res.names.index(n)]) for n in names}
    f = jax.jit(fn)
    parts = [
        np.asarray(f({k: v[i : i + chunk] for k, v in draws.items()}))
        for i in range(0, x.shape[0], chunk)
    ]
    return np.concatenate(parts)


def _fit_curn_then_hd(key, config, pulsars, folder: Path, gw: str, ledger, bar) -> tuple:
    """CURN by flow VI; HD by reweighting the CURN draws with ln L_HD - ln L_CURN.

    The two posteriors differ only through the cross-correlations, so the CURN flow is a good HD
    proposal (its k-hat says so), and the Bayes factor's paired error is small: the likelihood
    reweighting NANOGrav used for its 15-yr HD evidence, here with the flow's exact proposal.
    """
    from science import samplers as ss

    from . import _full

    curn_dir, hd_dir = folder / "curn", folder / "hd"
    lik_c = _full.PTALikelihood(pulsars, orf="curn", gw=gw)
    unit = f"full/{gw}/curn"
    if unit in ledger.done:
        res_c = ss.Result.load(curn_dir)
    else:
        target = ss.Target(lik_c.log_likelihood, lik_c.priors())
        sampler = cmp.flow_vi(config.full_steps, config.full_draws, max_refine=config.max_refine)
        with bar.phase(f"CURN ({gw})"):
            res_c = ss.sample(_key(key, unit), target, sampler, out=curn_dir / "ckpt")
        res_c.save(curn_dir, plot=False)
        ledger.record(unit, {"log_z": res_c.log_z})
        bar.update(1)
    unit = f"full/{gw}/hd"
    if unit in ledger.done:
        res_h = ss.Result.load(hd_dir)
    else:
        t0 = time.perf_counter()
        lik_h = _full.PTALikelihood(pulsars, orf="hd", gw=gw)
        names = lik_c.param_names
        with bar.phase(f"HD reweighting ({gw})"):
            ll_c = _log_lik_at_draws(lik_c.log_likelihood_batch, res_c, names)
            # HD one point at a time (batched HD graphs hang XLA's CPU backend; see `sequential`).
            ll_h = _log_lik_at_draws(jax.vmap(lik_h.sequential()), res_c, names)
        res_h = ss.reweight(res_c, ll_h - ll_c, sampler="CURN flow VI draws reweighted to HD")
        res_h = dataclasses.replace(res_h, wall_seconds=time.perf_counter() - t0)
        res_h.save(hd_dir, plot=False)
        ledger.record(unit, {"log_z": res_h.log_z})
        bar.update(1)
    results: dict = {}
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
    bar.write(
        f"  {gw}: CURN ln Z {res_c.log_z:.2f} +- {res_c.log_z_err:.2f} (k-hat "
        f"{res_c.diagnostics['khat']:.2f}); HD by reweighting: k-hat {res_h.diagnostics['khat']:.2f}, "
        f"ln BF(HD/CURN) {results['ln_bf_hd_vs_curn']:.2f} +- {results['ln_bf_err']:.2f}"
    )
    return results, res_c, res_h


def run_full(config: PTACompareConfig, key, out: Path, ledger: _Ledger, bar) -> dict:
    """CURN and HD evidences on the EPTA DR2 timing data with the full likelihood (and, with
    ``free_spectrum``, the HD free spectrum next to the shipped EPTA DR2new one)."""
    from . import _full

    names = None if not isinstance(config.pulsars, tuple) else list(config.pulsars)
    pulsars = _full.load_epta_dr2(pulsars=names)
    if isinstance(config.pulsars, int):
        pulsars = pulsars[: config.pulsars]
    results, res_c, res_h = _fit_curn_then_hd(
        key, config, pulsars, out / "full", "powerlaw", ledger, bar
    )
    for orf, res in (("curn", res_c), ("hd", res_h)):
        gw = [n for n in res.names if n.startswith("gw_")]
        x = res.resample(_key(key, f"corner/{orf}"), 4000)
        results[orf]["gw_quantiles"] = {
            n: np.quantile(x[:, res.names.index(n)], [0.05, 0.5, 0.95]).tolist() for n in gw
        }
        _corner(out / "full" / orf / "gw_corner.png", x[:, [res.names.index(n) for n in gw]], gw)
    if config.free_spectrum:
        fs, _, res_fh = _fit_curn_then_hd(
            key, config, pulsars, out / "full_free_spectrum", "free_spectrum", ledger, bar
        )
        tspan = max(float(p.toas.max()) for p in pulsars) - min(
            float(p.toas.min()) for p in pulsars
        )
        fs["vs_shipped"] = cmp.free_spectrum_vs_shipped(
            res_fh,
            tspan,
            key=_key(key, "free_spectrum/vs_shipped"),
            path=out / "free_spectrum_hd.png",
        )
        results["free_spectrum"] = fs
    return results


def _full_lines(full: dict) -> list[str]:
    lines = []
    for orf in ("curn", "hd"):
        r = full[orf]
        lines.append(
            f"EPTA DR2 full likelihood, {orf.upper()} ({r['n_pulsars']} pulsars, {r['n_params']} "
            f"parameters): ln Z {r['log_z']:.2f} +- {r['log_z_err']:.2f}, k-hat {r['khat']:.2f}; "
            + ", ".join(
                f"{n} {v[1]:.2f} [{v[0]:.2f}, {v[2]:.2f}]" for n, v in r["gw_quantiles"].items()
            )
        )
    lines.append(f"ln BF (HD vs CURN) = {full['ln_bf_hd_vs_curn']:.2f} +- {full['ln_bf_err']:.2f}")
    if "free_spectrum" in full:
        vs = full["free_spectrum"]["vs_shipped"]
        lines.append(
            "HD free spectrum vs shipped EPTA DR2new: per-bin |z| <= "
            f"{vs['max_abs_z']:.2f} over {len(vs['bins'])} bins (free_spectrum_hd.png)"
        )
    return lines


def science(
    config: PTACompareConfig, *, key: jax.Array, out: Path, progress: bool = True
) -> runtime.Summary:
    """Run the comparison (float64 throughout: the full likelihood needs it)."""
    with jax.enable_x64(True):
        ledger = _Ledger(out, config, key)
        with runtime.Progress(_n_units(config), "pta-compare", unit="fit", enabled=progress) as bar:
            bar.resumed(len(ledger.done))
            runs, distances = run_refit(config, jax.random.fold_in(key, 0), out, ledger, bar)
            rows = cmp.bayes_factors(runs)
            table = cmp.format_table(rows)
            runtime.write_json(out / "bayes_factors.json", rows)
            (out / "bayes_factors.md").write_text(
                "ln Z (refit, relative to each free spectrum's flat prior) and ln Bayes factors "
                "against the SMBHB power law, flow VI + importance sampling; errors are "
                "Monte-Carlo standard errors.\n\n" + table + "\n"
            )
            results: dict = {"bins": config.bins, "refit": rows}
            files = ["bayes_factors.md", "bayes_factors.json"]
            files += [f"spectra_{d}.png" for d in config.datasets]
            if distances:
                results["hellinger_flow_vs_nuts"] = distances
            lines = [table]
            if config.full_likelihood:
                full = run_full(config, jax.random.fold_in(key, 1), out, ledger, bar)
                runtime.write_json(out / "full_likelihood.json", full)
                results["full_likelihood"] = full
                files += [
                    "full_likelihood.json",
                    "full/curn/gw_corner.png",
                    "full/hd/gw_corner.png",
                ]
                if config.free_spectrum:
                    files.append("free_spectrum_hd.png")
                lines += [""] + _full_lines(full)
    return runtime.Summary(
        job="pta-compare", results=results, table="\n".join(lines), files=tuple(files)
    )


JOB = runtime.Job(
    name="pta-compare",
    description=__doc__ or "",
    config=PTACompareConfig,
    science=science,
    sizes=SIZES,
    checks=check_data,
)
