"""Flow-enhanced MCMC (local MALA + global flow proposals, flow trained on the fly) and NumPyro NUTS.

Both are ``init``/``step`` pairs run by the shared driver. Flow-enhanced MCMC follows the scheme of
Gabrié, Rotskoff & Vanden-Eijnden (PNAS 2022) used by flowMC: each *cycle* makes ``n_local``
preconditioned MALA steps per chain, then one independence proposal from the flow with a
Metropolis-Hastings correction. During the training loops the flow is refitted by maximum
likelihood to the chains' recent positions and MALA step sizes adapt towards 57% acceptance;
during production both are frozen, so the production chains are an exact MCMC. All chains are one
vectorised array: on 2 CPU cores the work per step is a few batched matrix products, not a Python
loop over chains (flowMC's measured weakness here).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxaccel import InputError

from . import _checks
from ._driver import ChunkRunner, Phase, as_key, checkpointer, flag_bad, lenient
from ._flows import FlowConfig, make_fitter, make_flow, moments, set_affine, split_flow
from ._result import Result, chain_diagnostics, harmonic_evidence
from ._target import Target, TargetError

__all__ = ["FlowMCMC", "NUTS", "sample"]


class MCMCState(eqx.Module):
    position: jax.Array  # [chains, dim] unconstrained
    log_density: jax.Array  # [chains]
    grad: jax.Array  # [chains, dim]
    step_size: jax.Array  # [chains]
    scale: jax.Array  # [dim] diagonal preconditioner (posterior std estimate)
    flow_params: Any  # trainable leaves of the flow
    adapting: jax.Array  # scalar: 1.0 while step sizes adapt
    history: jax.Array  # [buffer_loops, cycles_per_loop * chains, dim] recent positions
    n_fits: jax.Array  # how many times the flow was refitted


@dataclasses.dataclass(frozen=True, kw_only=True)
class FlowMCMC:
    """Flow-enhanced MCMC settings.

    ``n_chains`` vectorised chains; a cycle = ``n_local`` MALA steps + 1 flow proposal.
    ``train_loops`` loops of ``cycles_per_loop`` cycles (one jit call each) end with a refit of
    the flow (``train_epochs`` epochs over the last ``buffer_loops`` loops' positions); then
    ``n_samples`` production cycles are recorded (one draw per chain per cycle), also in jit
    calls of ``cycles_per_loop`` cycles (the progress/checkpoint granularity).
    """

    n_chains: int = 64
    n_local: int = 4
    train_loops: int = 8
    cycles_per_loop: int = 25
    n_samples: int = 200
    buffer_loops: int = 3
    train_epochs: int = 30
    initial_step_size: float = 0.3
    target_accept: float = 0.574
    evidence: bool = True
    flow: FlowConfig = FlowConfig()

    def __post_init__(self):
        for name in (
            "n_chains",
            "n_local",
            "train_loops",
            "cycles_per_loop",
            "n_samples",
            "buffer_loops",
            "train_epochs",
        ):
            _checks.positive_int("FlowMCMC", name, getattr(self, name))
        _checks.number("FlowMCMC", "initial_step_size", self.initial_step_size, gt=0)
        _checks.number("FlowMCMC", "target_accept", self.target_accept, gt=0, lt=1)
        _checks.flag("FlowMCMC", "evidence", self.evidence)
        _checks.flow_config("FlowMCMC", self.flow)

    # ------------------------------------------------------------------ init / step
    def init(self, key, target: Target, init_positions=None):
        """Chains start at prior (or reference) draws; draws with non-finite density are replaced
        by jittered copies of the target's initial point."""
        k_pos, k_jit, k_flow = jax.random.split(key, 3)
        c, d = self.n_chains, target.dim
        if init_positions is None:
            pos = target.prior_sample(k_pos, c)
            lp, g = jax.vmap(jax.value_and_grad(target.log_density))(pos)
            ok = jnp.isfinite(lp) & jnp.all(jnp.isfinite(g), axis=-1)
            fallback = target.z0 + 0.1 * jax.random.normal(k_jit, (c, d), target.z0.dtype)
            pos = jnp.where(ok[:, None], pos, fallback)
        else:
            pos = jnp.asarray(init_positions, target.z0.dtype)
            if pos.shape != (c, d):
                raise TargetError(f"init_positions: expected shape {(c, d)}, got {pos.shape}")
        lp, g = jax.vmap(jax.value_and_grad(target.log_density))(pos)
        bad = ~jnp.isfinite(lp) | ~jnp.all(jnp.isfinite(g), axis=-1)
        if bool(bad.any()):
            i = int(jnp.argmax(bad))
            raise TargetError(
                f"FlowMCMC init: log-density {float(lp[i])} (or its gradient) is not finite for "
                f"chain {i} at {target.describe(pos[i])}"
            )
        loc, chol = moments(pos)
        flow = make_flow(k_flow, d, self.flow, loc=loc, chol=chol)
        params, static = split_flow(flow)
        object.__setattr__(
            self, "_fit", make_fitter(static, epochs=self.train_epochs, config=self.flow)
        )
        object.__setattr__(self, "_static", static)  # the flow's non-array parts, fixed per run
        scale = jnp.sqrt(jnp.diag(chol @ chol.T))
        n_hist = self.cycles_per_loop * c
        return MCMCState(
            position=pos,
            log_density=lp,
            grad=g,
            step_size=jnp.full((c,), self.initial_step_size / d**0.25, pos.dtype),
            scale=jnp.minimum(scale, 1.0),
            flow_params=params,
            adapting=jnp.ones((), pos.dtype),
            history=jnp.zeros((self.buffer_loops, n_hist, d), pos.dtype),
            n_fits=jnp.zeros((), jnp.int32),
        )

    def flow_of(self, state: MCMCState):
        return eqx.combine(state.flow_params, self._static)

    def step(self, key, state: MCMCState, target: Target):
        """One cycle for all chains: ``n_local`` MALA steps, then one flow proposal."""
        vg = jax.vmap(jax.value_and_grad(target.log_density))
        k_local, k_flow, k_u = jax.random.split(key, 3)
        eps = state.step_size[:, None] * state.scale[None, :]
        c = state.position.shape[0]

        def mala(carry, k):
            x, lp, g, bad, bad_z, where = carry
            k1, k2 = jax.random.split(k)
            noise = jax.random.normal(k1, x.shape, x.dtype)
            y = x + 0.5 * eps**2 * g + eps * noise
            lpy, gy = vg(y)
            fwd = -0.5 * jnp.sum(((y - x - 0.5 * eps**2 * g) / eps) ** 2, axis=-1)
            bwd = -0.5 * jnp.sum(((x - y - 0.5 * eps**2 * gy) / eps) ** 2, axis=-1)
            log_a = lpy - lp + bwd - fwd
            b, w = flag_bad(lpy, gy, 0, 1)
            log_a = jnp.where(b | ~jnp.isfinite(log_a), -jnp.inf, log_a)
            acc = jnp.log(jax.random.uniform(k2, (c,), x.dtype)) < log_a
            x = jnp.where(acc[:, None], y, x)
            lp = jnp.where(acc, lpy, lp)
            g = jnp.where(acc[:, None], gy, g)
            first = b & ~bad
            bad_z = jnp.where(first[:, None], y, bad_z)
            where = jnp.where(first, w, where)
            return (x, lp, g, bad | b, bad_z, where), acc

        none = jnp.zeros((c,), bool)
        carry0 = (state.position, state.log_density, state.grad, none, state.position, none * 0)
        (x, lp, g, bad, bad_z, where), acc = jax.lax.scan(
            mala, carry0, jax.random.split(k_local, self.n_local)
        )
        acc_local = jnp.mean(acc.astype(x.dtype), axis=0)

        flow = self.flow_of(state)
        y, log_qy = flow.sample_and_log_prob(k_flow, (c,))
        lpy, gy = vg(y)
        log_qx = flow.log_prob(x)
        log_a = (lpy - log_qy) - (lp - log_qx)
        b, w = flag_bad(lpy, gy, 2, 3)
        log_a = jnp.where(b | ~jnp.isfinite(log_a), -jnp.inf, log_a)
        acc_g = jnp.log(jax.random.uniform(k_u, (c,), x.dtype)) < log_a
        x = jnp.where(acc_g[:, None], y, x)
        lp = jnp.where(acc_g, lpy, lp)
        g = jnp.where(acc_g[:, None], gy, g)
        first = b & ~bad
        bad_z = jnp.where(first[:, None], y, bad_z)
        where = jnp.where(first, w, where)
        bad = bad | b

        log_step = jnp.log(state.step_size) + state.adapting * 0.2 * (
            acc_local - self.target_accept
        )
        new = eqx.tree_at(
            lambda s: (s.position, s.log_density, s.grad, s.step_size),
            state,
            (x, lp, g, jnp.exp(log_step)),
        )
        info = {
            "position": x,
            "accept_local": acc_local,
            "accept_global": acc_g.astype(x.dtype),
            "bad": bad,
            "bad_z": bad_z,
            "bad_where": where,
        }
        return new, info

    def adapt(self, key, state: MCMCState, positions) -> MCMCState:
        """Add one training loop's positions ``[cycles, chains, dim]`` to the history, refit the
        flow to the history by maximum likelihood and update the MALA preconditioner."""
        new = jnp.asarray(positions).reshape(-1, state.history.shape[-1])
        history = jnp.concatenate([state.history[1:], new[None]], axis=0)
        filled = min(int(state.n_fits) + 1, self.buffer_loops)
        loc, chol = moments(history[-filled:].reshape(-1, history.shape[-1]))
        flow = self.flow_of(state)
        if int(state.n_fits) == 0:  # first fit: start the affine part at the sample moments
            flow = set_affine(flow, loc, chol)
        params, _ = split_flow(flow)
        # Fixed-size buffer with zero weight on unfilled slots: one compiled fit for all loops.
        weights = jnp.repeat(
            jnp.arange(self.buffer_loops) >= self.buffer_loops - filled, new.shape[0]
        )
        x = history.reshape(-1, history.shape[-1])
        params, _ = self._fit(key, params, x, weights.astype(x.dtype))
        return eqx.tree_at(
            lambda s: (s.flow_params, s.scale, s.history, s.n_fits),
            state,
            (params, jnp.sqrt(jnp.diag(chol @ chol.T)), history, state.n_fits + 1),
        )

    # ------------------------------------------------------------------ run
    def run(
        self,
        key,
        target: Target,
        *,
        out=None,
        progress=True,
        mesh=None,
        init_positions=None,
        fingerprint=None,
    ):
        t0 = time.perf_counter()
        key = as_key(key)
        k_init, k_run, k_ev = jax.random.split(key, 3)
        state = self.init(k_init, target, init_positions)
        state = _shard_chains(state, mesh, self.n_chains)
        phases = [
            Phase("train", self.train_loops, self.cycles_per_loop, False),
            Phase("sample", -(-self.n_samples // self.cycles_per_loop), self.cycles_per_loop, True),
        ]

        @jax.jit
        def run_chunk(state, keys):
            return jax.lax.scan(lambda s, k: self.step(k, s, target), state, keys)

        def step_chunk(state, keys, phase):
            if phase.name == "sample":
                state = eqx.tree_at(lambda s: s.adapting, state, jnp.zeros_like(state.adapting))
            return run_chunk(state, keys)

        def adapt(k, state, info, phase):
            if phase.name != "train":
                return state
            return self.adapt(k, state, info["position"])

        def record(state, info):
            return {
                "position": np.swapaxes(np.asarray(info["position"]), 0, 1),  # [chain, step, d]
                "accept_local": np.asarray(info["accept_local"]).T,
                "accept_global": np.asarray(info["accept_global"]).T,
            }

        runner = ChunkRunner(
            target=target,
            step_chunk=step_chunk,
            adapt=adapt,
            record=record,
            checkpoint=checkpointer(out, self, target, key, fingerprint),
            progress=progress,
            desc="flow MCMC",
        )
        # Records are concatenated along axis 0; transpose to [chain, draw] afterwards.
        _, rec = runner.run(k_run, state, phases)
        z = _chains_axis(rec["position"], self.n_chains)[:, : self.n_samples]
        extra = {
            "accept_local": float(np.mean(rec["accept_local"])),
            "accept_global": float(np.mean(rec["accept_global"])),
        }
        return _chain_result("flow MCMC", target, z, extra, k_ev if self.evidence else None, t0)


def _chains_axis(x: np.ndarray, n_chains: int) -> np.ndarray:
    """Records were stacked chunk after chunk along axis 0 as [chain, step, ...] blocks."""
    blocks = np.split(x, x.shape[0] // n_chains, axis=0)
    return np.concatenate(blocks, axis=1)


def _chain_result(name, target: Target, z: np.ndarray, extra, evidence_key, t0) -> Result:
    """The `Result` of chains ``z[chain, draw, dim]``: R-hat/ESS, the sampler's own figures
    (``extra``) and, given ``evidence_key``, the learned harmonic mean evidence."""
    constrained = np.asarray(target.flat_constrained(jnp.asarray(z)))
    diag: dict[str, Any] = chain_diagnostics(constrained, target.flat_names) | extra
    log_z = log_z_err = None
    if evidence_key is not None:
        log_z, log_z_err, diag["harmonic"] = harmonic_evidence(evidence_key, target, z)
    return Result(
        sampler=name,
        names=target.flat_names,
        samples=constrained,
        z=z,
        log_weights=None,
        log_z=log_z,
        log_z_err=log_z_err,
        diagnostics=diag,
        wall_seconds=time.perf_counter() - t0,
    )


def _shard_chains(state, mesh, n_chains: int):
    """Place every array whose leading axis is the chain axis on ``mesh`` (split over its first axis)."""
    if mesh is None:
        return state
    from jax.sharding import NamedSharding, PartitionSpec

    axis = mesh.axis_names[0]
    if n_chains % mesh.shape[axis]:
        raise InputError(
            f"mesh: n_chains={n_chains} must be divisible by the mesh axis {axis!r} of size "
            f"{mesh.shape[axis]}"
        )
    split = NamedSharding(mesh, PartitionSpec(axis))
    repl = NamedSharding(mesh, PartitionSpec())

    def place(x):
        if isinstance(x, jax.Array) and x.ndim >= 1 and x.shape[0] == n_chains:
            return jax.device_put(x, split)
        if isinstance(x, jax.Array):
            return jax.device_put(x, repl)
        return x

    return jax.tree.map(place, state)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NUTS:
    """NumPyro's NUTS through the same driver (the reference sampler), chains vectorised."""

    n_chains: int = 4
    n_warmup: int = 500
    n_samples: int = 1000
    target_accept: float = 0.8
    max_tree_depth: int = 10
    dense_mass: bool = False
    chunk: int = 100
    evidence: bool = True

    def __post_init__(self):
        for name in ("n_chains", "n_samples", "max_tree_depth", "chunk"):
            _checks.positive_int("NUTS", name, getattr(self, name))
        _checks.non_negative_int("NUTS", "n_warmup", self.n_warmup)
        _checks.number("NUTS", "target_accept", self.target_accept, gt=0, lt=1)
        _checks.flag("NUTS", "dense_mass", self.dense_mass)
        _checks.flag("NUTS", "evidence", self.evidence)
        if self.n_warmup % max(-(-self.n_warmup // self.chunk), 1):
            raise InputError(
                f"NUTS.n_warmup: expected a count that splits into equal chunks of at most chunk "
                f"({self.chunk}) steps, got {self.n_warmup}"
            )

    def init(self, key, target: Target, init_positions=None):
        from numpyro.infer import NUTS as _NUTS

        self_kernel = _NUTS(
            potential_fn=lambda z: -target.log_density(z),
            target_accept_prob=self.target_accept,
            max_tree_depth=self.max_tree_depth,
            dense_mass=self.dense_mass,
        )
        object.__setattr__(self, "_kernel", self_kernel)
        k_pos, k_chain = jax.random.split(key)
        if init_positions is None:
            pos = target.z0 + 0.1 * jax.random.normal(
                k_pos, (self.n_chains, target.dim), target.z0.dtype
            )
        else:
            pos = jnp.asarray(init_positions, target.z0.dtype)
        keys = jax.random.key_data(jax.random.split(k_chain, self.n_chains))  # numpyro: raw keys
        return self_kernel.init(keys, self.n_warmup, init_params=pos)

    def step(self, key, state):
        del key  # NumPyro keeps a key per chain in its state
        new = self._kernel.sample(state, (), {})  # numpyro vmapped it over chains at init
        pe = new.potential_energy
        bad = jnp.isnan(pe) | (pe == -jnp.inf)
        info = {
            "position": new.z,
            "accept": new.mean_accept_prob,
            "diverging": new.diverging,
            "steps": new.num_steps,
            "bad": bad,
            "bad_z": new.z,
            "bad_where": jnp.full(bad.shape, 5),
        }
        return new, info

    def run(
        self,
        key,
        target: Target,
        *,
        out=None,
        progress=True,
        mesh=None,
        init_positions=None,
        fingerprint=None,
    ):
        t0 = time.perf_counter()
        key = as_key(key)
        k_init, k_run, k_ev = jax.random.split(key, 3)
        state = self.init(k_init, target, init_positions)
        state = _shard_chains(state, mesh, self.n_chains)

        def body(s, k):
            new, info = self.step(k, s)
            runner.tick(jnp.max(new.i) + 1)  # numpyro counts iterations from 0
            return new, info

        @jax.jit
        def run_chunk(state, keys):
            return jax.lax.scan(body, state, keys)

        wc = -(-self.n_warmup // self.chunk)
        sc = -(-self.n_samples // self.chunk)
        phases = []
        if self.n_warmup:
            phases.append(Phase("warmup", wc, self.n_warmup // wc, False))
        phases.append(Phase("sample", sc, -(-self.n_samples // sc), True))

        def record(state, info):
            return {
                "position": np.swapaxes(np.asarray(info["position"]), 0, 1),
                "accept": np.asarray(info["accept"]).T,
                "diverging": np.asarray(info["diverging"]).T,
                "steps": np.asarray(info["steps"]).T,
            }

        runner = ChunkRunner(
            target=target,
            step_chunk=lambda s, k, p: run_chunk(s, k),
            adapt=None,
            record=record,
            checkpoint=checkpointer(out, self, target, key, fingerprint),
            progress=progress,
            desc="NUTS",
        )
        _, rec = runner.run(k_run, state, phases)
        z = _chains_axis(rec["position"], self.n_chains)[:, : self.n_samples]
        extra = {
            "accept": float(np.mean(rec["accept"])),
            "divergences": int(np.sum(rec["diverging"])),
            "mean_tree_steps": float(np.mean(rec["steps"])),
        }
        return _chain_result(
            "NUTS (numpyro)", target, z, extra, k_ev if self.evidence else None, t0
        )


@lenient
def sample(
    key,
    target: Target,
    sampler,
    *,
    out=None,
    progress=True,
    mesh=None,
    fingerprint=None,
    **kwargs,
) -> Result:
    """Run ``sampler`` (`FlowMCMC`, `FlowVI` or `NUTS`) on ``target``.

    ``out``: a folder for the checkpoint (written after every chunk; a rerun with the same
    arguments resumes from it, says so, and returns identical results). ``fingerprint``:
    anything JSON-able that identifies the run beyond the sampler's settings, the target's
    dimension and the key (e.g. a digest of the data): a checkpoint written with another one is
    refused (`jaxaccel.CheckpointError`) instead of resumed. ``mesh``: a ``jax.sharding.Mesh``
    whose first axis splits the chains (or flow draws). ``progress``: progress bars on stderr.
    Returns a `Result`.

    Raises:
        jaxaccel.InputError: ``sampler`` is not a sampler object (a string such as ``"nuts"``
            is refused with the class to use), ``target`` not a `Target`, ``key`` not a key.
    """
    if not isinstance(target, Target):
        raise InputError(f"target: expected a science.samplers.Target, got {type(target).__name__}")
    if not all(callable(getattr(sampler, m, None)) for m in ("run", "init", "step")):
        hint = ""
        if isinstance(sampler, str):
            known = {"nuts": "NUTS", "flowvi": "FlowVI", "flowmcmc": "FlowMCMC"}
            name = known.get(sampler.lower().replace("-", "").replace("_", "").replace(" ", ""))
            hint = f"; write science.samplers.{name}()" if name else ""
        raise InputError(
            "sampler: expected a sampler object (science.samplers.FlowVI(), FlowMCMC() or "
            f"NUTS(), with its settings), got {sampler!r}{hint}"
        )
    return sampler.run(
        key, target, out=out, progress=progress, mesh=mesh, fingerprint=fingerprint, **kwargs
    )
