"""Covariate balance: validation, whitening and the balance functions of a candidate assignment.

For covariates ``X`` (n units x d) with sample covariance ``S`` and an assignment with ``n_t``
treated, the Mahalanobis distance of the mean difference (Morgan & Rubin 2012) is

    M(w) = (xbar_t - xbar_c)^T [ (1/n_t + 1/n_c) S ]^{-1} (xbar_t - xbar_c).

With centred covariates, ``xbar_t - xbar_c = n / (n_t n_c) * sum_{i in T} x_i``, so with whitened
rows ``z_i = S^{-1/2} (x_i - xbar)`` it is ``M(w) = n / (n_t n_c) * || Z^T w ||^2``: one matrix
product per batch of candidates, which is how `science.rerandomization` checks balance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from jaxaccel import runtime

__all__ = ["Covariates", "BALANCES", "RerandomizationError"]

BALANCES = ("mahalanobis", "standardized", "max_smd")


class RerandomizationError(runtime.InputError):
    """Bad input to a rerandomization design or test (the message names the argument).

    A `jaxaccel.InputError`, hence a `jaxaccel.Error` and a `ValueError`.
    """


def check_units(n_units: int, n_treated: object) -> int:
    """``n_treated`` as an int in [1, n_units - 1], or a clear error."""
    if isinstance(n_treated, bool) or not isinstance(n_treated, int | np.integer):
        raise RerandomizationError(f"n_treated: expected an integer, got {n_treated!r}")
    n_treated = int(n_treated)
    if not 1 <= n_treated <= n_units - 1:
        raise RerandomizationError(
            f"n_treated: expected 1 <= n_treated <= n - 1 = {n_units - 1} (both arms non-empty) "
            f"for n = {n_units} units, got {n_treated}"
        )
    return n_treated


@dataclasses.dataclass(frozen=True)
class Covariates:
    """Validated covariates with the whitened/standardised matrix used by the balance check.

    Attributes:
        values: the covariates, float64 (n, d).
        names: one name per column.
        balance: ``"mahalanobis"`` (default), ``"standardized"`` (sum of squared standardised
            mean differences: Mahalanobis with the diagonal of S) or ``"max_smd"`` (largest
            absolute standardised mean difference, in units of its randomization sd), or a
            callable ``f(smd) -> scalar`` of the d standardised mean differences (jnp).
        transform: (d, d) matrix T with ``z_i = T^T (x_i - xbar)``.
        whitened: ``(X - xbar) @ T`` (n, d), float32.
    """

    values: np.ndarray
    names: tuple[str, ...]
    balance: str | Callable
    transform: np.ndarray
    whitened: np.ndarray

    @property
    def n_units(self) -> int:
        return self.values.shape[0]

    @property
    def dim(self) -> int:
        return self.values.shape[1]

    @classmethod
    def build(
        cls,
        covariates,
        *,
        names: Sequence[str] | None = None,
        balance: str | Callable = "mahalanobis",
        ridge: float = 0.0,
        argname: str = "covariates",
    ) -> Covariates:
        """Validate ``covariates`` (array-like (n, d) or a pandas DataFrame) and whiten them.

        Collinear covariates make S singular: that is refused with the offending columns named,
        unless ``ridge > 0``, which adds ``ridge * mean(diag S) * I`` to S.
        """
        if hasattr(covariates, "columns") and hasattr(covariates, "to_numpy"):
            names = [str(c) for c in covariates.columns] if names is None else names
            covariates = covariates.to_numpy(dtype=np.float64)
        try:
            x = np.asarray(covariates, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise RerandomizationError(
                f"{argname}: expected a numeric (n, d) array ({e})"
            ) from None
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
            raise RerandomizationError(
                f"{argname}: expected a (n units, d covariates) array with n >= 2, d >= 1, "
                f"got shape {x.shape}"
            )
        n, d = x.shape
        names = tuple(f"x{j}" for j in range(d)) if names is None else tuple(map(str, names))
        if len(names) != d:
            raise RerandomizationError(f"names: expected {d} names, got {len(names)}")
        bad = ~np.isfinite(x)
        if bad.any():
            cols = sorted({names[j] for j in np.nonzero(bad)[1]})
            rows = np.nonzero(bad.any(1))[0]
            raise RerandomizationError(
                f"{argname}: {int(bad.sum())} non-finite value(s) (NaN/inf) in column(s) {cols}, "
                f"e.g. row {int(rows[0])}; drop or impute those units first"
            )
        if not (isinstance(balance, str) and balance in BALANCES) and not callable(balance):
            raise RerandomizationError(
                f"balance: expected one of {BALANCES} or a callable of the standardised mean "
                f"differences, got {balance!r}"
            )
        if not (np.isfinite(ridge) and ridge >= 0):
            raise RerandomizationError(f"ridge: expected a finite value >= 0, got {ridge}")
        xc = x - x.mean(0)
        var = (xc * xc).sum(0) / (n - 1)
        const = [names[j] for j in np.nonzero(var <= 1e-12 * max(1.0, float(np.abs(x).max())))[0]]
        if const:
            raise RerandomizationError(
                f"{argname}: column(s) {const} are constant: they carry no balance information; "
                "drop them"
            )
        if balance == "mahalanobis":
            s = xc.T @ xc / (n - 1)
            if ridge > 0:
                s = s + ridge * float(np.mean(np.diag(s))) * np.eye(d)
            sd = np.sqrt(np.diag(s))
            corr = s / np.outer(sd, sd)
            evals, evecs = np.linalg.eigh(corr)
            if evals[0] <= 1e-10 * evals[-1] or d >= n:
                # the eigenvector of the smallest eigenvalue names the collinear columns
                v = np.abs(evecs[:, 0])
                involved = [names[j] for j in np.nonzero(v > 0.1 * v.max())[0]]
                rank = int((evals > 1e-10 * evals[-1]).sum())
                raise RerandomizationError(
                    f"{argname}: the covariance of the covariates is singular (rank {rank} < d = "
                    f"{d}; n = {n}): columns {involved} are (nearly) collinear. Drop one of them, "
                    "or pass ridge > 0 to regularise S (e.g. ridge=1e-3)"
                )
            # T = D^{-1} C^{-1/2}: symmetric whitening in correlation scale
            transform = (evecs / np.sqrt(evals)) @ evecs.T / sd[:, None]
        else:
            transform = np.diag(1.0 / np.sqrt(var))
        z = (xc @ transform).astype(np.float32)
        return cls(values=x, names=names, balance=balance, transform=transform, whitened=z)

    def distance(self, assignments: np.ndarray) -> np.ndarray:
        """Balance of each row of a boolean (k, n) array, in float64 (reference path)."""
        w = np.asarray(assignments, dtype=np.float64)
        n_t = w.sum(1)
        n = self.n_units
        xc = self.values - self.values.mean(0)
        smd = (w @ xc @ self.transform) * np.sqrt(n / (n_t * (n - n_t)))[:, None]
        return reduce_smd(smd, self.balance, np)


def reduce_smd(smd, balance, xp):
    """Balance value from standardised mean differences ``smd`` (..., d) (whitened for
    ``mahalanobis``): a sum of squares, the largest absolute value, or a user function."""
    if balance in ("mahalanobis", "standardized"):
        return (smd * smd).sum(-1)
    if balance == "max_smd":
        return xp.abs(smd).max(-1)
    if xp is np:
        import jax

        return np.asarray(jax.vmap(balance)(smd.astype(np.float32)), dtype=np.float64)
    import jax

    return jax.vmap(balance)(smd)
