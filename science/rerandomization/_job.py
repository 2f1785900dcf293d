"""``jaxaccel rerandomize``: design and analyse a (re)randomized experiment from a CSV.

Input: ``--csv FILE`` with one row per unit, ``--covariates a,b,c`` (default: every numeric column
except treatment and outcome), ``--treatment COL`` (0/1, the observed assignment; optional for a
design-only run, which then needs ``--n-treated``) and ``--outcome COL`` (optional). Without
``--csv`` the job uses ``--dataset nsw`` (default: the LaLonde NSW experiment, Dehejia-Wahba
sample, shipped by the ``causaldata`` package: 445 men, 185 treated, outcome 1978 earnings) or
``--dataset thornton_hiv`` (Thornton 2008, any cash incentive -> learned HIV result).

The design is complete randomization (``--accept-prob``/``--threshold`` unset: the NSW was
completely randomized) or rerandomization accepting Mahalanobis balance below a threshold.
Writes to ``--out``: ``pool.npz`` (the pool; reused on rerun with the same settings: resume),
``summary.json`` (design, throughput, observed balance, test p-value, interval, balance and design
tables), ``balance.md``, ``assignment.csv`` (a fresh acceptable assignment, for a design-only
run) and the plots ``randomization.png``, ``interval.png``, ``balance.png``,
``balance_distribution.png`` and ``design.png``.

Sizes: ``tiny`` (tests: 2000 assignments, a 2-point design table), ``small`` (100 000
assignments, 7-point design table with 200 simulations each), ``full`` (10^6 assignments, 500
simulations). Config keys (TOML): ``n_accepted``, ``design_sims``, ``design_pool``,
``accept_probs``, ``r2``, ``alpha``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from ._balance import Covariates, RerandomizationError
from ._design import balance_table, choose_threshold, variance_reduction
from ._inference import fiducial_interval, randomization_test
from ._pool import Pool, draw_pool

__all__ = ["main", "run", "load_dataset", "DATASETS", "SIZES"]

SIZES = {
    "tiny": {"n_accepted": 2000, "design_sims": 20, "design_pool": 300, "accept_probs": (1.0, 0.1)},
    "small": {
        "n_accepted": 100_000,
        "design_sims": 200,
        "design_pool": 2000,
        "accept_probs": (1.0, 0.5, 0.2, 0.1, 0.05, 0.01, 0.001),
    },
    "full": {
        "n_accepted": 1_000_000,
        "design_sims": 500,
        "design_pool": 5000,
        "accept_probs": (1.0, 0.5, 0.2, 0.1, 0.05, 0.01, 0.001),
    },
}
DATASETS = {
    "nsw": {
        "module": "nsw_mixtape",
        "treatment": "treat",
        "outcome": "re78",
        "covariates": ("age", "educ", "black", "hisp", "marr", "nodegree", "re74", "re75"),
    },
    "thornton_hiv": {
        "module": "thornton_hiv",
        "treatment": "any",
        "outcome": "got",
        "covariates": ("age", "distvct", "hiv2004"),
    },
}


def load_dataset(name: str):
    """A real experiment shipped by ``causaldata``: (DataFrame, treatment, outcome, covariates).
    Units with a missing treatment, outcome or covariate are dropped (Thornton's data has them)."""
    if name not in DATASETS:
        raise RerandomizationError(f"dataset: expected one of {sorted(DATASETS)}, got {name!r}")
    import importlib

    spec = DATASETS[name]
    try:
        mod = importlib.import_module(f"causaldata.{spec['module']}")
    except ImportError:
        raise RerandomizationError(
            f"dataset {name!r} needs the causaldata package (pip install causaldata; it is in "
            "jaxaccel's science extra)"
        ) from None
    df = mod.load_pandas().data
    cols = [spec["treatment"], spec["outcome"], *spec["covariates"]]
    df = df.dropna(subset=cols).reset_index(drop=True)
    return df, spec["treatment"], spec["outcome"], list(spec["covariates"])


def _read_csv(path: Path, treatment, outcome, covariates):
    import pandas as pd

    if not path.exists():
        raise RerandomizationError(f"--csv: file {path} does not exist")
    df = pd.read_csv(path)
    for arg, col in (("--treatment", treatment), ("--outcome", outcome)):
        if col is not None and col not in df.columns:
            raise RerandomizationError(
                f"{arg}: column {col!r} not in {path.name}: {list(df.columns)}"
            )
    if covariates is None:
        skip = {treatment, outcome}
        covariates = [
            c for c in df.columns if c not in skip and np.issubdtype(df[c].dtype, np.number)
        ]
    missing = [c for c in covariates if c not in df.columns]
    if missing:
        raise RerandomizationError(
            f"--covariates: {missing} not in {path.name}: {list(df.columns)}"
        )
    return df, treatment, outcome, list(covariates)


@dataclasses.dataclass(frozen=True)
class Settings:
    n_accepted: int
    design_sims: int
    design_pool: int
    accept_probs: tuple
    r2: float = 0.5
    alpha: float = 0.05


def _settings(size, config) -> Settings:
    base = dict(SIZES[size])
    unknown = set(config) - {f.name for f in dataclasses.fields(Settings)}
    if unknown:
        raise RerandomizationError(f"--config: unknown key(s) {sorted(unknown)}")
    base.update(config)
    base["accept_probs"] = tuple(float(p) for p in base["accept_probs"])
    return Settings(**base)


def _parser():
    from jaxaccel import _cli

    p = _cli.common_parser("rerandomize", (__doc__ or "").split("\n\n")[0])
    p.add_argument("--csv", type=Path, default=None, help="one row per unit")
    p.add_argument("--dataset", default="nsw", help=f"without --csv: one of {sorted(DATASETS)}")
    p.add_argument("--treatment", default=None, help="0/1 column of the observed assignment")
    p.add_argument("--outcome", default=None, help="outcome column (analysis)")
    p.add_argument("--covariates", default=None, help="comma-separated covariate columns")
    p.add_argument("--n-treated", type=int, default=None, help="design-only runs: treated units")
    p.add_argument(
        "--accept-prob", type=float, default=None, help="rerandomization acceptance prob."
    )
    p.add_argument("--threshold", type=float, default=None, help="Mahalanobis acceptance threshold")
    p.add_argument("--ridge", type=float, default=0.0, help="regularise a singular covariance")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from jaxaccel import _cli

    ns = _parser().parse_args(argv)
    common = _cli.parse_common(ns)
    try:
        run(ns, common.size, common.seed, common.out, common.config)
    except RerandomizationError as e:
        raise SystemExit(f"jaxaccel rerandomize: {e}") from None
    return 0


def run(ns: argparse.Namespace, size: str, seed: int, out: Path, config: dict) -> dict:
    """Run the job (``ns``: the parsed options above); returns the summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import _plots

    st = _settings(size, config)
    covs = (
        None
        if ns.covariates is None
        else [c.strip() for c in ns.covariates.split(",") if c.strip()]
    )
    if ns.csv is not None:
        df, tcol, ycol, covs = _read_csv(ns.csv, ns.treatment, ns.outcome, covs)
        source = str(ns.csv)
    else:
        df, tcol, ycol, default_covs = load_dataset(ns.dataset)
        covs = covs or default_covs
        source = f"causaldata:{DATASETS[ns.dataset]['module']}"
    x = df[covs]
    cov = Covariates.build(x, ridge=ns.ridge)
    w = None
    if tcol is not None:
        tv = df[tcol].to_numpy()
        if not np.isin(tv, (0, 1)).all():
            raise RerandomizationError(f"--treatment: column {tcol!r} must be 0/1")
        w = tv.astype(bool)
    n_t = int(w.sum()) if w is not None else ns.n_treated
    if n_t is None:
        raise RerandomizationError("--n-treated: needed when there is no --treatment column")
    key = jax.random.key(seed)
    fingerprint = hashlib.sha256(
        json.dumps(
            [source, covs, n_t, ns.accept_prob, ns.threshold, ns.ridge, seed, st.n_accepted]
        ).encode()
    ).hexdigest()[:12]
    pool_path = out / f"pool-{fingerprint}.npz"
    t0 = time.perf_counter()
    if pool_path.exists():
        pool = Pool.load(pool_path)
        print(f"[rerandomize] resumed pool from {pool_path.name} ({pool.size} assignments)")
        rate = None
    else:
        pool = draw_pool(
            key,
            x,
            n_t,
            accept_prob=ns.accept_prob,
            threshold=ns.threshold,
            n_accepted=st.n_accepted,
            ridge=ns.ridge,
            progress=True,
        )
        rate = pool.n_candidates / (time.perf_counter() - t0)
        pool.save(pool_path)
        print(
            f"[rerandomize] pool: {pool.size} of {pool.n_candidates} candidates "
            f"({rate:,.0f} candidates/s incl. compile), threshold {pool.threshold:.4g}"
        )
    summary: dict = {
        "source": source,
        "n_units": cov.n_units,
        "n_treated": n_t,
        "covariates": covs,
        "design": {
            "accept_prob": ns.accept_prob,
            "threshold": pool.threshold,
            "exact": pool.exact,
            "pool_size": pool.size,
            "n_candidates": pool.n_candidates,
            "acceptance_rate": pool.acceptance_rate,
            "candidates_per_s": rate,
            "v_a": float(variance_reduction(min(1.0, pool.acceptance_rate), cov.dim)),
        },
    }
    if w is not None:
        from scipy import stats

        m_obs = float(cov.distance(w[None])[0])
        summary["observed_balance"] = {
            "mahalanobis": m_obs,
            "chi2_cdf": float(stats.chi2.cdf(m_obs, cov.dim)),
            "pool_fraction_below": float(np.mean(pool.balance <= m_obs)),
        }
        if m_obs > pool.threshold * (1 + 1e-5):
            raise RerandomizationError(
                f"--treatment: the observed assignment's balance {m_obs:.4g} is above the design's "
                f"threshold {pool.threshold:.4g}: it could not have come from this design"
            )
    rows = balance_table(pool, x, treatment=w)
    summary["balance"] = [dataclasses.asdict(r) for r in rows]
    (out / "balance.md").write_text(_balance_md(rows))
    _save(_plots.plot_balance(rows), out / "balance.png", plt)
    _save(
        _plots.plot_balance_distribution(
            pool, cov.dim, observed=summary.get("observed_balance", {}).get("mahalanobis")
        ),
        out / "balance_distribution.png",
        plt,
    )
    if ycol is not None and w is not None:
        y = df[ycol].to_numpy(dtype=np.float64)
        t1 = time.perf_counter()
        test = randomization_test(pool, y, w)
        interval = fiducial_interval(pool, y, w, alpha=st.alpha)
        summary["analysis"] = {
            "outcome": ycol,
            "estimate": test.statistic,
            "p_value": test.p_value,
            "min_p": test.min_p,
            "interval": [interval.low, interval.high],
            "level": interval.level,
            "interval_connected": interval.connected,
            "seconds": time.perf_counter() - t1,
        }
        print(
            f"[rerandomize] {ycol}: difference in means {test.statistic:.4g}, randomization "
            f"p = {test.p_value:.4g}, {100 * interval.level:.0f}% interval "
            f"[{interval.low:.4g}, {interval.high:.4g}]"
        )
        _save(_plots.plot_randomization(test), out / "randomization.png", plt)
        _save(_plots.plot_interval(interval), out / "interval.png", plt)
    elif w is None:
        a = pool.assignments(0, 1)[0]
        df.assign(assigned=a.astype(int)).to_csv(out / "assignment.csv", index=False)
    design_path = out / f"design-{fingerprint}.json"
    if design_path.exists():
        design = json.loads(design_path.read_text())
    else:
        drows, rec = choose_threshold(
            jax.random.fold_in(key, 1),
            x,
            n_t,
            accept_probs=st.accept_probs,
            r2=st.r2,
            alpha=st.alpha,
            n_sims=st.design_sims,
            pool_size=st.design_pool,
            ridge=ns.ridge,
        )
        design = {"rows": [dataclasses.asdict(r) for r in drows], "recommended": rec, "r2": st.r2}
        design_path.write_text(json.dumps(design, indent=1))
    summary["threshold_choice"] = design
    from ._design import DesignRow

    axes = _plots.plot_design([DesignRow(**r) for r in design["rows"]], design["recommended"])
    _save(axes[0], out / "design.png", plt)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default))
    return summary


def _json_default(v):
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(type(v))


def _save(ax, path, plt):
    ax.figure.savefig(path, dpi=120)
    plt.close(ax.figure)


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
