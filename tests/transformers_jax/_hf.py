"""Load the HF transformers reference model from a GGUF file (for slow parity tests)."""

import importlib.util
import os

import pytest


def load_hf_model(path):
    """HF transformers' own GGUF loading (dequantize + Q/K de-permutation) of ``path``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import transformers.modeling_utils as modeling_utils

    mp = pytest.MonkeyPatch()
    if importlib.util.find_spec("accelerate") is None:
        # from_pretrained(gguf_file=...) insists on accelerate, which the legacy llama GGUF path
        # it takes on CPU does not use; let it through rather than add a dependency.
        mp.setattr(modeling_utils, "is_accelerate_available", lambda: True)
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name
        )
    finally:
        mp.undo()
    return model.eval()
