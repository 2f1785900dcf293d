"""Normalizing-flow samplers: flow VI with importance reweighting, flow-enhanced MCMC, NUTS.

All share one target interface (`Target`), one driver (chunked ``lax.scan`` with progress, finite
checks and checkpoint/resume) and one `Result` (samples, weights, evidence, diagnostics, corner
plot)::

    import numpyro.distributions as dist
    from science import samplers as ss

    target = ss.Target(log_likelihood, prior={"mu": dist.Normal(0, 5), "sigma": dist.HalfNormal(2)})
    result = ss.sample(jax.random.key(0), target, ss.FlowVI())
    print(result.summary())          # mean/std/MCSE/ESS per parameter, log Z +- error, k-hat
"""

from ._driver import SamplerError as SamplerError
from ._flows import (
    FlowConfig as FlowConfig,
    concentrate as concentrate,
    fit_flow as fit_flow,
    make_flow as make_flow,
)
from ._mcmc import NUTS as NUTS, FlowMCMC as FlowMCMC, sample as sample
from ._result import (
    Result as Result,
    chain_diagnostics as chain_diagnostics,
    harmonic_evidence as harmonic_evidence,
    importance_evidence as importance_evidence,
    psis as psis,
    reweight as reweight,
)
from ._target import Target as Target, TargetError as TargetError
from ._vi import FlowVI as FlowVI
