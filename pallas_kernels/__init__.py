"""pallas_kernels: floor 1 of jaxaccel. Pallas kernels with XLA references; depends on jax only."""

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
