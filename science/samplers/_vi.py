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

import dataclasses
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._driver import Checkpoint, ChunkRunner, Phase, SamplerError, as_key, key_fingerprint
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
        for name in ("steps", "n_elbo", "n_draws", "draw_batch", "chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"FlowVI.{name}: expected a positive integer")
        if not 0 <= self.anneal < 1:
            raise ValueError(f"FlowVI.anneal: expected 0 <= anneal < 1, got {self.anneal}")
        if not 0 <= self.defensive < 1:
            raise ValueError(f"FlowVI.defensive: expected 0 <= defensive < 1, got {self.defensive}")
        if not 0 < self.beta0 <= 1:
            raise ValueError(f"FlowVI.beta0: expected 0 < beta0 <= 1, got {self.beta0}")

    # ------------------------------------------------------------------ init / step
    def init(self, key, target: Target):
        """A flow whose affine part matches the reference (prior) draws' moments."""
        k_ref, k_flow = jax.random.split(key)
        ref = target.prior_sample(k_ref, 2048)
        ok = jnp.isfinite(jax.vmap(target.log_reference)(ref))
        ref = jnp.where(ok[:, None], ref, target.z0)
        loc, chol = moments(ref)
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

    def step(self, key, state: VIState, target: Target, *, n_elbo: int, tempering: bool):
        """One Adam step on the tempered negative ELBO (sticking-the-landing gradient)."""
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
            rescue = jax.lax.cond(
                jnp.any(inside),
                lambda: jnp.zeros(()),
                lambda: self._rescue(flow, key, target, beta, n_elbo),
            )
            return fit + escape + rescue, (x, log_p)

        (loss, (x, log_p)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        bad_each = jnp.isnan(log_p) | (log_p == jnp.inf)
        grad_bad = ~jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))

        def locate(_):  # only when a gradient went non-finite: which draw's density gradient?
            g = jax.vmap(jax.grad(lambda z: target.tempered(z, beta)))(x)
            return ~jnp.all(jnp.isfinite(g), axis=-1) & (log_p > -jnp.inf)

        grad_each = jax.lax.cond(grad_bad, locate, lambda _: jnp.zeros_like(bad_each), None)
        bad = jnp.any(bad_each) | grad_bad
        where = jnp.where(jnp.any(bad_each), 4, jnp.where(jnp.any(grad_each), 6, 7))
        updates, opt_state = self._opt.update(grads, state.opt_state, state.params)
        params = eqx.apply_updates(state.params, updates)
        new = VIState(params, opt_state, state.step + 1, state.total)
        # Never continue from a non-finite update: the driver stops at this step.
        new = jax.tree.map(lambda a, b: jnp.where(bad, b, a), new, state)
        info = {
            "loss": loss,
            "beta": beta,
            "bad": bad,
            "bad_z": x[jnp.argmax(bad_each | grad_each)],
            "bad_where": where,
        }
        return new, info

    def _rescue(self, flow, key, target: Target, beta, n: int):
        z = target.prior_sample(jax.random.fold_in(key, 1), n)
        log_w = jax.vmap(lambda u: target.tempered(u, beta) - target.log_reference(u))(z)
        ok = log_w > -jnp.inf
        w = jax.nn.softmax(jnp.where(ok, log_w, -jnp.inf))
        w = jax.lax.stop_gradient(jnp.where(jnp.any(ok) & ok, w, 0.0))
        return -jnp.sum(w * jnp.where(ok, flow.log_prob(z), 0.0))

    def draw(self, key, state: VIState, target: Target, mesh=None):
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
        for i, k in enumerate(jax.random.split(key, n_batches)):
            x, lw, log_p = one(k)
            bad = jnp.isnan(log_p) | (log_p == jnp.inf)
            if bool(bad.any()):
                j = int(jnp.argmax(bad))
                raise SamplerError(
                    f"flow VI: log-density is {float(log_p[j])} at importance draw "
                    f"{i * self.draw_batch + j}, parameters {target.describe(x[j])}"
                )
            xs.append(np.asarray(x))
            lws.append(np.asarray(lw))
        return np.concatenate(xs)[: self.n_draws], np.concatenate(lws)[: self.n_draws]

    # ------------------------------------------------------------------ run
    def run(self, key, target: Target, *, out=None, progress=True, mesh=None, init_positions=None):
        if init_positions is not None:
            raise TypeError("FlowVI does not take init_positions (it starts from the prior)")
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

            @eqx.filter_jit
            def run_chunk(state, keys, n_elbo=n_elbo, tempering=tempering):
                return jax.lax.scan(
                    lambda s, k: self.step(k, s, target, n_elbo=n_elbo, tempering=tempering),
                    state,
                    keys,
                )

            n_chunks = -(-steps // self.chunk)
            if steps % n_chunks:
                raise ValueError(f"FlowVI: steps ({steps}) must be a multiple of chunk or below it")
            phase = Phase(f"stage {stage}", n_chunks, steps // n_chunks, True)
            ckpt_dir = None if out is None else f"{out}/stage{stage}"
            ckpt = Checkpoint(
                ckpt_dir, {"sampler": repr(self), "dim": target.dim, "key": key_fingerprint(key)}
            )
            runner = ChunkRunner(
                target=target,
                step_chunk=lambda s, k, p: run_chunk(s, k),
                adapt=None,
                record=lambda s, info: {"loss": np.asarray(info["loss"])},
                checkpoint=ckpt,
                progress=progress,
                desc=f"flow VI stage {stage}",
            )
            state, rec = runner.run(jax.random.fold_in(k_run, stage), state, [phase])
            losses.extend(rec["loss"].tolist())
            x, lw = self.draw(jax.random.fold_in(k_run, 1000 + stage), state, target, mesh)
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
