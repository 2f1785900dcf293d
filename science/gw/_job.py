"""``jaxaccel gw-population``: population inference on a (mock) GW catalogue with the flow sampler.

By default it analyses the catalogue shipped with the package (69 detections drawn from the GWTC-3
Power Law + Peak medians through an aLIGO-design detection model), fitting the power law + peak mass
model, the mass-ratio slope and the redshift evolution with flow VI + importance reweighting. It
writes posterior samples, ``summary.json``, a recovery table (median and 90% interval vs the injected
truth), a corner plot and the population-predictive primary-mass distribution; an interrupted run
resumes from its checkpoint (and says so). Sizes: ``tiny`` (3 hyperparameters, 150 steps, 20 of the
69 ``bbh`` events; tests), ``small`` (7 hyperparameters for ``bbh``, 5 for ``bbh+nsbh``; a few
minutes on 2 cores), ``full`` (9 / 11). Hyperparameters not sampled stay at the catalogue's truths.

Config (TOML, all optional): ``model`` ("bbh" or "bbh+nsbh": the shipped two-subpopulation
catalogue, sampling both merger rates), ``catalogue`` (path of an .npz written by
``Catalogue.save``), ``free`` (list of hyperparameter names; default: the model's set for
``preset``, which each size sets), ``priors`` (table name -> [low, high], overriding `PRIORS`),
``n_events`` (the first N events; ``bbh`` only; default: ``preset``'s), ``steps``, ``n_draws``,
``chunk`` (steps per checkpoint), ``refine`` (one more training stage when k-hat is high).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import sys
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxaccel import ConfigError, runtime

from . import _mock, _models as m
from ._likelihood import GWDataError, HierarchicalLikelihood

__all__ = [
    "JOB",
    "GWConfig",
    "PRIORS",
    "FREE",
    "N_EVENTS",
    "MIXTURE",
    "M1_GRID",
    "Q_GRID",
    "population",
    "nsbh_population",
    "hyperparameters",
    "truths_of",
    "load_catalogue",
    "build_target",
    "make_sampler",
    "recovery_table",
    "local_rates",
    "mass_curves",
    "plot_mass_distribution",
]

# Uniform priors in the spirit of the GWTC-3 population analyses. A name with a subpopulation
# prefix ("BBH.alpha", "NSBH.alpha") takes the bounds of its last component unless listed itself;
# rates are sampled as log10 (expected mergers per year out to z = 2.3, see `models.local_rate`).
PRIORS = {
    "alpha": (-4.0, 12.0),
    "beta": (-4.0, 7.0),
    "mmin": (2.0, 10.0),
    "mmax": (40.0, 100.0),
    "lam": (0.0, 1.0),
    "mpp": (20.0, 50.0),
    "sigpp": (1.0, 10.0),
    "delta_m": (0.0, 10.0),
    "lamb": (-4.0, 10.0),
    "NSBH.mmax": (10.0, 40.0),
    "log10_rate_bbh": (3.0, 7.0),
    "log10_rate_nsbh": (3.0, 7.0),
}
Model = Literal["bbh", "bbh+nsbh"]
# The hyperparameters each model has (what `free` may name).
HYPERPARAMETERS: dict[str, tuple[str, ...]] = {
    "bbh": tuple(_mock.GWTC3_PLP),
    "bbh+nsbh": (
        "log10_rate_bbh",
        "log10_rate_nsbh",
        "lamb",
        *(f"BBH.{k}" for k in _mock.GWTC3_PLP if k != "lamb"),
        *(f"NSBH.{k}" for k in _mock.NSBH_DEFAULT),
    ),
}
# The default free hyperparameters of each model, per `preset` (each size sets its own).
FREE: dict[str, dict[str, tuple[str, ...]]] = {
    "bbh": {
        "tiny": ("alpha", "mpp", "lamb"),
        "small": ("alpha", "beta", "mmax", "lam", "mpp", "sigpp", "lamb"),
        "full": tuple(k for k in PRIORS if "." not in k and "rate" not in k),
    },
    "bbh+nsbh": {
        "tiny": ("log10_rate_bbh", "log10_rate_nsbh", "lamb"),
        "small": ("log10_rate_bbh", "log10_rate_nsbh", "lamb", "BBH.alpha", "NSBH.alpha"),
        "full": (
            "log10_rate_bbh",
            "log10_rate_nsbh",
            "lamb",
            "BBH.alpha",
            "BBH.beta",
            "BBH.mmax",
            "BBH.lam",
            "BBH.mpp",
            "BBH.sigpp",
            "NSBH.alpha",
            "NSBH.mmax",
        ),
    },
}
# Coarser normalisation grids than gwpopulation's (1000 x 500): the job evaluates the likelihood
# millions of times and the (m1, q) grid would dominate the cost; 200 x 100 keeps densities
# normalised to ~1e-3 (tests/science/test_gw_models.py checks the default grids).
M1_GRID = (2.0, 100.0, 200)
Q_GRID = (0.001, 1.0, 100)
# The default number of events per model and preset (None: all). Only bbh's tiny preset cuts
# (with sampled rates the number of detections is data, so bbh+nsbh always uses them all).
N_EVENTS: dict[str, dict[str, int | None]] = {
    "bbh": {"tiny": 20, "small": None, "full": None},
    "bbh+nsbh": {"tiny": None, "small": None, "full": None},
}
Positive = Annotated[int, runtime.Range(ge=1)]


def prior_bounds(name: str, priors: dict[str, tuple[float, float]]) -> tuple[float, float] | None:
    """Bounds of ``name``, else of its last dotted component (``"BBH.alpha"`` -> ``alpha``)."""
    return priors.get(name, priors.get(name.rsplit(".", 1)[-1]))


def _unknown(name: str, known, where: str = "") -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown hyperparameter {name!r}{where}; {hint}known: {', '.join(known)}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class GWConfig:
    """Settings of ``jaxaccel gw-population`` (defaults: the ``small`` size).

    Attributes:
        model: ``"bbh"`` (power law + peak, rate marginalised) or ``"bbh+nsbh"`` (two
            subpopulations with sampled rates; needs a catalogue with an observing time).
        catalogue: an .npz written by `Catalogue.save`; default: the model's shipped catalogue.
        free: hyperparameters to sample (the others stay at the catalogue's truths); ``None``
            means the model's set for ``preset`` (after construction it holds the names).
        preset: which of the model's defaults (`FREE`, `N_EVENTS`) fill ``free`` and
            ``n_events`` when they are not set; each ``--size`` sets its own.
        priors: uniform prior bounds overriding `PRIORS` (name -> ``(low, high)``).
        n_events: analyse only the first ``n_events`` events; ``None`` means the model's default
            for ``preset`` (all events, except 20 for ``bbh`` at ``tiny``); ``bbh`` only (with
            sampled rates the number of detections is itself data).
        steps: flow-VI training steps (and of the refinement stage).
        n_draws: importance draws.
        chunk: training steps per compiled chunk and checkpoint.
        refine: allow one refinement stage when k-hat exceeds 0.7.
    """

    model: Model = "bbh"
    catalogue: Path | None = None
    free: tuple[str, ...] | None = None
    preset: Literal["tiny", "small", "full"] = "small"
    priors: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    n_events: Positive | None = None
    steps: Positive = 1000
    n_draws: Positive = 8000
    chunk: Positive = 250
    refine: bool = True

    def __post_init__(self):
        # The loader checks every key of a TOML/size/flag source; built directly (from Python),
        # the fields are checked against their annotations here too.
        hints = typing.get_type_hints(GWConfig, include_extras=True)
        for f in dataclasses.fields(self):
            value = runtime.check_value(f.name, hints[f.name], getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        known_priors = sorted(set(PRIORS) | {n for ns in HYPERPARAMETERS.values() for n in ns})
        for name, (low, high) in self.priors.items():
            if name not in known_priors and prior_bounds(name, PRIORS) is None:
                raise ConfigError(_unknown(name, known_priors), key=f"priors.{name}")
            if not low < high:
                raise ConfigError(
                    f"expected [low, high] with low < high, got [{low:g}, {high:g}]",
                    key=f"priors.{name}",
                )
        free = FREE[self.model][self.preset] if self.free is None else self.free
        if not free:
            raise ConfigError("expected at least one hyperparameter name", key="free")
        known = HYPERPARAMETERS[self.model]
        for name in free:
            if name not in known:
                raise ConfigError(_unknown(name, known, f" of model {self.model!r}"), key="free")
            if self.bounds(name) is None:
                raise ConfigError(
                    f"{name!r} has no prior bounds; add them under [priors] "
                    f'("{name}" = [low, high])',
                    key="free",
                )
        twice = sorted({n for n in free if free.count(n) > 1})
        if twice:
            raise ConfigError(f"{twice} listed more than once", key="free")
        if self.model == "bbh+nsbh" and self.n_events is not None:
            raise ConfigError(
                "model 'bbh+nsbh' samples the rates, so the number of detections is data and "
                "every event is used; remove n_events",
                key="n_events",
            )
        object.__setattr__(self, "free", tuple(free))
        if self.n_events is None:
            object.__setattr__(self, "n_events", N_EVENTS[self.model][self.preset])

    def bounds(self, name: str) -> tuple[float, float] | None:
        """The uniform prior of hyperparameter ``name`` (``priors`` first, then `PRIORS`)."""
        return prior_bounds(name, self.priors) or prior_bounds(name, PRIORS)


# ------------------------------------------------------------------------------------ model
def _redshift(data, hyper):
    return m.redshift_power_law(data["redshift"], hyper, z_max=_mock.Z_MAX)


def population(data, hyper):
    """Power law + peak primary mass x mass-ratio power law x (1+z)^lamb redshift density."""
    p_m1 = m.power_law_peak(data["mass_1"], hyper, m1_grid=M1_GRID)
    p_q = m.mass_ratio_power_law(
        data["mass_ratio"], data["mass_1"], hyper, m1_grid=M1_GRID, q_grid=Q_GRID
    )
    return p_m1 * p_q * _redshift(data, hyper)


def nsbh_population(data, hyper):
    """NSBH: black-hole mass power law x uniform neutron-star mass x (1+z)^lamb."""
    p_m1 = m.power_law_primary(data["mass_1"], hyper)
    p_q = m.secondary_mass_uniform(data["mass_ratio"], data["mass_1"], hyper)
    return p_m1 * p_q * _redshift(data, hyper)


# The two-subpopulation rate density: rate_bbh p_BBH + rate_nsbh p_NSBH.
MIXTURE = m.Mixture(BBH=(population, "rate_bbh"), NSBH=(nsbh_population, "rate_nsbh"))


def hyperparameters(fixed: dict, params: dict) -> dict:
    """The model's hyperparameters: ``fixed`` updated by ``params``, ``log10_x`` -> ``x``."""
    hyper = {**fixed, **params}
    for k in [k for k in hyper if k.startswith("log10_")]:
        hyper[k[len("log10_") :]] = 10.0 ** hyper.pop(k)
    return hyper


def truths_of(cat: _mock.Catalogue) -> dict[str, float]:
    """The catalogue's truths, plus ``log10_rate_*`` for each rate."""
    out = dict(cat.truths)
    out |= {f"log10_{k}": float(np.log10(v)) for k, v in cat.truths.items() if k.startswith("rate")}
    return out


# ------------------------------------------------------------------------------------- data
def load_catalogue(config: GWConfig) -> _mock.Catalogue:
    """The catalogue ``config`` names (its ``catalogue`` file, else the model's shipped one),
    checked against the config.

    Raises:
        jaxaccel.ConfigError: naming ``catalogue`` (missing file, not an archive, missing arrays,
            no observing time for ``bbh+nsbh``, no truths for the fixed hyperparameters) or
            ``n_events`` (more than the catalogue holds).
    """
    try:
        if config.catalogue is None:
            cat = _mock.default_catalogue(config.model)
        else:
            cat = _mock.Catalogue.load(config.catalogue)
    except GWDataError as e:
        raise ConfigError(str(e), key="catalogue") from None
    need = ("mass_1", "mass_ratio", "redshift")
    for what, table in (("post_", cat.posteriors), ("inj_", cat.injections)):
        lacking = [f"{what}{k}" for k in need if k not in table]
        if lacking:
            raise ConfigError(
                f"{config.catalogue}: missing arrays {lacking} (the models need {', '.join(need)})",
                key="catalogue",
            )
    if config.model == "bbh+nsbh" and cat.observing_time is None:
        raise ConfigError(
            "model 'bbh+nsbh' samples the rates: the catalogue needs an observing_time (one made "
            "by make_mixture_catalogue)",
            key="catalogue",
        )
    truths = truths_of(cat)
    missing = [k for k in HYPERPARAMETERS[config.model] if k not in truths]
    if missing:
        raise ConfigError(
            f"the catalogue has no truths for {missing} (model {config.model!r}; the job fixes the "
            f"hyperparameters it does not sample at the catalogue's truth_<name> values; it has "
            f"{sorted(cat.truths)})",
            key="catalogue",
        )
    if config.n_events is not None and config.n_events > cat.n_events:
        raise ConfigError(
            f"expected at most the catalogue's {cat.n_events} events, got {config.n_events}",
            key="n_events",
        )
    return cat


def build_target(cat: _mock.Catalogue, config: GWConfig):
    """``(target, likelihood, fixed)``: the `science.samplers.Target` over ``config.free``
    (uniform priors), the `HierarchicalLikelihood` and the fixed hyperparameters."""
    import numpyro.distributions as dist

    from science import samplers as ss

    mixture = config.model == "bbh+nsbh"
    n = cat.n_events if config.n_events is None else config.n_events
    lik = HierarchicalLikelihood(
        MIXTURE if mixture else population,
        {k: v[:n] for k, v in cat.posteriors.items()},
        cat.pe_prior[:n],
        cat.injections,
        cat.p_draw,
        cat.n_draw,
        rate="sampled" if mixture else "marginalised",
        time_volume=cat.observing_time if mixture else None,
    )
    drop = set(config.free) | {k[len("log10_") :] for k in config.free if k.startswith("log10_")}
    fixed = {k: jnp.asarray(v) for k, v in cat.truths.items() if k not in drop}
    prior = {k: dist.Uniform(*config.bounds(k)) for k in config.free}

    def log_likelihood(params):
        return lik.log_likelihood(hyperparameters(fixed, params))

    return ss.Target(log_likelihood, prior), lik, fixed


def make_sampler(config: GWConfig):
    """The job's flow-VI sampler: ``config.steps`` fit steps in chunks of ``config.chunk``,
    ``config.n_draws`` importance draws, one PSIS refinement stage if ``config.refine``."""
    from science import samplers as ss

    return ss.FlowVI(
        steps=config.steps,
        n_elbo=32,
        chunk=min(config.chunk, config.steps),
        n_draws=config.n_draws,
        draw_batch=min(5000, config.n_draws),
        refine_steps=config.steps,
        max_refine=1 if config.refine else 0,
    )


def _digest(cat: _mock.Catalogue, n_events: int) -> str:
    """A digest of the data the target sees (so a checkpoint never resumes on other data)."""
    h = hashlib.sha256()
    for a in (*cat.posteriors.values(), cat.pe_prior, *cat.injections.values(), cat.p_draw):
        h.update(np.ascontiguousarray(a[:n_events] if a.shape == cat.pe_prior.shape else a))
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------- results
def recovery_table(result, truths: dict[str, float], *, key: jax.Array) -> list[dict]:
    """Median and 90% interval of each parameter (4000 equally weighted draws, from ``key``)
    against its truth."""
    rows = []
    x = result.resample(key, 4000)
    for j, name in enumerate(result.names):
        lo, med, hi = np.quantile(x[:, j], [0.05, 0.5, 0.95])
        t = truths.get(name)
        rows.append(
            {
                "param": name,
                "median": float(med),
                "low90": float(lo),
                "high90": float(hi),
                "truth": t,
                "inside90": None if t is None else bool(lo <= t <= hi),
            }
        )
    return rows


def mass_curves(model: str, grid, hyper) -> dict[str, jax.Array]:
    """Primary-mass distribution per subpopulation: ``p(m1)`` for ``bbh``; for ``bbh+nsbh`` the
    merger rate per unit m1, ``rate_k p_k(m1)`` [yr^-1 Msun^-1]."""
    if model == "bbh":
        return {"BBH": m.power_law_peak(grid, hyper, m1_grid=M1_GRID)}
    bbh, nsbh = (m.Mixture.hyper_for(k, hyper) for k in ("BBH", "NSBH"))
    return {
        "BBH": hyper["rate_bbh"] * m.power_law_peak(grid, bbh, m1_grid=M1_GRID),
        "NSBH": hyper["rate_nsbh"] * m.power_law_primary(grid, nsbh),
    }


def local_rates(result, fixed, truths, *, key: jax.Array) -> dict[str, dict[str, float]]:
    """Median and 90% interval of each subpopulation's local rate density R(z=0) [Gpc^-3 yr^-1]
    over 2000 posterior draws (from ``key``), with the true value."""
    draws = jnp.asarray(result.resample(key, 2000))

    def rates(row):
        h = hyperparameters(fixed, dict(zip(result.names, row, strict=True)))
        return {k: m.local_rate(h[k], h, z_max=_mock.Z_MAX) for k in ("rate_bbh", "rate_nsbh")}

    per_draw = jax.jit(jax.vmap(rates))(draws)
    out = {}
    for name, vals in per_draw.items():
        lo, med, hi = (float(v) for v in np.quantile(np.asarray(vals), [0.05, 0.5, 0.95]))
        true = float(m.local_rate(truths[name], truths, z_max=_mock.Z_MAX))
        out[name] = {"median": med, "low90": lo, "high90": hi, "truth": true}
    return out


def plot_mass_distribution(path, result, fixed, truths, model="bbh", *, key: jax.Array):
    """Population-predictive primary-mass distribution (300 posterior draws from ``key``): 90%
    band and median vs the truth."""
    grid = jnp.linspace(2.0, 100.0, 400)
    names = result.names

    @jax.jit
    def curves(rows, true_hyper):
        per_draw = jax.vmap(
            lambda row: mass_curves(
                model, grid, hyperparameters(fixed, dict(zip(names, row, strict=True)))
            )
        )(rows)
        return per_draw, mass_curves(model, grid, true_hyper)

    per_draw, true = curves(
        jnp.asarray(result.resample(key, 300)), {k: jnp.asarray(v) for k, v in truths.items()}
    )
    fig, ax = runtime.figure(figsize=(6, 4), layout="constrained")
    floor = []
    for name, t in true.items():
        lo, med, hi = np.quantile(np.asarray(per_draw[name]), [0.05, 0.5, 0.95], axis=0)
        line = ax.plot(grid, med, label=f"{name} median")[0]
        ax.fill_between(grid, lo, hi, alpha=0.3, color=line.get_color(), label=f"{name} 90%")
        ax.plot(grid, t, "--", color="k", lw=1, label=f"{name} injected")
        t = np.asarray(t)
        floor.append(float(t[t > 0].min()) / 10)
        floor.append(float(max(hi.max(), t.max())) * 2)
    ax.set_yscale("log")
    ax.set_ylim(max(1e-6 * max(floor), min(floor[::2])), max(floor[1::2]))
    ax.set_xlabel("primary mass m1 [Msun]")
    ax.set_ylabel("p(m1)" if model == "bbh" else "dR/dm1 [yr^-1 Msun^-1]")
    ax.legend(fontsize=7)
    return runtime.save_figure(fig, path, dpi=90)


def _table(rows, local, result, diag) -> str:
    w = max(8, *(len(r["param"]) for r in rows))
    lines = [f"{'param':>{w}} {'median':>9} {'90% interval':>20} {'truth':>8}  inside"]
    for r in rows:
        interval = f"[{r['low90']:.3g}, {r['high90']:.3g}]"
        lines.append(
            f"{r['param']:>{w}} {r['median']:9.3g} {interval:>20} {r['truth']:8.3g}  "
            f"{'yes' if r['inside90'] else 'NO'}"
        )
    for k, v in local.items():
        lines.append(
            f"local rate {k}: {v['median']:.3g} [{v['low90']:.3g}, {v['high90']:.3g}] "
            f"Gpc^-3 yr^-1 (truth {v['truth']:.3g})"
        )
    d = result.diagnostics
    lines.append(
        f"k-hat {d['khat']:.2f}, importance ESS {d['ess_is']:.0f}, log Z {result.log_z:.2f} +- "
        f"{result.log_z_err:.2f}; injection N_eff at the median {diag['neff_injections']:.0f} "
        f"(needs > {diag['neff_threshold']:.0f})"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- the job
def science(config: GWConfig, *, key: jax.Array, out: Path, progress: bool = True):
    """Fit ``config.free`` on the catalogue; write samples, figures; return the `Summary`."""
    from science import samplers as ss

    cat = load_catalogue(config)
    target, lik, fixed = build_target(cat, config)
    if progress:
        print(
            f"gw-population ({config.model}): {lik.n_events} events x {lik.n_samples} samples, "
            f"{cat.p_draw.size} found injections; free {list(config.free)}",
            file=sys.stderr,
        )
    k_sample, k_table, k_plot, k_rates = jax.random.split(key, 4)
    result = ss.sample(
        k_sample,
        target,
        make_sampler(config),
        out=out / "checkpoint",
        progress=progress,
        fingerprint=_digest(cat, lik.n_events),
    )
    result.save(out, plot=False)
    all_truths = truths_of(cat)
    truths = {k: all_truths[k] for k in config.free}
    result.corner(out / "corner.png", truths=truths)
    plot_mass_distribution(
        out / "mass_distribution.png", result, fixed, cat.truths, config.model, key=k_plot
    )
    rows = recovery_table(result, truths, key=k_table)
    best = {r["param"]: jnp.asarray(r["median"]) for r in rows}
    diag = lik.diagnostics(hyperparameters(fixed, best))
    local = {}
    if config.model == "bbh+nsbh":
        local = local_rates(result, fixed, all_truths, key=k_rates)
    results: dict[str, Any] = {
        "model": config.model,
        "n_events": lik.n_events,
        "recovery": rows,
        "log_z": result.log_z,
        "log_z_err": result.log_z_err,
        "khat": result.diagnostics["khat"],
        "ess": result.diagnostics["ess_is"],
        "selection_at_median": diag,
    }
    if local:
        results["local_rates"] = local
    return runtime.Summary(
        job="gw-population",
        results=results,
        table=_table(rows, local, result, diag),
        files=("samples.npz", "result.json", "corner.png", "mass_distribution.png"),
    )


JOB = runtime.Job(
    name="gw-population",
    description=__doc__ or "",
    config=GWConfig,
    science=science,
    sizes={
        "tiny": {"preset": "tiny", "steps": 150, "chunk": 50, "n_draws": 1000, "refine": False},
        "full": {"preset": "full", "steps": 3000, "n_draws": 40000},
    },
    options=(
        runtime.Option(flag="--model", key="model", help="bbh (default) or bbh+nsbh"),
        runtime.Option(flag="--catalogue", key="catalogue", help="an .npz from Catalogue.save"),
    ),
    checks=load_catalogue,
)
