"""``jaxaccel mri-recon`` at tiny size: trains (2 steps), reconstructs the real slice at 4x and 8x,
writes summary.json, the figures and the metrics table, resumes from its checkpoints (saying so)
and, killed with SIGKILL mid-run, resumes and ends with the summary of an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from science import mri

needs_slice = pytest.mark.skipif(
    not mri.default_slice().exists(), reason="../shared/data/mri not present"
)
JAXACCEL = Path(sys.executable).with_name("jaxaccel")
# what differs between two runs of the same config and key: timings and whether a step resumed
VARYING = {"seconds", "seconds_this_run", "wall_seconds", "resumed_from"}


def _stable(x):
    """``x`` without the run-dependent values (at any depth)."""
    if isinstance(x, dict):
        return {k: _stable(v) for k, v in x.items() if k not in VARYING}
    if isinstance(x, list):
        return [_stable(v) for v in x]
    return x


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One uninterrupted tiny run through the API (shared by the tests of this module)."""
    out = tmp_path_factory.mktemp("mri_tiny")
    config = mri.JOB.load(size="tiny")
    summary = mri.JOB.run(config, key=jax.random.key(0), out=out, progress=False)
    return out, config, summary


@needs_slice
def test_tiny_job_writes_summary_metrics_and_figures(tiny):
    out, config, summary = tiny
    assert config.models == ("unet", "rim") and config.shape == (32, 32)
    record = json.loads((out / "summary.json").read_text())
    assert record["job"] == "mri-recon" and record["config"]["steps"] == 2
    assert record["acquisitions"] == json.loads(json.dumps(summary["acquisitions"]))
    assert set(record["files"]) == {"summary.json", "recon_4x.png", "recon_8x.png", "metrics.md"}
    for tag in ("4x", "8x"):
        assert (out / f"recon_{tag}.png").stat().st_size > 20_000
        rows = summary["acquisitions"][tag]["methods"]
        assert set(rows) == {"zero-filled", "CS", "unet", "rim"}
        # CS beats zero-filling on the real slice, whole image and inside the brain
        assert rows["CS"]["ssim"] > rows["zero-filled"]["ssim"] + 0.01
        assert rows["CS"]["ssim_brain"] > rows["zero-filled"]["ssim_brain"]
        assert all(0 < r["seconds"] and np.isfinite(r["psnr"]) for r in rows.values())
    # the achieved acceleration is the mask's own (fastMRI random masks: R only on average)
    s = mri.acquire(mri.load_slice()[0], key=jax.random.key(0))
    for tag, acq in summary["acquisitions"].items():
        assert acq["achieved"] == pytest.approx(mri.acceleration(s[tag].mask, (256, 256)))
    assert 3 < summary["acquisitions"]["4x"]["achieved"] < summary["acquisitions"]["8x"]["achieved"]
    for name, t in summary["training"].items():
        assert t["loss"] == "L1 magnitude loss" and t["resumed_from"] == 0, name
        assert 0 < t["final_loss"] < 1
    assert [p["wavelet"] for p in summary["cs_sweep"]] == [1e-3, 1e-3]
    assert "| CS |" in (out / "metrics.md").read_text()
    assert "L1 magnitude loss" in summary.table


@needs_slice
def test_rerun_resumes_from_the_checkpoints_and_says_so(tiny, tmp_path, capsys):
    out, config, summary = tiny
    again = tmp_path / "again"
    shutil.copytree(out / "checkpoints", again / "checkpoints")
    capsys.readouterr()
    second = mri.JOB.run(config, key=jax.random.key(0), out=again, progress=False)
    err = capsys.readouterr().err
    for name in config.models:
        assert f"{name} (L1 magnitude loss): resumed from step 2" in err
        assert second["training"][name]["resumed_from"] == 2
    assert "resumed from step 2" in second.table
    assert _stable(dict(second.results)) == _stable(dict(summary.results))


@needs_slice
@pytest.mark.slow
def test_killed_mid_run_resumes_and_ends_with_the_uninterrupted_summary(tiny, tmp_path):
    """A real SIGKILL after the 3rd checkpoint (U-Net done, RIM after step 1), then a rerun."""
    _, _, summary = tiny
    cmd = [str(JAXACCEL), "mri-recon", "--size", "tiny", "--out", str(tmp_path), "--no-progress"]
    env = os.environ | {"JAXACCEL_KILL_AFTER_SAVES": "3"}
    killed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "summary.json").exists()
    env.pop("JAXACCEL_KILL_AFTER_SAVES")
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "unet (L1 magnitude loss): resumed from step 2" in rerun.stderr
    assert "rim (L1 magnitude loss): resumed from step 1" in rerun.stderr
    record = json.loads((tmp_path / "summary.json").read_text())
    assert record["training"]["rim"]["resumed_from"] == 1
    expected = json.loads(json.dumps(_stable(dict(summary.results))))
    got = _stable({k: record[k] for k in summary.results})
    got["data"] = expected["data"]
    # the same losses and reconstruction metrics (to float rounding across processes)
    flat = lambda d: json.dumps(d, sort_keys=True)  # noqa: E731
    if flat(got) != flat(expected):
        for tag in ("4x", "8x"):
            for name, row in expected["acquisitions"][tag]["methods"].items():
                for metric, v in row.items():
                    assert got["acquisitions"][tag]["methods"][name][metric] == pytest.approx(
                        v, rel=1e-5
                    ), (tag, name, metric)
        for name, t in expected["training"].items():
            assert got["training"][name]["final_loss"] == pytest.approx(t["final_loss"], rel=1e-5)


@needs_slice
@pytest.mark.slow
def test_small_unet_trained_on_phantoms_beats_zero_filling_on_the_real_slice(tmp_path):
    """Held out in every sense: trained on phantoms (1000 steps, ~2 min), scored on the real
    slice, with masks and noise it never saw."""
    config = mri.JOB.load(size="small", overrides={"models": ["unet"]})
    summary = mri.JOB.run(config, key=jax.random.key(0), out=tmp_path, progress=False)
    for tag in ("4x", "8x"):
        rows = summary["acquisitions"][tag]["methods"]
        zf, net = rows["zero-filled"], rows["unet"]
        assert net["ssim"] > zf["ssim"] + 0.05 and net["psnr"] > zf["psnr"] + 0.5, (tag, net, zf)
