"""pallas_kernels: floor 1 of jaxaccel. Pallas kernels with XLA references; depends on jax only."""

from ._backend import (
    Backend as Backend,
    BlockSizes as BlockSizes,
    check_backend as check_backend,
)
from ._codecs import (
    E2M1_VALUES as E2M1_VALUES,
    NF4_VALUES as NF4_VALUES,
    ElementCode as ElementCode,
    decode_codes as decode_codes,
    decode_e2m1 as decode_e2m1,
    decode_scales as decode_scales,
    encode_e8m0 as encode_e8m0,
    pack_nibbles as pack_nibbles,
    unpack_nibbles as unpack_nibbles,
)
from .flash_attention import (
    AttentionBlockSizes as AttentionBlockSizes,
    flash_attention as flash_attention,
    flash_attention_backend as flash_attention_backend,
    flash_attention_reference as flash_attention_reference,
)
from .int8_matmul import (
    int8_matmul as int8_matmul,
    int8_matmul_backend as int8_matmul_backend,
    int8_matmul_reference as int8_matmul_reference,
)
from .quant_matmul import (
    dequantize_weight as dequantize_weight,
    quant_matmul as quant_matmul,
    quant_matmul_backend as quant_matmul_backend,
    quant_matmul_reference as quant_matmul_reference,
)
