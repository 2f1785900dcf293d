"""Tokenizer rebuilt from GGUF metadata: a tiny trained byte-level BPE (fast) and SmolLM2 vs HF (slow)."""

from __future__ import annotations

import functools
import json

import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("jinja2")

from transformers_jax._tokenizer import Tokenizer, bytes_to_unicode  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('bad role ' + message['role']) }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "The theory of the thing: these then there they them",
    "def forward(self, x):\n    return self.linear(x) + 1\n\n",
    "in 2024 there were 12345 tokens; 3.14159 is pi",
    "naïve café résumé — “quotes” 🤗 日本語",
    "hello hello hello world world worldwide",
] * 4
STRINGS = [
    "the quick brown fox",
    " leading space and  two   spaces",
    "The year 2024 had 366 days (3.14159)",
    "naïve café 🤗 日本語 — “ok”",
    "def f(x):\n    return x + 1\n\n\tclass A:  pass  \r\n",
    "<|im_start|>user\nhello<|im_end|>\n<|endoftext|>",
    "unseen: ZQXJ ü ß ∑ 𝔘",
    "",
]


@functools.cache
def trained_tokenizer_json() -> str:
    """A byte-level BPE (Digits + ByteLevel pre-tokenizer, like SmolLM2) trained on CORPUS."""
    from tokenizers import Tokenizer as Backend, decoders, models, pre_tokenizers, trainers

    tok = Backend(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok.to_str()


def reference_tokenizer():
    from tokenizers import Tokenizer as Backend

    return Backend.from_str(trained_tokenizer_json())


def tiny_tokenizer_metadata(pre: str = "smollm") -> dict:
    """GGUF ``tokenizer.*`` metadata (as llama.cpp writes it) of the trained tiny tokenizer."""
    model = json.loads(trained_tokenizer_json())["model"]
    vocab = model["vocab"]
    tokens = [None] * len(vocab)
    for tok, i in vocab.items():
        tokens[i] = tok
    assert None not in tokens
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.token_type": [3 if t in SPECIALS else 1 for t in tokens],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.padding_token_id": 2,
        "tokenizer.chat_template": CHAT_TEMPLATE,
    }


@pytest.fixture(scope="module")
def tiny():
    return Tokenizer.from_gguf_metadata(tiny_tokenizer_metadata())


def test_bytes_to_unicode_is_gpt2_alphabet():
    from tokenizers import pre_tokenizers

    m = bytes_to_unicode()
    assert sorted(m) == list(range(256))
    assert set(m.values()) == set(pre_tokenizers.ByteLevel.alphabet())
    assert m[ord(" ")] == "Ġ" and m[ord("\n")] == "Ċ" and m[ord("a")] == "a"


def test_attributes(tiny):
    md = tiny_tokenizer_metadata()
    assert tiny.vocab_size == len(md["tokenizer.ggml.tokens"]) == len(tiny)
    assert (tiny.bos_id, tiny.eos_id, tiny.pad_id) == (1, 2, 2)
    assert tiny.add_bos_token is False
    md = tiny_tokenizer_metadata() | {"tokenizer.ggml.add_bos_token": True}
    assert Tokenizer.from_gguf_metadata(md).add_bos_token is True
    assert tiny.special_ids == frozenset({0, 1, 2})
    assert [tiny.id_to_token(i) for i in range(3)] == SPECIALS
    assert tiny.token_to_id("<|im_end|>") == 2
    with pytest.raises(IndexError):
        tiny.id_to_token(tiny.vocab_size)
    assert "vocab_size=" in repr(tiny)


@pytest.mark.parametrize("text", STRINGS)
def test_ids_match_trained_tokenizer(tiny, text):
    ref = reference_tokenizer()
    assert tiny.encode(text) == ref.encode(text).ids


@pytest.mark.parametrize("text", STRINGS)
def test_decode_round_trip(tiny, text):
    ids = tiny.encode(text)
    assert tiny.decode(ids, skip_special=False) == text
    stripped = text
    for s in SPECIALS:
        stripped = stripped.replace(s, "")
    assert tiny.decode(ids) == stripped


def test_merges_are_used(tiny):
    ids = tiny.encode("the the the")
    assert len(ids) < len("the the the")  # merged, not one token per byte


def test_special_tokens_are_single_ids(tiny):
    assert tiny.encode("<|im_start|>") == [1]
    assert tiny.encode("a<|im_end|>b")[1] == 2


def test_add_bos(tiny):
    assert tiny.encode("hi", add_bos=True) == [1, *tiny.encode("hi")]


def test_chat_template(tiny):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 2+2?"}]
    text = tiny.apply_chat_template(msgs)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert tiny.apply_chat_template(msgs, add_generation_prompt=False).endswith("2+2?<|im_end|>\n")
    ids = tiny.encode(text)
    assert ids.count(1) == 3 and ids.count(2) == 2
    assert tiny.decode(ids, skip_special=False) == text


def test_chat_template_raise_exception(tiny):
    from jinja2.exceptions import TemplateError

    with pytest.raises(TemplateError, match="bad role tool"):
        tiny.apply_chat_template([{"role": "tool", "content": "x"}])


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        (
            [{"role": "wizard", "content": "x"}],
            r"^messages\[0\]: unknown role 'wizard'; allowed roles: system, user, assistant, tool$",
        ),
        (
            [{"role": "user", "content": "a"}, {"content": "x"}],
            r"messages\[1\]: expected a \{'role'",
        ),
        (["hello"], r"messages\[0\]: expected a \{'role': \.\.\., 'content': \.\.\.\} dict"),
        ("hello", r"messages: expected a list of .* got str"),
        (
            [{"role": "user", "content": 3}],
            r"messages\[0\]\['content'\]: expected a string, got int",
        ),
    ],
)
def test_chat_messages_are_checked(tiny, messages, match):
    """Roles are checked before the template renders (SmolLM2's template renders any role)."""
    from jinja2.exceptions import TemplateError

    import jaxaccel
    from transformers_jax import ChatTemplateError

    with pytest.raises(ChatTemplateError, match=match) as e:
        tiny.apply_chat_template(messages)
    assert isinstance(e.value, jaxaccel.InputError) and isinstance(e.value, TemplateError)


def test_encode_decode_bad_input(tiny):
    import jaxaccel
    from transformers_jax import InvalidTokenError

    with pytest.raises(jaxaccel.InputError, match="text: expected a string, got int"):
        tiny.encode(123)
    with pytest.raises(
        InvalidTokenError, match=r"ids: token ids must lie in \[0, \d+\), got \[-1\]"
    ):
        tiny.decode([5, -1])
    with pytest.raises(IndexError, match=r"ids: token ids must lie in .* got \[1000000\]"):
        tiny.decode([1000000])
    with pytest.raises(jaxaccel.InputError, match="ids: expected token ids, got a str"):
        tiny.decode("abc")
    with pytest.raises(jaxaccel.InputError, match="ids: expected a sequence of integer token ids"):
        tiny.decode([1.5])
    with pytest.raises(InvalidTokenError, match=r"i: token id -1 out of range"):
        tiny.id_to_token(-1)


def test_chat_template_is_sandboxed():
    from jinja2.exceptions import SecurityError

    md = tiny_tokenizer_metadata() | {
        "tokenizer.chat_template": "{{ messages.__class__.__init__.__globals__ }}"
    }
    tok = Tokenizer.from_gguf_metadata(md)
    with pytest.raises(SecurityError):
        tok.apply_chat_template([])
    md2 = tiny_tokenizer_metadata() | {
        "tokenizer.chat_template": "{% set _ = messages.append(1) %}"
    }
    with pytest.raises(SecurityError):
        Tokenizer.from_gguf_metadata(md2).apply_chat_template([])


def test_chat_template_helpers():
    src = (
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
        "{{ m | tojson }}{% endfor %}|{{ strftime_now('%Y') | length }}"
    )
    tok = Tokenizer.from_gguf_metadata(tiny_tokenizer_metadata() | {"tokenizer.chat_template": src})
    msgs = [{"role": "user", "content": "<ü>"}, {"role": "user", "content": "second"}]
    assert tok.apply_chat_template(msgs) == '{"role": "user", "content": "<ü>"}|4'


def test_no_chat_template():
    md = tiny_tokenizer_metadata()
    del md["tokenizer.chat_template"]
    with pytest.raises(ValueError, match="no chat template"):
        Tokenizer.from_gguf_metadata(md).apply_chat_template([{"role": "user", "content": "x"}])


def test_gpt2_pre_tokenizer_also_matches_on_these_strings():
    # Plain GPT-2 splitting (HF's choice for "smollm") agrees here because the vocabulary has no
    # multi-digit tokens; the llama3 split does not split digits one by one.
    ref = reference_tokenizer()
    gpt2 = Tokenizer.from_gguf_metadata(tiny_tokenizer_metadata(pre="gpt2"))
    for text in STRINGS:
        assert gpt2.encode(text) == ref.encode(text).ids
    llama3 = Tokenizer.from_gguf_metadata(tiny_tokenizer_metadata(pre="llama-bpe"))
    assert llama3.decode(llama3.encode(STRINGS[4])) == STRINGS[4]


def test_unknown_pre_tokenizer_warns():
    with pytest.warns(RuntimeWarning, match="unknown GGUF pre-tokenizer"):
        Tokenizer.from_gguf_metadata(tiny_tokenizer_metadata(pre="made-up"))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"tokenizer.ggml.model": "llama"}, "unsupported GGUF tokenizer model 'llama'"),
        ({"tokenizer.ggml.tokens": []}, "no tokenizer.ggml.tokens"),
        ({"tokenizer.ggml.merges": None}, "no tokenizer.ggml.merges"),
        ({"tokenizer.ggml.merges": ["nospace"]}, "malformed GGUF merge"),
        ({"tokenizer.ggml.token_type": [1, 3]}, "token_type has 2 entries"),
    ],
)
def test_bad_metadata(change, match):
    with pytest.raises(ValueError, match=match):
        Tokenizer.from_gguf_metadata(tiny_tokenizer_metadata() | change)


def test_add_bos_without_bos():
    md = tiny_tokenizer_metadata()
    del md["tokenizer.ggml.bos_token_id"]
    with pytest.raises(ValueError, match="no BOS"):
        Tokenizer.from_gguf_metadata(md).encode("x", add_bos=True)


# --------------------------------------------------------------------------- SmolLM2 vs HF (slow)

HF_STRINGS = [
    "Hello world!",
    " leading space, trailing space ",
    "The year 2024 had 366 days; pi = 3.14159, 1e-5, 0x1F",
    "naïve café 🤗🚀 日本語 Ünïcödé — “smart quotes” ∑ 𝔘 x²",
    "def f(x):\n    return x + 1\n\n\n\tclass A:  pass  \r\n",
    "<|im_start|>user\nhi<|im_end|>\n<|endoftext|><repo_name>",
    "a  b   c    d     e\n \n  \n",
    "",
]
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 12*12? Answer with digits."},
    {"role": "assistant", "content": "144"},
    {"role": "user", "content": "Thanks 🤗"},
]


@pytest.fixture(scope="module")
def smollm2():
    from transformers_jax._gguf import find_smollm2_gguf, read_gguf_metadata

    try:
        path = find_smollm2_gguf()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return path, Tokenizer.from_gguf_metadata(read_gguf_metadata(path))


@pytest.fixture(scope="module")
def hf_tokenizer(smollm2):
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    path, _ = smollm2
    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.mark.slow
@pytest.mark.parametrize("text", HF_STRINGS)
def test_smollm2_ids_match_hf(smollm2, hf_tokenizer, text):
    _, tok = smollm2
    ids = tok.encode(text)
    assert ids == hf_tokenizer.encode(text, add_special_tokens=False)
    assert ids == hf_tokenizer(text)["input_ids"]  # HF's default adds no BOS for this file either
    assert tok.decode(ids, skip_special=False) == text


@pytest.mark.slow
def test_smollm2_isolates_every_numeral(smollm2, hf_tokenizer):
    # SmolLM2's own tokenizer.json (Digits(individual_digits=True) + ByteLevel) and llama.cpp's
    # "smollm" pre-tokenizer isolate every \p{N} code point before the GPT-2 regex. HF's GGUF
    # converter does not know "smollm" and uses plain GPT-2 splitting, so " ½" differs there:
    # HF merges the space with ½'s first UTF-8 byte ("ĠÂ"). We follow the model's tokenizer.
    _, tok = smollm2
    assert tok.encode(" ½") == [tok.token_to_id("Ġ"), *tok.encode("½")]
    assert tok.encode(" 2024") == [tok.token_to_id("Ġ"), *tok.encode("2"), *tok.encode("024")]
    assert tok.encode(" 2024") == hf_tokenizer.encode(" 2024", add_special_tokens=False)


@pytest.mark.slow
def test_smollm2_chat_template_matches_hf(smollm2, hf_tokenizer):
    _, tok = smollm2
    for msgs in (MESSAGES, MESSAGES[1:2]):  # with and without a system turn
        for gen in (True, False):
            text = tok.apply_chat_template(msgs, add_generation_prompt=gen)
            ref = hf_tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            assert text == ref
            ids = tok.encode(text)
            assert ids == hf_tokenizer.encode(ref, add_special_tokens=False)
            assert ids[0] == tok.bos_id == 1  # <|im_start|>
    assert "You are a helpful AI assistant named SmolLM" in tok.apply_chat_template(MESSAGES[1:2])


@pytest.mark.slow
def test_smollm2_special_tokens(smollm2, hf_tokenizer):
    _, tok = smollm2
    assert tok.vocab_size == 49152 == len(hf_tokenizer)
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 2)
    assert tok.add_bos_token is False  # tokenizer.ggml.add_bos_token; BOS 1 is <|im_start|>
    assert tok.special_ids == frozenset(range(17))
    assert [tok.id_to_token(i) for i in range(3)] == SPECIALS
    assert all(
        tok.id_to_token(i) == hf_tokenizer.convert_ids_to_tokens(i) for i in range(0, 49152, 97)
    )
