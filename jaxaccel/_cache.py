"""`cache`: turn an uncached attention model into one that decodes against a static KV cache.

The cache is explicit pytree state (`KVCache`) threaded through a pure
``step(cache, tokens) -> (logits, cache)``. Keys and values live in preallocated
``[layers, batch, kv_heads, slots, head_dim]`` buffers, written at slot ``length`` and masked by
slot index, so shapes never change while decoding (no recompilation, no rollback needed).
Storage can be float or quantized (int8 / fp8 with one scale per token and head), using the core's
`ScaledTensor` array value.

A model opts in by subclassing `AbstractCacheable`: it exposes its KV layout and a ``forward``
that, given a `KVCache`, writes its new keys/values with `KVCache.update` and attends over
`KVCache.read` (in the spirit of Penzai's ``from_uncached``: the same model code runs cached or
uncached).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float, Int

from ._arrays import ScaledTensor
from ._errors import InputError

__all__ = ["KVCacheConfig", "KVCache", "AbstractCacheable", "CachedModel", "cache"]

Storage = Literal["float32", "bfloat16", "int8", "fp8"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class KVCacheConfig:
    """How to allocate a KV cache.

    Attributes:
        size: slots per sequence (prompt + generated tokens).
        storage: ``"float32"``, ``"bfloat16"``, ``"int8"`` (symmetric, absmax/127 per token and
            head) or ``"fp8"`` (float8_e4m3fn, absmax/448 per token and head).
    """

    size: int
    storage: Storage = "float32"

    def __post_init__(self):
        if not isinstance(self.size, int) or self.size < 1:
            raise InputError(f"KVCacheConfig.size must be a positive int, got {self.size!r}")
        if self.storage not in ("float32", "bfloat16", "int8", "fp8"):
            raise InputError(
                f"KVCacheConfig.storage must be one of float32, bfloat16, int8, fp8; got {self.storage!r}"
            )


_QMAX = {"int8": 127.0, "fp8": 448.0}
_QDTYPE = {"int8": jnp.int8, "fp8": jnp.float8_e4m3fn}


def _quantize_kv(x: Array, storage: str) -> tuple[Array, Array]:
    """Per (token, head) absmax quantization over the last (head_dim) axis."""
    xf = x.astype(jnp.float32)
    scale = jnp.max(jnp.abs(xf), axis=-1, keepdims=True) / np.float32(_QMAX[storage])
    scale = jnp.maximum(scale, np.float32(1e-12))
    y = xf / scale
    if storage == "int8":
        y = jnp.clip(jnp.round(y), -127, 127)
    return y.astype(_QDTYPE[storage]), scale


class KVCache(eqx.Module):
    """Static key/value buffers for all layers, plus where each row's valid slots are.

    Attributes:
        k, v: ``[L, B, Hkv, S, D]`` arrays, or `ScaledTensor` (quantized data + ``[..., 1]`` scales).
        start: ``[B]`` first valid slot per row (prompts left-padded to a common length).
        length: scalar, the next slot to write (equal for every row).
        storage: the `KVCacheConfig.storage` (static).
    """

    k: Any
    v: Any
    start: Int[Array, " B"]
    length: Int[Array, ""]
    storage: str = eqx.field(static=True)

    @staticmethod
    def allocate(
        *, layers: int, batch: int, kv_heads: int, head_dim: int, config: KVCacheConfig
    ) -> KVCache:
        """Empty buffers (all slots invalid until written)."""
        shape = (layers, batch, kv_heads, config.size, head_dim)
        if config.storage in _QDTYPE:
            buf = lambda: ScaledTensor(
                data=jnp.zeros(shape, _QDTYPE[config.storage]),
                scale=jnp.zeros(shape[:-1] + (1,), jnp.float32),
            )
        else:
            buf = lambda: jnp.zeros(shape, jnp.dtype(config.storage))
        return KVCache(
            k=buf(),
            v=buf(),
            start=jnp.zeros((batch,), jnp.int32),
            length=jnp.zeros((), jnp.int32),
            storage=config.storage,
        )

    @property
    def size(self) -> int:
        return self.k.shape[3]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.k.shape)

    def update(
        self, layer: Int[Array, ""], k_new: Float[Array, "B H T D"], v_new: Float[Array, "B H T D"]
    ) -> KVCache:
        """Write this step's keys/values for ``layer`` at slots ``[length, length + T)``."""

        def write(buf, new):
            idx = (layer, jnp.int32(0), jnp.int32(0), self.length, jnp.int32(0))
            if isinstance(buf, ScaledTensor):
                data, scale = _quantize_kv(new, self.storage)
                return ScaledTensor(
                    data=lax.dynamic_update_slice(buf.data, data[None], idx),
                    scale=lax.dynamic_update_slice(buf.scale, scale[None], idx),
                )
            return lax.dynamic_update_slice(buf, new.astype(buf.dtype)[None], idx)

        return dataclasses.replace(self, k=write(self.k, k_new), v=write(self.v, v_new))

    def read(self, layer: Int[Array, ""], dtype: Any = jnp.float32) -> tuple[Array, Array]:
        """Keys and values of ``layer`` as ``[B, Hkv, S, D]`` arrays of ``dtype`` (dequantized)."""

        def get(buf):
            if isinstance(buf, ScaledTensor):
                data = lax.dynamic_index_in_dim(buf.data, layer, 0, keepdims=False)
                scale = lax.dynamic_index_in_dim(buf.scale, layer, 0, keepdims=False)
                return (data.astype(jnp.float32) * scale).astype(dtype)
            return lax.dynamic_index_in_dim(buf, layer, 0, keepdims=False).astype(dtype)

        return get(self.k), get(self.v)

    def advance(self, t: int) -> KVCache:
        """Move the write position past ``t`` new tokens."""
        return dataclasses.replace(self, length=self.length + jnp.int32(t))

    def nbytes(self) -> int:
        """Bytes held by the buffers (data plus scales)."""
        leaves = jax.tree.leaves((self.k, self.v))
        return int(sum(x.size * jnp.dtype(x.dtype).itemsize for x in leaves))

    def report(self) -> str:
        """One line: layout, storage and memory, compared with float32."""
        f32 = 2 * int(np.prod(self.shape)) * 4
        return (
            f"KV cache {self.storage}: {self.shape[0]} layers x batch {self.shape[1]} x "
            f"{self.shape[2]} kv heads x {self.shape[3]} slots x {self.shape[4]} dims = "
            f"{self.nbytes() / 2**20:.2f} MiB ({f32 / self.nbytes():.2f}x smaller than float32)"
        )


class AbstractCacheable(eqx.Module):
    """A model that can run against a `KVCache` (see `cache`)."""

    @abc.abstractmethod
    def kv_layout(self) -> tuple[int, int, int]:
        """``(layers, kv_heads, head_dim)`` of the keys/values this model caches."""

    @abc.abstractmethod
    def forward(
        self,
        tokens: Int[Array, "B T"],
        positions: Int[Array, "B T"],
        kv: KVCache | None = None,
    ) -> tuple[Float[Array, "B T V"], KVCache | None]:
        """Logits for ``tokens``; with a cache, attends over it and returns it updated."""


class CachedModel(eqx.Module):
    """The result of `cache`: ``init`` allocates a cache, ``step`` runs new tokens through it."""

    model: AbstractCacheable
    config: KVCacheConfig = eqx.field(static=True)

    def init(self, batch: int, *, start: Int[Array, " B"] | None = None) -> KVCache:
        """A fresh cache for ``batch`` rows; ``start[b]`` = left padding of row ``b``."""
        layers, heads, dim = self.model.kv_layout()
        kv = KVCache.allocate(
            layers=layers, batch=batch, kv_heads=heads, head_dim=dim, config=self.config
        )
        if start is not None:
            kv = dataclasses.replace(kv, start=jnp.asarray(start, jnp.int32))
        return kv

    def step(self, kv: KVCache, tokens: Int[Array, "B T"]) -> tuple[Float[Array, "B T V"], KVCache]:
        """Run ``tokens`` (written at slots ``length ...``) and return logits and the new cache."""
        t = tokens.shape[1]
        slots = kv.length + jnp.arange(t, dtype=jnp.int32)
        positions = jnp.maximum(slots[None, :] - kv.start[:, None], 0)
        logits, kv = self.model.forward(tokens, positions, kv)
        return logits, kv.advance(t)


def cache(
    model: Any, recipe: KVCacheConfig, *, data: Any = None, key: jax.Array | None = None
) -> CachedModel:
    """Return a cached version of ``model``: same weights, decoding against a static KV cache.

    The same signature as every one-shot transform (``transform(model, recipe, *, data=None,
    key=None)``); the result's ``step`` threads the cache as explicit state.

    Args:
        model: a model implementing `AbstractCacheable` (e.g. ``transformers_jax.Decoder``).
        recipe: a `KVCacheConfig`: cache size and storage (float, bfloat16, int8 or fp8).
        data: unused (the cache needs no calibration); must be None.
        key: unused (nothing random); accepted for the uniform signature.

    Returns:
        A `CachedModel` with ``init(batch)`` and ``step(cache, tokens)``.

    Example:
        >>> cm = jaxaccel.cache(model, jaxaccel.KVCacheConfig(size=512, storage="int8"))
        >>> kv = cm.init(batch=1)
        >>> logits, kv = eqx.filter_jit(cm.step)(kv, prompt_tokens)
    """
    del key
    if not isinstance(model, AbstractCacheable):
        raise InputError(
            f"model: cache needs a model implementing jaxaccel.AbstractCacheable (kv_layout and "
            f"forward with a KVCache), got {type(model).__name__}"
        )
    if not isinstance(recipe, KVCacheConfig):
        raise InputError(f"recipe: expected a KVCacheConfig, got {recipe!r}")
    if data is not None:
        raise InputError("data: the KV cache uses no calibration data; pass data=None")
    return CachedModel(model, recipe)
