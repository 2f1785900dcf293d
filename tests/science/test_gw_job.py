"""The gw-population job end to end at tiny size, and its resume from a checkpoint."""

import json

import numpy as np
import pytest

from science.gw import _job, _mock


def test_shipped_catalogue_is_the_documented_one():
    cat = _mock.default_catalogue()
    assert cat.n_events == 69 and cat.posteriors["mass_1"].shape == (69, 100)
    assert cat.truths == _mock.GWTC3_PLP
    assert np.all(cat.snr > _mock.SNR_THRESHOLD)


def test_gw_population_tiny_runs_and_resumes(tmp_path, capsys):
    out = tmp_path / "gw"
    assert _job.main(["--size", "tiny", "--out", str(out), "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert "90% interval" in text and "alpha" in text
    summary = json.loads((out / "summary.json").read_text())
    assert [r["param"] for r in summary["recovery"]] == ["alpha", "lamb", "mpp"]
    for r in summary["recovery"]:
        lo, hi = _job.PRIORS[r["param"]]
        assert lo <= r["low90"] <= r["median"] <= r["high90"] <= hi
    assert (out / "corner.png").exists() and (out / "mass_distribution.png").exists()
    assert (out / "checkpoint" / "stage0" / "checkpoint.json").exists()
    # A rerun finds the finished checkpoint: same flow, same draws, same answer.
    _job.main(["--size", "tiny", "--out", str(out), "--seed", "1"])
    again = json.loads((out / "summary.json").read_text())
    assert again["recovery"] == summary["recovery"]


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(SystemExit, match="model: expected one of"):
        _job.JobConfig.for_size("tiny", {"model": "bns"})
    with pytest.raises(SystemExit, match="free: unknown hyperparameters"):
        _job.JobConfig.for_size("tiny", {"free": ["alpha", "kappa"]})
    with pytest.raises(SystemExit, match=r"priors\.alpha: expected \[low, high\]"):
        _job.JobConfig.for_size("tiny", {"priors": {"alpha": [3.0, 1.0]}})
    with pytest.raises(SystemExit, match="catalogue: file .* does not exist"):
        _job.load_catalogue(_job.JobConfig.for_size("tiny", {"catalogue": str(tmp_path / "x")}))
    # a rate-sampling model on a catalogue without an observing time
    config = _job.JobConfig.for_size("tiny", {"model": "bbh+nsbh"})
    with pytest.raises(SystemExit, match="needs an observing_time"):
        _job.build_target(_mock.default_catalogue(), config)
    config = _job.JobConfig.for_size("tiny", {"free": ["log10_rate_bbh"]})
    with pytest.raises(SystemExit, match="not hyperparameters of this catalogue"):
        _job.build_target(_mock.default_catalogue(), config)


def test_mixture_catalogue_counts_match_the_selection_integral():
    # The shipped BBH+NSBH catalogue: its detections per subpopulation are Poisson draws whose
    # means are T * rate_k * mu_k(truth), estimated independently from the injection set.
    import jax.numpy as jnp

    cat = _mock.default_catalogue("bbh+nsbh")
    config = _job.JobConfig.for_size("tiny", {"model": "bbh+nsbh"})
    _, lik, fixed = _job.build_target(cat, config)
    truth = _job.hyperparameters(fixed, {k: jnp.asarray(_job._truths(cat)[k]) for k in config.free})
    counts = np.bincount(cat.true_events["subpop"], minlength=2)
    for i, (name, other) in enumerate((("rate_bbh", "rate_nsbh"), ("rate_nsbh", "rate_bbh"))):
        log_mu, _ = lik.selection({**truth, other: jnp.asarray(0.0)})
        expected = cat.observing_time * float(jnp.exp(log_mu))
        assert abs(counts[i] - expected) < 3.5 * np.sqrt(expected), (name, counts[i], expected)
    # NSBH secondaries are neutron stars, BBH ones are not
    nsbh = cat.true_events["subpop"] == 1
    m2 = cat.true_events["mass_1"] * cat.true_events["mass_ratio"]
    assert np.all((m2[nsbh] >= 1.0) & (m2[nsbh] <= 2.5)) and np.all(m2[~nsbh] > 2.5)


@pytest.mark.slow
def test_bbh_nsbh_recovers_both_rates(tmp_path):
    out = tmp_path / "mix"
    summary = _job.run("tiny", 3, out, {"model": "bbh+nsbh"})
    rows = {r["param"]: r for r in summary["recovery"]}
    assert set(rows) == {"log10_rate_bbh", "log10_rate_nsbh", "lamb"}
    for name in ("log10_rate_bbh", "log10_rate_nsbh"):
        assert rows[name]["inside90"], rows[name]
    for name, r in summary["local_rates"].items():
        assert r["low90"] <= r["truth"] <= r["high90"], (name, r)
        assert r["high90"] / r["low90"] < 5, (name, r)  # informative, not the prior
