"""quant_matmul: the Pallas kernel (interpreted on CPU, compiled on GPU) against the reference,
and the reference against an independent numpy dequantization."""

import dataclasses
import importlib

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from pallas_kernels import (
    E2M1_VALUES,
    NF4_VALUES,
    BlockSizes,
    ElementCode,
    dequantize_weight,
    quant_matmul,
    quant_matmul_reference,
)

# (rtol, atol as a fraction of max|reference|), keyed by the dtype of x. bfloat16 x makes the
# kernel round each dequantized weight tile to bfloat16 before the dot (tensor-core style).
TOLERANCES = {
    jnp.dtype(jnp.float32): (1e-5, 1e-5),
    jnp.dtype(jnp.bfloat16): (2e-2, 2e-2),
}
K, N = 256, 200  # N = 200: neither N nor N // 2 is a multiple of block_n below
SMALL_BLOCKS = BlockSizes(block_m=16, block_n=32, block_k=64)


@dataclasses.dataclass(frozen=True)
class Case:
    code: ElementCode
    group: int | str  # group size along K, "channel" (gk = K) or "tensor" ([1, 1] scales)
    scale_dtype: str = "float32"  # or "e8m0" (uint8) or "fp8" (float8_e4m3fn)
    zero: bool = False
    neg: bool = False
    shared_cols: bool = False  # scales [K // group, 1]

    def __str__(self):
        extras = [self.scale_dtype] + [
            f for f in ("zero", "neg", "shared_cols") if getattr(self, f)
        ]
        return f"{self.code.value}-{self.group}-{'-'.join(extras)}"


CASES = [Case(code, group) for code in ElementCode for group in ("channel", "tensor", 32, 64, 128)]
CASES += [
    Case(ElementCode.E2M1, 32, scale_dtype="e8m0"),  # MXFP4
    Case(ElementCode.E2M1, 16, scale_dtype="fp8"),  # NVFP4 block scales
    Case(ElementCode.UINT8, 64, zero=True),
    Case(ElementCode.UINT4, "channel", zero=True),
    Case(ElementCode.UINT4, 32, zero=True),
    Case(ElementCode.E2M1, 32, neg=True),  # AFPQ
    Case(ElementCode.INT4, 64, shared_cols=True),
]


def make_weight(key, case: Case, k: int = K, n: int = N):
    """Random payload, scales and optional zero / scales_neg following the layout."""
    kp, ks, kz, kn = jax.random.split(key, 4)
    code = case.code
    if code.is_4bit:
        payload = jax.random.randint(kp, (k, n // 2), 0, 256).astype(jnp.uint8)
    elif code is ElementCode.INT8:
        payload = jax.random.randint(kp, (k, n), -128, 128).astype(jnp.int8)
    elif code is ElementCode.UINT8:
        payload = jax.random.randint(kp, (k, n), 0, 256).astype(jnp.uint8)
    else:
        payload = (4.0 * jax.random.normal(kp, (k, n))).astype(code.storage_dtype)
    groups = {"channel": 1, "tensor": 1}.get(case.group, None) or k // case.group
    cols = 1 if case.group == "tensor" or case.shared_cols else n
    shape = (groups, cols)
    if case.scale_dtype == "e8m0":
        scales = jax.random.randint(ks, shape, 120, 131).astype(jnp.uint8)
    elif case.scale_dtype == "fp8":
        scales = jax.random.uniform(ks, shape, minval=0.25, maxval=2.0).astype(jnp.float8_e4m3fn)
    else:
        scales = jax.random.uniform(ks, shape, minval=0.01, maxval=0.1)
    zmax = 15.0 if code.bits == 4 else 255.0
    zero = jax.random.uniform(kz, shape, maxval=zmax) if case.zero else None
    neg = jax.random.uniform(kn, shape, minval=0.01, maxval=0.1) if case.neg else None
    return payload, scales, zero, neg


def numpy_dequantize(payload, scales, code, zero=None, scales_neg=None):
    """Independent dequantization in numpy float32 (tables, not the jnp decoders)."""
    p = np.asarray(payload)
    if code.is_4bit:
        codes = np.concatenate([p & 0x0F, p >> 4], axis=1)
    else:
        codes = p
    if code is ElementCode.INT4:
        v = np.where(codes >= 8, codes.astype(np.int16) - 16, codes).astype(np.float32)
    elif code is ElementCode.NF4:
        v = NF4_VALUES[codes]
    elif code is ElementCode.E2M1:
        v = E2M1_VALUES[codes]
    else:  # int8 / uint8 / uint4 / fp8 (ml_dtypes does the fp8 conversion)
        v = codes.astype(np.float32)
    s = np.asarray(scales)
    if s.dtype == np.uint8:
        s = np.ldexp(np.float32(1.0), s.astype(np.int32) - 127).astype(np.float32)
    s = s.astype(np.float32)
    k, n = v.shape
    gk = k // s.shape[0]

    def full(a):
        return np.broadcast_to(np.repeat(np.asarray(a, np.float32), gk, axis=0), (k, n))

    if zero is not None:
        v = v - full(zero)
    if scales_neg is None:
        return v * full(s)
    return np.where(v < 0, v * full(scales_neg), v * full(s)).astype(np.float32)


def assert_close(out, ref, dtype):
    rtol, atol = TOLERANCES[jnp.dtype(dtype)]
    ref = np.asarray(ref, np.float32)
    scale = max(float(np.max(np.abs(ref))), 1e-30)
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=rtol, atol=atol * scale)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_reference_matches_numpy(getkey, case):
    payload, scales, zero, neg = make_weight(getkey(), case)
    w = numpy_dequantize(payload, scales, case.code, zero, neg)
    np.testing.assert_allclose(
        dequantize_weight(payload, scales, code=case.code, zero=zero, scales_neg=neg),
        w,
        rtol=1e-6,
        atol=1e-6 * float(np.max(np.abs(w))),
    )
    x = jax.random.normal(getkey(), (3, K))
    out = quant_matmul_reference(x, payload, scales, code=case.code, zero=zero, scales_neg=neg)
    assert out.dtype == jnp.float32 and out.shape == (3, N)
    assert_close(out, np.asarray(x, np.float64) @ w.astype(np.float64), jnp.float32)


class TestQuantMatmulInterpret:
    """The kernel under Pallas' interpreter; the compiled twin below reruns every test."""

    BACKEND = "interpret"

    @pytest.mark.parametrize(
        "case, m", [(c, (1, 3, 8)[i % 3]) for i, c in enumerate(CASES)], ids=str
    )
    def test_matches_reference(self, getkey, case, m):
        payload, scales, zero, neg = make_weight(getkey(), case)
        x = jax.random.normal(getkey(), (m, K))
        kw = dict(code=case.code, zero=zero, scales_neg=neg)
        out = quant_matmul(x, payload, scales, backend=self.BACKEND, block_sizes=SMALL_BLOCKS, **kw)
        ref = quant_matmul_reference(x, payload, scales, **kw)
        assert out.shape == (m, N) and out.dtype == x.dtype
        assert_close(out, ref, x.dtype)

    @pytest.mark.parametrize(
        "case",
        [
            Case(ElementCode.INT8, 64),
            Case(ElementCode.INT4, 32),
            Case(ElementCode.E2M1, 32, scale_dtype="e8m0"),
            Case(ElementCode.NF4, "channel"),
        ],
        ids=str,
    )
    def test_bfloat16(self, getkey, case):
        payload, scales, _, _ = make_weight(getkey(), case)
        x = jax.random.normal(getkey(), (8, K)).astype(jnp.bfloat16)
        out = quant_matmul(
            x, payload, scales, code=case.code, backend=self.BACKEND, block_sizes=SMALL_BLOCKS
        )
        assert out.dtype == jnp.bfloat16
        ref = quant_matmul_reference(x, payload, scales, code=case.code)
        assert ref.dtype == jnp.bfloat16
        assert_close(out, ref, jnp.bfloat16)
        out32 = quant_matmul(
            x, payload, scales, code=case.code, backend=self.BACKEND, out_dtype=jnp.float32
        )
        assert out32.dtype == jnp.float32
        assert_close(out32, ref, jnp.bfloat16)

    @pytest.mark.parametrize(
        "block_sizes",
        [
            None,
            BlockSizes(block_m=2, block_n=24, block_k=96),
            BlockSizes(block_m=8, block_n=64, block_k=16),
        ],
        ids=["default", "odd", "k16"],
    )
    def test_block_sizes(self, getkey, block_sizes):
        case = Case(ElementCode.INT4, 32)
        payload, scales, _, _ = make_weight(getkey(), case)
        x = jax.random.normal(getkey(), (5, K))
        out = quant_matmul(
            x, payload, scales, code=case.code, backend=self.BACKEND, block_sizes=block_sizes
        )
        assert_close(out, quant_matmul_reference(x, payload, scales, code=case.code), x.dtype)

    def test_vmap(self, getkey):
        case = Case(ElementCode.E2M1, 32, scale_dtype="e8m0")
        payload, scales, _, _ = make_weight(getkey(), case)
        xs = jax.random.normal(getkey(), (3, 2, K))
        for backend in ("auto", "xla", self.BACKEND):
            f = jax.vmap(
                lambda x, b=backend: quant_matmul(x, payload, scales, code=case.code, backend=b)
            )
            out = f(xs)
            for b in range(xs.shape[0]):
                ref = quant_matmul_reference(xs[b], payload, scales, code=case.code)
                assert_close(out[b], ref, jnp.float32)

    def test_grad_through_kernel(self, getkey):
        # The kernel path's custom_jvp differentiates the reference: x and scales both get grads.
        case = Case(ElementCode.UINT4, 64, zero=True)
        payload, scales, zero, _ = make_weight(getkey(), case)
        x = jax.random.normal(getkey(), (3, K))
        g = jax.random.normal(getkey(), (3, N))

        def loss(x, scales, backend):
            out = quant_matmul(x, payload, scales, code=case.code, zero=zero, backend=backend)
            return jnp.sum(out * g)

        gx, gs = jax.grad(loss, argnums=(0, 1))(x, scales, self.BACKEND)
        rx, rs = jax.grad(loss, argnums=(0, 1))(x, scales, "xla")
        assert_close(gx, rx, jnp.float32)
        assert_close(gs, rs, jnp.float32)

    def test_forward_mode(self, getkey):
        case = Case(ElementCode.E2M1, 32, neg=True)
        payload, scales, _, neg = make_weight(getkey(), case)
        x, dx = jax.random.normal(getkey(), (2, 3, K))
        ds = jax.random.normal(getkey(), scales.shape)

        def f(x, scales, backend):
            return quant_matmul(x, payload, scales, code=case.code, scales_neg=neg, backend=backend)

        out, tangent = jax.jvp(lambda x, s: f(x, s, self.BACKEND), (x, scales), (dx, ds))
        ref, ref_tangent = jax.jvp(lambda x, s: f(x, s, "xla"), (x, scales), (dx, ds))
        assert_close(out, ref, jnp.float32)
        assert_close(tangent, ref_tangent, jnp.float32)


@pytest.mark.skipif(jax.default_backend() == "cpu", reason="compiled Pallas needs a GPU/TPU")
class TestQuantMatmulCompiled(TestQuantMatmulInterpret):
    BACKEND = "pallas"


@pytest.mark.parametrize("backend", ["xla", "auto"])
def test_grad_matches_dense(getkey, backend):
    case = Case(ElementCode.INT4, 32)
    payload, scales, _, _ = make_weight(getkey(), case)
    x = jax.random.normal(getkey(), (4, K))
    g = jax.random.normal(getkey(), (4, N))
    w = jnp.asarray(numpy_dequantize(payload, scales, case.code))
    gx = jax.grad(
        lambda x: jnp.sum(quant_matmul(x, payload, scales, code=case.code, backend=backend) * g)
    )(x)
    dense = jax.grad(lambda x: jnp.sum(jnp.dot(x, w, precision="highest") * g))(x)
    assert_close(gx, dense, jnp.float32)


def test_pallas_backend_on_cpu_raises():
    if jax.default_backend() != "cpu":
        pytest.skip("CPU-only behaviour")
    case = Case(ElementCode.INT8, "channel")
    payload, scales, _, _ = make_weight(jax.random.key(0), case, k=32, n=16)
    with pytest.raises(ValueError, match="backend='pallas'"):
        quant_matmul(jnp.ones((1, 32)), payload, scales, code=case.code, backend="pallas")


def _bad_inputs():
    code = ElementCode.INT4
    x = jnp.ones((2, 64))
    p = jnp.zeros((64, 8), jnp.uint8)
    s = jnp.ones((2, 16))
    return [
        ("x", dict(x=jnp.ones((2, 32)))),  # K mismatch
        ("x", dict(x=jnp.ones((2, 64), jnp.int32))),
        ("x", dict(x=jnp.ones((64,)))),
        ("payload", dict(p=jnp.zeros((64, 8), jnp.int8))),
        ("payload", dict(p=jnp.zeros((64,), jnp.uint8))),
        ("scales", dict(s=jnp.ones((3, 16)))),  # 3 does not divide K = 64
        ("scales", dict(s=jnp.ones((2, 8)))),  # neither 1 nor N = 16 columns
        ("scales", dict(s=jnp.ones((2, 16), jnp.int32))),
        ("zero", dict(zero=jnp.ones((1, 16)))),
        ("scales_neg", dict(scales_neg=jnp.ones((2, 16), jnp.int32))),
        ("code", dict(code="int4")),
        ("backend", dict(backend="cuda")),
        ("block_sizes", dict(block_sizes=(16, 16, 16))),
        ("out_dtype", dict(out_dtype=jnp.int32)),
    ], (x, p, s, code)


@pytest.mark.parametrize("index", range(len(_bad_inputs()[0])))
def test_bad_inputs_raise(index):
    cases, (x, p, s, code) = _bad_inputs()
    name, change = cases[index]
    kw = dict(x=x, p=p, s=s, code=code)
    kw.update(change)
    x, p, s = kw.pop("x"), kw.pop("p"), kw.pop("s")
    with pytest.raises(ValueError, match=name):
        quant_matmul(x, p, s, **kw)


def test_dequantize_weight_bad_inputs():
    with pytest.raises(ValueError, match="scales"):
        dequantize_weight(jnp.zeros((64, 8), jnp.int8), jnp.ones((5, 8)), code=ElementCode.INT8)
    with pytest.raises(ValueError, match="block_k"):
        BlockSizes(block_m=16, block_n=16, block_k=0)


def test_fp8_payload_is_exact_on_the_grid():
    # Sanity check of the numpy side: every finite e4m3 value decodes identically.
    codes = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).reshape(16, 16)
    codes = np.where(np.isnan(codes.astype(np.float32)), 0, codes).astype(ml_dtypes.float8_e4m3fn)
    w = dequantize_weight(jnp.asarray(codes), jnp.ones((1, 1)), code=ElementCode.FP8_E4M3)
    np.testing.assert_array_equal(w, codes.astype(np.float32))


@pytest.mark.parametrize(
    "case",
    [
        Case(ElementCode.INT8, "channel"),
        Case(ElementCode.FP8_E4M3, 128),
        Case(ElementCode.INT4, 32),
        Case(ElementCode.UINT4, 64, zero=True),
        Case(ElementCode.NF4, 128),
        Case(ElementCode.E2M1, 32, scale_dtype="e8m0"),
        Case(ElementCode.E2M1, 16, scale_dtype="fp8", neg=True),
    ],
    ids=str,
)
@pytest.mark.parametrize("x_dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_compiled_kernel_lowers_for_triton(case, x_dtype):
    # Without a GPU, at least check that the compiled kernel lowers to a Triton call for CUDA
    # (the Pallas -> Triton IR step; Triton's own compilation happens on the GPU machine).
    qm = importlib.import_module("pallas_kernels.quant_matmul")  # the module, not the function
    payload, scales, zero, neg = make_weight(jax.random.key(0), case)
    out_dtype = jnp.dtype(x_dtype)
    plan = qm._plan((8, K), payload.shape, scales.shape[0], case.code, None, True, out_dtype)
    assert plan is not None
    lowered = (
        jax.jit(lambda x, p, s, z, n: qm._kernel_matmul(plan, x, p, s, z, n))
        .trace(jax.ShapeDtypeStruct((8, K), x_dtype), payload, scales, zero, neg)
        .lower(lowering_platforms=("cuda",))
    )
    assert "xla.gpu.triton" in lowered.as_text()
