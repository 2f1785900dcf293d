"""Model configurations: frozen, typed, hashable (usable as static arguments of `jax.jit`)."""

from __future__ import annotations

import dataclasses
from typing import Literal

import jaxaccel

__all__ = ["DecoderConfig"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DecoderConfig:
    """A decoder-only transformer.

    ``family="llama"``: RoPE, RMSNorm, SwiGLU MLP, grouped-query attention, no biases.
    ``family="gpt2"``: learned absolute positions, LayerNorm (with bias), GELU MLP, biases,
    multi-head attention (``n_kv_heads == n_heads``).

    Attributes:
        vocab_size: tokens in the vocabulary.
        d_model: residual width.
        n_layers: decoder blocks.
        n_heads: query heads.
        n_kv_heads: key/value heads (GQA when smaller than ``n_heads``; must divide it).
        head_dim: width of one head.
        d_ff: hidden width of the MLP.
        max_seq_len: longest sequence (positions) the model supports.
        rope_theta: RoPE base frequency (llama).
        norm_eps: epsilon of RMSNorm / LayerNorm.
        tie_embeddings: the output head reuses the token embedding matrix.
        family: ``"llama"`` or ``"gpt2"``.
        bos_token_id, eos_token_id, pad_token_id: special tokens (``None`` if absent).
    """

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    max_seq_len: int = 2048
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    family: Literal["llama", "gpt2"] = "llama"
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self):
        for name in (
            "vocab_size",
            "d_model",
            "n_layers",
            "n_heads",
            "n_kv_heads",
            "head_dim",
            "d_ff",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise jaxaccel.InputError(f"DecoderConfig.{name} must be a positive int, got {v!r}")
        if self.n_heads % self.n_kv_heads:
            raise jaxaccel.InputError(
                f"DecoderConfig.n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads}"
            )
        if self.family not in ("llama", "gpt2"):
            raise jaxaccel.InputError(
                f"DecoderConfig.family must be 'llama' or 'gpt2', got {self.family!r}"
            )
        if self.family == "gpt2" and self.n_kv_heads != self.n_heads:
            raise jaxaccel.InputError(
                "DecoderConfig: gpt2 uses multi-head attention (n_kv_heads == n_heads)"
            )
