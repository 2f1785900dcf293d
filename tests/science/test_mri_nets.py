"""science.mri networks: shapes, finite gradients, no retracing, and overfitting one example
(the loss falls well below the zero-filled image's)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from science import mri
from science.mri import _nets

from .test_mri_physics import _phantom

N = 32


@pytest.fixture(scope="module")
def sample():
    img = _phantom(N)
    mask = mri.random_mask((N, N), 4, 0.12, key=jax.random.key(0))
    return mri.simulate(img, mask, n_coils=4, key=jax.random.key(0))


def _models():
    key = jax.random.key(1)
    return {
        "rim-gru": _nets.RIM("gru", 8, 3, key=key),
        "rim-mgu": _nets.RIM("mgu", 8, 3, key=key),
        "rim-indrnn": _nets.RIM("indrnn", 8, 3, key=key),
        "unet": _nets.UNet((8, 16), key=key),
        "cirim-implicit": _nets.CIRIM("indrnn", 8, 2, 2, "implicit", key=key),
        "cirim-explicit": _nets.CIRIM("gru", 8, 2, 2, "explicit", key=key),
        "varnet": _nets.VarNet(2, (8, 16), (4, 8), key=key),
    }


def _l1(model, s):
    return jnp.mean(jnp.abs(jnp.abs(model(s.kspace, s.mask, s.maps)) - s.target))


MODELS = ["rim-gru", "rim-mgu", "rim-indrnn", "unet", "cirim-implicit", "cirim-explicit", "varnet"]


@pytest.mark.parametrize("name", MODELS)
def test_model_maps_kspace_to_an_image_with_finite_gradients_and_no_retrace(sample, name):
    traces = []

    @eqx.filter_jit
    def run(model, k, m, maps):
        traces.append(1)
        return model(k, m, maps)

    model = _models()[name]
    out = run(model, sample.kspace, sample.mask, sample.maps)
    assert out.shape == (N, N) and jnp.iscomplexobj(out)
    assert np.isfinite(np.asarray(out)).all()
    run(model, sample.kspace * 1.5, sample.mask, sample.maps)
    assert len(traces) == 1, "retraced"
    grads = eqx.filter_grad(_l1)(model, sample)
    leaves = jax.tree.leaves(eqx.filter(grads, eqx.is_array))
    assert leaves and all(np.isfinite(np.asarray(g)).all() for g in leaves)


def test_rim_returns_every_step_and_vmaps(sample):
    rim = _models()["rim-gru"]
    steps = rim(sample.kspace, sample.mask, sample.maps, all_steps=True)
    assert steps.shape == (3, N, N)
    batched = jax.vmap(lambda k: rim(k, sample.mask, sample.maps))(jnp.stack([sample.kspace] * 2))
    assert batched.shape == (2, N, N)


def _overfit(model, s, steps, lr=3e-3):
    opt = optax.adam(lr)
    state = opt.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, state):
        loss, g = eqx.filter_value_and_grad(_l1)(model, s)
        upd, state = opt.update(g, state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, upd), state, loss

    with jax.numpy_dtype_promotion("standard"):  # optax's step count is an int
        for _ in range(steps):
            model, state, loss = step(model, state)
    return float(_l1(model, s))


@pytest.mark.parametrize(
    "name,steps",
    [
        ("unet", 300),
        ("rim-indrnn", 150),
        pytest.param("cirim-explicit", 150, marks=pytest.mark.slow),
        pytest.param("varnet", 200, marks=pytest.mark.slow),
    ],
)
def test_overfits_one_example(sample, name, steps):
    zf = float(
        jnp.mean(
            jnp.abs(
                jnp.abs(mri.sense_adjoint(sample.kspace, sample.maps, sample.mask)) - sample.target
            )
        )
    )
    loss = _overfit(_models()[name], sample, steps)
    assert loss < 0.5 * zf, (loss, zf)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rim-gru", "rim-mgu"])
def test_gated_rims_overfit_one_example(sample, name):
    zf = float(
        jnp.mean(
            jnp.abs(
                jnp.abs(mri.sense_adjoint(sample.kspace, sample.maps, sample.mask)) - sample.target
            )
        )
    )
    assert _overfit(_models()[name], sample, 200) < 0.5 * zf
