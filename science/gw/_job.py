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

from . import _mock
from ._analysis import (
    build_target,
    hyperparameters,
    local_rates,
    make_sampler,
    plot_mass_distribution,
    recovery_table,
    truths_of,
)
from ._likelihood import GWDataError

__all__ = ["JOB", "GWConfig", "PRIORS", "FREE", "N_EVENTS", "load_catalogue"]

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


def _digest(cat: _mock.Catalogue, n_events: int) -> str:
    """A digest of the data the target sees (so a checkpoint never resumes on other data)."""
    h = hashlib.sha256()
    for a in (*cat.posteriors.values(), cat.pe_prior, *cat.injections.values(), cat.p_draw):
        h.update(np.ascontiguousarray(a[:n_events] if a.shape == cat.pe_prior.shape else a))
    return h.hexdigest()[:16]


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
