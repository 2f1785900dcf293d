"""A full Gaussian-process PTA likelihood for real timing data (EPTA DR2), in JAX and float64.

The model, per pulsar ``a`` with ``n_a`` TOAs (residuals ``r_a`` in seconds):

    r_a = M_a eps_a + F_dm,a c_dm,a + F c_a + n_a

- ``n_a``: white noise, fixed from the noise dictionary: ``sigma^2 = efac^2 (toaerr^2 + 10^(2 log10_t2equad))``
  per backend (enterprise's ``t2equad`` convention: the equad is added *before* the efac scaling).
- ``F_dm,a c_dm,a``: dispersion-measure noise, a chromatic Fourier GP (basis scaled by (1400 MHz / nu)^2)
  over the pulsar's *own* span ``T_a`` with the noise dictionary's power law and component count; where the
  dictionary also has a chromatic ``cn_4.0_gp`` process, it is added the same way with index 4. Both are
  fixed, so they are folded into ``C0 = N + F_dm phi_dm F_dm^T``.
- ``M_a eps_a``: the timing model, marginalised analytically over a flat (Lebesgue) prior on the
  coefficients of ``M_a`` *with its columns scaled to unit Euclidean norm* (this choice fixes the constant).
- ``F c_a``: the red processes on a Fourier basis of ``n_red`` frequencies ``k / T`` (``T`` the common
  span of all pulsars in the likelihood), columns ordered ``sin(2 pi f_1 t), cos(2 pi f_1 t), sin(2 pi f_2 t),
  ...`` as enterprise's ``createfourierdesignmatrix_red``. ``c_a`` has prior variance per coefficient
  ``phi_red,a(f) + Gamma_aa phi_gw(f)`` and cross-pulsar covariance ``Gamma_ab phi_gw(f)`` on the lowest
  ``n_gw`` frequencies.

Power law (enterprise's ``powerlaw``, per sin/cos coefficient, seconds^2):
``phi(f) = A^2 / (12 pi^2) f_yr^(gamma - 3) f^(-gamma) / T``. Free spectrum (enterprise's
``free_spectrum``): ``phi(f_k) = 10^(2 log10_rho_k)``, the same for the sin and the cos coefficient.

Log likelihood (the constant convention, identical in the dense reference of the tests)::

    log L = sum_a [ -1/2 r_a^T K_a r_a ... ]   over the joint covariance C = C0 + F Phi F^T:
    log L = -1/2 r^T K r - 1/2 logdet C - 1/2 logdet(M^T C^-1 M) - (n - m)/2 log(2 pi)
    K = C^-1 - C^-1 M (M^T C^-1 M)^-1 M^T C^-1

with ``n`` the total TOAs, ``m`` the total timing-model columns, ``M`` block-diagonal over pulsars with
unit-norm columns. This is exactly ``log of the integral over eps of N(r - M eps; 0, C)``.

Numerics: everything that touches TOAs runs once, in numpy float64, at construction: the data are
whitened by ``C0^{-1/2}`` (diagonal white noise plus an SVD of the whitened DM basis), the timing model is
projected out by a QR decomposition (never the normal equations), leaving per pulsar only ``F^T K0 F``
(``2 n_red`` squared), ``F^T K0 r``, ``r^T K0 r`` and a constant. The JAX likelihood then uses the
Woodbury identity in its well-conditioned form ``I + Phi^{1/2 T} (F^T K0 F) Phi^{1/2}`` (eigenvalues >= 1,
no ``Phi^{-1}``, so tiny red-noise amplitudes are safe).

- CURN: one Cholesky of size ``2 n_red`` per pulsar, batched.
- HD: per pulsar, the uncorrelated coefficients above ``n_gw`` are eliminated by a Schur complement
  (batched Cholesky of size ``2 (n_red - n_gw)``), then one Cholesky of size ``n_pulsars * 2 n_gw`` couples
  the pulsars through ``Gamma``.

Hellings-Downs, as enterprise's ``hd_orf``: ``Gamma_ab = 3/2 x ln x - x/4 + 1/2`` with
``x = (1 - cos zeta_ab) / 2`` for ``a != b``, and ``Gamma_aa = 1`` (the Earth term's 1/2 plus the pulsar
term's 1/2). CURN is ``Gamma = I``.

Everything runs in float64: `PTALikelihood` raises at construction (and when traced) if
``jax_enable_x64`` is off.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from ._freespec import PTADataError, data_folder
from ._units import F_YR_HZ

__all__ = [
    "PTADataError",
    "Pulsar",
    "load_epta_dr2",
    "default_data_folder",
    "white_variance",
    "chromatic_noise",
    "fourier_basis",
    "hellings_downs",
    "PTALikelihood",
]

_DATA_HINT = (
    "The EPTA DR2 files (25 Apache Arrow .feather files) come from NANOGrav's `discovery` repository "
    "(https://github.com/nanograv/discovery, folder data/epta_dr2, MIT licence). Copy that folder to "
    "<data>/epta_dr2 and set JAXACCEL_PTA_DATA=<data> (or pass folder=...)."
)
_FREF_MHZ = 1400.0
_LOG10_12PI2 = math.log10(12.0 * math.pi**2)

RED_LOG10_A_BOUNDS = (-20.0, -11.0)
RED_GAMMA_BOUNDS = (0.0, 7.0)
GW_LOG10_A_BOUNDS = (-18.0, -11.0)
GW_GAMMA_BOUNDS = (0.0, 7.0)
GW_LOG10_RHO_BOUNDS = (-10.0, -4.0)


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Pulsar:
    """One pulsar's timing data, validated, in SI units (seconds) except radio frequencies (MHz).

    Attributes:
        name: pulsar name, e.g. ``"J1909-3744"``.
        toas: times of arrival [s], shape ``(n,)``.
        toaerrs: TOA uncertainties [s], ``(n,)``, finite and > 0.
        residuals: timing residuals [s], ``(n,)``.
        freqs_mhz: radio observing frequencies [MHz], ``(n,)``, finite and > 0.
        backends: backend label per TOA, ``(n,)`` strings.
        Mmat: timing-model design matrix, ``(n, m)``.
        pos: unit vector to the pulsar, ``(3,)``.
        noise: the noise dictionary (``<psr>_<backend>_efac``, ``<psr>_dm_gp_log10_A``, ...).
        notes: what the loader could not model or had to assume (e.g. a backend without white-noise
            values, an exponential dip in the dictionary).
    """

    name: str
    toas: np.ndarray
    toaerrs: np.ndarray
    residuals: np.ndarray
    freqs_mhz: np.ndarray
    backends: np.ndarray
    Mmat: np.ndarray
    pos: np.ndarray
    noise: Mapping[str, Any]
    notes: tuple[str, ...] = ()

    @classmethod
    def from_arrays(
        cls,
        name: str,
        toas,
        toaerrs,
        residuals,
        freqs_mhz,
        backends,
        Mmat,
        pos,
        noise: Mapping[str, Any] | None = None,
    ) -> Pulsar:
        """Build a validated pulsar from arrays (synthetic data, subsets of real pulsars).

        Raises:
            ValueError: naming the pulsar and the offending column for mismatched lengths, non-finite
                values, non-positive errors or frequencies, a rank-deficient or wrongly shaped ``Mmat``,
                or a position that is not a unit 3-vector.
        """
        name = str(name)
        toas = np.asarray(toas, dtype=np.float64)
        arrays = {
            "toas": toas,
            "toaerrs": np.asarray(toaerrs, dtype=np.float64),
            "residuals": np.asarray(residuals, dtype=np.float64),
            "freqs": np.asarray(freqs_mhz, dtype=np.float64),
        }
        backends = np.asarray(backends).astype(str)
        Mmat = np.asarray(Mmat, dtype=np.float64)
        pos = np.asarray(pos, dtype=np.float64)
        for col, a in arrays.items():
            if a.ndim != 1:
                raise ValueError(f"pulsar {name}: column {col!r} must be 1-D, got shape {a.shape}")
        n = toas.shape[0]
        if n == 0:
            raise ValueError(f"pulsar {name}: no TOAs")
        for col, a in [*arrays.items(), ("backend_flags", backends)]:
            if a.shape != (n,):
                raise ValueError(
                    f"pulsar {name}: column {col!r} has length {a.shape[0] if a.ndim else 0}, "
                    f"but 'toas' has length {n}"
                )
        for col, a in arrays.items():
            if not np.all(np.isfinite(a)):
                raise ValueError(f"pulsar {name}: column {col!r} has non-finite values")
        for col in ("toaerrs", "freqs"):
            if np.any(arrays[col] <= 0):
                raise ValueError(f"pulsar {name}: column {col!r} must be > 0")
        if Mmat.ndim != 2 or Mmat.shape[0] != n:
            raise ValueError(
                f"pulsar {name}: column 'Mmat' (timing-model design matrix) has shape {Mmat.shape}, "
                f"expected ({n}, m) with one row per TOA"
            )
        if not np.all(np.isfinite(Mmat)):
            raise ValueError(f"pulsar {name}: column 'Mmat' has non-finite values")
        norms = np.linalg.norm(Mmat, axis=0)
        if np.any(norms == 0):
            raise ValueError(
                f"pulsar {name}: column 'Mmat' has all-zero columns {np.flatnonzero(norms == 0)}"
            )
        if Mmat.shape[1] >= n:
            raise ValueError(
                f"pulsar {name}: 'Mmat' has {Mmat.shape[1]} columns for {n} TOAs (need fewer)"
            )
        if pos.shape != (3,) or not np.all(np.isfinite(pos)) or abs(np.linalg.norm(pos) - 1) > 1e-6:
            raise ValueError(f"pulsar {name}: 'pos' must be a finite unit 3-vector, got {pos}")
        return cls(
            name=name,
            toas=toas,
            toaerrs=arrays["toaerrs"],
            residuals=arrays["residuals"],
            freqs_mhz=arrays["freqs"],
            backends=backends,
            Mmat=Mmat,
            pos=pos,
            noise=dict(noise or {}),
        )

    @property
    def n_toas(self) -> int:
        return int(self.toas.shape[0])

    @property
    def tspan(self) -> float:
        """Span of the TOAs [s]."""
        return float(self.toas.max() - self.toas.min())


def default_data_folder() -> Path:  # public as science.pta.epta_dr2_folder
    """``data_folder() / "epta_dr2"``: ``$JAXACCEL_PTA_DATA/epta_dr2`` or ``../shared/data/pta/epta_dr2``."""
    return data_folder() / "epta_dr2"


def load_epta_dr2(
    folder: str | os.PathLike | None = None, pulsars: Sequence[str] | None = None
) -> list[Pulsar]:
    """Load the EPTA DR2 (DR2new, 25 pulsars) feather files as validated `Pulsar` objects.

    Args:
        folder: folder holding ``J*.feather``. Default: ``$JAXACCEL_PTA_DATA/epta_dr2`` if that variable
            is set, else ``../shared/data/pta/epta_dr2`` beside the repository root.
        pulsars: names to load (in this order); default all files, sorted by name.

    Raises:
        PTADataError: the folder, or a requested pulsar's file, is missing; or a file lacks a column.
        ValueError: a column fails validation (see `Pulsar.from_arrays`).
    """
    import pyarrow.feather as feather

    path = Path(folder) if folder is not None else default_data_folder()
    if not path.is_dir():
        raise PTADataError(f"EPTA DR2 data folder not found: {path}. {_DATA_HINT}")
    if pulsars is None:
        files = sorted(path.glob("*.feather"))
        if not files:
            raise PTADataError(f"no .feather files in {path}. {_DATA_HINT}")
    else:
        files = [path / f"{p}.feather" for p in pulsars]
        for f in files:
            if not f.is_file():
                raise PTADataError(f"pulsar file not found: {f}. {_DATA_HINT}")
    out = []
    for f in files:
        table = feather.read_table(f)
        meta = table.schema.metadata or {}
        if b"json" not in meta:
            raise PTADataError(f"{f}: no 'json' schema metadata (name, pos, noisedict)")
        info = json.loads(meta[b"json"])
        name = info.get("name", f.stem)
        cols = table.column_names
        for col in ("toas", "toaerrs", "residuals", "freqs", "backend_flags"):
            if col not in cols:
                raise PTADataError(f"pulsar {name} ({f}): missing column {col!r}")
        mcols = sorted((c for c in cols if c.startswith("Mmat_")), key=lambda c: int(c[5:]))
        if not mcols:
            raise PTADataError(f"pulsar {name} ({f}): no Mmat_* (design matrix) columns")
        psr = Pulsar.from_arrays(
            name,
            table["toas"].to_numpy(),
            table["toaerrs"].to_numpy(),
            table["residuals"].to_numpy(),
            table["freqs"].to_numpy(),
            table["backend_flags"].to_numpy(zero_copy_only=False),
            np.stack([table[c].to_numpy() for c in mcols], axis=1),
            info.get("pos"),
            info.get("noisedict", {}),
        )
        out.append(psr)
    return out


# --------------------------------------------------------------------------------------------------
# Fixed noise and the per-pulsar precomputation (numpy, float64)
# --------------------------------------------------------------------------------------------------


def white_variance(psr: Pulsar) -> tuple[np.ndarray, list[str]]:
    """Per-TOA white-noise variance [s^2] from the pulsar's noise dictionary (EFAC and T2EQUAD
    per backend), and notes on backends that lack them (efac 1, no equad used)."""
    sigma2 = np.empty_like(psr.toaerrs)
    notes = []
    for b in map(str, np.unique(psr.backends)):
        sel = psr.backends == b
        efac = psr.noise.get(f"{psr.name}_{b}_efac")
        equad = psr.noise.get(f"{psr.name}_{b}_log10_t2equad")
        if efac is None or equad is None:
            notes.append(
                f"{psr.name}: backend {b!r} lacks "
                + " and ".join(
                    k for k, v in (("efac", efac), ("log10_t2equad", equad)) if v is None
                )
                + " in the noise dictionary; using efac=1 and/or no equad"
            )
        efac = 1.0 if efac is None else float(efac)
        eq2 = 0.0 if equad is None else 10.0 ** (2.0 * float(equad))
        sigma2[sel] = efac**2 * (psr.toaerrs[sel] ** 2 + eq2)
    return sigma2, notes


def fourier_basis(toas: np.ndarray, n_freqs: int, tspan: float) -> tuple[np.ndarray, np.ndarray]:
    """Sin/cos Fourier basis ``(n, 2 n_freqs)`` at ``f_k = k / tspan`` (k = 1..n_freqs), and ``f_k``."""
    f = np.arange(1, n_freqs + 1, dtype=np.float64) / tspan
    arg = 2.0 * np.pi * toas[:, None] * f[None, :]
    F = np.empty((toas.shape[0], 2 * n_freqs))
    F[:, 0::2] = np.sin(arg)
    F[:, 1::2] = np.cos(arg)
    return F, f


def _powerlaw_np(f: np.ndarray, log10_A: float, gamma: float, tspan: float) -> np.ndarray:
    """enterprise's power law per sin/cos coefficient [s^2], repeated (sin, cos)."""
    phi = (10.0 ** (2 * log10_A)) / (12 * np.pi**2) * F_YR_HZ ** (gamma - 3) * f ** (-gamma) / tspan
    return np.repeat(phi, 2)


def chromatic_noise(psr: Pulsar) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The fixed chromatic GPs (DM, index 2; ``cn_4.0``, index 4) as ``(basis (n, k), phi (k,), notes)``.

    Each is a Fourier basis over the pulsar's own span with ``<x>_components`` frequencies, scaled by
    ``(1400 MHz / nu)^idx``, with the dictionary's fixed power law. Missing or null entries: no process.
    """
    nd, name = psr.noise, psr.name
    blocks, phis, notes = [], [], []
    tspan = psr.tspan
    for prefix, comp_key, idx in (
        ("dm_gp", "dm_gp_components", 2.0),
        ("cn_4.0_gp", "chrom_components", 4.0),
    ):
        A = nd.get(f"{name}_{prefix}_log10_A")
        g = nd.get(f"{name}_{prefix}_gamma")
        ncomp = nd.get(f"{name}_{comp_key}")
        if A is None or g is None:
            continue
        if ncomp is None:
            notes.append(f"{name}: {prefix} has a power law but no component count; not modelled")
            continue
        F, f = fourier_basis(psr.toas, int(ncomp), tspan)
        blocks.append(F * ((_FREF_MHZ / psr.freqs_mhz) ** idx)[:, None])
        phis.append(_powerlaw_np(f, float(A), float(g), tspan))
    for k in nd:
        if k.startswith(f"{name}_expd") and k.endswith("_log10_Amp"):
            notes.append(
                f"{name}: deterministic exponential dip {k[len(name) + 1 : -10]} not modelled"
            )
    if not blocks:
        return np.zeros((psr.n_toas, 0)), np.zeros(0), notes
    return np.concatenate(blocks, axis=1), np.concatenate(phis), notes


@dataclasses.dataclass(frozen=True)
class _Reduced:
    FKF: np.ndarray  # (2R, 2R)
    FKr: np.ndarray  # (2R,)
    rKr: float
    const: float  # -1/2 [logdet C0 + logdet(Mn^T C0^-1 Mn) + (n - m) log 2 pi]
    notes: tuple[str, ...]


def _reduce_pulsar(psr: Pulsar, tspan: float, n_red: int) -> _Reduced:
    """Whiten by C0^{-1/2}, project out the timing model (QR), reduce onto the red Fourier basis."""
    sigma2, notes_w = white_variance(psr)
    U, phi0, notes_c = chromatic_noise(psr)
    n, m = psr.Mmat.shape
    winv = 1.0 / np.sqrt(sigma2)
    # C0 = N^{1/2} (I + V V^T) N^{1/2}, V = N^{-1/2} U phi0^{1/2} = Uv diag(sv) Wv^T.
    # (I + V V^T)^{-1/2} = I - Uv diag(1 - (1 + sv^2)^{-1/2}) Uv^T.
    if U.shape[1]:
        Uv, sv, _ = np.linalg.svd(U * winv[:, None] * np.sqrt(phi0)[None, :], full_matrices=False)
        shrink = 1.0 - 1.0 / np.sqrt(1.0 + sv**2)
        logdet_c0 = np.sum(np.log(sigma2)) + np.sum(np.log1p(sv**2))
    else:
        Uv, shrink = np.zeros((n, 0)), np.zeros(0)
        logdet_c0 = np.sum(np.log(sigma2))

    def whiten(X):
        Xw = X * winv[:, None]
        return Xw - Uv @ (shrink[:, None] * (Uv.T @ Xw))

    Mn = psr.Mmat / np.linalg.norm(psr.Mmat, axis=0)
    F, _ = fourier_basis(psr.toas, n_red, tspan)
    Mw = whiten(Mn)
    Q, R = np.linalg.qr(Mw)
    dR = np.abs(np.diag(R))
    if dR.min() <= 1e-13 * dR.max():
        raise ValueError(
            f"pulsar {psr.name}: the timing-model design matrix 'Mmat' is (numerically) rank deficient"
        )
    logdet_mcm = 2.0 * np.sum(np.log(dR))
    Y = whiten(np.concatenate([F, psr.residuals[:, None]], axis=1))
    for _ in range(2):  # project twice: re-orthogonalisation ("twice is enough")
        Y = Y - Q @ (Q.T @ Y)
    Fp, rp = Y[:, :-1], Y[:, -1]
    const = -0.5 * (logdet_c0 + logdet_mcm + (n - m) * math.log(2.0 * math.pi))
    return _Reduced(
        FKF=Fp.T @ Fp,
        FKr=Fp.T @ rp,
        rKr=float(rp @ rp),
        const=float(const),
        notes=tuple(notes_w + notes_c),
    )


# --------------------------------------------------------------------------------------------------
# Overlap reduction function
# --------------------------------------------------------------------------------------------------


def hellings_downs(pos) -> np.ndarray:
    """Hellings-Downs ORF matrix for unit vectors ``pos`` ``(P, 3)``, enterprise's ``hd_orf`` convention.

    ``Gamma_ab = 3/2 x ln x - x/4 + 1/2``, ``x = (1 - cos zeta_ab)/2`` for ``a != b``, and
    ``Gamma_aa = 1`` (Earth term 1/2 plus pulsar term 1/2). Works on numpy or JAX arrays.
    """
    xp = jnp if isinstance(pos, jax.Array) else np
    pos = xp.asarray(pos)
    cos = xp.clip(pos @ pos.T, -1.0, 1.0)
    x = (1.0 - cos) / 2.0
    xlogx = xp.where(x > 0, x * xp.log(xp.where(x > 0, x, 1.0)), 0.0)
    orf = 1.5 * xlogx - 0.25 * x + 0.5
    eye = xp.eye(pos.shape[0], dtype=orf.dtype)
    return orf * (1.0 - eye) + eye


# --------------------------------------------------------------------------------------------------
# Likelihood
# --------------------------------------------------------------------------------------------------


def _require_x64(where: str) -> None:
    if not jax.config.jax_enable_x64:
        raise RuntimeError(
            f"{where} needs float64: PTA likelihoods lose all precision in float32 (residuals ~1e-6 s, "
            "covariances spanning >30 decades). Enable it first with "
            "`jax.config.update('jax_enable_x64', True)` (or run inside `with jax.enable_x64(True):`)."
        )


def _chol_logdet_quad(S, y):
    """logdet S and y^T S^-1 y for SPD ``S`` (..., k, k), ``y`` (..., k), via Cholesky."""
    L = jnp.linalg.cholesky(S)
    z = jsl.solve_triangular(L, y[..., None], lower=True)[..., 0]
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), axis=-1)
    return logdet, jnp.sum(z * z, axis=-1)


class PTALikelihood:
    """Gaussian-process PTA likelihood: per-pulsar red noise plus a common (CURN or HD) process.

    Args:
        pulsars: `Pulsar` objects (e.g. from `load_epta_dr2`).
        n_red: red-noise Fourier frequencies ``k / T``, k = 1..n_red (``T`` = common span).
        n_gw: common-process frequencies (the lowest ``n_gw`` of the same basis). Default 10.
        orf: ``"hd"`` (Hellings-Downs cross-correlations) or ``"curn"`` (uncorrelated common process).
        gw: ``"powerlaw"`` (``gw_log10_A``, ``gw_gamma``) or ``"free_spectrum"`` (``gw_log10_rho_<i>``).

    Parameters (flat priors, bounds inclusive): ``<psr>_red_noise_log10_A`` U(-20, -11),
    ``<psr>_red_noise_gamma`` U(0, 7), ``gw_log10_A`` U(-18, -11), ``gw_gamma`` U(0, 7), or
    ``gw_log10_rho_<i>`` U(-10, -4) for i = 0..n_gw-1 (rho in seconds; phi = rho^2 per sin/cos coefficient).

    `log_likelihood` takes a dict of scalars and is jit/grad/vmap friendly; `log_likelihood_batch` is its
    vmap over a dict of 1-D arrays. Outside the prior box (or with non-finite values) it returns ``-inf``
    with zero gradient; `check` raises a clear error instead, for eager use.

    Example::

        jax.config.update("jax_enable_x64", True)
        like = PTALikelihood(load_epta_dr2(), orf="hd")
        logl = jax.jit(like.log_likelihood)(like.reference_params())
    """

    def __init__(
        self,
        pulsars: Sequence[Pulsar],
        *,
        n_red: int = 30,
        n_gw: int = 10,
        orf: Literal["hd", "curn"] = "hd",
        gw: Literal["powerlaw", "free_spectrum"] = "powerlaw",
    ):
        _require_x64("PTALikelihood")
        if orf not in ("hd", "curn"):
            raise ValueError(f"orf must be 'hd' or 'curn', got {orf!r}")
        if gw not in ("powerlaw", "free_spectrum"):
            raise ValueError(f"gw must be 'powerlaw' or 'free_spectrum', got {gw!r}")
        pulsars = list(pulsars)
        if not pulsars:
            raise ValueError("PTALikelihood needs at least one pulsar")
        names = [p.name for p in pulsars]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate pulsar names: {names}")
        if not (1 <= n_gw <= n_red):
            raise ValueError(f"need 1 <= n_gw <= n_red, got n_gw={n_gw}, n_red={n_red}")
        self.pulsars = pulsars
        self.n_red, self.n_gw, self.orf, self.gw = int(n_red), int(n_gw), orf, gw
        t0 = min(float(p.toas.min()) for p in pulsars)
        t1 = max(float(p.toas.max()) for p in pulsars)
        self.tspan = t1 - t0
        self.freqs = np.arange(1, self.n_red + 1, dtype=np.float64) / self.tspan

        reduced = [_reduce_pulsar(p, self.tspan, self.n_red) for p in pulsars]
        notes = [n for r in reduced for n in r.notes]
        for n in notes:
            if "backend" in n:
                warnings.warn(n, stacklevel=2)
        self.notes: tuple[str, ...] = tuple(notes)
        self._FKF = np.stack([r.FKF for r in reduced])
        self._FKr = np.stack([r.FKr for r in reduced])
        self._rKr = np.array([r.rKr for r in reduced])
        self._const = np.array([r.const for r in reduced])
        self.orf_matrix = (
            hellings_downs(np.stack([p.pos for p in pulsars]))
            if orf == "hd"
            else np.eye(len(pulsars))
        )

        self._bounds: dict[str, tuple[float, float]] = {}
        for p in pulsars:
            self._bounds[f"{p.name}_red_noise_log10_A"] = RED_LOG10_A_BOUNDS
            self._bounds[f"{p.name}_red_noise_gamma"] = RED_GAMMA_BOUNDS
        if gw == "powerlaw":
            self._bounds["gw_log10_A"] = GW_LOG10_A_BOUNDS
            self._bounds["gw_gamma"] = GW_GAMMA_BOUNDS
        else:
            for i in range(self.n_gw):
                self._bounds[f"gw_log10_rho_{i}"] = GW_LOG10_RHO_BOUNDS
        self.param_names: tuple[str, ...] = tuple(self._bounds)

    # ---- parameters -------------------------------------------------------------------------------

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        """``{name: (low, high)}`` of the flat priors."""
        return dict(self._bounds)

    def priors(self) -> dict[str, Any]:
        """``{name: numpyro.distributions.Uniform(low, high)}``, in `param_names` order."""
        import numpyro.distributions as dist

        return {k: dist.Uniform(lo, hi) for k, (lo, hi) in self._bounds.items()}

    def reference_params(self, gw_log10_A: float = -15.0, gw_gamma: float = 13.0 / 3.0) -> dict:
        """A sensible point: red noise from the noise dictionary (``rn_log10_A``/``rn_gamma``; where absent,
        ``log10_A = -20``, ``gamma = 3``), clipped into the prior, and a small power-law GW (for the free
        spectrum: its rho per bin, clipped)."""
        out = {}
        for p in self.pulsars:
            A = p.noise.get(f"{p.name}_rn_log10_A")
            g = p.noise.get(f"{p.name}_rn_gamma")
            out[f"{p.name}_red_noise_log10_A"] = float(
                np.clip(-20.0 if A is None else A, *RED_LOG10_A_BOUNDS)
            )
            out[f"{p.name}_red_noise_gamma"] = float(
                np.clip(3.0 if g is None else g, *RED_GAMMA_BOUNDS)
            )
        if self.gw == "powerlaw":
            out["gw_log10_A"], out["gw_gamma"] = float(gw_log10_A), float(gw_gamma)
        else:
            phi = _powerlaw_np(self.freqs[: self.n_gw], gw_log10_A, gw_gamma, self.tspan)[0::2]
            for i, v in enumerate(0.5 * np.log10(phi)):
                out[f"gw_log10_rho_{i}"] = float(np.clip(v, *GW_LOG10_RHO_BOUNDS))
        return {k: out[k] for k in self.param_names}

    def check(self, params: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` naming the first missing, non-finite or out-of-prior parameter (eager)."""
        missing = [k for k in self.param_names if k not in params]
        if missing:
            raise ValueError(
                f"missing parameters: {missing[:5]}{' ...' if len(missing) > 5 else ''}"
            )
        for k, (lo, hi) in self._bounds.items():
            v = np.asarray(params[k], dtype=np.float64)
            if not np.all(np.isfinite(v)):
                raise ValueError(f"parameter {k!r} is not finite: {v}")
            if np.any(v < lo) or np.any(v > hi):
                raise ValueError(f"parameter {k!r} = {v} is outside its prior [{lo}, {hi}]")

    # ---- likelihood -------------------------------------------------------------------------------

    def _log10_powerlaw(self, log10_A, gamma, f):
        """log10 phi per coefficient for (..., 1) amplitudes against frequencies ``f`` (1, k)."""
        return (
            2.0 * log10_A
            - _LOG10_12PI2
            + (gamma - 3.0) * math.log10(F_YR_HZ)
            - gamma * jnp.log10(f)
            - math.log10(self.tspan)
        )

    def _phis(self, p):
        """Per-pulsar red phi (P, R) and common phi (G,), per coefficient [s^2]."""
        f = jnp.asarray(self.freqs)[None, :]
        A = jnp.stack([p[f"{q.name}_red_noise_log10_A"] for q in self.pulsars])[:, None]
        g = jnp.stack([p[f"{q.name}_red_noise_gamma"] for q in self.pulsars])[:, None]
        phi_red = 10.0 ** self._log10_powerlaw(A, g, f)
        if self.gw == "powerlaw":
            fg = f[:, : self.n_gw]
            phi_gw = 10.0 ** self._log10_powerlaw(p["gw_log10_A"], p["gw_gamma"], fg)[0]
        else:
            rho = jnp.stack([p[f"gw_log10_rho_{i}"] for i in range(self.n_gw)])
            phi_gw = 10.0 ** (2.0 * rho)
        return phi_red, phi_gw

    def _curn(self, phi_red, phi_gw):
        R, G = self.n_red, self.n_gw
        phi = phi_red + jnp.concatenate([phi_gw, jnp.zeros(R - G)])[None, :]
        s = jnp.sqrt(jnp.repeat(phi, 2, axis=1))  # (P, 2R)
        S = jnp.eye(2 * R)[None] + s[:, :, None] * jnp.asarray(self._FKF) * s[:, None, :]
        logdet, quad = _chol_logdet_quad(S, s * jnp.asarray(self._FKr))
        return 0.5 * jnp.sum(quad) - 0.5 * jnp.sum(logdet)

    def _hd(self, phi_red, phi_gw):
        P, R, G = len(self.pulsars), self.n_red, self.n_gw
        lo, A, b = 2 * G, jnp.asarray(self._FKF), jnp.asarray(self._FKr)
        A_LL, A_LH, A_HH = A[:, :lo, :lo], A[:, :lo, lo:], A[:, lo:, lo:]
        b_L, b_H = b[:, :lo], b[:, lo:]
        # Eliminate the uncorrelated high-frequency coefficients (per pulsar, Schur complement).
        if R > G:
            sH = jnp.sqrt(jnp.repeat(phi_red[:, G:], 2, axis=1))  # (P, 2(R-G))
            S_HH = jnp.eye(2 * (R - G))[None] + sH[:, :, None] * A_HH * sH[:, None, :]
            LH = jnp.linalg.cholesky(S_HH)
            Z = jsl.solve_triangular(LH, sH[:, :, None] * jnp.swapaxes(A_LH, 1, 2), lower=True)
            zH = jsl.solve_triangular(LH, (sH * b_H)[..., None], lower=True)[..., 0]
            logdet_H = 2.0 * jnp.sum(jnp.log(jnp.diagonal(LH, axis1=1, axis2=2)))
            quad_H = jnp.sum(zH * zH)
            A_red = A_LL - jnp.einsum("pik,pil->pkl", Z, Z)
            b_red = b_L - jnp.einsum("pik,pi->pk", Z, zH)
        else:
            logdet_H = quad_H = jnp.zeros(())
            A_red, b_red = A_LL, b_L
        # Correlated low-frequency block: prior covariance per frequency G_k = Gamma phi_gw,k + diag(phi_red).
        orf = jnp.asarray(self.orf_matrix)
        Gk = phi_gw[:, None, None] * orf[None] + jax.vmap(jnp.diag)(phi_red[:, :G].T)  # (G, P, P)
        Lk = jnp.repeat(jnp.linalg.cholesky(Gk), 2, axis=0)  # (2G, P, P), per coefficient j
        # S[a j, b k] = sum_c Lk[j, c, a] A_red[c, j, k] Lk[k, c, b], as an elementwise product and
        # one matmul batched over j (a three-operand einsum here made batched gradients crawl).
        X = A_red[:, :, :, None] * jnp.transpose(Lk, (1, 0, 2))[:, None, :, :]  # (c, j, k, b)
        Xj = jnp.transpose(X, (1, 0, 2, 3)).reshape(lo, P, lo * P)  # (j, c, k b)
        S = jnp.matmul(jnp.swapaxes(Lk, 1, 2), Xj)  # (j, a, k b)
        S = jnp.transpose(S.reshape(lo, P, lo, P), (1, 0, 3, 2)).reshape(P * lo, P * lo)
        y = jnp.einsum("jca,cj->aj", Lk, b_red).reshape(P * lo)
        logdet_L, quad_L = _chol_logdet_quad(jnp.eye(P * lo) + S, y)
        return 0.5 * (quad_H + quad_L) - 0.5 * (logdet_H + logdet_L)

    def _in_box(self, params):
        ok = jnp.array(True)
        for k, (lo, hi) in self._bounds.items():
            v = jnp.asarray(params[k])
            ok = ok & jnp.isfinite(v) & (v >= lo) & (v <= hi)
        return ok

    def log_likelihood(self, params: Mapping[str, Any]) -> jax.Array:
        """Log likelihood (float64 scalar) at ``params`` (dict of scalars; see the class docstring).

        ``-inf`` (zero gradient) outside the prior box or for non-finite values.
        """
        _require_x64("PTALikelihood.log_likelihood")
        ok = self._in_box(params)
        safe = {
            k: jnp.where(ok, jnp.asarray(params[k], dtype=jnp.float64), 0.5 * (lo + hi))
            for k, (lo, hi) in self._bounds.items()
        }
        phi_red, phi_gw = self._phis(safe)
        gp = self._hd(phi_red, phi_gw) if self.orf == "hd" else self._curn(phi_red, phi_gw)
        base = float(np.sum(self._const) - 0.5 * np.sum(self._rKr))
        return jnp.where(ok, base + gp, -jnp.inf)

    def sequential(self):
        """`log_likelihood` whose batches (under ``vmap``, as samplers evaluate it) run one point at
        a time, value and gradient together (a ``custom_vjp`` over ``sequential_vmap``).

        Use it whenever the HD likelihood is vmapped (``pta-compare`` evaluates HD at the CURN
        draws with it): on XLA's CPU backend (jaxlib 0.10.2) the
        batched gradient of the 25-pulsar HD graph wedges the intra-op thread pool for batches of
        about 12 and more (the process hangs at ~0% CPU; a known class of XLA CPU hangs on vmapped
        graphs). One point at a time costs the same per point (~32 ms with its gradient on 2 cores).
        """
        ll = self.log_likelihood
        value = jax.custom_batching.sequential_vmap(ll)
        value_and_grad = jax.custom_batching.sequential_vmap(jax.value_and_grad(ll))

        @jax.custom_vjp
        def log_likelihood(params):
            return value(params)

        def fwd(params):
            return value_and_grad(params)

        def bwd(grad, ct):
            return (jax.tree.map(lambda g: ct * g, grad),)

        log_likelihood.defvjp(fwd, bwd)
        return log_likelihood

    def log_likelihood_batch(self, params: Mapping[str, Any]) -> jax.Array:
        """`log_likelihood` vmapped over a leading axis of every parameter array (shape ``(B,)``).

        For batched *gradients* of the HD likelihood use `sequential` (see there why).
        """
        return jax.vmap(self.log_likelihood)(params)

    def __repr__(self) -> str:
        return (
            f"PTALikelihood({len(self.pulsars)} pulsars, n_red={self.n_red}, n_gw={self.n_gw}, "
            f"orf={self.orf!r}, gw={self.gw!r}, tspan={self.tspan / 3.15576e7:.2f} yr)"
        )
