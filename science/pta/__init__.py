"""Pulsar-timing-array background model comparison: spectral models (`spectra`), the free-spectrum
refit likelihood on published PTA free spectra, the full Gaussian-process likelihood of the EPTA
DR2 timing data, evidences and Bayes factors with the flow sampler, and ``jaxaccel pta-compare``
(`JOB`, a `jaxaccel.runtime.Job`).

The public API, by task:

- data: `load_free_spectrum` (`DATASETS`, `DEFAULT_BINS`, `data_folder`), `load_epta_dr2`
  (`epta_dr2_folder`), `Pulsar`; errors `PTADataError` (a `jaxaccel.Error`);
- models: `MODELS` (name -> `SpectralModel`), `get_model`; unit conversions in `units`;
- refit evidences: `refit_target`, `run_model` -> `ModelRun`, `bayes_factors`, `format_table`,
  `hellinger` (`hellinger_vs_nuts`), `plot_spectra` with `spectrum_curves` / `posterior_draws`, and `flow_vi` (the
  sampler settings the job uses);
- full likelihood: `PTALikelihood`, `hellings_downs`, `free_spectrum_vs_shipped` (a fitted free
  spectrum against the published one), and the fixed-noise pieces the likelihood is built from
  (`white_variance`, `chromatic_noise`, `fourier_basis`), for independent references;
- the job: `JOB`, its config `PTACompareConfig` (`JOB.load(size=..., overrides=...)`,
  `JOB.run(config, key=..., out=...)`).
"""

from . import _compare as compare, _spectra as spectra, _units as units
from ._compare import (
    ModelRun as ModelRun,
    bayes_factors as bayes_factors,
    flow_vi as flow_vi,
    format_table as format_table,
    free_spectrum_vs_shipped as free_spectrum_vs_shipped,
    hellinger as hellinger,
    hellinger_vs_nuts as hellinger_vs_nuts,
    plot_spectra as plot_spectra,
    posterior_draws as posterior_draws,
    refit_target as refit_target,
    run_model as run_model,
    spectrum_curves as spectrum_curves,
)
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
    chromatic_noise as chromatic_noise,
    default_data_folder as epta_dr2_folder,
    fourier_basis as fourier_basis,
    hellings_downs as hellings_downs,
    load_epta_dr2 as load_epta_dr2,
    white_variance as white_variance,
)
from ._job import (
    HELLINGER_MODELS as HELLINGER_MODELS,
    JOB as JOB,
    PTACompareConfig as PTACompareConfig,
)
from ._spectra import MODELS as MODELS, SpectralModel as SpectralModel, get_model as get_model

__all__ = [
    "compare",
    "spectra",
    "units",
    "JOB",
    "PTACompareConfig",
    "HELLINGER_MODELS",
    "flow_vi",
    "posterior_draws",
    "spectrum_curves",
    "hellinger_vs_nuts",
    "free_spectrum_vs_shipped",
    "ModelRun",
    "bayes_factors",
    "format_table",
    "hellinger",
    "plot_spectra",
    "refit_target",
    "run_model",
    "MODELS",
    "SpectralModel",
    "get_model",
    "PTALikelihood",
    "Pulsar",
    "hellings_downs",
    "load_epta_dr2",
    "epta_dr2_folder",
    "white_variance",
    "chromatic_noise",
    "fourier_basis",
    "DATASETS",
    "DEFAULT_BINS",
    "FreeSpectrum",
    "PTADataError",
    "RefitLikelihood",
    "data_folder",
    "load_free_spectrum",
]
