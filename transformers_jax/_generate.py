"""Generation under one `jax.jit`: prefill + a `lax.while_loop` of decode steps on a static KV cache.

Prompts of different lengths are left-padded to a bucketed length (a power of two), so a new
prompt length reuses the compiled program; the cache size is bucketed the same way. Rows that hit
a stop token are frozen (they emit padding) and the loop ends when every row has stopped or
``max_new_tokens`` is reached. Quantized models (from `jaxaccel.quantize`) run through
`jaxaccel.accelerate` inside the same program.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import io_callback
from jaxtyping import Array, Float, Int

import jaxaccel

from ._model import Decoder

__all__ = ["Greedy", "Sample", "Sampler", "generate", "Generation", "sample_logits", "perplexity"]


@dataclasses.dataclass(frozen=True, slots=True)
class Greedy:
    """Always take the most likely token."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """Sample from ``softmax(logits / temperature)``, optionally restricted to the ``top_k`` most
    likely tokens and/or the smallest set whose probability reaches ``top_p`` (nucleus)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(
                f"Sample.temperature must be > 0, got {self.temperature}; use Greedy() for greedy decoding"
            )
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise ValueError(f"Sample.top_k must be a positive int or None, got {self.top_k!r}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"Sample.top_p must lie in (0, 1], got {self.top_p!r}")


Sampler = Greedy | Sample


def sample_logits(
    key: jax.Array, logits: Float[Array, "B V"], sampler: Sampler
) -> Int[Array, " B"]:
    """Draw one token per row according to ``sampler``."""
    logits = logits.astype(jnp.float32)
    if isinstance(sampler, Greedy):
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / np.float32(sampler.temperature)
    neg = np.float32(-np.inf)
    if sampler.top_k is not None and sampler.top_k < logits.shape[-1]:
        kth = lax.top_k(logits, sampler.top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, neg, logits)
    if sampler.top_p is not None and sampler.top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly before each token
        keep_sorted = before < np.float32(sampler.top_p)  # always keeps the first token
        keep = (
            jnp.zeros_like(keep_sorted)
            .at[jnp.arange(logits.shape[0])[:, None], order]
            .set(keep_sorted)
        )
        logits = jnp.where(keep, logits, neg)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class Generation:
    """Result of `generate`.

    Attributes:
        tokens: generated ids per row (stop token included when hit; no padding).
        prompt_tokens: total prompt tokens processed.
        new_tokens: total generated tokens.
        seconds: wall time of the call (compile excluded when ``compiled_before``).
        compile_seconds: time spent compiling in this call (0 when the program was cached).
        cache_report: the KV cache's memory report.
    """

    tokens: list[list[int]]
    prompt_tokens: int
    new_tokens: int
    seconds: float
    compile_seconds: float
    cache_report: str

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / max(self.seconds, 1e-9)


def _bucket(n: int, minimum: int = 16) -> int:
    return max(minimum, 1 << max(n - 1, 0).bit_length())


def _program(
    model: Decoder,
    tokens: Int[Array, "B P"],
    start: Int[Array, " B"],
    key: jax.Array,
    *,
    max_new: int,
    sampler: Sampler,
    stop: tuple[int, ...],
    pad: int,
    cache_config: jaxaccel.KVCacheConfig,
    stream: bool,
    on_token: Callable[[np.ndarray], None] | None,
):
    b = tokens.shape[0]
    cm = jaxaccel.cache(model, cache_config)
    kv = cm.init(b, start=start)
    logits, kv = cm.step(kv, tokens)
    out = jnp.full((b, max_new), pad, jnp.int32)
    done = jnp.zeros((b,), bool)
    stop_arr = jnp.asarray(stop if stop else (-1,), jnp.int32)

    def cond(state):
        i, _, done, *_ = state
        return (i < max_new) & ~jnp.all(done)

    def body(state):
        i, out, done, last, kv, key = state
        key, sub = jax.random.split(key)
        tok = sample_logits(sub, last, sampler)
        tok = jnp.where(done, jnp.int32(pad), tok)
        out = lax.dynamic_update_slice(out, tok[:, None], (jnp.int32(0), i))
        if stream:
            io_callback(on_token, None, tok, done, ordered=True)
        done = done | jnp.any(tok[:, None] == stop_arr[None, :], axis=-1)
        logits, kv = cm.step(kv, tok[:, None])
        return i + 1, out, done, logits[:, -1], kv, key

    state = (jnp.int32(0), out, done, logits[:, -1], kv, key)
    i, out, done, _, kv, _ = lax.while_loop(cond, body, state)
    return out, i, kv


# Compiled programs by (program, argument structure, shapes): compile time is reported separately
# and a new prompt in the same bucket reuses the executable.
_EXECUTABLES: dict[Any, Any] = {}


@functools.lru_cache(maxsize=32)
def _compiled(max_new, sampler, stop, pad, cache_config, backend, stream, on_token):
    fn = functools.partial(
        _program,
        max_new=max_new,
        sampler=sampler,
        stop=stop,
        pad=pad,
        cache_config=cache_config,
        stream=stream,
        on_token=on_token,
    )
    return jax.jit(jaxaccel.accelerate(fn, backend=backend))


def generate(
    model: Decoder,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    sampler: Sampler = Greedy(),
    key: jax.Array | None = None,
    stop_tokens: Sequence[int] = (),
    kv_storage: str = "float32",
    backend: str = "auto",
    on_token: Callable[[np.ndarray], None] | None = None,
) -> Generation:
    """Generate continuations of a batch of token prompts, all in one compiled program.

    Args:
        model: a `Decoder`, float or quantized with `jaxaccel.quantize`.
        prompts: token ids per row (rows may differ in length; none may be empty).
        max_new_tokens: tokens to generate at most per row.
        sampler: `Greedy()` or `Sample(temperature=..., top_k=..., top_p=...)`.
        key: PRNG key, required when sampling.
        stop_tokens: ids that end a row (kept in its output).
        kv_storage: KV cache storage: ``"float32"``, ``"bfloat16"``, ``"int8"`` or ``"fp8"``.
        backend: kernel backend for quantized matmuls (see `jaxaccel.accelerate`).
        on_token: called from inside the loop with ``(tokens[B], done[B])`` after every step
            (streaming); ``None`` for no callback.

    Returns:
        A `Generation` with the new tokens and timings.
    """
    cfg = model.config
    if not isinstance(sampler, Greedy | Sample):
        raise TypeError(f"sampler: expected Greedy() or Sample(...), got {sampler!r}")
    if isinstance(sampler, Sample) and key is None:
        raise ValueError("key: sampling needs an explicit PRNG key (jax.random.key(seed))")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    prompts = [list(map(int, p)) for p in prompts]
    if not prompts:
        raise ValueError("prompts: need at least one prompt")
    for r, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompts[{r}] is empty: every row needs at least one token")
        bad = [t for t in p if not 0 <= t < cfg.vocab_size]
        if bad:
            raise ValueError(
                f"prompts[{r}]: token ids must lie in [0, {cfg.vocab_size}), got {bad[:5]}"
            )
    longest = max(map(len, prompts))
    p_len = _bucket(longest)
    size = -(-(p_len + max_new_tokens) // 64) * 64
    if p_len + max_new_tokens > cfg.max_seq_len:
        raise ValueError(
            f"prompt (bucketed to {p_len} tokens) + max_new_tokens={max_new_tokens} exceeds the "
            f"model's max_seq_len={cfg.max_seq_len}"
        )
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else 0
    rows = np.full((len(prompts), p_len), pad, np.int32)
    start = np.zeros((len(prompts),), np.int32)
    for r, p in enumerate(prompts):
        rows[r, p_len - len(p) :] = p
        start[r] = p_len - len(p)
    cache_config = jaxaccel.KVCacheConfig(size=size, storage=kv_storage)
    fn = _compiled(
        max_new_tokens,
        sampler,
        tuple(int(t) for t in stop_tokens),
        int(pad),
        cache_config,
        backend,
        on_token is not None,
        on_token,
    )
    key = jax.random.key(0) if key is None else key  # unused by Greedy
    args = (model, jnp.asarray(rows), jnp.asarray(start), key)
    t0 = time.perf_counter()
    leaves, treedef = jax.tree.flatten(args)
    sig = (fn, treedef, tuple((np.shape(x), jnp.result_type(x)) for x in leaves))
    compiled = _EXECUTABLES.get(sig)
    if compiled is None:
        compiled = _EXECUTABLES[sig] = fn.lower(*args).compile()
    t1 = time.perf_counter()
    out, n, kv = compiled(*args)
    out = np.asarray(jax.block_until_ready(out))
    t2 = time.perf_counter()
    stop_set = set(int(t) for t in stop_tokens)
    results = []
    for r in range(out.shape[0]):
        row = []
        for t in out[r, : int(n)].tolist():
            row.append(t)
            if t in stop_set:
                break
        results.append(row)
    return Generation(
        tokens=results,
        prompt_tokens=sum(map(len, prompts)),
        new_tokens=sum(map(len, results)),
        seconds=t2 - t1,
        compile_seconds=t1 - t0,
        cache_report=kv.report(),
    )


def perplexity(
    model: Decoder, tokens: Sequence[int], *, window: int = 256, backend: str = "auto"
) -> float:
    """Perplexity of ``tokens`` under ``model``: non-overlapping windows of ``window`` tokens,
    each scored from its own start (the first token of each window is context only)."""
    ids = np.asarray(tokens, np.int32)
    n = (len(ids) // window) * window
    if n == 0:
        raise ValueError(f"tokens: need at least window={window} tokens, got {len(ids)}")
    chunks = ids[:n].reshape(-1, window)

    @jax.jit
    def nll(model, chunk):
        logits = jaxaccel.accelerate(lambda m, c: m(c), backend=backend)(model, chunk[None])
        logp = jax.nn.log_softmax(logits[0, :-1], axis=-1)
        return -jnp.take_along_axis(logp, chunk[1:, None], axis=-1).sum()

    total = sum(float(nll(model, jnp.asarray(c))) for c in chunks)
    return float(np.exp(total / (chunks.shape[0] * (window - 1))))


def chat(
    model: Decoder,
    tokenizer: Any,
    messages: Sequence[dict[str, str]],
    *,
    max_new_tokens: int = 256,
    sampler: Sampler = Greedy(),
    key: jax.Array | None = None,
    kv_storage: str = "float32",
) -> str:
    """Reply to a chat: apply the tokenizer's chat template, generate until an end token, decode.

    Args:
        model: the decoder (float or quantized).
        tokenizer: a `transformers_jax.Tokenizer` (e.g. ``load_gguf(path).tokenizer``).
        messages: ``[{"role": "system"|"user"|"assistant", "content": ...}, ...]``.
        max_new_tokens, sampler, key, kv_storage: as in `generate`.

    Returns:
        The assistant's reply as text (special tokens removed).
    """
    if not messages:
        raise ValueError("messages: need at least one message")
    prompt = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True)
    ids = tokenizer.encode(prompt)
    stop = sorted({t for t in (model.config.eos_token_id, tokenizer.eos_id) if t is not None})
    out = generate(
        model,
        [ids],
        max_new_tokens=max_new_tokens,
        sampler=sampler,
        key=key,
        stop_tokens=stop,
        kv_storage=kv_storage,
    )
    return tokenizer.decode([t for t in out.tokens[0] if t not in stop])
