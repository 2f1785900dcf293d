"""quantize + accelerate on Equinox, Flax NNX and plain pytrees: numerics, transforms, errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

import jaxaccel as ja


class MLP(eqx.Module):
    l1: eqx.nn.Linear
    l2: eqx.nn.Linear

    def __init__(self, d_in, d_hidden, d_out, *, key):
        k1, k2 = jax.random.split(key)
        self.l1 = eqx.nn.Linear(d_in, d_hidden, key=k1)
        self.l2 = eqx.nn.Linear(d_hidden, d_out, key=k2)

    def __call__(self, x):
        return self.l2(jax.nn.gelu(self.l1(x)))


def apply(m, x):
    return jax.vmap(m)(x)


run = jax.jit(ja.accelerate(apply))


def outlier_inputs(key, t, d):
    """Activations whose outliers sit in the same few channels for every batch, as in LLMs."""
    x = jax.random.normal(key, (t, d), jnp.float32)
    scale = jnp.where(jnp.arange(d) % 16 == 3, 30.0, 1.0).astype(jnp.float32)
    return x * scale[None, :]


@pytest.fixture(scope="module")
def mlp():
    return MLP(64, 128, 32, key=jax.random.key(0))


@pytest.fixture(scope="module")
def xs():
    return outlier_inputs(jax.random.key(1), 32, 64)


def rel(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


RECIPES = {
    "int8": (ja.RTN(fmt=ja.Int8()), 0.02),
    "int8-asym": (ja.RTN(fmt=ja.Int8(symmetric=False)), 0.02),
    "int4-g32": (ja.RTN(fmt=ja.Int4(), granularity=ja.Group(32)), 0.2),
    "int4-asym": (ja.RTN(fmt=ja.Int4(symmetric=False), granularity=ja.Group(32)), 0.2),
    "fp8": (ja.RTN(fmt=ja.FP8()), 0.06),
    "fp8-e5m2": (ja.RTN(fmt=ja.FP8("e5m2")), 0.12),
    "nf4": (ja.RTN(fmt=ja.NF4(), granularity=ja.Group(32)), 0.2),
    "fp4": (ja.RTN(fmt=ja.FP4(), granularity=ja.PerTensor()), 0.3),
    "mxfp4": (ja.RTN(fmt=ja.MXFP4()), 0.3),
    "nvfp4": (ja.RTN(fmt=ja.NVFP4()), 0.3),
    "afpq": (ja.RTN(fmt=ja.AFPQ(), granularity=ja.Group(32)), 0.3),
    "w8a8": (ja.RTN(fmt=ja.Int8(), activations=ja.ActQuant()), 0.05),
}


@pytest.mark.parametrize("name", list(RECIPES))
def test_equinox_output_close_to_float(mlp, xs, name):
    recipe, tol = RECIPES[name]
    q = ja.quantize(mlp, recipe)
    ref = apply(mlp, xs)
    y = run(q, xs)
    assert y.dtype == jnp.float32 and y.shape == ref.shape
    assert rel(y, ref) < tol
    # The kernel path agrees with the dequantized float model (W8A8 also rounds activations).
    yd = apply(ja.materialise(q), xs)
    assert rel(y, yd) < (0.05 if recipe.activations is not None else 1e-5)
    assert isinstance(q.l1.weight, ja.QTensor) and isinstance(mlp.l1.weight, jax.Array)


def test_nnx_and_plain_pytree(xs):
    model = nnx.Sequential(
        nnx.Linear(64, 128, rngs=nnx.Rngs(0)), jax.nn.relu, nnx.Linear(128, 32, rngs=nnx.Rngs(1))
    )
    ref = model(xs)
    q = ja.quantize(model, ja.RTN(fmt=ja.Int4(), granularity=ja.Group(32)))
    assert isinstance(q, nnx.Sequential)
    assert isinstance(model.layers[0].kernel.get_value(), jax.Array)  # input untouched
    f = jax.jit(ja.accelerate(lambda m, x: m(x)))
    assert rel(f(q, xs), ref) < 0.2
    qd = ja.quantize(model, ja.RTN(fmt=ja.Int8(), activations=ja.ActQuant()))
    assert rel(f(qd, xs), ref) < 0.05

    params = {"w": jax.random.normal(jax.random.key(3), (64, 16), jnp.float32), "b": jnp.zeros(16)}
    qp = ja.quantize(params, ja.RTN())
    assert isinstance(qp["w"], ja.QTensor) and isinstance(qp["b"], jax.Array)
    g = jax.jit(ja.accelerate(lambda p, x: x @ p["w"] + p["b"][None, :]))
    assert rel(g(qp, xs), xs @ params["w"]) < 0.02


def test_selection_by_path_and_predicate(mlp):
    q = ja.quantize(mlp, ja.RTN(select=ja.select.linear_weights() & ~ja.select.path(r"^l2")))
    assert isinstance(q.l1.weight, ja.QTensor) and not isinstance(q.l2.weight, ja.QTensor)
    big = ja.select.predicate(lambda leaf: leaf.value.size > 64 * 64, "big")
    q = ja.quantize(mlp, ja.RTN(select=big))
    assert isinstance(q.l1.weight, ja.QTensor) and not isinstance(q.l2.weight, ja.QTensor)
    paths = [leaf.path for leaf in ja.describe_leaves(mlp)]
    assert "l1.weight" in paths and "l2.bias" in paths


def _dot_operand_dtypes(jaxpr):
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive is lax.dot_general_p:
            out.append(tuple(v.aval.dtype for v in eqn.invars))
        for sub in jax.core.subjaxprs(eqn) if hasattr(jax.core, "subjaxprs") else []:
            out += _dot_operand_dtypes(sub)
        for p in eqn.params.values():
            if isinstance(p, jax.extend.core.ClosedJaxpr):
                out += _dot_operand_dtypes(p.jaxpr)
            elif isinstance(p, jax.extend.core.Jaxpr):
                out += _dot_operand_dtypes(p)
    return out


def test_jaxpr_w8a8_dots_are_int8(mlp, xs):
    q = ja.quantize(mlp, ja.RTN(fmt=ja.Int8(), activations=ja.ActQuant()))
    jaxpr = jax.make_jaxpr(ja.accelerate(apply, backend="xla"))(q, xs)
    dtypes = _dot_operand_dtypes(jaxpr.jaxpr)
    assert len(dtypes) == 2
    assert all(d == (jnp.int8, jnp.int8) for d in dtypes), dtypes


def test_no_retrace(mlp, xs):
    q = ja.quantize(mlp, ja.RTN(fmt=ja.Int4(), granularity=ja.Group(32)))
    f = jax.jit(eqx.debug.assert_max_traces(ja.accelerate(apply), max_traces=1))
    f(q, xs)
    f(q, xs + 1.0)
    q2 = ja.quantize(
        eqx.tree_at(lambda m: m.l1.bias, mlp, mlp.l1.bias + 1),
        ja.RTN(fmt=ja.Int4(), granularity=ja.Group(32)),
    )
    f(q2, xs)  # same structure, new values: no retrace


def test_vmap_outside_and_grad_reaches_float_leaves(mlp, xs):
    q = ja.quantize(mlp, ja.RTN(fmt=ja.Int8()))
    # vmap outside accelerate, model unbatched inside.
    y = jax.jit(jax.vmap(ja.accelerate(lambda m, x: m(x)), in_axes=(None, 0)))(q, xs)
    assert rel(y, apply(mlp, xs)) < 0.02

    def loss(m, x):
        return jnp.mean(ja.accelerate(apply)(m, x) ** 2)

    g = eqx.filter_jit(eqx.filter_grad(loss))(q, xs)
    g_ref = eqx.filter_grad(loss)(ja.materialise(q), xs)
    np.testing.assert_allclose(g.l1.bias, g_ref.l1.bias, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g.l2.bias, g_ref.l2.bias, rtol=1e-4, atol=1e-6)
    assert float(jnp.abs(g.l1.weight.scales).sum()) > 0  # scales are float leaves: they get grads
    # Gradient w.r.t. the input too.
    gx = jax.grad(lambda x: loss(q, x))(xs)
    gx_ref = jax.grad(lambda x: loss(ja.materialise(q), x))(xs)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-4, atol=1e-6)


def test_scan_over_stacked_layers(getkey):
    keys = jax.random.split(getkey(), 3)
    layers = eqx.filter_vmap(lambda k: eqx.nn.Linear(32, 32, key=k))(keys)
    x = jax.random.normal(getkey(), (4, 32), jnp.float32)

    def forward(layers, x):
        params, static = eqx.partition(layers, eqx.is_array)

        def body(h, p):
            layer = eqx.combine(p, static)
            return jnp.tanh(jax.vmap(layer)(h)), None

        return lax.scan(body, x, params)[0]

    q = ja.quantize(layers, ja.RTN(fmt=ja.Int4(), granularity=ja.Group(16)))
    assert q.weight.payload.shape == (3, 32, 16) and q.weight.shape == (3, 32, 32)
    y = jax.jit(ja.accelerate(forward))(q, x)
    assert rel(y, forward(layers, x)) < 0.2
    np.testing.assert_allclose(y, forward(ja.materialise(q), x), rtol=1e-4, atol=1e-5)


def test_transpose_keeps_kernel_path(xs):
    w = jax.random.normal(jax.random.key(5), (16, 64), jnp.float32)  # [out, in]
    q = ja.quantize_array(w, ja.Int8(), contract_axes=(1,))
    f = ja.accelerate(lambda q, x: x @ q.T)
    np.testing.assert_allclose(jax.jit(f)(q, xs), xs @ q.materialise().T, rtol=1e-5, atol=1e-4)
    # The weight is never materialised as [16, 64] and transposed: the transpose only relabels.
    eqns = jax.make_jaxpr(f)(q, xs).jaxpr.eqns
    assert not [
        e for e in eqns if e.primitive is lax.transpose_p and e.invars[0].aval.shape == (16, 64)
    ]


def test_conv_weight_only_and_w8a8(getkey):
    conv = eqx.nn.Conv2d(4, 8, 3, key=getkey())
    x = jax.random.normal(getkey(), (4, 10, 10), jnp.float32)
    ref = conv(x)
    sel = ja.select.conv_weights()
    q = ja.quantize(conv, ja.RTN(fmt=ja.Int8(), select=sel))
    f = jax.jit(ja.accelerate(lambda m, x: m(x)))
    assert rel(f(q, x), ref) < 0.02
    q8 = ja.quantize(conv, ja.RTN(fmt=ja.Int8(), activations=ja.ActQuant(), select=sel))
    assert rel(f(q8, x), ref) < 0.05
    jaxpr = jax.make_jaxpr(ja.accelerate(lambda m, x: m(x)))(q8, x)
    convs = [e for e in jaxpr.jaxpr.eqns if e.primitive is lax.conv_general_dilated_p]
    assert convs and all(v.aval.dtype == jnp.int8 for e in convs for v in e.invars)


# -- calibrated recipes --------------------------------------------------------------------------


def _layer_error(model, qmodel, x):
    return float(jnp.mean((run(qmodel, x) - apply(model, x)) ** 2))


def test_smoothquant_and_mergequant_beat_plain_w8a8(getkey):
    lin = eqx.nn.Linear(128, 64, key=getkey())
    calib = outlier_inputs(getkey(), 256, 128)
    x = outlier_inputs(getkey(), 64, 128)
    rtn = ja.quantize(lin, ja.RTN(fmt=ja.Int8(), activations=ja.ActQuant()))
    sq = ja.quantize(lin, ja.SmoothQuant(alpha=0.5), data=calib, apply=apply)
    mq = ja.quantize(lin, ja.MergeQuant(), data=[calib[:128], calib[128:]], apply=apply)
    e_rtn, e_sq, e_mq = (_layer_error(lin, m, x) for m in (rtn, sq, mq))
    # Migrating the outliers into the weights beats per-token int8 on the raw activations.
    assert e_sq < 0.5 * e_rtn
    # Static per-channel scales need no run-time reduction over each token; folding them into
    # the weights costs weight precision, so they are only required to stay close to float.
    assert rel(run(mq, x), apply(lin, x)) < 0.05
    assert sq.weight.act_scale.shape == (128,) and mq.weight.act.static


@pytest.mark.parametrize("act_order", [True, False])
def test_gptq_beats_round_to_nearest(getkey, act_order):
    lin = eqx.nn.Linear(128, 64, key=getkey())
    calib = outlier_inputs(getkey(), 512, 128)
    fmt, gran = ja.Int4(), ja.Group(32)
    rtn = ja.quantize(lin, ja.RTN(fmt=fmt, granularity=gran))
    gq = ja.quantize(
        lin, ja.GPTQ(fmt=fmt, granularity=gran, act_order=act_order), data=calib, apply=apply
    )
    # On the calibration distribution GPTQ minimises exactly this error.
    assert _layer_error(lin, gq, calib) < _layer_error(lin, rtn, calib)
    assert isinstance(gq.weight, ja.QTensor) and gq.weight.scales.shape == (4, 64)


def test_gptq_mxfp4(getkey):
    lin = eqx.nn.Linear(64, 32, key=getkey())
    calib = outlier_inputs(getkey(), 256, 64)
    rtn = ja.quantize(lin, ja.RTN(fmt=ja.MXFP4()))
    gq = ja.quantize(lin, ja.GPTQ(fmt=ja.MXFP4()), data=calib, apply=apply)
    assert gq.weight.scales.dtype == jnp.uint8
    assert _layer_error(lin, gq, calib) < _layer_error(lin, rtn, calib)


# -- bad input -----------------------------------------------------------------------------------


def test_bad_inputs(mlp, xs):
    params = {"w": jnp.ones((8, 8), jnp.int32), "c": jnp.ones((8, 8), jnp.complex64)}
    with pytest.raises(TypeError, match=r"w: can only quantize floating-point"):
        ja.quantize(params, ja.RTN(select=ja.select.path("^w$")))
    with pytest.raises(TypeError, match=r"c: cannot quantize a complex"):
        ja.quantize(params, ja.RTN(select=ja.select.path("^c$")))
    with pytest.raises(ValueError, match=r"l1.weight: group size 48 does not divide"):
        ja.quantize(mlp, ja.RTN(fmt=ja.Int4(), granularity=ja.Group(48)))
    with pytest.raises(ValueError, match=r"l1.bias: only matrices"):
        ja.quantize(mlp, ja.RTN(select=ja.select.path(r"l1\.bias")))
    short = {"w": jnp.ones((16, 8), jnp.float32)}
    with pytest.raises(
        ValueError, match=r"w: mxfp4 needs the contraction axis to be a multiple of its block of 32"
    ):
        ja.quantize(short, ja.RTN(fmt=ja.MXFP4()))
    nan = {"w": jnp.ones((16, 8), jnp.float32).at[3, 2].set(jnp.nan)}
    with pytest.raises(ValueError, match=r"w: weight has 1 NaN/inf"):
        ja.quantize(nan, ja.RTN())
    with pytest.raises(ValueError, match=r"data: calibration batch 0 with shape \(32, 63\)"):
        ja.quantize(mlp, ja.SmoothQuant(), data=xs[:, :63], apply=apply)
    with pytest.raises(ValueError, match=r"data: SmoothQuant needs calibration data"):
        ja.quantize(mlp, ja.SmoothQuant())
    # Under the test suite's jaxtyping hook the annotation check fires first; both name the field.
    with pytest.raises(TypeError, match=r"fmt[\s\S]*'int3'"):
        ja.RTN(fmt="int3")
    with pytest.raises(ValueError, match=r"matched no leaf"):
        ja.quantize(mlp, ja.RTN(select=ja.select.path("nothing_here")))
    with pytest.raises(ValueError, match=r"W8A8 needs symmetric Int8"):
        ja.RTN(fmt=ja.Int4(), activations=ja.ActQuant())
    with pytest.raises(ValueError, match="backend"):
        ja.accelerate(apply, backend="cuda")
