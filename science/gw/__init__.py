"""Gravitational-wave population inference (in progress: population models and the likelihood)."""

from . import _models as models
from ._likelihood import (
    GWDataError as GWDataError,
    HierarchicalLikelihood as HierarchicalLikelihood,
)

__all__ = ["models", "HierarchicalLikelihood", "GWDataError"]
