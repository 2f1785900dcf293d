"""Tests for jaxaccel._smooth (SmoothQuant factors and static activation-scale folding)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaccel._smooth import apply_smoothing, fold_act_scale, smoothquant_factors, static_act_scale


def outlier_layer(getkey, t=256, k=128, n=64):
    """Activations with a few huge outlier channels (as in LLMs) and a well-behaved weight."""
    x = np.asarray(jax.random.normal(getkey(), (t, k)))
    x = x * np.exp(0.5 * np.asarray(jax.random.normal(getkey(), (k,))))[None, :]
    outliers = np.asarray(jax.random.choice(getkey(), k, (4,), replace=False))
    x[:, outliers] *= 60.0
    w = np.asarray(jax.random.normal(getkey(), (k, n))) * 0.05
    return x.astype(np.float32), w.astype(np.float32)


def numpy_factors(a, w, alpha, eps=1e-5):
    a = np.abs(a.astype(np.float64))
    wmax = np.maximum(np.abs(w.astype(np.float64)).max(axis=1), eps)
    s = a**alpha / wmax ** (1.0 - alpha)
    s = np.where(a > 0, s, 1.0)
    return np.maximum(s, eps)


def w8a8_matmul(x, w):
    """Simulated W8A8: per-token symmetric int8 activations, per-output-channel int8 weight."""
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    sx = np.maximum(np.abs(x).max(axis=1, keepdims=True), 1e-12) / 127.0
    sw = np.maximum(np.abs(w).max(axis=0, keepdims=True), 1e-12) / 127.0
    xq = np.clip(np.round(x / sx), -127, 127)
    wq = np.clip(np.round(w / sw), -127, 127)
    return (xq @ wq) * sx * sw


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 0.85, 1.0])
def test_factors_match_numpy_formula(getkey, alpha):
    x, w = outlier_layer(getkey)
    a = np.abs(x).max(axis=0)
    s = smoothquant_factors(jnp.asarray(a), jnp.asarray(w), alpha=alpha)
    assert s.shape == a.shape and s.dtype == jnp.float32
    np.testing.assert_allclose(s, numpy_factors(a, w, alpha), rtol=2e-5)
    if alpha == 0.0:
        np.testing.assert_allclose(s, 1.0 / np.abs(w).max(axis=1), rtol=1e-6)
    if alpha == 1.0:
        np.testing.assert_allclose(s, a, rtol=1e-6)


def test_smoothing_is_exact_reparametrisation(getkey):
    x, w = outlier_layer(getkey)
    s = smoothquant_factors(jnp.asarray(np.abs(x).max(axis=0)), jnp.asarray(w), alpha=0.5)
    ws = apply_smoothing(jnp.asarray(w), s)
    np.testing.assert_allclose(ws, w * np.asarray(s)[:, None], rtol=1e-6)
    y = (jnp.asarray(x) / s[None, :]) @ ws
    np.testing.assert_allclose(y, x @ w, rtol=1e-4, atol=1e-4 * float(np.abs(x @ w).max()))


def test_smoothing_flattens_activation_and_helps_w8a8(getkey):
    x, w = outlier_layer(getkey)
    a = np.abs(x).max(axis=0)
    s = np.asarray(smoothquant_factors(jnp.asarray(a), jnp.asarray(w), alpha=0.5))
    xs, ws = x / s[None, :], np.asarray(apply_smoothing(jnp.asarray(w), jnp.asarray(s)))

    def flatness(v):
        m = np.abs(v).max(axis=0)
        return m.max() / np.median(m)

    assert flatness(xs) < 0.25 * flatness(x)

    y = x.astype(np.float64) @ w.astype(np.float64)
    err_plain = np.sum((w8a8_matmul(x, w) - y) ** 2)
    err_smooth = np.sum((w8a8_matmul(xs, ws) - y) ** 2)
    print(f"W8A8 error smoothed/plain = {err_smooth / err_plain:.3f}")
    assert err_smooth < 0.5 * err_plain


def test_degenerate_channels():
    a = jnp.array([0.0, 2.0, 3.0, jnp.inf])
    w = jnp.array([[1.0, -2.0], [0.0, 0.0], [0.5, 0.1], [1.0, 1.0]])
    s = smoothquant_factors(a, w, alpha=0.5)
    assert bool(jnp.all(jnp.isfinite(s))) and bool(jnp.all(s >= 1e-5))
    assert float(s[0]) == 1.0  # no activation -> no rescaling
    np.testing.assert_allclose(s[1], np.sqrt(2.0) / np.sqrt(1e-5), rtol=1e-5)  # zero weight row
    assert float(s[3]) == 1.0

    sc = static_act_scale(jnp.array([0.0, 127.0, 12.7]))
    np.testing.assert_allclose(sc, [1.0, 1.0, 0.1], rtol=1e-6)


def test_smoothing_bf16_weight_keeps_dtype(getkey):
    w = jax.random.normal(getkey(), (16, 8), jnp.bfloat16)
    s = smoothquant_factors(jnp.linspace(0.5, 4.0, 16), w)
    assert apply_smoothing(w, s).dtype == jnp.bfloat16
    assert fold_act_scale(w, static_act_scale(jnp.linspace(0.5, 4.0, 16))).dtype == jnp.bfloat16


@pytest.mark.parametrize("bits", [8, 4])
def test_static_act_scale_fold(getkey, bits):
    x, w = outlier_layer(getkey)
    a = np.abs(x).max(axis=0)
    scale = static_act_scale(jnp.asarray(a), bits=bits)
    qmax = 2 ** (bits - 1) - 1
    np.testing.assert_allclose(scale, a / qmax, rtol=1e-6)
    wf = fold_act_scale(jnp.asarray(w), scale)
    np.testing.assert_allclose(wf, w * np.asarray(scale)[:, None], rtol=1e-6)

    # Run time: integer activation times folded weight approximates the float layer.
    xq = jnp.round(jnp.asarray(x) / scale[None, :])
    assert float(jnp.max(jnp.abs(xq))) <= qmax
    y, yq = x.astype(np.float64) @ w.astype(np.float64), np.asarray(xq @ wf, np.float64)
    rel = np.linalg.norm(yq - y) / np.linalg.norm(y)
    # Per-channel rounding error is at most scale/2: bound the output error accordingly.
    bound = np.linalg.norm(0.5 * np.asarray(scale, np.float64)[None, :] @ np.abs(w)) * np.sqrt(
        x.shape[0]
    )
    assert np.linalg.norm(yq - y) <= bound
    assert rel < (0.02 if bits == 8 else 0.3)


def test_jit_and_validation():
    a, w = jnp.linspace(0.1, 2.0, 8), jnp.ones((8, 4))
    s = jax.jit(smoothquant_factors, static_argnames="alpha")(a, w, alpha=0.5)
    np.testing.assert_allclose(s, np.sqrt(np.asarray(a)), rtol=1e-6)
    with pytest.raises((ValueError, TypeError), match="act_absmax"):
        smoothquant_factors(jnp.ones(7), w)
    with pytest.raises(ValueError, match="alpha"):
        smoothquant_factors(a, w, alpha=1.5)
    with pytest.raises((ValueError, TypeError), match="s"):
        apply_smoothing(w, jnp.ones(7))
    with pytest.raises(ValueError, match="bits"):
        static_act_scale(a, bits=1)
