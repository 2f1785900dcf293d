"""``jaxaccel mri-recon`` at tiny size: trains (a few steps), reconstructs the real slice at 4x and
8x, writes the figures and the metrics table, and resumes from its checkpoints."""

from __future__ import annotations

import json

import pytest

from science.mri import _job
from science.mri._physics import MRIError

needs_slice = pytest.mark.skipif(
    not _job.default_slice().exists(), reason="../shared/data/mri not present"
)


@needs_slice
def test_tiny_job_writes_metrics_and_figures_and_resumes(tmp_path, capsys):
    config = {"models": ["unet", "cirim"]}
    summary = _job.run("tiny", 0, tmp_path, config)
    for tag in ("4x", "8x"):
        assert (tmp_path / f"recon_{tag}.png").stat().st_size > 20_000
        rows = summary["acquisitions"][tag]["methods"]
        assert set(rows) == {"zero-filled", "CS", "unet", "cirim"}
        assert rows["CS"]["ssim"] > rows["zero-filled"]["ssim"]  # CS must beat zero-filling
        assert all(0 < r["seconds"] for r in rows.values())
    assert summary["acquisitions"]["4x"]["achieved"] == pytest.approx(4, rel=0.15)
    assert "| CS |" in (tmp_path / "metrics.md").read_text()
    assert json.loads((tmp_path / "metrics.json").read_text())["size"] == "tiny"
    capsys.readouterr()
    _job.run("tiny", 0, tmp_path, config)
    assert "resumed from step 3" in capsys.readouterr().err


@needs_slice
@pytest.mark.slow
def test_small_unet_trained_on_phantoms_beats_zero_filling_on_the_real_slice(tmp_path):
    """Held out in every sense: trained on phantoms (1000 steps, ~2 min), scored on the real
    slice, with masks and noise it never saw."""
    summary = _job.run("small", 0, tmp_path, {"models": ["unet"]})
    for tag in ("4x", "8x"):
        rows = summary["acquisitions"][tag]["methods"]
        zf, net = rows["zero-filled"], rows["unet"]
        assert net["ssim"] > zf["ssim"] + 0.05 and net["psnr"] > zf["psnr"] + 0.5, (tag, net, zf)


def test_config_errors():
    with pytest.raises(MRIError, match="unknown key"):
        _job._settings("tiny", {"stepz": 3})
    with pytest.raises(MRIError, match="models: unknown"):
        _job._settings("tiny", {"models": ["transformer"]})
    with pytest.raises(MRIError, match="does not exist"):
        _job.run("tiny", 0, __import__("pathlib").Path("/tmp"), {"data": "/nonexistent.npy"})
