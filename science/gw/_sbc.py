"""Simulation-based calibration of the gw-population pipeline over mock catalogues.

For catalogue ``k = 1..K``: draw the free hyperparameters from the analysis prior (`SBC_PRIORS`,
the others at the GWTC-3 medians), simulate a catalogue with those truths (`make_catalogue`: its
own detections, per-event posteriors and injection set), fit it with the job's flow-VI sampler and
record the posterior quantile of each truth. If the model, the mock, the likelihood and the sampler
are all right, the quantiles are uniform (Talts et al. 2018) and the number of truths inside their
central 90% intervals is Binomial(K P, 0.9). ``python -m science.gw._sbc --n 20 --out out/gw_sbc``
writes ``sbc.json`` and a rank histogram ``sbc.png``; a finished catalogue is not refitted when the
run is restarted (results are appended to ``sbc.json`` as they come).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from jaxaccel import runtime

from . import _analysis, _job, _mock

__all__ = ["SBC_PRIORS", "run_sbc", "summarise"]

# Analysis prior = the distribution truths are drawn from (a requirement of SBC).
SBC_PRIORS = {"alpha": (2.0, 5.0), "mpp": (25.0, 40.0), "lamb": (0.0, 5.0)}


def _one(k: int, key, priors: dict, n_events: int, steps: int, n_draws: int) -> dict:
    from science import samplers as ss

    key = jax.random.fold_in(key, k)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
    drawn = {name: float(rng.uniform(lo, hi)) for name, (lo, hi) in priors.items()}
    truths = dict(_mock.GWTC3_PLP) | drawn
    cat = _mock.make_catalogue(
        int(rng.integers(2**31)), n_events=n_events, n_injections=300_000, hyper=truths
    )
    config = _job.GWConfig(
        model="bbh", free=tuple(priors), priors=priors, steps=steps, n_draws=n_draws
    )
    target, _, _ = _analysis.build_target(cat, config)
    k_fit, k_draws = jax.random.split(key)
    result = ss.sample(k_fit, target, _analysis.make_sampler(config), progress=False)
    x = result.resample(k_draws, 4000)
    quantiles = {n: float(np.mean(x[:, j] < drawn[n])) for j, n in enumerate(result.names)}
    return {
        "catalogue": k,
        "truths": drawn,
        "quantiles": quantiles,
        "inside90": {n: bool(0.05 <= q <= 0.95) for n, q in quantiles.items()},
        "khat": float(result.diagnostics["khat"]),
    }


def summarise(rows: list[dict]) -> dict:
    """Coverage of the 90% intervals (binomial p-value) and uniformity of the quantiles (KS)."""
    from scipy import stats

    q = np.array([v for r in rows for v in r["quantiles"].values()])
    inside = int(np.sum((q >= 0.05) & (q <= 0.95)))
    return {
        "n_catalogues": len(rows),
        "n_intervals": int(q.size),
        "inside90": inside,
        "coverage": inside / max(q.size, 1),
        "binomial_p": float(stats.binomtest(inside, q.size, 0.9).pvalue) if q.size else None,
        "ks_p": float(stats.kstest(q, "uniform").pvalue) if q.size else None,
        "per_param_coverage": {
            n: float(np.mean([r["inside90"][n] for r in rows])) for n in rows[0]["quantiles"]
        }
        if rows
        else {},
    }


def _plot(path: Path, rows: list[dict]) -> None:
    names = list(rows[0]["quantiles"])
    fig, axes = runtime.figure(
        1, len(names), figsize=(3.2 * len(names), 3), squeeze=False, layout="constrained"
    )
    bins = max(4, min(10, len(rows) // 2))
    for ax, n in zip(axes[0], names, strict=True):
        ax.hist([r["quantiles"][n] for r in rows], bins=bins, range=(0, 1))
        ax.axhline(len(rows) / bins, color="k", ls="--", lw=1, label="uniform")
        ax.set_xlabel(f"posterior quantile of true {n}")
    axes[0][0].set_ylabel("catalogues")
    axes[0][0].legend()
    runtime.save_figure(fig, path, dpi=90)


def run_sbc(
    n_catalogues: int,
    *,
    key: jax.Array,
    priors: dict | None = None,
    n_events: int = 60,
    steps: int = 300,
    n_draws: int = 3000,
    out: Path | None = None,
) -> dict:
    """Fit ``n_catalogues`` simulated catalogues; returns ``{"rows": [...], "summary": {...}}``.

    Catalogue ``k`` (its truths, its mock data and its fit) derives from ``fold_in(key, k)``, so a
    restarted run continues with the catalogues an uninterrupted one would have made.
    """
    priors = dict(SBC_PRIORS if priors is None else priors)
    rows: list[dict] = []
    path = None if out is None else Path(out) / "sbc.json"
    if path is not None and path.exists():
        rows = json.loads(path.read_text())["rows"]
    t0 = time.perf_counter()
    for k in range(len(rows), n_catalogues):
        rows.append(_one(k, key, priors, n_events, steps, n_draws))
        q = ", ".join(f"{n} {v:.2f}" for n, v in rows[-1]["quantiles"].items())
        print(
            f"sbc catalogue {k + 1}/{n_catalogues}: quantiles {q} ({time.perf_counter() - t0:.0f} s)"
        )
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"rows": rows, "summary": summarise(rows)}, indent=2))
    result = {"rows": rows, "summary": summarise(rows)}
    if out is not None:
        _plot(Path(out) / "sbc.png", rows)
    return result


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m science.gw._sbc", description=__doc__)
    p.add_argument("--n", type=int, default=20, help="number of catalogues")
    p.add_argument("--events", type=int, default=60, help="detections per catalogue")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("out") / "gw_sbc")
    a = p.parse_args()
    res = run_sbc(a.n, key=jax.random.key(a.seed), n_events=a.events, out=a.out)
    print(json.dumps(res["summary"], indent=2))
