"""Pretrain a backbone on FractalDB-style categories rendered on the fly (``partialft pretrain``).

Every step renders a fresh batch of fractal instances on the training device (seeded by
``(seed, step, process)``, so a resumed run sees the same images as an uninterrupted one),
trains the model to name the category (AdamW from timm, timm's cosine schedule with warm-up,
accelerate for device and mixed precision) and, every ``eval_every`` steps, measures accuracy on
a fixed held-out set of instances. The run dir holds::

    config.json        the PretrainConfig
    metrics.jsonl      one line per log interval: step, loss, train_acc, lr, images/s, val_acc
    state/             resume point (weights, optimizer, counters), see partialft.training.rundir
    model.safetensors  the final weights in float16: the file that ships as
                       partialft/weights/partialft_vit_tiny.safetensors
    MODEL_CARD.md      corpus, recipe, accuracy, wall time, device, date and the command
    summary.json
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn as nn
from accelerate import Accelerator
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler

from partialft.data.fractal import FractalCorpus
from partialft.errors import option_error
from partialft.models import input_size
from partialft.models.backbone import ARCH, NAME
from partialft.training.checkpoints import SUMMARY, save_tensors
from partialft.training.pretrain_config import PretrainConfig
from partialft.training.rules import check_amp_device
from partialft.training.rundir import RunDir, optimizer_state, optimizer_tensors
from partialft.utils.io import append_line, atomic_write_json, atomic_write_text
from partialft.utils.limits import check_batch_memory
from partialft.utils.parse import load_json

METRICS = "metrics.jsonl"
WEIGHTS = "model.safetensors"
CARD = "MODEL_CARD.md"


@dataclass
class Job:
    """Everything the loop touches."""

    cfg: PretrainConfig
    acc: Accelerator
    run: RunDir
    corpus: FractalCorpus
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: CosineLRScheduler
    val: tuple[torch.Tensor, torch.Tensor]
    mean_std: tuple[torch.Tensor, torch.Tensor]
    step: int = 0
    elapsed_s: float = 0.0
    val_acc: float | None = None
    sums: torch.Tensor = dataclasses.field(default_factory=lambda: torch.zeros(3))


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers (NumPy's SeedSequence mixes them)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(2, np.uint64)[0]) >> 1


def build(cfg: PretrainConfig, *, overwrite: bool = False, resume: bool = False) -> Job:
    """Accelerator, run dir, corpus, model, optimizer and schedule (restored with ``resume``)."""
    check_amp_device(cfg.amp)  # fp16 on the CPU would run float32 and record fp16
    acc = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.amp)
    run = RunDir(cfg.out, kind="pretrain", overwrite=overwrite, resume=resume,
                 main_process=acc.is_main_process)
    try:
        return _assemble(cfg, acc, run)
    except BaseException:
        run.abandon()  # nothing trained yet: the corrected command needs no --overwrite
        raise


def _assemble(cfg: PretrainConfig, acc: Accelerator, run: RunDir) -> Job:
    """Corpus, model, optimizer and schedule in a claimed run dir (restored on a resume)."""
    torch.manual_seed(cfg.seed)
    model = timm.create_model(cfg.model, num_classes=cfg.categories)
    _, height, _ = input_size(model)
    # the corpus renders batches at twice the input size: refuse a batch that cannot fit
    check_batch_memory(cfg.batch_size, 2 * height, device=str(acc.device))
    corpus = FractalCorpus(cfg.categories, cfg.seed, cfg.fractal(height), device=acc.device)
    val = corpus.fixed_set(cfg.val_per_category, _seed(cfg.seed, 2))
    optimizer = create_optimizer_v2(model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = CosineLRScheduler(optimizer, t_initial=cfg.steps, lr_min=cfg.min_lr,
                                  warmup_t=cfg.warmup_steps, warmup_lr_init=cfg.lr * 0.01,
                                  t_in_epochs=False)
    model, optimizer = acc.prepare(model, optimizer)
    pcfg = acc.unwrap_model(model).pretrained_cfg
    mean_std = tuple(torch.tensor(pcfg.get(k, (0.5,) * 3), device=acc.device).view(1, -1, 1, 1)
                     for k in ("mean", "std"))
    job = Job(cfg, acc, run, corpus, model, optimizer, scheduler, val, mean_std)  # type: ignore[arg-type]
    if acc.is_main_process and not run.file("config.json").is_file():  # never rewritten
        atomic_write_json(run.file("config.json"), dataclasses.asdict(cfg))
    _restore(job)
    return job


def pretrain(cfg: PretrainConfig, *, overwrite: bool = False, resume: bool = False,
             progress: bool = True) -> dict[str, Any] | None:
    """Run (or continue) pretraining; the summary, or None when stopped by ``max_steps``."""
    if resume:
        check_same_run(cfg)
    if resume and (Path(cfg.out) / SUMMARY).is_file():
        return json.loads((Path(cfg.out) / SUMMARY).read_text())
    job = build(cfg, overwrite=overwrite, resume=resume)
    failed = True
    try:
        summary = _loop(job, progress)
        failed = False
        return summary
    finally:  # a new run dir that failed before its first resume point is removed again
        job.run.abandon() if failed else job.run.close()


def recorded(out: str | Path) -> dict[str, Any] | None:
    """The config.json a pretraining run dir recorded, or None when it has none yet."""
    path = Path(out) / "config.json"
    if not path.is_file():
        return None
    values = load_json(path.read_text(encoding="utf-8"), str(path))
    names = {f.name for f in dataclasses.fields(PretrainConfig)}
    if not isinstance(values, dict) or set(values) - names:
        raise option_error("{path} is damaged, so the run cannot be resumed; start it again "
                           "with `overwrite=True` instead of `resume=True`.", path=path)
    return values


def check_same_run(cfg: PretrainConfig) -> None:
    """A resume continues the recorded run: every setting but :data:`RUNTIME` must match."""
    saved = recorded(cfg.out)
    if saved is None:
        return
    ours = cfg.recipe()
    for key, value in PretrainConfig(**saved).recipe().items():
        if ours[key] != value:
            raise option_error("`resume=True` of {out} with {key} {new!r}, but the run was "
                               "started with {key} {old!r}; leave it out (the recorded value is "
                               "used) or give the same value, or use `overwrite=True` or "
                               "another `out`.", out=cfg.out, key=key, new=ours[key], old=value)


def _loop(job: Job, progress: bool) -> dict[str, Any] | None:
    cfg, acc = job.cfg, job.acc
    stop = cfg.steps if cfg.max_steps is None else min(cfg.steps, cfg.max_steps)
    sums, images = job.sums.to(acc.device), 0  # since the last metrics line (kept by resume)
    last = start = time.perf_counter()
    job.model.train()
    while job.step < stop:
        sums += _train_step(job)
        job.step += 1
        images += cfg.batch_size * acc.num_processes
        if job.step % cfg.eval_every == 0 or job.step == cfg.steps:
            job.val_acc = evaluate(job)
        now = time.perf_counter()
        job.elapsed_s += now - last
        last = now
        # a line per log interval and at the end; not where max_steps stops, or a resumed run's
        # metrics.jsonl would differ from an uninterrupted one's
        if job.step % cfg.log_every == 0 or job.step == cfg.steps:
            _log(job, sums, images / max(now - start, 1e-9), progress)
            sums, images, start = torch.zeros(3, device=acc.device), 0, now
        if job.step % cfg.checkpoint_every == 0 or job.step == stop:
            job.sums = sums
            _save_state(job)
    if job.step < cfg.steps:
        return None
    return _finish(job)


def _train_step(job: Job) -> torch.Tensor:
    """One optimizer step on a freshly rendered batch; returns (loss sum, correct, count)."""
    cfg, acc = job.cfg, job.acc
    gen = job.corpus.generator(_seed(cfg.seed, 1, job.step, acc.process_index))
    x, y = job.corpus.sample(cfg.batch_size, gen)
    with acc.autocast():
        logits = job.model(_normalize(job, x))
        loss = nn.functional.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    acc.backward(loss)
    if cfg.grad_clip > 0:
        acc.clip_grad_norm_(job.model.parameters(), cfg.grad_clip)
    job.optimizer.step()
    job.optimizer.zero_grad(set_to_none=True)
    job.scheduler.step_update(num_updates=job.step + 1)
    n = torch.tensor(float(len(y)), device=acc.device)
    correct = (logits.argmax(-1) == y).sum().float()
    return torch.stack([loss.detach().float() * n, correct, n])


def _normalize(job: Job, x: torch.Tensor) -> torch.Tensor:
    mean, std = job.mean_std
    return (x - mean) / std


@torch.no_grad()
def evaluate(job: Job, batch: int = 256) -> float:
    """Top-1 accuracy (percent) on the fixed held-out instances."""
    job.model.eval()
    x, y = job.val
    correct = 0
    for xb, yb in zip(x.split(batch), y.split(batch)):
        with job.acc.autocast():
            correct += int((job.model(_normalize(job, xb)).argmax(-1) == yb).sum())
    job.model.train()
    return 100.0 * correct / len(y)


def _log(job: Job, sums: torch.Tensor, images_per_s: float, progress: bool) -> None:
    loss_sum, correct, count = job.acc.reduce(sums, reduction="sum").tolist()
    line = {"step": job.step, "loss": round(loss_sum / count, 4),
            "train_acc": round(100 * correct / count, 2),
            "lr": job.optimizer.param_groups[0]["lr"], "images_per_s": round(images_per_s, 1),
            "elapsed_s": round(job.elapsed_s, 1), "val_acc": job.val_acc}
    if job.acc.is_main_process:
        append_line(job.run.file(METRICS), json.dumps(line))
        if progress:
            print(" ".join(f"{k} {v}" for k, v in line.items()), flush=True)


# --- resume state ---------------------------------------------------------------------------

def _save_state(job: Job) -> None:
    """A resume point: weights, optimizer tensors (+ scalars and groups as JSON), counters."""
    model = job.acc.unwrap_model(job.model)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    optim_tensors, optim_info = optimizer_tensors(job.optimizer)
    tensors |= optim_tensors
    # the loss/accuracy sums since the last metrics line, over all processes (a resumed run
    # continues them on the main process, so its next line equals an uninterrupted run's)
    sums = job.acc.reduce(job.sums.clone(), reduction="sum").tolist()
    info = {"global_step": job.step, "elapsed_s": job.elapsed_s, "val_acc": job.val_acc,
            "optimizer": optim_info, "metric_sums": sums}
    job.run.save_state(tensors, info)


def _restore(job: Job) -> None:
    """Continue from the last resume point in the run dir, if there is one."""
    loaded = job.run.load_state()
    if loaded is not None:
        tensors, info = loaded
        model = job.acc.unwrap_model(job.model)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        job.optimizer.load_state_dict(optimizer_state(tensors, info["optimizer"]))
        job.step, job.elapsed_s = info["global_step"], info["elapsed_s"]
        job.val_acc = info["val_acc"]
        if job.acc.is_main_process and "metric_sums" in info:
            job.sums = torch.tensor(info["metric_sums"], dtype=torch.float32)
        job.scheduler.step_update(num_updates=job.step)
    # lines a killed run logged after its last resume point (all of them when it had none yet)
    # are logged again from there: drop them
    if job.acc.is_main_process and job.run.file(METRICS).is_file():
        lines = job.run.file(METRICS).read_text().splitlines()
        kept = [ln for ln in lines if json.loads(ln)["step"] <= job.step]
        atomic_write_text(job.run.file(METRICS), "".join(ln + "\n" for ln in kept))


# --- results --------------------------------------------------------------------------------

def _finish(job: Job) -> dict[str, Any]:
    """Final weights (float16), summary.json and MODEL_CARD.md."""
    cfg, acc = job.cfg, job.acc
    model = acc.unwrap_model(job.model)
    val_acc = job.val_acc if job.val_acc is not None else evaluate(job)
    summary = {
        "model": cfg.model, "categories": cfg.categories, "seed": cfg.seed, "steps": cfg.steps,
        "images_seen": cfg.steps * cfg.batch_size * acc.num_processes,
        "val_images": len(job.val[1]), "val_acc": round(val_acc, 2),
        "final_train_loss": _last_metric(job, "loss"),
        "final_train_acc": _last_metric(job, "train_acc"),
        "wall_s": round(job.elapsed_s, 1), "device": device_name(acc.device),
        "processes": acc.num_processes, "precision": acc.mixed_precision,
        "torch_threads": torch.get_num_threads(), "date": datetime.date.today().isoformat(),
        "params": sum(p.numel() for p in model.parameters()),
        "fractal": dataclasses.asdict(job.corpus.cfg), "config": dataclasses.asdict(cfg),
    }
    if acc.is_main_process:
        half = {k: v.detach().to(torch.float16) if v.is_floating_point() else v
                for k, v in model.state_dict().items()}
        meta = {k: summary[k] for k in ("model", "categories", "seed", "steps", "val_acc", "date")}
        save_tensors(job.run.file(WEIGHTS), half, {"format": "partialft-backbone", **meta})
        atomic_write_text(job.run.file(CARD), model_card(summary))
        atomic_write_json(job.run.file(SUMMARY), summary)  # last: its presence means finished
    acc.wait_for_everyone()
    return summary


def _last_metric(job: Job, key: str) -> float | None:
    path = job.run.file(METRICS)
    if not path.is_file():
        return None
    lines = path.read_text().splitlines()
    return json.loads(lines[-1])[key] if lines else None


def device_name(device: torch.device) -> str:
    """'cuda (NVIDIA H100 ...)' or 'cpu (AMD EPYC ...)' (the CPU's model name where the system
    tells it, else its architecture)."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        from partialft.utils.limits import cpu_name

        return f"cpu ({cpu_name()})"
    return device.type


def model_card(s: dict[str, Any]) -> str:
    """The MODEL_CARD.md of a finished run, from its summary."""
    c, f = s["config"], s["fractal"]
    rows = [
        ("architecture", f"timm `{s['model']}`"
         + (" (VisionTransformer: " + ", ".join(f"{k} {v}" for k, v in ARCH.items()) + ")"
            if s["model"] == NAME else "") + f", {s['params']:,} parameters"),
        ("corpus", f"{s['categories']} IFS categories (seed {s['seed']}), {f['min_maps']}-"
         f"{f['max_maps']} affine maps each, accepted by sigma-factor and filling rate >= "
         f"{f['fill_threshold']}; a fresh instance rendered for every training image"),
        ("instances", f"one parameter of one map times U({1 - f['jitter']:.1f}, "
         f"{1 + f['jitter']:.1f}); 8 flips/rotations; point density U({f['min_density']}, 1); "
         f"3x3 patches for {f['patch_prob']:.0%}; {f['gray_prob']:.0%} grayscale, the rest "
         f"colour; chaos game {f['chains']} chains x {f['iters']} steps at "
         f"{f['render_size']}x{f['render_size']}, pooled to {f['img_size']}x{f['img_size']}"),
        ("recipe", f"{s['steps']} steps x batch {c['batch_size']} ({s['images_seen']:,} "
         f"images), AdamW lr {c['lr']}, weight decay {c['weight_decay']}, {c['warmup_steps']} "
         f"warm-up steps then cosine to {c['min_lr']}, label smoothing "
         f"{c['label_smoothing']}, grad clip {c['grad_clip']}, precision {s['precision']}"),
        ("accuracy", f"{s['val_acc']}% top-1 on {s['val_images']:,} held-out generated "
         f"instances ({c['val_per_category']} per category); last training interval: loss "
         f"{s['final_train_loss']}, accuracy {s['final_train_acc']}%"),
        ("wall time", f"{s['wall_s']:.0f} s ({s['wall_s'] / 3600:.2f} h)"),
        ("device", f"{s['device']}, {s['processes']} process(es), {s['torch_threads']} torch "
         "thread(s)"),
        ("date", s["date"]),
        ("weights", f"float16 safetensors with the {s['categories']}-way fractal head (timm "
         "drops it when num_classes differs)"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    command = c["command"] or "(called from Python: partialft.training.pretrain.pretrain)"
    return f"""# {s['model']}: a ViT pretrained on synthetic fractals

Pretrained by `partialft pretrain` on a FractalDB-style formula-driven corpus rendered on the
fly (no natural images, no download). Load it with
`timm.create_model("{s['model']}", pretrained=True, num_classes=N)` after
`import partialft.models.backbone` (`partialft.models.create_model` does that itself).

| | |
|---|---|
{table}

Command:

```
{command}
```

References: Kataoka et al., "Pre-training without Natural Images", ACCV 2020 (FractalDB);
Nakashima et al., "Can Vision Transformers Learn without Natural Images?", AAAI 2022;
Anderson & Farrell, "Improving Fractal Pre-training", WACV 2022 (sigma-factor).
"""
