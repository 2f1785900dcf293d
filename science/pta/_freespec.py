"""Free-spectrum "refit" likelihood: spectral models fitted to published PTA free-spectrum posteriors.

A PTA free-spectrum analysis samples one independent ``log10_rho`` per frequency bin (rho: the
GW-induced residual standard deviation per bin, seconds). Its per-bin marginal posteriors, stored as
kernel-density estimates on a grid (as ceffyl does; Lamb, Taylor & van Haasteren 2023), make a fast
likelihood for any spectral model: ``ln L(theta) = sum_i ln p_i(log10 rho_model(f_i; theta))``, with
``p_i`` the bin-``i`` density (divided by the free-spectrum analysis' flat prior, a constant that
cancels in Bayes factors). Bins are assumed independent, which is the refit approximation.

Below the free-spectrum prior's lower edge the data say nothing more about rho (the signal is buried
in noise there), so a bin's density is held at its value at that edge; above the grid the shipped
density's floor (about e^-36) applies. Three data sets ship in ``../shared/data/pta/freespec``:
EPTA DR2new (HD-correlated, 20 bins), PPTA DR3 (HD, 40 bins), IPTA DR2 (uncorrelated, 30 bins).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxaccel import runtime

__all__ = [
    "DATASETS",
    "DEFAULT_BINS",
    "FreeSpectrum",
    "PTADataError",
    "RefitLikelihood",
    "data_folder",
    "load_free_spectrum",
]


class PTADataError(runtime.Error, FileNotFoundError):
    """PTA data missing or malformed (the message names the path or field and how to fix it).

    A `jaxaccel.Error` (the ``jaxaccel`` command prints it as one line) and a `FileNotFoundError`.
    """


# name -> (folder under freespec/, description)
DATASETS = {
    "epta_dr2new": ("epta_dr2_new_hd", "EPTA DR2new, Hellings-Downs free spectrum, 20 bins"),
    "ppta_dr3": ("ppta_dr3_hd", "PPTA DR3, Hellings-Downs free spectrum, 40 bins"),
    "ipta_dr2": ("ipta_dr2", "IPTA DR2, uncorrelated (CURN) free spectrum, 30 bins"),
}
# Default bins: the lowest ones, where each shipped free spectrum is signal dominated (its bin
# densities peak well above the prior edge); above them the bins are noise dominated and pull a power
# law towards flat spectra. Choose others with ``bins=`` or ``fmax_hz=``.
DEFAULT_BINS = {"epta_dr2new": 9, "ppta_dr3": 8, "ipta_dr2": 13}

_HOW_TO_GET = (
    "The PTA data ship beside the repository in shared/data/pta (ceffyl's public data/ folder, MIT "
    "licence: https://github.com/astrolamb/ceffyl, and NANOGrav's discovery repository, data/epta_dr2). "
    "Put them there or point the environment variable JAXACCEL_PTA_DATA at a folder holding "
    "freespec/ and epta_dr2/."
)


def data_folder() -> Path:
    """The PTA data folder: ``$JAXACCEL_PTA_DATA`` if set, else ``<repo>/../shared/data/pta``."""
    env = os.environ.get("JAXACCEL_PTA_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pta"


@dataclasses.dataclass(frozen=True)
class FreeSpectrum:
    """Per-bin log-densities of ``log10_rho`` on a grid (one row per frequency bin).

    ``log_density[n_freqs, n_grid]`` on ``grid[n_grid]`` (uniformly spaced), ``freqs_hz[n_freqs]``,
    ``lower[n_freqs]``: where each bin's density is held constant below (the free-spectrum prior
    edge), ``tspan_s = 1 / freqs_hz[0]``.
    """

    name: str
    freqs_hz: np.ndarray
    grid: np.ndarray
    log_density: np.ndarray
    lower: np.ndarray
    description: str = ""

    @property
    def tspan_s(self) -> float:
        return float(1.0 / self.freqs_hz[0])

    @property
    def n_freqs(self) -> int:
        return int(self.freqs_hz.size)

    def select(self, bins: int | Sequence[int] | None = None, *, fmax_hz: float | None = None):
        """Indices of the bins to fit: the lowest ``bins`` (int), explicit indices, or all bins with
        frequency <= ``fmax_hz``. Out-of-range choices raise a `ValueError` naming the argument."""
        n = self.n_freqs
        if fmax_hz is not None:
            if bins is not None:
                raise ValueError("bins / fmax_hz: give one of them, not both")
            if not fmax_hz >= self.freqs_hz[0]:
                raise ValueError(
                    f"fmax_hz={fmax_hz:.3e} Hz is below the lowest frequency of {self.name} "
                    f"({self.freqs_hz[0]:.3e} Hz); its bins span {self.freqs_hz[0]:.3e}.."
                    f"{self.freqs_hz[-1]:.3e} Hz"
                )
            return np.flatnonzero(self.freqs_hz <= fmax_hz * (1 + 1e-9))
        if bins is None:
            return np.arange(n)
        if isinstance(bins, (int, np.integer)):
            if not 1 <= bins <= n:
                raise ValueError(
                    f"bins={bins}: {self.name} has {n} frequency bins; expected 1..{n}"
                )
            return np.arange(int(bins))
        idx = np.asarray(list(bins))
        if idx.size == 0 or idx.dtype.kind not in "iu":
            raise ValueError(
                f"bins: expected an int or a non-empty list of bin indices, got {bins!r}"
            )
        if idx.min() < 0 or idx.max() >= n or len(set(idx.tolist())) != idx.size:
            raise ValueError(
                f"bins={idx.tolist()}: indices must be distinct and within 0..{n - 1} for {self.name}"
            )
        return np.sort(idx)

    def bin_at(self, f_hz: float) -> int:
        """The index of the bin at frequency ``f_hz`` (within 1% of a bin frequency), else an error."""
        i = int(np.argmin(np.abs(self.freqs_hz - f_hz)))
        if abs(self.freqs_hz[i] - f_hz) > 0.01 * self.freqs_hz[0]:
            raise ValueError(
                f"frequency {f_hz:.4e} Hz is not a bin of {self.name}: its bins are k / T with "
                f"1/T = {self.freqs_hz[0]:.4e} Hz, from {self.freqs_hz[0]:.4e} to "
                f"{self.freqs_hz[-1]:.4e} Hz"
            )
        return i


def load_free_spectrum(name: str, folder: str | Path | None = None) -> FreeSpectrum:
    """Load one of `DATASETS` (or any ceffyl-format folder given as ``folder``)."""
    if folder is None:
        if name not in DATASETS:
            raise runtime.InputError(
                f"name: expected one of {list(DATASETS)} (free-spectrum data sets), got {name!r}"
            )
        folder = data_folder() / "freespec" / DATASETS[name][0]
    folder = Path(folder)
    if not folder.is_dir():
        raise PTADataError(
            f"free-spectrum data for {name!r}: folder {folder} does not exist. {_HOW_TO_GET}"
        )
    need = ("density.npy", "log10rhogrid.npy", "freqs.npy")
    missing = [f for f in need if not (folder / f).exists()]
    if missing:
        raise PTADataError(
            f"free-spectrum data for {name!r}: {folder} lacks {missing}. {_HOW_TO_GET}"
        )
    dens = np.load(folder / "density.npy")
    grid = np.load(folder / "log10rhogrid.npy").astype(np.float64)
    freqs = np.load(folder / "freqs.npy").astype(np.float64)
    dens = np.asarray(dens, np.float64).reshape(-1, dens.shape[-1])
    if dens.shape != (freqs.size, grid.size):
        raise PTADataError(
            f"{folder}/density.npy: expected shape (1, {freqs.size}, {grid.size}) to match freqs.npy "
            f"and log10rhogrid.npy, got {np.load(folder / 'density.npy').shape}"
        )
    step = np.diff(grid)
    if not (step > 0).all() or np.ptp(step) > 1e-6 * step.mean():
        raise PTADataError(
            f"{folder}/log10rhogrid.npy: expected an increasing, uniformly spaced grid"
        )
    if not np.isfinite(dens).all():
        raise PTADataError(f"{folder}/density.npy: non-finite log-densities")
    lower = _prior_edges(folder, dens, grid)
    return FreeSpectrum(
        name=name,
        freqs_hz=freqs,
        grid=grid,
        log_density=dens,
        lower=lower,
        description=DATASETS.get(name, ("", str(folder)))[1],
    )


def _prior_edges(folder: Path, dens: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Lower edge of each bin's free-spectrum prior, read off the KDE.

    Where a bin's density is above the floor at the grid's first point, the grid starts inside the
    prior and its first point is the edge. Otherwise the KDE's support starts one kernel radius
    (Epanechnikov: sqrt(5) bandwidths in KDEpy's convention) below the lowest sample, i.e. at the
    prior edge plus-minus a grid step: we take the first non-floor point plus that radius.
    """
    floor = dens.min()
    above = dens > floor + 1e-6
    first = np.argmax(above, axis=1)
    edges = grid[first].copy()
    bw_path = folder / "bandwidths.npy"
    bandwidths = np.load(bw_path).reshape(-1) if bw_path.exists() else np.zeros(len(dens))
    inside = first > 0
    edges[inside] += math.sqrt(5.0) * bandwidths[inside]
    return np.minimum(edges, grid[-1])


class RefitLikelihood:
    """``ln L(theta)`` of a spectral model given a free spectrum, on the chosen bins.

    ``spectrum``: a callable ``(f_hz, params) -> log10 rho [s]`` per bin (e.g.
    ``lambda f, p: model.log10_rho_s(f, p, tspan_s)``; use `for_model`). Evaluation is a linear
    interpolation of each bin's log-density on its uniform grid, jit/grad/vmap friendly.
    """

    def __init__(self, data: FreeSpectrum, spectrum, *, bins=None, fmax_hz=None):
        self.data = data
        self.bins = data.select(bins, fmax_hz=fmax_hz)
        self.spectrum = spectrum
        self.f_hz = jnp.asarray(data.freqs_hz[self.bins])
        self._dens = jnp.asarray(data.log_density[self.bins])
        self._lower = jnp.asarray(data.lower[self.bins])
        self._g0 = float(data.grid[0])
        self._step = float(data.grid[1] - data.grid[0])
        self._n = data.grid.size

    @classmethod
    def for_model(cls, data: FreeSpectrum, model, *, bins=None, fmax_hz=None, with_smbhb=None):
        """The refit likelihood of a `SpectralModel` (optionally plus a second model's spectrum,
        e.g. the SMBHB power law, added in energy density: rho^2 adds)."""
        tspan = data.tspan_s

        if with_smbhb is None:

            def spectrum(f, p):
                return model.log10_rho_s(f, p, tspan)

        else:

            def spectrum(f, p):
                a = model.log10_rho_s(f, p, tspan)
                b = with_smbhb.log10_rho_s(f, p, tspan)
                return (
                    0.5 * jnp.logaddexp(2 * a * math.log(10), 2 * b * math.log(10)) / math.log(10)
                )

        return cls(data, spectrum, bins=bins, fmax_hz=fmax_hz)

    def log10_rho(self, params) -> jax.Array:
        """The model's log10 rho [s] at the chosen bins."""
        return self.spectrum(self.f_hz, params)

    def per_bin(self, log10_rho) -> jax.Array:
        """Interpolated log-density of each chosen bin at ``log10_rho`` (shape ``[n_bins]``)."""
        x = jnp.clip(log10_rho, self._lower, self._g0 + self._step * (self._n - 1))
        # Non-finite spectra (NaN) propagate: `check` reports them eagerly; traced, ln L is -inf.
        u = (x - self._g0) / self._step
        i = jnp.clip(jnp.floor(u).astype(jnp.int32), 0, self._n - 2)
        t = u - i.astype(u.dtype)
        rows = jnp.arange(self._dens.shape[0])
        lo = self._dens[rows, i]
        hi = self._dens[rows, i + 1]
        return lo + t * (hi - lo)

    def __call__(self, params) -> jax.Array:
        """``ln L``: sum of the chosen bins' log-densities; -inf if the spectrum is not finite."""
        rho = self.log10_rho(params)
        ok = jnp.all(jnp.isfinite(rho))
        safe = jnp.where(ok, rho, self._lower)
        return jnp.where(ok, jnp.sum(self.per_bin(safe)), -jnp.inf)

    def check(self, params) -> None:
        """Raise a `ValueError` if the model's spectrum at ``params`` is not finite at a chosen bin."""
        rho = np.asarray(self.log10_rho(params))
        bad = ~np.isfinite(rho)
        if bad.any():
            f = np.asarray(self.f_hz)[bad]
            raise ValueError(
                f"the spectrum at parameters {dict((k, float(v)) for k, v in params.items())} is "
                f"{rho[bad][0]} at f = {f[0]:.3e} Hz ({int(bad.sum())} of {rho.size} bins not finite)"
            )
