"""The transform engine: one walker and one recipe contract for every transform, and bad input."""

import dataclasses
from typing import ClassVar, final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxaccel as ja


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class ZeroSmallest(ja.Recipe):
    """A new transform written only against the public engine: zero the ``fraction`` of each
    selected weight with the smallest magnitude (a toy one-shot magnitude pruning)."""

    fraction: float = 0.5
    select: ja.select.Selector = dataclasses.field(default_factory=ja.select.linear_weights)
    calibration: ClassVar = None

    def rewrite(self, leaf, stats, *, key):
        w = leaf.value
        cut = jnp.quantile(jnp.abs(w), self.fraction)
        return jnp.where(jnp.abs(w) < cut, jnp.zeros_like(w), w)


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class RecordStats(ja.Recipe):
    """Replaces each weight by itself and keeps the statistics it was handed (for the test)."""

    seen: dict = dataclasses.field(default_factory=dict)
    select: ja.select.Selector = dataclasses.field(default_factory=ja.select.linear_weights)
    calibration: ClassVar = "hessian"

    def rewrite(self, leaf, stats, *, key):
        self.seen[leaf.path] = stats
        return leaf.value


def _mlp(key):
    return eqx.nn.MLP(8, 4, 16, 1, key=key)


def test_a_new_transform_is_one_class(getkey):
    mlp = _mlp(getkey())
    pruned = ja.transform(mlp, ZeroSmallest(fraction=0.5))
    for before, after in ((mlp.layers[0], pruned.layers[0]), (mlp.layers[1], pruned.layers[1])):
        kept = np.asarray(after.weight) != 0
        assert kept.mean() == pytest.approx(0.5, abs=0.05)
        np.testing.assert_array_equal(
            np.asarray(after.weight)[kept], np.asarray(before.weight)[kept]
        )
        np.testing.assert_array_equal(after.bias, before.bias)  # not selected
    assert np.count_nonzero(mlp.layers[0].weight) == mlp.layers[0].weight.size  # input untouched


def test_engine_on_nnx_and_plain_pytrees(getkey):
    lin = nnx.Linear(6, 5, rngs=nnx.Rngs(0))
    out = ja.transform(lin, ZeroSmallest(fraction=0.4))
    assert isinstance(out, nnx.Linear)
    assert (np.asarray(out.kernel.get_value()) == 0).mean() == pytest.approx(0.4, abs=0.05)
    params = {"dense": {"w": jax.random.normal(getkey(), (6, 5))}, "b": jnp.ones(5)}
    out = ja.transform(params, ZeroSmallest(fraction=0.4))
    assert (np.asarray(out["dense"]["w"]) == 0).mean() == pytest.approx(0.4, abs=0.05)
    assert [x.path for x in ja.describe_leaves(params)] == ["b", "dense.w"]


def test_calibration_statistics_match_numpy(getkey):
    lin = eqx.nn.Linear(6, 3, key=getkey())
    xs = [jax.random.normal(getkey(), (5, 6)) for _ in range(2)]
    rec = RecordStats()
    ja.transform(lin, rec, data=xs, apply=lambda m, b: jax.vmap(m)(b))
    st = rec.seen["weight"]
    x = np.concatenate([np.asarray(b, np.float64) for b in xs])
    np.testing.assert_allclose(st.absmax, np.abs(x).max(0), rtol=1e-6)
    np.testing.assert_allclose(st.hessian, x.T @ x, rtol=1e-5)
    assert st.rows == 10


def test_map_leaves(getkey):
    mlp = _mlp(getkey())
    doubled = ja.map_leaves(mlp, ja.select.path(r"layers\.0\.weight"), lambda leaf: 2 * leaf.value)
    np.testing.assert_allclose(doubled.layers[0].weight, 2 * mlp.layers[0].weight)
    np.testing.assert_array_equal(doubled.layers[1].weight, mlp.layers[1].weight)


def test_recipe_is_abstract():
    with pytest.raises(TypeError, match="abstract"):
        ja.Recipe()

    class Incomplete(ja.Recipe):
        select = ja.select.matrices()

    with pytest.raises(TypeError, match="rewrite"):
        Incomplete()


def test_readme_snippet_runs_on_an_equinox_mlp(getkey):
    """The README's forward: ``eqx.filter_jit(ja.accelerate(lambda m, x: m(x)))`` (an
    ``eqx.nn.MLP`` holds its activation function, which ``jax.jit`` cannot take as an argument)."""
    mlp = eqx.nn.MLP(128, 64, 128, 1, key=getkey())
    q = ja.quantize(mlp, ja.RTN(fmt=ja.Int8()))
    forward = eqx.filter_jit(ja.accelerate(lambda m, x: m(x)))
    x = jax.random.normal(getkey(), (128,))
    np.testing.assert_allclose(forward(q, x), mlp(x), atol=0.05, rtol=0.05)


# ----------------------------------------------------------------------------------------------
# Bad input: each error names the argument, field or leaf path
# ----------------------------------------------------------------------------------------------


def _linear(getkey, k=64):
    return eqx.nn.Linear(k, 32, key=getkey())


def _apply(m, b):
    return jax.vmap(m)(b)


def test_smoothquant_rejects_nan_calibration_data(getkey):
    lin = _linear(getkey)
    with pytest.raises(ja.InputError, match=r"data: calibration batch 0 .* NaN/inf"):
        ja.quantize(lin, ja.SmoothQuant(), data=jnp.full((4, 64), jnp.nan), apply=_apply)


def test_gptq_rejects_inf_calibration_data(getkey):
    lin = _linear(getkey)
    good = jax.random.normal(getkey(), (4, 64))
    bad = good.at[1, 3].set(jnp.inf)
    with pytest.raises(ja.InputError, match=r"data: calibration batch 1 .* 1 NaN/inf"):
        ja.quantize(lin, ja.GPTQ(granularity=ja.Group(32)), data=[good, bad], apply=_apply)


def test_activations_that_overflow_inside_the_model(getkey):
    lin = _linear(getkey)
    seq = eqx.nn.Sequential([eqx.nn.Lambda(lambda x: x * 1e38), lin])
    x = jnp.full((4, 64), 10.0)
    with pytest.raises(ja.InputError, match="layers.1.weight: the activations .* overflowed"):
        ja.quantize(seq, ja.SmoothQuant(), data=x, apply=_apply)


def test_empty_calibration_data(getkey):
    with pytest.raises(ja.InputError, match="data: the calibration data is empty"):
        ja.quantize(_linear(getkey), ja.MergeQuant(), data=[], apply=_apply)


def test_calibrated_recipe_without_data(getkey):
    with pytest.raises(ja.InputError, match="data: GPTQ needs calibration data"):
        ja.quantize(_linear(getkey), ja.GPTQ())


def test_data_given_to_an_uncalibrated_recipe(getkey):
    with pytest.raises(ja.InputError, match="data: RTN does not use calibration data"):
        ja.quantize(_linear(getkey), ja.RTN(), data=jnp.ones((2, 64)))


def test_quantize_array_of_an_empty_array():
    with pytest.raises(ja.InputError, match="w: cannot quantize an empty array"):
        ja.quantize_array(jnp.zeros((0, 8)), ja.Int8(), where="w")


def test_quantize_array_of_a_vector_and_of_ints():
    with pytest.raises(ja.InputError, match="v: only matrices"):
        ja.quantize_array(jnp.ones(8), ja.Int8(), where="v")
    with pytest.raises(ja.InputError, match="i: can only quantize floating-point"):
        ja.quantize_array(jnp.ones((8, 8), jnp.int32), ja.Int8(), where="i")


def test_explain_of_a_string_and_of_a_float_model(getkey):
    with pytest.raises(ja.InputError, match="model: expected an Equinox module"):
        ja.explain("model")
    text = str(ja.explain(_linear(getkey), batch=4, measure=False))
    assert "no quantized leaf" in text
    with pytest.raises(ja.InputError, match="batch: expected a positive number"):
        ja.explain(_linear(getkey), batch=0)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: ja.RTN(fmt=ja.Int4(), activations=ja.ActQuant()), "RTN: W8A8 needs symmetric"),
        (lambda: ja.SmoothQuant(alpha=2.0), r"SmoothQuant.alpha: expected a number in \[0, 1\]"),
        (lambda: ja.GPTQ(damp=-1.0), "GPTQ.damp: expected a positive finite number"),
        (lambda: ja.GPTQ(block_size=0), "GPTQ.block_size: expected a positive int"),
        (lambda: ja.GPTQ(fmt=ja.NVFP4()), "GPTQ.fmt: NVFP4's tensor-level scale"),
        (lambda: ja.Group(0), "Group.size must be a positive int"),
        (lambda: ja.KVCacheConfig(size=0), "KVCacheConfig.size must be a positive int"),
    ],
)
def test_bad_recipe_fields(make, match):
    with pytest.raises(ja.InputError, match=match):
        make()


def test_bad_transform_arguments(getkey):
    lin = _linear(getkey)
    with pytest.raises(ja.InputError, match="model: expected an Equinox module"):
        ja.quantize(3.0, ja.RTN())
    with pytest.raises(
        ja.InputError, match=r"select: Selector\(path\('nothing'\)\) matched no leaf"
    ):
        ja.quantize(lin, ja.RTN(select=ja.select.path("nothing")))


# Arguments of the wrong type: the test process type-checks jaxaccel's signatures (jaxtyping +
# beartype), which would reject these before our own checks run, so they run in a plain process,
# as a user's would.
_WRONG_TYPES = """
import equinox as eqx, jax
import jaxaccel as ja
lin = eqx.nn.Linear(64, 32, key=jax.random.key(0))
cases = {
    "fmt": lambda: ja.RTN(fmt="int4"),
    "granularity": lambda: ja.RTN(granularity=128),
    "select": lambda: ja.RTN(select="linear"),
    "quantize-string": lambda: ja.quantize(lin, "int8"),
    "transform-dict": lambda: ja.transform(lin, {"fmt": "int8"}),
    "key": lambda: ja.transform(lin, ja.RTN(), key=0),
    "map-select": lambda: ja.map_leaves(lin, "weight", lambda leaf: leaf.value),
    "cache-recipe": lambda: ja.cache(lin, "int8"),
}
for name, f in cases.items():
    try:
        f()
        print(name, "|", "NO ERROR")
    except ja.InputError as e:
        print(name, "|", e)
"""


def test_wrong_argument_types_name_the_argument():
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", _WRONG_TYPES], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    got = dict(line.split(" | ", 1) for line in p.stdout.splitlines())
    assert got["fmt"].startswith("RTN.fmt: unknown format 'int4'")
    assert got["granularity"].startswith("RTN.granularity: expected PerTensor()")
    assert got["select"].startswith("RTN.select: expected a jaxaccel.select selector")
    assert got["quantize-string"].startswith("recipe: expected a quantization recipe")
    assert got["transform-dict"].startswith("recipe: expected a jaxaccel recipe")
    assert got["key"].startswith("key: expected a JAX PRNG key or None")
    assert got["map-select"].startswith("select: expected a jaxaccel.select selector")
    assert got["cache-recipe"].startswith("model: cache needs a model implementing")


def test_nan_weight_named_by_path(getkey):
    lin = _linear(getkey)
    lin = eqx.tree_at(lambda m: m.weight, lin, lin.weight.at[0, 0].set(jnp.nan))
    with pytest.raises(ja.InputError, match="weight: weight has 1 NaN/inf entries"):
        ja.quantize(lin, ja.RTN())


def test_cache_contract(getkey):
    with pytest.raises(ja.InputError, match="model: cache needs a model implementing"):
        ja.cache(_linear(getkey), ja.KVCacheConfig(size=8))
