"""int8_matmul: kernel (interpreted on CPU, compiled on GPU) == reference, bit for bit; the
reference against a numpy int64 matmul."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import BlockSizes, int8_matmul, int8_matmul_reference

SMALL_BLOCKS = BlockSizes(block_m=16, block_n=32, block_k=32)


def make_operands(key, m, k, n, *, per_tensor=False):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    xq = jax.random.randint(k1, (m, k), -128, 128).astype(jnp.int8)
    wq = jax.random.randint(k2, (k, n), -128, 128).astype(jnp.int8)
    xs_shape, ws_shape = ((1, 1), (1, 1)) if per_tensor else ((m, 1), (1, n))
    x_scale = jax.random.uniform(k3, xs_shape, minval=1e-3, maxval=1e-2)
    w_scale = jax.random.uniform(k4, ws_shape, minval=1e-3, maxval=1e-2)
    return xq, wq, x_scale, w_scale


@pytest.mark.parametrize("m, k, n", [(1, 64, 100), (3, 200, 256), (8, 96, 40)])
def test_reference_matches_numpy(getkey, m, k, n):
    xq, wq, x_scale, w_scale = make_operands(getkey(), m, k, n)
    acc = np.asarray(xq, np.int64) @ np.asarray(wq, np.int64)
    expected = acc * np.asarray(x_scale, np.float64) * np.asarray(w_scale, np.float64)
    out = int8_matmul_reference(xq, wq, x_scale, w_scale)
    assert out.dtype == jnp.float32 and out.shape == (m, n)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6 * np.max(np.abs(expected)))


class TestInt8MatmulInterpret:
    """The kernel under Pallas' interpreter; the compiled twin below reruns every test."""

    BACKEND = "interpret"

    @pytest.mark.parametrize(
        "m, k, n, block_sizes",
        [
            (1, 64, 100, SMALL_BLOCKS),
            (3, 200, 256, SMALL_BLOCKS),
            (8, 96, 40, None),
            (5, 128, 72, BlockSizes(block_m=4, block_n=24, block_k=48)),
        ],
    )
    def test_matches_reference_exactly(self, getkey, m, k, n, block_sizes):
        xq, wq, x_scale, w_scale = make_operands(getkey(), m, k, n)
        out = int8_matmul(xq, wq, x_scale, w_scale, backend=self.BACKEND, block_sizes=block_sizes)
        np.testing.assert_array_equal(out, int8_matmul_reference(xq, wq, x_scale, w_scale))

    def test_per_tensor_scales_and_out_dtype(self, getkey):
        xq, wq, x_scale, w_scale = make_operands(getkey(), 3, 64, 48, per_tensor=True)
        kw = dict(out_dtype=jnp.bfloat16)
        out = int8_matmul(xq, wq, x_scale, w_scale, backend=self.BACKEND, **kw)
        assert out.dtype == jnp.bfloat16 and out.shape == (3, 48)
        np.testing.assert_array_equal(out, int8_matmul_reference(xq, wq, x_scale, w_scale, **kw))

    def test_vmap(self, getkey):
        _, wq, _, w_scale = make_operands(getkey(), 1, 64, 48)
        xq = jax.random.randint(getkey(), (3, 2, 64), -128, 128).astype(jnp.int8)
        x_scale = jax.random.uniform(getkey(), (3, 2, 1), minval=1e-3, maxval=1e-2)
        for backend in ("auto", "xla", self.BACKEND):
            out = jax.vmap(lambda x, s, b=backend: int8_matmul(x, wq, s, w_scale, backend=b))(
                xq, x_scale
            )
            for b in range(3):
                ref = int8_matmul_reference(xq[b], wq, x_scale[b], w_scale)
                np.testing.assert_array_equal(out[b], ref)

    def test_grad_of_scales(self, getkey):
        # The kernel's custom_jvp differentiates the reference (the int8 inputs get float0).
        xq, wq, x_scale, w_scale = make_operands(getkey(), 3, 64, 48)
        g = jax.random.normal(getkey(), (3, 48))

        def loss(xs, ws, backend):
            return jnp.sum(int8_matmul(xq, wq, xs, ws, backend=backend) * g)

        got = jax.grad(loss, argnums=(0, 1))(x_scale, w_scale, self.BACKEND)
        want = jax.grad(loss, argnums=(0, 1))(x_scale, w_scale, "xla")
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6)

    def test_forward_mode(self, getkey):
        xq, wq, x_scale, w_scale = make_operands(getkey(), 3, 64, 48)
        dxs = jax.random.normal(getkey(), x_scale.shape)

        def f(xs, backend):
            return int8_matmul(xq, wq, xs, w_scale, backend=backend)

        out, tangent = jax.jvp(lambda xs: f(xs, self.BACKEND), (x_scale,), (dxs,))
        ref, ref_tangent = jax.jvp(lambda xs: f(xs, "xla"), (x_scale,), (dxs,))
        np.testing.assert_array_equal(out, ref)
        np.testing.assert_allclose(tangent, ref_tangent, rtol=1e-6)


@pytest.mark.skipif(jax.default_backend() == "cpu", reason="compiled Pallas needs a GPU/TPU")
class TestInt8MatmulCompiled(TestInt8MatmulInterpret):
    BACKEND = "pallas"


def _bad(name):
    xq, wq, x_scale, w_scale = make_operands(jax.random.key(0), 2, 32, 16)
    kw = dict(xq=xq, wq=wq, x_scale=x_scale, w_scale=w_scale)
    change = {
        "xq": dict(xq=jnp.zeros((2, 32), jnp.int32)),
        "wq": dict(wq=jnp.zeros((16, 16), jnp.int8)),  # K mismatch
        "x_scale": dict(x_scale=jnp.ones((3, 1))),
        "w_scale": dict(w_scale=jnp.ones((16, 1))),
        "backend": dict(backend="tpu"),
        "out_dtype": dict(out_dtype=jnp.int8),
    }[name]
    kw.update(change)
    return kw


@pytest.mark.parametrize("name", ["xq", "wq", "x_scale", "w_scale", "backend", "out_dtype"])
def test_bad_inputs_raise(name):
    kw = _bad(name)
    args = [kw.pop(a) for a in ("xq", "wq", "x_scale", "w_scale")]
    with pytest.raises(ValueError, match=name):
        int8_matmul(*args, **kw)


def test_pallas_backend_on_cpu_raises():
    if jax.default_backend() != "cpu":
        pytest.skip("CPU-only behaviour")
    xq, wq, x_scale, w_scale = make_operands(jax.random.key(0), 2, 32, 16)
    with pytest.raises(ValueError, match="backend='pallas'"):
        int8_matmul(xq, wq, x_scale, w_scale, backend="pallas")


def test_compiled_kernel_lowers_for_triton():
    # Without a GPU, at least check the Pallas -> Triton IR lowering for CUDA.
    im = importlib.import_module("pallas_kernels.int8_matmul")  # the module, not the function
    plan = im._plan((8, 200, 72), None, True, jnp.dtype(jnp.float32))
    operands = make_operands(jax.random.key(0), 8, 200, 72)
    lowered = (
        jax.jit(lambda *a: im._kernel_matmul(plan, *a))
        .trace(*operands)
        .lower(lowering_platforms=("cuda",))
    )
    assert "xla.gpu.triton" in lowered.as_text()
