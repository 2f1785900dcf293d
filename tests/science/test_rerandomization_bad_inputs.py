"""``jaxaccel rerandomize`` tried as a new user would: bad flags, TOML keys, CSVs and columns are
refused before any pool is drawn, by one line that names the key or flag (CLI: exit status 2)."""

from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
import pytest

from jaxaccel import ConfigError, Error, _cli
from science import rerandomization as rr


@pytest.fixture
def csvs(tmp_path):
    """A 30-unit CSV (covariates a, b, c; treatment w with 12 treated; outcome y) and broken
    variants of it."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(30, 3)), columns=list("abc"))
    df["w"] = (np.arange(30) < 12).astype(int)
    df["y"] = rng.normal(size=30)
    files = {
        "ok": df,
        "w_not_01": df.assign(w=np.where(np.arange(30) < 12, 2, 0)),
        "one_treated": df.assign(w=(np.arange(30) < 1).astype(int)),
        "nan_covariate": df.assign(a=np.where(np.arange(30) == 3, np.nan, df.a)),
        "text_covariate": df.assign(s="x"),
        "constant_covariate": df.assign(c=1.0),
    }
    paths = {}
    for name, frame in files.items():
        paths[name] = tmp_path / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    paths["folder"] = tmp_path
    paths["missing"] = tmp_path / "nope.csv"
    return paths


# (flags, TOML text or None, what the one-line message must contain)
CASES = {
    "unknown TOML key": ([], "n_acepted = 5", r"n_acepted: unknown key; did you mean 'n_accepted'"),
    "accept_probs with 0": ([], "accept_probs = [0.0, 0.5]", r"accept_probs\[0\]: .*> 0 and <= 1"),
    "accept_probs above 1": ([], "accept_probs = [1.5]", r"accept_probs\[0\]: .*got 1.5"),
    "accept_probs a string": ([], 'accept_probs = "0.1"', r"accept_probs: expected a list"),
    "no accept_probs": ([], "accept_probs = []", r"accept_probs: .*with length >= 1, got \[\]"),
    "covariates a string": ([], 'covariates = "age"', r'covariates: .*write \["age"\]'),
    "unknown dataset": ([], 'dataset = "lalonde"', r"dataset: expected one of 'nsw'"),
    "n_accepted 0": ([], "n_accepted = 0", r"n_accepted: expected an integer >= 100, got 0"),
    "design_sims 0": ([], "design_sims = 0", r"design_sims: expected an integer >= 2, got 0"),
    "alpha 1": ([], "alpha = 1.0", r"alpha: expected a number > 0 and < 1, got 1.0"),
    "r2 1": ([], "r2 = 1.0", r"r2: expected a number >= 0 and < 1, got 1.0"),
    "negative ridge": (["--ridge", "-1"], None, r"--ridge: expected a number >= 0, got -1.0"),
    "ridge a word": (["--ridge", "abc"], None, r"--ridge: expected a number >= 0, got 'abc'"),
    "accept-prob 0": (["--accept-prob", "0"], None, r"--accept-prob: expected a number > 0"),
    "accept-prob 2": (["--accept-prob", "2"], None, r"--accept-prob: .*<= 1, got 2.0"),
    "threshold 0": (["--threshold", "0"], None, r"--threshold: expected a number > 0, got 0.0"),
    "both designs": (
        ["--accept-prob", "0.1", "--threshold", "3"],
        None,
        r"--accept-prob: give accept_prob or threshold, not both",
    ),
    "treatment without csv": (
        ["--treatment", "w"],
        None,
        r"--treatment: set only with csv; dataset 'nsw' uses its own column 'treat'",
    ),
    "a covariate twice": (
        ["--covariates", "age,age"],
        None,
        r"--covariates: 'age' is listed twice",
    ),
    "n-treated 0": (["--n-treated", "0"], None, r"--n-treated: expected an integer >= 2, got 0"),
}


def _cli_error(args, tmp_path, capsys):
    out = tmp_path / "out"
    rc = _cli.main(["rerandomize", "--size", "tiny", "--out", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("jaxaccel rerandomize: error: ") and "\n" not in err, err
    assert not (out / "summary.json").exists()
    return err


@pytest.mark.parametrize("case", CASES)
def test_cli_refuses_bad_flags_and_keys_in_one_line(case, tmp_path, capsys):
    args, text, want = CASES[case]
    if text is not None:
        (tmp_path / "run.toml").write_text(text + "\n")
        args = [*args, "--config", str(tmp_path / "run.toml")]
    err = _cli_error(args, tmp_path, capsys)
    assert re.search(want, err), err


# (flags with {name} standing for a CSV of the fixture, what the message must contain)
CSV_CASES = {
    "missing csv": (["--csv", "{missing}", "--n-treated", "5"], r"csv: file .*nope.csv does not"),
    "csv is a folder": (["--csv", "{folder}", "--n-treated", "5"], r"csv: file .* is a folder"),
    "design-only without n-treated": (
        ["--csv", "{ok}"],
        r"--csv: no treatment column given: set treatment, or n_treated for a design-only run",
    ),
    "treatment column missing": (
        ["--csv", "{ok}", "--treatment", "zz"],
        r"treatment: column 'zz' not in ok.csv; its columns: \['a', 'b', 'c', 'w', 'y'\]",
    ),
    "outcome column missing": (
        ["--csv", "{ok}", "--treatment", "w", "--outcome", "yy"],
        r"outcome: column 'yy' not in ok.csv",
    ),
    "covariate column missing": (
        ["--csv", "{ok}", "--treatment", "w", "--covariates", "a,zz"],
        r"covariates: \['zz'\] not in .*ok.csv",
    ),
    "treatment not 0/1": (
        ["--csv", "{w_not_01}", "--treatment", "w"],
        r"treatment: column 'w' must be 0/1 \(the observed assignment\), found \[2\]",
    ),
    "one treated unit": (
        ["--csv", "{one_treated}", "--treatment", "w"],
        r"treatment: 1 treated of 30 units: each arm needs at least 2 units",
    ),
    "n-treated too large": (
        ["--csv", "{ok}", "--n-treated", "29"],
        r"(n_treated|--n-treated): 29 treated of 30 units: each arm needs at least 2",
    ),
    "n-treated with a treatment column": (
        ["--csv", "{ok}", "--treatment", "w", "--n-treated", "5"],
        r"--n-treated: the treatment column 'w' sets it",
    ),
    "outcome without treatment": (
        ["--csv", "{ok}", "--n-treated", "5", "--outcome", "y"],
        r"--outcome: an analysis needs the observed assignment",
    ),
    "treatment among the covariates": (
        ["--csv", "{ok}", "--treatment", "w", "--covariates", "a,w"],
        r"--covariates: 'w' is the treatment column",
    ),
    "NaN covariate": (
        ["--csv", "{nan_covariate}", "--treatment", "w", "--covariates", "a,b"],
        r"covariates: column 'a' has 1 missing or non-finite value\(s\), e.g. row 3",
    ),
    "text covariate": (
        ["--csv", "{text_covariate}", "--treatment", "w", "--covariates", "a,s"],
        r"covariates: column 's' is not numeric",
    ),
    "constant covariate": (
        ["--csv", "{constant_covariate}", "--treatment", "w"],
        r"covariates: column\(s\) \['c'\] are constant",
    ),
    "observed assignment above the threshold": (
        ["--csv", "{ok}", "--treatment", "w", "--threshold", "0.001"],
        r"threshold: the observed assignment's balance .* is above it",
    ),
}


@pytest.mark.parametrize("case", CSV_CASES)
def test_cli_checks_the_csv_before_drawing(case, csvs, tmp_path, capsys, monkeypatch):
    from science.rerandomization import _job

    def no_draw(*a, **k):
        raise AssertionError("a pool was drawn before the input was refused")

    monkeypatch.setattr(_job, "draw_pool", no_draw)
    args, want = CSV_CASES[case]
    args = [a.format(**{k: str(v) for k, v in csvs.items()}) for a in args]
    t0 = time.perf_counter()
    err = _cli_error(args, tmp_path, capsys)
    assert re.search(want, err), err
    assert time.perf_counter() - t0 < 10.0  # generous: the CSV is read, nothing compiles


def test_unknown_dataset_flag_is_refused_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _cli.main(["rerandomize", "--dataset", "lalonde", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert re.search(r"--dataset: invalid choice: 'lalonde'", capsys.readouterr().err)


def test_config_errors_come_before_any_work_and_fast(csvs):
    bad = [
        ({"accept_probs": [0.0]}, "accept_probs[0]"),
        ({"ridge": -1.0}, "ridge"),
        ({"csv": str(csvs["missing"]), "n_treated": 5}, "csv"),
        ({"csv": str(csvs["ok"]), "treatment": "zz"}, "treatment"),
        ({"csv": str(csvs["w_not_01"]), "treatment": "w"}, "treatment"),
        ({"n_accepted": 0}, "n_accepted"),
    ]
    for overrides, key in bad:
        t0 = time.perf_counter()
        with pytest.raises(ConfigError) as e:
            rr.JOB.load(size="tiny", overrides=overrides)
        assert time.perf_counter() - t0 < 2.0, overrides
        assert e.value.key == key, e.value


def test_errors_derive_from_the_jaxaccel_root():
    assert issubclass(rr.RerandomizationError, Error)
    assert issubclass(rr.RerandomizationError, ValueError)  # old `except ValueError` still works
    with pytest.raises(Error, match=r"dataset: expected one of \['nsw', 'thornton_hiv'\]"):
        rr.load_dataset("lalonde")
    cov = rr.Covariates.build(np.random.default_rng(0).normal(size=(20, 2)))
    with pytest.raises(rr.RerandomizationError, match=r"batch: expected a multiple of 8"):
        rr.candidate_runner(cov, 10, 12)
    with pytest.raises(rr.RerandomizationError, match=r"n_treated: expected 1 <= n_treated"):
        rr.candidate_runner(cov, 20, 64)
    with pytest.raises(rr.RerandomizationError, match=r"covariates: expected a Covariates"):
        rr.candidate_runner(np.zeros((20, 2)), 10, 64)
