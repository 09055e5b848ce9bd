"""partialft: partial fine-tuning of pretrained vision models.

The pipeline is a chain of plain functions (see DESIGN in the README):
``find_layers`` -> ``compute_angles`` -> ``select_layers`` -> ``apply_selection`` -> train.
"""

import partialft.backbone  # noqa: F401  (registers the bundled partialft_vit_tiny with timm)
from partialft.angles import compute_angles, kendall_tau
from partialft.errors import PartialFTError
from partialft.freeze import FreezeSummary, apply_selection
from partialft.layers import Layer, LayerMap, find_layers, load_layer_spec
from partialft.select import METHODS, Selection, select_layers

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "FreezeSummary",
    "Layer",
    "LayerMap",
    "PartialFTError",
    "Selection",
    "apply_selection",
    "compute_angles",
    "find_layers",
    "kendall_tau",
    "load_layer_spec",
    "select_layers",
]
