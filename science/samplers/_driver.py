"""The shared driver: chunked ``lax.scan`` runs with progress, finite checks and checkpoint/resume.

Samplers are pure ``init``/``step`` functions (BlackJAX's shape). The driver runs ``step`` in jitted
chunks of ``lax.scan``; after each chunk it checks that no log-density or gradient went non-finite
(stopping with the parameter values and where), lets the sampler adapt (train its flow), records
what the phase keeps, and writes a checkpoint. The key of chunk ``i`` is ``fold_in(key, i)``, so a
run resumed from a checkpoint produces exactly the samples of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "SamplerError",
    "Checkpoint",
    "ChunkRunner",
    "Progress",
    "as_key",
    "key_fingerprint",
    "lenient",
]


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


class SamplerError(FloatingPointError):
    """A run stopped because the target returned a non-finite value (message says where)."""


def as_key(key) -> jax.Array:
    """A typed PRNG key (flowjax needs them) from a typed key or a raw ``uint32[2]`` one."""
    key = key if isinstance(key, jax.Array) else jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise TypeError(f"key: expected a single PRNG key, got a batch of shape {key.shape}")
        return key
    if key.shape != (2,) or key.dtype != jnp.uint32:
        raise TypeError(
            f"key: expected a JAX PRNG key (jax.random.key(seed)), got {key.dtype}{key.shape}"
        )
    return jax.random.wrap_key_data(key)


def key_fingerprint(key) -> list[int]:
    return np.asarray(jax.random.key_data(key)).tolist()


class Progress:
    """A tqdm progress bar on stderr (silent when disabled)."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False, unit="step")

    def update(self, n: int, **postfix):
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: f"{v:.3g}" for k, v in postfix.items()})

    def close(self):
        if self._bar is not None:
            self._bar.close()


class Checkpoint:
    """State + records of a run in ``folder``, written atomically after every chunk.

    ``fingerprint`` (sampler settings, target size, key) must match on resume, so a checkpoint
    is never silently applied to a different run.
    """

    def __init__(self, folder: str | os.PathLike | None, fingerprint: dict[str, Any]):
        self.folder = None if folder is None else Path(folder)
        self.fingerprint = hashlib.sha256(
            json.dumps(fingerprint, sort_keys=True, default=str).encode()
        ).hexdigest()[:16]

    def load(self, like_state: Any) -> tuple[int, Any, dict[str, list[np.ndarray]]] | None:
        if self.folder is None or not (self.folder / "checkpoint.json").exists():
            return None
        meta = json.loads((self.folder / "checkpoint.json").read_text())
        if meta.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"checkpoint in {self.folder} belongs to a different run (other settings, target or "
                "seed); delete the folder's checkpoint.* files or choose another output folder"
            )
        state = eqx.tree_deserialise_leaves(self.folder / "checkpoint.eqx", like_state)
        records: dict[str, list[np.ndarray]] = {}
        with np.load(self.folder / "checkpoint.npz") as f:
            for name in f.files:
                records[name] = [f[name]] if f[name].size else []
        return int(meta["chunks_done"]), state, records

    def save(self, chunks_done: int, state: Any, records: dict[str, list[np.ndarray]]):
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / "checkpoint.tmp"
        eqx.tree_serialise_leaves(tmp.with_suffix(".eqx.tmp"), state)
        arrays = {
            k: (np.concatenate(v, axis=0) if v else np.zeros((0,))) for k, v in records.items()
        }
        with open(tmp.with_suffix(".npz.tmp"), "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp.with_suffix(".eqx.tmp"), self.folder / "checkpoint.eqx")
        os.replace(tmp.with_suffix(".npz.tmp"), self.folder / "checkpoint.npz")
        meta = {"fingerprint": self.fingerprint, "chunks_done": chunks_done, "time": time.time()}
        (self.folder / "checkpoint.json.tmp").write_text(json.dumps(meta))
        os.replace(self.folder / "checkpoint.json.tmp", self.folder / "checkpoint.json")


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
    """Runs the phases of a sampler with checkpoints, progress and finite checks."""

    def __init__(
        self,
        *,
        target,
        step_chunk: Callable,
        adapt: Callable | None,
        record: Callable[[Any, Any], dict[str, Any]],
        checkpoint: Checkpoint,
        progress: bool,
        desc: str,
    ):
        self.target = target
        self.step_chunk = step_chunk
        self.adapt = adapt
        self.record = record
        self.checkpoint = checkpoint
        self.progress = progress
        self.desc = desc

    def run(self, key, state, phases: list[Phase]):
        chunks = [(p, i) for p in phases for i in range(p.n_chunks)]
        total_steps = sum(p.n_chunks * p.chunk_len for p in phases)
        records: dict[str, list[np.ndarray]] = {}
        done = 0
        loaded = self.checkpoint.load(state)
        if loaded is not None:
            done, state, records = loaded
        bar = Progress(total_steps, self.desc, self.progress)
        bar.update(sum(p.chunk_len for p, _ in chunks[:done]))
        step0 = sum(p.chunk_len for p, _ in chunks[:done])
        try:
            for c in range(done, len(chunks)):
                phase, _ = chunks[c]
                kc = jax.random.fold_in(key, c)
                keys = jax.random.split(kc, phase.chunk_len)
                state, info = self.step_chunk(state, keys, phase)
                check_finite(info, self.target, f"{self.desc} ({phase.name})", step0)
                if phase.record:
                    for k, v in self.record(state, info).items():
                        records.setdefault(k, []).append(np.asarray(v))
                if self.adapt is not None:
                    state = self.adapt(jax.random.fold_in(kc, 1), state, info, phase)
                step0 += phase.chunk_len
                self.checkpoint.save(c + 1, state, records)
                bar.update(phase.chunk_len, **_postfix(info))
        finally:
            bar.close()
        return state, {k: np.concatenate(v, axis=0) for k, v in records.items() if v}


def _postfix(info) -> dict[str, float]:
    out = {}
    for k in ("accept_local", "accept_global", "loss", "accept"):
        if k in info:
            out[k] = float(np.mean(np.asarray(info[k])))
    return out
