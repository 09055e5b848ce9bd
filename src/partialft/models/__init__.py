"""timm models by name and their weights, in pipeline order:

- :mod:`~partialft.models.create`: ``create_model`` (timm names, ``hf-hub:`` names with cached
  hub weights, ``local-dir:`` folders such as exports, a local checkpoint), input sizes;
- :mod:`~partialft.models.loading`: reading weights safely (safetensors, ``weights_only``),
  checking they fit a model, file digests;
- :mod:`~partialft.models.backbone`: the bundled ``partialft_vit_tiny``, registered with timm.

May import :mod:`partialft.core` and the helpers; not training, data or anything above. The
names below are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from partialft.utils.lazy import lazy_exports

if TYPE_CHECKING:  # the same names as _API, seen by type checkers as real attributes
    from partialft.models.create import (
        create_model as create_model,
        default_input_size as default_input_size,
        input_size as input_size,
        local_dir as local_dir,
        local_pretrained as local_pretrained,
        local_weights as local_weights,
        shape_model as shape_model,
    )
    from partialft.models.loading import (
        StateDict as StateDict,
        check_digest as check_digest,
        check_fits as check_fits,
        file_digest as file_digest,
        head_keys as head_keys,
        load_into as load_into,
        load_state_dict_file as load_state_dict_file,
    )

_API = {
    "StateDict": "partialft.models.loading",
    "check_digest": "partialft.models.loading",
    "check_fits": "partialft.models.loading",
    "create_model": "partialft.models.create",
    "default_input_size": "partialft.models.create",
    "file_digest": "partialft.models.loading",
    "head_keys": "partialft.models.loading",
    "input_size": "partialft.models.create",
    "load_into": "partialft.models.loading",
    "load_state_dict_file": "partialft.models.loading",
    "local_dir": "partialft.models.create",
    "local_pretrained": "partialft.models.create",
    "local_weights": "partialft.models.create",
    "shape_model": "partialft.models.create",
}

__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports(__name__, _API)
