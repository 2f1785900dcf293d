"""The free-spectrum refit likelihood against an independent numpy implementation, its input
errors, and flow-VI evidences against exact quadrature on a fine grid."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from science import pta
from science.pta import _units as u

needs_data = pytest.mark.skipif(
    not (pta.data_folder() / "freespec").is_dir(), reason="../shared/data/pta not present"
)


def numpy_log_likelihood(data: pta.FreeSpectrum, bins, log10_rho: np.ndarray) -> np.ndarray:
    """Independent reference: np.interp per bin, the model's log10 rho held at the prior edge below
    it. ``log10_rho[..., n_bins]`` -> ln L[...]."""
    total = 0.0
    for j, i in enumerate(bins):
        x = np.maximum(log10_rho[..., j], data.lower[i])
        total = total + np.interp(x, data.grid, data.log_density[i])
    return total


def power_law_rho(f, log10_A, gamma, tspan):
    """rho^2 = A^2 / (12 pi^2 f^3 T) (f / f_yr)^(3 - gamma), written out independently of units."""
    fyr = 1.0 / (365.25 * 86400.0)
    rho2 = 10.0 ** (2 * log10_A) / (12 * np.pi**2 * f**3 * tspan) * (f / fyr) ** (3 - gamma)
    return 0.5 * np.log10(rho2)


def quadrature_log_evidence(log_like, box, n=(1201, 1201), coarse=401):
    """ln Z of a likelihood under a uniform prior on a 2-d box, by the trapezoid rule on a grid
    refined onto the region holding the mass (a coarse pass finds it)."""
    (a0, a1), (b0, b1) = box

    def integrate(lo0, hi0, lo1, hi1, m):
        x = np.linspace(lo0, hi0, m[0])
        y = np.linspace(lo1, hi1, m[1])
        X, Y = np.meshgrid(x, y, indexing="ij")
        ll = log_like(X, Y)
        peak = ll.max()
        inner = np.trapezoid(np.exp(ll - peak), y, axis=1)
        return math.log(np.trapezoid(inner, x)) + peak, x, y, ll

    _, x, y, ll = integrate(a0, a1, b0, b1, (coarse, coarse))
    keep = ll > ll.max() - 30.0
    ix = np.flatnonzero(keep.any(1))
    iy = np.flatnonzero(keep.any(0))
    lo0, hi0 = x[max(ix[0] - 2, 0)], x[min(ix[-1] + 2, x.size - 1)]
    lo1, hi1 = y[max(iy[0] - 2, 0)], y[min(iy[-1] + 2, y.size - 1)]
    log_z_region, *_ = integrate(lo0, hi0, lo1, hi1, n)
    # Outside the refined region the integrand is < e^-30 of the peak; the coarse grid's share of
    # it is added back so flat (prior-dominated) directions are not lost.
    outside = np.where(keep, -np.inf, ll)
    dx, dy = x[1] - x[0], y[1] - y[0]
    log_out = float(jax.scipy.special.logsumexp(outside)) + math.log(dx * dy)
    log_z = np.logaddexp(log_z_region, log_out)
    return float(log_z - math.log((a1 - a0) * (b1 - b0)))


@needs_data
@pytest.mark.parametrize("name", list(pta.DATASETS))
def test_refit_matches_numpy_reference(name):
    data = pta.load_free_spectrum(name)
    tspan = data.tspan_s
    bins = data.select(pta.DEFAULT_BINS[name])
    lik = pta.RefitLikelihood(
        data,
        lambda f, p: u.log10_rho_s_from_log10_hc(f, u.log10_hc_power_law(f, p["a"], p["g"]), tspan),
        bins=pta.DEFAULT_BINS[name],
    )
    rng = np.random.default_rng(0)
    a = rng.uniform(-18, -11, 64)
    g = rng.uniform(0, 7, 64)
    ours = jax.vmap(lambda a, g: lik({"a": a, "g": g}))(jnp.asarray(a), jnp.asarray(g))
    ref_rho = power_law_rho(data.freqs_hz[bins][None, :], a[:, None], g[:, None], tspan)
    np.testing.assert_allclose(
        np.asarray(ours), numpy_log_likelihood(data, bins, ref_rho), atol=2e-3
    )
    assert np.isfinite(np.asarray(ours)).all()


@needs_data
def test_bin_choice_and_errors():
    data = pta.load_free_spectrum("ppta_dr3")
    assert data.select(5).tolist() == [0, 1, 2, 3, 4]
    assert data.select([3, 0]).tolist() == [0, 3]
    assert data.select(fmax_hz=data.freqs_hz[2]).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="bins=41"):
        data.select(41)
    with pytest.raises(ValueError, match="within 0..39"):
        data.select([0, 40])
    with pytest.raises(ValueError, match="below the lowest frequency"):
        data.select(fmax_hz=1e-10)
    with pytest.raises(ValueError, match="not a bin"):
        data.bin_at(1e-7)
    with pytest.raises(ValueError, match="expected one of"):
        pta.load_free_spectrum("nanograv_99yr")


def test_missing_data_folder_names_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXACCEL_PTA_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(pta.PTADataError, match="nowhere.*JAXACCEL_PTA_DATA"):
        pta.load_free_spectrum("epta_dr2new")


@needs_data
def test_nan_spectrum_is_minus_inf_traced_and_an_error_eagerly():
    data = pta.load_free_spectrum("epta_dr2new")
    lik = pta.RefitLikelihood(data, lambda f, p: jnp.log10(p["x"] * f), bins=3)
    assert float(jax.jit(lik)({"x": jnp.asarray(-1.0)})) == -np.inf
    with pytest.raises(ValueError, match="not finite"):
        lik.check({"x": -1.0})


@needs_data
def test_flow_vi_evidence_matches_quadrature_power_law():
    """The sampler's ln Z for the 2-parameter power law equals exact quadrature within 3 s.e."""
    import numpyro.distributions as dist

    from science import samplers as ss

    data = pta.load_free_spectrum("epta_dr2new")
    bins = data.select(pta.DEFAULT_BINS["epta_dr2new"])
    tspan = data.tspan_s
    box = ((-18.0, -11.0), (0.0, 7.0))
    lik = pta.RefitLikelihood(
        data,
        lambda f, p: u.log10_rho_s_from_log10_hc(
            f, u.log10_hc_power_law(f, p["log10_A"], p["gamma"]), tspan
        ),
        bins=bins,
    )
    prior = {"log10_A": dist.Uniform(*box[0]), "gamma": dist.Uniform(*box[1])}
    result = ss.sample(
        jax.random.key(0),
        ss.Target(lik, prior),
        ss.FlowVI(steps=400, n_draws=8000, draw_batch=4000, chunk=200),
        progress=False,
    )

    def ref(a, g):
        rho = power_law_rho(data.freqs_hz[bins], a[..., None], g[..., None], tspan)
        return numpy_log_likelihood(data, bins, rho)

    exact = quadrature_log_evidence(ref, box)
    assert result.diagnostics["khat"] < 0.7
    assert abs(result.log_z - exact) < 3 * result.log_z_err + 1e-3, (
        result.log_z,
        result.log_z_err,
        exact,
    )


def _two_parameter_models():
    try:
        from science.pta import _spectra
    except ImportError:  # pragma: no cover - while the module is being written
        return []
    # META's evidence run is the longest (~14 min on 2 cores): it runs with -m nightly
    return [
        pytest.param(m, marks=pytest.mark.nightly) if m == "META" else m
        for m, model in _spectra.MODELS.items()
        if len(model.params) == 2
    ]


@needs_data
@pytest.mark.slow
@pytest.mark.parametrize("name", _two_parameter_models())
def test_flow_vi_evidence_matches_quadrature_every_two_parameter_model(name):
    """Every 2-parameter spectral model: flow-VI ln Z within 3 s.e. of quadrature on a fine grid."""
    from science import samplers as ss
    from science.pta import _compare as cmp, _spectra

    model = _spectra.MODELS[name]
    data = pta.load_free_spectrum("epta_dr2new")
    bins = pta.DEFAULT_BINS["epta_dr2new"]
    target, lik = cmp.refit_target(data, model, bins=bins)
    for p in model.params:
        if p.low is None or p.high is None:
            pytest.skip(f"{name}.{p.name}: quadrature helper needs a uniform prior")
    box = tuple((p.low, p.high) for p in model.params)
    names = model.names
    batched = jax.jit(jax.vmap(lambda a, b: lik({names[0]: a, names[1]: b})))
    chunk = 2048  # the string and SIGW spectra are large per point: evaluate in chunks

    def log_like(a, b):
        a, b = a.ravel(), b.ravel()
        pad = -a.size % chunk
        a, b = np.pad(a, (0, pad), mode="edge"), np.pad(b, (0, pad), mode="edge")
        out = [
            np.asarray(batched(jnp.asarray(a[i : i + chunk]), jnp.asarray(b[i : i + chunk])))
            for i in range(0, a.size, chunk)
        ]
        return np.concatenate(out)[: a.size - pad].astype(np.float64)

    def log_like_grid(a, b):
        return log_like(a, b).reshape(a.shape)

    # The string spectra cost ~ms per point: a coarser grid (their posteriors are broad).
    n, coarse = ((201, 201), 81) if name in ("STABLE", "META", "SUPER") else ((301, 301), 121)
    exact = quadrature_log_evidence(log_like_grid, box, n=n, coarse=coarse)
    result = ss.sample(
        jax.random.key(1),
        target,
        ss.FlowVI(steps=600, n_draws=20000, draw_batch=5000, chunk=300),
        progress=False,
    )
    assert result.diagnostics["khat"] < 0.7, result.diagnostics["khat"]
    assert abs(result.log_z - exact) < 3 * result.log_z_err + 2e-3, (
        result.log_z,
        result.log_z_err,
        exact,
    )
