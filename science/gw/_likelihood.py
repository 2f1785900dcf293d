"""Hierarchical population likelihood over per-event posterior samples, with selection effects.

For events ``i = 1..N`` with ``S`` parameter-estimation samples ``theta_ij`` drawn under a PE prior
``pi(theta)``, and an injection set of ``theta_k`` found by the search out of ``N_draw`` drawn from
``p_draw``, the likelihood of hyperparameters ``Lambda`` (Mandel, Farr & Gair 2019) is

    ln L = sum_i ln( (1/S) sum_j p(theta_ij | Lambda) / pi(theta_ij) ) - N ln mu(Lambda)

with the detectable fraction ``mu = (1/N_draw) sum_k p(theta_k | Lambda) / p_draw(theta_k)`` — the
overall rate marginalised under a log-uniform prior. With ``rate="sampled"`` the model is a rate
density (e.g. a `Mixture` of subpopulations with one rate each) and the Poisson form
``sum_i ln(...) - VT * mu(Lambda)`` is used, with ``VT`` the surveyed space-time volume the injection
set represents. Each Monte-Carlo sum's effective sample size is computed; the GWTC-3 convention
rejects hyperparameters where the injections' ``N_eff < 4 N`` (``neff_policy="reject"``), or only
reports it (``"report"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from jaxaccel import InputError

from ._models import in_support, support_violations

__all__ = ["HierarchicalLikelihood", "GWDataError"]


class GWDataError(InputError):
    """Malformed events, injections or catalogue file (the message names the event / field / file
    and what was expected). A `jaxaccel.InputError`, so also a `ValueError`."""


def _as_table(name: str, table: Mapping[str, object], ndim: int) -> dict[str, jax.Array]:
    if not isinstance(table, Mapping) or not table:
        raise GWDataError(f"{name}: expected a non-empty dict of parameter name -> array")
    out = {}
    shape = None
    for k, v in table.items():
        a = np.asarray(v, dtype=np.float64)
        if a.ndim != ndim:
            raise GWDataError(f"{name}[{k!r}]: expected a {ndim}-d array, got shape {a.shape}")
        if shape is not None and a.shape != shape:
            raise GWDataError(f"{name}[{k!r}]: shape {a.shape} differs from the others' {shape}")
        shape = a.shape
        out[k] = a
    return out


def _safe_log(p):
    """``log p`` with ``-inf`` where ``p == 0`` and a zero (not NaN) gradient there."""
    positive = p > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, p, 1.0)), -jnp.inf)


class HierarchicalLikelihood:
    """``log_likelihood(hyper)`` of a population model given events and an injection set.

    Args:
        model: ``model(data, hyper) -> density`` (a `Population`, or a `Mixture` rate density
            with ``rate="sampled"``).
        posteriors: parameter name -> ``[N_events, S]`` PE samples.
        pe_prior: ``[N_events, S]`` PE prior density of each sample (same parameters/Jacobians as
            the model's density).
        injections: parameter name -> ``[N_found]`` found injections.
        p_draw: ``[N_found]`` density the injections were drawn from.
        n_draw: total number of injections drawn (found or not).
        rate: ``"marginalised"`` or ``"sampled"`` (then ``time_volume`` is required).
        min_samples: events with fewer samples are refused.
    """

    def __init__(
        self,
        model: Callable,
        posteriors: Mapping[str, object],
        pe_prior,
        injections: Mapping[str, object],
        p_draw,
        n_draw: int,
        *,
        rate: Literal["marginalised", "sampled"] = "marginalised",
        time_volume: float | None = None,
        neff_policy: Literal["reject", "report"] = "reject",
        min_samples: int = 20,
    ):
        post = _as_table("posteriors", posteriors, 2)
        inj = _as_table("injections", injections, 1)
        n_events, n_samples = next(iter(post.values())).shape
        if n_samples < min_samples:
            raise GWDataError(
                f"posteriors: {n_samples} samples per event; expected at least {min_samples} "
                "(Monte-Carlo sums over fewer samples are too noisy)"
            )
        for k, a in post.items():
            bad = ~np.isfinite(a)
            if bad.any():
                i, j = (int(t) for t in np.argwhere(bad)[0])
                raise GWDataError(f"posteriors[{k!r}]: non-finite value at event {i}, sample {j}")
        prior = np.asarray(pe_prior, dtype=np.float64)
        if prior.shape != (n_events, n_samples):
            raise GWDataError(
                f"pe_prior: expected shape {(n_events, n_samples)}, got {prior.shape}"
            )
        if not (np.isfinite(prior).all() and (prior > 0).all()):
            i, j = (int(t) for t in np.argwhere(~(np.isfinite(prior) & (prior > 0)))[0])
            raise GWDataError(
                f"pe_prior: must be finite and > 0 (it divides the samples' weights); event {i}, "
                f"sample {j} has {prior[i, j]}"
            )
        pd = np.asarray(p_draw, dtype=np.float64)
        n_found = next(iter(inj.values())).shape[0]
        if pd.shape != (n_found,) or not (np.isfinite(pd).all() and (pd > 0).all()):
            raise GWDataError(f"p_draw: expected {n_found} finite positive densities")
        for k, a in inj.items():
            if not np.isfinite(a).all():
                raise GWDataError(f"injections[{k!r}]: non-finite values")
        if not n_draw >= n_found:
            raise GWDataError(f"n_draw ({n_draw}) must be >= the number of found injections")
        if rate == "sampled" and time_volume is None:
            raise GWDataError("time_volume: required with rate='sampled'")
        if rate not in ("marginalised", "sampled"):
            raise GWDataError(f"rate: expected 'marginalised' or 'sampled', got {rate!r}")
        dtype = jnp.zeros(()).dtype
        self.model = model
        self.posteriors = {k: jnp.asarray(v, dtype) for k, v in post.items()}
        self.log_pe_prior = jnp.asarray(np.log(prior), dtype)
        self.injections = {k: jnp.asarray(v, dtype) for k, v in inj.items()}
        self.log_p_draw = jnp.asarray(np.log(pd), dtype)
        self.n_draw = int(n_draw)
        self.n_events = int(n_events)
        self.n_samples = int(n_samples)
        self.rate = rate
        self.time_volume = time_volume
        self.neff_policy = neff_policy
        # Jitted once per likelihood for the eager diagnostics (run op by op, the model's
        # normalisation grids compile every operation on its own: ~10 s on 2 cores).
        self._evaluate = jax.jit(self._everything)

    # ------------------------------------------------------------------ pieces
    def _log_weights_events(self, hyper):
        return _safe_log(self.model(self.posteriors, hyper)) - self.log_pe_prior

    def _log_weights_inj(self, hyper):
        return _safe_log(self.model(self.injections, hyper)) - self.log_p_draw

    def selection(self, hyper):
        """``(ln mu, N_eff)`` of the injection Monte-Carlo sum (Farr 2019's variance)."""
        lw = self._log_weights_inj(hyper)
        log_mu = logsumexp(lw) - jnp.log(self.n_draw)
        # var(mu_hat) = (1/N^2) sum w^2 - mu^2 / N
        log_sum_w2 = logsumexp(2 * lw) - 2 * jnp.log(self.n_draw)
        var = jnp.exp(log_sum_w2) - jnp.exp(2 * log_mu) / self.n_draw
        neff = jnp.exp(2 * log_mu) / jnp.maximum(var, jnp.finfo(var.dtype).tiny)
        return log_mu, neff

    def event_neff(self, hyper):
        """Kish effective sample size of each event's reweighted PE samples."""
        lw = self._log_weights_events(hyper)
        return jnp.exp(2 * logsumexp(lw, axis=1) - logsumexp(2 * lw, axis=1))

    def _everything(self, hyper):
        """Densities on the events and injections, ``(ln mu, N_eff)`` and the events' N_eff."""
        return (
            self.model(self.posteriors, hyper),
            self.model(self.injections, hyper),
            self.selection(hyper),
            self.event_neff(hyper),
        )

    def _checked(self, hyper):
        """`check`, returning `_everything` (one compiled function for both)."""
        problems = support_violations(hyper)
        if problems:
            raise GWDataError("; ".join(problems))
        h = {k: jnp.asarray(v) for k, v in hyper.items()}
        try:
            found = self._evaluate(h)
        except KeyError as e:
            name = e.args[0]
            what = "posteriors" if name not in self.posteriors else "injections"
            data = self.posteriors if what == "posteriors" else self.injections
            raise GWDataError(
                f"the model needs {name!r}, which is neither among the hyperparameters "
                f"({sorted(hyper)}) nor the {what}' parameters ({sorted(data)})"
            ) from None
        for what, p in (("posteriors", found[0]), ("injections", found[1])):
            p = np.asarray(p)
            bad = ~(np.isfinite(p) & (p >= 0))
            if bad.any():
                idx = tuple(int(i) for i in np.argwhere(bad)[0])
                raise GWDataError(
                    f"the model's density on the {what} is {p[idx]} at index {idx} for these "
                    "hyperparameters; expected finite values >= 0"
                )
        return found

    def check(self, hyper) -> None:
        """Eager checks of ``hyper`` against the data: hyperparameters inside the models' support,
        none missing, densities finite and >= 0. Raises `GWDataError` naming what is wrong."""
        self._checked(hyper)

    def log_likelihood(self, hyper):
        """The log-likelihood (``-inf`` where the model vanishes, a hyperparameter is outside its
        support, or N_eff is rejected). Traceable; `check` explains a ``-inf`` eagerly."""
        ok = in_support(hyper)
        # outside the support the gradient is zero, not the NaN of 0 * inf further down
        hyper = {k: jnp.where(ok, v, jax.lax.stop_gradient(v)) for k, v in hyper.items()}
        lw = self._log_weights_events(hyper)
        per_event = logsumexp(lw, axis=1) - jnp.log(self.n_samples)
        log_mu, neff = self.selection(hyper)
        if self.rate == "marginalised":
            ll = jnp.sum(per_event) - self.n_events * log_mu
        else:
            ll = jnp.sum(per_event) - self.time_volume * jnp.exp(log_mu)
        if self.neff_policy == "reject":
            ll = jnp.where(neff < 4 * self.n_events, -jnp.inf, ll)
        ll = jnp.where(ok, ll, -jnp.inf)
        return jnp.where(jnp.isnan(ll), -jnp.inf, ll)

    def diagnostics(self, hyper) -> dict[str, float]:
        """Selection ``ln mu``, injection ``N_eff`` (and the 4N threshold), min event ``N_eff``
        (after `check`)."""
        _, _, (log_mu, neff), event_neff = self._checked(hyper)
        out = {
            "log_mu": float(log_mu),
            "neff_injections": float(neff),
            "neff_threshold": 4.0 * self.n_events,
            "min_neff_event": float(jnp.min(event_neff)),
        }
        if out["neff_injections"] < out["neff_threshold"]:
            out["warning"] = (
                f"injection N_eff {out['neff_injections']:.1f} < 4 N_events "
                f"({out['neff_threshold']:.0f}): the selection estimate is unreliable here (the "
                "injection set does not cover this population; draw more or broader injections)"
            )
        return out
