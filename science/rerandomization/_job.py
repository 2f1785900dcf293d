"""``jaxaccel rerandomize``: design and analyse a (re)randomized experiment from a CSV.

Input: ``--csv FILE`` with one row per unit, ``--covariates a,b,c`` (default: every numeric column
except treatment and outcome), ``--treatment COL`` (0/1, the observed assignment; optional for a
design-only run, which then needs ``--n-treated``) and ``--outcome COL`` (optional). Without
``--csv`` the job uses ``--dataset nsw`` (default: the LaLonde NSW experiment, Dehejia-Wahba
sample, shipped by the ``causaldata`` package: 445 men, 185 treated, outcome 1978 earnings) or
``--dataset thornton_hiv`` (Thornton 2008, any cash incentive -> learned HIV result).

The design is complete randomization (``--accept-prob``/``--threshold`` unset: the NSW was
completely randomized) or rerandomization accepting Mahalanobis balance below a threshold.
Writes to ``--out``: ``summary.json`` (design, throughput, observed balance, test p-value,
interval, balance and design tables), ``balance.md``, ``assignment.csv`` (a fresh acceptable
assignment, for a design-only run) and the plots ``randomization.png``, ``interval.png``,
``balance.png``, ``balance_distribution.png`` and ``design.png``. The pool's draw and the design
table are checkpointed in ``checkpoint/``: a rerun with the same settings resumes.

Sizes: ``tiny`` (tests: 2000 assignments, a 2-point design table), ``small`` (100 000
assignments, 7-point design table with 200 simulations each), ``full`` (10^6 assignments, 500
simulations). Every flag above is also a config key (TOML: ``csv``, ``dataset``, ``treatment``,
``outcome``, ``covariates``, ``n_treated``, ``accept_prob``, ``threshold``, ``ridge``), besides
``n_accepted``, ``design_sims``, ``design_pool``, ``accept_probs``, ``r2`` and ``alpha`` (see
`RerandomizeConfig`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Annotated, Literal

import jax
import numpy as np

from jaxaccel import runtime

from . import _plots
from ._balance import Covariates, RerandomizationError
from ._data import DATASETS, read_experiment
from ._design import DesignRow, balance_table, choose_threshold, variance_reduction
from ._inference import fiducial_interval, randomization_test
from ._pool import draw_pool

__all__ = ["JOB", "RerandomizeConfig"]

Probability = Annotated[float, runtime.Range(gt=0, le=1)]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RerandomizeConfig:
    """Settings of ``jaxaccel rerandomize`` (defaults: the ``small`` size).

    Attributes:
        csv: a CSV file, one row per unit (``None``: the shipped ``dataset``).
        dataset: a real experiment shipped by ``causaldata`` (`DATASETS`), used without ``csv``.
        treatment: the CSV's 0/1 column of the observed assignment (``None``: design only).
        outcome: the CSV's outcome column (``None``: no analysis).
        covariates: columns balanced on (default: the data set's, or every numeric CSV column
            except treatment and outcome).
        n_treated: treated units of a design-only run (without ``treatment``).
        accept_prob: rerandomization accepting this fraction of complete randomizations
            (the best balanced); ``threshold``: accepting Mahalanobis balance <= threshold
            instead. Neither: complete randomization.
        ridge: regularises a singular covariate covariance (`Covariates.build`).
        n_accepted: Monte-Carlo pool size.
        design_sims, design_pool, accept_probs, r2, alpha: the design table of
            `choose_threshold` (simulations per acceptance probability, pool size per
            simulation, the acceptance probabilities, the outcome model's R^2) and the test level.
    """

    csv: Path | None = None
    dataset: Literal["nsw", "thornton_hiv"] = "nsw"
    treatment: str | None = None
    outcome: str | None = None
    covariates: Annotated[tuple[str, ...], runtime.Range(ge=1, length=True)] | None = None
    n_treated: Annotated[int, runtime.Range(ge=2)] | None = None
    accept_prob: Probability | None = None
    threshold: Annotated[float, runtime.Range(gt=0)] | None = None
    ridge: Annotated[float, runtime.Range(ge=0)] = 0.0
    n_accepted: Annotated[int, runtime.Range(ge=100)] = 100_000
    design_sims: Annotated[int, runtime.Range(ge=2)] = 200
    design_pool: Annotated[int, runtime.Range(ge=100)] = 2000
    accept_probs: Annotated[tuple[Probability, ...], runtime.Range(ge=1, length=True)] = (
        1.0, 0.5, 0.2, 0.1, 0.05, 0.01, 0.001,
    )  # fmt: skip
    r2: Annotated[float, runtime.Range(ge=0, lt=1)] = 0.5
    alpha: Annotated[float, runtime.Range(gt=0, lt=1)] = 0.05

    def __post_init__(self):
        if self.accept_prob is not None and self.threshold is not None:
            raise runtime.ConfigError(
                f"give accept_prob or threshold, not both (threshold = {self.threshold})",
                key="accept_prob",
            )
        if self.csv is None:
            for key in ("treatment", "outcome"):
                if getattr(self, key) is not None:
                    raise runtime.ConfigError(
                        f"set only with csv; dataset {self.dataset!r} uses its own column "
                        f"{DATASETS[self.dataset][key]!r}",
                        key=key,
                    )
            if self.n_treated is not None:
                raise runtime.ConfigError(
                    f"set only with a design-only csv; dataset {self.dataset!r} has its treatment",
                    key="n_treated",
                )
        elif self.treatment is None and self.n_treated is None:
            raise runtime.ConfigError(
                "no treatment column given: set treatment, or n_treated for a design-only run",
                key="csv",
            )
        elif self.treatment is not None and self.n_treated is not None:
            raise runtime.ConfigError(
                f"the treatment column {self.treatment!r} sets it; give one of them",
                key="n_treated",
            )
        if self.outcome is not None and self.treatment is None:
            raise runtime.ConfigError(
                "an analysis needs the observed assignment: set treatment too", key="outcome"
            )
        if self.covariates is not None:
            twice = sorted({c for c in self.covariates if self.covariates.count(c) > 1})
            if twice:
                raise runtime.ConfigError(f"{twice[0]!r} is listed twice", key="covariates")
            for key in ("treatment", "outcome"):
                if getattr(self, key) in self.covariates:
                    raise runtime.ConfigError(
                        f"{getattr(self, key)!r} is the {key} column", key="covariates"
                    )


SIZES = {
    "tiny": {"n_accepted": 2000, "design_sims": 20, "design_pool": 300, "accept_probs": (1.0, 0.1)},
    "full": {"n_accepted": 1_000_000, "design_sims": 500, "design_pool": 5000},
}


def check_inputs(config: RerandomizeConfig) -> None:
    """Cheap checks before any pool is drawn: the data, its columns, the design's balance."""
    df, tcol, _, covs, _ = read_experiment(config)
    cov = Covariates.build(df[covs], ridge=config.ridge)
    if tcol is not None and config.threshold is not None:
        m_obs = float(cov.distance(df[tcol].to_numpy().astype(bool)[None])[0])
        if m_obs > config.threshold * (1 + 1e-5):
            raise runtime.ConfigError(
                f"the observed assignment's balance {m_obs:.4g} is above it: the observed "
                "assignment could not have come from this design",
                key="threshold",
            )


def science(
    config: RerandomizeConfig, *, key: jax.Array, out: Path, progress: bool = True
) -> runtime.Summary:
    """Draw the pool, analyse the observed assignment (if any), tabulate the design."""
    df, tcol, ycol, covs, source = read_experiment(config)
    x = df[covs]
    cov = Covariates.build(x, ridge=config.ridge)
    w = None if tcol is None else df[tcol].to_numpy().astype(bool)
    n_t = int(w.sum()) if w is not None else int(config.n_treated)
    k_pool, k_design = jax.random.split(key)
    t0 = time.perf_counter()
    pool = draw_pool(
        k_pool,
        x,
        n_t,
        accept_prob=config.accept_prob,
        threshold=config.threshold,
        n_accepted=config.n_accepted,
        ridge=config.ridge,
        progress=progress,
        checkpoint=out / "checkpoint",
    )
    rate = pool.n_candidates / (time.perf_counter() - t0)
    results: dict = {
        "source": source,
        "n_units": cov.n_units,
        "n_treated": n_t,
        "covariates": covs,
        "design": {
            "accept_prob": config.accept_prob,
            "threshold": pool.threshold,
            "exact": pool.exact,
            "pool_size": pool.size,
            "n_candidates": pool.n_candidates,
            "acceptance_rate": pool.acceptance_rate,
            "v_a": float(variance_reduction(min(1.0, pool.acceptance_rate), cov.dim)),
        },
    }
    lines = [
        f"pool: {pool.size} of {pool.n_candidates} candidates, threshold {pool.threshold:.4g}; "
        f"{rate:,.0f} candidates/s (incl. compile; a resumed draw counts only what it drew)"
    ]
    if w is not None:
        from scipy import stats

        m_obs = float(cov.distance(w[None])[0])
        results["observed_balance"] = {
            "mahalanobis": m_obs,
            "chi2_cdf": float(stats.chi2.cdf(m_obs, cov.dim)),
            "pool_fraction_below": float(np.mean(pool.balance <= m_obs)),
        }
        if m_obs > pool.threshold * (1 + 1e-5):
            raise RerandomizationError(
                f"accept_prob: the observed assignment's balance {m_obs:.4g} is above the "
                f"design's threshold {pool.threshold:.4g}: it could not have come from this design"
            )
    rows = balance_table(pool, x, treatment=w)
    results["balance"] = [dataclasses.asdict(r) for r in rows]
    (out / "balance.md").write_text(_balance_md(rows))
    files = ["balance.md", "balance.png", "balance_distribution.png", "design.png"]
    _save(_plots.plot_balance(rows), out / "balance.png")
    observed = results.get("observed_balance", {}).get("mahalanobis")
    _save(
        _plots.plot_balance_distribution(pool, cov.dim, observed=observed),
        out / "balance_distribution.png",
    )
    if ycol is not None and w is not None:
        y = df[ycol].to_numpy(dtype=np.float64)
        t1 = time.perf_counter()
        test = randomization_test(pool, y, w)
        interval = fiducial_interval(pool, y, w, alpha=config.alpha)
        results["analysis"] = {
            "outcome": ycol,
            "estimate": test.statistic,
            "p_value": test.p_value,
            "min_p": test.min_p,
            "interval": [interval.low, interval.high],
            "level": interval.level,
            "interval_connected": interval.connected,
        }
        lines.append(
            f"{ycol}: difference in means {test.statistic:.4g}, randomization p = "
            f"{test.p_value:.4g}, {100 * interval.level:.0f}% interval [{interval.low:.4g}, "
            f"{interval.high:.4g}] ({time.perf_counter() - t1:.1f} s)"
        )
        _save(_plots.plot_randomization(test), out / "randomization.png")
        _save(_plots.plot_interval(interval), out / "interval.png")
        files += ["randomization.png", "interval.png"]
    elif w is None:
        a = pool.assignments(0, 1)[0]
        df.assign(assigned=a.astype(int)).to_csv(out / "assignment.csv", index=False)
        files.append("assignment.csv")
        lines.append(f"a fresh acceptable assignment: {out / 'assignment.csv'}")
    design = _design(config, k_design, x, n_t, out, progress)
    results["threshold_choice"] = design
    axes = _plots.plot_design([DesignRow(**r) for r in design["rows"]], design["recommended"])
    _save(axes[0], out / "design.png")
    lines.append(f"design table: recommended acceptance probability {design['recommended']:g}")
    return runtime.Summary(
        job="rerandomize", results=results, table="\n".join(lines), files=tuple(files)
    )


def _design(config, key, x, n_t, out: Path, progress: bool) -> dict:
    """`choose_threshold`'s table, checkpointed once computed (a rerun reads it back)."""
    ckpt = runtime.Checkpointer(
        out / "checkpoint" / "design", runtime.fingerprint("design", config, key, n_t)
    )
    found = ckpt.restore({})
    if found is not None:
        return found.meta
    rows, rec = choose_threshold(
        key,
        x,
        n_t,
        accept_probs=config.accept_probs,
        r2=config.r2,
        alpha=config.alpha,
        n_sims=config.design_sims,
        pool_size=config.design_pool,
        ridge=config.ridge,
        progress=progress,
    )
    design = runtime.to_json(
        {"rows": [dataclasses.asdict(r) for r in rows], "recommended": rec, "r2": config.r2}
    )
    ckpt.save(1, {}, meta=design)
    return design


def _save(ax, path: Path) -> None:
    runtime.save_figure(ax.figure, path, dpi=120)


def _balance_md(rows) -> str:
    def f(v):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.3f}"

    lines = [
        "| covariate | observed SMD (rand. sd) | observed std. diff | pool sd | variance ratio | v_a |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {f(r.observed_smd)} | {f(r.observed_std_diff)} | {r.pool_sd:.3f} | "
            f"{r.variance_ratio:.3f} | {'' if r.expected_ratio is None else f'{r.expected_ratio:.3f}'} |"
        )
    return "\n".join(lines) + "\n"


JOB = runtime.Job(
    name="rerandomize",
    description=__doc__ or "",
    config=RerandomizeConfig,
    science=science,
    sizes=SIZES,
    options=(
        runtime.Option(flag="--csv", key="csv", help="one row per unit"),
        runtime.Option(
            flag="--dataset", key="dataset", help=f"without --csv: one of {sorted(DATASETS)}"
        ),
        runtime.Option(flag="--treatment", key="treatment", help="0/1 column of the assignment"),
        runtime.Option(flag="--outcome", key="outcome", help="outcome column (analysis)"),
        runtime.Option(flag="--covariates", key="covariates", help="comma-separated columns"),
        runtime.Option(flag="--n-treated", key="n_treated", help="design-only runs: treated units"),
        runtime.Option(
            flag="--accept-prob", key="accept_prob", help="rerandomization acceptance prob."
        ),
        runtime.Option(flag="--threshold", key="threshold", help="Mahalanobis threshold"),
        runtime.Option(flag="--ridge", key="ridge", help="regularise a singular covariance"),
    ),
    checks=check_inputs,
)
