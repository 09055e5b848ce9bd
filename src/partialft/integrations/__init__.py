"""Hooks into other training frameworks, each an optional extra imported only when used.

``SaveTrainedCallback`` (``pip install 'partialft[transformers]'``): makes Hugging Face
``Trainer`` checkpoints hold only the trained tensors (:func:`partialft.save_trained`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from partialft.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from partialft.integrations.hf_trainer import SaveTrainedCallback as SaveTrainedCallback

_API = {"SaveTrainedCallback": "partialft.integrations.hf_trainer"}

__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports(__name__, _API)
