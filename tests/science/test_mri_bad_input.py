"""``jaxaccel mri-recon`` rejects bad configs and bad data up front, naming the key: before the slice
is reconstructed, before any network is built or trained, in well under 2 s (the old job found a
[63, 65] shape in a reshape after 100 s and a NaN slice after training every network)."""

from __future__ import annotations

import re
import time

import jax
import numpy as np
import pytest

import jaxaccel
from jaxaccel import _cli
from science import mri
from science.mri import _train

needs_slice = pytest.mark.skipif(
    not mri.default_slice().exists(), reason="../shared/data/mri not present"
)


def _cli_error(capsys, tmp_path, *args: str, toml: str | None = None) -> str:
    """Run ``jaxaccel mri-recon --size tiny ...``; it must exit 2 with one error line."""
    argv = ["mri-recon", "--size", "tiny", "--out", str(tmp_path / "out"), *args]
    if toml is not None:
        (tmp_path / "run.toml").write_text(toml)
        argv += ["--config", str(tmp_path / "run.toml")]
    capsys.readouterr()
    assert _cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxaccel mri-recon: error: ") and "\n" not in err, err
    assert not (tmp_path / "out" / "checkpoints").exists()  # nothing was trained
    return err


@pytest.fixture
def forbid_work(monkeypatch):
    """Fail the test if the job gets as far as building a network or training."""

    def boom(*a, **k):
        raise AssertionError("the job started working before rejecting its input")

    monkeypatch.setattr("science.mri._job.train", boom)
    monkeypatch.setattr("science.mri._job.build_model", boom)


# -- config keys ----------------------------------------------------------------------------


def test_odd_shape_is_rejected_before_anything_compiles(capsys, tmp_path, forbid_work):
    t = time.perf_counter()
    err = _cli_error(capsys, tmp_path, toml="shape = [63, 65]\n")
    assert time.perf_counter() - t < 2.0  # generous: it takes milliseconds
    assert "run.toml: shape: expected [H, W] with each side a positive multiple of 16" in err
    assert "got [63, 65]" in err


@pytest.mark.parametrize("shape", [[48, 40], [8, 8], [0, 32], [-32, 32]])
def test_shapes_the_networks_and_the_wavelet_cannot_halve(shape):
    with pytest.raises(jaxaccel.ConfigError, match=r"shape: expected \[H, W\] .* multiple of 16"):
        mri.JOB.load(size="tiny", overrides={"shape": shape})


def test_shape_with_one_value_or_not_a_list():
    with pytest.raises(jaxaccel.ConfigError, match=r"shape: expected a list of 2 values"):
        mri.JOB.load(size="tiny", overrides={"shape": [32]})
    with pytest.raises(jaxaccel.ConfigError, match=r"shape\[1\]: expected an integer"):
        mri.JOB.load(size="tiny", overrides={"shape": [32, 32.5]})


def test_models_as_a_string_gets_a_list_hint(capsys, tmp_path, forbid_work):
    err = _cli_error(capsys, tmp_path, toml='models = "unet"\n')
    assert "models: expected a list" in err and 'write ["unet"]' in err


def test_unknown_model_names_the_entry(capsys, tmp_path, forbid_work):
    err = _cli_error(capsys, tmp_path, toml='models = ["unet", "transformer"]\n')
    assert "models[1]: expected one of 'unet', 'rim', 'cirim', 'varnet', got 'transformer'" in err
    # the same from the --models flag names the flag
    err = _cli_error(capsys, tmp_path, "--models", "unet,gan")
    assert "--models[1]: expected one of" in err and "'gan'" in err


def test_no_models_or_a_model_twice():
    with pytest.raises(jaxaccel.ConfigError, match="models: expected a list .* length >= 1"):
        mri.JOB.load(size="tiny", overrides={"models": []})
    with pytest.raises(jaxaccel.ConfigError, match="models: expected each model once"):
        mri.JOB.load(size="tiny", overrides={"models": ["unet", "unet"]})


@pytest.mark.parametrize(
    ("toml", "match"),
    [
        ("steps = 0\n", "steps: expected an integer >= 1, got 0"),
        ("steps = -1\n", "steps: expected an integer >= 1, got -1"),
        ('steps = "abc"\n', "steps: expected an integer >= 1, got 'abc'"),
        (
            "steps = 2.5\n",
            r"steps: expected an integer >= 1, got 2.5 \(a whole number is needed\)",
        ),
        ("batch = 0\n", "batch: expected an integer >= 1, got 0"),
        ("cs_iterations = 0\n", "cs_iterations: expected an integer >= 1, got 0"),
        ("lr = -0.001\n", "lr: expected a number > 0, got -0.001"),
        ("lr = nan\n", "lr: expected a finite number"),
        ("cs_sweep = []\n", "cs_sweep: expected a list .* length >= 1"),
        ("cs_sweep = [[0.001, -0.001]]\n", r"cs_sweep\[0\]: expected \[wavelet, tv\] weights >= 0"),
        ('prng = "philox"\n', "prng: expected one of 'rbg', 'threefry2x32', got 'philox'"),
        ("stepz = 3\n", "stepz: unknown key; did you mean 'steps'?"),
    ],
)
def test_bad_numbers_and_keys_name_the_key(capsys, tmp_path, forbid_work, toml, match):
    err = _cli_error(capsys, tmp_path, toml=toml)
    assert re.search(match, err), err


# -- the data -------------------------------------------------------------------------------


def _slice_file(tmp_path, array, name="slice.npy"):
    path = tmp_path / name
    np.save(path, array)
    return path


def _good():
    return np.random.default_rng(0).uniform(0, 1, (64, 64)).astype(np.float32)


def test_missing_data_file(capsys, tmp_path, forbid_work):
    err = _cli_error(capsys, tmp_path, "--data", str(tmp_path / "nope.npy"))
    assert f"--data: {tmp_path / 'nope.npy'} does not exist" in err
    err = _cli_error(capsys, tmp_path, toml=f'data = "{tmp_path / "nope.npy"}"\n')
    assert "data: " in err and "does not exist" in err
    err = _cli_error(capsys, tmp_path, toml=f'data = "{tmp_path}"\n')
    assert "data: " in err and "is not a file" in err


def test_data_in_the_wrong_format(capsys, tmp_path, forbid_work):
    text = tmp_path / "notes.npy"
    text.write_text("not an array\n")
    err = _cli_error(capsys, tmp_path, toml=f'data = "{text}"\n')
    assert "data: " in err and "is not a .npy array file" in err
    archive = tmp_path / "slice.npz"
    np.savez(archive, image=_good())
    err = _cli_error(capsys, tmp_path, toml=f'data = "{archive}"\n')
    assert "data: " in err and "is an .npz archive; expected one 2D array" in err
    objects = _slice_file(tmp_path, np.array([{"a": 1}], dtype=object), "objects.npy")
    with pytest.raises(jaxaccel.ConfigError, match="data: .* holds Python objects"):
        mri.JOB.load(size="tiny", overrides={"data": str(objects)})
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(_slice_file(tmp_path, _good()).read_bytes()[:1000])
    with pytest.raises(jaxaccel.ConfigError, match="data: .* is not a readable .npy array file"):
        mri.JOB.load(size="tiny", overrides={"data": str(truncated)})
    with pytest.raises(jaxaccel.ConfigError, match="data: expected a real magnitude image"):
        mri.JOB.load(size="tiny", overrides={"data": str(_slice_file(tmp_path, _good() + 1j))})


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("nan", "has 1 NaN or inf pixel"),
        ("inf", "has 1 NaN or inf pixel"),
        ("zero", "is all zero"),
        ("negative", r"expected a magnitude image \(>= 0\), got minimum -0.5"),
        ("3d", r"expected a 2D slice \(H, W\), got shape \(2, 64, 64\)"),
        ("1d", r"expected a 2D slice \(H, W\), got shape \(64,\)"),
        ("odd", "expected a slice whose sides are multiples of 16, got 63 x 64"),
    ],
)
def test_bad_slices_are_found_before_training(capsys, tmp_path, forbid_work, bad, match):
    a = _good()
    if bad == "nan":
        a[10, 20] = np.nan
    elif bad == "inf":
        a[3, 3] = np.inf
    elif bad == "zero":
        a[:] = 0
    elif bad == "negative":
        a[5, 5] = -0.5
    elif bad == "3d":
        a = np.stack([a, a])
    elif bad == "1d":
        a = a[0]
    elif bad == "odd":
        a = a[:63]
    path = _slice_file(tmp_path, a)
    t = time.perf_counter()
    err = _cli_error(capsys, tmp_path, toml=f'data = "{path}"\n')
    assert time.perf_counter() - t < 2.0
    assert re.search(r"data: .*" + match, err), err
    # the library function names the argument it was given
    with pytest.raises(mri.MRIError, match=r"slice: .*" + match):
        mri.load_slice(path, name="slice")


def test_bad_slice_given_to_run_directly_fails_before_training(tmp_path, forbid_work):
    """`JOB.run` with a config built without `JOB.load` (so without its checks)."""
    a = _good()
    a[0, 0] = np.nan
    config = mri.MRIConfig(steps=2, shape=(32, 32), data=_slice_file(tmp_path, a))
    with pytest.raises(mri.MRIError, match="data: .* NaN or inf"):
        mri.JOB.run(config, key=jax.random.key(0), out=tmp_path / "out", progress=False)


# -- API arguments --------------------------------------------------------------------------


def test_api_arguments_name_themselves():
    with pytest.raises(mri.MRIError, match="name: expected one of unet, rim, cirim, varnet"):
        mri.build_model("transformer", key=jax.random.key(0))
    with pytest.raises(mri.MRIError, match="key: expected a JAX PRNG key"):
        mri.job_key(0)
    with pytest.raises(mri.MRIError, match="key: cannot re-seed"):
        mri.job_key(jax.random.key(0, impl="rbg"), "threefry2x32")
    with pytest.raises(jaxaccel.InputError, match="config: expected a MRIConfig"):
        mri.JOB.run({"steps": 2}, key=jax.random.key(0), out="/tmp/unused")
    with pytest.raises(mri.MRIError, match="steps: expected an integer >= 1"):
        _train.TrainConfig(steps=0)
    # MRIConfig built directly runs the same checks as the loader
    with pytest.raises(jaxaccel.ConfigError, match="shape: expected"):
        mri.MRIConfig(shape=(63, 65))
    assert issubclass(mri.MRIError, jaxaccel.Error) and issubclass(mri.MRIError, ValueError)


@needs_slice
def test_the_shipped_slice_passes_the_checks():
    gt, brain, path = mri.load_slice()
    assert gt.shape == (256, 256) and gt.dtype == np.float32 and brain.any()
    assert path == mri.default_slice()
