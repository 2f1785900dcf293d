"""SmolLM2-135M-Instruct: our decoder vs HF transformers (PyTorch CPU) on the same GGUF file."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import transformers_jax as tj
from tests.transformers_jax._hf import load_hf_model
from transformers_jax import find_smollm2_gguf, load_gguf

pytestmark = pytest.mark.slow

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "Pulsar timing arrays detect gravitational waves by",
]


@pytest.fixture(scope="module")
def loaded():
    try:
        path = find_smollm2_gguf()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    g = load_gguf(path)
    return path, g, tj.from_hf_state_dict(g.config, g.tensors)


@pytest.fixture(scope="module")
def hf(loaded):
    return load_hf_model(loaded[0])


def _hf_logits(hf, ids):
    import torch

    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0].float().numpy()


def test_logits_match_hf(loaded, hf):
    _, g, model = loaded
    f = jax.jit(lambda m, t: m(t))
    chat = g.tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+2?"}])
    for text in PROMPTS + [chat]:
        ids = g.tokenizer.encode(text)
        ours = np.asarray(f(model, jnp.asarray([ids], jnp.int32))[0])
        ref = _hf_logits(hf, ids)
        assert ours.shape == ref.shape
        err = float(np.abs(ours - ref).max())
        assert err <= 2e-4, (text, err)


def test_greedy_64_tokens_match_hf(loaded, hf):
    import torch

    _, g, model = loaded
    for text in PROMPTS[:2]:
        ids = g.tokenizer.encode(text)
        ours = tj.generate(model, [ids], max_new_tokens=64).tokens[0]
        with torch.no_grad():
            out = hf.generate(
                torch.tensor([ids]),
                max_new_tokens=64,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=g.config.pad_token_id,
            )
        ref = out[0, len(ids) :].tolist()
        assert ours == ref, (text, g.tokenizer.decode(ours), g.tokenizer.decode(ref))


def test_batched_left_padded_generation_matches_single(loaded):
    _, g, model = loaded
    prompts = [g.tokenizer.encode(p) for p in PROMPTS]
    batch = tj.generate(model, prompts, max_new_tokens=24).tokens
    single = [tj.generate(model, [p], max_new_tokens=24).tokens[0] for p in prompts]
    assert batch == single


def test_chat_helper_answers(loaded):
    _, g, model = loaded
    reply = tj.chat(
        model,
        g.tokenizer,
        [{"role": "user", "content": "What is the capital of France?"}],
        max_new_tokens=24,
    )
    assert "Paris" in reply
