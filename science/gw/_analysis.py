"""The gw-population analysis, piece by piece: the job's population models on its grids, the
target over the free hyperparameters, the sampler, and the summaries of a fit (recovery table,
local rates, the population-predictive mass distribution). `science.gw._job` runs them as the
``jaxaccel gw-population`` job; notebooks, benchmarks and the calibration script call them too.
Every function that draws takes a ``key`` keyword.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from jaxaccel import runtime

from . import _mock, _models as m
from ._likelihood import HierarchicalLikelihood

if TYPE_CHECKING:
    from ._job import GWConfig

__all__ = [
    "M1_GRID",
    "Q_GRID",
    "MIXTURE",
    "population",
    "nsbh_population",
    "hyperparameters",
    "truths_of",
    "build_target",
    "make_sampler",
    "recovery_table",
    "mass_curves",
    "local_rates",
    "plot_mass_distribution",
]

# Coarser normalisation grids than gwpopulation's (1000 x 500): the job evaluates the likelihood
# millions of times and the (m1, q) grid would dominate the cost; 200 x 100 keeps densities
# normalised to ~1e-3 (tests/science/test_gw_models.py checks the default grids).
M1_GRID = (2.0, 100.0, 200)
Q_GRID = (0.001, 1.0, 100)


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
