"""``jaxaccel pta-compare``: config errors, Bayes-factor bookkeeping and a tiny end-to-end run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from science import pta

needs_data = pytest.mark.skipif(
    not (pta.data_folder() / "freespec").is_dir(), reason="../shared/data/pta not present"
)


def test_config_sizes_and_derived_settings():
    full = pta.JOB.load(size="full", overrides={"hellinger": True})
    assert full.hellinger_datasets == full.datasets == ("epta_dr2new", "ppta_dr3", "ipta_dr2")
    assert full.combo_datasets == ("epta_dr2new",)
    config = pta.JOB.load(size="tiny", overrides={"models": ["DW"], "bins": {"ppta_dr3": 5}})
    assert config.fitted_models == ("SMBHB", "DW")  # the reference is always fitted
    assert (config.bins_of("ppta_dr3"), config.bins_of("epta_dr2new")) == (
        5,
        pta.DEFAULT_BINS["epta_dr2new"],
    )
    small = pta.JOB.load()
    assert small.models == tuple(pta.MODELS) and small.pulsars is None


def test_bayes_factors_and_table():
    runs = [
        pta.ModelRun("d", "SMBHB", -3.0, 0.03, 0.1, 900.0, ("a",), {}, 1.0),
        pta.ModelRun("d", "DW", -1.0, 0.04, 0.9, 100.0, ("b",), {}, 1.0),
    ]
    rows = pta.bayes_factors(runs)
    dw = next(r for r in rows if r["model"] == "DW")
    assert dw["ln_bf"] == pytest.approx(2.0)
    assert dw["ln_bf_err"] == pytest.approx(0.05)
    table = pta.format_table(rows)
    assert "+2.00 ± 0.05" in table and "k-hat 0.90" in table


def test_hellinger_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 200_000)
    assert pta.hellinger(a, rng.normal(0, 1, 200_000)) < 0.02
    # Two unit normals 1 apart: H^2 = 1 - exp(-1/8).
    assert pta.hellinger(a, rng.normal(1, 1, 200_000), bins=200) == pytest.approx(
        math.sqrt(1 - math.exp(-1 / 8)), abs=0.01
    )
    assert pta.hellinger(a, a + 100.0) == pytest.approx(1.0)


@needs_data
def test_new_physics_plus_smbhb_adds_the_two_powers():
    """A combination's rho^2 is the sum of both models' rho^2; the SMBHB parameters are prefixed,
    and a joint prior (SIGW-BOX's ordered edges) survives the combination."""
    data = pta.load_free_spectrum("epta_dr2new")
    box, smbhb = pta.get_model("SIGW-BOX"), pta.get_model("SMBHB")
    target, lik = pta.refit_target(data, box, bins=5, plus=smbhb)
    assert set(target.flat_names) == {
        "log10_A", "log10_f_min", "log10_f_max", "smbhb_log10_A", "smbhb_gamma",
    }  # fmt: skip
    p = {"log10_A": -1.5, "log10_f_min": -8.5, "log10_f_max": -7.5}
    q = {"log10_A": -14.5, "gamma": 13 / 3}
    both = {**p, **{"smbhb_" + k: v for k, v in q.items()}}
    f = data.freqs_hz[:5]
    a = np.asarray(box.log10_rho_s(f, p, data.tspan_s))
    b = np.asarray(smbhb.log10_rho_s(f, q, data.tspan_s))
    want = 0.5 * np.log10(10.0 ** (2 * a) + 10.0 ** (2 * b))
    np.testing.assert_allclose(np.asarray(lik.log10_rho(both)), want, rtol=1e-6)
    assert np.isfinite(float(target.log_density(target.unconstrain(both))))


@needs_data
def test_free_spectrum_against_the_shipped_one(tmp_path, getkey):
    """Draws from the shipped EPTA DR2new densities themselves give |z| ~ 0 in every bin; the same
    draws shifted by +0.5 dex in rho give z = 1 dex over the quadrature sum of the half-widths."""
    from science import samplers as ss

    data = pta.load_free_spectrum("epta_dr2new")
    n_bins, n = 4, 40_000
    rng = np.random.default_rng(1)
    cols, half = [], []
    for k in range(n_bins):
        dens = np.exp(data.log_density[k] - data.log_density[k].max())
        cdf = np.cumsum(dens) / dens.sum()
        cols.append(np.interp(rng.uniform(size=n), cdf, data.grid))  # inverse-CDF sampling
        q16, q84 = np.interp([0.16, 0.84], cdf, data.grid)
        half.append(2.0 * (q84 - q16) / 2)  # in log10(rho^2 T): twice the log10 rho width
    x = np.stack(cols, axis=1)

    def result(samples):
        names = tuple(f"gw_log10_rho_{k}" for k in range(n_bins))
        return ss.Result("test", names, samples[None], samples[None], None, None, None, {}, 0.0)

    same = pta.free_spectrum_vs_shipped(
        result(x), data.tspan_s, key=getkey(), path=tmp_path / "fs.png"
    )
    assert len(same["bins"]) == n_bins and same["max_abs_z"] < 0.1
    assert (tmp_path / "fs.png").stat().st_size > 10_000
    shifted = pta.free_spectrum_vs_shipped(result(x + 0.5), data.tspan_s, key=getkey())
    for row, h in zip(shifted["bins"], half, strict=True):
        assert row["z"] == pytest.approx(1.0 / math.hypot(h, h), rel=0.1)


def _values(x):
    """``x`` without its timings (``wall_seconds`` at any depth): what a rerun must reproduce."""
    if isinstance(x, dict):
        return {k: _values(v) for k, v in x.items() if k != "wall_seconds"}
    if isinstance(x, list):
        return [_values(v) for v in x]
    return x


@needs_data
@pytest.mark.slow
def test_tiny_job_writes_the_table_and_resumes(tmp_path, monkeypatch):
    config = pta.JOB.load(size="tiny")
    summary = pta.JOB.run(config, key=jax.random.key(0), out=tmp_path, progress=False).results
    assert (tmp_path / "bayes_factors.md").exists()
    assert (tmp_path / "spectra_epta_dr2new.png").stat().st_size > 10_000
    rows = {r["model"]: r for r in json.loads((tmp_path / "bayes_factors.json").read_text())}
    assert set(rows) == {"SMBHB", "IGW"}
    assert all(np.isfinite(r["log_z"]) for r in rows.values())
    full = summary["full_likelihood"]
    assert full["curn"]["n_pulsars"] == 3 and full["curn"]["n_params"] == 3 * 2 + 2
    assert np.isfinite(full["ln_bf_hd_vs_curn"]) and full["ln_bf_err"] >= 0
    assert "reweighted" in full["hd"]["method"]
    assert (tmp_path / "full" / "hd" / "gw_corner.png").stat().st_size > 10_000
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["job"] == "pta-compare" and written["config"]["steps"] == 100
    # A second run reads every finished fit back from the checkpoint instead of sampling again.
    import science.samplers as ss

    def boom(*a, **k):
        raise AssertionError("resumed run sampled again")

    monkeypatch.setattr(ss, "sample", boom)
    again = pta.JOB.run(config, key=jax.random.key(0), out=tmp_path, progress=False).results
    assert again["refit"] == summary["refit"]
    assert again["full_likelihood"] == summary["full_likelihood"]


@needs_data
@pytest.mark.slow
def test_kill_9_mid_run_resumes_to_the_same_summary(tmp_path):
    """``jaxaccel pta-compare --size tiny`` killed (SIGKILL) right after its 2nd checkpoint save
    (both refits done, the full-likelihood fit not), rerun: the same summary as an uninterrupted
    run."""
    exe = os.path.join(os.path.dirname(sys.executable), "jaxaccel")
    base = [exe, "pta-compare", "--size", "tiny", "--no-progress", "--out"]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    env = dict(os.environ, JAXACCEL_KILL_AFTER_SAVES="2")
    proc = subprocess.run([*base, str(cut)], env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == -9, proc.stderr[-2000:]
    done = json.loads((cut / "checkpoint" / "checkpoint.json").read_text())["extra"]["done"]
    assert sorted(done) == ["refit/epta_dr2new/IGW", "refit/epta_dr2new/SMBHB"]
    assert not (cut / "summary.json").exists()
    env.pop("JAXACCEL_KILL_AFTER_SAVES")
    for folder in (cut, ref):
        proc = subprocess.run(
            [*base, str(folder)], env=env, capture_output=True, text=True, timeout=1800
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = (json.loads((f / "summary.json").read_text()) for f in (ref, cut))
    assert _values(a) == _values(b)
