"""``partialft export --format onnx``: the run's model as one ``model.onnx`` (torch's own
exporter, ``torch.onnx.export(dynamo=True)``) with a dynamic batch axis, checked in ONNX Runtime.

The folder holds ``model.onnx`` (input ``pixel_values``: N x C x H x W float32, normalised as
``config.json`` says; output ``logits``: N x classes), ``config.json`` (input and output names,
preprocessing, class names) and ``README.md`` (model card). SSF and LoRA are merged into the
weights first; adapter and VPT-Deep modules are exported as they are (ONNX needs no timm
architecture). Needs the ``onnx`` extra: ``pip install 'partialft[onnx]'``.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from partialft.analysis.export_cards import onnx_card
from partialft.errors import PartialFTError
from partialft.utils.extras import require
from partialft.utils.io import atomic_write, atomic_write_json, atomic_write_text

INPUT, OUTPUT = "pixel_values", "logits"
PACKAGES = ("onnx", "onnxruntime", "onnxscript")  # torch's dynamo exporter needs onnxscript


def check_onnx() -> None:
    """One sentence naming the extra when a package of ``--format onnx`` is missing."""
    for package in PACKAGES:
        require(package, "fmt='onnx'", cli="--format onnx")


def write_onnx(model: nn.Module, out: Path, ctx: dict[str, Any]
               ) -> tuple[dict[str, str], str, float]:
    """Write and check ``out/model.onnx`` (+ config.json, README.md); returns (what each file
    holds, how to load it, the largest |logit difference| from ``model`` over the checks)."""
    model = model.eval()
    x = ctx["expected"]["x"]  # batch 2: the reference partialft's model was run on
    atomic_write(out / "model.onnx", lambda tmp: _export(model, x, tmp))
    diff = max(_max_diff(out / "model.onnx", x, ctx["expected"]["y"]),
               _max_diff(out / "model.onnx", x[:1], ctx["expected"]["y"][:1]))  # another batch
    labels = ctx["classes"] if ctx["classes"] and len(ctx["classes"]) == _classes(model) else None
    atomic_write_json(out / "config.json", _config(model, ctx, labels))
    load = f'onnxruntime.InferenceSession("{out / "model.onnx"}")'
    atomic_write_text(out / "README.md", onnx_card(ctx, load))
    shape = "x".join(str(s) for s in ctx["data"]["input_size"])
    files = {"model.onnx": f"{sum(p.numel() for p in model.parameters()):,} parameters, input "
             f"{INPUT} N x {shape} (dynamic batch), output {OUTPUT}",
             "config.json": "input/output names, preprocessing" + (", label names" if labels
                                                                  else ""),
             "README.md": "model card"}
    return files, load, diff


def _export(model: nn.Module, x: torch.Tensor, path: Path) -> None:
    """torch.onnx.export with the batch axis dynamic; its chatter kept for an error only."""
    chatter = io.StringIO()
    batch = torch.export.Dim("batch", min=1)
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            torch.onnx.export(model, (x,), str(path), input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_shapes=({0: batch},), dynamo=True, external_data=False)
    except Exception as exc:  # the exporter raises many types; say which step failed
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        what = f"torch's ONNX exporter could not export this model ({line})"
        raise PartialFTError(f"{what}; export it with fmt='timm' or 'peft' instead.",
                             cli=f"{what}; export it as --format timm or peft instead.") from None


def _max_diff(path: Path, x: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest |difference| of ONNX Runtime's logits on ``x`` from ``expected``."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run([OUTPUT], {INPUT: x.numpy()})
    return float((torch.from_numpy(got) - expected).abs().max())


def _classes(model: nn.Module) -> int | None:
    return getattr(model, "num_classes", None)


def _config(model: nn.Module, ctx: dict[str, Any], labels: list[str] | None) -> dict[str, Any]:
    """What a caller of model.onnx needs: names, input layout and preprocessing, classes."""
    data = ctx["data"]
    return {"format": "onnx", "input_name": INPUT, "output_name": OUTPUT,
            "input_size": list(data["input_size"]), "num_classes": _classes(model),
            "label_names": labels,
            "preprocessing": {k: (list(v) if isinstance(v, tuple) else v)
                              for k, v in data.items() if k != "input_size"},
            "method": ctx["method"], "base_model": str(ctx["base"].get("model"))}

