"""PTA: refit model comparison, full-likelihood evaluation and sampling efficiency —
`science.pta` (flow VI, the reduced Gaussian-process likelihood) vs PTMCMCSampler, a dense
numpy/scipy likelihood and NumPyro NUTS, on the same inputs in the same process.

Three parts (float64 throughout: ``jax_enable_x64`` is on, as in the ``pta-compare`` job):

1. **Refit model comparison** on EPTA DR2new (its ``DEFAULT_BINS`` lowest bins): the evidence of
   every model of ``pta.MODELS`` with ours, ``pta.flow_vi(steps, n_draws)`` through
   ``pta.run_model`` (ln Z ± s.e., PSIS k-hat, wall time incl. compilation). Peer: the sampler
   ceffyl / PTArcade use, PTMCMCSampler (``PTSampler``), on the same jitted refit likelihood
   wrapped as numpy callables with the models' own priors. ln Z by thermodynamic integration over
   its temperature ladder (`thermodynamic_log_z`: trapezoid rule in beta, beta = 0 from exact
   prior draws; error = Monte-Carlo (per-temperature ESS) and discretisation (Richardson-style:
   fine vs every-other-temperature ladder) in quadrature). Without mpi4py (not installed here)
   PTMCMCSampler runs one temperature per process and cannot swap, so each temperature of the
   ladder runs as its own chain, one after another (on 2 cores the MPI ranks would share the same
   cores); the peer's wall time is the sum over the ladder. ceffyl and enterprise do not install
   here (enterprise needs scikit-sparse, which needs libsuitesparse-dev).
2. **Full-likelihood evaluation** on the EPTA DR2 timing data (25 pulsars, ``n_red=30``,
   ``n_gw=10``, power-law common process): ours ``jit(PTALikelihood.log_likelihood)`` (value;
   value + gradient) vs `DenseLikelihood`, a straightforward numpy/scipy implementation that
   builds each covariance ``C = N + F_dm phi_dm F_dm^T + F Phi F^T`` (the fixed white + chromatic
   part ``C0`` cached), Cholesky-factors it and projects out the timing model. CURN: dense per
   pulsar (block diagonal) over all 25; HD: the dense joint covariance of all 50k TOAs would take
   20 GB, so dense HD runs on the pulsars with the fewest TOAs, against ours on the same subset.
   Both are evaluated at ``reference_params()``; their difference is recorded.
3. **Sampling efficiency**: min-ESS per second (the definition of ``benchmarks/samplers.py``:
   min over parameters of min(bulk, tail) ESS for MCMC; Kish ESS of the PSIS weights for flow VI,
   counted only when k-hat < 0.7; wall seconds of the whole call incl. compilation and training)
   of ours (``pta.flow_vi``) vs NumPyro NUTS (``ss.NUTS``) on the full CURN likelihood (25
   pulsars, 52 parameters) and on the refit SMBHB model. No analytic truth: each run is checked
   against the other (``benchmarks/gw.py``'s ``rescore``). HD is not sampled here:
   ``jax.vmap(jax.grad(...))`` of the 25-pulsar HD likelihood stalled for batches >= 4-8.

Run: ``.venv/bin/python benchmarks/pta.py [--quick]`` (``--quick``: 2 models, short runs, 5
pulsars, a ~5 min smoke run (mostly compilation) written to ``$TMPDIR/pta_quick.json`` only; ``--render JSON``
rebuilds the section from an earlier results file); writes ``benchmarks/results/pta.json`` and
the ``pta`` section of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import os

# numpy's BLAS threads oversubscribe the 2 shared cores (observed: 100x slower); set before numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import _common as common  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import samplers as sb  # noqa: E402
import scipy.linalg as sla  # noqa: E402

jax.config.update("jax_enable_x64", True)  # the full likelihood needs float64 (as the job does)

from science import pta, samplers as ss  # noqa: E402
from science.pta import DEFAULT_BINS, load_free_spectrum  # noqa: E402

NAME = "pta"
TITLE = "PTA: refit model comparison, full likelihood, sampling (`benchmarks/pta.py`)"
DATASET = "epta_dr2new"
PT_PEER = "PTMCMCSampler (tempered chains, TI)"
DENSE_PEER = "dense numpy/scipy (Cholesky)"
NUTS_PEER = "NumPyro NUTS (ss.NUTS)"
ENTERPRISE = "not installable here: scikit-sparse needs libsuitesparse-dev"
# the models PTMCMCSampler is run on (1-2 parameters; the brief's "2-parameter models at least")
PT_MODELS = ("SMBHB", "SIGW-DELTA", "DW", "STABLE")


CACHE = common.ROOT / "out" / "pta"  # finished pieces of a run, for --resume (gitignored)
RESUME = False  # set by --resume: reuse finished pieces from CACHE/<mode>/


def _cached(mode: str, key: str, fn):
    """``fn()``'s JSON-able result, saved under ``CACHE/mode/key.json``; with ``--resume`` an
    existing file is returned instead (marked ``"resumed": True``)."""
    path = CACHE / mode / f"{key}.json"
    if RESUME and path.exists():
        return json.loads(path.read_text()) | {"resumed": True}
    out = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(common.json_clean(out), indent=1))
    return out


def _settings(quick: bool) -> dict[str, Any]:
    if quick:
        return dict(
            models=("SMBHB", "STABLE"),
            pt_models=("SMBHB",),
            vi=(100, 2000),
            pt=dict(n_temps=8, n_iter=3000, beta_min=1e-3, budget_s=10.0),
            pulsars_curn=5,  # the fewest-TOA pulsars (quick: dense CURN on these only)
            pulsars_hd=3,
            dense_reps=3,
            curn_vi=(100, 1000),
            curn_nuts={"n_chains": 2, "n_warmup": 30, "n_samples": 30, "max_tree_depth": 5},
            smbhb_nuts={"n_chains": 2, "n_warmup": 100, "n_samples": 200},
        )
    return dict(
        models=tuple(pta.MODELS),
        pt_models=PT_MODELS,
        vi=(400, 8000),  # the job's ``small`` size
        # per model: 20000 iterations per temperature, fewer (>= 2000) where the likelihood is
        # so slow (cosmic strings: ~6 ms per call) that the ladder would exceed ~120 s
        pt=dict(n_temps=20, n_iter=20000, beta_min=1e-4, budget_s=120.0),
        pulsars_curn=None,  # all 25
        pulsars_hd=6,
        dense_reps=5,
        curn_vi=(800, 8000),  # the job's ``small`` full-likelihood size
        curn_nuts={"n_chains": 2, "n_warmup": 200, "n_samples": 200},
        smbhb_nuts={"n_chains": 4, "n_warmup": 500, "n_samples": 1000},
    )


# ----------------------------------------------------------------------------------------------
# part 1: refit evidences, ours vs PTMCMCSampler + thermodynamic integration
# ----------------------------------------------------------------------------------------------


def thermodynamic_log_z(
    betas: np.ndarray, mean_lnl: np.ndarray, se_lnl: np.ndarray
) -> tuple[float, float, dict[str, float]]:
    """``ln Z = int_0^1 E_beta[ln L] d beta`` by the trapezoid rule over ``betas`` (must include
    0 and 1). Error: the Monte-Carlo part (``se_lnl`` per temperature through the trapezoid
    weights) and the discretisation part ``|I_h - I_2h| / 3`` (every other temperature, both ends
    kept), added in quadrature."""
    order = np.argsort(betas)
    b, m, s = betas[order], mean_lnl[order], se_lnl[order]
    if not (b[0] == 0.0 and b[-1] == 1.0):
        raise ValueError("the ladder must include beta = 0 and beta = 1")
    w = np.zeros_like(b)
    h = np.diff(b)
    w[:-1] += h / 2
    w[1:] += h / 2
    fine = float(w @ m)
    idx = np.unique(np.r_[np.arange(0, b.size, 2), b.size - 1])
    coarse = float(np.trapezoid(m[idx], b[idx]))
    mc = float(np.sqrt(np.sum((w * s) ** 2)))
    disc = abs(fine - coarse) / 3.0
    return fine, float(math.hypot(mc, disc)), {"mc_err": mc, "disc_err": disc, "coarse": coarse}


def _prior_np(model: pta.SpectralModel):
    """The model's independent priors (uniform / normal) as numpy: log-density, sampler, scale."""
    params = model.params

    def logp(x: np.ndarray) -> float:
        out = 0.0
        for v, q in zip(x, params, strict=True):
            if q.low is not None:
                if not q.low <= v <= q.high:
                    return -np.inf
            else:
                out += -0.5 * ((v - q.mean) / q.sd) ** 2
        return out

    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        cols = [
            rng.uniform(q.low, q.high, n) if q.low is not None else rng.normal(q.mean, q.sd, n)
            for q in params
        ]
        return np.stack(cols, axis=1)

    widths = np.array(
        [(q.high - q.low) / math.sqrt(12) if q.low is not None else q.sd for q in params]
    )
    return logp, draw, widths


def _ess_1d(x: np.ndarray) -> float:
    ess, _ = sb.chain_ess(x[None, :, None])
    return max(float(ess[0]), 1.0)


def run_ptmcmc(model: pta.SpectralModel, data, bins: int, seed: int, st: dict) -> dict:
    """PTMCMCSampler on the refit likelihood, one chain per temperature of a geometric ladder in
    beta (1 .. ``beta_min``) plus exact prior draws at beta = 0; ln Z by `thermodynamic_log_z`.
    The wall time covers everything (jit of the likelihood, all chains, the estimate)."""
    from PTMCMCSampler.PTMCMCSampler import PTSampler

    t0 = time.perf_counter()
    _, lik = pta.refit_target(data, model, bins=bins)
    names = model.names
    f = jax.jit(lambda x: lik({n: x[i] for i, n in enumerate(names)}))
    logl = lambda x: float(f(np.asarray(x, np.float64)))
    logp, draw, widths = _prior_np(model)
    rng = np.random.default_rng(seed)
    betas = np.r_[np.geomspace(1.0, st["beta_min"], st["n_temps"]), 0.0]
    # PTMCMCSampler needs burn (its DE buffer) >= covUpdate (1000) and a multiple of it
    n_iter = st["n_iter"]
    if st.get("budget_s"):  # cap the iterations by the measured cost of one call
        x = draw(rng, 1)[0]
        t1 = time.perf_counter()
        for _ in range(50):
            logl(x)
        per_iter = (time.perf_counter() - t1) / 50 + 1e-4  # + PTMCMCSampler's own overhead
        cap = int(st["budget_s"] / (st["n_temps"] * per_iter)) // 1000 * 1000
        n_iter = max(2000, min(n_iter, cap))
    burn = max(1000, n_iter // 5 // 1000 * 1000)
    means, ses, ess, accept = [], [], [], []
    tmp = tempfile.mkdtemp(prefix="pta_ptmcmc_")
    try:
        for k, beta in enumerate(betas[:-1]):
            T = 1.0 / beta
            out = os.path.join(tmp, str(k))
            x0 = draw(rng, 1)[0]
            while not math.isfinite(logl(x0)):
                x0 = draw(rng, 1)[0]
            sampler = PTSampler(
                len(names),
                logl,
                logp,
                np.diag(widths**2 / 10),
                outDir=out,
                verbose=False,
                seed=seed + k,
            )
            sampler.sample(x0, n_iter, ladder=[T], burn=burn, thin=10, isave=1000)
            chain = np.loadtxt(os.path.join(out, f"chain_{T}.txt"))
            lnl = chain[len(chain) // 4 :, -3]  # drop the first quarter (adaptation, burn-in)
            e = _ess_1d(lnl)
            means.append(lnl.mean())
            ses.append(lnl.std() / math.sqrt(e))
            ess.append(e)
            accept.append(float(chain[-1, -2]))
        # beta = 0: exact prior draws (no chain needed)
        xs = draw(rng, 4000)
        lnl0 = np.array([logl(x) for x in xs])
        means.append(lnl0.mean())
        ses.append(lnl0.std() / math.sqrt(lnl0.size))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log_z, err, parts = thermodynamic_log_z(betas, np.array(means), np.array(ses))
    return {
        "log_z": log_z,
        "log_z_err": err,
        **parts,
        "wall_s": time.perf_counter() - t0,
        "n_temps": int(len(betas) - 1),
        "n_iter_per_temp": n_iter,
        "min_ess_lnl": float(min(ess)),
        "accept_T1": accept[0],
    }


def refit_part(settings: dict, seed: int = 0) -> dict[str, Any]:
    data = load_free_spectrum(DATASET)
    bins = DEFAULT_BINS[DATASET]
    steps, n_draws = settings["vi"]
    sampler = pta.flow_vi(steps, n_draws)
    key = jax.random.key(seed)
    # warm-up (not reported): one tiny fit and one tiny ladder pay imports and first-call costs
    pta.run_model(key, data, pta.MODELS["SMBHB"], pta.flow_vi(20, 200), bins=bins)
    run_ptmcmc(pta.MODELS["SMBHB"], data, bins, 99, dict(n_temps=2, n_iter=2000, beta_min=0.1))
    # (flow VI compiles anew for every model: its wall times include compilation)
    models: dict[str, Any] = {}
    mode = settings["mode"]
    for name in settings["models"]:
        key, k = jax.random.split(key)

        def fit(k=k, name=name):
            run, _ = pta.run_model(k, data, pta.MODELS[name], sampler, bins=bins)
            return {
                "dim": len(run.names),
                "ours": {
                    "log_z": run.log_z,
                    "log_z_err": run.log_z_err,
                    "khat": run.khat,
                    "ess": run.ess,
                    "wall_s": run.wall_seconds,
                },
            }

        models[name] = _cached(mode, f"refit_ours_{name}", fit)
        o = models[name]["ours"]
        print(
            f"  refit {name:12s} ours ln Z {o['log_z']:8.3f} ± {o['log_z_err']:.3f} k-hat "
            f"{o['khat']:5.2f} ({o['wall_s']:.1f} s)",
            flush=True,
        )
    ours_total = sum(m["ours"]["wall_s"] for m in models.values())
    for name in settings["pt_models"]:
        if name not in models:
            continue

        def peer(name=name):
            try:
                return run_ptmcmc(pta.MODELS[name], data, bins, seed, settings["pt"])
            except Exception as e:  # noqa: BLE001 - a failed peer run is a result
                return {"error": f"{type(e).__name__}: {str(e)[:300]}"}

        pt = _cached(mode, f"refit_ptmcmc_{name}", peer)
        models[name]["peer"] = pt
        if "error" not in pt:
            o = models[name]["ours"]
            pt["dlog_z_over_err"] = (o["log_z"] - pt["log_z"]) / math.hypot(
                o["log_z_err"], pt["log_z_err"]
            )
            # time to reach ours' ln Z error, if the peer's error is Monte-Carlo (1/sqrt(N))
            pt["wall_s_at_ours_err"] = pt["wall_s"] * (pt["log_z_err"] / o["log_z_err"]) ** 2
            print(
                f"  refit {name:12s} PTMCMC ln Z {pt['log_z']:8.3f} ± {pt['log_z_err']:.3f} "
                f"(mc {pt['mc_err']:.3f}, disc {pt['disc_err']:.3f}; {pt['wall_s']:.1f} s)",
                flush=True,
            )
        else:
            print(f"  refit {name:12s} PTMCMC ERROR {pt['error']}", flush=True)
    return {
        "dataset": DATASET,
        "bins": bins,
        "flow_vi": f"pta.flow_vi(steps={steps}, n_draws={n_draws})",
        "ptmcmc": settings["pt"],
        "models": models,
        "ours_total_s": ours_total,  # sum of the per-model wall times
    }


# ----------------------------------------------------------------------------------------------
# part 2: full likelihood, ours vs dense
# ----------------------------------------------------------------------------------------------


def _hd_matrix(pos: np.ndarray) -> np.ndarray:
    cos = np.clip(pos @ pos.T, -1.0, 1.0)
    x = (1.0 - cos) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(x > 0, 1.5 * x * np.log(np.where(x > 0, x, 1.0)), 0.0) - 0.25 * x + 0.5
    np.fill_diagonal(g, 1.0)
    return g


class DenseLikelihood:
    """The same Gaussian-process likelihood as `PTALikelihood` (white noise, fixed chromatic GPs,
    per-pulsar power-law red noise, power-law common process with CURN or HD correlations, the
    timing model marginalised over a flat prior on its unit-norm columns), written the
    straightforward way: the covariance over all TOAs, a Cholesky factorisation, and the
    timing-model projection ``-1/2 [r^T K r + logdet C + logdet(M^T C^-1 M) + (n - m) log 2pi]``.
    CURN is block diagonal: one Cholesky per pulsar. The fixed ``C0 = N + F_dm phi F_dm^T`` is
    built once (the white variances and chromatic bases from `science.pta`'s helpers, so
    both likelihoods see the same inputs)."""

    def __init__(self, pulsars, *, n_red: int = 30, n_gw: int = 10, orf: str = "curn"):
        self.pulsars, self.n_red, self.n_gw, self.orf = list(pulsars), n_red, n_gw, orf
        t0 = min(float(p.toas.min()) for p in pulsars)
        self.tspan = max(float(p.toas.max()) for p in pulsars) - t0
        self.freqs = np.arange(1, n_red + 1) / self.tspan
        self.C0, self.F, self.M, self.r = [], [], [], []
        for p in self.pulsars:
            sigma2, _ = pta.white_variance(p)
            U, phi0, _ = pta.chromatic_noise(p)
            self.C0.append(np.diag(sigma2) + (U * phi0) @ U.T)
            self.F.append(pta.fourier_basis(p.toas, n_red, self.tspan)[0])
            self.M.append(p.Mmat / np.linalg.norm(p.Mmat, axis=0))
            self.r.append(p.residuals)
        self.gamma = (
            _hd_matrix(np.stack([p.pos for p in self.pulsars]))
            if orf == "hd"
            else np.eye(len(self.pulsars))
        )

    def _pl(self, log10_A: float, gamma: float, f: np.ndarray) -> np.ndarray:
        phi = 10.0 ** (2 * log10_A) / (12 * math.pi**2) * pta.units.F_YR_HZ ** (gamma - 3)
        return np.repeat(phi * f ** (-gamma) / self.tspan, 2)

    @staticmethod
    def _gaussian(C, M, r) -> float:
        n, m = M.shape
        cf = sla.cho_factor(C, lower=True, overwrite_a=True, check_finite=False)
        logdet = 2.0 * np.sum(np.log(np.diag(cf[0])))
        CiM = sla.cho_solve(cf, M, check_finite=False)
        Cir = sla.cho_solve(cf, r, check_finite=False)
        mf = sla.cho_factor(M.T @ CiM, lower=True, check_finite=False)
        logdet_m = 2.0 * np.sum(np.log(np.diag(mf[0])))
        Mr = M.T @ Cir
        rKr = r @ Cir - Mr @ sla.cho_solve(mf, Mr, check_finite=False)
        return -0.5 * (rKr + logdet + logdet_m + (n - m) * math.log(2 * math.pi))

    def __call__(self, params: dict[str, float]) -> float:
        G = 2 * self.n_gw
        phi_gw = self._pl(params["gw_log10_A"], params["gw_gamma"], self.freqs[: self.n_gw])
        phis = []
        for p in self.pulsars:
            phi = self._pl(
                params[f"{p.name}_red_noise_log10_A"],
                params[f"{p.name}_red_noise_gamma"],
                self.freqs,
            )
            phi[:G] += phi_gw  # Gamma_aa = 1
            phis.append(phi)
        if self.orf == "curn":
            return float(
                sum(
                    self._gaussian(C0 + (F * phi) @ F.T, M, r)
                    for C0, F, M, r, phi in zip(self.C0, self.F, self.M, self.r, phis, strict=True)
                )
            )
        C = sla.block_diag(
            *[C0 + (F * phi) @ F.T for C0, F, phi in zip(self.C0, self.F, phis, strict=True)]
        )
        edges = np.cumsum([0] + [len(r) for r in self.r])
        for a in range(len(self.pulsars)):
            for b in range(len(self.pulsars)):
                if a != b:
                    Fa, Fb = self.F[a][:, :G], self.F[b][:, :G]
                    C[edges[a] : edges[a + 1], edges[b] : edges[b + 1]] = (
                        Fa * (self.gamma[a, b] * phi_gw)
                    ) @ Fb.T
        return self._gaussian(C, sla.block_diag(*self.M), np.concatenate(self.r))


def _ours_eval(pulsars, orf: str):
    t0 = time.perf_counter()
    lik = pta.PTALikelihood(pulsars, orf=orf)
    build_s = time.perf_counter() - t0
    p = {k: jnp.asarray(v) for k, v in lik.reference_params().items()}
    value = jax.jit(lik.log_likelihood)
    grad = jax.jit(jax.value_and_grad(lik.log_likelihood))
    return lik, p, value, grad, build_s


def _compare_dense(psrs, orf: str, settings: dict) -> dict[str, Any]:
    """Ours vs `DenseLikelihood` on the same pulsars: timings (interleaved rounds) and values."""
    lik, p, value, grad, build_s = _ours_eval(psrs, orf)
    t0 = time.perf_counter()
    dense = DenseLikelihood(psrs, orf=orf)
    dense_build_s = time.perf_counter() - t0
    pd = {k: float(v) for k, v in p.items()}
    t = common.time_paths(
        {
            "ours value": lambda: value(p),
            "ours value+grad": lambda: grad(p),
            "dense value": lambda: dense(pd),
        },
        warmup=2,
        reps=20,
        min_reps=settings["dense_reps"],
        budget_s=4.0,
    )
    ours_v, dense_v = float(value(p)), float(dense(pd))
    return {
        "orf": orf,
        "pulsars": [q.name for q in psrs],
        "n_pulsars": len(psrs),
        "n_toas": int(sum(q.n_toas for q in psrs)),
        "ours_build_s": build_s,
        "dense_build_s": dense_build_s,
        "ours_value_ms": t["ours value"].median_ms,
        "ours_value_grad_ms": t["ours value+grad"].median_ms,
        "dense_value_ms": t["dense value"].median_ms,
        "notes": {k: v.note for k, v in t.items()},
        "log_l_ours": ours_v,
        "log_l_dense": dense_v,
        "abs_diff": abs(ours_v - dense_v),
        "rel_diff": abs(ours_v - dense_v) / abs(dense_v),
    }


def full_part(settings: dict) -> dict[str, Any]:
    pulsars = sorted(pta.load_epta_dr2(), key=lambda p: p.n_toas)
    out: dict[str, Any] = {"enterprise": ENTERPRISE, "cases": {}}
    n_curn = settings["pulsars_curn"]
    sets = {
        "curn": pulsars if n_curn is None else pulsars[:n_curn],
        "hd_subset": pulsars[: settings["pulsars_hd"]],
    }
    for case, psrs in sets.items():
        out["cases"][case] = _compare_dense(psrs, "curn" if case == "curn" else "hd", settings)
        print(f"  full {case}: {out['cases'][case]}", flush=True)
    # ours HD on all 25 (dense infeasible: ~20 GB for the joint covariance)
    lik, p, value, grad, build_s = _ours_eval(pulsars, "hd")
    t = common.time_paths(
        {"value": lambda: value(p), "value+grad": lambda: grad(p)}, warmup=2, reps=20
    )
    out["cases"]["hd_all"] = {
        "orf": "hd",
        "n_pulsars": len(pulsars),
        "n_toas": int(sum(q.n_toas for q in pulsars)),
        "ours_build_s": build_s,
        "ours_value_ms": t["value"].median_ms,
        "ours_value_grad_ms": t["value+grad"].median_ms,
        "log_l_ours": float(value(p)),
        "dense": "not run: the joint covariance of all TOAs is ~20 GB",
        "notes": {k: v.note for k, v in t.items()},
    }
    print(f"  full hd_all: {out['cases']['hd_all']}", flush=True)
    return out


# ----------------------------------------------------------------------------------------------
# part 3: sampling efficiency, ours flow VI vs NumPyro NUTS
# ----------------------------------------------------------------------------------------------


def _case(name: str, title: str, make_target, x0: dict, vi: tuple, nuts: dict) -> sb.Case:
    """A `benchmarks/samplers.py` case; ``make_target()`` builds a fresh `ss.Target` per run."""
    target = make_target()
    nan = np.full(target.dim, np.nan)
    return sb.Case(
        name=name,
        title=title,
        dim=target.dim,
        make_logp=lambda: target.log_density,
        mean=nan,
        std=nan,
        log_z=math.nan,
        truth="the other sampler's run, if it passes its own checks (benchmarks/gw.py rescore)",
        settings={sb.FLOW_VI: pta.flow_vi(*vi), "nuts": nuts, "mcmc_init_scale": 0.1},
        init=np.asarray(target.unconstrain(x0), np.float64),
        make_target=make_target,
        extra=lambda x, w: {},  # no physical-unit summaries (gw.rescore calls it)
    )


def sampling_part(settings: dict) -> dict[str, Any]:
    import gw as gwb  # `rescore`: score each run against the other one

    if sb.CLOCK is None:
        sb.CLOCK = sb.CompileClock()
    pulsars = sorted(pta.load_epta_dr2(), key=lambda p: p.n_toas)
    n = settings["pulsars_curn"]
    lik = pta.PTALikelihood(pulsars if n is None else pulsars[:n], orf="curn")
    data = load_free_spectrum(DATASET)
    curn = lambda: ss.Target(lik.log_likelihood, lik.priors())
    smbhb = lambda: pta.refit_target(data, pta.MODELS["SMBHB"], bins=DEFAULT_BINS[DATASET])[0]
    dim = len(lik.param_names)
    cases = [
        _case(
            f"full CURN {len(lik.pulsars)} psr",
            f"EPTA DR2 full likelihood, CURN, {len(lik.pulsars)} pulsars, {dim} parameters",
            curn,
            {  # the reference point, moved off the prior edges (unconstrain needs the interior)
                k: float(np.clip(v, lo + 1e-3 * (hi - lo), hi - 1e-3 * (hi - lo)))
                for (k, v), (lo, hi) in zip(
                    lik.reference_params().items(), lik.bounds.values(), strict=True
                )
            },
            settings["curn_vi"],
            settings["curn_nuts"],
        ),
        _case(
            "refit SMBHB",
            f"EPTA DR2new refit, SMBHB power law ({DEFAULT_BINS[DATASET]} bins), 2 parameters",
            smbhb,
            {"log10_A": -14.5, "gamma": 3.5},
            settings["vi"],
            settings["smbhb_nuts"],
        ),
    ]
    out: dict[str, Any] = {}
    for case in cases:
        runs = [sb.run_one(s, case, 0) for s in (sb.FLOW_VI, sb.OUR_NUTS)]
        ref = gwb.rescore(case, runs)
        out[case.name] = {
            "title": case.title,
            "dim": case.dim,
            "settings": {
                "flow_vi": repr(case.settings[sb.FLOW_VI]),
                "nuts": case.settings["nuts"],
            },
            "reference": ref.get("sampler"),
            "runs": [r.as_dict() for r in runs],
        }
        for r in runs:
            print(
                f"  sampling {case.name:18s} {r.sampler:20s} wall {r.wall_s:7.1f} s min ESS "
                f"{r.min_ess:8.1f} -> {r.ess_per_s:7.2f}/s z {r.z_max:.2f} "
                f"{'' if r.accurate else 'INACCURATE'} {r.error or ''}",
                flush=True,
            )
    return out


# ----------------------------------------------------------------------------------------------
# rows, report
# ----------------------------------------------------------------------------------------------


def _f(v, fmt=".2f") -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def make_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    refit = report["refit"]
    for name, m in refit["models"].items():
        o, pt = m["ours"], m.get("peer")
        note = f"ours ln Z {o['log_z']:.3f} ± {o['log_z_err']:.3f}, k̂ {o['khat']:.2f}"
        if pt and "error" not in pt:
            note += (
                f"; PTMCMC ln Z {pt['log_z']:.3f} ± {pt['log_z_err']:.3f} "
                f"(Δ/σ {pt['dlog_z_over_err']:+.1f}); PTMCMC time at ours' error "
                f"(MC-scaled) {pt['wall_s_at_ours_err']:.0f} s"
            )
        elif pt:
            note += f"; PTMCMC failed: {pt['error']}"
        rows.append(
            common.row(
                f"refit {name} ({m['dim']}p)",
                "ln Z wall s",
                o["wall_s"],
                PT_PEER if pt else "—",
                pt.get("wall_s") if pt else None,
                note=note,
            )
        )
    rows.append(
        common.row(
            f"refit all {len(refit['models'])} models",
            "total wall s",
            refit["ours_total_s"],
            "—",
            None,
            note="ours: sum of per-model flow VI runs (compile included)",
        )
    )
    for case, c in report["full"]["cases"].items():
        label = f"full {case} ({c['n_pulsars']} psr, {c['n_toas']} TOAs)"
        if "dense_value_ms" in c:
            agree = f"|Δ ln L| {c['abs_diff']:.2e} (rel {c['rel_diff']:.1e})"
            rows.append(
                common.row(
                    label,
                    "ln L ms",
                    c["ours_value_ms"],
                    DENSE_PEER,
                    c["dense_value_ms"],
                    note=agree,
                )
            )
            rows.append(
                common.row(
                    label,
                    "ln L + grad ms",
                    c["ours_value_grad_ms"],
                    DENSE_PEER + " value only",
                    c["dense_value_ms"],
                    note="ours value+gradient vs the dense value alone",
                )
            )
        else:
            rows.append(
                common.row(label, "ln L ms", c["ours_value_ms"], "—", None, note=c["dense"])
            )
            rows.append(common.row(label, "ln L + grad ms", c["ours_value_grad_ms"], "—", None))
    for case, c in report["sampling"].items():
        if not isinstance(c, dict) or "runs" not in c:  # e.g. part_wall_s
            continue
        by = {r["sampler"]: r for r in c["runs"]}
        o, n = by.get(sb.FLOW_VI), by.get(sb.OUR_NUTS)
        if o is None or n is None:
            continue

        def desc(r):
            acc = "ok" if r["accurate"] else "flagged"
            extra = (
                f"k̂ {r['details'].get('khat', math.nan):.2f}"
                if "khat" in r["details"]
                else (f"R̂ {r['details'].get('rhat_max', math.nan):.3f}")
            )
            return f"ESS {r['min_ess']:.0f} in {r['wall_s']:.0f} s, {extra}, z {_f(r['z_max'])} ({acc})"

        rows.append(
            common.row(
                case,
                "min-ESS/s",
                o["ess_per_s"],
                NUTS_PEER,
                n["ess_per_s"],
                better="higher",
                note=f"ours {desc(o)}; NUTS {desc(n)}",
            )
        )
    return rows


def intro(report: dict[str, Any]) -> str:
    r = report["refit"]
    lines = [
        "Ours: `science.pta` — flow VI evidences (`pta.flow_vi`, PSIS importance weights) and "
        "the reduced float64 GP likelihood (`PTALikelihood`). Peers: **PTMCMCSampler** "
        f"{report['versions'].get('PTMCMCSampler', '?')} (the sampler ceffyl / PTArcade use; "
        "pip-installed from the registry, without mpi4py: it then cannot swap between "
        "temperatures, so each temperature of a geometric β ladder (1 … "
        f"{r['ptmcmc']['beta_min']:g}, {r['ptmcmc']['n_temps']} temperatures, "
        f"{r['ptmcmc']['n_iter']} iterations each — fewer, ≥ 2000, where the ladder would "
        f"exceed {r['ptmcmc'].get('budget_s', 0):.0f} s: "
        + ", ".join(
            f"{k} {m['peer']['n_iter_per_temp']}"
            for k, m in r["models"].items()
            if "n_iter_per_temp" in m.get("peer", {})
            and m["peer"]["n_iter_per_temp"] < r["ptmcmc"]["n_iter"]
        )
        + "; first quarter dropped) runs as its own chain, "
        "one after another, plus exact prior draws at β = 0; ln Z by thermodynamic integration "
        "(trapezoid in β; error = per-temperature MC error ⊕ |I_h − I_2h|/3)); a **dense** "
        "numpy/scipy float64 likelihood (covariance over all TOAs, Cholesky, timing-model "
        "projection; fixed white+DM part cached); **NumPyro NUTS** (`ss.NUTS`). ceffyl / "
        f"enterprise: {ENTERPRISE}. Same process, same inputs; medians after warm-up.",
        "",
        f"Refit: {r['dataset']} lowest {r['bins']} bins, {r['flow_vi']} per model (wall incl. "
        "compilation). 'PTMCMC time at ours' error' rescales the peer's wall time by "
        "(its error / ours)² — valid for the Monte-Carlo part only. Full likelihood: "
        "`PTALikelihood(n_red=30, n_gw=10)` at `reference_params()`; ours' one-off "
        "construction (whitening, QR, reduction) is "
        + ", ".join(f"{k} {c['ours_build_s']:.1f} s" for k, c in report["full"]["cases"].items())
        + ". Sampling: min-ESS/s as in the samplers section (flow VI: Kish ESS of PSIS weights, "
        "only when k̂ < 0.7; NUTS: min over parameters of min(bulk, tail) ESS), wall incl. "
        "compilation and training; each run scored against the other (z ≤ 4, R̂ ≤ 1.05). HD is "
        "not sampled (vmapped HD gradients stalled at batch ≥ 4–8).",
        "",
        f"Mode: {report['mode']}. Load average start/end {report['loadavg_start']} / "
        f"{report['loadavg_end']} (2 shared cores; no GPU lent). Commit {report['commit']}. "
        f"Wall {report['total_wall_s']:.0f} s. Command: `{report['command']}`",
    ]
    resumed = [
        k
        for k, m in r["models"].items()
        if m.get("resumed") or any(isinstance(v, dict) and v.get("resumed") for v in m.values())
    ]
    if report.get("provenance"):
        lines += ["", report["provenance"]]
    elif report["full"].get("resumed") or resumed:
        lines += [
            "",
            "Resumed run (`--resume`): the full-likelihood part and the pieces of models "
            f"{', '.join(dict.fromkeys(resumed))} come from an earlier invocation of the same "
            "command on the same machine (its cached results); the rest was measured in this one. "
            "The wall time above is this invocation's.",
        ]
    return "\n".join(lines)


def render(path: str) -> None:
    report = json.loads(open(path).read())
    md = common.update_benchmarks_md(NAME, report, title=TITLE, intro=intro(report))
    print(f"updated {md}")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in ("PTMCMCSampler", "numpyro", "scipy", "numpy"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "not installed"
    return out


def main() -> None:
    import sys

    global RESUME
    if "--resume" in sys.argv:  # reuse finished pieces of an interrupted run (out/pta/<mode>/)
        sys.argv.remove("--resume")
        RESUME = True
    args = sb.parse_args(
        NAME,
        __doc__.splitlines()[0],
        quick="2 models, short runs, 5 pulsars (~5 min, mostly compilation)",
        seeds="unused (1 seed)",
    )
    if args.render:
        render(args.render)
        return
    t0 = time.perf_counter()
    settings = _settings(args.quick)
    settings["mode"] = "quick" if args.quick else "full"
    meta: dict[str, Any] = {
        "loadavg_start": common.loadavg(),
        "commit": common.git_commit("science/pta"),
        "mode": "quick (smoke run, not a measurement)" if args.quick else "full",
        "command": "python benchmarks/pta.py"
        + (" --quick" if args.quick else "")
        + (" --resume" if RESUME else ""),
        "versions": _versions(),
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "settings": {k: repr(v) for k, v in settings.items()},
    }
    parts: dict[str, Any] = {}
    for part, fn in (("full", full_part), ("refit", refit_part), ("sampling", sampling_part)):
        print(f"== {part}", flush=True)
        tp = time.perf_counter()
        if part == "refit":  # cached model by model
            parts[part] = fn(settings)
        else:
            parts[part] = _cached(settings["mode"], part, lambda fn=fn: fn(settings))
        parts[part].setdefault("part_wall_s", time.perf_counter() - tp)
    meta |= {"loadavg_end": common.loadavg(), "total_wall_s": round(time.perf_counter() - t0, 1)}
    report = {**meta, **parts}
    rows = make_rows(report)
    path = args.out or str(common.RESULTS / f"{NAME}.json")
    import pathlib

    report = common.write_results(
        NAME, rows, extra=common.json_clean({**meta, **parts}), path=pathlib.Path(path)
    )
    common.print_table(rows, max_note=100)
    print(f"\nwrote {path} ({meta['total_wall_s']} s)")
    if not args.no_md:
        md = common.update_benchmarks_md(NAME, report, title=TITLE, intro=intro(report))
        print(f"updated {md}")


if __name__ == "__main__":
    main()
