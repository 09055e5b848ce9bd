"""Optional dependencies: what needs which ``pip install 'partialft[EXTRA]'``, said in one
sentence when it is missing (instead of an ImportError from deep inside a verb)."""

from __future__ import annotations

import importlib.util

from partialft.errors import PartialFTError

# import name -> the extra that installs it
EXTRAS = {"peft": "lora", "matplotlib": "plots", "imagecorruptions": "robustness",
          "huggingface_hub": "hub", "onnx": "onnx", "onnxruntime": "onnx", "onnxscript": "onnx",
          "transformers": "transformers", "optuna": "search"}


def require(module: str, what: str) -> None:
    """Raise one sentence naming the extra unless ``module`` can be imported."""
    if importlib.util.find_spec(module) is None:
        extra = EXTRAS.get(module, module)
        raise PartialFTError(f"{what} needs the {module} package, which is not installed; "
                             f"install it with pip install 'partialft[{extra}]'.")
