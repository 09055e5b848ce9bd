"""A ``transformers.TrainerCallback`` whose checkpoints hold only the trained tensors.

``Trainer`` saves the whole model into every ``checkpoint-N`` folder. With
``SaveTrainedCallback`` in ``callbacks=[...]``, each checkpoint gets ``delta.safetensors``
(:func:`partialft.save_trained`: the trained tensors plus what a reload needs) and the full
weights file Trainer wrote there (``model.safetensors`` or ``pytorch_model.bin``) is removed,
so a checkpoint of ViT-B/16 with LoRA is about 5 MB instead of 340 MB. Read one back with
``partialft.load_trained(base_model, "out/checkpoint-N")``. ``keep_full=True`` keeps the full
file too, which ``trainer.train(resume_from_checkpoint=...)`` needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from partialft.utils.extras import require

require("transformers", "partialft.integrations.SaveTrainedCallback")

from transformers import TrainerCallback  # noqa: E402  (after the one-sentence check)

# the files Trainer.save_model writes the whole model to (safetensors, or torch's format)
FULL_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


class SaveTrainedCallback(TrainerCallback):
    """Write only the trained tensors into each Trainer checkpoint.

    Args:
        keep_full: also keep the full weights file Trainer wrote (needed to resume a Trainer
            from the checkpoint); default False: the checkpoint holds the trained tensors only.

    The model Trainer trains must be (or hold) a model made by
    :func:`partialft.get_partial_model`.
    """

    def __init__(self, keep_full: bool = False) -> None:
        self.keep_full = keep_full

    def on_save(self, args: Any, state: Any, control: Any, model: Any = None,
                **kwargs: Any) -> Any:
        """After Trainer saved ``checkpoint-N``: add the delta, drop the full weights."""
        from partialft.trained import save_trained

        if not state.is_world_process_zero or model is None:
            return control
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        save_trained(model, folder, overwrite=True)
        if not self.keep_full:
            for name in FULL_WEIGHTS:
                (folder / name).unlink(missing_ok=True)
        return control
