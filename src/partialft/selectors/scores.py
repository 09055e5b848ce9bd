"""Layer scores: the full run's fine-tuned angle and two cheaper stand-ins.

Every selector maps a :class:`~partialft.training.config.TrainConfig` (model, data, recipe) to a
:class:`SelectorResult`: per-layer scores that FAPFT's top-k per homogeneous group reads exactly
like angles (``select_layers(layer_map, "fapft", angles=scores, ...)``), or, for ``greedy``, the
layer list itself; plus what the selection cost (wall time, trainings, optimizer steps).

- ``angle``: fine-tuned angles of a complete full fine-tuning run (the paper's FAPFT).
- ``probe-angle``: angles after the same full fine-tuning schedule stopped early (paper Fig. 4b:
  rankings are stable across epochs).
- ``grad``: relative gradient norm ``||g_L|| / ||w_L||`` per layer, averaged over a few batches
  (Surgical Fine-Tuning's Auto-RGN), measured after fitting the new head on frozen features.
- ``greedy``: SubTuning's greedy search (:mod:`partialft.selectors.greedy`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from partialft.core.layers import LayerMap, find_layers
from partialft.errors import PartialFTError, option_error
from partialft.selectors.probe import linear_probe
from partialft.selectors.task import SelectorResult, Task, load_task
from partialft.training.config import TrainConfig


def _angles_of_weights(task_base: dict[str, Any], finetuned: Mapping[str, torch.Tensor],
                       layer_spec: str | None) -> dict[str, float]:
    from partialft.core.angles import compute_angles
    from partialft.training.runs import base_model

    base = base_model(task_base)
    return compute_angles(base.state_dict(), finetuned, find_layers(base, layer_spec))


def angle_selector(cfg: TrainConfig, out: Path, reference: str | None = None
                   ) -> SelectorResult:
    """Angles of a complete full fine-tuning run (``reference`` run dir, or trained here)."""
    from partialft.core.angles import compute_angles
    from partialft.training.runs import base_state, is_run_dir, load_run_model
    from partialft.training.train import train

    if reference is not None:
        check_reference(reference, cfg)  # a reference is read, never created
    full = Path(reference) if reference else out / "full"
    steps = 0
    if not is_run_dir(full):
        summary = train(dataclasses.replace(cfg, method="full", out=str(full), max_steps=None),
                        resume=True, progress=False)
        steps = _steps_of(full) if summary else 0
    model, _ = load_run_model(full)
    scores = compute_angles(base_state(full), model.state_dict(),
                            find_layers(model, cfg.layer_spec))
    return SelectorResult("angle", scores=scores, cost={"trainings": int(steps > 0),
                                                        "steps": steps},
                          info={"reference": str(full)})


def check_reference(reference: str, cfg: TrainConfig) -> None:
    """``--reference`` must be an existing, finished run dir of this run's model that trained
    every residual layer (checked before any work: select calls it before opening --out)."""
    from partialft.baselines import BASELINES
    from partialft.training.runs import delta_info, is_run_dir

    path = Path(reference)
    if not is_run_dir(path):
        what = "does not exist" if not path.exists() else "is not a finished run dir"
        raise PartialFTError(f"reference={reference} {what}; pass a finished run dir of "
                             "method=full (select never trains into reference).",
                             cli=f"--reference {reference} {what}; pass a finished 'partialft "
                             "train --method full' run dir (select never trains into "
                             "--reference).")
    meta = delta_info(path)
    base, method = meta["base"], (meta.get("selection") or {}).get("method")
    if method in BASELINES:
        raise option_error("`reference={ref}` used the PEFT baseline {method!r}, which leaves "
                           "the residual layers' weights unchanged; angles need a run that "
                           "trained those layers, such as `method=full`.", ref=reference,
                           method=method)
    if base["model"] != cfg.model:
        raise option_error("`reference={ref}` fine-tuned {theirs}, not {ours}; angles need a "
                           "full run of the same model.", ref=reference, theirs=base["model"],
                           ours=cfg.model)
    check_covers(reference, path, _layer_map(base, cfg.layer_spec))


def _layer_map(base: dict[str, Any], layer_spec: str | None) -> LayerMap:
    """The reference's residual layers, from its model built on the meta device (no memory)."""
    from partialft.models import create_model

    with torch.device("meta"):
        model = create_model(base["model"], num_classes=base.get("num_classes"),
                             img_size=base.get("img_size"), **(base.get("model_kwargs") or {}))
    return find_layers(model, layer_spec or base.get("layer_spec"))


def check_covers(reference: str, run_dir: Path, layer_map: LayerMap) -> None:
    """Angles of layers a run did not train are all 0: refuse a reference that left any
    residual layer untrained (a linear probe, a partial run)."""
    from safetensors import safe_open

    from partialft.errors import first_items
    from partialft.training.checkpoints import DELTA

    with safe_open(str(run_dir / DELTA), framework="pt") as fh:
        trained = set(fh.keys())
    untrained = [la.id for la in layer_map.layers
                 if not any(n in trained for n in la.param_names)]
    if untrained:
        raise option_error("`reference={ref}` did not train {n} of the {total} residual layers "
                           "(first: {first}), whose angles would be 0; angles need a run that "
                           "trained those layers, such as `method=full`.", ref=reference,
                           n=len(untrained), total=len(layer_map.layers),
                           first=first_items(untrained, 2))


def _steps_of(run_dir: Path) -> int:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return int(json.loads(lines[-1])["step"]) if lines else 0


def probe_angle_selector(cfg: TrainConfig, out: Path, fraction: float = 0.2) -> SelectorResult:
    """Angles after the full fine-tuning schedule stopped at ``fraction`` of its steps."""
    from partialft.training.loaders import Batches
    from partialft.training.rundir import RunDir
    from partialft.training.train import train

    if not 0.0 < fraction <= 1.0:
        raise PartialFTError(f"probe fraction {fraction} is not valid; use a number in (0, 1].")
    task = load_task(cfg)
    per_epoch = Batches(len(task.data.train), cfg.batch_size, cfg.grad_accum, cfg.seed, 0,
                        1).steps_per_epoch
    steps = max(1, math.ceil(fraction * cfg.epochs * per_epoch))
    probe = dataclasses.replace(cfg, method="full", out=str(out / "probe"), max_steps=steps)
    train(probe, overwrite=True, progress=False)
    run = RunDir(out / "probe", resume=True)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):  # load_state restores the run's RNG states
            tensors, _ = run.load_state()
    finally:
        run.close()
        random.setstate(py_state)
        np.random.set_state(np_state)
    finetuned = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    scores = _angles_of_weights(task.base, finetuned, cfg.layer_spec)
    return SelectorResult("probe-angle", scores=scores,
                          cost={"trainings": 1, "steps": steps},
                          info={"fraction": fraction, "total_steps": cfg.epochs * per_epoch})


def grad_selector(cfg: TrainConfig, out: Path, batches: int = 4, fit_head: bool = True
                  ) -> SelectorResult:
    """Mean over ``batches`` of ``||g_L|| / ||w_L||`` per layer (Auto-RGN), head fitted first."""
    task = load_task(cfg)
    model = task.model()
    probe_acc = linear_probe(task, model) if fit_head else None
    layer_map = find_layers(model, cfg.layer_spec)
    scores = relative_grad_norms(task, model, layer_map, batches)
    info = {"batches": batches, "fit_head": fit_head, "probe_acc": probe_acc}
    return SelectorResult("grad", scores=scores, cost={"trainings": 0, "steps": 0,
                                                       "backward_passes": batches}, info=info)


def relative_grad_norms(task: Task, model: nn.Module, layer_map: LayerMap, batches: int
                        ) -> dict[str, float]:
    """Per layer, the mean over ``batches`` training batches of ||grad|| / ||weight||."""
    if batches < 1:
        raise PartialFTError(f"grad batches {batches} is not valid; use 1 or more.")
    params = dict(model.named_parameters())
    model.train().requires_grad_(True)
    criterion = nn.CrossEntropyLoss(label_smoothing=task.cfg.label_smoothing)
    sums = dict.fromkeys((la.id for la in layer_map.layers), 0.0)
    seen = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(task.cfg.seed)
        for x, y in task.batches("train", task.cfg.batch_size, limit=batches):
            model.zero_grad(set_to_none=True)
            x, y = task.augment_train(x.to(task.device)), y.to(task.device)
            criterion(model(x), y).backward()
            for layer in layer_map.layers:
                ps = [params[n] for n in layer.param_names]
                g = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in ps
                                  if p.grad is not None))
                w = math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in ps))
                sums[layer.id] += g / max(w, 1e-12)
            seen += 1
    model.zero_grad(set_to_none=True)
    return {k: v / seen for k, v in sums.items()}
