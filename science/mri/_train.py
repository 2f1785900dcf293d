"""Training loop: optax Adam with a cosine schedule on batches simulated on the fly
(`simulate_batch`), checkpointed with `jaxaccel.runtime.Checkpointer` and resumed on rerun.

Loss (`LOSS_NAME`): L1 between the magnitude of the reconstruction and the target (for RIM/CIRIM,
averaged over every step's estimate, as RIMs are trained). A checkpoint holds the parameters, the
optimiser state and the loss history; it is fingerprinted by the `TrainConfig`, the key and the
initial weights, so it never resumes another run.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxaccel import runtime

from ._data import MaskBank, simulate_batch
from ._physics import MRIError

__all__ = ["TrainConfig", "Trained", "train", "reconstruction_loss", "LOSS_NAME"]

LOSS_NAME = "L1 magnitude loss"


class Trained(NamedTuple):
    """What `train` returns: the model, the loss of every step (resumed ones included) and the
    step the run resumed from (0 for a fresh run)."""

    model: Any
    losses: list[float]
    resumed_from: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Training settings (sizes in pixels; accelerations with their centre fractions)."""

    steps: int = 200
    batch: int = 2
    lr: float = 1e-3
    shape: tuple[int, int] = (128, 128)
    accelerations: tuple[float, ...] = (4.0, 8.0)
    center_fractions: tuple[float, ...] = (0.08, 0.04)
    n_coils: int = 8
    noise: float = 0.01
    checkpoint_every: int = 50

    def __post_init__(self):
        for name in ("steps", "batch", "checkpoint_every", "n_coils"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise MRIError(f"{name}: expected an integer >= 1, got {v!r}")
        if not (isinstance(self.lr, int | float) and np.isfinite(self.lr) and self.lr > 0):
            raise MRIError(f"lr: expected a finite number > 0, got {self.lr!r}")


def reconstruction_loss(model, sample) -> jax.Array:
    """Mean L1 of magnitudes over a batch (every step's estimate for models with ``all_steps``)."""

    def one(k, m, maps, target):
        if "all_steps" in model.__call__.__code__.co_varnames:
            out = model(k, m, maps, all_steps=True)
            return jnp.mean(jnp.abs(jnp.abs(out) - target[None]))
        return jnp.mean(jnp.abs(jnp.abs(model(k, m, maps)) - target))

    return jnp.mean(jax.vmap(one)(sample.kspace, sample.mask, sample.maps, sample.target))


@functools.partial(jax.jit, static_argnames=("batch", "shape", "n_coils", "noise"))
def _simulate(key, masks, *, batch, shape, n_coils, noise):
    """One training batch (`simulate_batch`), jitted apart from the step: models of the same
    ``TrainConfig`` share its compilation (the simulation is as costly to compile as a network)."""
    bank = MaskBank(masks, np.zeros(0, np.float32))
    return simulate_batch(batch, shape, bank, n_coils=n_coils, noise=noise, key=key)


@functools.lru_cache(maxsize=16)
def _optimiser(config: TrainConfig) -> optax.GradientTransformation:
    """Adam with a cosine schedule and gradient clipping; one object per config, so `_step`'s
    compilation is reused by every run of the same config and model structure."""
    schedule = optax.cosine_decay_schedule(config.lr, config.steps, alpha=0.05)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))


@eqx.filter_jit
def _step(params, static, state, sample, opt):
    """One optimiser step on a simulated batch: (params, state, loss)."""
    loss, grads = jax.value_and_grad(lambda p: reconstruction_loss(eqx.combine(p, static), sample))(
        params
    )
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss


def _digest(params) -> str:
    """A hash of the initial weights (a checkpoint of other initial weights is another run)."""
    h = hashlib.sha256(str(jax.tree_util.tree_structure(params)).encode())
    for leaf in jax.tree_util.tree_leaves(params):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()[:16]


def train(
    model,
    config: TrainConfig,
    *,
    key,
    folder: Path | None = None,
    progress: bool = True,
    desc: str = "train",
    until: int | None = None,
) -> Trained:
    """Train ``model`` on simulated data; returns `Trained` (model, losses, resumed_from).

    With ``folder``, checkpoints go there and an existing checkpoint of the same run is resumed (a
    checkpoint of another run raises `jaxaccel.CheckpointError`). ``until``: stop (with a
    checkpoint) after that step, e.g. to fit a time budget; a later call resumes and ends as one
    uninterrupted run would."""
    if not isinstance(config, TrainConfig):
        raise MRIError(f"config: expected a TrainConfig, got {type(config).__name__}")
    bank = MaskBank.build(
        config.shape[-1],
        config.accelerations,
        config.center_fractions,
        key=jax.random.fold_in(key, 7),
    )
    opt = _optimiser(config)
    params, static = eqx.partition(model, eqx.is_array)
    state = opt.init(params)
    ckpt = runtime.Checkpointer(folder, runtime.fingerprint(config, key, _digest(params)))
    start, losses = 0, []
    found = ckpt.restore((params, state))
    if found is not None:
        start, (params, state) = found.step, found.state
        losses = [float(x) for x in found.arrays["losses"]]

    def batch(i):
        return _simulate(
            jax.random.fold_in(key, i),
            jnp.asarray(bank.masks),
            batch=config.batch,
            shape=tuple(config.shape),
            n_coils=config.n_coils,
            noise=float(config.noise),
        )

    last = config.steps if until is None else min(until, config.steps)
    with (
        runtime.Progress(config.steps, f"{desc} ({LOSS_NAME})", enabled=progress) as bar,
        jax.numpy_dtype_promotion("standard"),  # optax's step count is an int
    ):
        bar.resumed(start)
        for i in range(start, last):
            if i == start:
                with bar.compiling():
                    params, state, loss = _step(params, static, state, batch(i), opt)
                    loss = float(loss)
            else:
                params, state, loss = _step(params, static, state, batch(i), opt)
                loss = float(loss)
            if not np.isfinite(loss):
                raise MRIError(f"training: the {LOSS_NAME} became {loss} at step {i}; lower lr")
            losses.append(loss)
            bar.update(1, loss=loss)
            done = i + 1
            if done % config.checkpoint_every == 0 or done == last:
                ckpt.save(done, (params, state), arrays={"losses": np.asarray(losses, np.float64)})
    return Trained(eqx.combine(params, static), losses, start)
