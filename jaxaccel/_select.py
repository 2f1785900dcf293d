"""Choosing which leaves a transform touches: composable selectors over described leaves."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any, Literal

__all__ = ["Leaf", "Selector", "path", "predicate", "linear_weights", "conv_weights", "matrices"]

Kind = Literal["linear", "conv", "embedding", "other"]


@dataclasses.dataclass(frozen=True, slots=True)
class Leaf:
    """A parameter leaf as selectors see it.

    Attributes:
        path: dotted key path, e.g. ``"layers.0.mlp.weight"`` (NNX: ``"layers.0.linear.kernel"``).
        value: the array.
        kind: ``"linear"``/``"conv"``/``"embedding"`` when the leaf is the weight of such a layer.
        contract_axes: the axes a matmul contracts over (for linear and conv weights).
        batch_ndim: leading stacked axes (layers built with ``vmap`` for scan-over-layers).
    """

    path: str
    value: Any
    kind: Kind = "other"
    contract_axes: tuple[int, ...] | None = None
    batch_ndim: int = 0


@dataclasses.dataclass(frozen=True)
class Selector:
    """A predicate over `Leaf`; combine with ``&``, ``|`` and ``~``."""

    fn: Callable[[Leaf], bool]
    name: str

    def __call__(self, leaf: Leaf) -> bool:
        return bool(self.fn(leaf))

    def __and__(self, other: Selector) -> Selector:
        return Selector(lambda x: self(x) and other(x), f"({self.name} & {other.name})")

    def __or__(self, other: Selector) -> Selector:
        return Selector(lambda x: self(x) or other(x), f"({self.name} | {other.name})")

    def __invert__(self) -> Selector:
        return Selector(lambda x: not self(x), f"~{self.name}")

    def __repr__(self) -> str:
        return f"Selector({self.name})"


def path(regex: str) -> Selector:
    """Leaves whose dotted path matches ``regex`` (``re.search``)."""
    pattern = re.compile(regex)
    return Selector(lambda x: pattern.search(x.path) is not None, f"path({regex!r})")


def predicate(fn: Callable[[Leaf], bool], name: str = "predicate") -> Selector:
    """Leaves for which ``fn(leaf)`` is true."""
    return Selector(fn, name)


def linear_weights() -> Selector:
    """Weights of linear layers (Equinox ``Linear``, NNX ``Linear``, or 2-D ``weight``/``kernel``
    leaves of a plain parameter tree)."""
    return Selector(lambda x: x.kind == "linear", "linear_weights()")


def conv_weights() -> Selector:
    """Kernels of convolution layers (Equinox ``Conv``, NNX ``Conv``)."""
    return Selector(lambda x: x.kind == "conv", "conv_weights()")


def matrices() -> Selector:
    """Every leaf with at least two axes, whatever its layer."""
    return Selector(lambda x: getattr(x.value, "ndim", 0) >= 2, "matrices()")
