"""A byte-level BPE tokenizer rebuilt from GGUF metadata with the `tokenizers` library.

A GGUF file carries no ``tokenizer.json``; llama.cpp stores the vocabulary, the merges, the token
types and the special ids as metadata (``tokenizer.ggml.*``). :func:`Tokenizer.from_gguf_metadata`
turns those into a :class:`tokenizers.Tokenizer` (BPE model, byte-level pre-tokenizer/decoder, the
control tokens as special tokens) and wraps it with the few methods a decoder needs.
"""

from __future__ import annotations

import datetime
import functools
import json
import operator
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jaxaccel

from ._errors import ChatTemplateError, InvalidTokenError, ModelFileError

__all__ = ["CHAT_ROLES", "Tokenizer", "bytes_to_unicode"]

# Roles a chat message may have (HF's chat format); anything else is a typo, rejected before the
# template sees it (many templates do not check, and render "wizard" as just another header).
CHAT_ROLES = ("system", "user", "assistant", "tool")

# llama.cpp token types (`llama_token_type`).
_TOKEN_TYPE_CONTROL = 3
_TOKEN_TYPE_USER_DEFINED = 4

# Split regexes of llama.cpp's byte-level pre-tokenizers (`tokenizer.ggml.pre`), for the ones that
# are not plain GPT-2. Each is applied before a ByteLevel step that then skips its own GPT-2 regex.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_REGEX_SPLITS = {
    "llama3": _LLAMA3_SPLIT,
    "llama-v3": _LLAMA3_SPLIT,
    "llama-bpe": _LLAMA3_SPLIT,
    "smaug-bpe": _LLAMA3_SPLIT,
    "dbrx": _LLAMA3_SPLIT,
    "falcon3": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
    "deepseek-r1-qwen": _QWEN2_SPLIT,
}
# Vocabularies that llama.cpp (and their tokenizer.json) look up whole before merging.
_IGNORE_MERGES_PRES = frozenset({"llama3", "llama-v3", "llama-bpe", "falcon3"})
# GPT-2's own regex (what `ByteLevel(use_regex=True)` applies).
_GPT2_PRES = frozenset({None, "default", "gpt2", "gpt-2"})
# GPT-2's regex after cutting every digit apart: the pre-tokenizer of SmolLM/SmolLM2
# (`Digits(individual_digits=True)` then `ByteLevel`), llama.cpp's "smollm".
_DIGITS_THEN_GPT2_PRES = frozenset({"smollm", "smollm2", "starcoder", "refact"})


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters.

    Byte-level BPE vocabularies spell every token with these characters (a space is ``"Ġ"``).

    Returns:
        A dict from each byte value (0..255) to its one-character spelling.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, codes, strict=True)}


def _pre_tokenizer(pre: str | None):
    from tokenizers import Regex, pre_tokenizers

    if pre in _GPT2_PRES:
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _DIGITS_THEN_GPT2_PRES:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    if pre in _REGEX_SPLITS:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_REGEX_SPLITS[pre]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    warnings.warn(
        f"unknown GGUF pre-tokenizer {pre!r}; splitting text with GPT-2's regex",
        RuntimeWarning,
        stacklevel=3,
    )
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _raise_exception(message: str):
    raise ChatTemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # HF's override of Jinja's HTML-escaping `tojson`, so tool-calling templates render the same.
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


@functools.cache
def _compile_template(source: str):
    # The environment HF transformers renders chat templates in: sandboxed, trim/lstrip blocks,
    # loop controls, `raise_exception`, `strftime_now` and a non-escaping `tojson`.
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)


class Tokenizer:
    """Byte-level BPE tokenizer (a wrapped :class:`tokenizers.Tokenizer`) with a chat template.

    Build one with :meth:`from_gguf_metadata`. Special tokens written in the text (such as
    ``<|im_start|>``) are always matched whole and encoded as their single id.

    Attributes:
        backend: the underlying :class:`tokenizers.Tokenizer`.
        vocab_size: number of token ids (the GGUF vocabulary, special tokens included).
        bos_id, eos_id, pad_id: special token ids, ``None`` where the file names none.
        add_bos_token: whether the model expects BOS in front of a plain prompt
            (``tokenizer.ggml.add_bos_token``; False for SmolLM2, whose chat template writes its own
            ``<|im_start|>``). :meth:`encode` only adds BOS when asked.
        special_ids: ids of the control (special) tokens.
        chat_template: the Jinja2 chat template source, or ``None``.
    """

    def __init__(
        self,
        backend,
        *,
        vocab_size: int,
        bos_id: int | None = None,
        eos_id: int | None = None,
        pad_id: int | None = None,
        special_ids: frozenset[int] = frozenset(),
        chat_template: str | None = None,
        add_bos_token: bool = False,
    ):
        """Wraps an already built `tokenizers.Tokenizer`.

        Args:
            backend: a :class:`tokenizers.Tokenizer`.
            vocab_size: number of token ids.
            bos_id: beginning-of-sequence id, or ``None``.
            eos_id: end-of-sequence id, or ``None``.
            pad_id: padding id, or ``None``.
            special_ids: ids of the special (control) tokens.
            chat_template: Jinja2 chat template source, or ``None``.
            add_bos_token: whether the model expects BOS in front of a plain prompt.
        """
        self.backend = backend
        self.vocab_size = int(vocab_size)
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.pad_id = pad_id
        self.special_ids = frozenset(special_ids)
        self.chat_template = chat_template
        self.add_bos_token = bool(add_bos_token)

    @classmethod
    def from_gguf_metadata(cls, metadata: Mapping[str, Any]) -> Tokenizer:
        """Builds the tokenizer a GGUF file describes.

        Args:
            metadata: GGUF key/value metadata as plain Python values; reads ``tokenizer.ggml.model``
                (must be ``"gpt2"``, i.e. byte-level BPE), ``tokenizer.ggml.pre``,
                ``tokenizer.ggml.tokens``, ``tokenizer.ggml.merges``, ``tokenizer.ggml.token_type``,
                ``tokenizer.ggml.{bos,eos,padding}_token_id``, ``tokenizer.ggml.add_bos_token``
                and ``tokenizer.chat_template``.

        Returns:
            The tokenizer.

        Raises:
            ModelFileError: the tokenizer is not byte-level BPE, or the vocabulary/merges are
                missing or malformed (a `ValueError`).
        """
        from tokenizers import AddedToken, Tokenizer as Backend, decoders, models

        kind = metadata.get("tokenizer.ggml.model")
        if kind != "gpt2":
            raise ModelFileError(
                f"unsupported GGUF tokenizer model {kind!r}; supported: 'gpt2' (byte-level BPE)"
            )
        tokens = metadata.get("tokenizer.ggml.tokens")
        merges = metadata.get("tokenizer.ggml.merges")
        if not tokens:
            raise ModelFileError("GGUF metadata has no tokenizer.ggml.tokens")
        if merges is None:
            raise ModelFileError("GGUF metadata has no tokenizer.ggml.merges")
        tokens = [str(t) for t in tokens]
        pre = metadata.get("tokenizer.ggml.pre")
        types = list(metadata.get("tokenizer.ggml.token_type") or [])
        if types and len(types) != len(tokens):
            raise ModelFileError(
                f"GGUF tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens"
            )

        # Every regular token of a byte-level vocabulary is spelled in the byte alphabet; respell
        # the odd one that is not (as HF does), so that the BPE model can reach it.
        spelling = bytes_to_unicode()
        alphabet = frozenset(spelling.values())
        vocab: dict[str, int] = {}
        added_types = (_TOKEN_TYPE_CONTROL, _TOKEN_TYPE_USER_DEFINED)
        for i, tok in enumerate(tokens):
            is_added = bool(types) and types[i] in added_types
            if not is_added and not set(tok) <= alphabet:
                tok = "".join(spelling[b] for b in tok.encode("utf-8"))
            vocab.setdefault(tok, i)
        pairs = []
        for m in merges:
            a, sep, b = str(m).partition(" ")
            if not sep:
                raise ModelFileError(f"malformed GGUF merge {m!r} (expected 'left right')")
            pairs.append((a, b))

        backend = Backend(
            models.BPE(
                vocab=vocab,
                merges=pairs,
                dropout=None,
                continuing_subword_prefix="",
                end_of_word_suffix="",
                fuse_unk=False,
                ignore_merges=pre in _IGNORE_MERGES_PRES,
            )
        )
        backend.pre_tokenizer = _pre_tokenizer(pre)
        backend.decoder = decoders.ByteLevel()

        control = [i for i, t in enumerate(types) if t == _TOKEN_TYPE_CONTROL]
        user = [i for i, t in enumerate(types) if t == _TOKEN_TYPE_USER_DEFINED]
        if control:
            backend.add_special_tokens(
                [AddedToken(tokens[i], special=True, normalized=False) for i in control]
            )
        if user:
            backend.add_tokens(
                [AddedToken(tokens[i], special=False, normalized=False) for i in user]
            )
        for i in control + user:
            got = backend.token_to_id(tokens[i])
            if got != i:
                raise ModelFileError(
                    f"GGUF token {tokens[i]!r} has id {i} but the tokenizer gave {got}"
                )

        def _id(key):
            v = metadata.get(f"tokenizer.ggml.{key}")
            return None if v is None else int(v)

        return cls(
            backend,
            vocab_size=len(tokens),
            bos_id=_id("bos_token_id"),
            eos_id=_id("eos_token_id"),
            pad_id=_id("padding_token_id"),
            special_ids=frozenset(control),
            chat_template=metadata.get("tokenizer.chat_template"),
            add_bos_token=bool(metadata.get("tokenizer.ggml.add_bos_token", False)),
        )

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Token ids of ``text``.

        Args:
            text: the text; special tokens written in it (``<|im_start|>``) become their id.
            add_bos: prepend the BOS id.

        Returns:
            The token ids.

        Raises:
            jaxaccel.InputError: ``text`` is not a string; ``add_bos`` but the tokenizer has no
                BOS token.
        """
        if not isinstance(text, str):
            raise jaxaccel.InputError(f"text: expected a string, got {type(text).__name__}")
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if add_bos:
            if self.bos_id is None:
                raise jaxaccel.InputError("add_bos: this tokenizer has no BOS token")
            ids = [self.bos_id, *ids]
        return ids

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        """Text of token ids.

        Args:
            ids: token ids.
            skip_special: drop special (control) tokens instead of writing them out.

        Returns:
            The decoded text (invalid UTF-8 byte sequences become U+FFFD).

        Raises:
            InvalidTokenError: an id outside ``[0, vocab_size)`` (an `IndexError`).
            jaxaccel.InputError: ``ids`` is not a sequence of integers.
        """
        if isinstance(ids, str | bytes):
            raise jaxaccel.InputError(f"ids: expected token ids, got a {type(ids).__name__}")
        try:
            ids = [operator.index(i) for i in ids]
        except TypeError:
            raise jaxaccel.InputError("ids: expected a sequence of integer token ids") from None
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise InvalidTokenError(
                f"ids: token ids must lie in [0, {self.vocab_size}), got {bad[:5]}"
            )
        return self.backend.decode(ids, skip_special_tokens=skip_special)

    def id_to_token(self, i: int) -> str:
        """The vocabulary entry (byte-level spelling) of one id.

        Args:
            i: token id.

        Returns:
            The token string.

        Raises:
            InvalidTokenError: ``i`` is not a valid id (an `IndexError`).
        """
        if not 0 <= int(i) < self.vocab_size:
            raise InvalidTokenError(f"i: token id {i} out of range [0, {self.vocab_size})")
        tok = self.backend.id_to_token(int(i))
        if tok is None:
            raise InvalidTokenError(f"i: token id {i} out of range [0, {self.vocab_size})")
        return tok

    def token_to_id(self, token: str) -> int | None:
        """The id of one vocabulary entry, or ``None``.

        Args:
            token: token string, in the vocabulary's (byte-level) spelling.

        Returns:
            The id or ``None``.
        """
        return self.backend.token_to_id(token)

    def apply_chat_template(
        self,
        messages: list[dict[str, str]],
        *,
        add_generation_prompt: bool = True,
        **kwargs: Any,
    ) -> str:
        """Renders a conversation with the model's Jinja2 chat template (sandboxed).

        Args:
            messages: ``[{"role": ..., "content": ...}, ...]``; roles are one of `CHAT_ROLES`
                (system, user, assistant, tool), contents strings.
            add_generation_prompt: end with the header of an assistant turn.
            **kwargs: extra variables for the template.

        Returns:
            The prompt text (encode it with :meth:`encode`; special tokens are matched whole).

        Raises:
            ChatTemplateError: a message is not a ``{"role", "content"}`` mapping, has an unknown
                role (naming it and the allowed ones) or a non-string content; or the template
                rejected the conversation (its ``raise_exception``). A `jaxaccel.InputError` and a
                ``jinja2.TemplateError``.
            jaxaccel.InputError: the tokenizer has no chat template.
        """
        if self.chat_template is None:
            raise jaxaccel.InputError("this tokenizer has no chat template")
        _check_messages(messages)

        def _tok(i):
            return None if i is None else self.backend.id_to_token(i)

        variables = {
            "bos_token": _tok(self.bos_id),
            "eos_token": _tok(self.eos_id),
            "pad_token": _tok(self.pad_id),
            **kwargs,
            "messages": messages,
            "add_generation_prompt": add_generation_prompt,
        }
        return _compile_template(self.chat_template).render(**variables)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, bos_id={self.bos_id}, "
            f"eos_id={self.eos_id}, pad_id={self.pad_id}, special={len(self.special_ids)})"
        )


def _check_messages(messages: Any) -> None:
    if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Sequence):
        raise ChatTemplateError(
            f"messages: expected a list of {{'role': ..., 'content': ...}} dicts, got "
            f"{type(messages).__name__}"
        )
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m:
            raise ChatTemplateError(
                f"messages[{i}]: expected a {{'role': ..., 'content': ...}} dict, got {m!r:.80}"
            )
        if m["role"] not in CHAT_ROLES:
            raise ChatTemplateError(
                f"messages[{i}]: unknown role {m['role']!r}; allowed roles: {', '.join(CHAT_ROLES)}"
            )
        content = m.get("content")
        if not isinstance(content, str) and not (content is None and m.get("tool_calls")):
            raise ChatTemplateError(
                f"messages[{i}]['content']: expected a string, got {type(content).__name__}"
            )
