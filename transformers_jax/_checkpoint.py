"""Save and load decoder weights as safetensors, with the :class:`DecoderConfig` in the metadata."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import ml_dtypes  # noqa: F401  (registers numpy's "bfloat16" dtype, which safetensors' numpy loader asks for)
import numpy as np

import jaxaccel

from ._config import DecoderConfig
from ._errors import ModelFileError, ModelFileNotFoundError

__all__ = ["load_safetensors", "save_safetensors"]

_CONFIG_KEY = "transformers_jax.config"
_FORMAT_KEY = "format"
_FORMAT = "transformers_jax"


def save_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, Any],
    config: DecoderConfig,
) -> None:
    """Writes tensors and their config to one ``.safetensors`` file.

    Args:
        path: file to write (parent directories are created).
        tensors: ``{name: array}``, numpy or JAX arrays (copied to host); any dtype safetensors
            stores (float32/16, bfloat16, ints, bool).
        config: the architecture, stored as JSON in the file's metadata.

    Raises:
        jaxaccel.InputError: ``config`` is not a :class:`DecoderConfig` or a value is not an
            array (a `TypeError`).
    """
    from safetensors.numpy import save_file

    if not isinstance(config, DecoderConfig):
        raise jaxaccel.InputError(f"config: expected a DecoderConfig, got {type(config).__name__}")
    arrays: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        if not hasattr(value, "shape") or not hasattr(value, "dtype"):
            raise jaxaccel.InputError(
                f"tensors[{name!r}]: is a {type(value).__name__}, not an array"
            )
        arrays[str(name)] = np.ascontiguousarray(np.asarray(value))
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        _FORMAT_KEY: _FORMAT,
        _CONFIG_KEY: json.dumps(dataclasses.asdict(config), sort_keys=True),
    }
    save_file(arrays, str(path), metadata=metadata)


def load_safetensors(path: str | os.PathLike) -> tuple[DecoderConfig, dict[str, np.ndarray]]:
    """Reads a file written by :func:`save_safetensors`.

    Args:
        path: the ``.safetensors`` file.

    Returns:
        ``(config, {name: numpy array})``, arrays in their stored dtype.

    Raises:
        ModelFileNotFoundError: no such file (a `FileNotFoundError`).
        ModelFileError: not a safetensors file, or it carries no (or an invalid) config metadata
            (a `ValueError`).
    """
    from safetensors import safe_open

    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelFileNotFoundError(f"safetensors file not found: {path}")
    try:
        with safe_open(str(path), framework="np") as f:
            metadata = f.metadata() or {}
            raw = metadata.get(_CONFIG_KEY)
            if raw is None:
                raise ModelFileError(
                    f"{path} has no {_CONFIG_KEY!r} metadata (not written by save_safetensors?); "
                    f"metadata keys: {sorted(metadata)}"
                )
            config = _config_from_json(raw, path)
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except ModelFileError:
        raise
    except Exception as e:  # safetensors raises its own SafetensorError on a corrupt header
        raise ModelFileError(
            f"not a valid safetensors file: {path} ({type(e).__name__}: {e})"
        ) from e
    return config, tensors


def _config_from_json(raw: str, path: pathlib.Path) -> DecoderConfig:
    try:
        fields = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{path}: config metadata is not valid JSON ({e})") from e
    if not isinstance(fields, dict):
        raise ModelFileError(f"{path}: config metadata is not a JSON object")
    known = {f.name for f in dataclasses.fields(DecoderConfig)}
    unknown = sorted(fields.keys() - known)
    if unknown:
        raise ModelFileError(f"{path}: config metadata has unknown fields {unknown}")
    try:
        return DecoderConfig(**fields)
    except TypeError as e:
        raise ModelFileError(f"{path}: invalid config metadata ({e})") from e
