"""``jaxaccel pta-compare`` tried as a new user would: every bad config is refused before any data
is loaded or anything compiles, by one line that names the key (CLI: exit status 2)."""

from __future__ import annotations

import re
import time

import jax
import numpy as np
import pytest

from jaxaccel import ConfigError, Error, _cli
from science import pta

needs_data = pytest.mark.skipif(
    not (pta.data_folder() / "freespec").is_dir(), reason="../shared/data/pta not present"
)

# (TOML text, what the one-line message must contain: the key and what was expected)
TOML_CASES = {
    "unknown key": ("stepz = 3", r"stepz: unknown key; did you mean 'steps'\?"),
    "string for a list": ('datasets = "EPTA"', r"datasets: expected a list .*write \[\"EPTA\"\]"),
    "unknown data set": (
        'datasets = ["nanograv"]',
        r"datasets\[0\]: expected one of 'epta_dr2new'",
    ),
    "unknown model": ('models = ["AXION"]', r"models\[0\]: expected one of 'SMBHB'"),
    "no models": ("models = []", r"models: expected a list .* with length >= 1, got \[\]"),
    "steps 0": ("steps = 0", r"steps: expected an integer >= 1, got 0"),
    "steps negative": ("full_steps = -5", r"full_steps: expected an integer >= 1, got -5"),
    "steps a string": ('steps = "abc"', r"steps: expected an integer >= 1, got 'abc'"),
    "steps a fraction": ("steps = 1.5", r"steps: .*got 1.5 \(a whole number is needed\)"),
    "n_draws 0": ("n_draws = 0", r"n_draws: expected an integer >= 100, got 0"),
    "bins 0": ("[bins]\nppta_dr3 = 0", r"bins\.ppta_dr3: expected an integer >= 1 and <= 40"),
    "bins above the data": ("[bins]\nepta_dr2new = 30", r"bins\.epta_dr2new: .*<= 20, got 30"),
    "bins of an unknown set": ("[bins]\nnanograv = 3", r"bins\.nanograv: unknown key"),
    "bins not a table": ("bins = 5", r"bins: expected a table with keys epta_dr2new"),
    "combos not among datasets": (
        'combos = ["ppta_dr3"]',
        r"combos: 'ppta_dr3' is not among datasets \['epta_dr2new'\]",
    ),
    "combos a string": ('combos = "epta_dr2new"', r"combos: expected true or false or a list"),
    "a model twice": ('models = ["DW", "DW"]', r"models: 'DW' is listed twice"),
    "one pulsar": ("pulsars = 1", r"pulsars: expected an integer >= 2 or a list of strings"),
    "max_refine negative": ("max_refine = -1", r"max_refine: expected an integer >= 0"),
    "not TOML": ("steps = = 3", r"--config: .* is not valid TOML"),
}


@pytest.mark.parametrize("case", TOML_CASES)
def test_cli_refuses_a_bad_config_in_one_line(case, tmp_path, capsys):
    text, want = TOML_CASES[case]
    cfg = tmp_path / "run.toml"
    cfg.write_text(text + "\n")
    out = tmp_path / "out"
    rc = _cli.main(["pta-compare", "--size", "tiny", "--config", str(cfg), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("jaxaccel pta-compare: error: ") and "\n" not in err, err
    assert re.search(want, err), err
    assert not out.exists()  # refused before anything ran


def test_config_errors_come_before_any_work_and_fast():
    """Every bad override is refused by `JOB.load` in well under 2 s (nothing is loaded or
    compiled: the checks run on the TOML values)."""
    bad = [
        {"steps": 0},
        {"n_draws": 0},
        {"datasets": "EPTA"},
        {"bins": {"ipta_dr2": 0}},
        {"models": ["AXION"]},
        {"hellinger": ["ipta_dr2"]},
        {"pulsars": ["J1909-3744"]},
    ]
    for overrides in bad:
        t0 = time.perf_counter()
        with pytest.raises(ConfigError) as e:
            pta.JOB.load(size="small", overrides=overrides)
        assert time.perf_counter() - t0 < 2.0, overrides
        assert e.value.key.split("[")[0].split(".")[0] == next(iter(overrides)), e.value


def test_api_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"overrides: hellinger: 'ppta_dr3' is not among"):
        pta.JOB.load(size="tiny", overrides={"hellinger": ["ppta_dr3"]})
    with pytest.raises(ConfigError, match=r"pulsars: expected at least 2 pulsar names"):
        pta.JOB.load(size="tiny", overrides={"pulsars": ["J1909-3744"]})
    with pytest.raises(ConfigError, match=r"--size: expected one of tiny, small, full"):
        pta.JOB.load(size="huge")
    with pytest.raises(Error, match=r"config: expected a PTACompareConfig"):
        pta.JOB.run({"steps": 3}, key=jax.random.key(0), out="unused")


@needs_data
def test_unknown_pulsars_and_too_many_are_refused_before_loading(capsys, tmp_path):
    with pytest.raises(ConfigError, match=r"pulsars: unknown pulsar 'J0000\+0000'; known: J0030"):
        pta.JOB.load(size="tiny", overrides={"pulsars": ["J0000+0000", "J1909-3744"]})
    with pytest.raises(ConfigError, match=r"pulsars: expected at most 25"):
        pta.JOB.load(size="tiny", overrides={"pulsars": 99})
    # no full likelihood: the pulsars are not looked at
    pta.JOB.load(size="tiny", overrides={"pulsars": 99, "full_likelihood": False})


def test_missing_data_is_one_line_naming_the_key(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JAXACCEL_PTA_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(pta.PTADataError, match=r"datasets: free-spectrum data for 'epta_dr2new'"):
        pta.JOB.load(size="tiny")
    (tmp_path / "nowhere" / "freespec" / "epta_dr2_new_hd").mkdir(parents=True)
    np.save(tmp_path / "nowhere" / "freespec" / "epta_dr2_new_hd" / "freqs.npy", np.ones(5))
    with pytest.raises(ConfigError, match=r"bins\.epta_dr2new: expected at most 5"):
        pta.JOB.load(size="tiny")
    with pytest.raises(pta.PTADataError, match=r"full_likelihood: no EPTA DR2 .feather files"):
        pta.JOB.load(size="tiny", overrides={"bins": {"epta_dr2new": 5}})
    rc = _cli.main(["pta-compare", "--size", "tiny", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "bins.epta_dr2new" in err
    assert isinstance(pta.PTADataError("x"), FileNotFoundError)  # the old base still catches it


def test_library_inputs_name_the_argument():
    with pytest.raises(ValueError, match=r"name: expected one of \['epta_dr2new'"):
        pta.load_free_spectrum("nanograv_99yr")
    run = pta.ModelRun("d", "SMBHB", 0.0, 0.1, 0.1, 10.0, ("a",), {}, 1.0)
    with pytest.raises(Error, match="run: SMBHB was fitted without out="):
        pta.posterior_draws(run, key=jax.random.key(0))
