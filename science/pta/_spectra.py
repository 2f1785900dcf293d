"""Spectral models of a gravitational-wave background for PTA model comparison.

The twelve-plus models of the NANOGrav 15-year search for new physics (Afzal et al. 2023, ApJL 951
L11, "NG15-NP" below; arXiv:2306.16219) as implemented in PTArcade (Mitridate et al. 2023,
arXiv:2306.16377), written from the published formulas as pure JAX functions of their parameters:

    model.fn(f_hz, p) -> log10(Omega_GW(f) h^2)      f_hz: Array[n] in Hz, p: dict name -> scalar

Every ``fn`` works in log space (spectra span 1e-40..1e-5), is jit/vmap/grad friendly in float32
and float64, and returns finite values (and gradients) everywhere on its prior box. Where a
spectrum is exactly zero (beyond a kinematic cutoff) the value is floored (see `SHAPE_FLOOR`).

Cosmology and thermal history used throughout (Planck 2018): h = 0.674, Omega_r h^2 = 4.18e-5
(photons + three massless neutrinos), Omega_m = 0.315, T_0 = 2.7255 K. The effective numbers of
relativistic degrees of freedom g_rho(T), g_s(T) are computed once at import from an ideal gas of
the Standard-Model species (exact Bose/Fermi integrals with masses), a smooth QCD crossover
(quark-gluon plasma -> hadron gas with a logistic switch in ln T at T_c = 0.17 GeV, width 0.15 in
ln T) and instantaneous neutrino decoupling at 2 MeV before e+e- annihilation (giving g_rho0 =
3.37, g_s0 = 3.92). This reproduces the lattice-based tables of Saikawa & Shirai (2018,
arXiv:1803.01038), used by NG15-NP, to about 10% near the QCD crossover and much better
elsewhere; amplitudes depend on it only through g^(-1/3) and frequencies through g^(1/6).

A signal produced at temperature T (or re-entering the horizon then) is redshifted to today by

    Omega_GW,0 h^2 = Omega_r h^2 (g_rho(T)/g_rho0) (g_s0/g_s(T))^(4/3) Omega_GW,*        (R)

and the comoving Hubble rate at T, ``f_H(T) = a(T) H(T) / a_0`` in s^-1, sets the characteristic
frequencies (Caprini et al. 2016, arXiv:1512.06239, Eq. 21: 16.5 uHz (T/100 GeV)(g/100)^(1/6)).
A mode k re-enters the horizon when f = k / (2 pi a_0) = f_H(T) / (2 pi).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import logsumexp

from science.pta import _units

__all__ = [
    "Param",
    "OrderedUniform",
    "SpectralModel",
    "MODELS",
    "get_model",
    "SHAPE_FLOOR",
    "H_LITTLE",
    "OMEGA_R_H2",
    "g_rho",
    "g_s",
    "log10_redshift_factor",
    "log10_f_hubble_hz",
    "broken_power_law_shape",
    "sigw_delta_shape",
    "sigw_gauss_shape",
    "sigw_box_shape",
    "sigw_kernel",
    "string_omega",
]

Array = jax.Array

# ---------------------------------------------------------------------------------------------
# Constants (Planck 2018; PDG).
# ---------------------------------------------------------------------------------------------
H_LITTLE = 0.674
OMEGA_R_H2 = 4.18e-5  # photons + 3 massless neutrinos (Omega_r = 9.2e-5 at h = 0.674)
OMEGA_M = 0.315
OMEGA_R = OMEGA_R_H2 / H_LITTLE**2
OMEGA_L = 1.0 - OMEGA_M - OMEGA_R
T0_GEV = 2.7255 * 8.617333262e-14  # 2.7255 K in GeV
M_PL_REDUCED_GEV = 2.435323e18  # (8 pi G)^(-1/2)
M_PL_GEV = 1.220890e19  # G^(-1/2)
GEV_PER_INV_S = 6.582119569e-25  # hbar: 1 GeV = 1 / 6.58e-25 s^-1
H0_PER_S = H_LITTLE * _units.H100_PER_S
H0_GEV = H0_PER_S * GEV_PER_INV_S

#: Floor of the dimensionless spectral shapes, where the exact answer is zero (float32-safe).
SHAPE_FLOOR = 1e-30
_LN_FLOOR = math.log(SHAPE_FLOOR)
_LN10 = math.log(10.0)

# ---------------------------------------------------------------------------------------------
# Thermal history: g_rho(T), g_s(T) from an ideal gas of SM species (numpy, once at import).
# ---------------------------------------------------------------------------------------------
# (mass GeV, internal dof, fermion?)
_LEPTONS_EW = (
    (0.000511, 4, True),  # e
    (0.10566, 4, True),  # mu
    (1.77686, 4, True),  # tau
    (80.377, 6, False),  # W+-
    (91.1876, 3, False),  # Z
    (125.25, 1, False),  # H
)
_PARTONS = (
    (0.0022, 12, True),  # u
    (0.0047, 12, True),  # d
    (0.095, 12, True),  # s
    (1.27, 12, True),  # c
    (4.18, 12, True),  # b
    (172.7, 12, True),  # t
    (0.0, 16, False),  # gluons
)
_HADRONS = (
    (0.13498, 1, False),  # pi0
    (0.13957, 2, False),  # pi+-
    (0.4957, 4, False),  # K
    (0.5479, 1, False),  # eta
    (0.7753, 9, False),  # rho
    (0.7827, 3, False),  # omega
    (0.9383, 8, True),  # p, n (+ antiparticles)
)
_T_QCD_GEV = 0.17
_QCD_WIDTH_LN = 0.15
_T_NU_DEC_GEV = 0.002


def _ideal_gas_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-dof g_rho and g_s of a boson / fermion of mass ratio y = m/T, on a y grid."""
    y = np.concatenate([[0.0], np.logspace(-4, np.log10(60.0), 400)])
    x = np.linspace(1e-6, 90.0, 6001)[None, :]
    e = np.sqrt(x**2 + y[:, None] ** 2)
    out = []
    for sign in (-1.0, 1.0):  # boson, fermion
        occ = 1.0 / (np.exp(e) + sign)
        rho = np.trapezoid(x**2 * e * occ, x, axis=1) * 15.0 / np.pi**4
        s = np.trapezoid(x**2 * (e + x**2 / (3.0 * e)) * occ, x, axis=1) * 45.0 / (4.0 * np.pi**4)
        out += [rho, s]
    return y, *out  # y, rho_b, s_b, rho_f, s_f  (massless: 1, 1, 7/8, 7/8)


def _g_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y_grid, rho_b, s_b, rho_f, s_f = _ideal_gas_tables()
    log10_t = np.linspace(-7.0, 5.0, 1201)
    t = 10.0**log10_t

    def species(spec):
        g_r = np.zeros_like(t)
        g_e = np.zeros_like(t)
        for m, dof, fermion in spec:
            y = np.minimum(m / t, 60.0)
            g_r += dof * np.interp(y, y_grid, rho_f if fermion else rho_b)
            g_e += dof * np.interp(y, y_grid, s_f if fermion else s_b)
        return g_r, g_e

    w_qgp = 1.0 / (1.0 + np.exp(-(np.log(t) - np.log(_T_QCD_GEV)) / _QCD_WIDTH_LN))
    lep_r, lep_s = species(_LEPTONS_EW)
    par_r, par_s = species(_PARTONS)
    had_r, had_s = species(_HADRONS)
    # Neutrinos: T_nu = T above decoupling; below, (T_nu/T)^3 = g_s[gamma, e](T) / g_s[gamma, e](T_dec).
    _, e_s = species(_LEPTONS_EW[:1])
    y_dec = 0.000511 / _T_NU_DEC_GEV
    gs_ge_dec = 2.0 + 4.0 * np.interp(y_dec, y_grid, s_f)
    ratio3 = np.where(t > _T_NU_DEC_GEV, 1.0, (2.0 + e_s) / gs_ge_dec)
    nu_r = 6.0 * 7.0 / 8.0 * ratio3 ** (4.0 / 3.0)
    nu_s = 6.0 * 7.0 / 8.0 * ratio3
    g_rho_t = 2.0 + lep_r + nu_r + w_qgp * par_r + (1.0 - w_qgp) * had_r
    g_s_t = 2.0 + lep_s + nu_s + w_qgp * par_s + (1.0 - w_qgp) * had_s
    return log10_t, g_rho_t, g_s_t


_LOG10_T_TAB, _G_RHO_TAB, _G_S_TAB = _g_tables()
G_RHO_0 = float(_G_RHO_TAB[0])
G_S_0 = float(_G_S_TAB[0])
# f_H(T) = a(T) H(T) / a_0 [s^-1] in radiation domination (H^2 = pi^2 g_rho T^4 / (90 Mpl^2)).
_LOG10_FH_TAB = (
    np.log10(np.sqrt(np.pi**2 * _G_RHO_TAB / 90.0) / M_PL_REDUCED_GEV)
    + 2.0 * _LOG10_T_TAB
    + np.log10(T0_GEV)
    - _LOG10_T_TAB
    + np.log10(G_S_0 / _G_S_TAB) / 3.0
    - np.log10(GEV_PER_INV_S)
)


def _const(x: np.ndarray, like: Array) -> Array:
    """A numpy constant in the floating dtype of ``like`` (strict dtype promotion safe)."""
    return jnp.asarray(x, dtype=jnp.result_type(like))


def _interp(x: Array, xp: np.ndarray, fp: np.ndarray) -> Array:
    x = jnp.asarray(x)
    return jnp.interp(x, _const(xp, x), _const(fp, x))


def g_rho(log10_t_gev: Array) -> Array:
    """Energy-density degrees of freedom g_rho(T) (tabulated at import; see module docstring)."""
    return _interp(log10_t_gev, _LOG10_T_TAB, _G_RHO_TAB)


def g_s(log10_t_gev: Array) -> Array:
    """Entropy degrees of freedom g_s(T)."""
    return _interp(log10_t_gev, _LOG10_T_TAB, _G_S_TAB)


def log10_redshift_factor(log10_t_gev: Array) -> Array:
    """log10 of Eq. (R): Omega_r h^2 (g_rho(T)/g_rho0) (g_s0/g_s(T))^(4/3)."""
    return (
        math.log10(OMEGA_R_H2)
        + jnp.log10(g_rho(log10_t_gev) / G_RHO_0)
        + (4.0 / 3.0) * jnp.log10(G_S_0 / g_s(log10_t_gev))
    )


def log10_f_hubble_hz(log10_t_gev: Array) -> Array:
    """log10 of the redshifted Hubble rate f_H(T) = a(T) H(T) / a_0 in s^-1 (radiation era)."""
    return _interp(log10_t_gev, _LOG10_T_TAB, _LOG10_FH_TAB)


def _log10_t_at_horizon_entry(log10_f_hz: Array) -> Array:
    """Temperature [GeV] when the mode of today's frequency f re-entered the horizon (f = f_H/2pi)."""
    return _interp(log10_f_hz, _LOG10_FH_TAB - math.log10(2.0 * math.pi), _LOG10_T_TAB)


# ---------------------------------------------------------------------------------------------
# Parameters and models.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Param:
    """One model parameter with its prior: uniform on [low, high], or normal(mean, sd).

    For a normal prior `SpectralModel.bounds` reports mean +- 5 sd (used for box transforms and
    for the finite-everywhere checks).
    """

    name: str
    low: float | None = None
    high: float | None = None
    mean: float | None = None
    sd: float | None = None

    def __post_init__(self):
        uniform = self.low is not None and self.high is not None
        normal = self.mean is not None and self.sd is not None
        if uniform == normal:
            raise ValueError(f"Param {self.name!r}: give either (low, high) or (mean, sd).")
        if uniform and not self.low < self.high:
            raise ValueError(f"Param {self.name!r}: need low < high, got {self.low}, {self.high}.")

    def distribution(self) -> dist.Distribution:
        if self.low is not None:
            return dist.Uniform(self.low, self.high)
        return dist.Normal(self.mean, self.sd)

    @property
    def bounds(self) -> tuple[float, float]:
        if self.low is not None:
            return (float(self.low), float(self.high))
        return (self.mean - 5.0 * self.sd, self.mean + 5.0 * self.sd)


class _OrderedBox(dist.constraints.Constraint):
    """Pairs ``low <= x[0] <= x[1] <= high``."""

    event_dim = 1

    def __init__(self, low: float, high: float):
        self.low, self.high = float(low), float(high)

    def __call__(self, x):
        return (self.low <= x[..., 0]) & (x[..., 0] <= x[..., 1]) & (x[..., 1] <= self.high)

    def feasible_like(self, prototype):
        w = self.high - self.low
        return jnp.broadcast_to(
            jnp.asarray([self.low + w / 3, self.low + 2 * w / 3]), prototype.shape
        )

    def tree_flatten(self):
        return (self.low, self.high), (("low", "high"), {})


class _OrderedBoxTransform(dist.transforms.Transform):
    """R^2 -> the ordered triangle with a constant Jacobian on the unit square in between.

    ``u, v = sigmoid(z)``; ``lo = L + W (1 - sqrt(1 - u))``, ``hi = lo + (H - lo) v``: the map
    (u, v) -> (lo, hi) has Jacobian W^2/2 everywhere, so uniform (u, v) is uniform on the triangle.
    """

    domain = dist.constraints.real_vector

    def __init__(self, low: float, high: float):
        self.low, self.high = float(low), float(high)

    @property
    def codomain(self):
        return _OrderedBox(self.low, self.high)

    def __call__(self, z):
        w = self.high - self.low
        u, v = jax.nn.sigmoid(z[..., 0]), jax.nn.sigmoid(z[..., 1])
        lo = self.low + w * (1.0 - jnp.sqrt(1.0 - u))
        return jnp.stack([lo, lo + (self.high - lo) * v], axis=-1)

    def _inverse(self, x):
        w = self.high - self.low
        lo, hi = x[..., 0], x[..., 1]
        u = 1.0 - ((self.high - lo) / w) ** 2
        v = (hi - lo) / (self.high - lo)
        return jnp.stack([jnp.log(u) - jnp.log1p(-u), jnp.log(v) - jnp.log1p(-v)], axis=-1)

    def log_abs_det_jacobian(self, z, x, intermediates=None):
        w = self.high - self.low
        log_sig_prime = -jax.nn.softplus(-z) - jax.nn.softplus(z)
        return 2.0 * math.log(w) - math.log(2.0) + jnp.sum(log_sig_prime, axis=-1)

    def tree_flatten(self):
        return (self.low, self.high), (("low", "high"), {})


@dist.transforms.biject_to.register(_OrderedBox)
def _biject_ordered_box(constraint):
    return _OrderedBoxTransform(constraint.low, constraint.high)


class OrderedUniform(dist.Distribution):
    """Two uniform[low, high] values, sorted: density 2 / (high - low)^2 on ``x[0] <= x[1]``.

    For a model symmetric in two parameters (SIGW-BOX's band edges) this prior gives the same
    evidence as the two independent uniforms, and a posterior without the mirror-image mode.
    """

    arg_constraints = {}
    reparametrized_params = []

    def __init__(self, low: float, high: float, *, validate_args=None):
        self.low, self.high = float(low), float(high)
        self._support = _OrderedBox(low, high)
        super().__init__(batch_shape=(), event_shape=(2,), validate_args=validate_args)

    @property
    def support(self):
        return self._support

    def sample(self, key, sample_shape=()):
        x = jax.random.uniform(key, (*sample_shape, 2), minval=self.low, maxval=self.high)
        return jnp.sort(x, axis=-1)

    def log_prob(self, value):
        inside = self._support(value)
        return jnp.where(inside, math.log(2.0) - 2.0 * math.log(self.high - self.low), -jnp.inf)


@dataclasses.dataclass(frozen=True)
class SpectralModel:
    """A background model: ``fn(f_hz, p) -> log10(Omega_GW h^2)`` plus its priors and citations.

    ``joint_prior`` (optional) is ``(names, distribution)`` for a joint prior over several
    parameters (the SMBHB holodeck Gaussian; SIGW-BOX's ordered band edges); the distribution may
    be given as a zero-argument function that builds it, so that importing the model table
    compiles nothing (`joint_distribution` builds it once); `prior` then returns
    marginals (for the box edges: the NG15 independent uniforms, equivalent for this symmetric
    model) and `sampling_prior` the joint form the evidences use.
    """

    name: str
    params: tuple[Param, ...]
    fn: Callable[[Array, Mapping[str, Array]], Array]
    source: str
    description: str
    joint_prior: (
        tuple[tuple[str, ...], dist.Distribution | Callable[[], dist.Distribution]] | None
    ) = None

    def log10_h2_omega(self, f_hz: Array, p: Mapping[str, Array]) -> Array:
        """log10 Omega_GW(f) h^2 at frequencies ``f_hz`` [Hz] for parameters ``p``."""
        return self.fn(jnp.asarray(f_hz), p)

    def log10_rho_s(self, f_hz: Array, p: Mapping[str, Array], tspan_s: float | Array) -> Array:
        """log10 of the per-bin residual standard deviation rho [s] for a span ``tspan_s``."""
        f_hz = jnp.asarray(f_hz)
        return _units.log10_rho_s_from_log10_h2_omega(f_hz, self.fn(f_hz, p), tspan_s)

    def prior(self) -> dict[str, dist.Distribution]:
        """Independent (marginal) prior per parameter, keyed by name."""
        return {q.name: q.distribution() for q in self.params}

    def sampling_prior(self) -> dict:
        """The prior the samplers use: `prior` with ``joint_prior``'s names under one tuple key
        (`science.samplers.Target`'s joint-prior form)."""
        if self.joint_prior is None:
            return self.prior()
        names, joint = self.joint_prior[0], self.joint_distribution()
        out = {k: v for k, v in self.prior().items() if k not in names}
        out[tuple(names)] = joint
        return out

    def joint_distribution(self) -> dist.Distribution | None:
        """The distribution of ``joint_prior`` (built on first use when given as a function)."""
        if self.joint_prior is None:
            return None
        joint = self.joint_prior[1]
        if isinstance(joint, dist.Distribution):
            return joint
        return _built(joint)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(q.name for q in self.params)

    def bounds(self) -> dict[str, tuple[float, float]]:
        return {q.name: q.bounds for q in self.params}


@functools.cache
def _built(factory: Callable[[], dist.Distribution]) -> dist.Distribution:
    return factory()


def _holodeck_prior() -> dist.Distribution:
    """The holodeck 2-D normal over (log10_A, gamma) (built lazily: it compiles on creation)."""
    return dist.MultivariateNormal(jnp.asarray(_HOLO_MEAN), jnp.asarray(_HOLO_COV))


# ---------------------------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------------------------
def _log10_softplus10(z: Array) -> Array:
    """log10(1 + 10^z), stable for any z."""
    return jnp.logaddexp(0.0, z * _LN10) / _LN10


def _safe_log10(x: Array) -> Array:
    return jnp.log10(jnp.maximum(x, SHAPE_FLOOR))


def broken_power_law_shape(log10_x: Array, a: float, b: float, c: float) -> Array:
    """log10 S(x), S(x) = (a+b)^c / (b x^(-a/c) + a x^(b/c))^c: peak 1 at x = 1 (NG15-NP Eq. 24).

    S ~ x^a below and x^(-b) above the peak; c sets the width of the turn-over.
    """
    t1 = math.log10(b) - (a / c) * log10_x
    t2 = math.log10(a) + (b / c) * log10_x
    log10_den = jnp.logaddexp(t1 * _LN10, t2 * _LN10) / _LN10
    return c * (math.log10(a + b) - log10_den)


# ---------------------------------------------------------------------------------------------
# Astrophysical power laws.
# ---------------------------------------------------------------------------------------------
def _smbhb(f_hz, p):
    log10_hc = _units.log10_hc_power_law(f_hz, p["log10_A"], p["gamma"])
    return _units.log10_h2_omega_from_log10_hc(f_hz, log10_hc)


def _smbhb_turn(f_hz, p):
    log10_f = jnp.log10(f_hz)
    log10_hc = (
        p["log10_A"]
        - (2.0 / 3.0) * (log10_f - math.log10(_units.F_YR_HZ))
        - 0.5 * _log10_softplus10(p["kappa"] * (p["log10_fbend"] - log10_f))
    )
    return _units.log10_h2_omega_from_log10_hc(f_hz, log10_hc)


# ---------------------------------------------------------------------------------------------
# Inflation.
# ---------------------------------------------------------------------------------------------
_A_S = math.exp(3.044) * 1e-10  # Planck 2018 scalar amplitude at k = 0.05 / Mpc
_F_CMB_HZ = 7.7314e-17  # 0.05 / Mpc as a frequency


def _igw(f_hz, p):
    log10_f = jnp.log10(f_hz)
    log10_f_rh = log10_f_hubble_hz(p["log10_T_rh"]) - math.log10(2.0 * math.pi)
    # modes entering after reheating see g at entry; those entering before, g at reheating
    log10_t = jnp.maximum(_log10_t_at_horizon_entry(jnp.minimum(log10_f, log10_f_rh)), -7.0)
    log10_x = log10_f - log10_f_rh
    # transfer through reheating (Kuroyanagi et al. 2015 fit as in NG15-NP Eq. 9):
    # 1 / (1 - 0.22 x^1.5 + 0.65 x^2); the denominator is > 0.99 for every x
    poly = (
        1.0
        - 0.22 * 10.0 ** (1.5 * jnp.minimum(log10_x, 15.0))
        + 0.65 * 10.0 ** (2.0 * jnp.minimum(log10_x, 15.0))
    )
    log10_poly = jnp.where(
        log10_x > 15.0, math.log10(0.65) + 2.0 * log10_x, jnp.log10(jnp.maximum(poly, 0.5))
    )
    return (
        log10_redshift_factor(log10_t)
        - math.log10(24.0)
        + p["log10_r"]
        + math.log10(_A_S)
        + p["n_t"] * (log10_f - math.log10(_F_CMB_HZ))
        - log10_poly
    )


# ---------------------------------------------------------------------------------------------
# Scalar-induced GWs (radiation era).
# ---------------------------------------------------------------------------------------------
_SQRT3 = math.sqrt(3.0)
_W_RES = math.log(_SQRT3)  # resonance u + v = sqrt(3) in w = ln(u + v)


def sigw_kernel(s: Array, sig: Array) -> Array:
    """Radiation-era SIGW kernel in (s, sigma) = (u - v, u + v), Kohri & Terada 2018 Eq. (30-32).

    Omega_GW(k) = (1/12) int du dv T(u, v) P(u k) P(v k) over |1-v| <= u <= 1+v, with

        T = [(4v^2 - (1 + v^2 - u^2)^2) / (4uv)]^2 [3(u^2+v^2-3) / (4u^3v^3)]^2
            x ([-4uv + (u^2+v^2-3) ln|(3-(u+v)^2)/(3-(u-v)^2)|]^2 + pi^2 (u^2+v^2-3)^2 Theta(u+v-sqrt3))

    written with ratios (q1 = (u^2+v^2-3)/uv) so nothing overflows in float32 for u, v up to ~1e17.
    """
    p = 0.25 * (sig * sig - s * s)  # u v
    q1 = (0.5 * (sig * sig + s * s) - 3.0) / p
    v = 0.5 * (sig - s)
    one_m = 1.0 - s * sig  # 1 + v^2 - u^2
    f1 = (4.0 * v * v - one_m * one_m) / (4.0 * p)
    big = jnp.log(jnp.maximum(jnp.abs(3.0 - sig * sig), 1e-30)) - jnp.log(3.0 - s * s)
    res = jnp.where(sig > _SQRT3, math.pi**2 * q1 * q1, 0.0)
    return f1 * f1 * (0.75 * q1 / p) ** 2 * ((q1 * big - 4.0) ** 2 + res)


def _gl(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (x + 1.0), 0.5 * w  # on [0, 1]


_GL_W = _gl(12)
_GL_S = _gl(20)
# graded breakpoints around the log^2 singularity of the kernel at u + v = sqrt(3) (in w)
_RES_BREAKS = tuple(_W_RES + d for d in (-0.2, -0.05, -0.01, -1e-3, 0.0, 1e-3, 0.01, 0.05, 0.2))


def _segments(lo: Array, hi: Array, breaks: list[Array]) -> tuple[Array, Array]:
    """Gauss-Legendre nodes/weights on [lo, hi] split at ``breaks`` (clipped, sorted); batched.

    lo, hi: [...]; returns nodes, weights [..., n_seg * n_gl] (zero-length segments weigh 0).
    """
    pts = [lo] + [jnp.clip(b, lo, hi) for b in breaks] + [hi]
    pts = jnp.sort(jnp.stack(pts, axis=-1), axis=-1)
    a, b = pts[..., :-1], pts[..., 1:]
    x, w = (_const(q, lo) for q in _GL_W)
    shape = (1,) * (a.ndim) + (-1,)
    nodes = a[..., :, None] + (b - a)[..., :, None] * x.reshape(shape)
    weights = (b - a)[..., :, None] * w.reshape(shape)
    return nodes.reshape(*lo.shape, -1), weights.reshape(*lo.shape, -1)


def _sigw_integral(log_k: Array, s_hi_fn, logp_fn, w_lo, w_hi, breaks) -> Array:
    """(1/12) int_w int_0^{s_hi(sigma)} 2 * (1/2) sigma T exp(logp(u) + logp(v)) ds dw.

    w = ln sigma; (s, sigma) -> (u, v) has Jacobian 1/2 and the s -> -s symmetry doubles [0, s_hi].
    Returns the dimensionless shape (without the amplitude A^2). Vectorised over log_k [n].
    """
    breaks = breaks + [jnp.full_like(w_lo, b) for b in _RES_BREAKS]
    wn, ww = _segments(w_lo, w_hi, breaks)  # [n, m]
    sig = jnp.exp(wn)
    s_hi = s_hi_fn(sig)  # [n, m]
    xs, ws = (_const(q, log_k).reshape(1, 1, -1) for q in _GL_S)
    s = s_hi[..., None] * xs  # [n, m, q]
    u = 0.5 * (sig[..., None] + s)
    v = 0.5 * (sig[..., None] - s)
    integrand = sigw_kernel(s, sig[..., None]) * jnp.exp(
        logp_fn(jnp.log(u) + log_k[:, None, None]) + logp_fn(jnp.log(v) + log_k[:, None, None])
    )
    inner = jnp.sum(integrand * ws, axis=-1) * s_hi
    return jnp.sum(inner * sig * ww, axis=-1) / 12.0


def sigw_gauss_shape(f_over_fp: Array, width: Array) -> Array:
    """Omega_GW(k)/A^2 at horizon entry for P_zeta = A/(sqrt(2pi) D) exp(-ln^2(k/k*)/(2 D^2)).

    The log-normal of Pi & Sasaki (2020, arXiv:2005.12306, Eq. 5), normalised so that D -> 0 gives
    the delta peak A delta(ln k/k*). Fixed-order Gauss-Legendre in (w = ln(u+v), s = u-v) on
    windows that follow the peak (w ~ ln(2 k*/k) +- 6 D, s <~ 6 D (u+v)), split at the resonance
    u + v = sqrt(3); accurate to <~1% against adaptive quadrature (tests).
    """
    log_k = jnp.log(f_over_fp)
    d = jnp.asarray(width, log_k.dtype)
    c = math.log(2.0) - log_k
    # the kernel weight ~ sigma^-3 at large sigma pulls the peak down by ~1.5 D^2
    c_eff = c - 1.5 * d * d
    w_lo = jnp.clip(jnp.minimum(c - 6.0 * d, c_eff - 4.0 * d), 0.0, 40.0)
    w_hi = jnp.clip(c + 6.0 * d, w_lo, 40.0)
    breaks = [
        jnp.full_like(c, _W_RES + 1.5),
        c_eff - 1.5 * d,
        c_eff + 1.5 * d,
    ]
    logp = lambda x: -0.5 * (x / d) ** 2
    val = _sigw_integral(
        log_k, lambda sig: jnp.minimum(1.0, 6.0 * d * sig), logp, w_lo, w_hi, breaks
    )
    return val / (2.0 * math.pi * d * d)


def sigw_box_shape(f_over_fmin: Array, fmax_over_fmin: Array) -> Array:
    """Omega_GW(k)/A^2 at horizon entry for P_zeta = A on k_min <= k <= k_max (de Luca et al. 2022).

    Exact integration limits: with a = k_min/k, b = k_max/k the (s, sigma) region is
    sigma in [max(1, 2a), 2b], 0 <= s <= min(1, 2b - sigma, sigma - 2a).
    """
    log_k = jnp.log(f_over_fmin)
    a = jnp.exp(-log_k)
    b = fmax_over_fmin * a
    w_lo = jnp.log(jnp.maximum(1.0, 2.0 * a))
    w_hi = jnp.maximum(jnp.log(2.0 * b), w_lo)
    breaks = [
        jnp.full_like(a, _W_RES + 1.5),
        jnp.full_like(a, _W_RES + 4.0),
        jnp.log(2.0 * a + 1.0),
        jnp.log(jnp.maximum(2.0 * b - 1.0, 1e-30)),
    ]
    s_hi = lambda sig: jnp.clip(
        jnp.minimum(2.0 * b[:, None] - sig, sig - 2.0 * a[:, None]), 0.0, 1.0
    )
    return _sigw_integral(log_k, s_hi, lambda x: jnp.zeros_like(x), w_lo, w_hi, breaks)


def sigw_delta_shape(f_over_fp: Array) -> Array:
    """Omega_GW(k)/A^2 at horizon entry for P_zeta = A delta(ln k/k*): Kohri & Terada 2018 Eq. (36).

    Zero above k = 2 k*, with a log resonance at k = 2 k*/sqrt(3).
    """
    k = f_over_fp
    k2 = k * k
    q = 3.0 * k2 - 2.0
    lg = jnp.log(jnp.maximum(jnp.abs(1.0 - 4.0 / (3.0 * k2)), 1e-30))
    brace = jnp.where(k < 2.0 / _SQRT3, math.pi**2 * q * q, 0.0) + (4.0 + q * lg) ** 2
    val = (3.0 / 64.0) * ((4.0 - k2) / 4.0) ** 2 * k2 * q * q * brace
    return jnp.where(k < 2.0, val, 0.0)


def _sigw_prefactor(log10_f: Array, log10_A: Array) -> Array:
    return log10_redshift_factor(_log10_t_at_horizon_entry(log10_f)) + 2.0 * log10_A


def _sigw_delta(f_hz, p):
    log10_f = jnp.log10(f_hz)
    x = 10.0 ** jnp.minimum(log10_f - p["log10_f_peak"], 3.0)
    return _sigw_prefactor(log10_f, p["log10_A"]) + _safe_log10(sigw_delta_shape(x))


def _sigw_gauss(f_hz, p):
    log10_f = jnp.log10(f_hz)
    x = 10.0 ** (log10_f - p["log10_f_peak"])
    return _sigw_prefactor(log10_f, p["log10_A"]) + _safe_log10(sigw_gauss_shape(x, p["width"]))


def _sigw_box(f_hz, p):
    log10_f = jnp.log10(f_hz)
    lo = jnp.minimum(p["log10_f_min"], p["log10_f_max"])
    hi = jnp.maximum(p["log10_f_min"], p["log10_f_max"])
    x = 10.0 ** (log10_f - lo)
    shape = sigw_box_shape(x, 10.0 ** (hi - lo))
    return _sigw_prefactor(log10_f, p["log10_A"]) + _safe_log10(shape)


# ---------------------------------------------------------------------------------------------
# First-order phase transitions and domain walls.
# ---------------------------------------------------------------------------------------------
_LOG10_8PI_THIRD = math.log10(8.0 * math.pi) / 3.0
_V_W = 1.0


def _pt_common(p):
    log10_t = p["log10_T_star"]
    alpha = 10.0 ** p["log10_alpha"]
    return log10_t, alpha, p["log10_beta_over_H"]


def _pt_bubble(f_hz, p):
    """Envelope approximation, Caprini et al. 2016 Eqs. (22-24) (Huber & Konstandin 2008), kappa=1."""
    log10_t, alpha, lbh = _pt_common(p)
    v = _V_W
    delta = 0.11 * v**3 / (0.42 + v**2)
    f_over_beta = 0.62 / (1.8 - 0.1 * v + v**2)
    log10_fp = math.log10(f_over_beta) + lbh + log10_f_hubble_hz(log10_t)
    log10_amp = (
        log10_redshift_factor(log10_t)
        - 2.0 * lbh
        + 2.0 * jnp.log10(alpha / (1.0 + alpha))
        + math.log10(delta)
    )
    return log10_amp + broken_power_law_shape(jnp.log10(f_hz) - log10_fp, 2.8, 1.0, 1.0)


def _pt_sound(f_hz, p):
    """Sound waves, Caprini et al. 2016 Eqs. (27-30) (Hindmarsh et al. 2015), with the finite
    source lifetime factor Upsilon = 1 - (1 + 2 tau_sw H)^(-1/2) (Guo et al. 2020, arXiv:2007.08537;
    Caprini et al. 2020) where tau_sw H = H R / U_f, H R = (8 pi)^(1/3) v_w H/beta, U_f^2 = 3/4 kappa_v
    alpha/(1+alpha), kappa_v = alpha / (0.73 + 0.083 sqrt(alpha) + alpha) (Espinosa et al. 2010)."""
    log10_t, alpha, lbh = _pt_common(p)
    v = _V_W
    kappa = alpha / (0.73 + 0.083 * jnp.sqrt(alpha) + alpha)
    k_ratio = kappa * alpha / (1.0 + alpha)
    u_f = jnp.sqrt(0.75 * k_ratio)
    h_r = 10.0 ** (_LOG10_8PI_THIRD - lbh) * v
    tau_h = h_r / u_f
    # 1 - (1+2x)^(-1/2) = 2x / ((1+2x) + sqrt(1+2x)) (no cancellation at small x)
    r = jnp.sqrt(1.0 + 2.0 * tau_h)
    upsilon = 2.0 * tau_h / (r * r + r)
    log10_fp = math.log10(2.0 / _SQRT3 / v) + lbh + log10_f_hubble_hz(log10_t)
    log10_amp = (
        log10_redshift_factor(log10_t)
        + math.log10(0.159 * v)  # 2.65e-6 / 1.67e-5: Caprini 2016 Eq. (28) over Eq. (R) at g = 100
        - lbh
        + 2.0 * jnp.log10(k_ratio)
        + jnp.log10(upsilon)
    )
    return log10_amp + broken_power_law_shape(jnp.log10(f_hz) - log10_fp, 3.0, 4.0, 3.5)


def _dw(f_hz, p):
    """Domain-wall annihilation, NG15-NP Eqs. (27-28): Omega_* = (3/32pi) eps alpha_*^2 S(f/f_H)."""
    log10_t = p["log10_T_star"]
    log10_fp = log10_f_hubble_hz(log10_t)
    log10_amp = (
        log10_redshift_factor(log10_t)
        + math.log10(3.0 * 0.7 / (32.0 * math.pi))
        + 2.0 * p["log10_alpha_star"]
    )
    return log10_amp + broken_power_law_shape(jnp.log10(f_hz) - log10_fp, 3.0, 1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Cosmic strings: loop-network integral (units: H_0 = c = 1).
# ---------------------------------------------------------------------------------------------
STRING_ALPHA = 0.1  # loop size at birth / t (BOS)
STRING_F_ALPHA = 0.1  # fraction of energy into loops of that size
STRING_GAMMA = 50.0  # total GW power / (G mu^2)
STRING_C_EFF = (
    5.4,
    0.39,
)  # loop-production efficiency, radiation / matter era (VOS; Cui et al. 2019)
STRING_N_MODES = 64  # explicit harmonics; the rest as an integral
_ZETA_43 = 3.600859739433173  # zeta(4/3): P_k = Gamma k^(-4/3) / zeta(4/3) (cusps)


def _background_tables(n: int = 6000) -> tuple[np.ndarray, np.ndarray, float]:
    """ln t(a) for flat LCDM + radiation (constant g_*), H_0 = 1: t = int a da / sqrt(Or + Om a + OL a^4)."""
    ln_a = np.linspace(math.log(1e-24), 0.0, n)
    a = np.exp(ln_a)
    e = np.sqrt(OMEGA_R + OMEGA_M * a + OMEGA_L * a**4)
    g = a * a / e  # dt / d ln a
    t0_part = a[0] ** 2 / (2.0 * math.sqrt(OMEGA_R))  # radiation-era start
    t = t0_part + np.concatenate([[0.0], np.cumsum(0.5 * (g[1:] + g[:-1]) * np.diff(ln_a))])
    return np.log(t), ln_a, float(t[-1])


_LN_T_TAB, _LN_A_TAB, _T0_H0 = _background_tables()
_LN_T0 = math.log(_T0_H0)
_LN_A_OVER_T_TAB = _LN_A_TAB - _LN_T_TAB  # decreasing in t up to today
_LN_A_EQ = math.log(OMEGA_R / OMEGA_M)
# internal grid of mode-1 frequencies (Hz) and Simpson nodes in ln t
_LN_F1 = np.linspace(math.log(1e-18), math.log(0.1), 17 * 12 + 1)
_N_T = 161
_SIMPSON = np.array([1.0] + [4.0, 2.0] * ((_N_T - 3) // 2) + [4.0, 1.0]) / (3.0 * (_N_T - 1))
_X_T = np.linspace(0.0, 1.0, _N_T)
_LN_M_PL2_OVER_H02 = 2.0 * math.log(M_PL_GEV / H0_GEV)


def _ln_a(ln_t: Array) -> Array:
    return _interp(ln_t, _LN_T_TAB, _LN_A_TAB)


def _ln_mode1(ln_f: Array, log10_gmu: Array, ln_extra: Callable | None) -> Array:
    """ln Omega^(1)(f) of the fundamental harmonic (before the h^2), on frequencies ``ln_f`` [n].

    Omega^(1)(f) = (16 pi / 3) (G mu)^2 P_1 / f_hat int dt a^5 n(l = 2 a / f_hat, t)   (a_0 = 1)

    (Blanco-Pillado & Olum 2017, Eq. 12; Auclair et al. 2020, Eq. 2.12), with the one-scale loop
    density n(l, t) = F C_eff(t_i) / (alpha (alpha + Gamma G mu)) t_i^-4 (a(t_i)/a(t))^3,
    t_i = (l + Gamma G mu t) / (alpha + Gamma G mu) (Cui et al. 2019, Eq. 2.5; BOS calibration:
    F = alpha = 0.1). Loops are counted from radiation- and matter-era production alike; the
    integral runs on Simpson nodes in ln t from the first time a loop can emit at f
    (l = alpha t) to today.
    """
    gmu = 10.0**log10_gmu
    ggmu = STRING_GAMMA * gmu
    ln_fhat = ln_f - math.log(H0_PER_S)
    # first emission time: a(t)/t = alpha f_hat / 2
    target = math.log(STRING_ALPHA / 2.0) + ln_fhat
    ln_tmin = _interp(-target, -_LN_A_OVER_T_TAB, _LN_T_TAB)
    emits = ln_tmin < _LN_T0
    ln_tmin = jnp.minimum(ln_tmin, _LN_T0 - 1e-3)
    width = _LN_T0 - ln_tmin
    ln_t = ln_tmin[:, None] + width[:, None] * _const(_X_T, width)[None, :]  # [n, N_T]
    ln_a = _ln_a(ln_t)
    t = jnp.exp(ln_t)
    length = 2.0 * jnp.exp(ln_a - ln_fhat[:, None])
    ln_ti = jnp.log((length + ggmu * t) / (STRING_ALPHA + ggmu))
    ln_ai = _ln_a(ln_ti)
    frac_rad = jax.nn.sigmoid(-(ln_ai - _LN_A_EQ))
    c_eff = STRING_C_EFF[1] + (STRING_C_EFF[0] - STRING_C_EFF[1]) * frac_rad
    ln_n = (
        math.log(STRING_F_ALPHA)
        + jnp.log(c_eff)
        - math.log(STRING_ALPHA)
        - jnp.log(STRING_ALPHA + ggmu)
        - 4.0 * ln_ti
        + 3.0 * (ln_ai - ln_a)
    )
    if ln_extra is not None:
        ln_n = ln_n + ln_extra(ln_t, jnp.log(length), ln_ti, ggmu)
    ln_integrand = ln_t + 5.0 * ln_a + ln_n
    ln_w = _const(np.log(_SIMPSON), width)[None, :]
    ln_int = logsumexp(ln_integrand + ln_w, axis=-1) + jnp.log(width)
    ln_p1 = math.log(STRING_GAMMA / _ZETA_43)
    out = math.log(16.0 * math.pi / 3.0) + 2.0 * jnp.log(gmu) + ln_p1 - ln_fhat + ln_int
    return jnp.where(emits, jnp.maximum(out, -600.0), -600.0)


def string_omega(
    f_hz: Array, log10_gmu: Array, ln_extra: Callable | None = None, ln_scale: Array = 0.0
) -> Array:
    """ln Omega_GW(f) (no h^2) of a cusp-dominated loop network: sum_k k^(-4/3) Omega^(1)(f/k).

    Harmonics k <= `STRING_N_MODES` are summed explicitly (interpolating ln Omega^(1) on a fixed
    grid of 12 points per decade), the rest as the integral
    sum_{k>K} ~ f^(-1/3) int_0^{f/(K+1/2)} x^(1/3) Omega^(1)(x) dln x.
    ``ln_extra(ln_t, ln_l, ln_t_i, Gamma G mu)`` multiplies the loop density (metastable decay);
    ``ln_scale`` multiplies it by a constant (superstrings: -ln P).
    """
    ln_f1 = _const(_LN_F1, f_hz)
    ln_o1 = _ln_mode1(ln_f1, log10_gmu, ln_extra) + ln_scale  # [M]
    ln_f = jnp.log(f_hz)
    k = np.arange(1, STRING_N_MODES + 1, dtype=np.float64)
    ln_k = _const(np.log(k), f_hz)[None, :]
    ln_fk = ln_f[:, None] - ln_k
    explicit = logsumexp(
        jnp.interp(ln_fk, ln_f1, ln_o1, left=-600.0, right=-600.0) - (4.0 / 3.0) * ln_k,
        axis=-1,
    )
    # tail: cumulative int x^(1/3) Omega1 dln x on the grid (trapezoid, in logs)
    g = ln_o1 + ln_f1 / 3.0
    d = float(_LN_F1[1] - _LN_F1[0])
    seg = jnp.logaddexp(g[1:], g[:-1]) + math.log(0.5 * d)
    top = jax.lax.stop_gradient(jnp.max(seg))
    cum = top + jnp.log(jnp.cumsum(jnp.exp(seg - top)) + 1e-30)  # floored at top - 69
    cum = jnp.concatenate([jnp.full((1,), -600.0, ln_o1.dtype), cum])
    x_tail = ln_f - math.log(STRING_N_MODES + 0.5)
    tail = jnp.interp(x_tail, ln_f1, cum, left=-600.0) - ln_f / 3.0
    return jnp.logaddexp(explicit, tail)


def _string_log10_h2(ln_omega: Array) -> Array:
    return jnp.maximum(ln_omega / _LN10, -200.0) + 2.0 * math.log10(H_LITTLE)


def _stable(f_hz, p):
    return _string_log10_h2(string_omega(f_hz, p["log10_Gmu"]))


def _super(f_hz, p):
    return _string_log10_h2(string_omega(f_hz, p["log10_Gmu"], ln_scale=-p["log10_P"] * _LN10))


def _meta(f_hz, p):
    """Loops of a metastable network (Buchmueller, Domcke & Schmitz 2021, arXiv:2107.04578, Eq. 2.11):
    no loop production after t_s = Gamma_d^(-1/2) (smoothly, over 0.1 e-folds in t_i) and, for
    t > t_s, survival exp(-Gamma_d [l (t - t_s) + Gamma G mu (t - t_s)^2 / 2]), with
    Gamma_d = mu/(2 pi) exp(-pi kappa) (Leblond, Shlaer & Siemens 2009), mu = G mu M_Pl^2."""
    log10_gmu = p["log10_Gmu"]
    kappa = p["sqrt_kappa"] ** 2
    ln_gamma_d = log10_gmu * _LN10 + _LN_M_PL2_OVER_H02 - math.log(2.0 * math.pi) - math.pi * kappa
    ln_ts = -0.5 * ln_gamma_d

    def ln_extra(ln_t, ln_length, ln_ti, ggmu):
        # (t - t_s)/t_s, floored at 1e-6 (below it the decay factor is < 1e-7 from unity)
        r = jnp.exp(jnp.minimum(ln_t - ln_ts, 80.0)) - 1.0
        decays = r > 1e-6
        ln_r = jnp.log(jnp.where(decays, r, 1.0))
        ln_e = jnp.logaddexp(ln_length - ln_ts + ln_r, jnp.log(0.5 * ggmu) + 2.0 * ln_r)
        e = jnp.where(decays, jnp.exp(jnp.minimum(ln_e, math.log(1e4))), 0.0)
        return jax.nn.log_sigmoid((ln_ts - ln_ti) / 0.1) - e

    return _string_log10_h2(string_omega(f_hz, log10_gmu, ln_extra))


# ---------------------------------------------------------------------------------------------
# Registry.
# ---------------------------------------------------------------------------------------------
_NG15 = "Afzal et al. 2023 (NANOGrav 15-yr new physics, ApJL 951 L11, arXiv:2306.16219)"
_PTARCADE = "PTArcade (Mitridate et al. 2023, arXiv:2306.16377)"
_LOG10_HR_TO_BH = _LOG10_8PI_THIRD  # log10 beta/H = log10((8 pi)^(1/3) v_w) - log10(H R)
_HOLO_MEAN = (-15.6, 4.7)
_HOLO_COV = ((0.28, -0.0026), (-0.0026, 0.12))

_A_UNIF = Param("log10_A", -18.0, -11.0)
_SIGW_A = Param("log10_A", -3.0, 1.0)
_PT_PARAMS = (
    Param("log10_T_star", -4.0, 4.0),
    Param("log10_alpha", -2.0, 1.0),
    # NG15-NP's log10(H_* R_*) ~ U(-3, 0.5), mapped with R_* = (8 pi)^(1/3) v_w / beta (v_w = 1)
    Param("log10_beta_over_H", _LOG10_HR_TO_BH - 0.5, _LOG10_HR_TO_BH + 3.0),
)


def _in_dtype_of_f(fn: Callable) -> Callable:
    """Cast the parameters to the floating dtype of the frequencies (strict-promotion safe)."""

    @functools.wraps(fn)
    def wrapped(f_hz: Array, p: Mapping[str, Array]) -> Array:
        f_hz = jnp.asarray(f_hz)
        if not jnp.issubdtype(f_hz.dtype, jnp.floating):
            f_hz = f_hz.astype(jnp.result_type(float))
        return fn(f_hz, {k: jnp.asarray(v, f_hz.dtype) for k, v in p.items()})

    return wrapped


MODELS: dict[str, SpectralModel] = {
    m.name: dataclasses.replace(m, fn=_in_dtype_of_f(m.fn))
    for m in (
        SpectralModel(
            "SMBHB",
            (_A_UNIF, Param("gamma", 0.0, 7.0)),
            _smbhb,
            "Phinney 2001; power law h_c = A (f/f_yr)^((3-gamma)/2) (NG15 GWB, Agazie et al. 2023).",
            "Free two-parameter power law (gamma = 13/3 for circular GW-driven binaries).",
        ),
        SpectralModel(
            "SMBHB-HOLO",
            (
                Param("log10_A", mean=_HOLO_MEAN[0], sd=math.sqrt(_HOLO_COV[0][0])),
                Param("gamma", mean=_HOLO_MEAN[1], sd=math.sqrt(_HOLO_COV[1][1])),
            ),
            _smbhb,
            _NG15 + " Eq. (2): 2-D Gaussian prior from holodeck GWOnly-Ext populations.",
            "SMBHB power law with the astrophysically informed (holodeck) Gaussian prior on "
            "(log10_A, gamma); `prior` gives its marginals, `joint_prior` the correlated 2-D normal.",
            joint_prior=(("log10_A", "gamma"), _holodeck_prior),
        ),
        SpectralModel(
            "SMBHB-TURN",
            (_A_UNIF, Param("log10_fbend", -10.0, -7.0), Param("kappa", 0.0, 7.0)),
            _smbhb_turn,
            "Sampson, Cornish & McWilliams 2015 (PRD 91, 084055) Eq. (2).",
            "h_c = A (f/f_yr)^(-2/3) / (1 + (f_bend/f)^kappa)^(1/2): environmental low-f turnover "
            "(kappa = 10/3 stellar scattering, 7/3 gas). Priors ours (not in NG15-NP).",
        ),
        SpectralModel(
            "IGW",
            (
                Param("log10_r", -40.0, 0.0),
                Param("n_t", 0.0, 6.0),
                Param("log10_T_rh", -3.0, 3.0),
            ),
            _igw,
            _NG15 + " Eqs. (7-9); " + _PTARCADE + " igw model.",
            "Blue-tilted inflationary tensor spectrum P_t = r A_s (f/f_cmb)^n_t, redshifted with "
            "Omega_r h^2/24 x g factors at horizon entry, reheating transfer function at T_rh [GeV].",
        ),
        SpectralModel(
            "SIGW-GAUSS",
            (_SIGW_A, Param("log10_f_peak", -11.0, -5.0), Param("width", 0.1, 3.0)),
            _sigw_gauss,
            "Kohri & Terada 2018 (PRD 97, 123532) Eqs. (30-32); Pi & Sasaki 2020 Eq. (5); "
            + _NG15
            + " Sec. 3.2.",
            "Scalar-induced GWs (radiation era) from a log-normal peak of P_zeta (width in ln k).",
        ),
        SpectralModel(
            "SIGW-BOX",
            (
                _SIGW_A,
                Param("log10_f_min", -11.0, -5.0),
                Param("log10_f_max", -11.0, -5.0),
            ),
            _sigw_box,
            "Kohri & Terada 2018 Eqs. (30-32); box P_zeta of De Luca et al. 2022; " + _NG15 + ".",
            "SIGW from P_zeta = A between f_min and f_max. The spectrum is symmetric in the two "
            "edges (they are ordered inside the model); sampled with the ordered prior "
            "(`OrderedUniform`), which has the same evidence as NG15-NP's two uniforms.",
            joint_prior=(("log10_f_min", "log10_f_max"), OrderedUniform(-11.0, -5.0)),
        ),
        SpectralModel(
            "SIGW-DELTA",
            (_SIGW_A, Param("log10_f_peak", -11.0, -5.0)),
            _sigw_delta,
            "Kohri & Terada 2018 Eq. (36) (closed form); " + _NG15 + ".",
            "SIGW from P_zeta = A delta(ln k/k_*): cut off at f = 2 f_peak, resonance at "
            "2 f_peak / sqrt(3).",
        ),
        SpectralModel(
            "PT-BUBBLE",
            _PT_PARAMS,
            _pt_bubble,
            "Caprini et al. 2016 (JCAP 04, 001) Eqs. (22-24) (envelope; Huber & Konstandin 2008); "
            "shape = NG15-NP Eq. (24) with (a, b, c) = (2.8, 1, 1).",
            "First-order phase transition, bubble collisions (kappa = 1, v_w = 1); T_* in GeV.",
        ),
        SpectralModel(
            "PT-SOUND",
            _PT_PARAMS,
            _pt_sound,
            "Caprini et al. 2016 Eqs. (27-30) (Hindmarsh et al. 2015); kappa_v of Espinosa et al. "
            "2010; lifetime suppression of Guo et al. 2020 (arXiv:2007.08537) as in NG15-NP; "
            "shape = NG15-NP Eq. (24) with (a, b, c) = (3, 4, 3.5).",
            "First-order phase transition, sound waves in the plasma (v_w = 1); T_* in GeV.",
        ),
        SpectralModel(
            "DW",
            (Param("log10_T_star", -4.0, 4.0), Param("log10_alpha_star", -2.0, 1.0)),
            _dw,
            _NG15 + " Sec. 3.5 (DW-SM): Omega_* = (3/32pi) eps alpha_*^2 (eps = 0.7, Hiramatsu et "
            "al. 2014) with the (a, b, c) = (3, 1, 1) shape peaking at f_H(T_*).",
            "Annihilating domain walls; alpha_* = rho_DW / rho_tot at T_* [GeV].",
        ),
        SpectralModel(
            "STABLE",
            (Param("log10_Gmu", -14.0, -3.0),),
            _stable,
            "Blanco-Pillado, Olum & Shlaer 2014 / Blanco-Pillado & Olum 2017 (loop density, "
            "Gamma = 50); Cui et al. 2019 Eq. (2.5) one-scale form; " + _NG15 + " STABLE.",
            "Stable Nambu-Goto strings, cusp emission P_k ~ k^(-4/3), alpha = F = 0.1; a(t) of "
            "flat LCDM + radiation with constant g_*.",
        ),
        SpectralModel(
            "META",
            (Param("log10_Gmu", -14.0, -3.0), Param("sqrt_kappa", 7.0, 9.5)),
            _meta,
            "Buchmueller, Domcke & Schmitz 2021 (JCAP 12, 006) Eq. (2.11); " + _NG15 + " META-L.",
            "Metastable strings (loops only): network decays at t_s = Gamma_d^(-1/2), "
            "Gamma_d = mu/(2 pi) exp(-pi kappa).",
        ),
        SpectralModel(
            "SUPER",
            (Param("log10_Gmu", -14.0, -6.0), Param("log10_P", -3.0, 0.0)),
            _super,
            "Loop density enhanced by 1/P (Jackson, Jones & Polchinski 2005; Sakellariadou 2005); "
            + _NG15
            + " SUPER.",
            "Cosmic superstrings: stable-string spectrum times 1/P (intercommutation probability).",
        ),
    )
}


def get_model(name: str) -> SpectralModel:
    """The model called ``name`` (see `MODELS`)."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"Unknown spectral model {name!r}; known: {', '.join(MODELS)}.") from None
