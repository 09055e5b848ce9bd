"""Export a finished run for the ecosystem: a timm folder, a peft LoRA adapter or an ONNX file
(the Hub upload is :mod:`partialft.analysis.hub`; model cards :mod:`.export_cards`).

Formats (``partialft export RUN --out DIR --format F``, see docs/cli.md):

- ``timm``: ``config.json`` + ``model.safetensors`` + ``README.md``, laid out by timm's own
  ``save_for_hf``, so ``timm.create_model("local-dir:DIR", pretrained=True)`` (or
  ``"hf-hub:REPO"`` once pushed) builds the fine-tuned model with the run's preprocessing and
  class names. SSF and LoRA are folded into the weights (plain timm has no place for them);
  adapter and VPT-Deep add modules timm's architectures lack: only ``onnx`` exports them.
- ``merged``: the same folder, named for what it does to SSF and LoRA runs (for a layer method
  the two formats write the same files).
- ``peft``: for LoRA runs, ``adapter_config.json`` + ``adapter_model.safetensors`` that
  ``peft.PeftModel.from_pretrained(timm_base_model, DIR)`` loads (the head as
  ``modules_to_save``), written by peft's own ``save_pretrained``.
- ``onnx``: ``model.onnx`` with a dynamic batch axis, for every method (see
  :mod:`.export_onnx`; the ``onnx`` extra).

Every export is loaded back (timm, peft or ONNX Runtime) and its outputs compared with
partialft's own model before the verb reports success.
"""

from __future__ import annotations

import copy
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from partialft.analysis.export_cards import MERGEABLE, base_name, native, peft_card, timm_card
from partialft.errors import PartialFTError, article
from partialft.models import input_size
from partialft.models.loading import first_line
from partialft.training.checkpoints import DELTA
from partialft.training.outputs import MARKER, is_lock, remove_marked
from partialft.training.reruns import check_output, finish, open_output
from partialft.training.rundir import RunDir
from partialft.training.runs import (
    base_model,
    delta_info,
    load_run_model,
    read_config,
    read_summary,
    run_classes,
)
from partialft.utils.io import atomic_write_text, file_mode, record_file

FORMATS = ("timm", "peft", "merged", "onnx")
KIND = "export"
NEW_ARCHITECTURE = ("adapter", "vpt-deep")  # modules no timm architecture has, not mergeable
# largest |difference| of logits between the export, loaded back, and partialft's model
TOLERANCE = 1e-4


@dataclass
class Export:
    """What an export wrote: the folder, its format and files, how to load it."""

    out: Path
    format: str
    method: str
    files: dict[str, str]
    load: str
    max_diff: float
    labels: int | None
    notes: list[str] = field(default_factory=list)


def check_format(fmt: str, method: str) -> None:
    """Refuse a format the run's method cannot be written in, naming those that work."""
    if fmt not in FORMATS:
        raise PartialFTError(f"format {fmt!r} is not valid; use timm, peft, merged or onnx.")
    if fmt == "onnx":
        from partialft.analysis.export_onnx import check_onnx

        check_onnx()  # the extra, before any work
        return
    run = f"{article(method)} {method} run"
    if method in NEW_ARCHITECTURE:
        what = (f"{run} adds modules that no timm architecture has and that cannot be merged into "
                "its weights, so it cannot be exported")
        raise _format_error(f"{what} with fmt={fmt!r} (export it with fmt='onnx', or read it "
                            "with partialft)",
                            f"{what} as --format {fmt} (export it with --format onnx, or read it "
                            "with partialft)")
    if fmt == "peft" and method != "lora":
        raise _format_error(f"fmt='peft' writes a peft LoRA adapter but this is {run}",
                            f"--format peft writes a peft LoRA adapter but this is {run}")


def _format_error(library: str, cli: str) -> PartialFTError:
    """A format refusal naming the formats that work: the keyword is ``fmt``, the flag
    ``--format``, so the two wordings are written out (errors.option_error needs one name)."""
    works = ("fmt='timm' and 'merged' work for layer methods, ssf and lora runs, fmt='peft' for "
             "lora runs, fmt='onnx' for every run")
    works_cli = ("--format timm and merged work for layer methods, ssf and lora runs, --format "
                 "peft for lora runs, --format onnx for every run")
    return PartialFTError(f"{library}; {works}.", cli=f"{cli}; {works_cli}.")


def run_method(run_dir: str | Path) -> str:
    """The method whose modules a run's delta holds (a soup's is its ingredients')."""
    meta = delta_info(run_dir)
    return str(meta.get("selection", {}).get("method") or read_summary(run_dir)["method"])


def export_run(run_dir: str | Path, out: str | Path, fmt: str = "timm", *,
               overwrite: bool = False, allow_base_mismatch: bool = False,
               repo: str | None = None, complete: bool = True) -> Export:
    """Write run ``run_dir`` to folder ``out`` in format ``fmt``, checked by loading it back.

    ``repo`` (a Hub repo id) only changes the model card's loading example. ``complete=False``
    leaves the folder open to a rerun until :func:`complete_export` (after an upload).
    """
    method = run_method(run_dir)
    check_format(fmt, method)
    base = delta_info(run_dir)["base"]
    inputs = [run_dir, base.get("checkpoint")]
    # an export killed half-way is redone by the same command (no --overwrite): the folder is
    # declared complete only once it was loaded back and checked (and pushed, with a repo)
    settings = {"run": str(Path(run_dir).resolve()), "format": fmt, "repo": repo,
                "allow_base_mismatch": allow_base_mismatch}
    claim = dict(overwrite=overwrite, inputs=inputs)
    check_output(out, KIND, settings, **claim)  # before any work
    model, summary = load_run_model(run_dir, allow_base_mismatch=allow_base_mismatch)
    context = _context(Path(run_dir), model, summary, method, repo)
    context["allow_base_mismatch"] = allow_base_mismatch  # the base is rebuilt for peft
    with open_output(out, KIND, settings, **claim) as folder:
        try:
            write = {"peft": _write_peft, "onnx": _write_onnx}.get(fmt, _write_timm)
            done = write(model, folder.path, fmt, context)
            for name in done.files:  # written by timm/peft: recorded by their bytes
                record_file(folder.path / name)
        except BaseException:
            remove_marked(folder.path)  # no half-written export is left behind
            raise
        if complete:
            finish(folder)
        return done


def complete_export(out: str | Path) -> None:
    """Declare an export made with ``complete=False`` complete (after its upload)."""
    with RunDir(out, kind=KIND, resume=True) as folder:
        finish(folder)


# --- what the model card and config need to know about the run ------------------------------

def _context(run_dir: Path, model: nn.Module, summary: dict[str, Any], method: str,
             repo: str | None) -> dict[str, Any]:
    """The run's facts an export records: base, selection, preprocessing, classes."""
    from partialft.data import PREPROCESS, resolve_preprocess

    meta = delta_info(run_dir)
    cfg = read_config(run_dir)
    pcfg = getattr(model, "pretrained_cfg", None) or {}
    pre = resolve_preprocess(model, **{k: cfg.get(k) for k in PREPROCESS})
    chans = input_size(model)[0]
    size = int(cfg.get("img_size") or input_size(model)[-1])
    for key in ("mean", "std"):
        pre[key] = tuple(pre[key] * chans if len(pre[key]) == 1 else pre[key])
    return {"run": run_dir, "base": meta["base"], "selection": meta.get("selection", {}),
            "summary": summary, "method": method, "repo": repo, "classes": _classes(run_dir),
            "license": pcfg.get("license"), "hub_id": _hub_id(meta["base"], pcfg),
            "data": {"input_size": (chans, size, size), **pre},
            "expected": _reference(model, (chans, size, size))}


def _hub_id(base: dict[str, Any], pretrained_cfg: dict[str, Any]) -> str | None:
    """The Hub repo of the base weights (``timm/<name>.<tag>``) when they came from the Hub."""
    if base.get("checkpoint") or not base.get("pretrained"):
        return None
    return pretrained_cfg.get("hf_hub_id") or None


def _classes(run_dir: Path) -> list[str] | None:
    """The run's class names, or None when its dataset is not on this machine."""
    try:
        return run_classes(run_dir)
    except (PartialFTError, OSError):
        return None


def _reference(model: nn.Module, shape: tuple[int, int, int]) -> dict[str, torch.Tensor]:
    """A fixed random batch and partialft's outputs on it (to check the export against)."""
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return {"x": x, "y": model.eval()(x)}


def _compare(exported: nn.Module, ctx: dict[str, Any], what: str) -> float:
    """Largest |difference| of the loaded export's outputs from partialft's; refuse a miss."""
    with torch.no_grad():
        got = exported.eval()(ctx["expected"]["x"])
    return _check_diff(float((got - ctx["expected"]["y"]).abs().max()), what)


def _check_diff(diff: float, what: str) -> float:
    """Refuse an export whose outputs are more than :data:`TOLERANCE` from partialft's."""
    if not diff <= TOLERANCE:
        raise PartialFTError(f"the {what} export, loaded back, gives outputs up to {diff:.3g} "
                             f"away from the run's model (allowed {TOLERANCE:g}); this is a "
                             "partialft bug, please report it with the run's config.yaml.")
    return diff


# --- timm ------------------------------------------------------------------------------------

def _merge(model: nn.Module, method: str) -> nn.Module:
    """Fold SSF or LoRA into the weights they modulate (no-op for layer methods)."""
    if method == "ssf":
        from partialft.baselines.ssf import merge_ssf

        return merge_ssf(model)
    if method == "lora":
        from partialft.baselines.lora import merge_lora

        return merge_lora(model)
    return model


def _write_timm(model: nn.Module, out: Path, fmt: str, ctx: dict[str, Any]) -> Export:
    """config.json + model.safetensors (timm's save_for_hf) + README.md, loaded back by timm."""
    model = _merge(model, ctx["method"])
    labels = ctx["classes"] if ctx["classes"] and len(ctx["classes"]) == model.num_classes else None
    _save_for_hf(model, out, ctx, labels)
    _readable(out)
    diff = _compare(_load_timm(out, ctx["method"]), ctx, "timm")
    name = f"hf-hub:{ctx['repo']}" if ctx["repo"] else f"local-dir:{out}"
    load = f'timm.create_model("{name}", pretrained=True)'
    atomic_write_text(out / "README.md", timm_card(ctx, load))
    weights = f"{sum(p.numel() for p in model.parameters()):,} parameters"
    if ctx["method"] in MERGEABLE:
        weights += f" ({MERGEABLE[ctx['method']]} merged into the weights)"
    files = {"config.json": _config_line(out), "model.safetensors": weights,
             "README.md": "model card"}
    _readable(out)
    return Export(out, fmt, ctx["method"], files, load, diff, len(labels) if labels else None,
                  _notes(ctx))


def _write_onnx(model: nn.Module, out: Path, fmt: str, ctx: dict[str, Any]) -> Export:
    """model.onnx (dynamic batch) + config.json + README.md, checked in ONNX Runtime."""
    from partialft.analysis.export_onnx import write_onnx

    files, load, diff = write_onnx(_merge(model, ctx["method"]), out, ctx)
    _check_diff(diff, "onnx")
    _readable(out)
    labels = json.loads((out / "config.json").read_text()).get("label_names")
    return Export(out, fmt, ctx["method"], files, load, diff, len(labels) if labels else None,
                  _notes(ctx))


def _save_for_hf(model: nn.Module, out: Path, ctx: dict[str, Any], labels: list[str] | None
                 ) -> None:
    """timm's own save_for_hf, with the run's preprocessing and class names."""
    from timm.models import save_for_hf

    cfg_over, model_args = native(ctx["base"])
    data = dict(ctx["data"])
    # the run's preprocessing also as the source config: timm before data_config reads only it
    model.pretrained_cfg = {**model.pretrained_cfg, **data, **cfg_over}
    takes_data = "data_config" in inspect.signature(save_for_hf).parameters
    save_for_hf(model, str(out), model_config={"label_names": labels} if labels else {},
                model_args=model_args or None, safe_serialization=True,
                **({"data_config": data} if takes_data else {}))


def _load_timm(out: Path, method: str) -> nn.Module:
    """The exported folder as timm loads it; one sentence when its weights do not fit."""
    import timm

    try:
        return timm.create_model(f"local-dir:{out}", pretrained=True)
    except RuntimeError as exc:  # strict loading: e.g. a merged SSF bias the architecture lacks
        raise PartialFTError(f"timm's architecture does not fit the exported {method} weights "
                             f"({_misfit(out) or first_line(exc)}), so this run cannot be "
                             "exported as a plain timm folder.") from None


def _misfit(out: Path) -> str:
    """The first tensor name the exported weights and timm's architecture disagree on."""
    import timm
    from safetensors import safe_open

    with torch.device("meta"):
        theirs = set(timm.create_model(f"local-dir:{out}").state_dict())
    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        ours = set(fh.keys())
    extra, missing = sorted(ours - theirs), sorted(theirs - ours)
    if extra:
        return f"the weights hold {extra[0]}, which timm's model lacks"
    return f"the weights lack {missing[0]}" if missing else ""


def _readable(out: Path) -> None:
    """Give the written files the user's usual permissions (safetensors writes 0600)."""
    mode = file_mode()
    for path in out.iterdir():
        if path.is_file() and path.name != MARKER and not is_lock(path.name):
            path.chmod(mode)


def _config_line(out: Path) -> str:
    """What config.json says, in one line."""
    cfg = json.loads((out / "config.json").read_text())
    pre = cfg["pretrained_cfg"]
    size = "x".join(str(s) for s in pre["input_size"])
    return (f"{cfg['architecture']}, {cfg['num_classes']} classes, input {size}, crop_pct "
            f"{pre['crop_pct']}, {pre['interpolation']}, mean {_fmt(pre['mean'])}, std "
            f"{_fmt(pre['std'])}")


def _fmt(values: Any) -> str:
    """(0.5, 0.5, 0.5)"""
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"


def _notes(ctx: dict[str, Any]) -> list[str]:
    """What the export could not do or check."""
    notes = []
    if ctx["classes"] is None:
        notes.append(f"no label names: dataset {ctx['summary'].get('dataset')} is not on this "
                     "machine, so its class names could not be read")
    if not ctx["base"].get("weights_sha256"):
        notes.append("the run predates base-weight hashing: its base weights were not checked")
    return notes


# --- peft ------------------------------------------------------------------------------------

def _write_peft(model: nn.Module, out: Path, fmt: str, ctx: dict[str, Any]) -> Export:
    """adapter_config.json + adapter_model.safetensors (peft's save_pretrained) + README.md."""
    import peft

    delta = _delta(ctx["run"])
    config = copy.deepcopy(model.peft_config["default"])  # the LoraConfig the run trained with
    config.modules_to_save = sorted({k.rpartition(".")[0] for k in delta if "lora_" not in k})
    base = base_model(ctx["base"], allow_base_mismatch=ctx.get("allow_base_mismatch", False))
    # (checked against its SHA-256 by load_run_model)
    fresh = copy.deepcopy(base)
    wrapped = peft.get_peft_model(base, config)
    wrapped.load_state_dict(_peft_keys(delta, wrapped), strict=False)
    wrapped.peft_config["default"].base_model_name_or_path = base_name(ctx)
    wrapped.save_pretrained(str(out), save_embedding_layers=False)  # no Hub lookups
    _readable(out)
    loaded = peft.PeftModel.from_pretrained(fresh, str(out))
    diff = _compare(loaded, ctx, "peft")
    load = f'peft.PeftModel.from_pretrained(base, "{ctx["repo"] or out}")'
    atomic_write_text(out / "README.md", peft_card(ctx, load))
    _readable(out)
    lora = sum(v.numel() for k, v in delta.items() if "lora_" in k)
    saved = ", ".join(config.modules_to_save)
    files = {"adapter_config.json": f"LoRA rank {config.r}, alpha {config.lora_alpha:g}, "
             f"modules_to_save {saved}",
             "adapter_model.safetensors": f"{lora:,} LoRA parameters + "
             f"{sum(v.numel() for v in delta.values()) - lora:,} {saved} parameters",
             "README.md": "model card"}
    return Export(out, fmt, "lora", files, load, diff, None, _notes(ctx))


def _delta(run_dir: Path) -> dict[str, torch.Tensor]:
    """The tensors the run trained."""
    from partialft.models import load_state_dict_file

    return load_state_dict_file(run_dir / DELTA)


def _peft_keys(delta: dict[str, torch.Tensor], wrapped: nn.Module) -> dict[str, torch.Tensor]:
    """The delta under the PeftModel's names: LoRA tensors and modules_to_save copies."""
    own = wrapped.state_dict()
    out = {}
    for key, value in delta.items():
        module, _, leaf = key.rpartition(".")
        name = (f"base_model.model.{key}" if "lora_" in key
                else f"base_model.model.{module}.modules_to_save.default.{leaf}")
        if name not in own:
            raise PartialFTError(f"delta tensor {key} has no place in the peft model ({name}); "
                                 "the run cannot be written as a peft adapter.")
        out[name] = value
    return out
