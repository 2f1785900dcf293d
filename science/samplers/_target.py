"""One target interface for every sampler: a log-density over a pytree of named parameters.

A `Target` carries everything a sampler needs and nothing model-specific: the parameter names
and shapes, the bijection from an unconstrained flat vector ``z`` to the constrained pytree (numpyro's
``biject_to`` transforms of each parameter's support), and the log-density of ``z`` split into a
*reference* part (the prior, or a broad Gaussian when no prior is given) and a *likelihood* part, so
that samplers can temper ``reference + beta * likelihood``. All samplers run on ``z``; results are
mapped back to named, constrained values.

Three ways to build one:

- ``Target(log_likelihood, prior={"mu": dist.Normal(0, 5), ...})`` -- numpyro distributions as the
  prior; their supports give the bounds and the evidence is that of ``prior x likelihood``. A
  tuple key, ``{("a", "b"): dist.MultivariateNormal(...)}``, is a joint prior over several named
  scalars (the distribution's event shape must be ``(len(key),)``); the likelihood and results
  still see ``a`` and ``b`` by name.
- ``Target.from_log_density(log_density, init=..., bounds=...)`` -- an unnormalised log-density
  over a pytree, with optional ``(low, high)`` bounds per leaf.
- ``Target.from_numpyro(model, *args, **kwargs)`` -- bridged through numpyro's own
  ``initialize_model`` (the potential energy includes the Jacobians).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PRNGKeyArray

from jaxaccel import InputError

from ._driver import lenient

__all__ = ["Target", "TargetError"]

Bounds = tuple[float | None, float | None]
# The broad reference density in unconstrained space used when a target has no prior.
REFERENCE_SCALE = 3.0


class TargetError(InputError):
    """A target or its input is malformed (the message names the parameter and what was expected)."""


def _transform_for(bounds: Bounds, where: str):
    from numpyro.distributions import constraints
    from numpyro.distributions.transforms import biject_to

    low, high = bounds
    if low is not None and high is not None:
        if not (math.isfinite(low) and math.isfinite(high)):
            raise TargetError(f"bounds[{where!r}]: bounds must be finite or None, got {bounds}")
        if not high > low:
            raise TargetError(
                f"bounds[{where!r}]: zero-width or inverted interval ({low}, {high}); expected "
                "low < high (fix the parameter instead of bounding it to a point)"
            )
        return biject_to(constraints.interval(low, high))
    if low is not None:
        return biject_to(constraints.greater_than(low))
    if high is not None:
        return biject_to(constraints.less_than(high))
    return biject_to(constraints.real)


def _check_scalar_fn(fn: Callable, params: Any, what: str) -> None:
    try:
        out = jax.eval_shape(fn, params)
    except Exception as e:  # noqa: BLE001 - re-raised with the cause attached
        raise TargetError(f"{what} raised {type(e).__name__} on the initial parameters: {e}") from e
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
        shape = getattr(out, "shape", type(out).__name__)
        raise TargetError(
            f"{what} must return a scalar log-density, got shape {shape}; sum over data points "
            "(and do not vmap over parameters yourself)"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TargetError(f"{what} must return a floating-point scalar, got dtype {out.dtype}")


class Target:
    """A log-density over a pytree of named parameters, with bounds and (optionally) a prior.

    Use the constructors below rather than ``__init__`` for log-densities without a prior or for
    NumPyro models. Attributes used by samplers:

    - ``dim``: the number of unconstrained coordinates;
    - ``log_density(z)``, ``log_reference(z)``, ``log_likelihood(z)`` on a flat unconstrained
      ``z`` (``log_density = log_reference + log_likelihood``, Jacobians included);
    - ``constrain(z)`` -> pytree of named constrained values; ``unconstrain(params)`` -> ``z``;
    - ``flat_names``: one label per unconstrained coordinate (``"mu"``, ``"x[3]"``).
    """

    @lenient
    def __init__(
        self,
        log_likelihood: Callable[[dict[str, Array]], Float[Array, ""]],
        prior: Mapping[str, Any],
        *,
        init: Mapping[str, Any] | None = None,
    ):
        """``prior`` maps names to numpyro distributions (independent); ``log_likelihood`` takes
        the dict of constrained values. ``init`` (optional) is a starting point; by default the
        prior's median-ish point (``transform(0)``) is used."""
        from numpyro.distributions import Distribution
        from numpyro.distributions.transforms import biject_to

        if not isinstance(prior, Mapping) or not prior:
            raise TargetError("prior: expected a non-empty dict of name -> numpyro distribution")
        prior, log_likelihood = self._grouped(prior, log_likelihood)
        for name, d in prior.items():
            if not isinstance(d, Distribution):
                raise TargetError(
                    f"prior[{name!r}]: expected a numpyro distribution, got {type(d)}"
                )
            if d.support.is_discrete:
                raise TargetError(
                    f"prior[{name!r}]: discrete distribution {type(d).__name__}; samplers here "
                    "need continuous parameters (marginalise discrete ones out)"
                )
        self._prior = dict(prior)
        transforms = {k: biject_to(d.support) for k, d in prior.items()}
        shapes = {k: d.batch_shape + d.event_shape for k, d in prior.items()}

        def log_prior(params):
            return sum(jnp.sum(self._prior[k].log_prob(params[k])) for k in self._prior)

        self._setup(
            transforms=transforms,
            shapes=shapes,
            log_ref_params=log_prior,
            log_lik_params=log_likelihood,
            init=init,
            has_prior=True,
        )

    @classmethod
    @lenient
    def from_log_density(
        cls,
        log_density: Callable[[Any], Float[Array, ""]],
        *,
        init: Mapping[str, Any] | Any,
        bounds: Mapping[str, Bounds] | None = None,
    ) -> Target:
        """An unnormalised log-density over a dict (or any pytree) of parameters.

        ``init`` fixes the structure and shapes and is the starting point; ``bounds`` maps the
        top-level names to ``(low, high)`` (either may be ``None``). Without a prior, the
        tempering reference is a broad Gaussian in unconstrained space and the evidence is the
        integral of ``exp(log_density)`` over the constrained space.
        """
        self = cls.__new__(cls)
        self._prior = None
        bounds = dict(bounds or {})
        if isinstance(init, Mapping):
            unknown = set(bounds) - set(init)
            if unknown:
                raise TargetError(f"bounds: names {sorted(unknown)} are not in init {sorted(init)}")
            transforms = {k: _transform_for(tuple(bounds.get(k, (None, None))), k) for k in init}
            shapes = {k: tuple(np.shape(v)) for k, v in init.items()}
            init = {k: jnp.asarray(v) for k, v in init.items()}
        else:
            if bounds:
                raise TargetError("bounds: only supported when init is a dict of named parameters")
            init = {"x": jnp.asarray(init)}
            transforms = {"x": _transform_for((None, None), "x")}
            shapes = {"x": tuple(init["x"].shape)}
            inner = log_density
            log_density = lambda p: inner(p["x"])
        for k, v in init.items():
            if not jnp.issubdtype(jnp.asarray(v).dtype, jnp.floating):
                raise TargetError(
                    f"init[{k!r}]: expected floating-point values, got dtype {jnp.asarray(v).dtype}"
                )
        self._setup(
            transforms=transforms,
            shapes=shapes,
            log_ref_params=None,
            log_lik_params=log_density,
            init=init,
            has_prior=False,
        )
        return self

    @classmethod
    @lenient
    def from_numpyro(cls, model: Callable, *model_args, **model_kwargs) -> Target:
        """A NumPyro model, through ``numpyro.infer.util.initialize_model``.

        All latent sites must be continuous. The evidence is that of the model's joint density
        (``p(data) = int p(data | theta) p(theta) dtheta`` when the model's priors are normalised).
        """
        import numpyro
        from numpyro.infer.util import initialize_model

        with numpyro.handlers.seed(rng_seed=0):
            trace = numpyro.handlers.trace(model).get_trace(*model_args, **model_kwargs)
        latent = {}
        for name, site in trace.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            if site["fn"].support.is_discrete or getattr(
                site["fn"], "has_enumerate_support", False
            ):
                raise TargetError(
                    f"numpyro model site {name!r}: discrete latent variable "
                    f"({type(site['fn']).__name__}); marginalise it out (samplers here need "
                    "continuous parameters)"
                )
            latent[name] = site
        if not latent:
            raise TargetError("numpyro model: no latent sample sites to infer")
        info = initialize_model(
            jax.random.key(0),
            model,
            model_args=model_args,
            model_kwargs=model_kwargs,
            dynamic_args=False,
        )
        potential_fn = info.potential_fn
        postprocess = info.postprocess_fn
        z0 = info.param_info.z
        self = cls.__new__(cls)
        self._prior = None
        flat0, unravel = ravel_pytree(z0)
        self._unravel_u = unravel
        self.names = tuple(sorted(z0))  # ravel_pytree flattens dicts in sorted-key order
        self.shapes = {k: tuple(np.shape(v)) for k, v in z0.items()}
        self.dim = int(flat0.size)
        self.has_prior = True
        self.flat_names = _flat_names(self.names, self.shapes)
        self._constrain_u = postprocess
        self._unconstrain_fn = None
        self._log_reference = lambda z: jnp.zeros((), z.dtype)
        self._log_likelihood = lambda z: -potential_fn(unravel(z))
        self.z0 = flat0
        self.bounds = {k: "numpyro support" for k in self.names}
        self._check_init()
        return self

    # ------------------------------------------------------------------ internals
    _groups: dict[str, tuple[str, ...]] = {}

    def _grouped(self, prior, log_likelihood):
        """Joint priors under tuple keys become one vector parameter named ``"(a,b)"``."""
        groups = {}
        flat = {}
        for key, d in prior.items():
            if not isinstance(key, tuple):
                flat[key] = d
                continue
            gname = "(" + ",".join(key) + ")"
            shape = tuple(getattr(d, "batch_shape", ())) + tuple(getattr(d, "event_shape", ()))
            if len(key) < 2 or not all(isinstance(k, str) for k in key) or shape != (len(key),):
                raise TargetError(
                    f"prior[{key!r}]: a joint prior needs two or more names and a distribution of "
                    f"shape ({len(key)},), got shape {shape}"
                )
            groups[gname] = key
            flat[gname] = d
        if not groups:
            return prior, log_likelihood
        self._groups = groups
        split = self._split_groups
        inner = log_likelihood
        return flat, lambda params: inner(split(params))

    def _split_groups(self, params):
        out = {k: v for k, v in params.items() if k not in self._groups}
        for g, names in self._groups.items():
            out.update({n: params[g][..., i] for i, n in enumerate(names)})
        return out

    def _stack_groups(self, params):
        if not self._groups:
            return params
        members = {n for names in self._groups.values() for n in names}
        missing = members - set(params)
        if missing:
            raise TargetError(f"init: missing parameters {sorted(missing)}")
        out = {k: v for k, v in params.items() if k not in members}
        for g, names in self._groups.items():
            out[g] = jnp.stack([jnp.asarray(params[n], dtype=float) for n in names], axis=-1)
        return out

    def _setup(self, *, transforms, shapes, log_ref_params, log_lik_params, init, has_prior):
        self.names = tuple(sorted(transforms))  # ravel_pytree's dict order
        self.shapes = shapes
        self.has_prior = has_prior
        self._transforms = transforms
        self.bounds = {k: str(t.codomain) for k, t in transforms.items()}
        template = {k: jnp.zeros(shapes[k]) for k in self.names}
        flat0, unravel = ravel_pytree(template)
        self._unravel_u = unravel
        self.dim = int(flat0.size)
        if self.dim == 0:
            raise TargetError("target has no parameters (all shapes are empty)")
        self.flat_names = tuple(
            n for k in self.names for n in self._groups.get(k, _flat_names((k,), {k: shapes[k]}))
        )

        def constrain(u):
            return {k: transforms[k](u[k]) for k in self.names}

        def log_jac(u):
            return sum(
                jnp.sum(transforms[k].log_abs_det_jacobian(u[k], transforms[k](u[k])))
                for k in self.names
            )

        self._constrain_u = constrain
        if log_ref_params is None:

            def log_reference(z):
                return jnp.sum(-0.5 * (z / REFERENCE_SCALE) ** 2) - z.size * math.log(
                    REFERENCE_SCALE * math.sqrt(2 * math.pi)
                )

            def log_likelihood(z):
                u = unravel(z)
                return log_lik_params(constrain(u)) + log_jac(u) - log_reference(z)

        else:

            def log_reference(z):
                u = unravel(z)
                return log_ref_params(constrain(u)) + log_jac(u)

            def log_likelihood(z):
                return log_lik_params(constrain(unravel(z)))

        self._log_reference = log_reference
        self._log_likelihood = log_likelihood
        _check_scalar_fn(
            log_lik_params, {k: jnp.zeros(shapes[k]) for k in self.names}, "log-density"
        )
        if init is None:
            self.z0 = flat0
        else:
            self.z0 = self.unconstrain(init)
        self._check_init()

    def _check_init(self) -> None:
        # jitted: one compilation instead of an eager run that compiles every operation alone
        # (17 s against 4 s for the gw-population likelihood)
        lp, g = jax.jit(jax.value_and_grad(self.log_density))(self.z0)
        if not bool(jnp.isfinite(lp)):
            raise TargetError(
                f"log-density is {float(lp)} at the initial parameters "
                f"{self.describe(self.z0)}; expected a finite value"
            )
        bad = ~jnp.isfinite(g)
        if bool(bad.any()):
            names = [n for n, b in zip(self.flat_names, np.asarray(bad), strict=True) if b]
            raise TargetError(
                f"gradient of the log-density is not finite in {names} at the initial parameters "
                f"{self.describe(self.z0)}"
            )

    # ------------------------------------------------------------------ public
    def log_density(self, z: Float[Array, " dim"]) -> Float[Array, ""]:
        """Log-density of the unconstrained flat vector ``z`` (Jacobian included)."""
        return self._log_reference(z) + self._log_likelihood(z)

    def log_reference(self, z: Float[Array, " dim"]) -> Float[Array, ""]:
        """The prior (or broad Gaussian reference) part of `log_density`, Jacobian included."""
        return self._log_reference(z)

    def log_likelihood(self, z: Float[Array, " dim"]) -> Float[Array, ""]:
        """`log_density` minus `log_reference`: the part that tempering scales."""
        return self._log_likelihood(z)

    def reference_log_prob(self, z: Float[Array, " dim"]) -> Float[Array, ""]:
        """Log-density of the distribution `prior_sample` draws from (normalised, in ``z``)."""
        if self._prior is None:
            return jnp.sum(-0.5 * (z / REFERENCE_SCALE) ** 2) - z.size * math.log(
                REFERENCE_SCALE * math.sqrt(2 * math.pi)
            )
        return self._log_reference(z)

    def tempered(self, z: Float[Array, " dim"], beta: Float[Array, ""]) -> Float[Array, ""]:
        """``log_reference(z) + beta * log_likelihood(z)``."""
        return self._log_reference(z) + beta * self._log_likelihood(z)

    def constrain(self, z: Float[Array, " dim"]) -> dict[str, Array]:
        """Named constrained values of an unconstrained flat vector (or a batch of them)."""
        if z.ndim > 1:
            return jax.vmap(self.constrain)(z)
        c = self._constrain_u(self._unravel_u(z))
        return self._split_groups(c) if self._groups else c

    @lenient
    def unconstrain(self, params: Mapping[str, Any]) -> Float[Array, " dim"]:
        """The flat unconstrained vector of named constrained values (checks the bounds)."""
        if self._prior is None and not hasattr(self, "_transforms"):
            raise TargetError("unconstrain: not available for numpyro-model targets")
        params = self._stack_groups(params)
        missing = set(self.names) - set(params)
        if missing:
            raise TargetError(f"init: missing parameters {sorted(missing)}")
        u = {}
        for k in self.names:
            v = jnp.asarray(params[k], dtype=float)
            if v.shape != tuple(self.shapes[k]):
                raise TargetError(f"init[{k!r}]: expected shape {self.shapes[k]}, got {v.shape}")
            t = self._transforms[k]
            inside = np.asarray(t.codomain(v))
            if not inside.all():
                raise TargetError(
                    f"init[{k!r}] = {np.asarray(v).tolist()} is outside the parameter's support "
                    f"{t.codomain}; expected a value strictly inside the bounds"
                )
            u[k] = t.inv(v)
        z, _ = ravel_pytree({k: u[k] for k in self.names})
        if not bool(jnp.all(jnp.isfinite(z))):
            raise TargetError(
                f"init: parameters {dict(params)} map to non-finite unconstrained values"
            )
        return z

    @lenient
    def describe(self, z) -> str:
        """``name=value`` text of the constrained values at ``z`` (for error messages)."""
        c = self._constrain_u(self._unravel_u(jnp.asarray(z)))
        flat, _ = ravel_pytree({k: c[k] for k in self.names})
        return ", ".join(
            f"{n}={v:.6g}" for n, v in zip(self.flat_names, np.asarray(flat).tolist(), strict=True)
        )

    def flat_constrained(self, z: Float[Array, "*batch dim"]) -> Float[Array, "*batch dim"]:
        """Constrained values flattened in `flat_names` order (works on batches)."""
        if z.ndim > 1:
            return jax.vmap(self.flat_constrained)(z)
        c = self._constrain_u(self._unravel_u(z))
        return ravel_pytree({k: c[k] for k in self.names})[0]

    @lenient
    def prior_sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n dim"]:
        """``n`` draws of ``z`` from the prior (or the broad reference when there is none)."""
        if self._prior is None:
            return REFERENCE_SCALE * jax.random.normal(key, (n, self.dim), self.z0.dtype)
        keys = jax.random.split(key, len(self.names))
        draws = {k: self._prior[k].sample(kk, (n,)) for k, kk in zip(self.names, keys, strict=True)}

        def one(i):
            return self.unconstrain_traced({k: draws[k][i] for k in self.names})

        return jax.vmap(one)(jnp.arange(n))

    def unconstrain_traced(self, params):
        u = {k: self._transforms[k].inv(params[k]) for k in self.names}
        return ravel_pytree(u)[0]


def _flat_names(names, shapes) -> tuple[str, ...]:
    out = []
    for k in names:
        shape = tuple(shapes[k])
        if shape == ():
            out.append(k)
        else:
            out.extend(f"{k}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape))
    return tuple(out)
