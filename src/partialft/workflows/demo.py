"""The offline demo: the whole method in minutes on a laptop CPU, with the bundled backbone.

Six runs under one directory, each a normal run dir (rerunning skips finished ones):
``scratch`` (no pretraining), ``linear``, ``full``, ``attn``, ``ffn`` and ``fapft`` (angles from
the full run, mode and top-k from the paper's guidelines: an easy task trains the layers with
the smallest angles, top-k from Table 7). Then ``report/`` holds the table and the figures.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from partialft.core.angles import compute_angles, save_angles
from partialft.core.layers import find_layers
from partialft.training.config import TrainConfig
from partialft.training.runs import base_state, load_run_model, reference_info
from partialft.utils.io import atomic_write_text

# (run name, method, pretrained) in the order they run; fapft needs full first.
RUNS = (("scratch", "full", False), ("linear", "linear", True), ("full", "full", True),
        ("attn", "attn", True), ("ffn", "ffn", True), ("fapft", "fapft", True))
# Paper Appendix B: easy datasets train the smallest-angle layers.
EASY = {"digits": "small", "fashion-mnist": "small"}


# the demo's recipe: a shipped config, so `partialft train --config digits_demo` is the same run
RECIPE = "digits_demo"


def demo_config(out: Path, dataset: str = "digits", model: str = "partialft_vit_tiny",
                epochs: int | None = None, max_per_split: int | None = None, seed: int = 0,
                threads: int | None = None) -> TrainConfig:
    """The one recipe every demo run shares (paper: partial runs reuse full FT's settings):
    the shipped config :data:`RECIPE`; ``epochs`` None keeps the config's."""
    from partialft.training.config_files import load_config

    overrides: dict[str, Any] = dict(model=model, dataset=dataset, seed=seed,
                                     max_per_split=max_per_split, out=str(out), threads=threads)
    if epochs is not None:
        overrides["epochs"] = epochs
    return load_config(RECIPE, overrides)


def run_demo(cfg: TrainConfig, progress: bool = True, log: Any = print) -> list[dict[str, Any]]:
    """Train the six runs (skipping finished ones), write the report; return the summaries."""
    from partialft.analysis.report import write_report
    from partialft.training.train import train

    out = Path(cfg.out)
    summaries = []
    for name, method, pretrained in RUNS:
        fapft = {"angles": str(_angles(out)), "mode": EASY.get(cfg.dataset, "large")} \
            if method == "fapft" else {}
        run_cfg = dataclasses.replace(cfg, method=method, pretrained=pretrained,
                                      out=str(out / name), **fapft)
        log(f"[{len(summaries) + 1}/{len(RUNS)}] {name}: method {method}"
            f"{'' if pretrained else ', no pretraining'}")
        summary = train(run_cfg, resume=True, progress=progress)
        summaries.append({**summary, "run": name})
    angles = out / "fapft-angles.json"
    write_report([out / name for name, _, _ in RUNS] + [angles], out / "report", overwrite=True)
    atomic_write_text(out / "demo.md", table(summaries))
    return summaries


def _angles(out: Path) -> Path:
    """Angles between the backbone and the demo's full fine-tuning run (written once)."""
    path = out / "fapft-angles.json"
    if not path.is_file():
        model, _ = load_run_model(out / "full")
        layer_map = find_layers(model)
        angles = compute_angles(base_state(out / "full"), model.state_dict(), layer_map)
        save_angles(path, angles, layer_map, **reference_info(out / "full"))
    return path


def table(summaries: list[dict[str, Any]]) -> str:
    """Markdown table: run, method, test/val accuracy, trainable parameters, time."""
    lines = ["| run | test acc (%) | best val acc (%) | trainable params | train time (s) |",
             "|---|---:|---:|---:|---:|"]
    for s in summaries:
        lines.append(f"| {s['run']} | {_num(s['test_acc'])} | {_num(s['best_acc'])} | "
                     f"{s['trainable_params']:,} | {s['wall_s']:.1f} |")
    return "\n".join(lines) + "\n"



def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
