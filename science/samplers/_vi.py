"""Flow variational inference with Pareto-smoothed importance reweighting and evidence.

Training minimises the reverse KL (negative ELBO) with Adam, using the sticking-the-landing
gradient (Roeder et al. 2017), along a tempered path ``log_reference + beta * log_likelihood`` with
``beta`` rising geometrically to 1 over the first ``anneal`` fraction of steps: the flow starts on
the prior (or broad reference), which it can cover, and follows the posterior as it narrows, so it
does not lock onto one mode early. Then ``n_draws`` independent flow draws are weighted by
``p / q``: Pareto-smoothed weights (PSIS, ArviZ) give posterior expectations and the k-hat
diagnostic; raw weights give ``log Z`` and its standard error. When k-hat exceeds the threshold the
flow trains further with more Monte-Carlo samples per step and is drawn again (``max_refine`` times).
The draws are the parallel part: ``n_draws`` densities in one batched call, no sequential chains.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxaccel import InputError, runtime

from . import _checks
from ._driver import ChunkRunner, Phase, SamplerError, as_key, checkpointer
from ._flows import FlowConfig, make_flow, moments, split_flow
from ._result import Result, importance_evidence, psis
from ._target import Target

__all__ = ["FlowVI"]


class VIState(eqx.Module):
    params: Any
    opt_state: Any
    step: jax.Array
    total: jax.Array  # steps of the current training stage


@dataclasses.dataclass(frozen=True, kw_only=True)
class FlowVI:
    """Flow VI + importance reweighting settings.

    ``steps`` Adam steps (cosine-decayed ``learning_rate``) with ``n_elbo`` flow samples each;
    tempering over the first ``anneal`` fraction from ``beta0``; ``n_draws`` importance draws in
    batches of ``draw_batch``, a ``defensive`` fraction of them from the prior/reference;
    refinement while k-hat > ``khat_threshold`` (up to ``max_refine`` extra stages of
    ``refine_steps`` with twice the samples each).
    """

    steps: int = 1500
    n_elbo: int = 64
    learning_rate: float = 5e-3
    anneal: float = 0.4
    beta0: float = 1e-3
    n_draws: int = 20000
    draw_batch: int = 5000
    khat_threshold: float = 0.7
    defensive: float = 0.05
    max_refine: int = 2
    refine_steps: int = 1000
    chunk: int = 250
    flow: FlowConfig = FlowConfig()

    def __post_init__(self):
        for name in ("steps", "n_elbo", "n_draws", "draw_batch", "refine_steps", "chunk"):
            _checks.positive_int("FlowVI", name, getattr(self, name))
        _checks.non_negative_int("FlowVI", "max_refine", self.max_refine)
        _checks.number("FlowVI", "learning_rate", self.learning_rate, gt=0)
        _checks.number("FlowVI", "anneal", self.anneal, ge=0, lt=1)
        _checks.number("FlowVI", "defensive", self.defensive, ge=0, lt=1)
        _checks.number("FlowVI", "beta0", self.beta0, gt=0, le=1)
        _checks.number("FlowVI", "khat_threshold", self.khat_threshold, gt=0)
        _checks.flow_config("FlowVI", self.flow)

    # ------------------------------------------------------------------ init / step
    def init(self, key, target: Target):
        """A flow whose affine part matches the reference (prior) draws' moments."""
        k_ref, k_flow = jax.random.split(key)

        @jax.jit  # one compilation, not an eager run that compiles each operation on its own
        def reference_moments(k):
            ref = target.prior_sample(k, 2048)
            ok = jnp.isfinite(jax.vmap(target.log_reference)(ref))
            return moments(jnp.where(ok[:, None], ref, target.z0))

        loc, chol = reference_moments(k_ref)
        flow = make_flow(k_flow, target.dim, self.flow, loc=loc, chol=chol)
        params, static = split_flow(flow)
        object.__setattr__(self, "_static", static)
        return self._new_stage(params, self.steps)

    def _optimizer(self, total: int, lr: float):
        return optax.chain(
            optax.clip_by_global_norm(10.0),
            optax.adam(optax.cosine_decay_schedule(lr, total, alpha=0.05)),
        )

    def _new_stage(self, params, total: int, lr: float | None = None):
        lr = self.learning_rate if lr is None else lr
        object.__setattr__(self, "_opt", self._optimizer(total, lr))
        return VIState(
            params=params,
            opt_state=self._opt.init(params),
            step=jnp.zeros((), jnp.int32),
            total=jnp.asarray(total, jnp.int32),
        )

    def flow_of(self, state: VIState):
        return eqx.combine(state.params, self._static)

    def beta(self, state: VIState, tempering: bool) -> jax.Array:
        if not tempering or self.anneal == 0:
            return jnp.ones(())
        dtype = jnp.zeros(()).dtype  # float32, or float64 under x64 (strict promotion)
        frac = state.step.astype(dtype) / (self.anneal * state.total.astype(dtype))
        return jnp.minimum(1.0, self.beta0 ** (1.0 - jnp.minimum(frac, 1.0)))

    def step(
        self,
        key,
        state: VIState,
        target: Target,
        *,
        n_elbo: int,
        tempering: bool,
        rescue: bool = True,
    ):
        """One Adam step on the tempered negative ELBO (sticking-the-landing gradient).

        ``rescue=False`` leaves out the rescue term (see below) and only flags, in
        ``info["lost"]``, a step where it would have acted (every draw at zero density): `run`
        runs chunks without it (a third less to compile) and reruns a flagged chunk with it.
        """
        beta = self.beta(state, tempering)

        def loss_fn(params):
            flow = eqx.combine(params, self._static)
            x = flow.sample(key, (n_elbo,))
            frozen = eqx.combine(jax.lax.stop_gradient(params), self._static)
            log_q = frozen.log_prob(x)
            log_p = jax.vmap(lambda z: target.tempered(z, beta))(x)
            # -inf (zero density, e.g. a likelihood's rejection region) drops out of the average;
            # NaN/+inf stop the run (checked below).
            inside = log_p > -jnp.inf
            gap = jnp.where(inside, log_q - log_p, 0.0)
            fit = jnp.sum(gap) / jnp.maximum(jnp.sum(inside), 1)
            # At zero-density draws KL(q || p) is infinite but the path gradient is zero: a
            # score-function term (draws held fixed) lowers the flow's density there. Without it
            # a flow drifting across a rejection boundary is not pushed back, and once all its
            # draws are outside the loss is exactly 0 and it stays there.
            log_q_live = flow.log_prob(jax.lax.stop_gradient(x))
            escape = jnp.sum(jnp.where(inside, 0.0, log_q_live)) / n_elbo
            # That push has zero mean once *every* draw is outside (the score's expectation
            # under q): then fit the flow to reference draws instead, weighted by their tempered
            # likelihood (self-normalised importance sampling of the forward KL), which leads it
            # back to where the density is not zero.
            if not rescue:
                return fit + escape, (x, log_p)
            back = jax.lax.cond(
                jnp.any(inside),
                lambda: jnp.zeros(()),
                lambda: self._rescue(flow, key, target, beta, n_elbo),
            )
            return fit + escape + back, (x, log_p)

        (loss, (x, log_p)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        bad_each = jnp.isnan(log_p) | (log_p == jnp.inf)
        grad_bad = ~jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        bad = jnp.any(bad_each) | grad_bad
        # A non-finite training gradient is provisionally blamed on the flow (7); `_explain`
        # looks for the draw whose density gradient is at fault on the host, only when it
        # happens (compiling that search into every step would double the compile time).
        where = jnp.where(jnp.any(bad_each), 4, 7)
        updates, opt_state = self._opt.update(grads, state.opt_state, state.params)
        params = eqx.apply_updates(state.params, updates)
        new = VIState(params, opt_state, state.step + 1, state.total)
        # Never continue from a non-finite update: the driver stops at this step.
        new = jax.tree.map(lambda a, b: jnp.where(bad, b, a), new, state)
        info = {
            "loss": loss,
            "beta": beta,
            "bad": bad,
            "bad_z": x[jnp.argmax(bad_each)],
            "bad_where": where,
            "draws": x,
            "log_p": log_p,
            "lost": ~jnp.any(log_p > -jnp.inf),
        }
        return new, info

    def _explain(self, info: dict[str, Any], target: Target) -> dict[str, Any]:
        """Host side, after a chunk flagged a bad step: if the training gradient went non-finite
        with finite densities, find the flow draw whose density gradient is not finite (6);
        otherwise the flow itself is unstable (7)."""
        info = dict(info)
        bad = np.asarray(info["bad"])
        i = int(np.argmax(bad))
        where = np.array(info["bad_where"])
        if int(where[i]) != 7:
            return info
        x, log_p, beta = info["draws"][i], np.asarray(info["log_p"][i]), info["beta"][i]
        g = jax.jit(jax.vmap(jax.grad(lambda z: target.tempered(z, beta))))(x)
        at_fault = ~np.all(np.isfinite(np.asarray(g)), axis=-1) & (log_p > -np.inf)
        if at_fault.any():
            bad_z = np.array(info["bad_z"])
            bad_z[i] = np.asarray(x)[int(np.argmax(at_fault))]
            where[i] = 6
            info["bad_z"], info["bad_where"] = bad_z, where
        return info

    def _rescue(self, flow, key, target: Target, beta, n: int):
        z = target.prior_sample(jax.random.fold_in(key, 1), n)
        log_w = jax.vmap(lambda u: target.tempered(u, beta) - target.log_reference(u))(z)
        ok = log_w > -jnp.inf
        w = jax.nn.softmax(jnp.where(ok, log_w, -jnp.inf))
        w = jax.lax.stop_gradient(jnp.where(jnp.any(ok) & ok, w, 0.0))
        return -jnp.sum(w * jnp.where(ok, flow.log_prob(z), 0.0))

    def draw(self, key, state: VIState, target: Target, mesh=None, *, progress: bool = False):
        """``n_draws`` importance draws and their log weights ``log p - log q``.

        With ``defensive > 0`` the proposal is the mixture ``(1 - defensive) flow + defensive
        reference`` (Hesterberg 1995): the reference's draws reach regions the flow missed (a mode
        dropped during training), so such a failure shows up as a large k-hat instead of silently
        wrong weights.
        """
        flow = self.flow_of(state)
        n_batches = -(-self.n_draws // self.draw_batch)

        eps = self.defensive

        @jax.jit
        def one(k):
            k_flow, k_ref, k_mix = jax.random.split(k, 3)
            x = flow.sample(k_flow, (self.draw_batch,))
            if eps > 0:  # defensive mixture: a fraction of draws from the broad reference
                x_ref = target.prior_sample(k_ref, self.draw_batch)
                use_ref = jax.random.uniform(k_mix, (self.draw_batch,)) < eps
                x = jnp.where(use_ref[:, None], x_ref, x)
                log_r = jax.vmap(target.reference_log_prob)(x)
                log_q = jnp.logaddexp(jnp.log1p(-eps) + flow.log_prob(x), jnp.log(eps) + log_r)
            else:
                log_q = flow.log_prob(x)
            if mesh is not None:
                from jax.sharding import NamedSharding, PartitionSpec

                spec = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
                x = jax.lax.with_sharding_constraint(x, spec)
                log_q = jax.lax.with_sharding_constraint(log_q, spec)
            log_p = jax.vmap(target.log_density)(x)
            return x, log_p - log_q, log_p

        xs, lws = [], []
        with runtime.Progress(self.n_draws, "flow VI draws", unit="draw", enabled=progress) as bar:
            for i, k in enumerate(jax.random.split(key, n_batches)):
                with bar.compiling() if i == 0 else contextlib.nullcontext():
                    x, lw, log_p = one(k)
                    log_p = np.asarray(log_p)
                bad = np.isnan(log_p) | (log_p == np.inf)
                if bool(bad.any()):
                    j = int(np.argmax(bad))
                    raise SamplerError(
                        f"flow VI: log-density is {float(log_p[j])} at importance draw "
                        f"{i * self.draw_batch + j}, parameters {target.describe(x[j])}"
                    )
                xs.append(np.asarray(x))
                lws.append(np.asarray(lw))
                bar.set(min((i + 1) * self.draw_batch, self.n_draws))
        return np.concatenate(xs)[: self.n_draws], np.concatenate(lws)[: self.n_draws]

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
        if init_positions is not None:
            raise InputError("init_positions: FlowVI does not take them (it starts from the prior)")
        t0 = time.perf_counter()
        key = as_key(key)
        k_init, k_run = jax.random.split(key)
        state = self.init(k_init, target)
        stages: list[dict[str, Any]] = []
        losses: list[float] = []
        for stage in range(self.max_refine + 1):
            n_elbo = self.n_elbo * 2**stage
            steps = self.steps if stage == 0 else self.refine_steps
            if stage > 0:
                lr = self.learning_rate * 0.3
                state = self._new_stage(state.params, steps, lr)
            tempering = stage == 0

            runner = ChunkRunner(
                target=target,
                step_chunk=lambda s, k, p: run_chunk(s, k),  # run_chunk: defined below
                adapt=None,
                record=lambda s, info: {"loss": np.asarray(info["loss"])},
                checkpoint=checkpointer(
                    None if out is None else f"{out}/stage{stage}", self, target, key, fingerprint
                ),
                progress=progress,
                desc=f"flow VI stage {stage}",
                explain=lambda info: self._explain(info, target),
            )

            @eqx.filter_jit
            def chunk_of(state, keys, rescue, n_elbo=n_elbo, tempering=tempering, runner=runner):
                def body(s, k):
                    new, info = self.step(
                        k, s, target, n_elbo=n_elbo, tempering=tempering, rescue=rescue
                    )
                    runner.tick(new.step)  # moves the bar during a chunk (a host callback)
                    return new, info

                return jax.lax.scan(body, state, keys)

            def run_chunk(state, keys, chunk_of=chunk_of):
                new, info = chunk_of(state, keys, False)
                if np.asarray(info["lost"]).any():  # the rescue term was needed: redo the chunk
                    new, info = chunk_of(state, keys, True)
                return new, info

            state, rec = runner.run(
                jax.random.fold_in(k_run, stage), state, _phases(stage, steps, self.chunk)
            )
            losses.extend(rec["loss"].tolist())
            x, lw = self.draw(
                jax.random.fold_in(k_run, 1000 + stage), state, target, mesh, progress=progress
            )
            smoothed, khat = psis(lw)
            w = np.exp(smoothed - smoothed.max())
            w /= w.sum()
            ess = float(1.0 / np.sum(w**2))
            stages.append(
                {
                    "stage": stage,
                    "steps": steps,
                    "n_elbo": n_elbo,
                    "khat": khat,
                    "ess_is": ess,
                    "final_loss": float(np.mean(rec["loss"][-50:])),
                }
            )
            if khat <= self.khat_threshold:
                break
        log_z, log_z_err = importance_evidence(lw)
        diag = {
            "khat": khat,
            "ess_is": ess,
            "ess_fraction": ess / lw.size,
            "stages": stages,
            "elbo": -float(np.mean(losses[-50:])),
        }
        if khat > self.khat_threshold:
            diag["warning"] = (
                f"k-hat {khat:.2f} > {self.khat_threshold} after {len(stages)} stages: importance "
                "weights are unreliable (use FlowMCMC, or more steps / a larger flow)"
            )
        return Result(
            sampler="flow VI + PSIS",
            names=target.flat_names,
            samples=np.asarray(target.flat_constrained(jnp.asarray(x)))[None],
            z=x[None],
            log_weights=smoothed[None],
            raw_log_weights=np.asarray(lw)[None],
            log_z=log_z,
            log_z_err=log_z_err,
            diagnostics=diag,
            wall_seconds=time.perf_counter() - t0,
        )


def _phases(stage: int, steps: int, chunk: int) -> list[Phase]:
    """``steps`` in ``ceil(steps / chunk)`` equal chunks when they divide evenly (one compiled
    chunk length), else full chunks of ``chunk`` and a shorter last one (a second length)."""
    n_chunks = -(-steps // chunk)
    if steps % n_chunks == 0:
        return [Phase(f"stage {stage}", n_chunks, steps // n_chunks, True)]
    full = [Phase(f"stage {stage}", n_chunks - 1, chunk, True)]
    return full + [Phase(f"stage {stage}", 1, steps - (n_chunks - 1) * chunk, True)]
