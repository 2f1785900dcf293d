"""Errors of transformers_jax: all derive from `jaxaccel.InputError` (so from `jaxaccel.Error`).

Each also keeps the builtin base that older callers catch (`FileNotFoundError`, `KeyError`,
`IndexError`, jinja2's ``TemplateError``).
"""

from __future__ import annotations

import jaxaccel

__all__ = [
    "ChatTemplateError",
    "InvalidTokenError",
    "MissingTensorError",
    "ModelFileError",
    "ModelFileNotFoundError",
]


class ModelFileError(jaxaccel.InputError):
    """A model file (GGUF, safetensors) is not what it should be: not that format, truncated,
    an unsupported architecture or tensor type, or missing/mis-shaped tensors."""


class ModelFileNotFoundError(ModelFileError, FileNotFoundError):
    """A model file does not exist (or the package that ships it is not installed)."""

    __str__ = Exception.__str__


class MissingTensorError(jaxaccel.InputError, KeyError):
    """A state dict lacks a tensor the model needs (names it)."""

    __str__ = Exception.__str__  # KeyError would quote the message


class InvalidTokenError(jaxaccel.InputError, IndexError):
    """A token id outside the vocabulary."""


def _template_error_base() -> type:
    try:
        from jinja2.exceptions import TemplateError
    except ImportError:  # jinja2 is only needed to render chat templates
        return Exception
    return TemplateError


class ChatTemplateError(jaxaccel.InputError, _template_error_base()):
    """A chat template rejected the conversation (its ``raise_exception``), or a message is malformed."""

    __str__ = Exception.__str__
