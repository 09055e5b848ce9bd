"""Fake run dirs on timm's tiny ``test_vit`` for the soup/eval/report tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import timm
import torch
import yaml

from partialft.checkpoints import save_tensors

NUM_CLASSES = 4


def make_base(root: Path, num_classes: int = NUM_CLASSES, seed: int = 0) -> dict[str, Any]:
    """Save a random test_vit as the base checkpoint; returns the delta 'base' metadata."""
    torch.manual_seed(seed)
    model = timm.create_model("test_vit", num_classes=num_classes)
    path = root / f"base-{num_classes}-{seed}.safetensors"
    save_tensors(path, model.state_dict(), {})
    return {"model": "test_vit", "num_classes": num_classes, "pretrained": False,
            "checkpoint": str(path), "img_size": 160, "layer_spec": None}


def make_run(path: Path, base: dict[str, Any], delta: dict[str, torch.Tensor], *,
             method: str = "layers", layers: list[str] | None = None, best_acc: float = 50.0,
             seed: int = 0, trainable_params: int | None = None, test_acc: float | None = None,
             **config: Any) -> Path:
    """Write a finished run dir (delta, summary, config, selection) per the run-dir contract."""
    path.mkdir(parents=True)
    selection = {"method": method, "layers": layers or [], "train_all": method == "full"}
    save_tensors(path / "delta.safetensors", delta,
                 {"format": "partialft-delta", "base": base, "selection": selection})
    cfg = {"model": base["model"], "num_classes": base["num_classes"], "pretrained": False,
           "checkpoint": base["checkpoint"], "dataset": "synthetic", "data_dir": None,
           "img_size": 160, "val_fraction": 0.1, "method": method, "seed": seed, "lr": 1e-3,
           "epochs": 1, **config}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (path / "selection.json").write_text(json.dumps(selection))
    params = trainable_params if trainable_params is not None else sum(
        t.numel() for t in delta.values())
    summary = {"method": method, "model": base["model"], "num_classes": base["num_classes"],
               "dataset": "synthetic", "seed": seed, "lr": 1e-3, "epochs": 1,
               "layers": layers or [], "trainable_params": params, "total_params": 306_565,
               "best_acc": best_acc, "final_acc": best_acc, "test_acc": test_acc,
               "wall_s": 1.0, "device": "cpu", "config": cfg}
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def perturbed(base: dict[str, Any], prefixes: tuple[str, ...], shift: float
              ) -> dict[str, torch.Tensor]:
    """Delta holding the base's float tensors under ``prefixes`` plus ``shift``."""
    from safetensors.torch import load_file

    state = load_file(base["checkpoint"])
    return {k: v + shift for k, v in state.items()
            if k.startswith(prefixes) and v.is_floating_point()}
