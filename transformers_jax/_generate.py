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
import math
import numbers
import operator
import sys
import time
import typing
from collections.abc import Callable, Collection, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import io_callback
from jaxtyping import Array, Float, Int

import jaxaccel

from ._model import Decoder

__all__ = [
    "Greedy",
    "Sample",
    "Sampler",
    "TextStreamer",
    "generate",
    "Generation",
    "sample_logits",
    "perplexity",
]


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
        t = self.temperature
        if not _is_real(t) or not (math.isfinite(t) and t > 0):
            raise jaxaccel.InputError(
                f"Sample.temperature: expected a finite number > 0, got {t!r}; "
                "use Greedy() for greedy decoding"
            )
        k = self.top_k
        if k is not None and (isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1):
            raise jaxaccel.InputError(
                f"Sample.top_k: expected a positive integer or None, got {k!r}"
            )
        p = self.top_p
        if p is not None and not (_is_real(p) and 0.0 < p <= 1.0):
            raise jaxaccel.InputError(
                f"Sample.top_p: expected a number in (0, 1] or None, got {p!r}"
            )


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


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


class TextStreamer:
    """An ``on_token`` callback for `generate` that prints row 0's text as its tokens arrive.

    It decodes the whole row each time, so characters spread over several tokens come out whole;
    it stops at the first of ``stop`` (the stop token itself is not printed).

    Example:
        >>> generate(model, [ids], max_new_tokens=64, on_token=TextStreamer(tok, {tok.eos_id}))
    """

    def __init__(self, tokenizer: Any, stop: Collection[int] = (), *, file: Any = None):
        self.tok, self.stop, self.file = tokenizer, frozenset(stop), file
        self.ids: list[int] = []
        self.shown = ""
        self.done = False

    def __call__(self, tokens: np.ndarray, done: np.ndarray) -> None:
        if self.done or bool(done[0]):
            return
        t = int(tokens[0])
        if t in self.stop:
            self.done = True
            return
        self.ids.append(t)
        text = self.tok.decode(self.ids)
        if not text.endswith("\ufffd"):
            out = self.file or sys.stdout
            out.write(text[len(self.shown) :])
            out.flush()
            self.shown = text


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
        prompts: token ids per row (rows may differ in length; none may be empty), each id in
            ``[0, vocab_size)``; a string is refused (encode it with the tokenizer first).
        max_new_tokens: tokens to generate at most per row (>= 1).
        sampler: `Greedy()` or `Sample(temperature=..., top_k=..., top_p=...)`.
        key: PRNG key, required when sampling.
        stop_tokens: ids that end a row (kept in its output), in ``[0, vocab_size)``.
        kv_storage: KV cache storage: ``"float32"``, ``"bfloat16"``, ``"int8"`` or ``"fp8"``.
        backend: kernel backend for quantized matmuls (see `jaxaccel.accelerate`).
        on_token: called from inside the loop with ``(tokens[B], done[B])`` after every step
            (streaming); ``None`` for no callback.

    Returns:
        A `Generation` with the new tokens and timings.

    Raises:
        jaxaccel.InputError: a bad argument (the message names it): not a `Decoder`, no key
            when sampling, ``max_new_tokens < 1``, empty or out-of-vocabulary prompts or stop
            tokens, an unknown ``kv_storage``, or a prompt too long for the model.
    """
    cfg = _check_model(model)
    if not isinstance(sampler, Greedy | Sample):
        raise jaxaccel.InputError(f"sampler: expected Greedy() or Sample(...), got {sampler!r}")
    if isinstance(sampler, Sample) and key is None:
        raise jaxaccel.InputError("key: sampling needs an explicit PRNG key (jax.random.key(seed))")
    if key is not None:
        key = _check_key(key)
    max_new_tokens = _positive_int(max_new_tokens, "max_new_tokens")
    prompts = _token_rows(prompts, cfg.vocab_size)
    stop_tokens = _token_ids(stop_tokens, cfg.vocab_size, "stop_tokens")
    if on_token is not None and not callable(on_token):
        raise jaxaccel.InputError(f"on_token: expected a callable or None, got {on_token!r}")
    storages = typing.get_args(typing.get_type_hints(jaxaccel.KVCacheConfig)["storage"])
    if kv_storage not in storages:
        raise jaxaccel.InputError(
            f"kv_storage: expected one of {', '.join(storages)}; got {kv_storage!r}"
        )
    longest = max(map(len, prompts))
    p_len = _bucket(longest)
    size = -(-(p_len + max_new_tokens) // 64) * 64
    if p_len + max_new_tokens > cfg.max_seq_len:
        raise jaxaccel.InputError(
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
    if key is None:  # Greedy draws nothing; the program still takes a key argument
        key = jax.random.key(0)
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
    each scored from its own start (the first token of each window is context only).

    Raises:
        jaxaccel.InputError: ``window`` < 2 or longer than the model's ``max_seq_len``; fewer
            than ``window`` tokens; token ids outside the vocabulary.
    """
    cfg = _check_model(model)
    window = _positive_int(window, "window")
    if not 2 <= window <= cfg.max_seq_len:
        raise jaxaccel.InputError(
            f"window: expected 2 <= window <= max_seq_len={cfg.max_seq_len}, got {window}"
        )
    ids = np.asarray(_token_ids(tokens, cfg.vocab_size, "tokens"), np.int32)
    n = (len(ids) // window) * window
    if n == 0:
        raise jaxaccel.InputError(f"tokens: need at least window={window} tokens, got {len(ids)}")
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
    if isinstance(messages, str) or not messages:
        raise jaxaccel.InputError(
            "messages: need at least one {'role': ..., 'content': ...} message"
        )
    if not callable(getattr(tokenizer, "apply_chat_template", None)):
        raise jaxaccel.InputError(
            f"tokenizer: expected a transformers_jax.Tokenizer, got {type(tokenizer).__name__}"
        )
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


# ----------------------------------------------------------------------------------------------
# argument checks (each names the argument)
# ----------------------------------------------------------------------------------------------


def _check_model(model: Any):
    if not isinstance(model, Decoder):
        raise jaxaccel.InputError(
            f"model: expected a transformers_jax.Decoder (from from_hf_state_dict or "
            f"init_decoder, optionally quantized), got {type(model).__name__}"
        )
    return model.config


def _check_key(key: Any) -> jax.Array:
    if isinstance(key, jax.Array):
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
            return key
        if key.shape == (2,) and key.dtype == jnp.uint32:
            return jax.random.wrap_key_data(key)
    raise jaxaccel.InputError(
        f"key: expected one JAX PRNG key (jax.random.key(seed)), got {_brief(key)}"
    )


def _positive_int(x: Any, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < 1:
        raise jaxaccel.InputError(f"{name}: expected a positive integer, got {x!r}")
    return int(x)


def _token_ids(ids: Any, vocab: int, name: str) -> list[int]:
    if isinstance(ids, str | bytes):
        raise jaxaccel.InputError(
            f"{name}: expected token ids, got a {type(ids).__name__} (encode text with the "
            "tokenizer first)"
        )
    try:
        if isinstance(ids, np.ndarray | jax.Array):
            if ids.ndim != 1 or not jnp.issubdtype(ids.dtype, jnp.integer):
                raise TypeError
            out = np.asarray(ids).tolist()
        else:
            out = [operator.index(t) for t in ids]
    except TypeError:
        raise jaxaccel.InputError(
            f"{name}: expected a sequence of integer token ids, got {_brief(ids)}"
        ) from None
    bad = [t for t in out if not 0 <= t < vocab]
    if bad:
        raise jaxaccel.InputError(f"{name}: token ids must lie in [0, {vocab}), got {bad[:5]}")
    return out


def _brief(x: Any) -> str:
    if isinstance(x, np.ndarray | jax.Array):
        return f"an array of dtype {x.dtype} and shape {x.shape}"
    return f"{x!r:.60}"


def _token_rows(prompts: Any, vocab: int) -> list[list[int]]:
    if isinstance(prompts, str | bytes):
        raise jaxaccel.InputError(
            "prompts: expected a list of token-id lists, got a string (encode it with the "
            "tokenizer and pass [ids])"
        )
    try:
        rows = list(prompts)
    except TypeError:
        raise jaxaccel.InputError(
            f"prompts: expected a list of token-id lists, got {type(prompts).__name__}"
        ) from None
    if not rows:
        raise jaxaccel.InputError("prompts: need at least one prompt")
    out = []
    for r, p in enumerate(rows):
        if isinstance(p, numbers.Integral):
            raise jaxaccel.InputError(
                f"prompts[{r}]: expected a list of token ids, got the single id {p!r} "
                "(pass [[ids...]] for one prompt)"
            )
        ids = _token_ids(p, vocab, f"prompts[{r}]")
        if not ids:
            raise jaxaccel.InputError(f"prompts[{r}] is empty: every row needs at least one token")
        out.append(ids)
    return out
