"""jaxaccel: model transforms (quantize, cache, ...) over accelerated array values, for JAX.

Public API. Everything not re-exported here is private.
"""

from . import _select as select, runtime as runtime  # noqa: F401  (namespaces: ja.select, ja.runtime)
from ._accelerate import accelerate as accelerate, qmatmul as qmatmul
from ._arrays import (
    ActQuant as ActQuant,
    MaskedTensor as MaskedTensor,
    QTensor as QTensor,
    ScaledTensor as ScaledTensor,
    materialise as materialise,
    quantize_array as quantize_array,
)
from ._cache import (
    AbstractCacheable as AbstractCacheable,
    CachedModel as CachedModel,
    KVCache as KVCache,
    KVCacheConfig as KVCacheConfig,
    cache as cache,
)
from ._engine import (
    Described as Described,
    LeafStats as LeafStats,
    Recipe as Recipe,
    Transform as Transform,
    describe as describe,
    describe_leaves as describe_leaves,
    map_leaves as map_leaves,
    transform as transform,
)
from ._errors import (
    CheckpointError as CheckpointError,
    ConfigError as ConfigError,
    Error as Error,
    InputError as InputError,
)
from ._explain import explain as explain
from ._formats import (
    AFPQ as AFPQ,
    FP4 as FP4,
    FP8 as FP8,
    MXFP4 as MXFP4,
    NF4 as NF4,
    NVFP4 as NVFP4,
    AdaptiveGroup as AdaptiveGroup,
    Format as Format,
    Granularity as Granularity,
    Group as Group,
    Int4 as Int4,
    Int8 as Int8,
    PerChannel as PerChannel,
    PerTensor as PerTensor,
)
from ._quantize import (
    GPTQ as GPTQ,
    RTN as RTN,
    MergeQuant as MergeQuant,
    QuantRecipe as QuantRecipe,
    SmoothQuant as SmoothQuant,
    quantize as quantize,
)

dequantize = materialise
__version__ = "0.1.0"
