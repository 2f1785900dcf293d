"""Gravitational-wave population inference: population models, the hierarchical likelihood with
selection effects, mock catalogues with known truths, and the ``jaxaccel gw-population`` job."""

from . import _models as models
from ._likelihood import (
    GWDataError as GWDataError,
    HierarchicalLikelihood as HierarchicalLikelihood,
)
from ._mock import (
    Catalogue as Catalogue,
    default_catalogue as default_catalogue,
    make_catalogue as make_catalogue,
    make_mixture_catalogue as make_mixture_catalogue,
)

__all__ = [
    "models",
    "HierarchicalLikelihood",
    "GWDataError",
    "Catalogue",
    "default_catalogue",
    "make_catalogue",
    "make_mixture_catalogue",
]
