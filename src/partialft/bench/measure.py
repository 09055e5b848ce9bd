"""The cost of every method, like the paper's Fig. 5, measured on the trainer's real step.

For each method :func:`run_bench` builds the exact training setup ``partialft train`` uses
(:func:`partialft.training.setup.build` on an in-memory synthetic dataset, in a temporary run
dir) and measures, on one fixed random batch:

* inference: median latency of ``model(x)`` under ``inference_mode`` and the phase's peak memory;
* training: the phase's peak memory over the warm-up steps of
  :func:`partialft.training.loop.train_step`, the step ``partialft train`` runs, then the median
  time of that step, timed alternately (ABAB...) with a hand-written PyTorch step on the same model
  (:class:`PlainStep`), and their ratio;
* the bytes autograd saves for backward in one training forward (exact, see
  :func:`partialft.bench.memory.saved_tensor_bytes`).

``ablate`` adds rows that make each efficiency measure visible (see :func:`plan_variants`).
Output writing (JSON, Markdown, the Fig. 5-style chart) is in :mod:`partialft.bench.output`.
"""

from __future__ import annotations

import datetime
import gc
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from partialft.bench.memory import MB, PeakMemory, saved_tensor_bytes
from partialft.bench.options import BenchOptions, Variant, plan_variants
from partialft.bench.steps import PlainStep, median, optimizer_impl, sync, timed
from partialft.errors import PartialFTError
from partialft.utils.io import TMP_SUFFIX, tmp_prefix

SYNTHETIC_TRAIN_PER_CLASS = 24  # partialft.data.memory.SYNTHETIC_PER_CLASS["train"]
STANDIN = ("no --angles given: angles = layer depth (deeper = larger), mode large, so fapft trains "
           "the top-k DEEPEST layers of each group (paper Table 7 default k). Cost depends on "
           "how deep the first trained layer is (everything before it runs without autograd), "
           "so this is the cheapest placement of k layers per group; real angles may pick "
           "earlier layers and cost more.")


@dataclass
class Context:
    """What every row shares: options, device, memory meter, scratch dir, stand-in angles."""

    opts: BenchOptions
    device: torch.device
    meter: PeakMemory
    workdir: Path
    num_classes: int
    standin: dict[str, Any] | None = None
    loader: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def _config(ctx: Context, v: Variant) -> Any:
    from partialft.training.config import TrainConfig

    opts = ctx.opts
    angles = opts.angles or (_standin_angles(ctx) if v.method == "fapft" else None)
    return TrainConfig(
        model=opts.model, pretrained=False, layer_spec=opts.layer_spec, method=v.method,
        angles=angles, topk=opts.topk, mode="large" if v.method == "fapft" else None,
        dataset=f"synthetic:{ctx.num_classes}",
        img_size=opts.img_size, batch_size=opts.batch_size, hflip=0.0, crop_scale=1.0,
        amp=opts.amp, grad_clip=opts.grad_clip, epochs=1, seed=0,
        compile=opts.compile if v.compile is None else v.compile,
        out=str(ctx.workdir / f"run{len(list(ctx.workdir.glob('run*')))}"))


def check_variants(ctx: Context, variants: list[Variant]) -> None:
    """Each row's selection on the meta device, so a bad option fails before any measuring."""
    from partialft.core.angles import load_angles
    from partialft.core.layers import find_layers
    from partialft.methods import prepare
    from partialft.models import create_model

    if "layers" in ctx.opts.methods:
        raise PartialFTError("bench cannot measure method 'layers' (it takes no layer ids); "
                             "measure a named strategy such as attn or last-half-blocks.")
    for v in variants:
        cfg = _config(ctx, v)
        with torch.device("meta"):
            model = create_model(cfg.model, num_classes=ctx.num_classes, img_size=cfg.img_size)
        layer_map = find_layers(model, cfg.layer_spec)
        angles = load_angles(cfg.angles, layer_map) if cfg.method == "fapft" else None
        fapft = {"angles": angles, "topk": cfg.topk, "mode": cfg.mode} \
            if cfg.method == "fapft" else {}
        prepare(model, cfg.method, layer_spec=cfg.layer_spec, **cfg.baseline_options(), **fapft)


def _standin_angles(ctx: Context) -> str:
    """An angles file ranking layers by depth (the documented fapft stand-in)."""
    from partialft.core.angles import save_angles
    from partialft.core.layers import find_layers
    from partialft.models import create_model

    path = ctx.workdir / "depth-angles.json"
    if not path.is_file():
        with torch.device("meta"):
            model = create_model(ctx.opts.model, num_classes=ctx.num_classes)
        layer_map = find_layers(model, ctx.opts.layer_spec)
        n = len(layer_map.layers)
        angles = {la.id: 180.0 * (i + 1) / (n + 1) for i, la in enumerate(layer_map.layers)}
        save_angles(path, angles, layer_map, note="bench stand-in: angle = depth")
    return str(path)


def _setup(ctx: Context, v: Variant) -> Any:
    """train.build for this row, then the row's one switched efficiency measure."""
    from partialft.training.setup import build

    s = build(_config(ctx, v))
    if v.optimizer is not None:
        from timm.optim import create_optimizer_v2

        flags = {"fused": v.optimizer == "fused", "foreach": v.optimizer == "foreach"}
        opt = create_optimizer_v2(s.prepared.model, opt="adamw", lr=s.cfg.lr,
                                  weight_decay=s.cfg.weight_decay, **flags)
        s.optimizer = s.acc.prepare_optimizer(opt)
    if v.channels_last is False:
        s.prepared.model.to(memory_format=torch.contiguous_format)
    return s


def _describe(v: Variant, s: Any) -> dict[str, Any]:
    summary = s.prepared.summary
    first = next((n for n, p in s.prepared.model.named_parameters() if p.requires_grad), None)
    return {"label": v.label, "method": v.method, "ablation": v.ablation,
            "trainable_params": summary.trainable_params, "total_params": summary.total_params,
            "layers": list(s.prepared.selection.layers), "first_trainable": first,
            "optimizer": optimizer_impl(s)[0], "compile": s.cfg.compile,
            "channels_last": _channels_last(s.prepared.model)}


def _channels_last(model: nn.Module) -> bool:
    weights = [p for p in model.parameters() if p.ndim == 4]
    return bool(weights) and all(
        p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
        for p in weights)


def _inference(ctx: Context, s: Any, x: torch.Tensor) -> dict[str, Any]:
    """Median test latency and the phase's peak memory (eval mode, inference_mode)."""
    model, n = s.model, x.shape[0]
    model.eval()

    def forward() -> None:
        with torch.inference_mode(), s.acc.autocast():
            model(x)

    ctx.meter.start()
    for _ in range(ctx.opts.warmup):
        timed(forward, ctx.device)
    times = [timed(forward, ctx.device) for _ in range(ctx.opts.steps)]
    peak, delta = ctx.meter.stop()
    ms = median(times)
    return {"infer_ms": ms, "infer_images_per_s": round(1000.0 * n / ms, 1),
            "infer_peak_mb": peak, "infer_peak_delta_mb": delta}


def _saved(s: Any, x: torch.Tensor) -> dict[str, Any]:
    model = s.model
    model.train()

    def forward() -> torch.Tensor:
        with s.acc.autocast():
            return model(x)

    return {"saved_activations_mb": round(saved_tensor_bytes(forward, model.parameters()) / MB,
                                          3)}


def _training(ctx: Context, s: Any, x: torch.Tensor, xn: torch.Tensor, y: torch.Tensor
              ) -> dict[str, Any]:
    """Peak memory over the warm-up steps, then ABAB medians of the real and the plain step."""
    from partialft.training.loop import train_step

    s.model.train()
    real = lambda: train_step(s, x, y)  # noqa: E731
    ctx.meter.start()
    for _ in range(ctx.opts.warmup):
        timed(real, ctx.device)
    peak, delta = ctx.meter.stop()
    plain = PlainStep(s.model, s.criterion, ctx.opts.amp, ctx.opts.grad_clip,
                      optimizer_impl(s)[1])
    reference = lambda: plain(xn, y)  # noqa: E731
    for _ in range(ctx.opts.warmup):
        timed(reference, ctx.device)
    a, b = [], []
    for _ in range(ctx.opts.steps):  # alternate, so drifts in machine load hit both alike
        a.append(timed(real, ctx.device))
        b.append(timed(reference, ctx.device))
    ms, plain_ms = median(a), median(b)
    return {"train_ms": ms, "train_images_per_s": round(1000.0 * x.shape[0] / ms, 1),
            "train_peak_mb": peak, "train_peak_delta_mb": delta, "plain_ms": plain_ms,
            "overhead": round(ms / plain_ms, 3)}


def _batch(ctx: Context, s: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed random batch: raw images in [0, 1] at img_size, normalised copy, labels."""
    g = torch.Generator().manual_seed(0)
    n, size, chans = ctx.opts.batch_size, s.cfg.img_size, s.augment_train.in_chans
    x = torch.rand(n, chans, size, size, generator=g).to(ctx.device)
    y = torch.randint(0, ctx.num_classes, (n,), generator=g).to(ctx.device)
    with torch.no_grad():
        xn = s.augment_eval(x)
    if _channels_last(s.prepared.model):
        xn = xn.contiguous(memory_format=torch.channels_last)
    return x, xn, y


def measure(ctx: Context, v: Variant) -> dict[str, Any]:
    """One row: build the setup, time inference, count saved tensors, time training."""
    s = _setup(ctx, v)
    try:
        x, xn, y = _batch(ctx, s)
        row = _describe(v, s)
        row |= _inference(ctx, s, xn)
        row |= _saved(s, xn)
        row |= _training(ctx, s, x, xn, y)
        if v.method == "fapft" and not ctx.opts.angles:
            ctx.standin = {"note": STANDIN, "layers": row["layers"],
                           "topk": s.prepared.selection.options.get("topk")}
        if ctx.loader is None:
            ctx.loader = loader_speed(ctx, s)
        return row
    finally:
        s.run.close()
        del s
        gc.collect()
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()


def loader_speed(ctx: Context, s: Any) -> dict[str, Any]:
    """Images/s of the trainer's own loader on the in-memory set, batches moved to the device."""
    from partialft.training.loaders import loader

    batches = 0
    start = time.perf_counter()
    for xb, _ in loader(s.data.train, s.batches.sampler(0), s.cfg.workers):
        xb.to(ctx.device, non_blocking=True)
        batches += 1
        if batches == ctx.opts.steps:
            break
    sync(ctx.device)
    seconds = time.perf_counter() - start
    shape = list(s.data.train[0][0].shape)
    return {"images_per_s": round(batches * ctx.opts.batch_size / seconds, 1),
            "batches": batches, "workers": s.cfg.workers, "image_shape": shape,
            "dtype": str(s.data.train[0][0].dtype).removeprefix("torch.")}


def _family(opts: BenchOptions, num_classes: int) -> str:
    from partialft.core.layers import find_layers
    from partialft.models import create_model

    with torch.device("meta"):
        model = create_model(opts.model, num_classes=num_classes)
    return find_layers(model, opts.layer_spec).family


def run_bench(opts: BenchOptions, progress: Callable[[str], None] | None = None,
              scratch: Path | None = None) -> dict[str, Any]:
    """Measure every row of ``opts`` and return the bench result (what bench.json holds).

    The runs being measured live in a temporary folder inside ``scratch`` (the bench's own
    output dir; default: the system's temporary folder), named as partialft's temporary files
    are, so one a killed bench left behind is removed when that dir is next opened.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    num_classes = max(opts.num_classes, math.ceil(opts.batch_size / SYNTHETIC_TRAIN_PER_CLASS))
    variants, notes = plan_variants(opts, device, _family(opts, num_classes))
    threads = torch.get_num_threads()
    torch.set_num_threads(opts.threads or threads)
    try:
        with tempfile.TemporaryDirectory(dir=scratch, prefix=tmp_prefix("bench"),
                                         suffix=TMP_SUFFIX) as tmp:
            ctx = Context(opts, device, PeakMemory(device), Path(tmp), num_classes, notes=notes)
            check_variants(ctx, variants)
            rows = []
            for i, v in enumerate(variants):
                if progress:
                    progress(f"[{i + 1}/{len(variants)}] {v.label}")
                rows.append(measure(ctx, v))
    finally:
        torch.set_num_threads(threads)
    return _result(ctx, rows, opts.threads or threads)


def _result(ctx: Context, rows: list[dict[str, Any]], threads: int) -> dict[str, Any]:
    import timm

    from partialft import __version__

    meter = ctx.meter
    memory = ("torch.cuda.max_memory_allocated after reset_peak_memory_stats (MiB)"
              if meter.kind == "cuda" else
              "peak resident set size of this process (Linux VmHWM, reset before each phase; "
              "MiB). The absolute peak includes the interpreter, libraries, model and memory the "
              "allocator kept from earlier rows, so it drifts up row by row; compare rows by "
              "the increase over the phase's starting RSS")
    notes = ctx.notes + ([meter.note] if meter.note else [])
    img_size = ctx.opts.img_size or _img_size(ctx.opts.model)
    return {
        "options": {**asdict(ctx.opts), "methods": list(ctx.opts.methods), "img_size": img_size},
        "num_classes": ctx.num_classes, "device": _device_name(ctx.device), "threads": threads,
        "torch": torch.__version__, "timm": timm.__version__, "partialft": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "memory": {"kind": meter.kind, "measures": memory}, "fapft_standin": ctx.standin,
        "loader": ctx.loader, "notes": notes, "rows": rows,
    }


def _img_size(model: str) -> int:
    from partialft.models import default_input_size

    return int(default_input_size(model)[-1])


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    import os

    return f"cpu ({os.cpu_count()} cores)"
