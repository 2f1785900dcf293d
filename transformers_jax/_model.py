"""Decoder-only transformers: Llama (RoPE, RMSNorm, SwiGLU, GQA) and GPT-2 (learned positions,
LayerNorm, GELU), sharing one block implementation where they agree.

Written in Equinox rather than Flax NNX because a model here is a plain immutable pytree: the
transforms in `jaxaccel` replace leaves (`QTensor`s) with `eqx.tree_at`-style rewrites and run the
model through `quax`, layers stack with `eqx.filter_vmap` and run with `lax.scan` with no
split/merge step, and the KV cache stays explicit state passed in and out of pure functions.

Weights use torch/HF layouts (``[out, in]`` linear weights) so checkpoints map one to one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float, Int

import jaxaccel
import pallas_kernels as pk
from jaxaccel import AbstractCacheable, KVCache

from ._config import DecoderConfig
from ._errors import MissingTensorError
from ._host import aligned_empty, as_stacked, shareable

__all__ = ["Decoder", "init_decoder", "from_hf_state_dict", "to_hf_state_dict"]


def _linear(x: Array, lin: eqx.nn.Linear) -> Array:
    """``x[..., in] @ W.T + b`` for a torch-layout ``eqx.nn.Linear`` (works on `QTensor` weights)."""
    y = jnp.einsum("...i,oi->...o", x, lin.weight)
    if lin.bias is not None:
        y = y + _lastdim(lin.bias, y.ndim)
    return y


def _lastdim(v: Array, ndim: int) -> Array:
    """Reshape a vector to broadcast along the last axis of an ``ndim``-array (explicit ranks)."""
    return v.reshape((1,) * (ndim - 1) + (-1,))


class Norm(eqx.Module):
    """RMSNorm (``bias is None``) or LayerNorm, computed in float32."""

    weight: Float[Array, " D"]
    bias: Float[Array, " D"] | None
    eps: float = eqx.field(static=True)

    def __call__(self, x: Array) -> Array:
        xf = x.astype(jnp.float32)
        if self.bias is None:
            y = xf * lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + np.float32(self.eps))
            return (y * _lastdim(self.weight, y.ndim)).astype(x.dtype)
        mu = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean((xf - mu) ** 2, axis=-1, keepdims=True)
        y = (xf - mu) * lax.rsqrt(var + np.float32(self.eps))
        return (y * _lastdim(self.weight, y.ndim) + _lastdim(self.bias, y.ndim)).astype(x.dtype)


def rope(x: Float[Array, "B H T D"], positions: Int[Array, "B T"], theta: float) -> Array:
    """Rotary embedding in the HF "rotate half" convention (pairs ``(i, i + D/2)``)."""
    d = x.shape[-1]
    inv = 1.0 / (theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
    ang = (
        positions.astype(jnp.float32)[:, None, :, None]
        * jnp.asarray(inv, jnp.float32)[None, None, None, :]
    )
    cos = jnp.concatenate([jnp.cos(ang)] * 2, axis=-1)
    sin = jnp.concatenate([jnp.sin(ang)] * 2, axis=-1)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return (x.astype(jnp.float32) * cos + rotated.astype(jnp.float32) * sin).astype(x.dtype)


class Attention(eqx.Module):
    q_proj: eqx.nn.Linear
    k_proj: eqx.nn.Linear
    v_proj: eqx.nn.Linear
    o_proj: eqx.nn.Linear


class MLP(eqx.Module):
    """SwiGLU (llama: ``down(silu(gate x) * up x)``) or GELU (gpt2: ``down(gelu(up x))``)."""

    gate_proj: eqx.nn.Linear | None
    up_proj: eqx.nn.Linear
    down_proj: eqx.nn.Linear

    def __call__(self, x: Array) -> Array:
        if self.gate_proj is None:
            return _linear(jax.nn.gelu(_linear(x, self.up_proj), approximate=True), self.down_proj)
        return _linear(
            jax.nn.silu(_linear(x, self.gate_proj)) * _linear(x, self.up_proj), self.down_proj
        )


class Block(eqx.Module):
    attn_norm: Norm
    attn: Attention
    mlp_norm: Norm
    mlp: MLP


class Decoder(AbstractCacheable):
    """A decoder-only language model.

    ``blocks`` holds every layer's parameters stacked on a leading axis (built with
    ``eqx.filter_vmap``) and is run with `lax.scan`, so compile time does not grow with depth.

    Call ``model(tokens)`` for logits of whole sequences (no cache), or use
    ``jaxaccel.cache(model, KVCacheConfig(...))`` for incremental decoding.
    """

    config: DecoderConfig = eqx.field(static=True)
    embed: Float[Array, "V D"]
    pos_embed: Float[Array, "P D"] | None
    blocks: Block
    final_norm: Norm
    lm_head: eqx.nn.Linear | None
    attention_backend: str = eqx.field(static=True, default="auto")

    def kv_layout(self) -> tuple[int, int, int]:
        c = self.config
        return c.n_layers, c.n_kv_heads, c.head_dim

    def __call__(
        self, tokens: Int[Array, "B T"], *, start: Int[Array, " B"] | None = None
    ) -> Array:
        """Logits ``[B, T, V]`` for full sequences (causal; ``start[b]`` = left padding)."""
        b, t = tokens.shape
        start = jnp.zeros((b,), jnp.int32) if start is None else start
        slots = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        positions = jnp.maximum(slots - start[:, None], 0)
        logits, _ = self._run(tokens, positions, slots, start, None)
        return logits

    def forward(self, tokens, positions, kv: KVCache | None = None):
        if kv is None:
            return self(tokens), None
        slots = kv.length + jnp.arange(tokens.shape[1], dtype=jnp.int32)
        slots = jnp.broadcast_to(slots, tokens.shape)
        return self._run(tokens, positions, slots, kv.start, kv)

    def _run(self, tokens, positions, slots, start, kv):
        c = self.config
        _check_tokens(tokens, c.vocab_size)
        x = jnp.take(self.embed, tokens, axis=0)
        if self.pos_embed is not None:
            x = x + jnp.take(self.pos_embed, positions, axis=0)
        b, t, _ = x.shape
        kv_len = None if kv is None else jnp.broadcast_to(kv.length + t, (b,)).astype(jnp.int32)
        params, static = eqx.partition(self.blocks, eqx.is_array)

        def layer(carry, inp):
            h, kv = carry
            p, i = inp
            blk = eqx.combine(p, static)
            a = blk.attn_norm(h)
            q = (
                _linear(a, blk.attn.q_proj)
                .reshape(b, t, c.n_heads, c.head_dim)
                .transpose(0, 2, 1, 3)
            )
            k = (
                _linear(a, blk.attn.k_proj)
                .reshape(b, t, c.n_kv_heads, c.head_dim)
                .transpose(0, 2, 1, 3)
            )
            v = (
                _linear(a, blk.attn.v_proj)
                .reshape(b, t, c.n_kv_heads, c.head_dim)
                .transpose(0, 2, 1, 3)
            )
            if c.family == "llama":
                q = rope(q, positions, c.rope_theta)
                k = rope(k, positions, c.rope_theta)
            if kv is None:
                keys, values, lens = k, v, None
            else:
                kv = kv.update(i, k, v)
                keys, values = kv.read(i, q.dtype)
                lens = kv_len
            o = pk.flash_attention(
                q,
                keys,
                values,
                q_slots=slots,
                kv_start=start,
                kv_len=lens,
                backend=self.attention_backend,
            )
            o = o.transpose(0, 2, 1, 3).reshape(b, t, c.n_heads * c.head_dim)
            h = h + _linear(o, blk.attn.o_proj)
            h = h + blk.mlp(blk.mlp_norm(h))
            return (h, kv), None

        (x, kv), _ = lax.scan(layer, (x, kv), (params, jnp.arange(c.n_layers, dtype=jnp.int32)))
        x = self.final_norm(x)
        if self.lm_head is None:
            logits = jnp.einsum("btd,vd->btv", x, self.embed)
        else:
            logits = _linear(x, self.lm_head)
        return logits.astype(jnp.float32), kv


def _check_tokens(tokens: Array, vocab: int) -> None:
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise jaxaccel.InputError(f"tokens: expected integer token ids, got dtype {tokens.dtype}")
    if tokens.ndim != 2:
        raise jaxaccel.InputError(f"tokens: expected shape [batch, time], got {tokens.shape}")
    try:
        ids = np.asarray(tokens)
    except jax.errors.TracerArrayConversionError:
        return  # traced: checked by the caller (e.g. `generate`) before tracing
    bad = (ids < 0) | (ids >= vocab)
    if bad.any():
        raise jaxaccel.InputError(
            f"tokens: ids must lie in [0, {vocab}), got {ids[bad][:5].tolist()}"
        )


# ----------------------------------------------------------------------------------------------
# construction
# ----------------------------------------------------------------------------------------------


def _linear_init(key, d_in, d_out, bias: bool, std: float) -> eqx.nn.Linear:
    lin = eqx.nn.Linear(d_in, d_out, use_bias=bias, key=key)
    w = jax.random.normal(key, (d_out, d_in), jnp.float32) * np.float32(std)
    lin = eqx.tree_at(lambda m: m.weight, lin, w)
    if bias:
        lin = eqx.tree_at(lambda m: m.bias, lin, jnp.zeros((d_out,), jnp.float32))
    return lin


def init_decoder(
    config: DecoderConfig, *, key: jax.Array, attention_backend: str = "auto"
) -> Decoder:
    """A randomly initialised decoder (normal(0, 0.02) weights, unit norms).

    Built by one compiled program (drawing each weight eagerly compiled ~60 small programs:
    30 s for SmolLM2's shapes on a loaded 2-core machine).
    """
    if not isinstance(config, DecoderConfig):
        raise jaxaccel.InputError(f"config: expected a DecoderConfig, got {type(config).__name__}")
    return _init_jit(config, key, attention_backend)


@eqx.filter_jit
def _init_jit(config: DecoderConfig, key: jax.Array, attention_backend: str) -> Decoder:
    return _init(config, key, attention_backend)


def _init(config: DecoderConfig, key: jax.Array, attention_backend: str) -> Decoder:
    c = config
    gpt2 = c.family == "gpt2"
    k_emb, k_pos, k_blocks, k_head = jax.random.split(key, 4)
    std = 0.02

    def make_block(k):
        ks = jax.random.split(k, 7)
        norm = lambda: Norm(
            jnp.ones((c.d_model,), jnp.float32),
            jnp.zeros((c.d_model,), jnp.float32) if gpt2 else None,
            c.norm_eps,
        )
        hq, hk = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
        attn = Attention(
            _linear_init(ks[0], c.d_model, hq, gpt2, std),
            _linear_init(ks[1], c.d_model, hk, gpt2, std),
            _linear_init(ks[2], c.d_model, hk, gpt2, std),
            _linear_init(ks[3], hq, c.d_model, gpt2, std / math.sqrt(2 * c.n_layers)),
        )
        mlp = MLP(
            None if gpt2 else _linear_init(ks[4], c.d_model, c.d_ff, False, std),
            _linear_init(ks[5], c.d_model, c.d_ff, gpt2, std),
            _linear_init(ks[6], c.d_ff, c.d_model, gpt2, std / math.sqrt(2 * c.n_layers)),
        )
        return Block(norm(), attn, norm(), mlp)

    blocks = eqx.filter_vmap(make_block)(jax.random.split(k_blocks, c.n_layers))
    final = Norm(
        jnp.ones((c.d_model,), jnp.float32),
        jnp.zeros((c.d_model,), jnp.float32) if gpt2 else None,
        c.norm_eps,
    )
    return Decoder(
        config=c,
        embed=jax.random.normal(k_emb, (c.vocab_size, c.d_model), jnp.float32) * np.float32(std),
        pos_embed=jax.random.normal(k_pos, (c.max_seq_len, c.d_model), jnp.float32)
        * np.float32(std)
        if gpt2
        else None,
        blocks=blocks,
        final_norm=final,
        lm_head=None
        if c.tie_embeddings
        else _linear_init(k_head, c.d_model, c.vocab_size, False, std),
        attention_backend=attention_backend,
    )


# HF names of the per-layer tensors, relative to ``model.layers.{i}.``, and where they live.
_LAYER_PARAMS = {
    "self_attn.q_proj": lambda b: b.attn.q_proj,
    "self_attn.k_proj": lambda b: b.attn.k_proj,
    "self_attn.v_proj": lambda b: b.attn.v_proj,
    "self_attn.o_proj": lambda b: b.attn.o_proj,
    "mlp.gate_proj": lambda b: b.mlp.gate_proj,
    "mlp.up_proj": lambda b: b.mlp.up_proj,
    "mlp.down_proj": lambda b: b.mlp.down_proj,
    "input_layernorm": lambda b: b.attn_norm,
    "post_attention_layernorm": lambda b: b.mlp_norm,
}


def _skeleton(config: DecoderConfig, attention_backend: str) -> Decoder:
    """The decoder's structure with `jax.ShapeDtypeStruct` leaves: `init_decoder` traced by
    `eqx.filter_eval_shape`, so nothing is drawn, allocated or compiled."""
    return eqx.filter_eval_shape(
        _init,
        config,
        jax.random.key(0),  # shapes only: no value is ever drawn from it
        attention_backend,
    )


def from_hf_state_dict(
    config: DecoderConfig, tensors: Mapping[str, Any], *, attention_backend: str = "auto"
) -> Decoder:
    """Build a `Decoder` from HF-named tensors (``model.layers.{i}.self_attn.q_proj.weight``, ...).

    The model's structure comes from `eqx.filter_eval_shape` (no random model is built or
    compiled); each weight is converted to float32 and copied once, per-layer tensors stacked,
    except `load_gguf`'s read-only stacked buffers, which are used as they are.

    Args:
        config: the architecture.
        tensors: ``{HF name: array}`` (numpy, JAX or anything `np.asarray` takes), e.g.
            ``load_gguf(path).tensors`` or `to_hf_state_dict`'s output. Extra names are ignored.
        attention_backend: see `pallas_kernels.flash_attention`.

    Raises:
        MissingTensorError: naming the first missing tensor (a `KeyError`).
        jaxaccel.InputError: ``config`` is not a `DecoderConfig`, ``tensors`` not a mapping, or a
            tensor has the wrong shape or is not numeric.
    """
    if not isinstance(config, DecoderConfig):
        raise jaxaccel.InputError(f"config: expected a DecoderConfig, got {type(config).__name__}")
    if not isinstance(tensors, Mapping):
        raise jaxaccel.InputError(
            f"tensors: expected a mapping of HF names to arrays, got {type(tensors).__name__}"
        )
    skel = _skeleton(config, attention_backend)

    def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in tensors:
            raise MissingTensorError(f"tensors: missing {name!r}")
        try:
            a = np.asarray(tensors[name], np.float32)
        except (TypeError, ValueError) as e:
            raise jaxaccel.InputError(f"tensors[{name!r}]: not a numeric array ({e})") from None
        if a.shape != tuple(shape):
            raise jaxaccel.InputError(
                f"tensors[{name!r}]: expected shape {tuple(shape)}, got {a.shape}"
            )
        return a

    where: list[Callable[[Decoder], Any]] = []
    leaves: list[jax.Array] = []

    def fill(sel: Callable[[Decoder], Any], names: str | list[str], like) -> None:
        # A list of names is stacked (one per layer). Read-only float32 buffers (`load_gguf`'s
        # stacked ones) go to the device as they are; anything else is copied once into a private
        # aligned buffer. Either way JAX on CPU may use the host memory in place, and nobody can
        # write to it (see `_host`).
        if isinstance(names, str):
            a = get(names, like.shape)
            buf = a if shareable(a) else None
        else:
            arrays = [get(n, like.shape[1:]) for n in names]
            buf = as_stacked(arrays)
            a = arrays
        if buf is None:
            buf = aligned_empty(like.shape)
            if isinstance(names, str):
                buf[...] = a
            else:
                for i, x in enumerate(a):
                    buf[i] = x
            buf.flags.writeable = False
        where.append(sel)
        leaves.append(jax.device_put(buf))

    L = config.n_layers
    for rel, sel in _LAYER_PARAMS.items():
        mod = sel(skel.blocks)
        if mod is None:
            continue
        for attr in ("weight", "bias"):
            stacked = getattr(mod, attr)
            if stacked is None:
                continue
            fill(
                lambda m, sel=sel, attr=attr: getattr(sel(m.blocks), attr),
                [f"model.layers.{i}.{rel}.{attr}" for i in range(L)],
                stacked,
            )
    fill(lambda m: m.embed, "model.embed_tokens.weight", skel.embed)
    fill(lambda m: m.final_norm.weight, "model.norm.weight", skel.final_norm.weight)
    if skel.final_norm.bias is not None:
        fill(lambda m: m.final_norm.bias, "model.norm.bias", skel.final_norm.bias)
    if skel.pos_embed is not None:
        fill(lambda m: m.pos_embed, "model.embed_positions.weight", skel.pos_embed)
    if skel.lm_head is not None:
        fill(lambda m: m.lm_head.weight, "lm_head.weight", skel.lm_head.weight)
    model = eqx.tree_at(lambda m: [w(m) for w in where], skel, leaves)
    left = [x for x in jax.tree.leaves(model) if isinstance(x, jax.ShapeDtypeStruct)]
    if left:  # every leaf of the structure is filled above
        raise RuntimeError(f"from_hf_state_dict: {len(left)} leaves left unfilled (a bug)")
    return model


def to_hf_state_dict(model: Decoder) -> dict[str, np.ndarray]:
    """The inverse of `from_hf_state_dict` (float32 numpy arrays)."""
    out: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": np.asarray(model.embed),
        "model.norm.weight": np.asarray(model.final_norm.weight),
    }
    if model.lm_head is not None:
        out["lm_head.weight"] = np.asarray(model.lm_head.weight)
    if model.final_norm.bias is not None:
        out["model.norm.bias"] = np.asarray(model.final_norm.bias)
    if model.pos_embed is not None:
        out["model.embed_positions.weight"] = np.asarray(model.pos_embed)
    for rel, sel in _LAYER_PARAMS.items():
        mod = sel(model.blocks)
        if mod is None:
            continue
        for attr in ("weight", "bias"):
            stacked = getattr(mod, attr)
            if stacked is None:
                continue
            for i in range(model.config.n_layers):
                out[f"model.layers.{i}.{rel}.{attr}"] = np.asarray(stacked[i])
    return out
