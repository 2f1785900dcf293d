"""science.mri data generation and training: phantoms and simulated batches, and a training run
interrupted and resumed from its checkpoint ends exactly as an uninterrupted one (and says so)."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import numpy as np
import pytest

import jaxaccel
from science import mri
from science.mri import _data, _nets, _train

CFG = _train.TrainConfig(
    steps=4, batch=2, shape=(32, 32), n_coils=4, checkpoint_every=2, center_fractions=(0.12, 0.08)
)


def test_simulated_batches_are_deterministic_and_well_formed():
    bank = _data.MaskBank.build(32, (4, 8), (0.12, 0.08), per_acceleration=4, key=jax.random.key(0))
    assert bank.masks.shape == (8, 1, 32)
    assert bank.masks[:4].mean() > bank.masks[4:].mean()  # 4x samples more than 8x
    assert (bank.masks[:, 0, 15:18] == 1).all()  # the centre band is always sampled
    f = jax.jit(lambda k: _data.simulate_batch(3, (32, 32), bank, n_coils=4, key=k))
    a, b = f(jax.random.key(1)), f(jax.random.key(1))
    np.testing.assert_array_equal(a.kspace, b.kspace)
    assert a.kspace.shape == (3, 4, 32, 32) and a.target.shape == (3, 32, 32)
    assert 0 <= float(a.target.min()) and float(a.target.max()) <= 1
    # unsampled k-space is zero; the fully sampled data reproduce the target
    unsampled = np.broadcast_to(np.asarray(a.mask)[:, None], a.kspace.shape) == 0
    assert np.all(np.asarray(a.kspace)[unsampled] == 0)
    full = mri.fft2c(a.maps[0] * a.image[0][None])
    np.testing.assert_allclose(np.abs(mri.sense_combine(full, a.maps[0])), a.target[0], atol=1e-5)


def test_training_resumes_exactly(tmp_path, capsys):
    model = _nets.RIM("indrnn", 8, 2, key=jax.random.key(0))
    _, whole, resumed_from = _train.train(
        model, CFG, key=jax.random.key(1), folder=tmp_path / "a", progress=False
    )
    assert resumed_from == 0
    _train.train(model, CFG, key=jax.random.key(1), folder=tmp_path / "b", progress=False, until=2)
    capsys.readouterr()
    trained, resumed, resumed_from = _train.train(
        model, CFG, key=jax.random.key(1), folder=tmp_path / "b", progress=True, desc="rim"
    )
    err = capsys.readouterr().err
    assert resumed_from == 2 and "rim (L1 magnitude loss): resumed from step 2" in err
    assert "compiling…" in err  # the first step of a run is shown as compiling
    np.testing.assert_allclose(resumed, whole, rtol=1e-5)
    assert len(whole) == 4 and all(np.isfinite(whole))
    bank = _data.MaskBank.build(32, (4,), (0.12,), 2, key=jax.random.key(0))
    sample = jax.jit(lambda k: _data.simulate_batch(1, (32, 32), bank, n_coils=4, key=k))(
        jax.random.key(3)
    )
    out = eqx.filter_jit(trained)(sample.kspace[0], sample.mask[0], sample.maps[0])
    assert np.isfinite(np.asarray(out)).all()
    assert out.shape == (32, 32)


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path):
    """Another key, other settings or other initial weights: CheckpointError, not a silent resume."""
    model = _nets.RIM("indrnn", 8, 2, key=jax.random.key(0))
    one = dataclasses.replace(CFG, steps=1, checkpoint_every=1)
    _train.train(model, one, key=jax.random.key(1), folder=tmp_path, progress=False)
    for other in (
        dict(model=model, config=one, key=jax.random.key(2)),
        dict(model=model, config=dataclasses.replace(one, lr=2e-3), key=jax.random.key(1)),
        dict(
            model=_nets.RIM("indrnn", 8, 2, key=jax.random.key(5)),
            config=one,
            key=jax.random.key(1),
        ),
    ):
        with pytest.raises(jaxaccel.CheckpointError, match="belongs to a different run"):
            _train.train(
                other["model"], other["config"], key=other["key"], folder=tmp_path, progress=False
            )


def test_bad_training_config():
    for bad in (0, -1, "abc", 2.5, True):
        with pytest.raises(mri.MRIError, match="steps: expected an integer >= 1"):
            dataclasses.replace(CFG, steps=bad)
    with pytest.raises(mri.MRIError, match="batch: expected an integer >= 1"):
        dataclasses.replace(CFG, batch=0)
    for bad in (-1.0, 0.0, float("nan"), float("inf")):
        with pytest.raises(mri.MRIError, match="lr: expected a finite number > 0"):
            dataclasses.replace(CFG, lr=bad)
    with pytest.raises(mri.MRIError, match="config: expected a TrainConfig"):
        _train.train(
            _nets.RIM("indrnn", 8, 2, key=jax.random.key(0)), {"steps": 3}, key=jax.random.key(1)
        )
    assert issubclass(mri.MRIError, jaxaccel.Error) and issubclass(mri.MRIError, ValueError)
