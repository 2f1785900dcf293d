"""The gw-population job end to end at tiny size, and its resume from a checkpoint."""

import json

import numpy as np

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
