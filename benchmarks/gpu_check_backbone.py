"""The GPU check's last phase: pretrain a stronger fractal backbone with the time that is left.

After the check's steps (at most TOTAL_S = 8 minutes), the same device call spends what is left
until DEADLINE_S on ``partialft pretrain`` of the bundled architecture (``partialft_vit_tiny``)
on a bigger corpus (1,000 fractal categories instead of 100) for as many steps as the measured
speed of the check's own pretrain step allows, writing a resume point every tenth of the run.
The run is killed at the deadline if it is still going (a hard stop, whatever the estimate
said); its weights then come from the last resume point. Either way they are exported as float16
safetensors into the output folder (``backbone.safetensors``, ~5 MB, < MAX_WEIGHTS_MB), with
the model card (``backbone.md``) and the loss curve (``backbone_metrics.jsonl``), so that a CPU
session can fine-tune from them (``partialft train --checkpoint``-style loading: the file holds
the model's full state dict, fractal head included).

    python benchmarks/gpu_check_backbone.py export RUN_DIR OUT_DIR   # what the check runs
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEADLINE_S = 570.0  # the whole command ends by then: the device call's timeout_s is 600
EXPORT_S = 30.0  # kept back at the end: export the weights, write the outputs
MIN_BACKBONE_S = 60.0  # less than this left: the backbone is not started
MAX_WEIGHTS_MB = 60.0
WEIGHTS, CARD, METRICS = "backbone.safetensors", "backbone.md", "backbone_metrics.jsonl"
MARK = "BACKBONE "  # the export's stdout line with its facts as JSON


@dataclass
class Size:
    """The backbone run's corpus and schedule."""

    categories: int
    batch: int
    steps: int
    checkpoint_every: int
    warmup: int
    extra: tuple[str, ...]  # rendering and precision flags

    def argv(self) -> list[str]:
        return ["--categories", str(self.categories), "--steps", str(self.steps),
                "--batch-size", str(self.batch), "--warmup-steps", str(self.warmup),
                "--checkpoint-every", str(self.checkpoint_every), "--eval-every",
                str(self.steps), "--log-every", str(max(1, self.steps // 40)), *self.extra]


def plan_size(seconds: float, measured: dict[str, Any], smoke: bool) -> Size:
    """How big a run fits in ``seconds``, from the check's pretrain step (``measured``: its
    numbers, seconds and wall_s). Three quarters of the time after the set-up go to steps."""
    categories, batch = (2, 16) if smoke else (1000, 256)
    base_categories = measured.get("categories") or (2 if smoke else 100)
    img_s = measured.get("images_per_s_last_interval") or (40.0 if smoke else 4000.0)
    setup = max(0.0, (measured.get("seconds") or 0.0) - (measured.get("wall_s") or 0.0))
    overhead = min(seconds / 2, 10.0 + setup * categories / base_categories)
    steps = int(0.75 * max(0.0, seconds - overhead) * img_s / batch)
    steps = max(8, min(steps, 32 if smoke else 200_000))
    extra = (("--val-per-category", "2", "--chains", "32", "--iters", "40", "--threads", "1")
             if smoke else ("--val-per-category", "10", "--amp", "bf16"))
    return Size(categories, batch, steps, max(4, steps // 10), max(1, min(200, steps // 10)),
                extra)


# --- export (a subprocess of the check: it imports torch) ------------------------------------

def final_or_resume_point(run: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(float16 state dict, facts) from the finished run's weights, else its last resume point."""
    import torch
    from safetensors.torch import load_file

    if (run / "summary.json").is_file():
        summary = json.loads((run / "summary.json").read_text())
        return load_file(str(run / "model.safetensors")), {
            "finished": True, "steps_done": summary["steps"], "val_acc": summary["val_acc"],
            "wall_s": summary["wall_s"], "device": summary["device"]}
    info = json.loads((run / "state" / "state.json").read_text())
    tensors = load_file(str(run / "state" / info["tensors"]))
    model = {k.removeprefix("model."): v.to(torch.float16) if v.is_floating_point() else v
             for k, v in tensors.items() if k.startswith("model.")}
    return model, {"finished": False, "steps_done": info["global_step"],
                   "val_acc": info.get("val_acc"), "wall_s": round(info["elapsed_s"], 1)}


def export(run: Path, out: Path) -> dict[str, Any]:
    """Write backbone.safetensors, backbone.md and backbone_metrics.jsonl; returns the facts."""
    from partialft.training.checkpoints import save_tensors

    weights, facts = final_or_resume_point(run)
    config = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() \
        else {}
    facts |= {"planned_steps": config.get("steps"), "categories": config.get("categories"),
              "batch_size": config.get("batch_size"), "model": config.get("model")}
    meta = {"format": "partialft-backbone", "finished": str(facts["finished"]).lower(),
            "steps_done": str(facts["steps_done"]), "categories": str(facts["categories"])}
    save_tensors(out / WEIGHTS, weights, meta)
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    (out / METRICS).write_text("".join(ln + "\n" for ln in lines))
    losses = [json.loads(ln)["loss"] for ln in lines]
    quarter = max(1, len(losses) // 4)  # single lines are noisy: the first and last quarter
    facts |= {"loss_first": round(sum(losses[:quarter]) / quarter, 4) if losses else None,
              "loss_last": round(sum(losses[-quarter:]) / quarter, 4) if losses else None,
              "weights_mb": round((out / WEIGHTS).stat().st_size / 1e6, 2)}
    if (run / "MODEL_CARD.md").is_file():
        shutil.copyfile(run / "MODEL_CARD.md", out / CARD)
    else:
        (out / CARD).write_text(
            "# Fractal backbone (stopped at the deadline)\n\nWeights of the last resume point, "
            f"step {facts['steps_done']} of {facts['planned_steps']} (the cosine schedule did "
            f"not finish).\n\n```\n{json.dumps(config, indent=1)}\n```\n")
    return facts


def judge(facts: dict[str, Any], smoke: bool) -> list[str]:
    """Why the exported backbone is not usable (empty: it is)."""
    problems = []
    if facts.get("weights_mb") is None or facts["weights_mb"] >= MAX_WEIGHTS_MB:
        problems.append(f"weights of {facts.get('weights_mb')} MB, not < {MAX_WEIGHTS_MB:.0f}")
    first, last = facts.get("loss_first"), facts.get("loss_last")
    if first is None or last is None or not last < first:
        problems.append(f"the loss did not fall ({first} -> {last})")
    if not smoke and facts.get("finished") and "cuda" not in str(facts.get("device")).lower() \
            and "nvidia" not in str(facts.get("device")).lower():
        problems.append(f"pretrained on {facts.get('device')}, not on the GPU")
    return problems


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "export":
        raise SystemExit("usage: gpu_check_backbone.py export RUN_DIR OUT_DIR")
    print(MARK + json.dumps(export(Path(sys.argv[2]), Path(sys.argv[3]))))
