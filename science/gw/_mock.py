"""Mock catalogues: a population, detections, noisy per-event posteriors and an injection set.

Sources are drawn from a mass (power law + peak, with the mass-ratio model) x redshift population;
each is detected when its single-detector observed SNR (`science.gw._detector`) exceeds the
threshold. For a detected source the data are modelled as Gaussian measurements of
``u = (ln Mc_det, q, ln d_L)`` with SNR-dependent widths; its posterior samples are draws of ``u``
from that likelihood under a prior flat in ``u`` (restricted to ``0 < q <= 1`` and the redshift
range), mapped to ``theta = (m1, q, z)``. The PE prior density in ``theta`` is then the Jacobian
``|du/dtheta| = (1/m1) d ln d_L / dz`` (up to a constant), which the hierarchical likelihood divides
out. Injections are drawn from a broad, known ``p_draw`` and detected with the same model, so the
whole pipeline runs offline with known truths.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from . import _detector as det, _models as models

__all__ = ["Catalogue", "GWTC3_PLP", "draw_population", "make_catalogue", "default_catalogue"]

# GWTC-3 Power Law + Peak medians (Abbott et al. 2023), and a Madau-Dickinson-like low-z slope.
GWTC3_PLP = {
    "alpha": 3.40,
    "beta": 1.1,
    "mmin": 5.08,
    "mmax": 86.9,
    "delta_m": 4.8,
    "lam": 0.039,
    "mpp": 33.7,
    "sigpp": 3.6,
    "lamb": 2.7,
}
Z_MAX = 2.3
SNR_THRESHOLD = 8.0


@dataclasses.dataclass
class Catalogue:
    """Events' posterior samples, their PE prior, the injection set, and the truths."""

    posteriors: dict[str, np.ndarray]  # [N, S]
    pe_prior: np.ndarray  # [N, S]
    injections: dict[str, np.ndarray]  # [N_found]
    p_draw: np.ndarray  # [N_found]
    n_draw: int
    truths: dict[str, float]
    true_events: dict[str, np.ndarray]  # [N]
    snr: np.ndarray  # [N] observed SNR

    @property
    def n_events(self) -> int:
        return int(self.pe_prior.shape[0])

    def save(self, path: str | Path) -> Path:
        arrays = {f"post_{k}": v for k, v in self.posteriors.items()}
        arrays |= {f"inj_{k}": v for k, v in self.injections.items()}
        arrays |= {f"true_{k}": v for k, v in self.true_events.items()}
        arrays |= {"pe_prior": self.pe_prior, "p_draw": self.p_draw, "snr": self.snr}
        arrays |= {"n_draw": np.asarray(self.n_draw)}
        arrays |= {f"truth_{k}": np.asarray(v) for k, v in self.truths.items()}
        np.savez_compressed(path, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Catalogue:
        with np.load(path) as f:
            get = {k: f[k] for k in f.files}

        def pick(prefix):
            return {k[len(prefix) :]: v for k, v in get.items() if k.startswith(prefix)}

        return cls(
            posteriors=pick("post_"),
            pe_prior=get["pe_prior"],
            injections=pick("inj_"),
            p_draw=get["p_draw"],
            n_draw=int(get["n_draw"]),
            truths={k: float(v) for k, v in pick("truth_").items()},
            true_events=pick("true_"),
            snr=get["snr"],
        )


def _inverse_cdf(rng, grid: np.ndarray, density: np.ndarray, n: int) -> np.ndarray:
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(grid))])
    cdf /= cdf[-1]
    return np.interp(rng.uniform(size=n), cdf, grid)


def draw_population(rng: np.random.Generator, hyper: dict[str, float], n: int):
    """``n`` sources ``(mass_1, mass_ratio, redshift)`` from power law + peak x (1+z)^lamb."""
    h = {k: jnp.asarray(v) for k, v in hyper.items()}
    m_grid = np.linspace(*models.M1_GRID[:2], 20000)
    m1 = _inverse_cdf(rng, m_grid, np.asarray(models.power_law_peak(jnp.asarray(m_grid), h)), n)
    q_grid = np.linspace(0.0, 1.0, 2001)
    # p(q | m1) ∝ q^beta S(q m1): inverse CDF per source on a shared grid
    qq = q_grid[None, :]
    dens = np.where(
        qq * m1[:, None] >= hyper["mmin"],
        qq ** hyper["beta"]
        * np.asarray(models.smoothing(jnp.asarray(qq * m1[:, None]), h["mmin"], h["delta_m"])),
        0.0,
    )
    cdf = np.concatenate(
        [np.zeros((n, 1)), np.cumsum(0.5 * (dens[:, 1:] + dens[:, :-1]) * np.diff(q_grid), axis=1)],
        axis=1,
    )
    cdf /= cdf[:, -1:]
    u = rng.uniform(size=n)
    hi = np.clip((cdf < u[:, None]).sum(axis=1), 1, q_grid.size - 1)
    c0, c1 = (
        np.take_along_axis(cdf, hi[:, None] - 1, 1)[:, 0],
        np.take_along_axis(cdf, hi[:, None], 1)[:, 0],
    )
    frac = np.where(c1 > c0, (u - c0) / np.where(c1 > c0, c1 - c0, 1.0), 0.0)
    q = q_grid[hi - 1] + frac * (q_grid[hi] - q_grid[hi - 1])
    z_grid = np.linspace(0.0, Z_MAX, 4000)
    pz = np.asarray(models.redshift_power_law(jnp.asarray(z_grid), h, z_max=Z_MAX))
    z = _inverse_cdf(rng, z_grid, pz, n)
    return {"mass_1": m1, "mass_ratio": q, "redshift": z}


def _detect(rng, src):
    m1d = src["mass_1"] * (1 + src["redshift"])
    m2d = m1d * src["mass_ratio"]
    rho = det.optimal_snr(m1d, m2d, det.luminosity_distance(src["redshift"]))
    rho = rho * det.projection_factor(rng, rho.size)
    observed = rho + rng.normal(size=rho.size)
    return observed > SNR_THRESHOLD, observed


def _u_of(m1, q, z):
    mc_det = m1 * q**0.6 / (1 + q) ** 0.2 * (1 + z)
    return np.log(mc_det), q, np.log(det.luminosity_distance(z))


def _theta_of(ln_mc_det, q, ln_dl):
    z = np.interp(np.exp(ln_dl), det._DL_GRID, det._Z_GRID)
    mc = np.exp(ln_mc_det) / (1 + z)
    m1 = mc * (1 + q) ** 0.2 / q**0.6
    return m1, q, z


def _dln_dl_dz(z):
    eps = 1e-4
    lo, hi = np.maximum(z - eps, 0.0), z + eps
    return (np.log(det.luminosity_distance(hi)) - np.log(det.luminosity_distance(lo))) / (hi - lo)


def _posterior_samples(rng, src_i, snr_obs, n_samples):
    """Samples of one event's posterior (flat prior in u) and their PE prior density."""
    scale = 8.0 / max(snr_obs, 1.0)
    sig = np.array([0.04, 0.25, 0.25]) * scale  # ln Mc_det, q, ln d_L
    u_true = np.array(_u_of(src_i["mass_1"], src_i["mass_ratio"], src_i["redshift"]))
    u_obs = u_true + sig * rng.normal(size=3)
    dl_max = np.log(det.luminosity_distance(Z_MAX))
    out = []
    while sum(len(o) for o in out) < n_samples:
        u = u_obs + sig * rng.normal(size=(4 * n_samples, 3))
        ok = (u[:, 1] > 0.02) & (u[:, 1] <= 1) & (u[:, 2] < dl_max) & (u[:, 2] > np.log(1.0))
        out.append(u[ok])
    u = np.concatenate(out)[:n_samples]
    m1, q, z = _theta_of(u[:, 0], u[:, 1], u[:, 2])
    prior = _dln_dl_dz(z) / m1
    return {"mass_1": m1, "mass_ratio": q, "redshift": z}, prior


Z_MAX_INJECTIONS = 1.0  # no source beyond z ~ 0.6 is detectable by this detector model


def _injections(rng, n_draw: int):
    """Broad injections: m1 log-uniform on [2, 100], q uniform on [2/m1, 1], z ∝ dVc/dz (1+z)
    on [0, 1] (detection probability beyond z = 1 is zero here, so the selection integral is
    unbiased)."""
    lo, hi = models.M1_GRID[:2]
    m1 = lo * (hi / lo) ** rng.uniform(size=n_draw)
    q = rng.uniform(2.0 / m1, 1.0)
    z_grid = np.linspace(0.0, Z_MAX_INJECTIONS, 2000)
    hz = {"lamb": jnp.asarray(2.0)}
    pz_grid = np.asarray(
        models.redshift_power_law(jnp.asarray(z_grid), hz, z_max=Z_MAX_INJECTIONS), np.float64
    )
    z = _inverse_cdf(rng, z_grid, pz_grid, n_draw)
    src = {"mass_1": m1, "mass_ratio": q, "redshift": z}
    found, _ = _detect(rng, src)
    p = 1.0 / (m1 * np.log(hi / lo)) / (1.0 - 2.0 / m1) * np.interp(z, z_grid, pz_grid)
    return {k: v[found] for k, v in src.items()}, p[found]


def make_catalogue(
    seed: int,
    *,
    n_events: int = 69,
    n_samples: int = 100,
    n_injections: int = 500_000,
    hyper: dict[str, float] | None = None,
) -> Catalogue:
    """A mock catalogue of ``n_events`` detections from ``hyper`` (GWTC-3 medians by default)."""
    if n_events < 1 or n_samples < 1:
        raise ValueError("make_catalogue: n_events and n_samples must be positive")
    hyper = dict(GWTC3_PLP if hyper is None else hyper)
    rng = np.random.default_rng(seed)
    detected: dict[str, list] = {"mass_1": [], "mass_ratio": [], "redshift": []}
    snrs: list[np.ndarray] = []
    while len(snrs) == 0 or sum(len(s) for s in snrs) < n_events:
        src = draw_population(rng, hyper, 20 * n_events)
        found, snr = _detect(rng, src)
        for k in detected:
            detected[k].append(src[k][found])
        snrs.append(snr[found])
    true_events = {k: np.concatenate(v)[:n_events] for k, v in detected.items()}
    snr = np.concatenate(snrs)[:n_events]
    posts = {k: np.empty((n_events, n_samples)) for k in true_events}
    prior = np.empty((n_events, n_samples))
    for i in range(n_events):
        s, p = _posterior_samples(rng, {k: v[i] for k, v in true_events.items()}, snr[i], n_samples)
        for k in posts:
            posts[k][i] = s[k]
        prior[i] = p
    inj, p_draw = _injections(rng, n_injections)
    return Catalogue(posts, prior, inj, p_draw, n_injections, hyper, true_events, snr)


DEFAULT_PATH = Path(__file__).with_name("data") / "gwtc3_plp_mock.npz"


def default_catalogue() -> Catalogue:
    """The shipped catalogue: 69 detections from GWTC-3 Power Law + Peak medians (seed 2023)."""
    if not DEFAULT_PATH.exists():
        raise FileNotFoundError(
            f"{DEFAULT_PATH} is missing from the installed package; regenerate it with "
            "`python -m science.gw._mock` (seed 2023)"
        )
    return Catalogue.load(DEFAULT_PATH)


if __name__ == "__main__":
    DEFAULT_PATH.parent.mkdir(exist_ok=True)
    cat = make_catalogue(2023)
    cat.save(DEFAULT_PATH)
    print(f"wrote {DEFAULT_PATH}: {cat.n_events} events, {cat.p_draw.size} found injections")
