"""Accelerated MRI reconstruction: physics (centred FFT, coil sensitivities, SENSE operators,
masks, retrospective simulation), fastMRI's metrics (`metrics`), a compressed-sensing baseline
(`cs_reconstruct`, MFISTA with wavelet L1 + TV), networks (`nets`: recurrent cells, RIM, CIRIM,
E2E-VarNet, U-Net), on-the-fly phantom data (`data`), training with checkpoint/resume (`train`) and
``jaxaccel mri-recon``. Tutorial: ``examples/mri_reconstruction``; measurements: ``benchmarks/mri.py``."""

from . import _data as data, _metrics as metrics, _nets as nets, _train as train
from ._cs import CSResult as CSResult, Wavelet as Wavelet, cs_reconstruct as cs_reconstruct
from ._masks import (
    acceleration as acceleration,
    equispaced_mask as equispaced_mask,
    poisson_disc_mask as poisson_disc_mask,
    random_mask as random_mask,
)
from ._physics import (
    MRIError as MRIError,
    Sample as Sample,
    birdcage_maps as birdcage_maps,
    check_kspace as check_kspace,
    estimate_maps as estimate_maps,
    fft2c as fft2c,
    ifft2c as ifft2c,
    rss as rss,
    sense_adjoint as sense_adjoint,
    sense_combine as sense_combine,
    sense_forward as sense_forward,
    simulate as simulate,
    smooth_phase as smooth_phase,
)

__all__ = [
    "data",
    "metrics",
    "nets",
    "train",
    "CSResult",
    "Wavelet",
    "cs_reconstruct",
    "acceleration",
    "equispaced_mask",
    "poisson_disc_mask",
    "random_mask",
    "MRIError",
    "Sample",
    "birdcage_maps",
    "check_kspace",
    "estimate_maps",
    "fft2c",
    "ifft2c",
    "rss",
    "sense_adjoint",
    "sense_combine",
    "sense_forward",
    "simulate",
    "smooth_phase",
]
