"""transformers_jax: decoder language models on jaxaccel (floor 3).

Public API; everything else is private. ``JOB`` is the ``jaxaccel generate`` command
(a `jaxaccel.runtime.Job`; its config is `GenerateConfig`). Every error raised for bad input
derives from `jaxaccel.InputError`.
"""

from ._checkpoint import load_safetensors as load_safetensors, save_safetensors as save_safetensors
from ._cli import JOB as JOB, GenerateConfig as GenerateConfig
from ._config import DecoderConfig as DecoderConfig
from ._errors import (
    ChatTemplateError as ChatTemplateError,
    InvalidTokenError as InvalidTokenError,
    MissingTensorError as MissingTensorError,
    ModelFileError as ModelFileError,
    ModelFileNotFoundError as ModelFileNotFoundError,
)
from ._generate import (
    Generation as Generation,
    Greedy as Greedy,
    Sample as Sample,
    TextStreamer as TextStreamer,
    chat as chat,
    generate as generate,
    perplexity as perplexity,
    sample_logits as sample_logits,
)
from ._gguf import (
    GGUFModel as GGUFModel,
    find_smollm2_gguf as find_smollm2_gguf,
    load_gguf as load_gguf,
    read_gguf_metadata as read_gguf_metadata,
)
from ._model import (
    Decoder as Decoder,
    from_hf_state_dict as from_hf_state_dict,
    init_decoder as init_decoder,
    to_hf_state_dict as to_hf_state_dict,
)
from ._tokenizer import CHAT_ROLES as CHAT_ROLES, Tokenizer as Tokenizer
