"""Unit conversions between the three ways a background spectrum is written, in one place.

- ``h2_omega``: the energy-density fraction per log frequency, Omega_GW(f) h^2 (dimensionless; the
  h^2 removes the Hubble-constant convention: H_0 = h x 100 km/s/Mpc).
- ``hc``: the characteristic strain h_c(f) (dimensionless).
- ``rho_s``: the GW-induced timing-residual standard deviation per frequency bin, in seconds, for
  a data set spanning ``tspan_s`` seconds (bin width 1/T). This is the quantity free-spectrum
  analyses (ceffyl, PTArcade, enterprise's ``free_spectrum``) sample as ``log10_rho``.

Relations (f in Hz, T in s, H_100 = 100 km/s/Mpc in 1/s):

    Omega_GW(f) h^2 = 2 pi^2 f^2 h_c(f)^2 / (3 H_100^2)
    rho(f)^2 = S(f) / T,  S(f) = h_c(f)^2 / (12 pi^2 f^3)   (one-sided residual PSD, s^3)

All functions work in log10 space (spectra span tens of decades) and are jit/grad/vmap friendly.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

__all__ = [
    "H100_PER_S",
    "F_YR_HZ",
    "SECONDS_PER_YEAR",
    "log10_h2_omega_from_log10_hc",
    "log10_hc_from_log10_h2_omega",
    "log10_rho_s_from_log10_hc",
    "log10_hc_from_log10_rho_s",
    "log10_rho_s_from_log10_h2_omega",
    "log10_h2_omega_from_log10_rho_s",
    "log10_hc_power_law",
]

SECONDS_PER_YEAR = 365.25 * 86400.0
F_YR_HZ = 1.0 / SECONDS_PER_YEAR
# 100 km/s/Mpc in 1/s (1 Mpc = 3.0856775814913673e19 km).
H100_PER_S = 100.0 / 3.0856775814913673e19

_LOG10_OMEGA_FACTOR = math.log10(2.0 * math.pi**2 / (3.0 * H100_PER_S**2))
_LOG10_12PI2 = math.log10(12.0 * math.pi**2)


def log10_h2_omega_from_log10_hc(f_hz, log10_hc):
    """log10 Omega_GW h^2 from log10 h_c at frequencies ``f_hz``."""
    return _LOG10_OMEGA_FACTOR + 2.0 * jnp.log10(f_hz) + 2.0 * log10_hc


def log10_hc_from_log10_h2_omega(f_hz, log10_h2_omega):
    """log10 h_c from log10 Omega_GW h^2 (inverse of `log10_h2_omega_from_log10_hc`)."""
    return 0.5 * (log10_h2_omega - _LOG10_OMEGA_FACTOR) - jnp.log10(f_hz)


def log10_rho_s_from_log10_hc(f_hz, log10_hc, tspan_s):
    """log10 rho [s] per bin of width 1/``tspan_s`` from log10 h_c."""
    return 0.5 * (2.0 * log10_hc - _LOG10_12PI2 - 3.0 * jnp.log10(f_hz) - jnp.log10(tspan_s))


def log10_hc_from_log10_rho_s(f_hz, log10_rho_s, tspan_s):
    """log10 h_c from log10 rho [s] (inverse of `log10_rho_s_from_log10_hc`)."""
    return 0.5 * (2.0 * log10_rho_s + _LOG10_12PI2 + 3.0 * jnp.log10(f_hz) + jnp.log10(tspan_s))


def log10_rho_s_from_log10_h2_omega(f_hz, log10_h2_omega, tspan_s):
    """log10 rho [s] per bin from log10 Omega_GW h^2."""
    return log10_rho_s_from_log10_hc(
        f_hz, log10_hc_from_log10_h2_omega(f_hz, log10_h2_omega), tspan_s
    )


def log10_h2_omega_from_log10_rho_s(f_hz, log10_rho_s, tspan_s):
    """log10 Omega_GW h^2 from log10 rho [s]."""
    return log10_h2_omega_from_log10_hc(f_hz, log10_hc_from_log10_rho_s(f_hz, log10_rho_s, tspan_s))


def log10_hc_power_law(f_hz, log10_A, gamma):
    """h_c(f) = A (f / 1 yr^-1)^((3 - gamma)/2): the SMBHB-style power law (gamma = 13/3 circular, GW-driven)."""
    return log10_A + 0.5 * (3.0 - gamma) * jnp.log10(f_hz / F_YR_HZ)
