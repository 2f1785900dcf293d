"""Pulsar-timing-array background model comparison: spectral models (`spectra`), the free-spectrum
refit likelihood on published PTA free spectra, the full Gaussian-process likelihood of the EPTA
DR2 timing data, evidences and Bayes factors with the flow sampler, and ``jaxaccel pta-compare``."""

from . import _compare as compare, _spectra as spectra, _units as units
from ._freespec import (
    DATASETS as DATASETS,
    DEFAULT_BINS as DEFAULT_BINS,
    FreeSpectrum as FreeSpectrum,
    PTADataError as PTADataError,
    RefitLikelihood as RefitLikelihood,
    data_folder as data_folder,
    load_free_spectrum as load_free_spectrum,
)
from ._full import (
    PTALikelihood as PTALikelihood,
    Pulsar as Pulsar,
    hellings_downs as hellings_downs,
    load_epta_dr2 as load_epta_dr2,
)

__all__ = [
    "compare",
    "spectra",
    "units",
    "PTALikelihood",
    "Pulsar",
    "hellings_downs",
    "load_epta_dr2",
    "DATASETS",
    "DEFAULT_BINS",
    "FreeSpectrum",
    "PTADataError",
    "RefitLikelihood",
    "data_folder",
    "load_free_spectrum",
]
