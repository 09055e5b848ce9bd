"""partialft: partial fine-tuning of pretrained vision models.

The pipeline is a chain of plain functions:
``find_layers`` -> ``compute_angles`` -> ``select_layers`` -> ``apply_selection`` (or all of it
in one call, ``prepare``) -> train (:mod:`partialft.training`).

Packages, each importing only those below it (an import-linter contract checks it)::

    cli          the ``partialft`` command: one module per verb
    workflows    fapft pipeline, offline demo
    selectors | analysis | bench
    training     config, run dirs, the loop, pretraining
    models | data | methods
    baselines    Adapter, VPT-Deep, SSF, LoRA
    core         layers, layer specs, angles, selection, freezing

The names below are imported on first use, so ``import partialft`` (and ``partialft --help``)
does not pay for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from partialft.utils.lazy import lazy_exports

if TYPE_CHECKING:  # the same names as _API, seen by type checkers as real attributes
    from partialft.core.angles import (
        compute_angles as compute_angles,
        kendall_tau as kendall_tau,
    )
    from partialft.core.freeze import (
        FreezeSummary as FreezeSummary,
        apply_selection as apply_selection,
    )
    from partialft.core.layermap import (
        Layer as Layer,
        LayerMap as LayerMap,
    )
    from partialft.core.layers import (
        find_layers as find_layers,
    )
    from partialft.core.layerspec import (
        load_layer_spec as load_layer_spec,
    )
    from partialft.core.select import (
        METHODS as METHODS,
        Selection as Selection,
        select_layers as select_layers,
    )
    from partialft.errors import (
        PartialFTError as PartialFTError,
    )
    from partialft.methods import (
        Prepared as Prepared,
        all_methods as all_methods,
        get_partial_model as get_partial_model,
        method_options as method_options,
        prepare as prepare,
        print_trainable_parameters as print_trainable_parameters,
    )
    from partialft.trained import (
        load_trained as load_trained,
        save_trained as save_trained,
    )

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    "PartialFTError": "partialft.errors",
    "Layer": "partialft.core.layermap",
    "LayerMap": "partialft.core.layermap",
    "find_layers": "partialft.core.layers",
    "load_layer_spec": "partialft.core.layerspec",
    "compute_angles": "partialft.core.angles",
    "kendall_tau": "partialft.core.angles",
    "METHODS": "partialft.core.select",
    "Selection": "partialft.core.select",
    "select_layers": "partialft.core.select",
    "FreezeSummary": "partialft.core.freeze",
    "apply_selection": "partialft.core.freeze",
    "Prepared": "partialft.methods",
    "prepare": "partialft.methods",
    "all_methods": "partialft.methods",
    "method_options": "partialft.methods",
    "get_partial_model": "partialft.methods",
    "print_trainable_parameters": "partialft.methods",
    "save_trained": "partialft.trained",
    "load_trained": "partialft.trained",
}

__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports(__name__, _API)
