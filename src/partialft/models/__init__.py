"""timm models by name and their weights, in pipeline order:

- :mod:`~partialft.models.create`: ``create_model`` (timm names, cached hub weights, a local
  checkpoint), input sizes;
- :mod:`~partialft.models.loading`: reading weights safely (safetensors, ``weights_only``),
  checking they fit a model, file digests;
- :mod:`~partialft.models.backbone`: the bundled ``partialft_vit_tiny``, registered with timm.

May import :mod:`partialft.core` and the helpers; not training, data or anything above. The
names below are imported on first use.
"""

from __future__ import annotations

from partialft.utils.lazy import lazy_exports

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
    "local_pretrained": "partialft.models.create",
    "shape_model": "partialft.models.create",
}

__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports(__name__, _API)
