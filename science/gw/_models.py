"""Population models of binary black holes and neutron stars, as pure functions of hyperparameters.

Every model is a function ``log_prob(data, hyper) -> array`` over a dict of event parameters
(``mass_1`` in solar masses, ``mass_ratio`` q = m2/m1 <= 1, ``a_1``/``a_2`` spin magnitudes,
``cos_tilt_1``/``cos_tilt_2``, ``redshift``, ``eccentricity``) and a dict of hyperparameters; each is
a normalised density in the parameters it covers (numerically normalised where no closed form
exists, on fixed grids so the result is smooth in the hyperparameters). `Population` multiplies
independent factors; `Mixture` adds rate-weighted subpopulations (BBH, BNS, NSBH, ...).

Mass models follow the GWTC-3 population paper (Abbott et al. 2023, ApJ X 13, 011048) and Talbot &
Thrane (2018): power-law primary with a Gaussian peak and a low-mass smoothing window of width
``delta_m``, broken power law, two peaks; mass ratio ``p(q | m1) ∝ q^beta S(q m1)`` on
``[mmin/m1, 1]``. Normalisation grids default to m1 in [2, 100] (1000 points) and q in
[0.001, 1] (500 points), the grids gwpopulation uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import betaln, ndtr

__all__ = [
    "smoothing",
    "truncated_power_law",
    "truncated_normal",
    "power_law_peak",
    "broken_power_law",
    "multi_peak",
    "mass_ratio_power_law",
    "power_law_primary",
    "secondary_mass_uniform",
    "spin_magnitude_beta",
    "spin_tilt_mixture",
    "spin_tilt_pair",
    "redshift_power_law",
    "madau_dickinson",
    "eccentricity_half_normal",
    "local_rate",
    "Population",
    "Mixture",
    "SUPPORT",
    "in_support",
    "support_violations",
    "M1_GRID",
    "Q_GRID",
]

M1_GRID = (2.0, 100.0, 1000)
Q_GRID = (0.001, 1.0, 500)
LogProb = Callable[[Mapping[str, jax.Array], Mapping[str, jax.Array]], jax.Array]


def _trapezoid(y, x, axis=-1):
    dx = jnp.diff(x)
    y0 = jax.lax.slice_in_dim(y, 0, y.shape[axis] - 1, axis=axis)
    y1 = jax.lax.slice_in_dim(y, 1, y.shape[axis], axis=axis)
    shape = [1] * y.ndim
    shape[axis] = -1
    return jnp.sum(0.5 * (y0 + y1) * dx.reshape(shape), axis=axis)


def smoothing(m, mmin, delta_m):
    """Low-mass taper: 0 below ``mmin``, a smooth rise over ``[mmin, mmin + delta_m]``, then 1.

    ``S = 1 / (1 + exp(delta_m / m' + delta_m / (m' - delta_m)))`` with ``m' = m - mmin``
    (Talbot & Thrane 2018, eq. 7); ``delta_m = 0`` gives a sharp cut.
    """
    mp = m - mmin
    inside = (mp > 0) & (mp < delta_m)
    safe = jnp.where(inside, mp, 0.5 * jnp.maximum(delta_m, 1e-12))
    f = delta_m / safe + delta_m / (safe - delta_m)
    window = jax.nn.sigmoid(-jnp.clip(f, -80.0, 80.0))
    return jnp.where(mp <= 0, 0.0, jnp.where(mp >= delta_m, 1.0, window))


def truncated_power_law(x, alpha, low, high):
    """Normalised ``p(x) ∝ x^alpha`` on ``[low, high]`` (any real ``alpha``; computed in logs so
    steep slopes do not overflow)."""
    a1 = alpha + 1.0
    near_m1 = jnp.abs(a1) < 1e-6
    safe_a1 = jnp.where(near_m1, 1.0, a1)
    log_lo, log_hi = jnp.log(low), jnp.log(high)
    # log |high^a1 - low^a1| / |a1|, factoring out the larger of the two powers
    big = jnp.where(safe_a1 > 0, safe_a1 * log_hi, safe_a1 * log_lo)
    ratio = jnp.where(safe_a1 > 0, safe_a1 * (log_lo - log_hi), safe_a1 * (log_hi - log_lo))
    log_norm = big + jnp.log(-jnp.expm1(ratio)) - jnp.log(jnp.abs(safe_a1))
    log_norm = jnp.where(near_m1, jnp.log(log_hi - log_lo), log_norm)
    inside = (x >= low) & (x <= high)
    safe_x = jnp.where(inside, x, low)
    return jnp.where(inside, jnp.exp(alpha * jnp.log(safe_x) - log_norm), 0.0)


def truncated_normal(x, mu, sigma, low, high):
    """Normalised Gaussian ``N(mu, sigma)`` restricted to ``[low, high]``."""
    norm = ndtr((high - mu) / sigma) - ndtr((low - mu) / sigma)
    pdf = jnp.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * jnp.sqrt(2 * jnp.pi))
    return jnp.where((x >= low) & (x <= high), pdf / norm, 0.0)


def _grid(spec):
    lo, hi, n = spec
    return jnp.linspace(lo, hi, n)


def _smoothed_primary(unsmoothed: Callable, m1, hyper, m1_grid=M1_GRID):
    """``unsmoothed(m) * S(m)`` normalised on the m1 grid."""
    mmin, delta_m = hyper["mmin"], hyper["delta_m"]
    grid = _grid(m1_grid)
    norm = _trapezoid(unsmoothed(grid) * smoothing(grid, mmin, delta_m), grid)
    return unsmoothed(m1) * smoothing(m1, mmin, delta_m) / norm


def power_law_peak(m1, hyper, *, m1_grid=M1_GRID, gaussian_max=100.0):
    """GWTC-3 "Power Law + Peak" primary-mass density.

    ``hyper``: ``alpha`` (p ∝ m^-alpha), ``mmin``, ``mmax``, ``lam`` (peak fraction), ``mpp``,
    ``sigpp`` (peak location/width), ``delta_m`` (smoothing).
    """

    def raw(m):
        pl = truncated_power_law(m, -hyper["alpha"], hyper["mmin"], hyper["mmax"])
        peak = truncated_normal(m, hyper["mpp"], hyper["sigpp"], hyper["mmin"], gaussian_max)
        return (1 - hyper["lam"]) * pl + hyper["lam"] * peak

    return _smoothed_primary(raw, m1, hyper, m1_grid)


def broken_power_law(m1, hyper, *, m1_grid=M1_GRID):
    """Broken power law: slopes ``alpha_1`` below and ``alpha_2`` above the break at
    ``mmin + break_fraction (mmax - mmin)``, continuous at the break, smoothed by ``delta_m``."""

    def raw(m):
        mb = hyper["mmin"] + hyper["break_fraction"] * (hyper["mmax"] - hyper["mmin"])
        a1, a2 = hyper["alpha_1"], hyper["alpha_2"]
        inside = (m >= hyper["mmin"]) & (m <= hyper["mmax"])
        safe = jnp.where(inside, m, mb)
        val = jnp.where(safe < mb, (safe / mb) ** (-a1), (safe / mb) ** (-a2))
        return jnp.where(inside, val, 0.0)

    return _smoothed_primary(raw, m1, hyper, m1_grid)


def multi_peak(m1, hyper, *, m1_grid=M1_GRID, gaussian_max=100.0):
    """Power law + two Gaussian peaks (``lam`` total peak fraction, ``lam_1`` of it in peak 1)."""

    def raw(m):
        pl = truncated_power_law(m, -hyper["alpha"], hyper["mmin"], hyper["mmax"])
        p1 = truncated_normal(m, hyper["mpp_1"], hyper["sigpp_1"], hyper["mmin"], gaussian_max)
        p2 = truncated_normal(m, hyper["mpp_2"], hyper["sigpp_2"], hyper["mmin"], gaussian_max)
        lam, lam_1 = hyper["lam"], hyper["lam_1"]
        return (1 - lam) * pl + lam * lam_1 * p1 + lam * (1 - lam_1) * p2

    return _smoothed_primary(raw, m1, hyper, m1_grid)


def mass_ratio_power_law(q, m1, hyper, *, m1_grid=M1_GRID, q_grid=Q_GRID):
    """``p(q | m1) ∝ q^beta S(q m1; mmin, delta_m)`` on ``[mmin/m1, 1]``.

    Written as the closed-form power law on ``[mmin/m1, 1]`` times ``S``, divided by the fraction
    of that power law the smoothing keeps; the fraction depends on m1, and is computed on the
    (m1, q) grid and interpolated linearly in m1 (gwpopulation's approach, to which this is equal to
    ~1e-13; interpolating the fraction rather than the unnormalised integral is also the more
    accurate of the two within a few ``delta_m`` of ``mmin``).
    """
    beta, mmin, delta_m = hyper["beta"], hyper["mmin"], hyper["delta_m"]
    m_grid, q_g = _grid(m1_grid), _grid(q_grid)

    def raw(q, m1):
        ok = (q <= 1) & (q * m1 >= mmin)
        safe = jnp.where(ok, q, 1.0)
        return jnp.where(ok, safe**beta * smoothing(safe * m1, mmin, delta_m), 0.0)

    def power_law_norm(m1):  # 1 / int_{mmin/m1}^1 q^beta dq where m1 > mmin, else 0
        above = m1 > mmin
        low = mmin / jnp.where(above, m1, 2 * mmin)
        return jnp.where(above, truncated_power_law(jnp.ones_like(low), beta, low, 1.0), 0.0)

    kept = power_law_norm(m_grid) * _trapezoid(raw(q_g[None, :], m_grid[:, None]), q_g, axis=1)
    frac = jnp.interp(m1, m_grid, kept)
    value = raw(q, m1)
    # Only where the density is positive and the kept fraction is not an underflowing sliver (m1 a
    # hair above mmin, where the smoothing is ~1e-30) may the normaliser enter: otherwise
    # 0 * d(1/frac) or tiny/tiny give NaN gradients in float32. Such m1 carry no weight anyway.
    live = (value > 0) & (frac > 1e-12 * jnp.max(kept))
    safe_frac = jnp.where(live, frac, 1.0)
    safe_m1 = jnp.where(live, m1, 2 * mmin)
    return jnp.where(live, value * power_law_norm(safe_m1) / safe_frac, 0.0)


def power_law_primary(m1, hyper):
    """Unsmoothed truncated power law ``p(m1) ∝ m1^-alpha`` on ``[mmin, mmax]`` (e.g. the black
    holes of an NSBH subpopulation)."""
    return truncated_power_law(m1, -hyper["alpha"], hyper["mmin"], hyper["mmax"])


def secondary_mass_uniform(q, m1, hyper):
    """``p(q | m1)`` for a secondary mass ``m2 = q m1`` uniform on ``[m2min, min(m2max, m1)]``
    (neutron stars in NSBH): ``m1 / (min(m2max, m1) - m2min)`` there, 0 elsewhere."""
    lo, hi = hyper["m2min"], jnp.minimum(hyper["m2max"], m1)
    m2 = q * m1
    ok = (m2 >= lo) & (m2 <= hi) & (hi > lo)
    return jnp.where(ok, m1 / jnp.where(ok, hi - lo, 1.0), 0.0)


def spin_magnitude_beta(a, hyper):
    """Beta density on [0, 1] with shape parameters ``alpha_chi``, ``beta_chi``."""
    al, be = hyper["alpha_chi"], hyper["beta_chi"]
    inside = (a > 0) & (a < 1)
    safe = jnp.where(inside, a, 0.5)
    logp = (al - 1) * jnp.log(safe) + (be - 1) * jnp.log1p(-safe) - betaln(al, be)
    return jnp.where(inside, jnp.exp(logp), 0.0)


def spin_tilt_mixture(cos_tilt, hyper):
    """``xi_spin`` aligned (truncated normal at 1, width ``sigma_spin``) + isotropic (1/2)."""
    aligned = truncated_normal(cos_tilt, 1.0, hyper["sigma_spin"], -1.0, 1.0)
    iso = jnp.where(jnp.abs(cos_tilt) <= 1, 0.5, 0.0)
    return hyper["xi_spin"] * aligned + (1 - hyper["xi_spin"]) * iso


def spin_tilt_pair(cos_tilt_1, cos_tilt_2, hyper):
    """Joint tilt density of both spins, the GWTC-3 "Default" model: with probability ``xi_spin``
    both are near-aligned (independent truncated normals at 1, width ``sigma_spin``), otherwise
    both isotropic: ``xi N(z1) N(z2) + (1 - xi) / 4``. (A product of two `spin_tilt_mixture` is a
    different model: there each spin chooses its own component.)"""
    aligned = hyper["xi_spin"] * (
        truncated_normal(cos_tilt_1, 1.0, hyper["sigma_spin"], -1.0, 1.0)
        * truncated_normal(cos_tilt_2, 1.0, hyper["sigma_spin"], -1.0, 1.0)
    )
    inside = (jnp.abs(cos_tilt_1) <= 1) & (jnp.abs(cos_tilt_2) <= 1)
    return aligned + jnp.where(inside, (1 - hyper["xi_spin"]) / 4, 0.0)


def _dvc_dz_grid(z_max: float, n: int):
    """Comoving volume element dVc/dz [Gpc^3] on a redshift grid, Planck15 (astropy), and
    ``dVc/dz / z^2`` there (smooth and finite at z = 0, where it is ``4 pi d_H^3``)."""
    from astropy.cosmology import Planck15

    z = np.linspace(0.0, z_max, n)
    dvc = 4 * np.pi * Planck15.differential_comoving_volume(z).to("Gpc3 / sr").value
    over_z2 = np.empty_like(dvc)
    over_z2[1:] = dvc[1:] / z[1:] ** 2
    over_z2[0] = 4 * np.pi * Planck15.hubble_distance.to("Gpc").value ** 3
    return z, dvc, over_z2


# numpy arrays (never JAX values: the first call may happen inside a trace)
_DVC_CACHE: dict[tuple[float, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _dvc(z_max=2.3, n=1000, *, over_z2=False):
    key = (z_max, n)
    if key not in _DVC_CACHE:
        _DVC_CACHE[key] = _dvc_dz_grid(z_max, n)
    z, dvc, dvc_over_z2 = _DVC_CACHE[key]
    return jnp.asarray(z), jnp.asarray(dvc_over_z2 if over_z2 else dvc)


def _redshift_density(shape: Callable, z, z_max, n):
    """``p(z) ∝ dVc/dz shape(z) / (1 + z)`` on ``[0, z_max]`` (the 1/(1+z) turns source-frame
    rate into detector-frame time)."""
    zg, dvc = _dvc(z_max, n)
    norm = _trapezoid(dvc * shape(zg) / (1 + zg), zg)
    # dVc/dz at the samples: interpolating dVc/dz itself (∝ z^2 near 0) would be off by O(1) in
    # the first grid cell and ~1e-4 at z = 0.1; dVc/dz / z^2 interpolates to ~1e-6.
    dvc_z = z**2 * jnp.interp(z, zg, _dvc(z_max, n, over_z2=True)[1])
    inside = (z >= 0) & (z <= z_max)
    return jnp.where(inside, dvc_z * shape(jnp.where(inside, z, 0.0)) / (1 + z) / norm, 0.0)


def redshift_power_law(z, hyper, *, z_max=2.3, n=1000):
    """Merger rate density ∝ (1+z)^lamb (``hyper["lamb"]``), with the comoving volume."""
    return _redshift_density(lambda zz: (1 + zz) ** hyper["lamb"], z, z_max, n)


def madau_dickinson(z, hyper, *, z_max=2.3, n=1000):
    """Madau–Dickinson-shaped rate ∝ (1+z)^gamma / (1 + ((1+z)/(1+z_peak))^(gamma+kappa))."""
    g, k, zp = hyper["gamma"], hyper["kappa"], hyper["z_peak"]

    def shape(zz):
        return (1 + zz) ** g / (1 + ((1 + zz) / (1 + zp)) ** (g + k))

    return _redshift_density(shape, z, z_max, n)


def local_rate(total_rate, hyper, *, z_max=2.3, n=1000):
    """Local merger-rate density ``R(z=0)`` [Gpc^-3 yr^-1] of a subpopulation whose rate
    hyperparameter is the expected number of mergers per year out to ``z_max`` (the convention of
    `Mixture` here) and whose redshift evolution is ``(1+z)^lamb``:
    ``R0 = total / int_0^z_max dVc/dz (1+z)^(lamb-1) dz``."""
    zg, dvc = _dvc(z_max, n)
    return total_rate / _trapezoid(dvc * (1 + zg) ** (hyper["lamb"] - 1), zg)


def eccentricity_half_normal(e, hyper):
    """Half-normal eccentricity with scale ``sigma_ecc``, truncated to [0, 1)."""
    s = hyper["sigma_ecc"]
    return truncated_normal(e, 0.0, s, 0.0, 1.0)


class Population:
    """A product of independent factors: ``Population(mass=..., redshift=..., spin=...)``.

    Each factor is ``fn(data, hyper) -> density``; `__call__` returns the joint density.
    """

    def __init__(self, **factors: Callable):
        if not factors:
            raise ValueError("Population: give at least one factor, e.g. mass=..., redshift=...")
        self.factors = factors

    def __call__(self, data, hyper):
        out = None
        for f in self.factors.values():
            p = f(data, hyper)
            out = p if out is None else out * p
        return out


class Mixture:
    """Rate-weighted subpopulations: ``Mixture(BBH=(pop, "rate_bbh"), NSBH=(pop, "rate_nsbh"))``.

    ``__call__`` returns the *rate density* ``sum_k R_k p_k(theta)``; `fractions` the branching
    fractions ``R_k / sum R``. Hyperparameters of a subpopulation are looked up with its name as
    prefix first (``"BBH.alpha"``) and then unprefixed.
    """

    def __init__(self, **components: tuple[Callable, str]):
        if not components:
            raise ValueError("Mixture: give at least one subpopulation")
        self.components = components

    @staticmethod
    def hyper_for(name, hyper):
        """The hyperparameters subpopulation ``name`` sees: unprefixed ones, then its own."""
        pre = f"{name}."
        out = {k: v for k, v in hyper.items() if "." not in k}
        out.update({k[len(pre) :]: v for k, v in hyper.items() if k.startswith(pre)})
        return out

    def __call__(self, data, hyper):
        total = None
        for name, (pop, rate_key) in self.components.items():
            p = hyper[rate_key] * pop(data, self.hyper_for(name, hyper))
            total = p if total is None else total + p
        return total

    def total_rate(self, hyper):
        return sum(hyper[r] for _, r in self.components.values())


# Where hyperparameters are defined, by the last component of their name ("BBH.lam" -> "lam"):
# (low, high, low_open, high_open). Names not listed may take any finite value.
_UNIT = (0.0, 1.0, False, False)
_POSITIVE = (0.0, np.inf, True, True)
SUPPORT = {
    "lam": _UNIT,
    "lam_1": _UNIT,
    "xi_spin": _UNIT,
    "break_fraction": _UNIT,
    "sigpp": _POSITIVE,
    "sigpp_1": _POSITIVE,
    "sigpp_2": _POSITIVE,
    "sigma_spin": _POSITIVE,
    "sigma_ecc": _POSITIVE,
    "alpha_chi": _POSITIVE,
    "beta_chi": _POSITIVE,
    "mmin": _POSITIVE,
    "m2min": _POSITIVE,
    "delta_m": (0.0, np.inf, False, True),
    "rate_bbh": (0.0, np.inf, False, True),
    "rate_nsbh": (0.0, np.inf, False, True),
    "rate_bns": (0.0, np.inf, False, True),
}
# (lower, upper) pairs that must be ordered within one subpopulation prefix
_ORDERED = (("mmin", "mmax"), ("m2min", "m2max"))


def _split(name: str) -> tuple[str, str]:
    pre, _, last = name.rpartition(".")
    return (pre + "." if pre else ""), last


def _fmt(value) -> str:
    v = np.asarray(value, dtype=np.float64)
    return f"{float(v):.6g}" if v.size == 1 else np.array2string(v, precision=6)


def support_violations(hyper: Mapping[str, object]) -> list[str]:
    """Messages for hyperparameters outside the models' support (eager; [] when all is well)."""
    out = []
    for name, value in hyper.items():
        v = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(v)):
            out.append(f"hyper[{name!r}] = {_fmt(value)}: expected a finite value")
            continue
        rule = SUPPORT.get(_split(name)[1])
        if rule is None:
            continue
        lo, hi, lo_open, hi_open = rule
        bad_lo = np.any(v <= lo) if lo_open else np.any(v < lo)
        bad_hi = np.any(v >= hi) if hi_open else np.any(v > hi)
        if bad_lo or bad_hi:
            interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
            out.append(f"hyper[{name!r}] = {_fmt(value)}: expected a value in {interval}")
    for name in hyper:
        pre, last = _split(name)
        for low, high in _ORDERED:
            if last == low and pre + high in hyper:
                if np.any(np.asarray(hyper[name]) >= np.asarray(hyper[pre + high])):
                    out.append(
                        f"hyper[{name!r}] = {_fmt(hyper[name])} must be below "
                        f"hyper[{pre + high!r}] = {_fmt(hyper[pre + high])}"
                    )
    return out


def in_support(hyper: Mapping[str, jax.Array]) -> jax.Array:
    """Traceable: True where every hyperparameter is inside `SUPPORT` (and ordered pairs are)."""
    ok = jnp.asarray(True)
    for name, value in hyper.items():
        ok = ok & jnp.all(jnp.isfinite(value))
        rule = SUPPORT.get(_split(name)[1])
        if rule is not None:
            lo, hi, lo_open, hi_open = rule
            ok = ok & jnp.all((value > lo) if lo_open else (value >= lo))
            ok = ok & jnp.all((value < hi) if hi_open else (value <= hi))
        pre, last = _split(name)
        for low, high in _ORDERED:
            if last == low and pre + high in hyper:
                ok = ok & jnp.all(value < hyper[pre + high])
    return ok
