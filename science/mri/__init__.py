"""Accelerated MRI reconstruction: physics (centred FFT, coil sensitivities, SENSE operators,
masks, retrospective simulation) and fastMRI's metrics; compressed-sensing baseline and networks
(RIM, CIRIM, E2E-VarNet, U-Net) to come."""

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
