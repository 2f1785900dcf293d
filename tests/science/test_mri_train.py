"""science.mri data generation and training: phantoms and simulated batches, and a training run
interrupted and resumed from its checkpoint ends exactly as an uninterrupted one."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from science import mri
from science.mri import _data, _nets, _train

CFG = _train.TrainConfig(
    steps=4, batch=2, shape=(32, 32), n_coils=4, checkpoint_every=2, center_fractions=(0.12, 0.08)
)


def test_simulated_batches_are_deterministic_and_well_formed():
    bank = _data.MaskBank.build(jax.random.key(0), 32, (4, 8), (0.12, 0.08), per_acceleration=4)
    assert bank.masks.shape == (8, 1, 32)
    assert bank.masks[:4].mean() > bank.masks[4:].mean()  # 4x samples more than 8x
    assert (bank.masks[:, 0, 15:18] == 1).all()  # the centre band is always sampled
    f = jax.jit(lambda k: _data.simulate_batch(k, 3, (32, 32), bank, n_coils=4))
    a, b = f(jax.random.key(1)), f(jax.random.key(1))
    np.testing.assert_array_equal(a.kspace, b.kspace)
    assert a.kspace.shape == (3, 4, 32, 32) and a.target.shape == (3, 32, 32)
    assert 0 <= float(a.target.min()) and float(a.target.max()) <= 1
    # unsampled k-space is zero; the fully sampled data reproduce the target
    unsampled = np.broadcast_to(np.asarray(a.mask)[:, None], a.kspace.shape) == 0
    assert np.all(np.asarray(a.kspace)[unsampled] == 0)
    full = mri.fft2c(a.maps[0] * a.image[0][None])
    np.testing.assert_allclose(np.abs(mri.sense_combine(full, a.maps[0])), a.target[0], atol=1e-5)


def test_training_resumes_exactly(tmp_path):
    model = _nets.RIM("indrnn", 8, 2, key=jax.random.key(0))
    _, whole = _train.train(
        model, CFG, key=jax.random.key(1), folder=tmp_path / "a", progress=False
    )
    _train.train(model, CFG, key=jax.random.key(1), folder=tmp_path / "b", progress=False, until=2)
    trained, resumed = _train.train(
        model, CFG, key=jax.random.key(1), folder=tmp_path / "b", progress=False
    )
    np.testing.assert_allclose(resumed, whole, rtol=1e-5)
    assert len(whole) == 4 and all(np.isfinite(whole))
    out = trained(
        *(
            _data.simulate_batch(
                jax.random.key(3),
                1,
                (32, 32),
                _data.MaskBank.build(jax.random.key(0), 32, (4,), (0.12,), 2),
                n_coils=4,
            ).kspace[0],
        ),
        np.ones((1, 32), np.float32),
        mri.birdcage_maps(4, (32, 32)),
    )
    assert out.shape == (32, 32)


def test_bad_training_config():
    with pytest.raises(mri.MRIError, match="steps"):
        dataclasses.replace(CFG, steps=0)
    with pytest.raises(mri.MRIError, match="lr"):
        dataclasses.replace(CFG, lr=-1.0)
