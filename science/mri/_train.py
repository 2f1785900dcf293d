"""Training loop: optax Adam with a cosine schedule on batches simulated on the fly
(`simulate_batch`), checkpoint every ``checkpoint_every`` steps and resume, progress on stderr.

Loss: L1 between the magnitude of the reconstruction and the target (for RIM/CIRIM, averaged over
every step's estimate, as RIMs are trained). Checkpoints hold the model, the optimiser state, the
step and the loss history (``eqx.tree_serialise_leaves`` plus a JSON sidecar); a rerun with the
same folder resumes from the last one.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._data import MaskBank, simulate_batch
from ._physics import MRIError

__all__ = ["TrainConfig", "train", "reconstruction_loss"]


@dataclasses.dataclass(frozen=True)
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
            if int(getattr(self, name)) < 1:
                raise MRIError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise MRIError(f"lr: expected > 0, got {self.lr}")


def reconstruction_loss(model, sample) -> jax.Array:
    """Mean L1 of magnitudes over a batch (every step's estimate for models with ``all_steps``)."""

    def one(k, m, maps, target):
        if "all_steps" in model.__call__.__code__.co_varnames:
            out = model(k, m, maps, all_steps=True)
            return jnp.mean(jnp.abs(jnp.abs(out) - target[None]))
        return jnp.mean(jnp.abs(jnp.abs(model(k, m, maps)) - target))

    return jnp.mean(jax.vmap(one)(sample.kspace, sample.mask, sample.maps, sample.target))


def train(
    model,
    config: TrainConfig,
    *,
    key,
    folder: Path | None = None,
    progress: bool = True,
    until: int | None = None,
):
    """Train ``model`` on simulated data; returns (model, losses). With ``folder``, checkpoints go
    there and an existing checkpoint is resumed. ``until``: stop (with a checkpoint) after that
    step, e.g. to fit a time budget; a later call resumes and ends as one uninterrupted run would."""
    bank = MaskBank.build(
        jax.random.fold_in(key, 7), config.shape[-1], config.accelerations, config.center_fractions
    )
    schedule = optax.cosine_decay_schedule(config.lr, config.steps, alpha=0.05)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    params, static = eqx.partition(model, eqx.is_array)
    state = opt.init(params)
    start, losses = 0, []
    ckpt = None if folder is None else Path(folder) / "checkpoint.eqx"
    if ckpt is not None and ckpt.exists():
        meta = json.loads(ckpt.with_suffix(".json").read_text())
        params, state = eqx.tree_deserialise_leaves(ckpt, (params, state))
        start, losses = meta["step"], meta["losses"]
        print(f"[mri] resumed from step {start}", file=sys.stderr)

    @jax.jit
    def step(params, state, i):
        sample = simulate_batch(
            jax.random.fold_in(key, i),
            config.batch,
            config.shape,
            bank,
            n_coils=config.n_coils,
            noise=config.noise,
        )
        loss, grads = jax.value_and_grad(
            lambda p: reconstruction_loss(eqx.combine(p, static), sample)
        )(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=start, desc="train", file=sys.stderr, leave=False)
    with jax.numpy_dtype_promotion("standard"):  # optax's step count is an int
        last = config.steps if until is None else min(until, config.steps)
        for i in range(start, last):
            params, state, loss = step(params, state, jnp.int32(i))
            loss = float(loss)
            if not np.isfinite(loss):
                raise MRIError(f"training: loss became {loss} at step {i}; lower lr")
            losses.append(loss)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            done = i + 1
            if ckpt is not None and (done % config.checkpoint_every == 0 or done == last):
                ckpt.parent.mkdir(parents=True, exist_ok=True)
                eqx.tree_serialise_leaves(ckpt, (params, state))
                ckpt.with_suffix(".json").write_text(json.dumps({"step": done, "losses": losses}))
    if bar is not None:
        bar.close()
    return eqx.combine(params, static), losses
