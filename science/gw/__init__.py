"""Gravitational-wave population inference (in progress: population models)."""

from . import _models as models

__all__ = ["models"]
