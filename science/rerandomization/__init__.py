"""Rerandomization: pools of acceptable randomizations balanced on covariates, exact randomization
tests and intervals by test inversion over them, and the pre-analysis choice of the acceptance
threshold; ``jaxaccel rerandomize`` (`JOB`, a `jaxaccel.runtime.Job`) runs it on a CSV.

The public API, by task:

- data: `Covariates` (validated, whitened covariates), `load_dataset` (the real experiments in
  `DATASETS`); errors `RerandomizationError` (a `jaxaccel.InputError`);
- design: `draw_pool` -> `Pool` (Monte-Carlo or enumerated, checkpointable),
  `acceptance_threshold`, `balance_table`, `variance_reduction`, `choose_threshold`;
- inference: `randomization_test`, `fiducial_interval`, and the pieces they are built from:
  `DiffMeans` (every sharp null's p-value after one pass over the pool), `invert_test`,
  `pool_products` (that pass), `candidate_runner` (the candidate kernel `draw_pool` runs);
- plots: `plot_randomization`, `plot_interval`, `plot_balance`, `plot_balance_distribution`,
  `plot_design` (matplotlib object API; each returns its axes);
- the job: `JOB` and its config `RerandomizeConfig`.
"""

from ._balance import (
    BALANCES as BALANCES,
    Covariates as Covariates,
    RerandomizationError as RerandomizationError,
)
from ._data import DATASETS as DATASETS, load_dataset as load_dataset
from ._design import (
    BalanceRow as BalanceRow,
    DesignRow as DesignRow,
    balance_table as balance_table,
    choose_threshold as choose_threshold,
    variance_reduction as variance_reduction,
)
from ._inference import (
    DiffMeans as DiffMeans,
    Interval as Interval,
    TestResult as TestResult,
    fiducial_interval as fiducial_interval,
    invert_test as invert_test,
    pool_products as pool_products,
    randomization_test as randomization_test,
)
from ._job import JOB as JOB, RerandomizeConfig as RerandomizeConfig
from ._plots import (
    plot_balance as plot_balance,
    plot_balance_distribution as plot_balance_distribution,
    plot_design as plot_design,
    plot_interval as plot_interval,
    plot_randomization as plot_randomization,
)
from ._pool import (
    ENUMERATE_HARD_LIMIT as ENUMERATE_HARD_LIMIT,
    MAX_ENUMERATE as MAX_ENUMERATE,
    Pool as Pool,
    acceptance_threshold as acceptance_threshold,
    candidate_runner as candidate_runner,
    draw_pool as draw_pool,
)

__all__ = [
    "JOB",
    "RerandomizeConfig",
    "DATASETS",
    "load_dataset",
    "DiffMeans",
    "invert_test",
    "pool_products",
    "candidate_runner",
    "plot_balance",
    "plot_balance_distribution",
    "plot_design",
    "plot_interval",
    "plot_randomization",
    "BALANCES",
    "Covariates",
    "RerandomizationError",
    "ENUMERATE_HARD_LIMIT",
    "MAX_ENUMERATE",
    "Pool",
    "acceptance_threshold",
    "draw_pool",
    "Interval",
    "TestResult",
    "fiducial_interval",
    "randomization_test",
    "BalanceRow",
    "DesignRow",
    "balance_table",
    "choose_threshold",
    "variance_reduction",
]
