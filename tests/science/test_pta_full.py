"""The full-GP PTA likelihood against a dense covariance-matrix reference, on real EPTA DR2 pulsars.

The reference below is written independently of ``science.pta._full``: it builds the full TOA-by-TOA
covariance over all pulsars (white + DM/chromatic + red + common process with ORF cross terms), marginalises
the timing model with the projection formula, and uses the same constant convention:

    log L = -1/2 r^T K r - 1/2 logdet C - 1/2 logdet(M^T C^-1 M) - (n - m)/2 log 2 pi,

M block-diagonal with unit-norm columns.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sla

from science.pta._full import (
    PTADataError,
    PTALikelihood,
    Pulsar,
    hellings_downs,
    load_epta_dr2,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "pta" / "epta_dr2"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"EPTA DR2 data not at {DATA}")
SMALL = ["J1751-2857", "J1801-1417", "J1910+1256"]  # 305, 384, 460 TOAs, all with DM noise
FYR = 1.0 / (365.25 * 86400.0)


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


# ---------------------------------------------------------------------------------------------
# Dense reference
# ---------------------------------------------------------------------------------------------


def _pl(f, log10_A, gamma, T):
    return 10 ** (2 * log10_A) / (12 * np.pi**2) * FYR ** (gamma - 3) * f ** (-gamma) / T


def _basis(t, n, T):
    f = np.arange(1, n + 1) / T
    F = np.zeros((len(t), 2 * n))
    for k in range(n):
        F[:, 2 * k] = np.sin(2 * np.pi * f[k] * t)
        F[:, 2 * k + 1] = np.cos(2 * np.pi * f[k] * t)
    return F, f


def _hd_ref(pos):
    P = len(pos)
    G = np.eye(P)
    for a in range(P):
        for b in range(P):
            if a != b:
                x = (1 - np.dot(pos[a], pos[b])) / 2
                G[a, b] = 1.5 * x * np.log(x) - 0.25 * x + 0.5 if x > 0 else 0.5
    return G


def _fixed_cov(psr):
    """White + chromatic (DM idx 2, cn_4.0 idx 4) covariance of one pulsar, dense."""
    nd, name = psr.noise, psr.name
    sig2 = np.zeros(psr.n_toas)
    for i, b in enumerate(psr.backends):
        efac = nd.get(f"{name}_{b}_efac", 1.0)
        eq = nd.get(f"{name}_{b}_log10_t2equad")
        sig2[i] = efac**2 * (psr.toaerrs[i] ** 2 + (0.0 if eq is None else 10 ** (2 * eq)))
    C = np.diag(sig2)
    Tp = psr.toas.max() - psr.toas.min()
    for pre, comp, idx in (("dm_gp", "dm_gp_components", 2), ("cn_4.0_gp", "chrom_components", 4)):
        if nd.get(f"{name}_{pre}_log10_A") is None or nd.get(f"{name}_{comp}") is None:
            continue
        F, f = _basis(psr.toas, nd[f"{name}_{comp}"], Tp)
        F = F * ((1400.0 / psr.freqs_mhz) ** idx)[:, None]
        phi = np.repeat(_pl(f, nd[f"{name}_{pre}_log10_A"], nd[f"{name}_{pre}_gamma"], Tp), 2)
        C += (F * phi) @ F.T
    return C


def dense_loglike(pulsars, params, *, n_red, n_gw, orf, gw):
    P = len(pulsars)
    T = max(p.toas.max() for p in pulsars) - min(p.toas.min() for p in pulsars)
    sizes = [p.n_toas for p in pulsars]
    n = sum(sizes)
    Gam = _hd_ref([p.pos for p in pulsars]) if orf == "hd" else np.eye(P)
    f = np.arange(1, n_red + 1) / T
    if gw == "powerlaw":
        phi_gw = _pl(f[:n_gw], params["gw_log10_A"], params["gw_gamma"], T)
    else:
        phi_gw = np.array([10 ** (2 * params[f"gw_log10_rho_{i}"]) for i in range(n_gw)])
    Phi = np.zeros((P * 2 * n_red, P * 2 * n_red))
    for a, pa in enumerate(pulsars):
        red = _pl(
            f, params[f"{pa.name}_red_noise_log10_A"], params[f"{pa.name}_red_noise_gamma"], T
        )
        for i in range(2 * n_red):
            Phi[a * 2 * n_red + i, a * 2 * n_red + i] += red[i // 2]
        for b in range(P):
            for i in range(2 * n_gw):
                Phi[a * 2 * n_red + i, b * 2 * n_red + i] += Gam[a, b] * phi_gw[i // 2]
    Fbig = sla.block_diag(*[_basis(p.toas, n_red, T)[0] for p in pulsars])
    Mbig = sla.block_diag(*[p.Mmat / np.linalg.norm(p.Mmat, axis=0) for p in pulsars])
    m = Mbig.shape[1]
    C = sla.block_diag(*[_fixed_cov(p) for p in pulsars]) + Fbig @ Phi @ Fbig.T
    r = np.concatenate([p.residuals for p in pulsars])
    cf = sla.cho_factor(C, lower=True)
    logdetC = 2 * np.sum(np.log(np.diag(cf[0])))
    CiM, Cir = sla.cho_solve(cf, Mbig), sla.cho_solve(cf, r)
    MCM = Mbig.T @ CiM
    mf = sla.cho_factor(MCM)
    logdetMCM = 2 * np.sum(np.log(np.diag(mf[0])))
    MCr = Mbig.T @ Cir
    rKr = r @ Cir - MCr @ sla.cho_solve(mf, MCr)
    return -0.5 * rKr - 0.5 * logdetC - 0.5 * logdetMCM - 0.5 * (n - m) * math.log(2 * math.pi)


def _random_params(like, rng, *, red=(-17.0, -12.5), gw_A=(-16.0, -13.0)):
    p = {}
    for k in like.param_names:
        if k.endswith("red_noise_log10_A"):
            p[k] = rng.uniform(*red)
        elif k.endswith("gamma"):
            p[k] = rng.uniform(0.5, 6.5)
        elif k == "gw_log10_A":
            p[k] = rng.uniform(*gw_A)
        else:  # log10_rho
            p[k] = rng.uniform(-9.0, -6.0)
    return p


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def test_hellings_downs_values():
    pos = np.array([[1.0, 0, 0], [0, 1.0, 0], [-1.0, 0, 0], [1.0, 0, 0]])
    G = hellings_downs(pos)
    x = 0.5
    assert np.allclose(np.diag(G), 1.0)
    assert np.isclose(G[0, 1], 1.5 * x * np.log(x) - 0.25 * x + 0.5)
    assert np.isclose(G[0, 2], 0.25)  # antipodal: x = 1
    assert np.isclose(G[0, 3], 0.5)  # distinct pulsars at the same position: x -> 0 limit
    assert np.allclose(G, G.T)
    assert np.allclose(np.asarray(hellings_downs(jax.numpy.asarray(pos))), G)


@needs_data
@pytest.mark.parametrize("orf", ["curn", "hd"])
@pytest.mark.parametrize("gw", ["powerlaw", "free_spectrum"])
def test_matches_dense_reference(orf, gw):
    pulsars = load_epta_dr2(DATA, SMALL)
    n_red, n_gw = 8, 3
    like = PTALikelihood(pulsars, n_red=n_red, n_gw=n_gw, orf=orf, gw=gw)
    f = jax.jit(like.log_likelihood)
    rng = np.random.default_rng(hash((orf, gw)) % 2**32)
    for _ in range(3):
        p = _random_params(like, rng)
        ref = dense_loglike(pulsars, p, n_red=n_red, n_gw=n_gw, orf=orf, gw=gw)
        got = float(f(p))
        assert abs(got - ref) <= 1e-8 * abs(ref), (got, ref, got - ref)


@needs_data
def test_curn_equals_hd_with_identity_orf():
    """The HD path (Schur complement + one big Cholesky) with Gamma = I reproduces the CURN path."""
    pulsars = load_epta_dr2(DATA, SMALL)
    curn = PTALikelihood(pulsars, n_red=10, n_gw=4, orf="curn")
    hd = PTALikelihood(pulsars, n_red=10, n_gw=4, orf="hd")
    hd.orf_matrix = np.eye(len(pulsars))
    p = _random_params(curn, np.random.default_rng(1))
    assert abs(float(curn.log_likelihood(p)) - float(hd.log_likelihood(p))) < 1e-9 * abs(
        float(curn.log_likelihood(p))
    )


@needs_data
def test_chromatic_noise_and_subsampled_pulsar_match_dense():
    """J0613-0200 (DM + cn_4.0 chromatic noise), every 4th TOA, via `Pulsar.from_arrays`."""
    (full,) = load_epta_dr2(DATA, ["J0613-0200"])
    s = slice(None, None, 4)
    M = full.Mmat[s]
    M = M[:, np.linalg.norm(M, axis=0) > 0]  # jumps of backends that lost all their TOAs
    psr = Pulsar.from_arrays(
        full.name,
        full.toas[s],
        full.toaerrs[s],
        full.residuals[s],
        full.freqs_mhz[s],
        full.backends[s],
        M,
        full.pos,
        full.noise,
    )
    (small,) = load_epta_dr2(DATA, ["J1801-1417"])
    like = PTALikelihood([psr, small], n_red=6, n_gw=2, orf="hd")
    p = _random_params(like, np.random.default_rng(2))
    ref = dense_loglike([psr, small], p, n_red=6, n_gw=2, orf="hd", gw="powerlaw")
    assert abs(float(like.log_likelihood(p)) - ref) <= 1e-8 * abs(ref)


@needs_data
def test_gradient_and_prior_box():
    pulsars = load_epta_dr2(DATA, SMALL)
    like = PTALikelihood(pulsars, n_red=8, n_gw=3, orf="hd")
    p = like.reference_params()
    vg = jax.jit(jax.value_and_grad(like.log_likelihood))
    v, g = vg(p)
    assert np.isfinite(float(v)) and all(np.isfinite(float(x)) for x in g.values())
    # central difference on the GW amplitude
    h = 1e-5
    up = float(like.log_likelihood({**p, "gw_log10_A": p["gw_log10_A"] + h}))
    dn = float(like.log_likelihood({**p, "gw_log10_A": p["gw_log10_A"] - h}))
    assert np.isclose(float(g["gw_log10_A"]), (up - dn) / (2 * h), rtol=1e-4, atol=1e-6)
    # outside the box or non-finite: -inf with a zero (not NaN) gradient
    for bad in (-25.0, float("nan")):
        v, g = vg({**p, "gw_log10_A": bad})
        assert float(v) == -np.inf
        assert all(float(x) == 0.0 for x in g.values())
    # vmap
    batch = {k: np.array([v, v]) for k, v in p.items()}
    out = jax.jit(like.log_likelihood_batch)(batch)
    assert out.shape == (2,) and np.allclose(np.asarray(out), float(like.log_likelihood(p)))


@needs_data
def test_check_names_bad_parameter():
    like = PTALikelihood(load_epta_dr2(DATA, SMALL[:1]), n_red=4, n_gw=2, orf="curn")
    p = like.reference_params()
    like.check(p)
    with pytest.raises(ValueError, match="gw_gamma.*not finite"):
        like.check({**p, "gw_gamma": float("inf")})
    with pytest.raises(ValueError, match="J1751-2857_red_noise_log10_A.*outside"):
        like.check({**p, "J1751-2857_red_noise_log10_A": -5.0})
    with pytest.raises(ValueError, match="missing"):
        like.check({})
    assert set(like.priors()) == set(like.param_names)


def _synthetic(name="JFAKE", n=50, **over):
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 3e8, n)) + 5e9
    kw = dict(
        toas=t,
        toaerrs=np.full(n, 1e-6),
        residuals=rng.normal(0, 1e-6, n),
        freqs_mhz=np.full(n, 1400.0),
        backends=np.array(["A"] * n),
        Mmat=np.stack([np.ones(n), t - t.mean(), (t - t.mean()) ** 2], axis=1),
        pos=np.array([0.0, 0.0, 1.0]),
    )
    kw.update(over)
    return Pulsar.from_arrays(name, **kw)


def test_bad_input_mismatched_lengths():
    with pytest.raises(ValueError, match=r"JBAD.*'toaerrs' has length 49.*'toas' has length 50"):
        _synthetic("JBAD", toaerrs=np.full(49, 1e-6))
    with pytest.raises(ValueError, match=r"JBAD.*'toaerrs' must be > 0"):
        _synthetic("JBAD", toaerrs=np.zeros(50))
    with pytest.raises(ValueError, match=r"JBAD.*'residuals' has non-finite"):
        _synthetic("JBAD", residuals=np.full(50, np.nan))
    with pytest.raises(ValueError, match=r"JBAD.*'Mmat'.*shape \(40, 3\)"):
        _synthetic("JBAD", Mmat=np.ones((40, 3)))


def test_missing_backend_noise_warns_and_uses_defaults():
    psr = _synthetic()  # empty noise dictionary
    with pytest.warns(UserWarning, match="backend 'A' lacks efac"):
        like = PTALikelihood([psr], n_red=4, n_gw=2, orf="curn")
    assert np.isfinite(float(like.log_likelihood(like.reference_params())))


def test_missing_data_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(PTADataError, match="nowhere") as ei:
        load_epta_dr2(missing)
    assert "discovery" in str(ei.value) and "JAXACCEL_PTA_DATA" in str(ei.value)
    assert isinstance(ei.value, FileNotFoundError)


def test_env_var_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXACCEL_PTA_DATA", str(tmp_path))
    with pytest.raises(PTADataError, match=str(tmp_path / "epta_dr2")):
        load_epta_dr2()


def test_requires_x64():
    psr = _synthetic(noise={"JFAKE_A_efac": 1.0, "JFAKE_A_log10_t2equad": -7.0})
    with jax.enable_x64(False), pytest.raises(RuntimeError, match="jax_enable_x64"):
        PTALikelihood([psr], n_red=4, n_gw=2)


@needs_data
@pytest.mark.slow
def test_all_25_pulsars_finite():
    pulsars = load_epta_dr2()
    assert len(pulsars) == 25
    for orf in ("curn", "hd"):
        like = PTALikelihood(pulsars, orf=orf)
        p = like.reference_params(gw_log10_A=-15.0)
        t = time.perf_counter()
        v, g = jax.jit(jax.value_and_grad(like.log_likelihood))(p)
        assert np.isfinite(float(v)), orf
        assert all(np.isfinite(float(x)) for x in g.values())
        assert time.perf_counter() - t < 120


@needs_data
def test_sequential_batches_equal_the_vmapped_likelihood():
    """`sequential()` (what samplers use for HD) gives the same batched values and gradients."""
    like = PTALikelihood(load_epta_dr2(DATA, SMALL), n_red=8, n_gw=3, orf="hd")
    rng = np.random.default_rng(5)
    points = [_random_params(like, rng) for _ in range(4)]
    batch = {k: np.array([p[k] for p in points]) for k in points[0]}
    seq = like.sequential()

    def total(f):
        return lambda b: jnp.sum(jax.vmap(f)(b))

    v1, g1 = jax.jit(jax.value_and_grad(total(like.log_likelihood)))(batch)
    v2, g2 = jax.jit(jax.value_and_grad(total(seq)))(batch)
    assert np.isclose(float(v1), float(v2), rtol=1e-12)
    for k in g1:
        np.testing.assert_allclose(np.asarray(g2[k]), np.asarray(g1[k]), rtol=1e-9, atol=1e-9)
