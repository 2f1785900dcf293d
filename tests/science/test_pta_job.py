"""``jaxaccel pta-compare``: config errors, Bayes-factor bookkeeping and a tiny end-to-end run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from science import pta
from science.pta import _compare as cmp, _job

needs_data = pytest.mark.skipif(
    not (pta.data_folder() / "freespec").is_dir(), reason="../shared/data/pta not present"
)


def test_config_errors_name_the_key():
    with pytest.raises(SystemExit, match="unknown keys"):
        _job.JobConfig.for_size("tiny", {"stepz": 3})
    with pytest.raises(SystemExit, match="datasets: 'nanograv'"):
        _job.JobConfig.for_size("tiny", {"datasets": ["nanograv"]})
    with pytest.raises(SystemExit, match="models: 'AXION'"):
        _job.JobConfig.for_size("tiny", {"models": ["AXION"]})
    with pytest.raises(SystemExit, match="bins.ppta_dr3"):
        _job.JobConfig.for_size("tiny", {"bins": {"ppta_dr3": 0}})
    with pytest.raises(SystemExit, match="steps"):
        _job.JobConfig.for_size("tiny", {"steps": -1})
    with pytest.raises(SystemExit, match="combos: 'ppta_dr3' is not among datasets"):
        _job.JobConfig.for_size("tiny", {"combos": ["ppta_dr3"]})
    full = _job.JobConfig.for_size("full", {"hellinger": True})
    assert full.hellinger == full.datasets and full.combos == ("epta_dr2new",)
    config = _job.JobConfig.for_size("tiny", {"models": ["DW"]})
    assert config.models[0] == "SMBHB"  # the reference is always fitted


def test_bayes_factors_and_table():
    runs = [
        cmp.ModelRun("d", "SMBHB", -3.0, 0.03, 0.1, 900.0, ("a",), {}, 1.0),
        cmp.ModelRun("d", "DW", -1.0, 0.04, 0.9, 100.0, ("b",), {}, 1.0),
    ]
    rows = cmp.bayes_factors(runs)
    dw = next(r for r in rows if r["model"] == "DW")
    assert dw["ln_bf"] == pytest.approx(2.0)
    assert dw["ln_bf_err"] == pytest.approx(0.05)
    table = cmp.format_table(rows)
    assert "+2.00 ± 0.05" in table and "k-hat 0.90" in table


def test_hellinger_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 200_000)
    assert cmp.hellinger(a, rng.normal(0, 1, 200_000)) < 0.02
    # Two unit normals 1 apart: H^2 = 1 - exp(-1/8).
    assert cmp.hellinger(a, rng.normal(1, 1, 200_000), bins=200) == pytest.approx(
        math.sqrt(1 - math.exp(-1 / 8)), abs=0.01
    )
    assert cmp.hellinger(a, a + 100.0) == pytest.approx(1.0)


@needs_data
def test_new_physics_plus_smbhb_adds_the_two_powers():
    """A combination's rho^2 is the sum of both models' rho^2; the SMBHB parameters are prefixed,
    and a joint prior (SIGW-BOX's ordered edges) survives the combination."""
    from science.pta import _spectra as S

    data = pta.load_free_spectrum("epta_dr2new")
    box, smbhb = S.get_model("SIGW-BOX"), S.get_model("SMBHB")
    target, lik = cmp.refit_target(data, box, bins=5, plus=smbhb)
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
@pytest.mark.slow
def test_tiny_job_writes_the_table_and_resumes(tmp_path, monkeypatch):
    summary = _job.run("tiny", 0, tmp_path)
    assert (tmp_path / "bayes_factors.md").exists()
    assert (tmp_path / "spectra_epta_dr2new.png").exists()
    rows = {r["model"]: r for r in json.loads((tmp_path / "bayes_factors.json").read_text())}
    assert set(rows) == {"SMBHB", "IGW"}
    assert all(np.isfinite(r["log_z"]) for r in rows.values())
    full = summary["full_likelihood"]
    assert np.isfinite(full["ln_bf_hd_vs_curn"]) and full["ln_bf_err"] >= 0
    assert "reweighted" in full["hd"]["method"]
    assert (tmp_path / "full" / "hd" / "gw_corner.png").exists()
    vs = full["free_spectrum"]["vs_shipped"]
    assert (tmp_path / "free_spectrum_hd.png").exists() and np.isfinite(vs["max_abs_z"])
    # A second run reads every finished model back instead of sampling again.
    import science.samplers as ss

    def boom(*a, **k):
        raise AssertionError("resumed run sampled again")

    monkeypatch.setattr(ss, "sample", boom)
    again = _job.run("tiny", 0, tmp_path)
    assert again["refit"] == summary["refit"]
