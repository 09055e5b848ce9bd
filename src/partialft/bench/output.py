"""Bench output: bench.json, a Markdown table (bench.md) and a Fig. 5-style chart (bench.png)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from partialft.training.reruns import check_output, open_output
from partialft.training.rundir import RunDir
from partialft.utils.io import atomic_write, atomic_write_json, atomic_write_text

FILES = ("bench.json", "bench.md", "bench.png")
# (row key, panel title, y label) of the four panels of the paper's Fig. 5
PANELS = (("train_ms", "(a) Training latency", "ms per step"),
          ("train_peak_mb", "(b) Training memory", "peak"),
          ("infer_ms", "(c) Test latency", "ms per batch"),
          ("infer_peak_mb", "(d) Test memory", "peak"))


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def _params(n: int) -> str:
    return f"{n / 1e6:.3f} M" if n >= 1e5 else f"{n:,}"


def markdown(result: dict[str, Any]) -> str:
    """The bench as a Markdown page: setup line, one table row per method, notes."""
    o = result["options"]
    mem = "MiB allocated (CUDA)" if result["memory"]["kind"] == "cuda" else "MiB peak RSS"
    lines = [
        f"# partialft bench: {o['model']}",
        "",
        f"{result['device']}, {result['threads']} torch thread(s), batch {o['batch_size']}, "
        f"{o['img_size']} px, "
        f"{result['num_classes']} classes, amp {o['amp']}, compile {o['compile']}, "
        f"median of {o['steps']} steps after {o['warmup']} warm-up; torch {result['torch']}, "
        f"timm {result['timm']}; {result['date']}.",
        "",
        f"| method | trainable params | train ms/step | train img/s | train peak {mem} "
        "(+ over start) | saved for backward MiB | test ms/batch | test peak "
        f"{mem} (+ over start) | plain step ms | partialft / plain |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['label']} | {_params(r['trainable_params'])} | {_num(r['train_ms'], 2)} | "
            f"{_num(r['train_images_per_s'])} | {_num(r['train_peak_mb'])} "
            f"(+{_num(r['train_peak_delta_mb'])}) | {_num(r['saved_activations_mb'], 2)} | "
            f"{_num(r['infer_ms'], 2)} | {_num(r['infer_peak_mb'])} "
            f"(+{_num(r['infer_peak_delta_mb'])}) | {_num(r['plain_ms'], 2)} | "
            f"{r['overhead']:.3f}x |")
    lines += ["", *_footnotes(result)]
    return "\n".join(lines) + "\n"


def _footnotes(result: dict[str, Any]) -> list[str]:
    out = [f"- Memory: {result['memory']['measures']}.",
           "- partialft / plain: median of the real `partialft train` step "
           "(`partialft.training.loop.train_step`) over the median of a hand-written PyTorch "
           "step on the same model, timed alternately in one process.",
           "- Saved for backward: bytes autograd keeps for the backward pass in one training "
           "forward (parameters excluded); frozen layers before the first trained one add none."]
    opt = sorted({r["optimizer"] for r in result["rows"]})
    out.append(f"- Optimizer: {', '.join(opt)}.")
    if result.get("loader"):
        ld = result["loader"]
        out.append(f"- Data: the trainer's loader yields {ld['images_per_s']:,.0f} images/s of "
                   f"in-memory {ld['dtype']} {tuple(ld['image_shape'])} images (workers "
                   f"{ld['workers']}); resizing and normalising run on the device in the step.")
    if result.get("fapft_standin"):
        sa = result["fapft_standin"]
        out.append(f"- fapft stand-in: {sa['note']} Layers: {', '.join(sa['layers'])}.")
    out += [f"- {note}" for note in result.get("notes", [])]
    return out


def chart(result: dict[str, Any], path: Path) -> None:
    """Four bar panels like the paper's Fig. 5; ablation rows hatched."""
    rows = result["rows"]
    from partialft.utils.extras import require

    require("matplotlib", "bench.png")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 8.5), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    labels = [r["label"] for r in rows]
    colors = [f"C{i % 10}" for i in range(len(rows))]
    rss = result["memory"]["kind"] == "rss"
    for ax, (key, title, unit) in zip(axes, PANELS, strict=True):
        if rss and key.endswith("_mb"):  # absolute RSS carries the process and allocator cache
            key, unit = key.replace("_mb", "_delta_mb"), "peak RSS increase"
        values = [r[key] if r[key] is not None else 0.0 for r in rows]
        bars = ax.bar(range(len(rows)), values, color=colors,
                      label=labels if ax is axes[0] else None)
        for bar, r in zip(bars, rows, strict=True):
            if r["ablation"]:
                bar.set_hatch("//")
        ax.set_title(title)
        ax.set_ylabel(unit if key.endswith("ms") else f"{unit}, MiB ({result['memory']['kind']})")
        ax.set_xlabel("method")
        ax.set_xticks(range(len(rows)), labels, rotation=45, ha="right", fontsize=8)
    o = result["options"]
    fig.suptitle(f"Computational cost per method: {o['model']}, batch {o['batch_size']}, "
                 f"amp {o['amp']}, {result['device']}")
    fig.legend(loc="outside right upper", fontsize=8, title="method")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def check_free(out: Path, overwrite: bool, inputs: Sequence[str | Path | None] = (),
               settings: dict[str, Any] | None = None) -> None:
    """Refuse to replace earlier bench files unless ``overwrite`` (or to write over inputs); a
    bench killed half-way with the same ``settings`` is simply run again."""
    check_output(out, "bench", settings or {}, overwrite=overwrite, inputs=inputs)


def open_out(out: str | Path, overwrite: bool = False,
             inputs: Sequence[str | Path | None] = (),
             settings: dict[str, Any] | None = None) -> RunDir:
    """Claim and lock the bench dir for the whole bench: its scratch runs live inside it;
    :func:`partialft.training.reruns.finish` declares it complete after its last file."""
    return open_output(out, "bench", settings or {}, overwrite=overwrite, inputs=inputs)


def write_outputs(result: dict[str, Any], out: str | Path) -> Sequence[Path]:
    """Write bench.json, bench.md and bench.png into ``out`` (held by :func:`open_out`)."""
    paths = [Path(out) / name for name in FILES]
    atomic_write_json(paths[0], result)
    atomic_write_text(paths[1], markdown(result))
    chart(result, paths[2])
    return paths
