"""``search.md``, ``search.json`` and ``search.png`` of a search, from its Optuna study."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from partialft.training.config import TrainConfig
from partialft.utils.io import atomic_write_json, atomic_write_text


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row per finished (complete or pruned) trial, in trial order."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        attrs = t.user_attrs
        choice = attrs.get("choice") or {}
        pruned = t.state == TrialState.PRUNED
        val = (max(t.intermediate_values.values()) if pruned and t.intermediate_values
               else t.value)
        rows.append({"trial": t.number, "mode": choice.get("mode"), "topk": choice.get("topk"),
                     "lr": choice.get("lr"), "trainable_params": attrs.get("trainable_params"),
                     "val_acc": val, "epochs": (attrs.get("pruned_at_epoch") if pruned
                                                else len(t.intermediate_values) or None),
                     "wall_s": attrs.get("wall_s"), "pruned": pruned,
                     "run_dir": attrs.get("run_dir"), "test_acc": attrs.get("run_test_acc")})
    return rows


def write_report(study: Any, out: Path, cfg: TrainConfig, full_dir: str | None
                 ) -> dict[str, Any]:
    """Write the table, the record and the plot; return the record."""
    rows = trial_rows(study)
    complete = [r for r in rows if not r["pruned"] and r["val_acc"] is not None]
    # the study's best (val acc; Optuna keeps the first of equal values)
    best_number = study.best_trial.number if complete else None
    best = next((r for r in rows if r["trial"] == best_number), None)
    full = _full_summary(full_dir)
    record = {"n_trials": len(rows), "pruned": sum(r["pruned"] for r in rows),
              "best": best and {k: v for k, v in best.items() if k != "pruned"},
              "full": full, "trials": [{**r, "test_acc": None} for r in rows],
              "pruner": "MedianPruner", "sampler": "TPESampler",
              "model": cfg.model, "dataset": cfg.dataset}
    atomic_write_json(out / "search.json", record)
    atomic_write_text(out / "search.md", _markdown(rows, best, full))
    _plot(rows, best, full, out / "search.png")
    return record


def _full_summary(full_dir: str | None) -> dict[str, Any] | None:
    if not full_dir or not (Path(full_dir) / "summary.json").is_file():
        return None
    from partialft.training.checkpoints import read_summary

    s = read_summary(Path(full_dir))
    return {k: s.get(k) for k in ("best_acc", "test_acc", "trainable_params", "wall_s")}


def _num(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _markdown(rows: list[dict[str, Any]], best: dict[str, Any] | None,
              full: dict[str, Any] | None) -> str:
    lines = ["# partialft search", "",
             "| trial | mode | top-k | lr | trainable params | val acc (%) | test acc (%) | "
             "epochs | wall (s) | pruned |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        is_best = best is not None and r["trial"] == best["trial"]
        test = _num(r["test_acc"], ".2f") if is_best else ""
        lines.append(f"| {r['trial']}{' (best)' if is_best else ''} | {r['mode']} | "
                     f"{r['topk']} | {_num(r['lr'], '.3g')} | "
                     f"{_num(r['trainable_params'], ',')} | {_num(r['val_acc'], '.2f')} | "
                     f"{test} | {_num(r['epochs'], 'd')} | {_num(r['wall_s'], '.1f')} | "
                     f"{'yes' if r['pruned'] else 'no'} |")
    lines.append("")
    if best is not None:
        lines.append(f"Best trial {best['trial']} (highest validation accuracy; the test split "
                     f"chose nothing): run dir {best['run_dir']}.")
    if full is not None:
        lines.append(f"Full fine-tuning: val acc {_num(full['best_acc'], '.2f')}%, test acc "
                     f"{_num(full['test_acc'], '.2f')}%, {full['trainable_params']:,} "
                     f"trainable params, {_num(full['wall_s'], '.1f')} s.")
    lines.append(f"{len(rows)} trials, {sum(r['pruned'] for r in rows)} pruned (median "
                 "pruner on per-epoch validation accuracy).")
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict[str, Any]], best: dict[str, Any] | None,
          full: dict[str, Any] | None, path: Path) -> None:
    """Val accuracy vs trainable parameters; pruned trials faded; skipped without matplotlib."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from partialft.utils.io import atomic_write

    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, colour in (("large", "tab:red"), ("small", "tab:blue")):
        for pruned, alpha in ((False, 1.0), (True, 0.25)):
            pts = [r for r in rows if r["mode"] == mode and r["pruned"] == pruned
                   and r["trainable_params"] and r["val_acc"] is not None]
            if pts:
                ax.scatter([r["trainable_params"] for r in pts], [r["val_acc"] for r in pts],
                           c=colour, alpha=alpha, label=f"{mode}{' (pruned)' if pruned else ''}")
    if best is not None and best["trainable_params"]:
        ax.scatter([best["trainable_params"]], [best["val_acc"]], s=160, facecolors="none",
                   edgecolors="k", label=f"best (trial {best['trial']})")
    if full is not None and full.get("best_acc") is not None:
        ax.scatter([full["trainable_params"]], [full["best_acc"]], marker="*", s=120, c="k",
                   label="full fine-tuning")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel("validation accuracy (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
