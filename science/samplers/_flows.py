"""Normalizing flows for the samplers (flowjax), their maximum-likelihood fit, and concentration.

Every flow here is ``Transformed(Normal(0, I), Chain([coupling spline flow, TriangularAffine]))``:
rational-quadratic-spline coupling layers (fast in both directions, so sampling and density cost
the same) followed by a full-rank affine map that carries the location and correlation scale. The
affine part is set from moments of the data (or a Gaussian guess) before training, so the spline
layers only have to learn the non-Gaussian shape. Coupling layers with ``dim == 1`` condition on
nothing and become elementwise splines, so one-parameter targets work too.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import paramax
from flowjax.bijections import Chain, RationalQuadraticSpline, TriangularAffine
from flowjax.distributions import Normal, Transformed
from flowjax.flows import coupling_flow
from jaxtyping import Array, Float, PRNGKeyArray
from paramax.utils import inv_softplus

from jaxaccel import InputError

from . import _checks
from ._driver import lenient

__all__ = [
    "FlowConfig",
    "make_flow",
    "fit_flow",
    "make_fitter",
    "concentrate",
    "split_flow",
    "set_affine",
    "moments",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class FlowConfig:
    """Architecture and training settings of a sampler's flow.

    ``layers`` coupling layers with ``knots``-knot rational-quadratic splines on ``[-interval,
    interval]`` (identity outside), conditioners of ``depth`` hidden layers of ``width``;
    maximum-likelihood fits use Adam at ``learning_rate`` on minibatches of ``batch_size``.
    """

    layers: int = 4
    knots: int = 8
    interval: float = 5.0
    width: int = 32
    depth: int = 1
    learning_rate: float = 1e-3
    batch_size: int = 256

    def __post_init__(self):
        for name in ("layers", "knots", "width", "batch_size"):
            _checks.positive_int("FlowConfig", name, getattr(self, name))
        _checks.non_negative_int("FlowConfig", "depth", self.depth)
        _checks.number("FlowConfig", "interval", self.interval, gt=0)
        _checks.number("FlowConfig", "learning_rate", self.learning_rate, gt=0)


@lenient
def make_flow(
    key: PRNGKeyArray,
    dim: int,
    config: FlowConfig = FlowConfig(),
    *,
    loc: Float[Array, " dim"] | None = None,
    chol: Float[Array, "dim dim"] | None = None,
) -> Transformed:
    """A flow over ``R^dim`` whose outer affine map is ``x = loc + chol @ y``."""
    dtype = jnp.zeros(()).dtype
    loc = jnp.zeros(dim, dtype) if loc is None else jnp.asarray(loc, dtype)
    chol = jnp.eye(dim, dtype=dtype) if chol is None else jnp.asarray(chol, dtype)
    inner = coupling_flow(
        key,
        base_dist=Normal(jnp.zeros(dim, dtype)),
        transformer=RationalQuadraticSpline(knots=config.knots, interval=config.interval),
        flow_layers=config.layers,
        nn_width=config.width,
        nn_depth=config.depth,
    )
    return Transformed(inner.base_dist, Chain([inner.bijection, TriangularAffine(loc, chol)]))


def moments(x: Float[Array, "n dim"], *, jitter: float = 1e-6) -> tuple[Array, Array]:
    """Mean and Cholesky factor of the covariance of samples (jittered to stay positive)."""
    mean = jnp.mean(x, axis=0)
    cov = jnp.atleast_2d(jnp.cov(x, rowvar=False))
    scale = jnp.sqrt(jnp.maximum(jnp.diag(cov), 0.0)) + jitter
    corr = cov / (scale[:, None] * scale[None, :])
    corr = corr + jitter * jnp.eye(x.shape[1], dtype=x.dtype)
    return mean, scale[:, None] * jnp.linalg.cholesky(corr)


def set_affine(flow: Transformed, loc: Array, chol: Array) -> Transformed:
    """Set the outer affine map (e.g. to sample moments), keeping the spline layers.

    Only array leaves change, so the flow's static part (and any compiled function of it) stays.
    """
    arr = jnp.fill_diagonal(chol, inv_softplus(jnp.diag(chol)), inplace=False)
    return eqx.tree_at(
        lambda f: (f.bijection.bijections[1].loc, f.bijection.bijections[1].triangular.args[0]),
        flow,
        (loc, arr),
    )


def split_flow(flow: Transformed):
    """``(params, static)`` with flowjax's convention for trainable leaves."""
    return eqx.partition(
        flow, eqx.is_inexact_array, is_leaf=lambda leaf: isinstance(leaf, paramax.NonTrainable)
    )


def make_fitter(static, *, epochs: int, config: FlowConfig = FlowConfig()):
    """A jitted ``fit(key, params, x, weights) -> (params, losses)`` for flows sharing ``static``.

    Maximum likelihood with Adam over ``epochs`` passes of shuffled minibatches (``weights``
    multiply each sample's log-likelihood; pass ones for plain samples). Build it once per flow
    structure and reuse it: each call with the same shapes runs the compiled program.
    """

    @jax.jit
    def fit(key, params, x, weights):
        n = x.shape[0]
        batch = min(config.batch_size, n)
        n_batches = max(n // batch, 1)
        w = weights * (n / jnp.sum(weights))
        opt = optax.adam(config.learning_rate)

        def loss_fn(p, xb, wb):
            dist = eqx.combine(p, static)
            return -jnp.mean(wb * dist.log_prob(xb))

        def epoch(carry, k):
            perm = jax.random.permutation(k, n)[: n_batches * batch].reshape(n_batches, batch)

            def one(carry, idx):
                p, s = carry
                loss, g = jax.value_and_grad(loss_fn)(p, x[idx], w[idx])
                # A non-finite batch (a flow blow-up) must not poison the parameters.
                ok = jnp.isfinite(loss)
                upd, s2 = opt.update(g, s, p)
                p2 = eqx.apply_updates(p, upd)
                p = jax.tree.map(lambda a, b: jnp.where(ok, a, b), p2, p)
                s = jax.tree.map(lambda a, b: jnp.where(ok, a, b), s2, s)
                return (p, s), loss

            carry, losses = jax.lax.scan(one, carry, perm)
            return carry, jnp.mean(losses)

        (params, _), losses = jax.lax.scan(
            epoch, (params, opt.init(params)), jax.random.split(key, epochs)
        )
        return params, losses

    return fit


@lenient
def fit_flow(
    key: PRNGKeyArray,
    flow: Transformed,
    x: Float[Array, "n dim"],
    *,
    epochs: int,
    config: FlowConfig = FlowConfig(),
    weights: Float[Array, " n"] | None = None,
) -> tuple[Transformed, Float[Array, " epochs"]]:
    """Maximum-likelihood fit of ``flow`` to samples ``x`` (optionally weighted).

    Returns the fitted flow and the mean negative log-likelihood of each epoch. (Compiles per
    call; loops that refit the same flow should keep `make_fitter`'s function.)
    """
    params, static = split_flow(flow)
    w = jnp.ones(x.shape[0], x.dtype) if weights is None else jnp.asarray(weights, x.dtype)
    params, losses = make_fitter(static, epochs=epochs, config=config)(key, params, x, w)
    return eqx.combine(params, static), losses


@lenient
def concentrate(flow: Transformed, temperature: float) -> Transformed:
    """The flow with its base Gaussian's variance multiplied by ``temperature`` (< 1 narrows it).

    Used by the learned harmonic mean estimator: a concentrated flow has lighter tails than the
    posterior, which keeps the estimator's variance finite.
    """
    if not 0 < temperature <= 1:
        raise InputError(f"temperature: expected 0 < temperature <= 1, got {temperature}")
    dim = flow.shape[0]
    dtype = jnp.zeros(()).dtype
    base = Normal(jnp.zeros(dim, dtype), jnp.full(dim, jnp.sqrt(temperature), dtype))
    return Transformed(base, flow.bijection)
