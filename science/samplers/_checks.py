"""Checks of sampler settings at construction: each bad value is named (``FlowVI.steps``).

A sampler's settings are checked when it is built, not when a run reaches them: a zero step
count, a string, or a NaN learning rate fails in microseconds with the field's name, instead of
minutes later inside a compiled loop (where a NaN learning rate used to surface as a "non-finite
log-density").
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from jaxaccel import InputError

__all__ = ["positive_int", "non_negative_int", "number", "flag", "flow_config"]


def _integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(owner: str, name: str, value: Any) -> None:
    """``value`` must be an integer >= 1 (raises `jaxaccel.InputError` naming ``owner.name``)."""
    if not _integer(value) or value < 1:
        raise InputError(f"{owner}.{name}: expected a positive integer, got {value!r}")


def non_negative_int(owner: str, name: str, value: Any) -> None:
    """``value`` must be an integer >= 0."""
    if not _integer(value) or value < 0:
        raise InputError(f"{owner}.{name}: expected an integer >= 0, got {value!r}")


def number(
    owner: str,
    name: str,
    value: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> None:
    """``value`` must be a finite real number within the given bounds."""
    bounds = [
        f"{op} {b:g}" for op, b in ((">", gt), (">=", ge), ("<", lt), ("<=", le)) if b is not None
    ]
    want = "a finite number" + (" " + " and ".join(bounds) if bounds else "")
    try:
        x = math.nan if isinstance(value, str | bytes | bool) else float(value)
    except (TypeError, ValueError):
        x = math.nan
    ok = (
        math.isfinite(x)
        and (gt is None or x > gt)
        and (ge is None or x >= ge)
        and (lt is None or x < lt)
        and (le is None or x <= le)
    )
    if not ok:
        raise InputError(f"{owner}.{name}: expected {want}, got {value!r}")


def flag(owner: str, name: str, value: Any) -> None:
    """``value`` must be ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise InputError(f"{owner}.{name}: expected True or False, got {value!r}")


def flow_config(owner: str, value: Any) -> None:
    """``value`` must be a `FlowConfig` (which checks its own fields)."""
    from ._flows import FlowConfig

    if not isinstance(value, FlowConfig):
        raise InputError(
            f"{owner}.flow: expected a science.samplers.FlowConfig, got {type(value).__name__}"
        )
