"""transformers_jax: decoder language models on jaxaccel (floor 3).

Public API; everything else is private.
"""

from ._config import DecoderConfig as DecoderConfig
from ._generate import (
    Generation as Generation,
    Greedy as Greedy,
    Sample as Sample,
    generate as generate,
    perplexity as perplexity,
    sample_logits as sample_logits,
)
from ._model import (
    Decoder as Decoder,
    from_hf_state_dict as from_hf_state_dict,
    init_decoder as init_decoder,
    to_hf_state_dict as to_hf_state_dict,
)
