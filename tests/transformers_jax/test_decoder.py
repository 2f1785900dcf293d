"""Decoder, KV cache and generation at tiny random configurations."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxaccel as ja
import transformers_jax as tj
from transformers_jax import _generate

LLAMA = tj.DecoderConfig(
    vocab_size=97,
    d_model=32,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    head_dim=8,
    d_ff=64,
    max_seq_len=256,
    rope_theta=1e4,
)
GPT2 = tj.DecoderConfig(
    vocab_size=97,
    d_model=32,
    n_layers=2,
    n_heads=4,
    n_kv_heads=4,
    head_dim=8,
    d_ff=64,
    max_seq_len=256,
    family="gpt2",
    tie_embeddings=False,
)


def _sharpen(model):
    """Random small weights make a model that repeats itself; scale up to get varied greedy text."""
    return jax.tree.map(lambda x: x * 8.0 if x.ndim >= 2 else x, model)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request):
    cfg = LLAMA if request.param == "llama" else GPT2
    return _sharpen(tj.init_decoder(cfg, key=jax.random.key(0)))


def greedy_by_recompute(model, prompt, n):
    ids = list(prompt)
    f = jax.jit(lambda m, t: m(t))
    for _ in range(n):
        ids.append(int(jnp.argmax(f(model, jnp.asarray([ids], jnp.int32))[0, -1])))
    return ids[len(prompt) :]


def test_cached_decode_equals_full_recompute(model):
    toks = jax.random.randint(jax.random.key(1), (2, 12), 0, 97)
    full = model(toks)
    cm = ja.cache(model, ja.KVCacheConfig(size=32))
    step = eqx.filter_jit(cm.step)
    kv = cm.init(2)
    logits, kv = step(kv, toks[:, :7])
    outs = [logits]
    for t in range(7, 12):
        logits, kv = step(kv, toks[:, t : t + 1])
        outs.append(logits)
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=2e-5, rtol=1e-5)
    assert int(kv.length) == 12


def test_greedy_generation_matches_recompute_and_batches(model):
    prompts = [[5, 17, 3], [9, 1, 4, 4, 60, 2]]
    g = tj.generate(model, prompts, max_new_tokens=12)
    for p, got in zip(prompts, g.tokens, strict=True):
        assert got == greedy_by_recompute(model, p, 12)
    # Left padding is invisible: each row alone gives the same tokens as in the batch.
    alone = [tj.generate(model, [p], max_new_tokens=12).tokens[0] for p in prompts]
    assert alone == g.tokens
    assert g.new_tokens == 24 and g.tokens_per_second > 0


def test_bucketing_reuses_the_program():
    model = _sharpen(tj.init_decoder(LLAMA, key=jax.random.key(2)))
    tj.generate(model, [[1, 2, 3]], max_new_tokens=4)
    n = len(_generate._EXECUTABLES)
    g = tj.generate(model, [[1, 2, 3, 4, 5, 6, 7]], max_new_tokens=4)  # same 16-token bucket
    assert len(_generate._EXECUTABLES) == n and g.compile_seconds < 0.5


def test_stop_tokens_end_rows():
    model = _sharpen(tj.init_decoder(LLAMA, key=jax.random.key(3)))
    free = tj.generate(model, [[1, 2, 3]], max_new_tokens=10).tokens[0]
    stop = free[3]
    first = free.index(stop)
    g = tj.generate(model, [[1, 2, 3]], max_new_tokens=10, stop_tokens=[stop])
    assert g.tokens[0] == free[: first + 1]


@pytest.mark.parametrize("storage", ["int8", "fp8", "bfloat16"])
def test_quantized_kv_cache_divergence(storage):
    # Mildly sharpened: the error of a quantized cache grows with how peaked attention is (x8
    # weights push even bfloat16 storage to 7% logit error on this random model).
    model = jax.tree.map(
        lambda x: x * 2.0 if x.ndim >= 2 else x, tj.init_decoder(LLAMA, key=jax.random.key(4))
    )
    toks = jax.random.randint(jax.random.key(5), (1, 20), 0, 97)
    full = model(toks)
    cm = ja.cache(model, ja.KVCacheConfig(size=32, storage=storage))
    kv = cm.init(1)
    logits, kv = cm.step(kv, toks[:, :10])
    outs = [logits]
    for t in range(10, 20):
        logits, kv = cm.step(kv, toks[:, t : t + 1])
        outs.append(logits)
    inc = jnp.concatenate(outs, axis=1)
    rel = float(jnp.abs(inc - full).max() / jnp.abs(full).max())
    assert rel < {"int8": 0.01, "fp8": 0.05, "bfloat16": 0.01}[storage], rel
    assert kv.nbytes() < cm.init(1).nbytes() + 1 and "smaller than float32" in kv.report()
    L, H, S, D = LLAMA.n_layers, LLAMA.n_kv_heads, 32, LLAMA.head_dim
    per_slot = 2 * D if storage == "bfloat16" else D + 4  # quantized: 1 byte/value + f32 scale
    assert kv.nbytes() == 2 * L * H * S * per_slot


def test_quantized_model_generates():
    model = _sharpen(tj.init_decoder(LLAMA, key=jax.random.key(6)))
    q = ja.quantize(model, ja.RTN(fmt=ja.Int8(), activations=ja.ActQuant()))
    assert isinstance(q.blocks.attn.q_proj.weight, ja.QTensor)
    assert q.blocks.attn.q_proj.weight.payload.shape[0] == LLAMA.n_layers
    g = tj.generate(q, [[1, 2, 3]], max_new_tokens=8)
    ref = tj.generate(model, [[1, 2, 3]], max_new_tokens=8)
    agree = np.mean(np.asarray(g.tokens[0]) == np.asarray(ref.tokens[0]))
    assert len(g.tokens[0]) == 8 and agree >= 0.5


def test_sampling():
    logits = jnp.asarray([[0.0, 1.0, 2.0, 3.0]] * 4000, jnp.float32)
    key = jax.random.key(7)
    greedy = tj.sample_logits(key, logits[:1], tj.Greedy())
    assert int(greedy[0]) == 3
    assert np.all(np.asarray(tj.sample_logits(key, logits, tj.Sample(top_k=1))) == 3)
    assert np.all(np.asarray(tj.sample_logits(key, logits, tj.Sample(top_p=0.1))) == 3)
    draws = np.asarray(tj.sample_logits(key, logits, tj.Sample(temperature=1.0)))
    freq = np.bincount(draws, minlength=4) / draws.size
    np.testing.assert_allclose(freq, np.asarray(jax.nn.softmax(logits[0])), atol=0.03)
    top2 = np.asarray(tj.sample_logits(key, logits, tj.Sample(top_k=2)))
    assert set(np.unique(top2)) == {2, 3}
    p = np.exp([2.0, 3.0]) / np.exp([2.0, 3.0]).sum()
    assert abs(np.mean(top2 == 3) - p[1]) < 0.03
    # top_p = 0.9: {3, 2} hold 0.90 of the mass (0.644 + 0.237) -> token 1 (0.087) also enters.
    nuc = np.asarray(tj.sample_logits(key, logits, tj.Sample(top_p=0.9)))
    assert set(np.unique(nuc)) == {1, 2, 3}


def test_checkpoint_round_trip(model):
    sd = tj.to_hf_state_dict(model)
    back = tj.from_hf_state_dict(model.config, sd)
    toks = jnp.asarray([[1, 2, 3, 4]], jnp.int32)
    np.testing.assert_array_equal(back(toks), model(toks))
    sd.pop("model.layers.1.mlp.up_proj.weight")
    with pytest.raises(KeyError, match="^tensors: missing 'model.layers.1.mlp.up_proj.weight'$"):
        tj.from_hf_state_dict(model.config, sd)  # a MissingTensorError: also a jaxaccel.Error


def test_bad_inputs():
    model = tj.init_decoder(LLAMA, key=jax.random.key(8))
    with pytest.raises(ValueError, match=r"prompts\[0\]: token ids must lie in \[0, 97\)"):
        tj.generate(model, [[1, 200]], max_new_tokens=2)
    with pytest.raises(ValueError, match=r"prompts\[1\] is empty"):
        tj.generate(model, [[1], []], max_new_tokens=2)
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len=256"):
        tj.generate(model, [[1] * 200], max_new_tokens=100)
    with pytest.raises(ValueError, match="key: sampling needs"):
        tj.generate(model, [[1]], max_new_tokens=2, sampler=tj.Sample())
    with pytest.raises(ValueError, match=r"tokens: ids must lie in \[0, 97\)"):
        model(jnp.asarray([[1, -3]], jnp.int32))
    with pytest.raises(TypeError, match="model: cache needs a model implementing"):
        ja.cache(lambda t: t, ja.KVCacheConfig(size=8))
    with pytest.raises(ValueError, match="n_kv_heads=3 must divide n_heads=4"):
        tj.DecoderConfig(
            vocab_size=9, d_model=8, n_layers=1, n_heads=4, n_kv_heads=3, head_dim=2, d_ff=8
        )


@pytest.fixture(scope="module")
def small_model():
    return tj.init_decoder(LLAMA, key=jax.random.key(8))


# generate(model, prompts, **kwargs) with one bad argument each; checked before anything compiles.
BAD_GENERATE = [
    (dict(max_new_tokens=0), r"^max_new_tokens: expected a positive integer, got 0$"),
    (dict(max_new_tokens=-3), r"max_new_tokens: expected a positive integer, got -3"),
    (dict(max_new_tokens=True), r"max_new_tokens: expected a positive integer, got True"),
    (dict(max_new_tokens="8"), r"max_new_tokens: expected a positive integer, got '8'"),
    (dict(prompts="hello"), r"prompts: expected a list of token-id lists, got a string"),
    (dict(prompts=[]), r"prompts: need at least one prompt"),
    (dict(prompts=[[]]), r"prompts\[0\] is empty"),
    (dict(prompts=[1, 2, 3]), r"prompts\[0\]: expected a list of token ids, got the single id 1"),
    (dict(prompts=["hi"]), r"prompts\[0\]: expected token ids, got a str"),
    (dict(prompts=[[1, 2.5]]), r"prompts\[0\]: expected a sequence of integer token ids"),
    (dict(prompts=[np.ones(3)]), r"prompts\[0\]: .* an array of dtype float64"),
    (dict(prompts=[[1, 97]]), r"prompts\[0\]: token ids must lie in \[0, 97\), got \[97\]"),
    (dict(stop_tokens=[2, 97]), r"stop_tokens: token ids must lie in \[0, 97\), got \[97\]"),
    (dict(stop_tokens=[-1]), r"stop_tokens: token ids must lie in \[0, 97\), got \[-1\]"),
    (dict(stop_tokens=2), r"stop_tokens: expected a sequence of integer token ids, got 2"),
    (dict(sampler="greedy"), r"sampler: expected Greedy\(\) or Sample\(\.\.\.\)"),
    (dict(sampler=tj.Sample(), key=0), r"key: expected one JAX PRNG key"),
    (dict(sampler=tj.Sample(), key=jax.random.split(jax.random.key(0))), r"key: expected one"),
    (
        dict(kv_storage="int3"),
        r"kv_storage: expected one of float32, bfloat16, int8, fp8; got 'int3'",
    ),
    (dict(on_token="print"), r"on_token: expected a callable or None"),
]


@pytest.mark.parametrize(("change", "match"), BAD_GENERATE)
def test_generate_names_the_bad_argument(small_model, change, match):
    kwargs = dict(prompts=[[1, 2]], max_new_tokens=2) | change
    prompts = kwargs.pop("prompts")
    with pytest.raises(ja.InputError, match=match):
        tj.generate(small_model, prompts, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            dict(temperature=0.0),
            r"Sample.temperature: expected a finite number > 0, got 0.0; use Greedy",
        ),
        (dict(temperature=-1), r"Sample.temperature: .* got -1"),
        (dict(temperature=float("nan")), r"Sample.temperature: .* got nan"),
        (dict(temperature="hot"), r"Sample.temperature: .* got 'hot'"),
        (dict(top_k=0), r"Sample.top_k: expected a positive integer or None, got 0"),
        (dict(top_k=2.5), r"Sample.top_k: .* got 2.5"),
        (dict(top_k=True), r"Sample.top_k: .* got True"),
        (dict(top_p=0.0), r"Sample.top_p: expected a number in \(0, 1\] or None, got 0.0"),
        (dict(top_p=1.5), r"Sample.top_p: .* got 1.5"),
        (dict(top_p=float("nan")), r"Sample.top_p: .* got nan"),
    ],
)
def test_sampler_params(kwargs, match):
    with pytest.raises(ja.InputError, match=match):
        tj.Sample(**kwargs)


def test_other_api_bad_inputs(small_model):
    with pytest.raises(ja.InputError, match="model: expected a transformers_jax.Decoder"):
        tj.generate(lambda t: t, [[1]], max_new_tokens=2)
    with pytest.raises(
        ja.InputError, match=r"window: expected 2 <= window <= max_seq_len=256, got 1"
    ):
        tj.perplexity(small_model, list(range(10)), window=1)
    with pytest.raises(ja.InputError, match=r"window: expected a positive integer, got 0"):
        tj.perplexity(small_model, list(range(10)), window=0)
    with pytest.raises(
        ja.InputError, match=r"tokens: token ids must lie in \[0, 97\), got \[100\]"
    ):
        tj.perplexity(small_model, [1, 2, 100] + [3] * 30, window=4)
    with pytest.raises(ja.InputError, match=r"tokens: need at least window=16 tokens, got 3"):
        tj.perplexity(small_model, [1, 2, 3], window=16)
    with pytest.raises(ja.InputError, match="messages: need at least one"):
        tj.chat(small_model, None, [])
    with pytest.raises(ja.InputError, match="tokenizer: expected a transformers_jax.Tokenizer"):
        tj.chat(small_model, "tok", [{"role": "user", "content": "hi"}])
    with pytest.raises(ja.InputError, match="config: expected a DecoderConfig, got dict"):
        tj.from_hf_state_dict({"vocab_size": 97}, {})
    with pytest.raises(ja.InputError, match="tensors: expected a mapping of HF names"):
        tj.from_hf_state_dict(LLAMA, [1, 2])
    sd = tj.to_hf_state_dict(small_model)
    sd["model.norm.weight"] = np.ones(5, np.float32)
    with pytest.raises(
        ja.InputError, match=r"tensors\['model.norm.weight'\]: expected shape \(32,\)"
    ):
        tj.from_hf_state_dict(LLAMA, sd)
    with pytest.raises(ja.InputError, match=r"DecoderConfig.d_model must be a positive int, got 0"):
        tj.DecoderConfig(
            vocab_size=9, d_model=0, n_layers=1, n_heads=1, n_kv_heads=1, head_dim=2, d_ff=8
        )


def test_calibrated_recipes_on_scanned_layers():
    """SmoothQuant and GPTQ calibrate each stacked layer separately, through lax.scan."""
    model = jax.tree.map(
        lambda x: x * 2.0 if x.ndim >= 2 else x, tj.init_decoder(LLAMA, key=jax.random.key(9))
    )
    calib = [jax.random.randint(jax.random.key(10 + i), (4, 32), 0, 97) for i in range(4)]
    toks = jnp.concatenate(calib)
    apply = lambda m, b: m(b)
    run = jax.jit(ja.accelerate(apply))
    ref = model(toks)

    def err(q):
        return float(jnp.mean((run(q, toks) - ref) ** 2))

    sq = ja.quantize(model, ja.SmoothQuant(alpha=0.5), data=calib, apply=apply)
    w = sq.blocks.attn.q_proj.weight
    assert w.act_scale.shape == (LLAMA.n_layers, LLAMA.d_model)
    assert not np.allclose(w.act_scale[0], w.act_scale[1])  # per-layer statistics
    assert err(sq) < 1e-2 * float(jnp.mean(ref**2))
    rtn = ja.quantize(model, ja.RTN(fmt=ja.Int4(), granularity=ja.Group(16)))
    gq = ja.quantize(
        model, ja.GPTQ(fmt=ja.Int4(), granularity=ja.Group(16)), data=calib, apply=apply
    )
    assert gq.blocks.mlp.down_proj.weight.scales.shape == (LLAMA.n_layers, 64 // 16, 32)
    assert err(gq) < err(rtn)
