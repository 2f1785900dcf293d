"""The gw-population job end to end at tiny size: the command line, resume after a kill -9, and the
catalogue facts the job relies on."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaccel import _cli
from science import gw

JAXACCEL = Path(sys.executable).with_name("jaxaccel")


def test_shipped_catalogue_is_the_documented_one():
    cat = gw.default_catalogue()
    assert cat.n_events == 69 and cat.posteriors["mass_1"].shape == (69, 100)
    assert cat.truths == gw.GWTC3_PLP
    assert np.all(cat.snr > gw.SNR_THRESHOLD)


def test_sizes_and_model_presets():
    tiny = gw.JOB.load(size="tiny")
    assert tiny.free == ("alpha", "mpp", "lamb") and tiny.n_events == 20
    assert (tiny.steps, tiny.chunk, tiny.n_draws, tiny.refine) == (150, 50, 1000, False)
    small = gw.JOB.load()
    assert small.free == gw.FREE["bbh"]["small"] and small.n_events is None and small.refine
    mix = gw.JOB.load(size="tiny", overrides={"model": "bbh+nsbh"})
    assert mix.free == ("log10_rate_bbh", "log10_rate_nsbh", "lamb") and mix.n_events is None
    full = gw.JOB.load(size="full", overrides={"model": "bbh+nsbh"})
    assert len(full.free) == 11 and full.steps == 3000
    own = gw.JOB.load(size="tiny", overrides={"free": ["beta"], "priors": {"beta": [0, 3]}})
    assert own.free == ("beta",) and own.bounds("beta") == (0.0, 3.0)
    assert own.bounds("BBH.alpha") == gw.PRIORS["alpha"]


def test_gw_population_tiny_cli(tmp_path, capsys):
    out = tmp_path / "gw"
    assert _cli.main(["gw-population", "--size", "tiny", "--out", str(out), "--seed", "1"]) == 0
    captured = capsys.readouterr()
    assert "90% interval" in captured.out and "alpha" in captured.out and "k-hat" in captured.out
    assert "compiling" in captured.err  # the progress bar shows the compile phase
    summary = json.loads((out / "summary.json").read_text())
    assert summary["job"] == "gw-population" and summary["n_events"] == 20
    assert summary["config"]["free"] == ["alpha", "mpp", "lamb"]
    assert [r["param"] for r in summary["recovery"]] == ["alpha", "lamb", "mpp"]
    for r in summary["recovery"]:
        lo, hi = gw.PRIORS[r["param"]]
        assert lo <= r["low90"] <= r["median"] <= r["high90"] <= hi
        assert r["truth"] == gw.GWTC3_PLP[r["param"]]
    # 20 events leave these three broad: the truths lie inside their 90% intervals
    assert all(r["inside90"] for r in summary["recovery"])
    assert summary["khat"] < 0.7 and np.isfinite(summary["log_z"])
    sel = summary["selection_at_median"]
    assert sel["neff_injections"] > sel["neff_threshold"] == 80
    for name in ("corner.png", "mass_distribution.png", "samples.npz"):
        assert (out / name).stat().st_size > 10_000, name
    assert json.loads((out / "result.json").read_text())["names"] == ["alpha", "lamb", "mpp"]
    assert set(summary["files"]) >= {"summary.json", "corner.png", "mass_distribution.png"}
    ckpt = json.loads((out / "checkpoint" / "stage0" / "checkpoint.json").read_text())
    assert ckpt["step"] == 3  # 150 steps in 3 chunks of 50, one checkpoint each


def _run(out: Path, env: dict) -> subprocess.CompletedProcess:
    cmd = [str(JAXACCEL), "gw-population", "--size", "tiny", "--seed", "2", "--out", str(out)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def _comparable(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("wall_seconds",)}


@pytest.mark.slow
def test_kill_minus_9_then_rerun_gives_the_same_summary(tmp_path):
    # One persistent compilation cache for the three processes: only the first compiles.
    env = os.environ | {
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    killed = _run(tmp_path / "a", env | {"JAXACCEL_KILL_AFTER_SAVES": "1"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "a" / "summary.json").exists()
    ckpt = json.loads((tmp_path / "a" / "checkpoint" / "stage0" / "checkpoint.json").read_text())
    assert ckpt["step"] == 1
    resumed = _run(tmp_path / "a", env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "flow VI stage 0: resumed from step 50" in resumed.stderr
    straight = _run(tmp_path / "b", env)
    assert straight.returncode == 0, straight.stderr[-2000:]
    assert "resumed" not in straight.stderr
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert _comparable(a) == _comparable(b)
    assert a["recovery"] == b["recovery"] and a["log_z"] == b["log_z"]
    np.testing.assert_array_equal(
        np.load(tmp_path / "a" / "samples.npz")["samples"],
        np.load(tmp_path / "b" / "samples.npz")["samples"],
    )
    # a rerun of a finished run resumes at the end and says so
    again = _run(tmp_path / "b", env)
    assert again.returncode == 0 and "resumed from step 150" in again.stderr


def test_mixture_model_loads_the_mixture_catalogue():
    config = gw.JOB.load(size="tiny", overrides={"model": "bbh+nsbh"})
    cat = gw.load_catalogue(config)
    assert cat.observing_time == 1.0 and cat.n_events == 109


def test_mixture_catalogue_counts_match_the_selection_integral():
    # The shipped BBH+NSBH catalogue: its detections per subpopulation are Poisson draws whose
    # means are T * rate_k * mu_k(truth), estimated independently from the injection set.
    config = gw.JOB.load(size="tiny", overrides={"model": "bbh+nsbh"})
    cat = gw.load_catalogue(config)
    _, lik, fixed = gw.build_target(cat, config)
    truths = gw.truths_of(cat)
    truth = gw.hyperparameters(fixed, {k: jnp.asarray(truths[k]) for k in config.free})
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
    config = gw.JOB.load(size="tiny", overrides={"model": "bbh+nsbh"})
    summary = gw.JOB.run(config, key=jax.random.key(3), out=tmp_path / "mix", progress=False)
    rows = {r["param"]: r for r in summary["recovery"]}
    assert set(rows) == {"log10_rate_bbh", "log10_rate_nsbh", "lamb"}
    for name in ("log10_rate_bbh", "log10_rate_nsbh"):
        assert rows[name]["inside90"], rows[name]
    for name, r in summary["local_rates"].items():
        assert r["low90"] <= r["truth"] <= r["high90"], (name, r)
        assert r["high90"] / r["low90"] < 5, (name, r)  # informative, not the prior
