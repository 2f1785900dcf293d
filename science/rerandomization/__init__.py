"""Rerandomization: pools of acceptable randomizations balanced on covariates, exact randomization
tests and intervals by test inversion over them, and the pre-analysis choice of the acceptance
threshold; ``jaxaccel rerandomize`` runs it on a CSV."""

from ._balance import (
    BALANCES as BALANCES,
    Covariates as Covariates,
    RerandomizationError as RerandomizationError,
)
from ._design import (
    BalanceRow as BalanceRow,
    DesignRow as DesignRow,
    balance_table as balance_table,
    choose_threshold as choose_threshold,
    variance_reduction as variance_reduction,
)
from ._inference import (
    Interval as Interval,
    TestResult as TestResult,
    fiducial_interval as fiducial_interval,
    randomization_test as randomization_test,
)
from ._pool import (
    ENUMERATE_HARD_LIMIT as ENUMERATE_HARD_LIMIT,
    MAX_ENUMERATE as MAX_ENUMERATE,
    Pool as Pool,
    acceptance_threshold as acceptance_threshold,
    draw_pool as draw_pool,
)

__all__ = [
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
