"""The shared driver: chunked ``lax.scan`` runs with progress, finite checks and checkpoint/resume.

Samplers are pure ``init``/``step`` functions (BlackJAX's shape). The driver runs ``step`` in jitted
chunks of ``lax.scan``; after each chunk it checks that no log-density or gradient went non-finite
(stopping with the parameter values and where), lets the sampler adapt (train its flow), records
what the phase keeps, and writes a checkpoint (`jaxaccel.runtime.Checkpointer`). The key of chunk
``i`` is ``fold_in(key, i)``, so a run resumed from a checkpoint produces exactly the samples of an
uninterrupted run. Progress goes through `jaxaccel.runtime.Progress`: "compiling…" while a chunk
length runs for the first time, "resumed from step N" after a checkpoint, and `ChunkRunner.tick`
moves the bar from inside a chunk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxaccel import Error, InputError, runtime

__all__ = ["SamplerError", "ChunkRunner", "Phase", "as_key", "checkpointer", "lenient"]


def lenient(fn: Callable) -> Callable:
    """Run ``fn`` with JAX's standard dtype promotion and rank broadcasting.

    The libraries the samplers build on (optax schedules, numpyro distributions and NUTS, flowjax)
    rely on implicit promotion, so a caller's strict settings (our test-suite's) must not reach
    them.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
            return fn(*args, **kwargs)

    return wrapper


class SamplerError(Error, FloatingPointError):
    """A run stopped because the target returned a non-finite value (message says where)."""


def as_key(key) -> jax.Array:
    """A typed PRNG key (flowjax needs them) from a typed key or a raw ``uint32[2]`` one."""
    if not isinstance(key, jax.Array | np.ndarray):
        raise InputError(f"key: expected a JAX PRNG key (jax.random.key(seed)), got {key!r}")
    key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise InputError(f"key: expected a single PRNG key, got a batch of shape {key.shape}")
        return key
    if key.shape != (2,) or key.dtype != jnp.uint32:
        raise InputError(
            f"key: expected a JAX PRNG key (jax.random.key(seed)), got {key.dtype}{key.shape}"
        )
    return jax.random.wrap_key_data(key)


def checkpointer(folder, sampler, target, key, extra: Any = None) -> runtime.Checkpointer:
    """The checkpointer of one run: its fingerprint is the sampler's settings, the target's
    dimension, the key and the caller's ``extra`` (e.g. a digest of the data, which the sampler
    cannot see), so a checkpoint never resumes a different run."""
    return runtime.Checkpointer(
        folder,
        runtime.fingerprint({"sampler": repr(sampler), "dim": target.dim, "extra": extra}, key),
    )


@dataclasses.dataclass(frozen=True)
class Phase:
    """``n_chunks`` chunks of ``chunk_len`` steps; ``record`` keeps the chunks' records."""

    name: str
    n_chunks: int
    chunk_len: int
    record: bool


def check_finite(info: dict[str, Any], target, what: str, chunk_start: int) -> None:
    """Raise `SamplerError` if a step flagged a non-finite value.

    ``info["bad"]`` is bool ``[steps, chains]`` (or ``[steps]``), ``info["bad_z"]`` the
    offending unconstrained point per step/chain, ``info["bad_where"]`` an int code.
    """
    bad = np.asarray(info["bad"])
    if not bad.any():
        return
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    z = np.asarray(info["bad_z"])[idx]
    where = WHERE[int(np.asarray(info["bad_where"])[idx])]
    chain = f", chain {idx[1]}" if len(idx) > 1 else ""
    raise SamplerError(
        f"{what}: {where} at step {chunk_start + idx[0]}{chain}, parameters "
        f"{target.describe(z)}; the log-density must be finite (or -inf outside the support) "
        "with a finite gradient wherever it is finite"
    )


WHERE = {
    0: "log-density is NaN/+inf at a local (MALA) proposal",
    1: "gradient of the log-density is not finite at a local (MALA) proposal",
    2: "log-density is NaN/+inf at a flow proposal",
    3: "gradient of the log-density is not finite at a flow proposal",
    4: "log-density is not finite at a flow draw during variational training",
    5: "log-density is NaN/+inf at a NUTS state",
    6: "gradient of the log-density is not finite at a flow draw during variational training",
    7: "the flow's training gradient is not finite (flow instability; lower the learning rate)",
}


def flag_bad(lp, grad, code_lp: int, code_grad: int):
    """``(bad, where)`` for a log-density value and its gradient (``-inf`` alone is allowed)."""
    lp_bad = jnp.isnan(lp) | (lp == jnp.inf)
    grad_bad = jnp.isfinite(lp) & ~jnp.all(jnp.isfinite(grad), axis=-1)
    where = jnp.where(lp_bad, code_lp, code_grad)
    return lp_bad | grad_bad, where


class ChunkRunner:
    """Runs the phases of a sampler with checkpoints, progress and finite checks.

    ``step_chunk(state, keys, phase) -> (state, info)`` runs one chunk; ``adapt(key, state, info,
    phase)`` (optional) runs between chunks; ``record(state, info)`` returns the arrays a
    recording phase keeps; ``explain(info)`` (optional) may refine ``info``'s failure fields on
    the host before the finite check raises.
    """

    def __init__(
        self,
        *,
        target,
        step_chunk: Callable,
        adapt: Callable | None,
        record: Callable[[Any, Any], dict[str, Any]],
        checkpoint: runtime.Checkpointer,
        progress: bool,
        desc: str,
        explain: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ):
        self.target = target
        self.step_chunk = step_chunk
        self.adapt = adapt
        self.record = record
        self.checkpoint = checkpoint
        self.progress = progress
        self.desc = desc
        self.explain = explain
        self.bar: runtime.Progress | None = None
        self._every = 1

    def tick(self, done) -> None:
        """From inside a chunk being traced: move the bar to ``done`` (a traced step count)."""
        if self.bar is not None:
            self.bar.tick(done, every=self._every)

    def run(self, key, state, phases: list[Phase]):
        chunks = [(p, i) for p in phases for i in range(p.n_chunks)]
        total_steps = sum(p.n_chunks * p.chunk_len for p in phases)
        records: dict[str, list[np.ndarray]] = {}
        done = 0
        found = self.checkpoint.restore(state)
        if found is not None:
            done, state = found.step, found.state
            records = {k: [v] for k, v in found.arrays.items()}
        step0 = sum(p.chunk_len for p, _ in chunks[:done])
        self._every = max(1, max((p.chunk_len for p in phases), default=1) // 20)
        compiled: set[int] = set()
        with runtime.Progress(total_steps, self.desc, enabled=self.progress) as bar:
            self.bar = bar
            bar.resumed(step0)
            try:
                for c in range(done, len(chunks)):
                    phase, _ = chunks[c]
                    kc = jax.random.fold_in(key, c)
                    keys = jax.random.split(kc, phase.chunk_len)
                    first = phase.chunk_len not in compiled
                    with bar.compiling() if first else contextlib.nullcontext():
                        state, info = self.step_chunk(state, keys, phase)
                        jax.block_until_ready(state)
                    compiled.add(phase.chunk_len)
                    if self.explain is not None and np.asarray(info["bad"]).any():
                        info = self.explain(info)
                    check_finite(info, self.target, f"{self.desc} ({phase.name})", step0)
                    if phase.record:
                        for k, v in self.record(state, info).items():
                            records.setdefault(k, []).append(np.asarray(v))
                    if self.adapt is not None:
                        with bar.compiling() if c == done else contextlib.nullcontext():
                            state = self.adapt(jax.random.fold_in(kc, 1), state, info, phase)
                    step0 += phase.chunk_len
                    arrays = {k: np.concatenate(v, axis=0) for k, v in records.items() if v}
                    self.checkpoint.save(c + 1, state, arrays=arrays)
                    bar.set(step0, **_postfix(info))
            finally:
                self.bar = None
        return state, {k: np.concatenate(v, axis=0) for k, v in records.items() if v}


def _postfix(info) -> dict[str, float]:
    out = {}
    for k in ("accept_local", "accept_global", "loss", "accept"):
        if k in info:
            out[k] = float(np.mean(np.asarray(info[k])))
    return out
