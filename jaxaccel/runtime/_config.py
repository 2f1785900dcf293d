"""Typed job configs: frozen dataclasses checked key by key before any work starts.

A job's config is a frozen, keyword-only dataclass whose field annotations say what each key
accepts; `Range` (inside ``typing.Annotated``) adds bounds. `load_config` merges defaults, size
presets, a TOML file and command-line values, checking every key of every source and naming the
key, the source and what was expected, so a typo costs milliseconds, not a training run.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from .._errors import ConfigError

__all__ = ["Range", "load_config", "read_toml", "check_value", "describe_type", "config_keys"]

C = TypeVar("C")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Range:
    """Bounds for a number (or for the length of a list when ``length=True``).

    Example:
        >>> steps: Annotated[int, Range(ge=1)] = 1000
    """

    ge: int | float | None = None
    gt: int | float | None = None
    le: int | float | None = None
    lt: int | float | None = None
    length: bool = False

    def describe(self) -> str:
        parts = [
            f"{op} {v:g}"
            for op, v in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
            if v is not None
        ]
        return " and ".join(parts)

    def holds(self, x: int | float) -> bool:
        return not (
            (self.ge is not None and x < self.ge)
            or (self.gt is not None and x <= self.gt)
            or (self.le is not None and x > self.le)
            or (self.lt is not None and x >= self.lt)
        )


def _strip(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    if typing.get_origin(tp) is typing.Annotated:
        base, *meta = typing.get_args(tp)
        return base, tuple(meta)
    return tp, ()


def describe_type(tp: Any) -> str:
    """What a value of annotation ``tp`` must look like, in words."""
    base, meta = _strip(tp)
    ranges = [m for m in meta if isinstance(m, Range)]
    origin, args = typing.get_origin(base), typing.get_args(base)
    if base is int:
        text = "an integer"
    elif base is float:
        text = "a number"
    elif base is str:
        text = "a string"
    elif base is bool:
        text = "true or false"
    elif base is Path:
        text = "a path (string)"
    elif origin is Literal:
        text = "one of " + ", ".join(repr(a) for a in args)
    elif origin in (typing.Union, types.UnionType):
        text = " or ".join(describe_type(a) for a in args if a is not type(None))
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        text = f"a list of {_plural(describe_type(args[0]))}"
    elif origin is tuple:
        text = f"a list of {len(args)} values [" + ", ".join(describe_type(a) for a in args) + "]"
    elif origin in (dict, Mapping):
        text = f"a table of {_plural(describe_type(args[1]))}"
    elif dataclasses.is_dataclass(base):
        text = f"a table with keys {', '.join(config_keys(base))}"
    else:
        text = getattr(base, "__name__", str(base))
    for r in ranges:
        text += (" with length " if r.length else " ") + r.describe()
    return text


def _plural(text: str) -> str:
    if text.startswith("one of "):
        return "values, each " + text
    for art in ("an ", "a "):
        if text.startswith(art):
            word, _, rest = text[len(art) :].partition(" ")
            return f"{word}s {rest}".strip()
    return text


def config_keys(cls: type) -> list[str]:
    """The keys a config dataclass accepts."""
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _fail(key: str, tp: Any, value: Any, hint: str = "") -> ConfigError:
    shown = repr(value) if not isinstance(value, Mapping) else "a table"
    return ConfigError(f"expected {describe_type(tp)}, got {shown}{hint}", key=key)


def check_value(key: str, tp: Any, value: Any) -> Any:
    """Check ``value`` against annotation ``tp``; returns it converted (lists -> tuples, ...).

    Raises:
        ConfigError: naming ``key`` and what was expected.
    """
    base, meta = _strip(tp)
    out = _convert(key, base, value, tp)
    for r in (m for m in meta if isinstance(m, Range)):
        x = len(out) if r.length else out
        if x is not None and not r.holds(x):
            raise _fail(key, tp, value)
    return out


def _convert(key: str, base: Any, value: Any, tp: Any) -> Any:
    origin, args = typing.get_origin(base), typing.get_args(base)
    if base is Any:
        return value
    if base is bool:
        if not isinstance(value, bool):
            raise _fail(key, tp, value)
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            hint = " (a whole number is needed)" if isinstance(value, float) else ""
            raise _fail(key, tp, value, hint)
        return value
    if base is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(key, tp, value)
        if not math.isfinite(value):
            raise ConfigError(f"expected a finite number, got {value!r}", key=key)
        return float(value)
    if base is str:
        if not isinstance(value, str):
            raise _fail(key, tp, value)
        return value
    if base is Path:
        if not isinstance(value, str | Path) or not str(value):
            raise _fail(key, tp, value)
        return Path(value)
    if origin is Literal:
        if value not in args or type(value) is bool and all(type(a) is not bool for a in args):
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            raise _fail(key, tp, value, f" (did you mean {close[0]!r}?)" if close else "")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return check_value(key, a, value)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise _fail(key, tp, value)
    if origin is tuple:
        if isinstance(value, str):
            raise _fail(key, tp, value, f' (a list is needed: write ["{value}"])')
        if not isinstance(value, list | tuple):
            raise _fail(key, tp, value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(check_value(f"{key}[{i}]", args[0], v) for i, v in enumerate(value))
        if len(value) != len(args):
            raise _fail(key, tp, value, f" ({len(value)} values)")
        return tuple(
            check_value(f"{key}[{i}]", a, v)
            for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _fail(key, tp, value)
        return {str(k): check_value(f"{key}.{k}", args[1], v) for k, v in value.items()}
    if dataclasses.is_dataclass(base):
        if isinstance(value, base):
            return value
        if not isinstance(value, Mapping):
            raise _fail(key, tp, value)
        return _build(base, dict(value), prefix=f"{key}.")
    if isinstance(base, type):
        if not isinstance(value, base):
            raise _fail(key, tp, value)
        return value
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _unknown(prefix: str, name: str, cls: type) -> ConfigError:
    known = config_keys(cls)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ConfigError(f"unknown key; {hint}known keys: {', '.join(known)}", key=prefix + name)


def _check_source(cls: type, values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    hints = _hints(cls)
    known = set(config_keys(cls))
    out = {}
    for name, value in values.items():
        if name not in known:
            raise _unknown(prefix, name, cls)
        out[name] = check_value(prefix + name, hints[name], value)
    return out


def _build(cls: type[C], values: dict[str, Any], prefix: str = "") -> C:
    checked = _check_source(cls, values, prefix)
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init
        and f.name not in checked
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError("missing key (it has no default)", key=prefix + missing[0])
    try:
        return cls(**checked)
    except ConfigError as e:
        if e.key is not None and prefix and not e.key.startswith(prefix):
            raise ConfigError(e.detail, key=prefix + e.key, source=e.source) from None
        raise


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing, unreadable or malformed file raises `ConfigError`."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"file {path} does not exist", key="--config")
    if not path.is_file():
        raise ConfigError(f"{path} is not a file", key="--config")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}", key="--config") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}", key="--config") from None


def load_config(
    cls: type[C],
    sources: Sequence[tuple[str, Mapping[str, Any]]] = (),
) -> C:
    """Build config ``cls`` from layered sources, later ones overriding earlier ones.

    Every key of every source is checked against ``cls``'s annotations (unknown keys, types,
    ranges, a string where a list is expected) and the error names the source, so a bad TOML key
    says which file it is in. Cross-field checks belong in ``cls.__post_init__``, raising
    `ConfigError` with ``key=``; they are attributed to the last source that set that key.

    Args:
        cls: a frozen dataclass.
        sources: ``(name, values)`` pairs, e.g. ``[("size 'tiny'", preset), ("run.toml", toml),
            ("command line", flags)]``.

    Returns:
        The config.

    Raises:
        ConfigError: naming the key, its source and what was expected.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"cls: expected a dataclass type, got {cls!r}")
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, values in sources:
        if not isinstance(values, Mapping):
            raise ConfigError(f"expected a table of keys, got {values!r}", source=name)
        try:
            _check_source(cls, values)
        except ConfigError as e:
            raise e.with_source(name) from None
        for k, v in values.items():
            merged[k] = v
            origin[k] = name
    try:
        return _build(cls, merged)
    except ConfigError as e:
        top = (e.key or "").split(".")[0].split("[")[0]
        raise e.with_source(origin.get(top, "config")) from None
