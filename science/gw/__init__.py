"""Gravitational-wave population inference: population models, the hierarchical likelihood with
selection effects, mock catalogues with known truths, and the ``jaxaccel gw-population`` job.

The job's pieces are public so that notebooks and benchmarks can take it apart:

- `JOB` (the `jaxaccel.runtime.Job`; ``JOB.load(size="tiny")`` gives a checked `GWConfig`,
  ``JOB.run(config, key=..., out=...)`` runs it) and `GWConfig`;
- `load_catalogue(config)` (the configured catalogue, checked), `build_target(catalogue,
  config)` -> ``(target, likelihood, fixed)``, `make_sampler(config)`;
- the job's models `population`, `nsbh_population`, `MIXTURE` on its grids `M1_GRID`/`Q_GRID`,
  `hyperparameters(fixed, params)` (merges and turns ``log10_x`` into ``x``), `truths_of`;
- results: `recovery_table`, `local_rates`, `mass_curves`, `plot_mass_distribution` (each
  resampling with a ``key`` keyword);
- `PRIORS`, `FREE` and `N_EVENTS` (each model's defaults per preset), the mock truths
  `GWTC3_PLP` and `NSBH_DEFAULT`, the redshift range `Z_MAX`.
"""

from . import _models as models
from ._analysis import (
    M1_GRID as M1_GRID,
    MIXTURE as MIXTURE,
    Q_GRID as Q_GRID,
    build_target as build_target,
    hyperparameters as hyperparameters,
    local_rates as local_rates,
    make_sampler as make_sampler,
    mass_curves as mass_curves,
    nsbh_population as nsbh_population,
    plot_mass_distribution as plot_mass_distribution,
    population as population,
    recovery_table as recovery_table,
    truths_of as truths_of,
)
from ._job import (
    FREE as FREE,
    JOB as JOB,
    N_EVENTS as N_EVENTS,
    PRIORS as PRIORS,
    GWConfig as GWConfig,
    load_catalogue as load_catalogue,
)
from ._likelihood import (
    GWDataError as GWDataError,
    HierarchicalLikelihood as HierarchicalLikelihood,
)
from ._mock import (
    GWTC3_PLP as GWTC3_PLP,
    NSBH_DEFAULT as NSBH_DEFAULT,
    SNR_THRESHOLD as SNR_THRESHOLD,
    Z_MAX as Z_MAX,
    Catalogue as Catalogue,
    default_catalogue as default_catalogue,
    make_catalogue as make_catalogue,
    make_mixture_catalogue as make_mixture_catalogue,
)

__all__ = [
    "models",
    "JOB",
    "GWConfig",
    "FREE",
    "N_EVENTS",
    "PRIORS",
    "M1_GRID",
    "Q_GRID",
    "MIXTURE",
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
    "HierarchicalLikelihood",
    "GWDataError",
    "Catalogue",
    "GWTC3_PLP",
    "NSBH_DEFAULT",
    "SNR_THRESHOLD",
    "Z_MAX",
    "default_catalogue",
    "make_catalogue",
    "make_mixture_catalogue",
]
