"""Multi-task inference (SubTuning): one base ViT, several delta run dirs, one shared forward pass.

Every task was partially fine-tuned from the same base, so until a task's first trained block
its activations equal the base's. :class:`MultiTaskViT` runs the stem (patch embedding, position
embedding, pre-norm) once and the base blocks once along a single trunk; each task forks off the
trunk at its first trained block and runs its own remaining blocks, final norm and head. This
trunk-with-forks is the best sharing tree possible: two tasks never share a block after either
has forked, because their inputs differ there. Blocks a task did not train are the base's own
modules (shared memory). A task whose delta touches the stem (patch embedding, class/position
tokens, pre-norm) cannot share anything and runs its whole model on its own.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer

from partialft.errors import PartialFTError

POST = ("norm.", "fc_norm.", "head.", "attn_pool.", "head_drop.")
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


@dataclass
class Branch:
    """One task: its model (base + delta) and where it leaves the shared trunk."""

    name: str
    model: VisionTransformer
    fork: int  # first block it trained; depth = only norm/head; -1 = stem trained: no sharing


def fork_point(delta_keys: list[str], depth: int) -> int:
    """The first block a delta changes; ``depth`` if only the final norm/head; -1 for the stem."""
    blocks = [int(m.group(1)) for k in delta_keys if (m := _BLOCK.match(k))]
    stem = [k for k in delta_keys if not _BLOCK.match(k) and not k.startswith(POST)]
    if stem:
        return -1
    return min(blocks, default=depth)


class MultiTaskViT(nn.Module):
    """A base timm VisionTransformer plus task branches; ``forward`` returns logits per task."""

    def __init__(self, base: VisionTransformer, branches: list[Branch]) -> None:
        super().__init__()
        if not isinstance(base, VisionTransformer):
            raise PartialFTError(f"multi-task sharing supports timm VisionTransformer models; "
                                 f"got {type(base).__name__}.")
        self.base = base.eval()
        self.branches = branches
        self.tasks = nn.ModuleList(b.model.eval() for b in branches)  # registered for .to()

    def task(self, name: str) -> VisionTransformer:
        """The model of one task, by name."""
        return next(b.model for b in self.branches if b.name == name)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        base, outs = self.base, {}
        for b in self.branches:
            if b.fork < 0:
                outs[b.name] = b.model(x)
        shared = sorted((b for b in self.branches if b.fork >= 0), key=lambda b: b.fork)
        if shared:
            h = base.norm_pre(base.patch_drop(base._pos_embed(base.patch_embed(x))))
            depth = 0
            for b in shared:
                while depth < b.fork:  # advance the trunk to this task's fork
                    h = base.blocks[depth](h)
                    depth += 1
                y = h
                for block in b.model.blocks[b.fork:]:
                    y = block(y)
                outs[b.name] = b.model.forward_head(b.model.norm(y))
        return {b.name: outs[b.name] for b in self.branches}

    def separate(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each task's model run alone on ``x`` (the reference the shared pass must equal)."""
        return {b.name: b.model(x) for b in self.branches}

    def describe(self) -> list[dict[str, Any]]:
        depth = len(self.base.blocks)
        return [{"task": b.name, "fork": b.fork,
                 "shared_blocks": 0 if b.fork < 0 else b.fork, "depth": depth}
                for b in self.branches]


def _share_untouched(base: VisionTransformer, model: VisionTransformer, keys: set[str]) -> None:
    """Point the task's untrained blocks at the base's modules (the same weights, no copy)."""
    for i in range(len(model.blocks)):
        if not any(k.startswith(f"blocks.{i}.") for k in keys):
            model.blocks[i] = base.blocks[i]


def _check_same_base(name: str, base_sd: dict[str, torch.Tensor], model: nn.Module,
                     keys: set[str]) -> None:
    for k, v in model.state_dict().items():
        if k in keys or k.startswith("head."):
            continue
        if k not in base_sd or base_sd[k].shape != v.shape or not torch.equal(base_sd[k], v):
            raise PartialFTError(f"run {name} was not trained from the same base as the first "
                                 f"run (tensor {k} differs); multi-task sharing needs one base.")


def from_runs(run_dirs: list[str | Path], device: str | torch.device = "cpu", *,
              allow_base_mismatch: bool = False) -> MultiTaskViT:
    """Build the shared model from finished run dirs of layer methods on one base model."""
    from partialft.baselines import BASELINES
    from partialft.models import load_state_dict_file
    from partialft.training.checkpoints import DELTA
    from partialft.training.runs import base_model, delta_info, load_run_model

    if not run_dirs:
        raise PartialFTError("multi-task inference needs at least one run dir.")
    base = None
    branches: list[Branch] = []
    first: dict[str, Any] = {}
    for run in run_dirs:
        meta = delta_info(run)
        first = first or {"run": run, **meta["base"]}
        for key in ("model", "img_size", "pretrained", "checkpoint", "init_seed"):
            if meta["base"].get(key) != first.get(key):
                raise PartialFTError(f"run {run} has base {key}={meta['base'].get(key)!r} but "
                                     f"run {first['run']} has {key}={first.get(key)!r}; "
                                     "multi-task sharing needs runs fine-tuned from one base "
                                     "model.")
        method = meta.get("selection", {}).get("method")
        if method in BASELINES:
            raise PartialFTError(f"run {run} used the PEFT baseline {method!r}, which changes "
                                 "the architecture; multi-task sharing takes layer methods only.")
        if base is None:
            base = base_model(meta["base"], allow_base_mismatch=allow_base_mismatch).eval()
        model, _ = load_run_model(run, allow_base_mismatch=allow_base_mismatch)
        keys = set(load_state_dict_file(Path(run) / DELTA))
        if not isinstance(model, VisionTransformer):
            raise PartialFTError(f"run {run} is a {type(model).__name__}; multi-task sharing "
                                 "supports timm VisionTransformer models.")
        _check_same_base(str(run), base.state_dict(), model, keys)
        _share_untouched(base, model, keys)
        branches.append(Branch(_unique(Path(run), branches), model,
                               fork_point(sorted(keys), len(model.blocks))))
    return MultiTaskViT(base, branches).to(device)


def _unique(run: Path, branches: list[Branch]) -> str:
    """The run dir's name, with its parent's when that is taken (``angle/partial-large``)."""
    taken = {b.name for b in branches}
    name = run.name if run.name not in taken else f"{run.resolve().parent.name}/{run.name}"
    out, i = name, 2
    while out in taken:
        out, i = f"{name}-{i}", i + 1
    return out


def block_ratio(multi: MultiTaskViT) -> float:
    """Block evaluations of the separate models over those of the shared pass (ideal speed-up)."""
    depth, forks = len(multi.base.blocks), [b.fork for b in multi.branches]
    trunk = max((f for f in forks if f >= 0), default=0)
    shared = trunk + sum(depth - max(f, 0) for f in forks)
    return round(len(forks) * depth / max(shared, 1), 3)


def _timed(fn: Any, x: torch.Tensor) -> float:
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(x)
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


@torch.inference_mode()
def benchmark(multi: MultiTaskViT, x: torch.Tensor, iters: int = 10) -> dict[str, Any]:
    """Images/s of the shared pass vs the separate models, the speed-up, and the equality check.

    The two variants alternate pass by pass and each rate uses its median pass time, so a load
    change on a shared machine hits both alike.
    """
    shared, separate = multi(x), multi.separate(x)  # also the warm-up
    diff = max(float((shared[k] - separate[k]).abs().max()) for k in shared)
    equal = all(torch.equal(shared[k], separate[k]) for k in shared)
    times: dict[str, list[float]] = {"shared": [], "separate": []}
    for _ in range(iters):
        times["shared"].append(_timed(multi, x))
        times["separate"].append(_timed(multi.separate, x))
    rates = {k: x.shape[0] / statistics.median(v) for k, v in times.items()}
    return {"tasks": multi.describe(), "block_ratio": block_ratio(multi),
            "batch_size": x.shape[0], "iters": iters,
            "shared_img_s": round(rates["shared"], 2),
            "separate_img_s": round(rates["separate"], 2),
            "speedup": round(rates["shared"] / rates["separate"], 3), "equal": equal,
            "max_abs_diff": diff}
