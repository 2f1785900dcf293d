"""flash_attention: the reference against an independent float64 numpy loop, and the Pallas kernel
(interpreted on CPU, compiled on GPU) against the reference, forward and gradients."""

import dataclasses
import importlib
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import (
    AttentionBlockSizes,
    flash_attention,
    flash_attention_backend,
    flash_attention_reference,
)

fa = importlib.import_module("pallas_kernels.flash_attention")  # the module, not the function

# (rtol, atol as a fraction of max|reference|), keyed by the dtype of q, k, v. bfloat16 inputs
# make the kernel round the softmax weights to bfloat16 before the weighted sum.
TOLERANCES = {
    jnp.dtype(jnp.float32): (1e-5, 1e-5),
    jnp.dtype(jnp.bfloat16): (2e-2, 2e-2),
}
# block_q = 5 splits the G query heads of a position; block_kv = 16 pads S = 37 (prime) to 48
# and is shortened to a divisor elsewhere (10 for S = 50, 12 for S = 24; see test_key_tiling).
SMALL_BLOCKS = AttentionBlockSizes(block_q=5, block_kv=16)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    b: int
    hq: int
    hkv: int
    t: int
    s: int
    d: int = 16
    q_slots: tuple | None = None  # [B][T]; default arange(T) in every row (causal prefill)
    kv_start: tuple | None = None
    kv_len: tuple | None = None

    def __str__(self):
        return self.name


CASES = [
    Case("prefill", b=2, hq=2, hkv=2, t=37, s=37, d=32),
    Case("gqa_4_2", b=2, hq=4, hkv=2, t=20, s=20),
    Case("gqa_9_3", b=1, hq=9, hkv=3, t=24, s=24, d=64),
    # Left padding: row 1's first 5 slots and row 2's first 11 are padding; their queries see
    # nothing (0) until their own slot reaches kv_start.
    Case("left_pad", b=3, hq=4, hkv=2, t=16, s=16, kv_start=(0, 5, 11)),
    # A prefill chunk of 6 tokens written at the end of each row's filled cache of 50 slots.
    Case(
        "cache_len",
        b=3,
        hq=4,
        hkv=2,
        t=6,
        s=50,
        q_slots=tuple(tuple(range(n - 6, n)) for n in (20, 50, 33)),
        kv_len=(20, 50, 33),
        kv_start=(0, 2, 0),
    ),
    # One token per row at different slots of a 96-slot cache (row 3: kv_len below its slot).
    Case(
        "decode",
        b=4,
        hq=9,
        hkv=3,
        t=1,
        s=96,
        q_slots=((5,), (50,), (95,), (70,)),
        kv_len=(6, 51, 96, 40),
        kv_start=(0, 3, 0, 1),
    ),
    # Every key masked: kv_len = 0, kv_start past the query, kv_start >= kv_len.
    Case(
        "fully_masked",
        b=3,
        hq=2,
        hkv=1,
        t=2,
        s=24,
        q_slots=((3, 4), (3, 20), (10, 11)),
        kv_len=(0, 24, 8),
        kv_start=(0, 10, 9),
    ),
]
CASE = {c.name: c for c in CASES}


def make_inputs(key, case: Case, dtype=jnp.float32):
    kq, kk, kv = jax.random.split(key, 3)
    q = jax.random.normal(kq, (case.b, case.hq, case.t, case.d)).astype(dtype)
    k = jax.random.normal(kk, (case.b, case.hkv, case.s, case.d)).astype(dtype)
    v = jax.random.normal(kv, (case.b, case.hkv, case.s, case.d)).astype(dtype)
    if case.q_slots is None:
        q_slots = jnp.broadcast_to(jnp.arange(case.t, dtype=jnp.int32), (case.b, case.t))
    else:
        q_slots = jnp.array(case.q_slots, jnp.int32)
    kw = dict(q_slots=q_slots)
    for name in ("kv_start", "kv_len"):
        if getattr(case, name) is not None:
            kw[name] = jnp.array(getattr(case, name), jnp.int32)
    return (q, k, v), kw


def numpy_attention(q, k, v, *, q_slots, kv_start=None, kv_len=None, scale=None):
    """Independent float64 attention: explicit loops over rows, heads and queries."""
    q, k, v = (np.asarray(jnp.asarray(a, jnp.float32), np.float64) for a in (q, k, v))
    b, hq, t, d = q.shape
    hkv, s = k.shape[1:3]
    g = hq // hkv
    q_slots = np.asarray(q_slots)
    kv_start = np.zeros(b, int) if kv_start is None else np.asarray(kv_start)
    kv_len = np.full(b, s) if kv_len is None else np.asarray(kv_len)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    out = np.zeros_like(q)
    for i in range(b):
        for j in range(t):
            seen = [x for x in range(s) if kv_start[i] <= x < kv_len[i] and x <= q_slots[i, j]]
            if not seen:
                continue  # no visible key: 0
            for h in range(hq):
                logits = scale * (k[i, h // g, seen] @ q[i, h, j])
                w = np.exp(logits - logits.max())
                out[i, h, j] = (w / w.sum()) @ v[i, h // g, seen]
    return out


def assert_close(out, ref, dtype):
    rtol, atol = TOLERANCES[jnp.dtype(dtype)]
    ref = np.asarray(jnp.asarray(ref, jnp.float32))
    scale = max(float(np.max(np.abs(ref))), 1e-30)
    out = np.asarray(jnp.asarray(out, jnp.float32))
    np.testing.assert_allclose(out, ref, rtol=rtol, atol=atol * scale)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_reference_matches_numpy(getkey, case):
    args, kw = make_inputs(getkey(), case)
    out = flash_attention_reference(*args, **kw)
    assert out.shape == args[0].shape and out.dtype == jnp.float32
    assert_close(out, numpy_attention(*args, **kw), jnp.float32)


def test_reference_masked_rows_are_zero(getkey):
    args, kw = make_inputs(getkey(), CASE["fully_masked"])
    out = np.asarray(flash_attention_reference(*args, **kw))
    # row 0: kv_len = 0; row 1, t = 0: slot 3 < kv_start 10; row 2: kv_start 9 >= kv_len 8.
    for i, j in [(0, 0), (0, 1), (1, 0), (2, 0), (2, 1)]:
        np.testing.assert_array_equal(out[i, :, j], 0.0)
    assert np.all(np.abs(out[1, :, 1]) > 0)  # slot 20 sees keys 10..20


def test_reference_scale(getkey):
    args, kw = make_inputs(getkey(), CASE["gqa_4_2"])
    out = flash_attention_reference(*args, **kw, scale=0.5)
    assert_close(out, numpy_attention(*args, **kw, scale=0.5), jnp.float32)


class TestFlashAttentionInterpret:
    """The kernel under Pallas' interpreter; the compiled twin below reruns every test."""

    BACKEND = "interpret"

    @pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
    @pytest.mark.parametrize("case", CASES, ids=str)
    def test_matches_reference(self, getkey, case, dtype):
        args, kw = make_inputs(getkey(), case, dtype)
        out = flash_attention(*args, **kw, backend=self.BACKEND, block_sizes=SMALL_BLOCKS)
        ref = flash_attention_reference(*args, **kw)
        assert out.shape == args[0].shape and out.dtype == jnp.dtype(dtype)
        assert_close(out, ref, dtype)

    @pytest.mark.parametrize(
        "block_sizes",
        [
            None,
            AttentionBlockSizes(block_q=3, block_kv=7),
            AttentionBlockSizes(block_q=16, block_kv=32),
            AttentionBlockSizes(block_q=1000, block_kv=1000),
        ],
        ids=["default", "odd", "divides", "whole"],
    )
    @pytest.mark.parametrize("name", ["cache_len", "decode"])
    def test_block_sizes(self, getkey, block_sizes, name):
        args, kw = make_inputs(getkey(), CASE[name])
        out = flash_attention(*args, **kw, backend=self.BACKEND, block_sizes=block_sizes)
        assert_close(out, flash_attention_reference(*args, **kw), jnp.float32)

    def test_mixed_dtypes(self, getkey):
        # float32 activations against a bfloat16 cache: output in q's dtype.
        (q, k, v), kw = make_inputs(getkey(), CASE["decode"])
        k, v = k.astype(jnp.bfloat16), v.astype(jnp.bfloat16)
        out = flash_attention(q, k, v, **kw, backend=self.BACKEND)
        assert out.dtype == jnp.float32
        assert_close(out, flash_attention_reference(q, k, v, **kw), jnp.bfloat16)

    def test_vmap(self, getkey):
        # An extra leading axis (e.g. layers) over every argument.
        case = CASE["decode"]
        per = [make_inputs(getkey(), case) for _ in range(3)]
        args = [jnp.stack([p[0][i] for p in per]) for i in range(3)]
        kw = {n: jnp.stack([p[1][n] for p in per]) for n in per[0][1]}

        def f(q, k, v, kw, backend):
            return flash_attention(q, k, v, **kw, backend=backend, block_sizes=SMALL_BLOCKS)

        out = jax.vmap(lambda q, k, v, kw: f(q, k, v, kw, self.BACKEND))(*args, kw)
        for i, ((q, k, v), kwi) in enumerate(per):
            assert_close(out[i], flash_attention_reference(q, k, v, **kwi), jnp.float32)

    @pytest.mark.parametrize("name", ["gqa_9_3", "left_pad", "fully_masked"])
    def test_grad(self, getkey, name):
        # The kernel path's custom_jvp differentiates the reference; no NaN from masked rows.
        args, kw = make_inputs(getkey(), CASE[name])
        cot = jax.random.normal(getkey(), args[0].shape)

        def loss(q, k, v, backend):
            out = flash_attention(q, k, v, **kw, backend=backend, block_sizes=SMALL_BLOCKS)
            return jnp.sum(out * cot)

        grads = jax.grad(loss, argnums=(0, 1, 2))(*args, self.BACKEND)
        ref = jax.grad(
            lambda q, k, v: jnp.sum(flash_attention_reference(q, k, v, **kw) * cot), (0, 1, 2)
        )(*args)
        for g, r in zip(grads, ref, strict=True):
            assert np.all(np.isfinite(np.asarray(r)))
            assert_close(g, r, jnp.float32)

    def test_forward_mode(self, getkey):
        args, kw = make_inputs(getkey(), CASE["cache_len"])
        tangents = tuple(jax.random.normal(getkey(), a.shape) for a in args)

        def f(backend):
            return lambda q, k, v: flash_attention(q, k, v, **kw, backend=backend)

        out, tan = jax.jvp(f(self.BACKEND), args, tangents)
        ref, ref_tan = jax.jvp(f("xla"), args, tangents)
        assert_close(out, ref, jnp.float32)
        assert_close(tan, ref_tan, jnp.float32)

    def test_no_retrace(self, getkey):
        args, kw = make_inputs(getkey(), CASE["decode"])
        backend = self.BACKEND

        @jax.jit
        @eqx.debug.assert_max_traces(max_traces=1)
        def step(q, k, v, q_slots, kv_start, kv_len):
            return flash_attention(
                q, k, v, q_slots=q_slots, kv_start=kv_start, kv_len=kv_len, backend=backend
            )

        step(*args, kw["q_slots"], kw["kv_start"], kw["kv_len"])
        # New values, same shapes: the next decode step must reuse the compiled program.
        q2, k2, v2 = (a + 1.0 for a in args)
        out = step(q2, k2, v2, kw["q_slots"] - 1, kw["kv_start"], kw["kv_len"] - 1)
        ref = flash_attention_reference(
            q2, k2, v2, q_slots=kw["q_slots"] - 1, kv_start=kw["kv_start"], kv_len=kw["kv_len"] - 1
        )
        assert_close(out, ref, jnp.float32)


@pytest.mark.skipif(jax.default_backend() == "cpu", reason="compiled Pallas needs a GPU/TPU")
class TestFlashAttentionCompiled(TestFlashAttentionInterpret):
    BACKEND = "pallas"


@pytest.mark.parametrize("name", ["gqa_9_3", "cache_len", "decode", "fully_masked"])
def test_per_head_layout_interpreted(getkey, name):
    # The compiled (GPU) tile layout, one (row, key/value head) per program with 16-row tiles,
    # run by the interpreter: on CPU "interpret" uses the batched layout instead.
    case = CASE[name]
    args, kw = make_inputs(getkey(), case)
    kv_start = kw.get("kv_start", jnp.zeros(case.b, jnp.int32))
    kv_len = kw.get("kv_len", jnp.full(case.b, case.s, jnp.int32))
    plan = fa._plan(
        case.t * (case.hq // case.hkv),
        case.s,
        1.0 / math.sqrt(case.d),
        AttentionBlockSizes(block_q=16, block_kv=16),
        False,
        batched=False,
    )
    out = fa._kernel_attention(plan, *args, kw["q_slots"], kv_start, kv_len)
    assert_close(out, flash_attention_reference(*args, **kw), jnp.float32)


@pytest.mark.parametrize("t", [1, 32])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_compiled_kernel_lowers_for_triton(t, dtype):
    # Without a GPU, at least check that the compiled kernel lowers to a Triton call for CUDA
    # (the Pallas -> Triton IR step; Triton's own compilation happens on the GPU machine).
    b, hq, hkv, s, d = 2, 9, 3, 128, 64
    plan = fa._plan(t * 3, s, 0.125, None, True)
    assert not plan.batched and plan.block_q >= 16 and plan.block_kv >= 16
    spec = jax.ShapeDtypeStruct
    lowered = (
        jax.jit(lambda *a: fa._kernel_attention(plan, *a))
        .trace(
            spec((b, hq, t, d), dtype),
            spec((b, hkv, s, d), dtype),
            spec((b, hkv, s, d), dtype),
            spec((b, t), jnp.int32),
            spec((b,), jnp.int32),
            spec((b,), jnp.int32),
        )
        .lower(lowering_platforms=("cuda",))
    )
    assert "xla.gpu.triton" in lowered.as_text()


def test_auto_backend():
    for t in (1, 7, 512):
        chosen = flash_attention_backend(t)
        if jax.default_backend() == "cpu":
            assert chosen == fa._cpu_auto(t)
        assert flash_attention_backend(t, backend="xla") == "xla"
    args, kw = make_inputs(jax.random.key(0), CASE["decode"])
    assert_close(flash_attention(*args, **kw), flash_attention_reference(*args, **kw), jnp.float32)


def test_pallas_backend_on_cpu_raises():
    if jax.default_backend() != "cpu":
        pytest.skip("CPU-only behaviour")
    args, kw = make_inputs(jax.random.key(0), CASE["decode"])
    with pytest.raises(ValueError, match="backend='pallas'"):
        flash_attention(*args, **kw, backend="pallas")


def _bad_inputs():
    q = jnp.ones((2, 4, 3, 16))
    k = jnp.ones((2, 2, 8, 16))
    q_slots = jnp.zeros((2, 3), jnp.int32)
    return [
        (
            "Hq=4 heads, which must be a multiple of k's Hkv=3",
            dict(k=jnp.ones((2, 3, 8, 16)), v=jnp.ones((2, 3, 8, 16))),
        ),
        ("head dim", dict(k=jnp.ones((2, 2, 8, 8)))),  # D mismatch
        ("k has batch", dict(k=jnp.ones((3, 2, 8, 16)))),
        ("v must have the shape", dict(v=jnp.ones((2, 2, 7, 16)))),
        ("q must be 4-D", dict(q=jnp.ones((4, 3, 16)))),
        ("q must be float", dict(q=jnp.ones((2, 4, 3, 16), jnp.int32))),
        ("q_slots", dict(q_slots=jnp.zeros((2, 4), jnp.int32))),
        ("q_slots", dict(q_slots=jnp.zeros((2, 3)))),
        ("kv_start", dict(kv_start=jnp.zeros((3,), jnp.int32))),
        ("kv_len", dict(kv_len=jnp.full((2,), 4.0))),
        ("kv_len", dict(kv_len=4)),
        ("scale", dict(scale=-1.0)),
        ("backend", dict(backend="cuda")),
        ("block_sizes", dict(block_sizes=(16, 16))),
    ], dict(q=q, k=k, v=k, q_slots=q_slots)


@pytest.mark.parametrize("index", range(len(_bad_inputs()[0])))
@pytest.mark.parametrize("fn", [flash_attention, flash_attention_reference], ids=["kernel", "ref"])
def test_bad_inputs_raise(index, fn):
    cases, kw = _bad_inputs()
    match, change = cases[index]
    if fn is flash_attention_reference and any(n in change for n in ("backend", "block_sizes")):
        pytest.skip("the reference has no backend / block_sizes")
    kw.update(change)
    q, k, v = kw.pop("q"), kw.pop("k"), kw.pop("v")
    with pytest.raises(ValueError, match=match):
        fn(q, k, v, **kw)


@pytest.mark.parametrize(
    "s, block_kv, compiled, want",
    [
        (37, 16, False, (16, 48)),  # no divisor in [9, 16]: pad
        (50, 16, False, (10, 50)),
        (2048, 128, False, (128, 2048)),
        (96, 1000, False, (96, 96)),
        (96, 64, True, (64, 128)),  # Triton: powers of two, pad
        (8, 64, True, (16, 16)),
    ],
)
def test_key_tiling(s, block_kv, compiled, want):
    plan = fa._plan(3, s, 1.0, AttentionBlockSizes(block_q=8, block_kv=block_kv), compiled)
    assert (plan.block_kv, plan.padded_s) == want
    assert plan.batched is not compiled


def test_block_sizes_validate():
    with pytest.raises(ValueError, match="block_kv"):
        AttentionBlockSizes(block_q=16, block_kv=0)
    assert AttentionBlockSizes.get_default("gpu") == AttentionBlockSizes(block_q=64, block_kv=64)
