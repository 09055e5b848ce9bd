"""Optional dependencies: what needs which ``pip install 'partialft[EXTRA]'``, said in one
sentence when it is missing (instead of an ImportError from deep inside a verb)."""

from __future__ import annotations

import importlib.util

from partialft.errors import PartialFTError

# import name -> the extra that installs it
EXTRAS = {"peft": "lora", "matplotlib": "plots", "imagecorruptions": "robustness",
          "huggingface_hub": "hub", "onnx": "onnx", "onnxruntime": "onnx", "onnxscript": "onnx",
          "transformers": "transformers", "optuna": "search"}


def require(module: str, what: str, cli: str | None = None) -> None:
    """Raise one sentence naming the extra unless ``module`` can be imported; ``what`` needs
    it (``cli``: the same worded for the command line, such as a flag)."""
    if importlib.util.find_spec(module) is None:
        extra = EXTRAS.get(module, module)
        why = (f"needs the {module} package, which is not installed; install it with pip install "
               f"'partialft[{extra}]'.")
        raise PartialFTError(f"{what} {why}", cli=f"{cli or what} {why}")
