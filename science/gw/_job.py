"""``jaxaccel gw-population``: population inference on a (mock) GW catalogue with the flow sampler.

By default it analyses the catalogue shipped with the package (69 detections drawn from the GWTC-3
Power Law + Peak medians through an aLIGO-design detection model), fitting the power law + peak mass
model, the mass-ratio slope and the redshift evolution with flow VI + importance reweighting. It
writes posterior samples, ``summary.json``, a recovery table (median and 90% interval vs the injected
truth), a corner plot and the population-predictive primary-mass distribution; an interrupted run
resumes from its checkpoint. Sizes: ``tiny`` (3 hyperparameters, 20 events; tests), ``small`` (7
hyperparameters, all events; a few minutes on 2 cores), ``full`` (all 9).
Config (TOML, all optional): ``catalogue`` (path of an .npz written by ``Catalogue.save``),
``free`` (list of hyperparameter names), ``priors`` (table name -> [low, high]), ``steps``,
``n_draws``, ``n_events``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from . import _mock, _models as m
from ._likelihood import HierarchicalLikelihood

__all__ = ["main", "run", "JobConfig", "PRIORS"]

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
SIZES = {
    "bbh": {
        "tiny": {"free": ("alpha", "mpp", "lamb"), "n_events": 20, "steps": 200, "n_draws": 2000},
        "small": {
            "free": ("alpha", "beta", "mmax", "lam", "mpp", "sigpp", "lamb"),
            "n_events": None,
            "steps": 1000,
            "n_draws": 8000,
        },
        "full": {
            "free": tuple(k for k in PRIORS if "." not in k and "rate" not in k),
            "n_events": None,
            "steps": 3000,
            "n_draws": 40000,
        },
    },
    "bbh+nsbh": {
        "tiny": {
            "free": ("log10_rate_bbh", "log10_rate_nsbh", "lamb"),
            "n_events": None,
            "steps": 200,
            "n_draws": 2000,
        },
        "small": {
            "free": ("log10_rate_bbh", "log10_rate_nsbh", "lamb", "BBH.alpha", "NSBH.alpha"),
            "n_events": None,
            "steps": 1000,
            "n_draws": 8000,
        },
        "full": {
            "free": (
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
            "n_events": None,
            "steps": 3000,
            "n_draws": 40000,
        },
    },
}
MODELS = tuple(SIZES)
# Coarser normalisation grids than gwpopulation's (1000 x 500): the job evaluates the likelihood
# millions of times and the (m1, q) grid would dominate the cost; 200 x 100 keeps densities
# normalised to ~1e-3 (tests/science/test_gw_models.py checks the default grids).
M1_GRID = (2.0, 100.0, 200)
Q_GRID = (0.001, 1.0, 100)
KEYS = {"catalogue", "model", "free", "priors", "steps", "n_draws", "n_events"}


def prior_bounds(name: str, priors: dict[str, tuple[float, float]]) -> tuple[float, float] | None:
    """Bounds of ``name``, else of its last dotted component (``"BBH.alpha"`` -> ``alpha``)."""
    return priors.get(name, priors.get(name.rsplit(".", 1)[-1]))


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobConfig:
    model: str
    free: tuple[str, ...]
    priors: dict[str, tuple[float, float]]
    n_events: int | None
    steps: int
    n_draws: int
    catalogue: str | None = None

    @classmethod
    def for_size(cls, size: str, overrides: dict) -> JobConfig:
        unknown = set(overrides) - KEYS
        if unknown:
            raise SystemExit(f"--config: unknown keys {sorted(unknown)}; known {sorted(KEYS)}")
        model = overrides.get("model", "bbh")
        if model not in SIZES:
            raise SystemExit(f"--config: model: expected one of {list(MODELS)}, got {model!r}")
        base = dict(SIZES[model][size])
        base.update({k: v for k, v in overrides.items() if k not in ("priors", "model")})
        priors = dict(PRIORS)
        for k, v in overrides.get("priors", {}).items():
            if prior_bounds(k, PRIORS) is None:
                raise SystemExit(
                    f"--config: priors.{k}: unknown hyperparameter; known {list(PRIORS)}"
                )
            if len(v) != 2 or not v[0] < v[1]:
                raise SystemExit(f"--config: priors.{k}: expected [low, high] with low < high")
            priors[k] = (float(v[0]), float(v[1]))
        free = tuple(base["free"])
        bad = [f for f in free if prior_bounds(f, priors) is None]
        if bad:
            raise SystemExit(f"--config: free: unknown hyperparameters {bad}; known {list(PRIORS)}")
        return cls(
            model=model,
            free=free,
            priors=priors,
            n_events=base["n_events"],
            steps=int(base["steps"]),
            n_draws=int(base["n_draws"]),
            catalogue=base.get("catalogue"),
        )


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


def _truths(cat: _mock.Catalogue) -> dict[str, float]:
    out = dict(cat.truths)
    out |= {f"log10_{k}": float(np.log10(v)) for k, v in cat.truths.items() if k.startswith("rate")}
    return out


def load_catalogue(config: JobConfig) -> _mock.Catalogue:
    if config.catalogue:
        path = Path(config.catalogue)
        if not path.exists():
            raise SystemExit(f"--config: catalogue: file {path} does not exist")
        return _mock.Catalogue.load(path)
    return _mock.default_catalogue(config.model)


def build_target(cat: _mock.Catalogue, config: JobConfig):
    import numpyro.distributions as dist

    from science import samplers as ss

    mixture = config.model == "bbh+nsbh"
    if mixture and cat.observing_time is None:
        raise SystemExit(
            "model 'bbh+nsbh' samples the rates: the catalogue needs an observing_time (one made "
            "by make_mixture_catalogue)"
        )
    n = cat.n_events if config.n_events is None else min(config.n_events, cat.n_events)
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
    truths = _truths(cat)
    missing = [k for k in config.free if k not in truths]
    if missing:
        raise SystemExit(
            f"free: {missing} are not hyperparameters of this catalogue's model "
            f"(it has {sorted(truths)})"
        )
    drop = set(config.free) | {k[len("log10_") :] for k in config.free if k.startswith("log10_")}
    fixed = {k: jnp.asarray(v) for k, v in cat.truths.items() if k not in drop}
    prior = {k: dist.Uniform(*prior_bounds(k, config.priors)) for k in config.free}

    def log_likelihood(params):
        return lik.log_likelihood(hyperparameters(fixed, params))

    return ss.Target(log_likelihood, prior), lik, fixed


def recovery_table(result, truths: dict[str, float]) -> list[dict]:
    rows = []
    x = result.resample(jax.random.key(0), 4000)
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


def local_rates(result, fixed, truths) -> dict[str, dict[str, float]]:
    """Median and 90% interval of each subpopulation's local rate density R(z=0) [Gpc^-3 yr^-1]."""
    draws = jnp.asarray(result.resample(jax.random.key(2), 2000))

    def rates(row):
        h = hyperparameters(fixed, dict(zip(result.names, row, strict=True)))
        return {k: m.local_rate(h[k], h, z_max=_mock.Z_MAX) for k in ("rate_bbh", "rate_nsbh")}

    per_draw = jax.vmap(rates)(draws)
    out = {}
    for key, vals in per_draw.items():
        lo, med, hi = (float(v) for v in np.quantile(np.asarray(vals), [0.05, 0.5, 0.95]))
        true = float(m.local_rate(truths[key], truths, z_max=_mock.Z_MAX))
        out[key] = {"median": med, "low90": lo, "high90": hi, "truth": true}
    return out


def plot_mass_distribution(path, result, fixed, truths, model="bbh"):
    """Population-predictive primary-mass distribution: 90% band and median vs the truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = jnp.linspace(2.0, 100.0, 400)
    draws = result.resample(jax.random.key(1), 300)
    curve = jax.jit(lambda h: mass_curves(model, grid, h))
    per_draw = [
        curve(hyperparameters(fixed, dict(zip(result.names, map(jnp.asarray, row), strict=True))))
        for row in draws
    ]
    true = curve({k: jnp.asarray(v) for k, v in truths.items()})
    fig, ax = plt.subplots(figsize=(6, 4))
    floor = []
    for name, t in true.items():
        c = np.array([d[name] for d in per_draw])
        lo, med, hi = np.quantile(c, [0.05, 0.5, 0.95], axis=0)
        line = ax.plot(grid, med, label=f"{name} median")[0]
        ax.fill_between(grid, lo, hi, alpha=0.3, color=line.get_color(), label=f"{name} 90%")
        ax.plot(grid, t, "--", color="k", lw=1, label=f"{name} injected" if name else None)
        t = np.asarray(t)
        floor.append(float(t[t > 0].min()) / 10)
        floor.append(float(max(hi.max(), t.max())) * 2)
    ax.set_yscale("log")
    ax.set_ylim(max(1e-6 * max(floor), min(floor[::2])), max(floor[1::2]))
    ax.set_xlabel("primary mass m1 [Msun]")
    ax.set_ylabel("p(m1)" if model == "bbh" else "dR/dm1 [yr^-1 Msun^-1]")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def make_sampler(config: JobConfig, *, refine: bool = True):
    """The job's flow-VI sampler: ``config.steps`` fit steps, ``config.n_draws`` importance draws,
    one PSIS refinement stage if ``refine``."""
    from science import samplers as ss

    return ss.FlowVI(
        steps=config.steps,
        n_elbo=32,
        chunk=min(250, config.steps),
        n_draws=config.n_draws,
        draw_batch=min(5000, config.n_draws),
        refine_steps=config.steps,
        max_refine=1 if refine else 0,
    )


def run(size: str, seed: int, out: Path, overrides: dict | None = None) -> dict:
    from science import samplers as ss

    config = JobConfig.for_size(size, overrides or {})
    t0 = time.perf_counter()
    cat = load_catalogue(config)
    target, lik, fixed = build_target(cat, config)
    n_events = lik.n_events
    print(
        f"gw-population ({config.model}): {n_events} events x {lik.n_samples} samples, "
        f"{cat.p_draw.size} found injections; free {list(config.free)}"
    )
    sampler = make_sampler(config, refine=size != "tiny")
    result = ss.sample(jax.random.key(seed), target, sampler, out=out / "checkpoint")
    result.save(out, plot=False)
    all_truths = _truths(cat)
    truths = {k: all_truths[k] for k in config.free}
    result.corner(out / "corner.png", truths=truths)
    plot_mass_distribution(out / "mass_distribution.png", result, fixed, cat.truths, config.model)
    rows = recovery_table(result, truths)
    best = {r["param"]: jnp.asarray(r["median"]) for r in rows}
    diag = lik.diagnostics(hyperparameters(fixed, best))
    summary = {
        "job": "gw-population",
        "size": size,
        "model": config.model,
        "seed": seed,
        "n_events": n_events,
        "recovery": rows,
        "log_z": result.log_z,
        "log_z_err": result.log_z_err,
        "khat": result.diagnostics["khat"],
        "ess": result.diagnostics["ess_is"],
        "selection_at_median": diag,
    }
    if config.model == "bbh+nsbh":
        summary["local_rates"] = local_rates(result, fixed, all_truths)
    summary["wall_seconds"] = time.perf_counter() - t0
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    w = max(8, *(len(r["param"]) for r in rows))
    print(f"\n{'param':>{w}} {'median':>9} {'90% interval':>20} {'truth':>8}  inside")
    for r in rows:
        interval = f"[{r['low90']:.3g}, {r['high90']:.3g}]"
        print(
            f"{r['param']:>{w}} {r['median']:9.3g} {interval:>20} {r['truth']:8.3g}  "
            f"{'yes' if r['inside90'] else 'NO'}"
        )
    for k, v in summary.get("local_rates", {}).items():
        print(
            f"local rate {k}: {v['median']:.3g} [{v['low90']:.3g}, {v['high90']:.3g}] Gpc^-3 yr^-1 "
            f"(truth {v['truth']:.3g})"
        )
    print(
        f"k-hat {result.diagnostics['khat']:.2f}, importance ESS {result.diagnostics['ess_is']:.0f}, "
        f"log Z {result.log_z:.2f} +- {result.log_z_err:.2f}; injection N_eff at the median "
        f"{diag['neff_injections']:.0f} (needs > {diag['neff_threshold']:.0f})"
    )
    print(
        f"wrote {out}/summary.json, corner.png, mass_distribution.png ({summary['wall_seconds']:.0f} s)"
    )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    from jaxaccel import _cli

    return _cli.run_job("gw-population", __doc__ or "", run, argv)
