"""A simple but physical detection model: inspiral SNR in one aLIGO-design detector.

The noise power spectral density is the analytic fit to Advanced LIGO's zero-detuned high-power
design curve of Ajith (2011, PRD 84, 084037, eq. 4.7):

    S_n(f) = 1e-49 [x^-4.14 - 5 x^-2 + 111 (1 - x^2 + x^4 / 2) / (1 + x^2 / 2)] Hz^-1,  x = f / 215 Hz

with a 10 Hz low-frequency cut. The optimal (face-on, overhead) inspiral SNR of a binary with
detector-frame chirp mass ``Mc`` at luminosity distance ``d_L`` is (stationary-phase, leading order)

    rho_opt = sqrt(5/6) (G Mc)^(5/6) / (c^(3/2) pi^(2/3) d_L) sqrt( int f^(-7/3) / S_n(f) df )

integrated up to the innermost-stable-circular-orbit frequency ``f_ISCO = c^3 / (6^(3/2) pi G M)``
of the detector-frame total mass (so heavy binaries lose SNR). Orientation and sky position multiply
``rho_opt`` by ``w = sqrt(F+^2 (1 + cos^2 i)^2 / 4 + Fx^2 cos^2 i)`` in [0, 1], with isotropic
angles. An event is detected when its observed SNR (optimal + unit Gaussian noise) exceeds a
threshold (8 by default). This ignores merger-ringdown power and a detector network; it is a
documented approximation, enough to give realistic mass- and distance-dependent selection effects.
"""

from __future__ import annotations

import numpy as np

__all__ = ["aligo_psd", "optimal_snr", "projection_factor", "luminosity_distance"]

G = 6.67430e-11
C = 299792458.0
MSUN = 1.98847e30
MPC = 3.0856775814913673e22
F_LOW = 10.0


def aligo_psd(f: np.ndarray) -> np.ndarray:
    """Ajith (2011) analytic fit to the aLIGO zero-detuned high-power design PSD [1/Hz]."""
    x = np.asarray(f) / 215.0
    return 1e-49 * (x**-4.14 - 5 * x**-2 + 111 * (1 - x**2 + x**4 / 2) / (1 + x**2 / 2))


def _cumulative_integral(n: int = 4000):
    f = np.geomspace(F_LOW, 4096.0, n)
    integrand = f ** (-7.0 / 3.0) / aligo_psd(f)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (integrand[1:] + integrand[:-1]) * np.diff(f))])
    return f, cum


_F, _CUM = _cumulative_integral()


def optimal_snr(mass_1_det, mass_2_det, distance_mpc) -> np.ndarray:
    """Optimal (face-on, overhead) single-detector inspiral SNR; masses in detector-frame Msun."""
    m1 = np.asarray(mass_1_det, dtype=np.float64)
    m2 = np.asarray(mass_2_det, dtype=np.float64)
    mtot = (m1 + m2) * MSUN
    mc = (m1 * m2) ** 0.6 / (m1 + m2) ** 0.2 * MSUN
    f_isco = C**3 / (6**1.5 * np.pi * G * mtot)
    integral = np.interp(np.clip(f_isco, F_LOW, _F[-1]), _F, _CUM)
    d = np.asarray(distance_mpc, dtype=np.float64) * MPC
    amp = np.sqrt(5.0 / 6.0) * (G * mc) ** (5.0 / 6.0) / (C**1.5 * np.pi ** (2.0 / 3.0) * d)
    return amp * np.sqrt(integral)


def projection_factor(rng: np.random.Generator, n: int) -> np.ndarray:
    """``w`` in [0, 1] for isotropic sky position, polarisation and inclination."""
    cos_theta = rng.uniform(-1, 1, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    psi = rng.uniform(0, np.pi, n)
    cos_i = rng.uniform(-1, 1, n)
    a = 0.5 * (1 + cos_theta**2)
    f_plus = a * np.cos(2 * phi) * np.cos(2 * psi) - cos_theta * np.sin(2 * phi) * np.sin(2 * psi)
    f_cross = a * np.cos(2 * phi) * np.sin(2 * psi) + cos_theta * np.sin(2 * phi) * np.cos(2 * psi)
    return np.sqrt(f_plus**2 * (1 + cos_i**2) ** 2 / 4 + f_cross**2 * cos_i**2)


def luminosity_distance(z) -> np.ndarray:
    """Luminosity distance [Mpc] at redshift ``z`` (Planck15, astropy; interpolated)."""
    return np.interp(np.asarray(z), _Z_GRID, _DL_GRID)


def _dl_grid():
    from astropy.cosmology import Planck15

    z = np.linspace(0.0, 3.0, 3001)
    return z, Planck15.luminosity_distance(z).to("Mpc").value


_Z_GRID, _DL_GRID = _dl_grid()
