"""Results of a sampler run: samples, weights, evidence, diagnostics; saving and a corner plot.

Diagnostics come from kept libraries: split-R-hat and bulk/tail ESS from ArviZ (rank-normalised,
Vehtari et al. 2021), Pareto-smoothed importance sampling and its k-hat from ArviZ's ``psislw``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from jaxaccel import InputError, runtime

from ._driver import lenient

__all__ = [
    "Result",
    "chain_diagnostics",
    "importance_evidence",
    "psis",
    "harmonic_evidence",
    "reweight",
]


def _arviz():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz

    return arviz


def chain_diagnostics(samples: np.ndarray, names) -> dict[str, dict[str, float]]:
    """Split-R-hat, bulk ESS and tail ESS per coordinate of ``samples[chain, draw, dim]``."""
    az = _arviz()
    out: dict[str, dict[str, float]] = {"rhat": {}, "ess_bulk": {}, "ess_tail": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j, name in enumerate(names):
            x = np.asarray(samples[:, :, j], dtype=np.float64)
            out["rhat"][name] = float(az.rhat(x))
            out["ess_bulk"][name] = float(az.ess(x, method="bulk"))
            out["ess_tail"][name] = float(az.ess(x, method="tail"))
    return out


def psis(log_weights: np.ndarray) -> tuple[np.ndarray, float]:
    """ArviZ's Pareto-smoothed normalised log-weights and the k-hat diagnostic."""
    az = _arviz()
    lw = np.asarray(log_weights, dtype=np.float64)
    finite = np.isfinite(lw)
    if not finite.any():
        raise InputError("psis: every importance weight is zero (log-weight -inf)")
    # Zero weights (-inf) stay negligible but finite for the Pareto fit.
    lw = np.where(finite, lw, lw[finite].min() - 700.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        smoothed, khat = az.psislw(lw.copy(), reff=1.0)
    return np.asarray(smoothed), float(khat)


def importance_evidence(log_weights) -> tuple[float, float]:
    """``log Z`` as the log of the mean importance weight, and its Monte-Carlo standard error.

    With ``w_i = p(x_i) / q(x_i)``, ``Z_hat = mean(w)``; the delta method gives
    ``se(log Z_hat) = std(w) / (sqrt(n) mean(w))`` (computed on shifted weights, no overflow).
    """
    lw = np.asarray(log_weights, dtype=np.float64)  # -inf entries are zero weights and count
    n = lw.size
    log_z = float(logsumexp(jnp.asarray(lw)) - math.log(n))
    w = np.exp(lw - lw.max())
    se = float(np.std(w, ddof=1) / (math.sqrt(n) * np.mean(w)))
    return log_z, se


@lenient
def harmonic_evidence(
    key,
    target,
    z: np.ndarray,
    *,
    temperature: float = 0.8,
    epochs: int = 150,
    flow_config=None,
    max_draws: int = 4096,
) -> tuple[float, float, dict[str, float]]:
    """Learned harmonic mean evidence (McEwen et al. 2021) from posterior samples ``z[chain, draw, dim]``.

    A flow is fitted to the first half of each chain, concentrated (base variance x
    ``temperature``), and ``1/Z`` is estimated on the second half as the mean of
    ``phi(z) / p(z)`` (``p`` the unnormalised target). The standard error uses the
    ratio series' autocorrelation (ArviZ ESS per chain). Each half is thinned to at most
    ``max_draws`` draws. Works for any dimension, one included.
    """
    from ._flows import FlowConfig, concentrate, fit_flow, make_flow, moments

    z = np.asarray(z)
    n_chains, n_draws, dim = z.shape
    if n_draws < 20:
        raise InputError(f"harmonic_evidence: need at least 20 draws per chain, got {n_draws}")
    half = n_draws // 2
    # Thin each half to at most ``max_draws`` draws in all (every k-th draw of each chain): the
    # flow fit and the estimator cost scale with the draws, their precision barely does past that.
    stride = max(1, -(-n_chains * half // max_draws))
    train = jnp.asarray(z[:, :half:stride].reshape(-1, dim))
    evaluate = jnp.asarray(z[:, half::stride])
    config = flow_config or FlowConfig(layers=3, width=32)
    k_init, k_fit = jax.random.split(key)
    loc, chol = moments(train)
    flow = make_flow(k_init, dim, config, loc=loc, chol=chol)
    flow, losses = fit_flow(k_fit, flow, train, epochs=epochs, config=config)
    flow_t = concentrate(flow, temperature)
    log_phi = jax.vmap(flow_t.log_prob)(evaluate.reshape(-1, dim))
    log_p = jax.vmap(target.log_density)(evaluate.reshape(-1, dim))
    log_r = np.asarray(log_phi - log_p, dtype=np.float64).reshape(n_chains, -1)
    shift = log_r.max()
    r = np.exp(log_r - shift)
    mean_r = r.mean()
    log_z = float(-(math.log(mean_r) + shift))
    az = _arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ess = float(az.ess(r)) if n_chains > 1 else float(az.ess(r[None, 0]))
    ess = max(min(ess, r.size), 2.0)
    se = float(np.std(r, ddof=1) / (math.sqrt(ess) * mean_r))
    info = {
        "temperature": temperature,
        "flow_train_nll": float(losses[-1]),
        "ratio_ess": ess,
        "n_eval": int(r.size),
    }
    return log_z, se, info


@dataclasses.dataclass
class Result:
    """What a sampler run produced.

    ``samples[chain, draw, dim]`` holds constrained values in ``names`` order (for flow VI one
    "chain" of flow draws, with ``log_weights`` the Pareto-smoothed normalised importance
    log-weights); ``z`` the same draws in the sampler's unconstrained coordinates. Flow VI also
    keeps ``raw_log_weights`` (``log p(z) - log q(z)``, unsmoothed), with which the draws can be
    reweighted to another likelihood over the same parameters.
    """

    sampler: str
    names: tuple[str, ...]
    samples: np.ndarray
    z: np.ndarray
    log_weights: np.ndarray | None
    log_z: float | None
    log_z_err: float | None
    diagnostics: dict[str, Any]
    wall_seconds: float
    raw_log_weights: np.ndarray | None = None

    # ------------------------------------------------------------------ summaries
    def weights(self) -> np.ndarray:
        """Normalised weights per draw, flattened over chains (uniform for MCMC)."""
        n = self.samples.shape[0] * self.samples.shape[1]
        if self.log_weights is None:
            return np.full(n, 1.0 / n)
        w = np.exp(self.log_weights - self.log_weights.max()).reshape(-1)
        return w / w.sum()

    def mean(self) -> dict[str, float]:
        x = self.samples.reshape(-1, self.samples.shape[-1])
        m = self.weights() @ x
        return dict(zip(self.names, m.tolist(), strict=True))

    def std(self) -> dict[str, float]:
        x = self.samples.reshape(-1, self.samples.shape[-1])
        w = self.weights()
        m = w @ x
        return dict(zip(self.names, np.sqrt(w @ (x - m) ** 2).tolist(), strict=True))

    def ess(self) -> dict[str, float]:
        """Effective sample size per parameter: min(bulk, tail) for MCMC, Kish ESS for weights."""
        if self.log_weights is not None:
            return dict.fromkeys(self.names, float(self.diagnostics["ess_is"]))
        d = self.diagnostics
        return {n: min(d["ess_bulk"][n], d["ess_tail"][n]) for n in self.names}

    def min_ess(self) -> float:
        return min(self.ess().values())

    def mcse(self) -> dict[str, float]:
        """Monte-Carlo standard error of each posterior mean (std / sqrt(ESS))."""
        s, e = self.std(), self.ess()
        return {n: s[n] / math.sqrt(max(e[n], 1.0)) for n in self.names}

    @lenient
    def resample(self, key, n: int) -> np.ndarray:
        """``n`` equally weighted draws (multinomial resampling of weighted draws)."""
        x = self.samples.reshape(-1, self.samples.shape[-1])
        idx = jax.random.choice(key, x.shape[0], (n,), p=jnp.asarray(self.weights()))
        return x[np.asarray(idx)]

    def summary(self) -> str:
        """A plain-text table: mean, std, MCSE, ESS (and R-hat for chains) per parameter."""
        m, s, e, mc = self.mean(), self.std(), self.ess(), self.mcse()
        rhat = self.diagnostics.get("rhat")
        head = f"{'param':>14} {'mean':>11} {'std':>10} {'mcse':>9} {'ess':>8}"
        head += f" {'rhat':>6}" if rhat else ""
        lines = [head]
        for n in self.names:
            row = f"{n:>14} {m[n]:11.4g} {s[n]:10.4g} {mc[n]:9.2g} {e[n]:8.0f}"
            row += f" {rhat[n]:6.3f}" if rhat else ""
            lines.append(row)
        if self.log_z is not None:
            lines.append(f"log Z = {self.log_z:.4f} +- {self.log_z_err:.4f}")
        extras = {k: v for k, v in self.diagnostics.items() if isinstance(v, (int, float))}
        if extras:
            lines.append(", ".join(f"{k}={v:.4g}" for k, v in extras.items()))
        lines.append(f"wall {self.wall_seconds:.1f} s ({self.sampler})")
        return "\n".join(lines)

    # ------------------------------------------------------------------ output
    def save(self, folder: str | Path, *, plot: bool = True) -> Path:
        """Write ``samples.npz`` (samples, z, log-weights), ``result.json`` and ``corner.png``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"samples": self.samples, "z": self.z}
        if self.log_weights is not None:
            arrays["log_weights"] = self.log_weights
        if self.raw_log_weights is not None:
            arrays["raw_log_weights"] = self.raw_log_weights
        np.savez(folder / "samples.npz", **arrays)
        info = {
            "sampler": self.sampler,
            "names": list(self.names),
            "log_z": self.log_z,
            "log_z_err": self.log_z_err,
            "mean": self.mean(),
            "std": self.std(),
            "ess": self.ess(),
            "diagnostics": self.diagnostics,
            "wall_seconds": self.wall_seconds,
        }
        (folder / "result.json").write_text(json.dumps(info, indent=2, default=float))
        if plot:
            self.corner(folder / "corner.png")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Result:
        """Read back what `save` wrote (``samples.npz`` and ``result.json``)."""
        folder = Path(folder)
        info = json.loads((folder / "result.json").read_text())
        z = np.load(folder / "samples.npz")
        return cls(
            sampler=info["sampler"],
            names=tuple(info["names"]),
            samples=z["samples"],
            z=z["z"],
            log_weights=z["log_weights"] if "log_weights" in z else None,
            log_z=info["log_z"],
            log_z_err=info["log_z_err"],
            diagnostics=info["diagnostics"],
            wall_seconds=info["wall_seconds"],
            raw_log_weights=z["raw_log_weights"] if "raw_log_weights" in z else None,
        )

    def corner(self, path: str | Path, *, truths: dict[str, float] | None = None, max_dims=8):
        """A corner plot (the ``corner`` package) of the first ``max_dims`` parameters.

        Drawn on a `matplotlib.figure.Figure` (object API; the global backend is left alone).
        """
        import corner

        k = min(len(self.names), max_dims)
        x = self.samples.reshape(-1, self.samples.shape[-1])[:, :k]
        w = self.weights()
        t = None if truths is None else [truths.get(n) for n in self.names[:k]]
        size = 2.0 * k + 2.0 * (k - 1) * 0.05 + 1.4  # corner's own figure size for k panels
        fig, _ = runtime.figure(k, k, figsize=(size, size))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            corner.corner(
                x,
                weights=w,
                labels=list(self.names[:k]),
                truths=t,
                show_titles=True,
                bins=30,
                fig=fig,
            )
        fig.suptitle(f"{self.sampler}: {x.shape[0]} draws, min ESS {self.min_ess():.0f}")
        return runtime.save_figure(fig, path, dpi=80)


def reweight(result: Result, log_ratio: np.ndarray, *, sampler: str | None = None) -> Result:
    """Flow-VI draws reweighted to a new target over the same parameters (and prior).

    ``log_ratio[i]`` is ``log p_new(x_i) - log p_old(x_i)`` at each draw (for two likelihoods
    with one prior: the log-likelihood difference). The new evidence is the mean of the new raw
    weights; its k-hat says whether the old proposal covers the new posterior. The diagnostics
    hold ``log_bf`` = ln(Z_new / Z_old) with a paired standard error (the same draws enter both
    means, so their shared Monte-Carlo noise largely cancels).
    """
    if result.raw_log_weights is None:
        raise InputError(
            "reweight: the result has no raw_log_weights (only flow VI results carry them)"
        )
    old = np.asarray(result.raw_log_weights, dtype=np.float64).reshape(-1)
    log_ratio = np.asarray(log_ratio, dtype=np.float64).reshape(-1)
    if log_ratio.shape != old.shape:
        raise InputError(f"reweight: log_ratio has {log_ratio.size} values for {old.size} draws")
    live = np.isfinite(old)
    if np.isnan(log_ratio[live]).any():
        raise InputError("reweight: log_ratio is NaN at some draws with non-zero weight")
    new = np.where(live, old + np.where(live, log_ratio, 0.0), -np.inf)
    log_z, log_z_err = importance_evidence(new)
    smoothed, khat = psis(new)
    w = np.exp(smoothed - smoothed.max())
    w /= w.sum()
    a = np.exp(new - new[live].max())
    b = np.exp(old - old[live].max())
    ra, rb = a / a.mean(), b / b.mean()
    var = (np.var(ra, ddof=1) + np.var(rb, ddof=1) - 2.0 * np.cov(ra, rb)[0, 1]) / old.size
    log_bf = log_z - importance_evidence(old)[0]
    diag = {
        "khat": khat,
        "ess_is": float(1.0 / np.sum(w**2)),
        "log_bf": float(log_bf),
        "log_bf_err": float(math.sqrt(max(var, 0.0))),
        "reweighted_from": result.sampler,
    }
    return dataclasses.replace(
        result,
        sampler=sampler or f"{result.sampler}, reweighted",
        log_weights=smoothed.reshape(result.samples.shape[:2]),
        raw_log_weights=new.reshape(result.samples.shape[:2]),
        log_z=log_z,
        log_z_err=log_z_err,
        diagnostics=diag,
    )
