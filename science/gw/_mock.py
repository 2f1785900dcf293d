"""Mock catalogues: a population, detections, noisy per-event posteriors and an injection set.

Sources are drawn from a population (power law + peak BBH masses with the mass-ratio model, or an
NSBH model, x a redshift model); each is detected when its single-detector observed SNR
``rho_obs = w rho_opt + n`` (`science.gw._detector`; ``w`` the projection factor, ``n`` unit
Gaussian noise) exceeds the threshold. A detected source's data are ``rho_obs`` and Gaussian
measurements ``u_obs`` of ``u = (ln Mc_det, q, ln d_L)`` with SNR-dependent widths. Its posterior
uses both: samples are drawn from ``N(u; u_obs, sigma)`` under a prior flat in ``u`` (restricted to
``0.02 < q <= 1`` and the redshift range) and accepted with probability proportional to
``p(rho_obs | theta) = E_w N(rho_obs; w rho_opt(theta), 1)`` (rejection sampling, so the samples
are exact posterior draws). Leaving out the SNR term would bias the population: the selection
depends on ``rho_obs``, and a posterior that ignores it spreads into distances where the event could
not have been detected. The PE prior density in ``theta = (m1, q, z)`` is the Jacobian
``|du/dtheta| = (1/m1) d ln d_L / dz`` (up to a constant), which the hierarchical likelihood divides
out. Injections are drawn from a broad, known ``p_draw`` and detected with the same model, so the
whole pipeline runs offline with known truths.

Two-subpopulation catalogues (`make_mixture_catalogue`) draw a Poisson number of sources from each
subpopulation: ``rates[k]`` is the expected number of mergers per unit observing time out to
``Z_MAX`` (`science.gw.models.local_rate` converts it to a local rate density in Gpc^-3 yr^-1).
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from . import _detector as det, _models as models
from ._likelihood import GWDataError

__all__ = [
    "Catalogue",
    "GWTC3_PLP",
    "NSBH_DEFAULT",
    "draw_population",
    "draw_nsbh",
    "make_catalogue",
    "make_mixture_catalogue",
    "default_catalogue",
    "snr_likelihood",
]

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
# An NSBH subpopulation: black hole masses ∝ m^-alpha on [mmin, mmax], neutron star masses uniform
# on [m2min, m2max] (a documented toy in the spirit of the GWTC-3 NSBH analyses).
NSBH_DEFAULT = {"alpha": 2.0, "mmin": 3.0, "mmax": 20.0, "m2min": 1.0, "m2max": 2.5}
Z_MAX = 2.3
SNR_THRESHOLD = 8.0


@dataclasses.dataclass
class Catalogue:
    """Events' posterior samples, their PE prior, the injection set, and the truths.

    ``observing_time`` is set for catalogues whose rates are sampled (`make_mixture_catalogue`):
    it is the ``time_volume`` of `HierarchicalLikelihood` with ``rate="sampled"``.
    """

    posteriors: dict[str, np.ndarray]  # [N, S]
    pe_prior: np.ndarray  # [N, S]
    injections: dict[str, np.ndarray]  # [N_found]
    p_draw: np.ndarray  # [N_found]
    n_draw: int
    truths: dict[str, float]
    true_events: dict[str, np.ndarray]  # [N] (and "subpop": index into `subpops`)
    snr: np.ndarray  # [N] observed SNR
    observing_time: float | None = None
    subpops: tuple[str, ...] = ("BBH",)

    @property
    def n_events(self) -> int:
        return int(self.pe_prior.shape[0])

    def save(self, path: str | Path) -> Path:
        arrays = {f"post_{k}": v for k, v in self.posteriors.items()}
        arrays |= {f"inj_{k}": v for k, v in self.injections.items()}
        arrays |= {f"true_{k}": v for k, v in self.true_events.items()}
        arrays |= {"pe_prior": self.pe_prior, "p_draw": self.p_draw, "snr": self.snr}
        arrays |= {"n_draw": np.asarray(self.n_draw), "subpops": np.asarray(self.subpops)}
        arrays |= {f"truth_{k}": np.asarray(v) for k, v in self.truths.items()}
        if self.observing_time is not None:
            arrays["observing_time"] = np.asarray(self.observing_time)
        np.savez_compressed(path, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Catalogue:
        """Read a catalogue written by `save`.

        Raises:
            GWDataError: naming the file and what is wrong with it (missing, not an ``.npz``
                archive, arrays missing or of inconsistent shapes).
        """
        path = Path(path)
        if not path.exists():
            raise GWDataError(f"{path}: no such file")
        if not path.is_file():
            raise GWDataError(f"{path}: not a file")
        if not zipfile.is_zipfile(path):
            with open(path, "rb") as f:
                npy = f.read(6) == b"\x93NUMPY"
            what = "an .npy array" if npy else "not a zip archive (is it a text file?)"
            raise GWDataError(f"{path}: {what}; expected the .npz archive Catalogue.save writes")
        try:
            with np.load(path, allow_pickle=False) as f:
                get = {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise GWDataError(
                f"{path}: unreadable .npz archive ({e}); expected one written by Catalogue.save"
            ) from None

        def pick(prefix):
            return {k[len(prefix) :]: v for k, v in get.items() if k.startswith(prefix)}

        missing = [k for k in ("pe_prior", "p_draw", "n_draw", "snr") if k not in get]
        missing += [f"{p}<name>" for p in ("post_", "inj_", "truth_") if not pick(p)]
        if missing:
            raise GWDataError(
                f"{path}: missing arrays {missing} (it holds {sorted(get) or 'none'}); a catalogue "
                "file holds post_<param>, inj_<param>, truth_<name>, pe_prior, p_draw, n_draw and "
                "snr (as written by Catalogue.save)"
            )
        posteriors, injections = pick("post_"), pick("inj_")
        shape = np.shape(get["pe_prior"])
        for name, a in posteriors.items():
            if np.ndim(a) != 2 or np.shape(a) != shape:
                raise GWDataError(
                    f"{path}: post_{name} has shape {np.shape(a)}; expected pe_prior's "
                    f"{shape} (events x samples)"
                )
        n_found = np.shape(get["p_draw"])
        for name, a in injections.items():
            if np.ndim(a) != 1 or np.shape(a) != n_found:
                raise GWDataError(
                    f"{path}: inj_{name} has shape {np.shape(a)}; expected p_draw's {n_found}"
                )
        try:
            truths = {k: float(v) for k, v in pick("truth_").items()}
            n_draw = int(get["n_draw"])
        except (TypeError, ValueError) as e:
            raise GWDataError(f"{path}: n_draw and truth_<name> must be scalars ({e})") from None
        return cls(
            posteriors=posteriors,
            pe_prior=get["pe_prior"],
            injections=injections,
            p_draw=get["p_draw"],
            n_draw=n_draw,
            truths=truths,
            true_events=pick("true_"),
            snr=get["snr"],
            observing_time=float(get["observing_time"]) if "observing_time" in get else None,
            subpops=tuple(str(x) for x in get.get("subpops", np.asarray(["BBH"]))),
        )


def _inverse_cdf(rng, grid: np.ndarray, density: np.ndarray, n: int) -> np.ndarray:
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(grid))])
    cdf /= cdf[-1]
    return np.interp(rng.uniform(size=n), cdf, grid)


def _draw_redshift(rng, hyper, n):
    z_grid = np.linspace(0.0, Z_MAX, 4000)
    pz = np.asarray(models.redshift_power_law(jnp.asarray(z_grid), hyper, z_max=Z_MAX))
    return _inverse_cdf(rng, z_grid, pz, n)


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
    return {"mass_1": m1, "mass_ratio": q, "redshift": _draw_redshift(rng, h, n)}


def draw_nsbh(rng: np.random.Generator, hyper: dict[str, float], n: int):
    """``n`` NSBH sources: m1 ∝ m^-alpha on [mmin, mmax], m2 uniform on [m2min, m2max]."""
    h = {k: jnp.asarray(v) for k, v in hyper.items()}
    m_grid = np.linspace(hyper["mmin"], hyper["mmax"], 4000)
    pm = np.asarray(
        models.truncated_power_law(jnp.asarray(m_grid), -h["alpha"], h["mmin"], h["mmax"])
    )
    m1 = _inverse_cdf(rng, m_grid, pm, n)
    m2 = rng.uniform(hyper["m2min"], np.minimum(hyper["m2max"], m1))
    return {"mass_1": m1, "mass_ratio": m2 / m1, "redshift": _draw_redshift(rng, h, n)}


def _optimal_snr(src):
    m1d = src["mass_1"] * (1 + src["redshift"])
    return det.optimal_snr(m1d, m1d * src["mass_ratio"], det.luminosity_distance(src["redshift"]))


def _detect(rng, src):
    rho = _optimal_snr(src) * det.projection_factor(rng, src["mass_1"].size)
    observed = rho + rng.normal(size=rho.size)
    return observed > SNR_THRESHOLD, observed


# 512 quantiles of the projection factor's distribution (from 10^6 fixed draws): the quadrature
# nodes of p(rho_obs | theta).
_W_NODES = np.quantile(
    det.projection_factor(np.random.default_rng(20231), 1_000_000), (np.arange(512) + 0.5) / 512
)


def snr_likelihood(rho_obs: float, rho_opt) -> np.ndarray:
    """``p(rho_obs | rho_opt) = E_w N(rho_obs; w rho_opt, 1)``, ``w`` the isotropic projection
    factor (averaged over 512 quantiles of ``w``)."""
    d = rho_obs - np.asarray(rho_opt)[..., None] * _W_NODES
    return np.mean(np.exp(-0.5 * d * d), axis=-1) / np.sqrt(2 * np.pi)


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
    """Exact samples of one event's posterior given ``(u_obs, rho_obs)`` (flat prior in u) and
    their PE prior density."""
    scale = 8.0 / max(snr_obs, 1.0)
    sig = np.array([0.04, 0.25, 0.25]) * scale  # ln Mc_det, q, ln d_L
    u_true = np.array(_u_of(src_i["mass_1"], src_i["mass_ratio"], src_i["redshift"]))
    u_obs = u_true + sig * rng.normal(size=3)
    dl_max = np.log(det.luminosity_distance(Z_MAX))
    # the SNR likelihood's maximum over rho_opt bounds the acceptance ratio
    bound = 1.02 * snr_likelihood(snr_obs, np.geomspace(0.1, 1e5, 800)).max()
    out, n_out = [], 0
    while n_out < n_samples:
        u = u_obs + sig * rng.normal(size=(4 * n_samples, 3))
        ok = (u[:, 1] > 0.02) & (u[:, 1] <= 1) & (u[:, 2] < dl_max) & (u[:, 2] > np.log(1.0))
        u = u[ok]
        m1, q, z = _theta_of(u[:, 0], u[:, 1], u[:, 2])
        like = snr_likelihood(snr_obs, _optimal_snr({"mass_1": m1, "mass_ratio": q, "redshift": z}))
        keep = rng.uniform(size=like.size) * bound < like
        out.append(u[keep])
        n_out += int(keep.sum())
    u = np.concatenate(out)[:n_samples]
    m1, q, z = _theta_of(u[:, 0], u[:, 1], u[:, 2])
    prior = _dln_dl_dz(z) / m1
    return {"mass_1": m1, "mass_ratio": q, "redshift": z}, prior


Z_MAX_INJECTIONS = 1.0  # no source beyond z ~ 0.6 is detectable by this detector model


def _injections(rng, n_draw: int):
    """Broad injections: m1 log-uniform on [2, 100], q uniform on [1/m1, 1] (m2 >= 1 Msun, so
    NSBH are covered), z ∝ dVc/dz (1+z) on [0, 1] (detection probability beyond z = 1 is zero
    here, so the selection integral is unbiased)."""
    lo, hi = models.M1_GRID[:2]
    m1 = lo * (hi / lo) ** rng.uniform(size=n_draw)
    q = rng.uniform(1.0 / m1, 1.0)
    z_grid = np.linspace(0.0, Z_MAX_INJECTIONS, 2000)
    hz = {"lamb": jnp.asarray(2.0)}
    pz_grid = np.asarray(
        models.redshift_power_law(jnp.asarray(z_grid), hz, z_max=Z_MAX_INJECTIONS), np.float64
    )
    z = _inverse_cdf(rng, z_grid, pz_grid, n_draw)
    src = {"mass_1": m1, "mass_ratio": q, "redshift": z}
    found, _ = _detect(rng, src)
    p = 1.0 / (m1 * np.log(hi / lo)) / (1.0 - 1.0 / m1) * np.interp(z, z_grid, pz_grid)
    return {k: v[found] for k, v in src.items()}, p[found]


def _pe(rng, true_events: dict[str, np.ndarray], snr: np.ndarray, n_samples: int):
    """Posterior samples and PE prior of each detected source: ``([N, S] dict, [N, S])``."""
    n = snr.size
    keys = ("mass_1", "mass_ratio", "redshift")
    posts = {k: np.empty((n, n_samples)) for k in keys}
    prior = np.empty((n, n_samples))
    for i in range(n):
        s, p = _posterior_samples(rng, {k: true_events[k][i] for k in keys}, snr[i], n_samples)
        for k in posts:
            posts[k][i] = s[k]
        prior[i] = p
    return posts, prior


def _detections(rng, draw, n_batch: int, n_events: int | None = None):
    """Detected sources and their observed SNR: batches of ``draw(rng, n_batch)`` until at least
    ``n_events`` are found (one batch if ``n_events`` is None), then the first ``n_events``."""
    found_src: dict[str, list] = {}
    snrs: list[np.ndarray] = []
    while not snrs or (n_events is not None and sum(s.size for s in snrs) < n_events):
        src = draw(rng, n_batch)
        found, snr = _detect(rng, src)
        for k, v in src.items():
            found_src.setdefault(k, []).append(v[found])
        snrs.append(snr[found])
    cut = slice(0, n_events)
    return {k: np.concatenate(v)[cut] for k, v in found_src.items()}, np.concatenate(snrs)[cut]


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
    true_events, snr = _detections(
        rng, lambda r, n: draw_population(r, hyper, n), 20 * n_events, n_events
    )
    posts, prior = _pe(rng, true_events, snr, n_samples)
    inj, p_draw = _injections(rng, n_injections)
    return Catalogue(posts, prior, inj, p_draw, n_injections, hyper, true_events, snr)


def make_mixture_catalogue(
    seed: int,
    rates: dict[str, float],
    *,
    hyper: dict[str, float] | None = None,
    observing_time: float = 1.0,
    n_samples: int = 100,
    n_injections: int = 500_000,
) -> Catalogue:
    """A BBH + NSBH catalogue: a Poisson number of sources from each subpopulation.

    ``rates``: ``{"BBH": R_bbh, "NSBH": R_nsbh}``, expected mergers per unit time out to
    ``Z_MAX``; ``hyper``: BBH hyperparameters prefixed ``"BBH."``, NSBH ones ``"NSBH."``, shared
    ``"lamb"`` (defaults: GWTC-3 medians and `NSBH_DEFAULT`). Truths include ``rate_bbh`` and
    ``rate_nsbh``; ``true_events["subpop"]`` is 0 for BBH, 1 for NSBH.
    """
    if set(rates) != {"BBH", "NSBH"} or min(rates.values()) <= 0:
        raise ValueError("make_mixture_catalogue: rates must be {'BBH': >0, 'NSBH': >0}")
    if hyper is None:
        hyper = {f"BBH.{k}": v for k, v in GWTC3_PLP.items() if k != "lamb"}
        hyper |= {f"NSBH.{k}": v for k, v in NSBH_DEFAULT.items()}
        hyper["lamb"] = GWTC3_PLP["lamb"]
    rng = np.random.default_rng(seed)
    draws = {"BBH": draw_population, "NSBH": draw_nsbh}
    parts = []
    for idx, name in enumerate(("BBH", "NSBH")):
        h = models.Mixture.hyper_for(name, hyper)
        n = int(rng.poisson(rates[name] * observing_time))
        ev, snr = _detections(rng, lambda r, k, f=draws[name], h=h: f(r, h, k), n)
        ev["subpop"] = np.full(snr.size, idx)
        parts.append((ev, snr))
    true_events = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
    snr = np.concatenate([p[1] for p in parts])
    if snr.size == 0:
        raise ValueError("make_mixture_catalogue: no detections; raise the rates or the time")
    posts, prior = _pe(rng, true_events, snr, n_samples)
    inj, p_draw = _injections(rng, n_injections)
    truths = dict(hyper) | {"rate_bbh": rates["BBH"], "rate_nsbh": rates["NSBH"]}
    return Catalogue(
        posts,
        prior,
        inj,
        p_draw,
        n_injections,
        truths,
        true_events,
        snr,
        observing_time=observing_time,
        subpops=("BBH", "NSBH"),
    )


DATA = Path(__file__).with_name("data")
DEFAULT_PATH = DATA / "gwtc3_plp_mock.npz"
MIXTURE_PATH = DATA / "bbh_nsbh_mock.npz"
# The shipped two-subpopulation catalogue: ~15.9 BBH and ~53 NSBH Gpc^-3 yr^-1 locally (lamb 2.7).
MIXTURE_RATES = {"BBH": 60_000.0, "NSBH": 200_000.0}


def default_catalogue(model: str = "bbh") -> Catalogue:
    """A shipped catalogue. ``"bbh"``: 69 detections from the GWTC-3 Power Law + Peak medians
    (seed 2023); ``"bbh+nsbh"``: one observing year of `MIXTURE_RATES` (seed 2024, 2e6 injections
    drawn)."""
    path = {"bbh": DEFAULT_PATH, "bbh+nsbh": MIXTURE_PATH}.get(model)
    if path is None:
        raise ValueError(f"default_catalogue: model must be 'bbh' or 'bbh+nsbh', got {model!r}")
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing from the installed package; regenerate it with "
            "`python -m science.gw._mock`"
        )
    return Catalogue.load(path)


if __name__ == "__main__":
    DATA.mkdir(exist_ok=True)
    cat = make_catalogue(2023)
    cat.save(DEFAULT_PATH)
    print(f"wrote {DEFAULT_PATH}: {cat.n_events} events, {cat.p_draw.size} found injections")
    mix = make_mixture_catalogue(2024, MIXTURE_RATES, n_injections=2_000_000)
    mix.save(MIXTURE_PATH)
    counts = np.bincount(mix.true_events["subpop"], minlength=2)
    print(f"wrote {MIXTURE_PATH}: {counts[0]} BBH + {counts[1]} NSBH detections")
