"""Samplers: min-ESS per wall-second, compile and flow training included — `science.samplers` vs
NumPyro NUTS vs flowMC, on the same targets in the same process.

Targets (`synthetic_cases`; the truths are analytic, no reference run is needed):

- ``gauss d=2`` / ``gauss d=20``: a correlated Gaussian, covariance ``Q diag(logspace(-1, 1, d))
  Q^T`` with a random rotation ``Q`` (condition number 100) and a random mean; written
  unnormalised, so ``log Z = log det(2 pi Sigma) / 2``;
- ``banana d=2``: Rosenbrock-style, ``x0 ~ N(1, 1)``, ``x1 | x0 ~ N(x0^2, 0.3^2)`` (normalised,
  ``log Z = 0``; ``E x1 = 2``, ``Var x1 = 4 + 2 + 0.09``);
- ``funnel d=5``: Neal's funnel, ``v ~ N(0, 3^2)``, ``x_1..4 | v ~ N(0, exp(v/2)^2)``
  (``sd x_i = exp(9/4)``; ``log Z = 0``);
- ``mixture d=2``: ``0.3 N((-4,-4), I) + 0.7 N((4,4), I)``, modes ~11 sd apart (``log Z = 0``);
  the recovered weight of mode 1 (the share of draws with ``x0 + x1 < 0``) is reported.

The gravitational-wave population likelihood is benchmarked by `benchmarks/gw.py` with this
module's machinery (its own results file and section: it needs a cached catalogue and takes its
reference from the runs), so `gw_population_cases` returns no cases here; `CASE_BUILDERS` lists
the builders that run.

Samplers, each run as one call from scratch (fresh closures, so every jitted function compiles
anew; the timed call is the first call of its configuration in the process; flowMC's persistent
compilation cache is off, ``checkpoint_interval=0``):

- ours: ``ss.FlowVI`` (flow VI + PSIS importance reweighting; its ESS is the Kish ESS of the
  Pareto-smoothed weights and counts only when k-hat < 0.7), ``ss.FlowMCMC`` (MALA + flow
  proposals; ``evidence=False`` in the timed call; its learned-harmonic-mean evidence is timed
  apart, on the first seed only and on at most 4096 thinned draws), and ``ss.NUTS`` (NumPyro's
  NUTS through our chunked driver, ``evidence=False``);
- peers: NumPyro ``MCMC(NUTS(potential_fn=...), chain_method="vectorized")`` called directly, and
  flowMC's ``RQSpline_MALA_Bundle`` + ``Sampler`` (its documented default/quick-start-style
  settings, see `_flowmc`; chains start at 3 N(0, 1) draws like ours).

Metric: ``min ESS / wall seconds`` where min ESS is the minimum over parameters of
``min(bulk, tail)`` ESS (ArviZ, rank-normalised) for every MCMC sampler, computed here from the
returned draws ``[chain, draw, dim]``, and the importance-sampling Kish ESS for flow VI. Wall
seconds are ``time.perf_counter`` around the whole call (target construction, compilation, warm-up
/ flow training, sampling, the draws back on the host). Accuracy: ``z = max_j |mean_j - truth_j| /
MCSE_j`` with ``MCSE_j = sd_j / sqrt(ESS_j)`` for MCMC and the delta-method standard error of the
self-normalised importance estimate for flow VI; a run with ``z > 4``, or split-R-hat > 1.05 for
MCMC (chains that disagree, e.g. stuck in different modes), or k-hat >= 0.7 for flow VI, is flagged
inaccurate and does not count as a win. Each sampler runs once per seed (default 1 seed: a seed
costs ~17 min on 2 busy cores); the rows give medians over seeds. The process first runs every
sampler once on a small throw-away target (a different configuration), so imports and one-time
initialisation do not fall on the first case.

Run: ``.venv/bin/python benchmarks/samplers.py [--quick] [--seeds N] [--cases a,b]``
(``--quick``: tiny settings on the mixture only, a < 3 min smoke run, not a measurement, written
to ``$TMPDIR/samplers_quick.json`` only; ``--render JSON`` rebuilds rows and the section from an
earlier results file without measuring); writes
``benchmarks/results/samplers.json`` and the ``samplers`` section of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import random
import statistics
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import _common as common  # benchmarks/ is on sys.path when this file runs as a script
import jax
import jax.numpy as jnp
import numpy as np

from science import samplers as ss

Z_MAX = 4.0  # |mean - truth| / MCSE above this flags a run as inaccurate
KHAT_MAX = 0.7  # PSIS k-hat at or above this: importance weights unreliable, ESS does not count
EVIDENCE_DRAWS = 4096  # FlowMCMC's harmonic-mean evidence runs on at most this many thinned draws
RHAT_MAX = 1.05  # split-R-hat above this: the chains disagree (not converged), flagged like z
GOAL = 5.0  # the goal: ours >= 5x NumPyro NUTS min-ESS/s on CPU at equal accuracy

FLOW_VI = "ours FlowVI"
FLOW_MCMC = "ours FlowMCMC"
OUR_NUTS = "ours NUTS (driver)"
NUMPYRO = "NumPyro NUTS"
FLOWMC = "flowMC RQSpline+MALA"
SAMPLERS = (FLOW_VI, FLOW_MCMC, OUR_NUTS, NUMPYRO, FLOWMC)
PEER_LABEL = {
    NUMPYRO: 'NumPyro NUTS (MCMC(NUTS(potential_fn), chain_method="vectorized"))',
    FLOWMC: "flowMC 0.6 RQSpline_MALA_Bundle",
    OUR_NUTS: "ours NUTS (numpyro kernel through the science.samplers driver)",
}


# ----------------------------------------------------------------------------------------------
# targets
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """One target and the settings every sampler uses on it.

    ``make_logp()`` returns a *fresh* closure ``x[dim] -> log density`` (unbounded coordinates;
    a bounded model supplies its unconstrained density with the Jacobian), so that each run
    compiles anew. ``mean``/``std`` are the true posterior moments, ``log_z`` the true
    ``log int exp(logp)``. ``extra(x[n, dim], w[n])`` returns target-specific checks (the
    mixture's mode weight), compared with ``extra_truth``.

    A truth estimated by a reference run carries its Monte-Carlo error ``mean_se`` (added in
    quadrature to each run's MCSE in the accuracy test). ``make_target`` (optional) builds the
    `ss.Target` ours sample (e.g. one with a prior, so flow VI tempers from it); its
    ``log_density`` must be ``make_logp()``, over the same unconstrained coordinates.
    """

    name: str
    title: str
    dim: int
    make_logp: Callable[[], Callable[[jax.Array], jax.Array]]
    mean: np.ndarray
    std: np.ndarray
    log_z: float
    truth: str
    settings: dict[str, Any]
    init: np.ndarray | None = None
    extra: Callable[[np.ndarray, np.ndarray], dict[str, float]] | None = None
    extra_truth: dict[str, float] = dataclasses.field(default_factory=dict)
    mean_se: np.ndarray | None = None
    make_target: Callable[[], ss.Target] | None = None

    @property
    def x0(self) -> np.ndarray:
        return np.zeros(self.dim, np.float32) if self.init is None else self.init


def _nuts(quick: bool) -> dict[str, int]:
    return (
        {"n_chains": 4, "n_warmup": 100, "n_samples": 200}
        if quick
        else {"n_chains": 4, "n_warmup": 500, "n_samples": 1000}
    )


def _flowmc(quick: bool, **over) -> dict[str, Any]:
    """flowMC RQSpline_MALA_Bundle settings: its defaults (flow 4 layers x (32, 32) hidden units,
    8 bins; Adam 1e-3; batch 10000 = n_max_examples; history window 100; MALA step 0.1 adapted,
    per-dimension too) and quick-start-sized loops (10 local + 10 global steps per loop)."""
    base = (
        dict(
            n_chains=8,
            n_local_steps=5,
            n_global_steps=5,
            n_training_loops=2,
            n_production_loops=2,
            n_epochs=2,
        )
        if quick
        else dict(
            n_chains=20,
            n_local_steps=10,
            n_global_steps=10,
            n_training_loops=10,
            n_production_loops=10,
            n_epochs=10,
        )
    )
    return {**base, **over}


def _ours(quick: bool, vi: dict | None = None, mcmc: dict | None = None) -> dict[str, Any]:
    if quick:
        v = dict(steps=200, n_elbo=32, n_draws=4000, draw_batch=4000, max_refine=0, chunk=200)
        m = dict(n_chains=16, train_loops=2, cycles_per_loop=10, n_samples=50, train_epochs=5)
    else:
        v = dict(steps=1500, n_draws=50000, draw_batch=10000)
        # 128 chains and 10 epochs per refit: the refits dominate the run after compilation;
        # tried 64 chains x 30 epochs (the defaults), 4 loops x 20 epochs and this, on gauss
        # d=20, funnel and banana: this had the best min-ESS/s on all three.
        m = dict(n_chains=128, train_loops=8, cycles_per_loop=25, n_samples=500, train_epochs=10)
    v.update(vi or {})
    m.update(mcmc or {})
    return {
        FLOW_VI: ss.FlowVI(**v),
        FLOW_MCMC: ss.FlowMCMC(**m, evidence=False),
    }


def _settings(quick: bool, vi=None, mcmc=None, flowmc=None) -> dict[str, Any]:
    return {
        **_ours(quick, vi, mcmc),
        "nuts": _nuts(quick),
        "flowmc": _flowmc(quick, **(flowmc or {})),
    }


def gaussian_case(dim: int, quick: bool, seed: int = 0, **over) -> Case:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    eig = np.logspace(-1.0, 1.0, dim)  # variances 0.1 .. 10: condition number 100
    cov = (q * eig) @ q.T
    cov = 0.5 * (cov + cov.T)
    mu = rng.normal(size=dim)
    prec = np.linalg.inv(cov)
    log_z = 0.5 * float(np.linalg.slogdet(2 * np.pi * cov)[1])

    def make_logp():
        m, p = jnp.asarray(mu, jnp.float32), jnp.asarray(prec, jnp.float32)

        def logp(x):
            r = x - m
            return -0.5 * r @ (p @ r)

        return logp

    return Case(
        name=f"gauss d={dim}",
        title=f"correlated Gaussian d={dim} (cond 100)",
        dim=dim,
        make_logp=make_logp,
        mean=mu,
        std=np.sqrt(np.diag(cov)),
        log_z=log_z,
        truth="analytic (Gaussian moments; log Z = log det(2 pi Sigma)/2)",
        settings=_settings(quick, **over),
    )


def banana_case(quick: bool, **over) -> Case:
    a, s0, s1 = 1.0, 1.0, 0.3

    def make_logp():
        def logp(x):
            return (
                -0.5 * ((x[0] - a) / s0) ** 2
                - 0.5 * ((x[1] - x[0] ** 2) / s1) ** 2
                - math.log(2 * math.pi * s0 * s1)
            )

        return logp

    var1 = 4 * a**2 * s0**2 + 2 * s0**4 + s1**2
    return Case(
        name="banana d=2",
        title="Rosenbrock banana d=2",
        dim=2,
        make_logp=make_logp,
        mean=np.array([a, a**2 + s0**2]),
        std=np.array([s0, math.sqrt(var1)]),
        log_z=0.0,
        truth="analytic (x0 ~ N(1,1), x1|x0 ~ N(x0^2, 0.3^2))",
        settings=_settings(quick, **over),
    )


def funnel_case(quick: bool, dim: int = 5, **over) -> Case:
    sv = 3.0

    def make_logp():
        def logp(x):
            v, rest = x[0], x[1:]
            lv = -0.5 * (v / sv) ** 2 - math.log(sv * math.sqrt(2 * math.pi))
            lx = jnp.sum(-0.5 * rest**2 * jnp.exp(-v) - 0.5 * v - 0.5 * math.log(2 * math.pi))
            return lv + lx

        return logp

    return Case(
        name=f"funnel d={dim}",
        title=f"Neal's funnel d={dim} (v ~ N(0, 3^2))",
        dim=dim,
        make_logp=make_logp,
        mean=np.zeros(dim),
        std=np.array([sv] + [math.exp(sv**2 / 4)] * (dim - 1)),
        log_z=0.0,
        truth="analytic (sd v = 3, sd x_i = exp(9/4))",
        settings=_settings(quick, **over),
    )


MIX_W, MIX_M1, MIX_M2 = 0.3, np.array([-4.0, -4.0]), np.array([4.0, 4.0])


def _mode1_weight(x: np.ndarray, w: np.ndarray) -> dict[str, float]:
    side = (x - 0.5 * (MIX_M1 + MIX_M2)) @ (MIX_M2 - MIX_M1) < 0
    return {"weight of mode 1": float(np.sum(w * side))}


def mixture_case(quick: bool, **over) -> Case:
    def make_logp():
        m1, m2 = jnp.asarray(MIX_M1, jnp.float32), jnp.asarray(MIX_M2, jnp.float32)

        def logp(x):
            l1 = math.log(MIX_W) - 0.5 * jnp.sum((x - m1) ** 2)
            l2 = math.log(1 - MIX_W) - 0.5 * jnp.sum((x - m2) ** 2)
            return jnp.logaddexp(l1, l2) - math.log(2 * math.pi)

        return logp

    mean = MIX_W * MIX_M1 + (1 - MIX_W) * MIX_M2
    var = 1.0 + MIX_W * (1 - MIX_W) * (MIX_M2 - MIX_M1) ** 2
    return Case(
        name="mixture d=2",
        title="two Gaussians 0.3/0.7, modes 11 sd apart",
        dim=2,
        make_logp=make_logp,
        mean=mean,
        std=np.sqrt(var),
        log_z=0.0,
        truth="analytic (mixture moments)",
        settings=_settings(quick, **over),
        extra=_mode1_weight,
        extra_truth={"weight of mode 1": MIX_W},
    )


def synthetic_cases(quick: bool) -> list[Case]:
    return [
        gaussian_case(2, quick),
        gaussian_case(20, quick),
        banana_case(quick),
        funnel_case(quick),
        mixture_case(quick),
    ]


def gw_population_cases(quick: bool) -> list[Case]:
    """Hook for the gravitational-wave population likelihood. Empty: that case (`gw.gw_case`)
    runs from `benchmarks/gw.py`, which writes ``results/gw.json`` and the ``gw`` section."""
    del quick
    return []


CASE_BUILDERS: list[Callable[[bool], list[Case]]] = [synthetic_cases, gw_population_cases]


# ----------------------------------------------------------------------------------------------
# measurement
# ----------------------------------------------------------------------------------------------


class CompileClock:
    """Seconds of XLA backend compilation (``jax.monitoring``) since the last `reset`."""

    def __init__(self):
        self.seconds = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            self.seconds += duration

    def reset(self) -> None:
        self.seconds = 0.0


CLOCK: CompileClock | None = None


def _arviz():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz

    return arviz


def chain_ess(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-parameter ``min(bulk, tail)`` ESS and split-R-hat of draws ``x[chain, draw, dim]``."""
    az = _arviz()
    ess, rhat = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j in range(x.shape[-1]):
            xj = np.asarray(x[:, :, j], np.float64)
            ess.append(min(float(az.ess(xj, method="bulk")), float(az.ess(xj, method="tail"))))
            rhat.append(float(az.rhat(xj)))
    return np.nan_to_num(np.array(ess), nan=0.0), np.array(rhat)


@dataclasses.dataclass
class Run:
    sampler: str
    case: str
    seed: int
    wall_s: float = math.nan
    cpu_s: float = math.nan
    compile_s: float = math.nan
    min_ess: float = 0.0
    ess_counts: bool = True  # False for flow VI with k-hat >= KHAT_MAX
    z_max: float = math.inf
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str | None = None
    # (x[n, dim], w[n], ESS per parameter or None for importance draws), for re-scoring against
    # a reference known only after all runs (benchmarks/gw.py); not written to the JSON
    draws: tuple | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def ess_per_s(self) -> float:
        if self.error or not self.ess_counts or not self.wall_s > 0:
            return 0.0
        return self.min_ess / self.wall_s

    @property
    def accurate(self) -> bool:
        rhat_ok = self.details.get("rhat_max", 1.0) <= RHAT_MAX
        return self.error is None and self.ess_counts and self.z_max <= Z_MAX and rhat_ok

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(dataclasses.replace(self, draws=None))
        del d["draws"]
        d["ess_per_s"] = self.ess_per_s
        d["accurate"] = self.accurate
        return d


def moments(
    x: np.ndarray, w: np.ndarray, ess: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted mean, sd and the mean's Monte-Carlo standard error (see `_score`)."""
    mean = w @ x
    std = np.sqrt(w @ (x - mean) ** 2)
    if ess is None:
        mcse = np.sqrt((w**2) @ (x - mean) ** 2)
    else:
        mcse = std / np.sqrt(np.maximum(ess, 1.0))
    return mean, std, mcse


def _score(
    run: Run, case: Case, x: np.ndarray, w: np.ndarray, ess: np.ndarray | None = None
) -> None:
    """Fill accuracy fields from flattened draws ``x[n, d]`` with weights ``w`` (sum 1).

    MCMC (``ess`` given, per parameter): ``MCSE = sd / sqrt(ESS)``. Importance draws (``ess``
    None): the self-normalised estimator's delta-method standard error
    ``sqrt(sum_i w_i^2 (x_i - mean)^2)``, which, unlike ``sd / sqrt(Kish ESS)``, grows when the
    large weights sit in the tails of that parameter.
    """
    mean, std, mcse = moments(x, w, ess)
    if case.mean_se is not None:  # the truth is itself an estimate (a reference run)
        mcse = np.sqrt(mcse**2 + case.mean_se**2)
    z = np.abs(mean - case.mean) / np.maximum(mcse, 1e-300)
    run.z_max = float(np.max(z))
    run.draws = (x, w, ess)
    run.details.update(
        mean_err_max=float(np.max(np.abs(mean - case.mean) / case.std)),
        std_rel_err_max=float(np.max(np.abs(std / case.std - 1))),
        worst_param=int(np.argmax(z)),
    )
    if case.extra is not None:
        run.details.update(case.extra(x, w))


def _timed(run: Run, fn: Callable[[], Any]) -> Any:
    assert CLOCK is not None
    CLOCK.reset()
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    run.wall_s = time.perf_counter() - t0
    run.cpu_s = time.process_time() - c0
    run.compile_s = CLOCK.seconds
    return out


def _target(case: Case) -> ss.Target:
    if case.make_target is not None:
        return case.make_target()
    logp = case.make_logp()
    return ss.Target.from_log_density(lambda p: logp(p["x"]), init={"x": jnp.asarray(case.x0)})


def run_ours(kind: str, case: Case, seed: int) -> Run:
    run = Run(kind, case.name, seed)
    sampler = ss.NUTS(**case.settings["nuts"], evidence=False) if kind == OUR_NUTS else None
    sampler = sampler or case.settings[kind]

    start = case.settings.get("mcmc_init_scale")  # ours' MCMC chains start like the peers'
    kw = {}
    if start is not None and kind != FLOW_VI:
        noise = jax.random.normal(jax.random.key(seed + 1), (sampler.n_chains, case.dim))
        kw["init_positions"] = jnp.asarray(case.x0) + start * noise

    def call():
        target = _target(case)
        return target, ss.sample(jax.random.key(seed), target, sampler, progress=False, **kw)

    target, r = _timed(run, call)
    x = r.z.reshape(-1, case.dim)  # unconstrained, like the peers' draws
    if kind == FLOW_VI:
        w = r.weights()
        run.min_ess = float(1.0 / np.sum(w**2))  # Kish ESS of the PSIS weights
        khat = float(r.diagnostics["khat"])
        run.ess_counts = khat < KHAT_MAX
        run.details.update(
            khat=khat,
            ess_fraction=run.min_ess / x.shape[0],
            stages=len(r.diagnostics["stages"]),
            log_z=r.log_z,
            log_z_err=r.log_z_err,
            log_z_dev=(r.log_z - case.log_z) / r.log_z_err if r.log_z_err else math.inf,
            lib_min_ess=r.min_ess(),
        )
        _score(run, case, x, w)
        return run
    ess, rhat = chain_ess(r.z)
    run.min_ess = float(ess.min())
    run.details.update(rhat_max=float(rhat.max()), lib_min_ess=r.min_ess())
    for k in ("accept_local", "accept_global", "accept", "divergences", "mean_tree_steps"):
        if k in r.diagnostics:
            run.details[k] = r.diagnostics[k]
    _score(run, case, x, np.full(x.shape[0], 1.0 / x.shape[0]), ess)
    if kind == FLOW_MCMC and seed == 0 and math.isfinite(case.log_z):
        # The learned-harmonic-mean evidence (what FlowMCMC(evidence=True) adds), timed apart and
        # on thinned draws (<= EVIDENCE_DRAWS): on all 64 x 1000 draws its flow fit alone takes
        # minutes at d = 20 on 2 cores. First seed only.
        z = r.z[:, :: max(1, math.ceil(r.z.size / case.dim / EVIDENCE_DRAWS))]
        t0 = time.perf_counter()
        log_z, err, _ = ss.harmonic_evidence(jax.random.key(seed + 7), target, z)
        run.details.update(
            evidence_s=time.perf_counter() - t0,
            evidence_draws=int(z.shape[0] * z.shape[1]),
            log_z=log_z,
            log_z_err=err,
            log_z_dev=(log_z - case.log_z) / err if err else math.inf,
        )
    return run


def numpyro_draws(
    case: Case, seed: int, st: dict[str, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NumPyro ``MCMC(NUTS(potential_fn))`` on a fresh closure of the case's log-density:
    ``draws[chain, draw, dim]``, the divergence flags and the tree steps per draw."""
    from numpyro.infer import MCMC, NUTS

    n_chains = st["n_chains"]
    logp = case.make_logp()
    k_init, k_run = jax.random.split(jax.random.PRNGKey(seed))
    init = jnp.asarray(case.x0) + 0.1 * jax.random.normal(k_init, (n_chains, case.dim))
    mcmc = MCMC(
        NUTS(potential_fn=lambda x: -logp(x), max_tree_depth=st.get("max_tree_depth", 10)),
        num_warmup=st["n_warmup"],
        num_samples=st["n_samples"],
        num_chains=n_chains,
        chain_method=st.get("chain_method", "vectorized"),
        progress_bar=False,
    )
    mcmc.run(k_run, init_params=init, extra_fields=("diverging", "num_steps"))
    extra = mcmc.get_extra_fields(group_by_chain=True)
    return (
        np.asarray(mcmc.get_samples(group_by_chain=True)),
        np.asarray(extra["diverging"]),
        np.asarray(extra["num_steps"]),
    )


def run_numpyro(case: Case, seed: int) -> Run:
    run = Run(NUMPYRO, case.name, seed)
    samples, div, steps = _timed(run, lambda: numpyro_draws(case, seed, case.settings["nuts"]))
    ess, rhat = chain_ess(samples)
    run.min_ess = float(ess.min())
    run.details.update(
        rhat_max=float(rhat.max()),
        divergences=int(div.sum()),
        mean_tree_steps=float(steps.mean()),
    )
    x = samples.reshape(-1, case.dim)
    _score(run, case, x, np.full(x.shape[0], 1.0 / x.shape[0]), ess)
    return run


def run_flowmc(case: Case, seed: int) -> Run:
    from flowMC.resource_strategy_bundle.RQSpline_MALA import RQSpline_MALA_Bundle
    from flowMC.Sampler import Sampler

    run = Run(FLOWMC, case.name, seed)
    st = dict(case.settings["flowmc"])
    n_chains = st.pop("n_chains")
    init_scale = st.pop("init_scale", 3.0)

    def call():
        logp = case.make_logp()
        k_bundle, k_sampler, k_init = jax.random.split(jax.random.PRNGKey(seed), 3)
        bundle = RQSpline_MALA_Bundle(k_bundle, n_chains, case.dim, lambda x, data: logp(x), **st)
        sampler = Sampler(
            n_dim=case.dim,
            n_chains=n_chains,
            rng_key=k_sampler,
            resource_strategy_bundles=bundle,
            checkpoint_interval=0,  # no checkpoint, no persistent compilation cache
        )
        # Same start as ours FlowMCMC: draws of the broad N(0, 3^2) reference (or, with
        # ``init_scale``, a narrower ball where most of that reference has zero density).
        init = jnp.asarray(case.x0) + init_scale * jax.random.normal(k_init, (n_chains, case.dim))
        sampler.sample(init, {})
        res = sampler.resources
        return (
            np.asarray(res["positions_production"].data),
            np.asarray(res["local_accs_production"].data),
            np.asarray(res["global_accs_production"].data),
        )

    pos, acc_l, acc_g = _timed(run, call)
    ess, rhat = chain_ess(pos)
    run.min_ess = float(ess.min())
    run.details.update(
        rhat_max=float(rhat.max()),
        accept_local=float(np.mean(acc_l[np.isfinite(acc_l)])),
        accept_global=float(np.mean(acc_g[np.isfinite(acc_g)])),
    )
    x = pos.reshape(-1, case.dim)
    _score(run, case, x, np.full(x.shape[0], 1.0 / x.shape[0]), ess)
    return run


def run_one(sampler: str, case: Case, seed: int) -> Run:
    try:
        if sampler == NUMPYRO:
            return run_numpyro(case, seed)
        if sampler == FLOWMC:
            return run_flowmc(case, seed)
        return run_ours(sampler, case, seed)
    except Exception as e:  # noqa: BLE001 - a failed run is a result (flagged), not a crash
        traceback.print_exc()
        return Run(sampler, case.name, seed, error=f"{type(e).__name__}: {str(e)[:300]}")


def warm_up_process() -> None:
    """Every sampler once on a small Gaussian with its own tiny settings (not reported), so
    imports and one-time initialisation (ArviZ, flowjax, flowMC, NumPyro) are paid before the
    timed runs."""
    base = gaussian_case(3, quick=True, seed=99)
    settings = {
        **base.settings,
        FLOW_VI: ss.FlowVI(steps=20, n_elbo=8, n_draws=500, draw_batch=500, max_refine=0, chunk=20),
        FLOW_MCMC: ss.FlowMCMC(
            n_chains=4, train_loops=1, cycles_per_loop=5, n_samples=20, train_epochs=1
        ),
        "nuts": {"n_chains": 2, "n_warmup": 20, "n_samples": 20},
        "flowmc": _flowmc(True, n_chains=4, n_training_loops=1, n_production_loops=1, n_epochs=1),
    }
    case = dataclasses.replace(base, settings=settings)
    for s in SAMPLERS:
        r = run_one(s, case, seed=12345)
        print(
            f"  warm-up {s}: {r.wall_s:.1f} s{' ERROR ' + r.error if r.error else ''}", flush=True
        )


# ----------------------------------------------------------------------------------------------
# summary, rows
# ----------------------------------------------------------------------------------------------


def _median(xs) -> float:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(xs) if xs else math.nan


def summarize(runs: list[Run]) -> dict[str, Any]:
    """Per sampler: medians over seeds, worst accuracy, how many seeds were accurate."""
    out: dict[str, Any] = {
        "n": len(runs),
        "n_accurate": sum(r.accurate for r in runs),
        "errors": [r.error for r in runs if r.error],
        "wall_s": _median([r.wall_s for r in runs]),
        "cpu_s": _median([r.cpu_s for r in runs]),
        "compile_s": _median([r.compile_s for r in runs]),
        "min_ess": _median([r.min_ess for r in runs]),
        "ess_per_s": _median([r.ess_per_s for r in runs]),
        "z_max": max((r.z_max for r in runs), default=math.inf),
    }
    if any("rhat_max" in r.details for r in runs):
        out["rhat_worst"] = max(r.details.get("rhat_max", 1.0) for r in runs)
    keys = {k for r in runs for k, v in r.details.items() if isinstance(v, (int, float))}
    for k in sorted(keys):
        out[k] = _median([r.details.get(k) for r in runs])
    return out


def _acc(s: dict[str, Any]) -> str:
    bits = [f"z {s['z_max']:.1f}"]
    if "khat" in s:
        bits.append(f"k̂ {s['khat']:.2f}")
    if "rhat_max" in s:
        bits.append(f"R̂ {s['rhat_max']:.3f}")
    if s.get("divergences"):
        bits.append(f"{s['divergences']:.0f} div")
    if "weight of mode 1" in s:
        bits.append(f"w1 {s['weight of mode 1']:.3f}")
    return ", ".join(bits)


def _desc(s: dict[str, Any]) -> str:
    """``ESS 1234 in 5.6 s (compile 2.1 s), z 0.8, R̂ 1.001``."""
    if s["n_accurate"] == 0 and s["errors"]:
        return "FAILED: " + s["errors"][0]
    return (
        f"ESS {s['min_ess']:.0f} in {s['wall_s']:.1f} s (XLA compile {s['compile_s']:.1f} s), "
        f"{_acc(s)}"
    )


def _flag(s: dict[str, Any], who: str) -> str:
    if s["n_accurate"] == s["n"]:
        return ""
    why = []
    if s["errors"]:
        why.append(f"{len(s['errors'])} failed")
    if s["z_max"] > Z_MAX:
        why.append(f"z up to {s['z_max']:.3g} > {Z_MAX:g}")
    if s.get("khat", 0) >= KHAT_MAX:
        why.append(f"k̂ {s['khat']:.2f} >= {KHAT_MAX}")
    if s.get("rhat_worst", 1.0) > RHAT_MAX:
        why.append(f"R̂ up to {s['rhat_worst']:.3g} > {RHAT_MAX}")
    return f" **{who} INACCURATE in {s['n'] - s['n_accurate']}/{s['n']} seeds ({'; '.join(why)})**"


def _peer_label(peer: str, case: Case) -> str:
    """`PEER_LABEL`, with the case's NumPyro chain method and tree-depth cap when not default."""
    st = case.settings.get("nuts", {})
    label = PEER_LABEL[peer]
    if peer == NUMPYRO:
        label = label.replace('"vectorized"', f'"{st.get("chain_method", "vectorized")}"')
        if "max_tree_depth" in st:
            label = label.replace(
                "(potential_fn)", f"(potential_fn, max_tree_depth={st['max_tree_depth']})"
            )
    return label


def rows_for_case(case: Case, summ: dict[str, dict[str, Any]], n_seeds: int) -> list[dict]:
    rows = []
    seeds = f"median of {n_seeds} seed{'s' if n_seeds > 1 else ''}"
    for ours in (FLOW_VI, FLOW_MCMC, OUR_NUTS):
        peers = (NUMPYRO,) if ours == OUR_NUTS else (NUMPYRO, FLOWMC)
        so = summ.get(ours)
        for peer in peers:
            sp = summ.get(peer)
            if so is None or sp is None:
                continue
            r = common.row(
                f"{case.name}: {ours}",
                "min-ESS/s",
                so["ess_per_s"],
                _peer_label(peer, case),
                sp["ess_per_s"],
                better="higher",
                note=f"ours: {_desc(so)}; peer: {_desc(sp)}; {seeds}"
                + _flag(so, "ours")
                + _flag(sp, "peer"),
            )
            if so["n_accurate"] < so["n"]:
                r["note"] += " — not a win (ours inaccurate)"
            rows.append(r)
    vi, mc = summ.get(FLOW_VI), summ.get(FLOW_MCMC)
    if vi is not None and "log_z" in vi and math.isfinite(case.log_z):
        r = common.row(
            f"{case.name}: log Z",
            "log Z",
            vi["log_z"],
            "analytic",
            case.log_z,
            better="higher",
            note=(
                f"ours FlowVI: {vi['log_z']:.4f} ± {vi['log_z_err']:.2g} "
                f"(|Δ|/SE {abs(vi['log_z_dev']):.2g})"
                + (
                    f"; ours FlowMCMC + learned harmonic mean: {mc['log_z']:.4f} ± "
                    f"{mc['log_z_err']:.2g} (|Δ|/SE {abs(mc['log_z_dev']):.2g}, "
                    f"+{mc['evidence_s']:.1f} s)"
                    if mc is not None and "log_z" in mc
                    else ""
                )
                + f"; {seeds}"
            ),
        )
        r["ratio"] = None  # a value, not a speed: no "times better"
        rows.append(r)
    for key, truth in case.extra_truth.items():
        if vi is None or key not in vi:
            continue
        others = "; ".join(
            f"{s}: {summ[s][key]:.3f}" for s in SAMPLERS[1:] if s in summ and key in summ[s]
        )
        r = common.row(
            f"{case.name}: {key}",
            key,
            vi[key],
            "truth",
            truth,
            note=f"ours FlowVI: {vi[key]:.3f}; {others}; {seeds}",
        )
        r["ratio"] = None
        rows.append(r)
    return rows


def goal_verdicts(cases: list[Case], summary: dict[str, dict[str, dict]]) -> dict[str, str]:
    out = {}
    for case in cases:
        s = summary.get(case.name, {})
        nuts = s.get(NUMPYRO)
        best = None
        for ours in (FLOW_VI, FLOW_MCMC):
            so = s.get(ours)
            if so and so["n_accurate"] == so["n"] and (best is None or so["ess_per_s"] > best[1]):
                best = (ours, so["ess_per_s"])
        if nuts is None:
            out[case.name] = "no NumPyro NUTS run"
        elif best is None:
            out[case.name] = "NOT met: no accurate run of ours" + (
                f" (NumPyro NUTS is flagged too: {_acc(nuts)})"
                if nuts["n_accurate"] < nuts["n"]
                else ""
            )
        elif nuts["ess_per_s"] <= 0:
            out[case.name] = f"{best[0]} {best[1]:.3g} ESS/s; NumPyro NUTS failed"
        else:
            ratio = best[1] / nuts["ess_per_s"]
            verdict = "met" if ratio >= GOAL else "NOT met"
            shown = f"{ratio:.0f}" if ratio >= 100 else f"{ratio:.3g}"
            text = f"{verdict}: {best[0]} {shown}× NumPyro NUTS"
            if nuts["n_accurate"] < nuts["n"]:
                text += (
                    f" (NumPyro NUTS is itself flagged here: {_acc(nuts)}; the ratio is against "
                    "a run that did not converge, ours is accurate)"
                )
            out[case.name] = text
    return out


def _settings_text(case: Case) -> dict[str, str]:
    return {k if isinstance(k, str) else str(k): repr(v) for k, v in case.settings.items()}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in ("numpyro", "flowMC", "flowjax", "arviz", "equinox"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "?"
    return out


def intro(report: dict[str, Any], cases: list[Case], s: dict[str, dict[str, dict]]) -> str:
    lines = [
        "`science.samplers` (ours: `FlowVI`, `FlowMCMC`, and NumPyro's NUTS kernel through our "
        "driver) vs NumPyro NUTS called directly and flowMC "
        f"{report['versions']['flowMC']} (`RQSpline_MALA_Bundle`), same targets, same process. "
        "**min-ESS/s** = min over parameters of min(bulk, tail) ArviZ ESS (flow VI: Kish ESS of "
        "the PSIS weights, counted only when k̂ < 0.7) ÷ wall seconds of the whole call "
        "including compilation and warm-up / flow training (fresh closures, first call of each "
        "configuration). Accuracy: z = max over parameters of |mean − truth| / MCSE against "
        f"analytic truths; z > {Z_MAX:g} or split-R̂ > {RHAT_MAX} flags a run (never a win). "
        "Medians over "
        f"{report['n_seeds']} seed(s). Mode: {report['mode']}. Code: commit {report['commit']}. "
        "Load average at start/end: "
        f"{report['loadavg_start']} / {report['loadavg_end']} (the 2 cores are shared; "
        "`cpu_s` per run is in the JSON). Total wall: "
        f"{report['total_wall_s']:.0f} s.",
        "",
        "Settings: NUTS (both) "
        + ", ".join(f"{k}={v}" for k, v in cases[0].settings["nuts"].items())
        + " (diagonal mass, target accept 0.8, chains start at 0 + 0.1·N(0,1)); flowMC "
        + ", ".join(f"{k}={v}" for k, v in cases[0].settings["flowmc"].items())
        + " with the bundle's defaults otherwise (RQ spline 4 layers, (32, 32) hidden, 8 bins, "
        "Adam 1e-3, batch 10000 = n_max_examples, MALA step 0.1 adapted), chains start at "
        "3·N(0,1); ours per target in `benchmarks/results/samplers.json` (`settings`).",
        "",
    ]
    lines += sampler_table(cases, s)
    lines += ["", "Goal (≥ 5× NumPyro NUTS min-ESS/s at equal accuracy, best of ours):"]
    lines += [f"- {k}: {v}" for k, v in report["goal"].items()]
    return "\n".join(lines)


def sampler_table(cases: list[Case], s: dict[str, dict[str, dict]]) -> list[str]:
    """Markdown lines: one row per case and sampler (medians over seeds)."""
    lines = [
        "| target | sampler | min-ESS/s | min ESS | wall s | XLA compile s | accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        for name in SAMPLERS:
            so = s.get(case.name, {}).get(name)
            if so is None:
                continue
            flag = "" if so["n_accurate"] == so["n"] else " ⚠ inaccurate"
            lines.append(
                f"| {case.name} | {name} | {so['ess_per_s']:.4g} | {so['min_ess']:.0f} | "
                f"{so['wall_s']:.1f} | {so['compile_s']:.1f} | {_acc(so)}{flag} |"
            )
    return lines


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------


def _run_from_dict(d: dict[str, Any]) -> Run:
    fields = {f.name for f in dataclasses.fields(Run)}
    kw = {k: v for k, v in d.items() if k in fields}
    for k, missing in (("wall_s", math.nan), ("cpu_s", math.nan), ("compile_s", math.nan)):
        kw[k] = missing if kw.get(k) is None else kw[k]
    kw["z_max"] = math.inf if kw.get("z_max") is None else kw["z_max"]
    return Run(**kw)


def measure(
    args, cases: list[Case] | None = None, samplers: tuple[str, ...] = SAMPLERS
) -> tuple[list[Case], list[Run], dict[str, Any]]:
    """Run every sampler on every case (default: ``CASE_BUILDERS``') for ``args.seeds`` seeds."""
    global CLOCK
    n_seeds = args.seeds or 1
    t_start = time.perf_counter()
    meta: dict[str, Any] = {
        "loadavg_start": common.loadavg(),
        "commit": common.git_commit("science/samplers"),
    }
    CLOCK = CompileClock()
    if cases is None:
        cases = [c for build in CASE_BUILDERS for c in build(args.quick)]
        if args.quick and not args.cases:
            cases = [c for c in cases if c.name == "mixture d=2"]
    if args.cases:
        want = [w.strip() for w in args.cases.split(",")]
        cases = [c for c in cases if any(w in c.name for w in want)]
    if args.samplers:
        want = [w.strip() for w in args.samplers.split(",")]
        samplers = tuple(s for s in SAMPLERS if any(w in s for w in want))

    if not args.quick:  # the smoke run skips it (its first runs include imports)
        print("warm-up (not reported) ...", flush=True)
        warm_up_process()
    runs: list[Run] = []
    order = random.Random(0)
    for seed in range(n_seeds):
        for case in cases:
            for s in order.sample(samplers, len(samplers)):
                r = run_one(s, case, seed)
                runs.append(r)
                print(
                    f"[{time.perf_counter() - t_start:6.0f}s] {case.name:12s} {s:22s} seed {seed}: "
                    f"wall {r.wall_s:6.1f} s (compile {r.compile_s:5.1f}, cpu {r.cpu_s:6.1f}) "
                    f"min ESS {r.min_ess:8.0f} -> {r.ess_per_s:8.1f}/s z {r.z_max:.2f}"
                    f"{'' if r.accurate else '  INACCURATE'}{' ' + r.error if r.error else ''}",
                    flush=True,
                )
    meta.update(
        mode=(
            "quick (--quick: tiny settings, the mixture only, 1 seed, no process warm-up; a "
            "smoke run, not a measurement)"
            if args.quick
            else f"full ({n_seeds} seed{'s' if n_seeds > 1 else ''})"
        ),
        n_seeds=n_seeds,
        versions=_versions(),
        loadavg_end=common.loadavg(),
        total_wall_s=round(time.perf_counter() - t_start, 1),
    )
    return cases, runs, meta


def load(path: pathlib.Path) -> tuple[list[Case], list[Run], dict[str, Any]]:
    """The cases, runs and run facts of an earlier results file (for ``--render``)."""
    old = json.loads(path.read_text())
    quick = str(old.get("mode", "")).startswith("quick")
    cases = [c for build in CASE_BUILDERS for c in build(quick) if c.name in old["cases"]]
    runs = [_run_from_dict(d) for d in old["runs"]]
    keys = ("loadavg_start", "loadavg_end", "commit", "mode", "n_seeds", "versions")
    meta = {k: old[k] for k in keys} | {"total_wall_s": old["total_wall_s"], "date": old["date"]}
    return cases, runs, meta


TITLE = "Samplers: min-ESS per second incl. compile (`benchmarks/samplers.py`)"


def publish(
    cases: list[Case],
    runs: list[Run],
    meta: dict[str, Any],
    args,
    *,
    name: str = "samplers",
    title: str = TITLE,
    intro_fn: Callable[[dict, list[Case], dict], str] = intro,
    more: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Summaries, rows, goal verdicts; ``results/<name>.json`` (or ``args.out``, with ``more``
    merged in) and the ``name`` section of BENCHMARKS.md (``intro_fn(report, cases, summary)``
    above the rows). Returns the report."""
    summary: dict[str, dict[str, dict]] = {}
    for case in cases:
        summary[case.name] = {}
        for s in SAMPLERS:
            rs = [r for r in runs if r.case == case.name and r.sampler == s]
            if rs:
                summary[case.name][s] = summarize(rs)
    n_seeds = meta["n_seeds"]
    rows = [row for case in cases for row in rows_for_case(case, summary[case.name], n_seeds)]
    extra = {
        **{k: v for k, v in meta.items() if k != "date"},
        "accuracy_rule": f"z = max_j |mean_j - truth_j| / MCSE_j <= {Z_MAX:g} (MCSE: sd / "
        "sqrt(ESS) for MCMC, the self-normalised importance estimate's delta-method SE for flow "
        f"VI); MCMC also needs split-R-hat <= {RHAT_MAX}, flow VI k-hat < {KHAT_MAX}",
        "cases": {
            c.name: {
                "title": c.title,
                "dim": c.dim,
                "truth": c.truth,
                "log_z": c.log_z,
                "settings": _settings_text(c),
            }
            for c in cases
        },
        "summary": summary,
        "goal": goal_verdicts(cases, summary),
        "runs": [r.as_dict() for r in runs],
        **(more or {}),
    }
    path = pathlib.Path(args.out) if args.out else common.RESULTS / f"{name}.json"
    report = common.write_results(name, rows, extra=common.json_clean(extra), path=path)
    if "date" in meta:  # a re-render keeps the measurement's date
        report["date"] = meta["date"]
        path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    common.print_table(rows, max_note=90)
    print("\n" + "\n".join(f"goal {k}: {v}" for k, v in extra["goal"].items()))
    print(f"\nwrote {path} ({meta['total_wall_s']} s)")
    if not args.no_md:
        md = common.update_benchmarks_md(
            name, report, title=title, intro=intro_fn(report, cases, summary)
        )
        print(f"updated {md}")
    return report


def parse_args(name: str, description: str, quick: str, seeds: str) -> argparse.Namespace:
    """The command line of the sampler benchmarks (``name``: the results file's stem)."""
    parser = argparse.ArgumentParser(description=description)
    common.output_arguments(
        parser,
        name,
        quick=quick,
        render="rebuild rows, verdicts and BENCHMARKS.md from an earlier JSON",
    )
    parser.add_argument("--seeds", type=int, default=None, help=seeds)
    parser.add_argument("--cases", default=None, help="comma-separated case names (substring)")
    parser.add_argument("--samplers", default=None, help="comma-separated sampler names")
    return common.parse_output_arguments(parser, name)


def main() -> None:
    args = parse_args(
        "samplers",
        __doc__.splitlines()[0],
        quick="tiny settings, the mixture only, 1 seed, no warm-up",
        seeds="seeds per sampler (1; each adds ~17 min)",
    )
    if args.render:
        publish(*load(pathlib.Path(args.render)), args)
    else:
        publish(*measure(args), args)


if __name__ == "__main__":
    main()
