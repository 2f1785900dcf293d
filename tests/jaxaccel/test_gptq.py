"""Tests for jaxaccel._gptq against round-to-nearest and an independent numpy reference."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaccel._gptq import gptq

# ---------------------------------------------------------------------------------------------
# Tiny test quantizers (format is the caller's business; gptq only sees fit/fake).
# Written against an array namespace so the same code drives jax (gptq) and numpy (reference).


def make_symmetric(bits: int, xp=jnp):
    """Symmetric int<bits> per-output-channel-per-group quantizer; params = scale[1, N]."""
    qmax = 2 ** (bits - 1) - 1

    def fit(rows):
        return xp.maximum(xp.max(xp.abs(rows), axis=0, keepdims=True) / qmax, 1e-8)

    def fake(rows, scale):
        return xp.clip(xp.round(rows / scale), -qmax, qmax) * scale

    return fit, fake


def make_asymmetric(bits: int, xp=jnp):
    """Asymmetric uint<bits> quantizer; params = {"scale": [1, N], "zero": [1, N]} (a pytree)."""
    qmax = 2**bits - 1

    def fit(rows):
        lo = xp.minimum(xp.min(rows, axis=0, keepdims=True), 0.0)
        hi = xp.maximum(xp.max(rows, axis=0, keepdims=True), 0.0)
        scale = xp.maximum((hi - lo) / qmax, 1e-8)
        return {"scale": scale, "zero": xp.round(-lo / scale)}

    def fake(rows, p):
        q = xp.clip(xp.round(rows / p["scale"]) + p["zero"], 0, qmax)
        return (q - p["zero"]) * p["scale"]

    return fit, fake


def rtn(w, group_size, fit, fake):
    k = w.shape[0]
    groups = [w[i : i + group_size] for i in range(0, k, group_size)]
    return jnp.concatenate([fake(gr, fit(gr)) for gr in groups], axis=0)


def calibration(getkey, k, n, t=256, dead=()):
    """Correlated, outlier-heavy calibration inputs x[T, K] and a weight w[K, N] (numpy f32)."""
    z = np.asarray(jax.random.normal(getkey(), (t, k)))
    mix = np.eye(k) + np.asarray(jax.random.normal(getkey(), (k, k))) * (0.6 / np.sqrt(k))
    x = z @ mix
    # A shared low-rank component: LLM activations are strongly correlated across channels.
    x += np.asarray(jax.random.normal(getkey(), (t, 8))) @ np.asarray(
        jax.random.normal(getkey(), (8, k))
    )
    x = x * np.exp(np.asarray(jax.random.normal(getkey(), (k,))))[None, :]  # channel spread
    x[:, : max(1, k // 32)] *= 25.0  # a few outlier channels
    for d in dead:
        x[:, d] = 0.0
    w = np.asarray(jax.random.normal(getkey(), (k, n))) * 0.1
    return x.astype(np.float32), w.astype(np.float32)


def out_err(x, w, wq):
    x64 = x.astype(np.float64)
    return float(np.sum((x64 @ (np.asarray(wq, np.float64) - w.astype(np.float64))) ** 2))


# ---------------------------------------------------------------------------------------------
# Independent reference: textbook, unblocked OBS updates with an explicit inverse Hessian.


def reference_gptq(w, h, group_size, fit, fake, act_order, damp=0.01):
    w = np.array(w, np.float64)
    h = np.array(h, np.float64)
    k = w.shape[0]
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[dead] = 0.0
    n_groups = k // group_size
    if act_order:
        params = [fit(w[i * group_size : (i + 1) * group_size]) for i in range(n_groups)]
        perm = np.argsort(-np.diag(h), kind="stable")
    else:
        params = [None] * n_groups
        perm = np.arange(k)
    w = w[perm]
    h = h[np.ix_(perm, perm)]
    h = h + damp * np.mean(np.diag(h)) * np.eye(k)
    h_inv = np.linalg.inv(h)
    for i in range(k):
        grp = perm[i] // group_size
        if not act_order and i % group_size == 0:
            params[grp] = fit(w[i : i + group_size])  # on the error-updated weights
        q = fake(w[i : i + 1], params[grp])[0]
        err = (w[i] - q) / h_inv[i, i]
        w[i + 1 :] -= np.outer(h_inv[i + 1 :, i], err)
        w[i] = q
        h_inv = h_inv - np.outer(h_inv[:, i], h_inv[i, :]) / h_inv[i, i]
    out = np.empty_like(w)
    out[perm] = w
    return out, jax.tree.map(lambda *ps: np.stack(ps), *params)


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("act_order", [True, False])
@pytest.mark.parametrize(
    "bits,group", [(4, 32), (3, 32), (4, None)], ids=["int4-g32", "int3-g32", "int4-perchan"]
)
def test_gptq_beats_rtn(getkey, bits, group, act_order):
    k, n = 128, 64
    x, w = calibration(getkey, k, n)
    group = group or k
    fit, fake = make_symmetric(bits)
    h = jnp.asarray(2.0 * x.T.astype(np.float64) @ x.astype(np.float64), jnp.float32)
    wq, params = gptq(jnp.asarray(w), h, group_size=group, fit=fit, fake=fake, act_order=act_order)
    e_gptq = out_err(x, w, wq)
    e_rtn = out_err(x, w, rtn(jnp.asarray(w), group, fit, fake))
    ratio = e_gptq / e_rtn
    print(f"int{bits} group={group} act_order={act_order}: GPTQ/RTN output error = {ratio:.3f}")
    assert ratio < 0.5
    assert params.shape == (k // group, 1, n)
    # Every row is on its group's grid: re-quantizing with the returned params is a no-op.
    for gi in range(k // group):
        rows = wq[gi * group : (gi + 1) * group]
        np.testing.assert_allclose(fake(rows, params[gi]), rows, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("block_size", [5, 24, 40, 64, 128])
def test_matches_textbook_reference_float64(getkey, block_size, act_order):
    k, n, g = 96, 32, 16
    x, w = calibration(getkey, k, n, dead=(7,))
    h = 2.0 * x.T.astype(np.float64) @ x.astype(np.float64)
    fit_np, fake_np = make_asymmetric(4, np)
    fit, fake = make_asymmetric(4)
    ref_q, ref_p = reference_gptq(w, h, g, fit_np, fake_np, act_order)
    with jax.enable_x64(True):
        wq, params = gptq(
            jnp.asarray(w, jnp.float64),
            jnp.asarray(h, jnp.float64),
            group_size=g,
            fit=fit,
            fake=fake,
            block_size=block_size,
            act_order=act_order,
        )
        wq, params = np.asarray(wq), jax.tree.map(np.asarray, params)
    assert wq.dtype == np.float64
    np.testing.assert_allclose(wq, ref_q, rtol=1e-9, atol=1e-12)
    assert set(params) == {"scale", "zero"}
    for key in params:
        assert params[key].shape == (k // g, 1, n)
        np.testing.assert_allclose(params[key], ref_p[key], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(wq[7], 0.0)  # dead input


@pytest.mark.parametrize("act_order", [False, True])
def test_float32_close_to_reference(getkey, act_order):
    k, n, g = 64, 48, 32
    x, w = calibration(getkey, k, n)
    h = 2.0 * x.T.astype(np.float64) @ x.astype(np.float64)
    ref_q, _ = reference_gptq(w, h, g, *make_symmetric(4, np), act_order)
    fit, fake = make_symmetric(4)
    wq, _ = gptq(
        jnp.asarray(w), jnp.asarray(h, jnp.float32), group_size=g, fit=fit, fake=fake,
        block_size=16, act_order=act_order,
    )  # fmt: skip
    wq = np.asarray(wq, np.float64)
    # float32 rounding may flip a handful of round-to-nearest decisions; nothing more.
    assert np.mean(np.isclose(wq, ref_q, rtol=1e-4, atol=1e-6)) > 0.99
    assert abs(out_err(x, w, wq) / out_err(x, w, ref_q) - 1.0) < 0.02


@pytest.mark.parametrize("act_order", [True, False])
@pytest.mark.parametrize("group", [16, 64])
def test_identity_hessian_is_rtn(getkey, act_order, group):
    k, n = 64, 32
    w = jax.random.normal(getkey(), (k, n))
    fit, fake = make_symmetric(4)
    wq, params = gptq(
        w, jnp.eye(k), group_size=group, fit=fit, fake=fake, block_size=24, act_order=act_order
    )
    np.testing.assert_allclose(wq, rtn(w, group, fit, fake), rtol=1e-6, atol=1e-7)
    expected = jnp.stack([fit(w[i : i + group]) for i in range(0, k, group)])
    np.testing.assert_allclose(params, expected, rtol=1e-6)


def test_jit_no_retrace_and_dtype(getkey):
    k, n, g = 64, 32, 32
    fit, fake = make_symmetric(4)

    @jax.jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def run(w, h):
        return gptq(w, h, group_size=g, fit=fit, fake=fake, block_size=32)

    for _ in range(2):
        x = jax.random.normal(getkey(), (128, k))
        w = jax.random.normal(getkey(), (k, n), jnp.bfloat16)
        wq, params = run(w, x.T @ x)
        assert wq.dtype == jnp.bfloat16 and wq.shape == (k, n)
        assert params.shape == (k // g, 1, n)
        assert bool(jnp.all(jnp.isfinite(wq)))


def test_argument_validation():
    fit, fake = make_symmetric(4)
    w = jnp.zeros((64, 8))
    with pytest.raises(ValueError, match="group_size"):
        gptq(w, jnp.eye(64), group_size=24, fit=fit, fake=fake)
    with pytest.raises(ValueError, match="block_size"):
        gptq(w, jnp.eye(64), group_size=32, fit=fit, fake=fake, block_size=0)
    with pytest.raises(ValueError, match="damp"):
        gptq(w, jnp.eye(64), group_size=32, fit=fit, fake=fake, damp=-1.0)
    # Shape mismatches: under pytest's jaxtyping hook the annotation check may fire first.
    with pytest.raises((ValueError, TypeError), match="hessian"):
        gptq(w, jnp.eye(32), group_size=32, fit=fit, fake=fake)
    with pytest.raises((ValueError, TypeError), match="w"):
        gptq(jnp.zeros((64,)), jnp.eye(64), group_size=32, fit=fit, fake=fake)
