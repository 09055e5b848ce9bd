"""Model soups (Wortsman et al. 2022; paper Sec. 3.3, Table 3) over full and partial runs.

Every ingredient is the same base model plus its own delta. An ingredient that did not train a
tensor contributes the base value for it, so a soup of partial runs averages each trained tensor
over *all* ingredients (the fine-tuned models), not only over the runs that trained it.

Rules:
- tensors no ingredient changed stay exactly the base's (they are not even written to the
  soup's delta, and averaging happens in float64 so identical values stay bit-identical);
- integer/bool tensors (``num_batches_tracked``, index buffers) are not averaged: the soup takes
  the first ingredient's value (the best one, for a greedy soup);
- the soup's trainable-parameter count is the sum over its ingredients (paper Table 3 accounting).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from partialft.errors import PartialFTError, first_items
from partialft.models import load_state_dict_file
from partialft.training.checkpoints import DELTA, SUMMARY, read_summary, save_tensors
from partialft.utils.io import atomic_write_json, atomic_write_text

StateDict = Mapping[str, torch.Tensor]
Evaluator = Callable[[dict[str, torch.Tensor]], float]


@dataclass
class Ingredient:
    """One fine-tuned model: a name (run dir), its trained tensors and its summary."""

    name: str
    delta: dict[str, torch.Tensor]
    summary: dict[str, Any] = field(default_factory=dict)
    base: dict[str, Any] = field(default_factory=dict)

    @property
    def trainable_params(self) -> int:
        value = self.summary.get("trainable_params")
        return int(value) if value is not None else sum(t.numel() for t in self.delta.values())


@dataclass
class SoupResult:
    """The soup's delta (changed tensors only) and how it was made."""

    delta: dict[str, torch.Tensor]
    kind: str
    used: list[str]
    rejected: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    val_acc: float | None = None
    ranking: dict[str, float] = field(default_factory=dict)  # greedy: each ingredient's val acc


def soup_base(ingredients: Sequence[Ingredient]) -> dict[str, Any]:
    """The soup's base: the ingredients' shared one, without the frozen-tensor hash of one
    ingredient's selection (the soup may train the union of several)."""
    return {k: v for k, v in ingredients[0].base.items() if k != "frozen_sha256"}


def check_same_base(ingredients: Sequence[Ingredient]) -> None:
    """Raise unless every ingredient names the same base model (model, classes, weights...)."""
    if not ingredients:
        raise PartialFTError("a soup needs at least one ingredient run dir.")
    first = ingredients[0]
    for other in ingredients[1:]:
        # frozen_sha256 covers the tensors a run did not train, which differ by method
        keys = sorted((set(first.base) | set(other.base)) - {"frozen_sha256"})
        diff = [k for k in keys if first.base.get(k) != other.base.get(k)]
        if diff:
            k = diff[0]
            raise PartialFTError(
                f"ingredient {other.name} has base {k}={other.base.get(k)!r} but {first.name} "
                f"has {k}={first.base.get(k)!r}; soup only runs fine-tuned from the same base.")
    check_same_task(ingredients)


# settings every ingredient must share: the task (data and classes) and how images are
# preprocessed; a soup of runs that differ in them averages models of different tasks
SAME_SETTINGS = ("dataset", "data_dir", "num_classes", "img_size", "mean", "std", "crop_pct",
                 "interpolation")


def check_same_task(ingredients: Sequence[Ingredient]) -> None:
    """Raise unless the ingredients trained on one dataset with one preprocessing and have one
    model structure (a PEFT baseline's modules, or none)."""
    from partialft.baselines import BASELINES

    first = ingredients[0]
    for other in ingredients[1:]:
        a, b = first.summary.get("config") or {}, other.summary.get("config") or {}
        for key in SAME_SETTINGS:
            if key in a and key in b and a[key] != b[key]:
                raise PartialFTError(
                    f"ingredient {other.name} was trained with {key} {b[key]!r} but "
                    f"{first.name} with {a[key]!r}; a soup averages runs of one dataset and "
                    "preprocessing.")
        sa, sb = (_structure(i, BASELINES) for i in (first, other))
        if sa != sb:
            raise PartialFTError(f"ingredient {other.name} has the model structure {sb} but "
                                 f"{first.name} has {sa}; a soup averages runs of one "
                                 "structure.")


def _structure(ing: Ingredient, baselines: Any) -> str:
    """A PEFT baseline's name and options, or the plain model of a layer method."""
    import json

    sel = ing.summary.get("selection") or {}
    if sel.get("method") not in baselines:
        return "of the plain model (a layer method)"
    options = {k: v for k, v in sel.items()
               if k not in ("method", "layers", "train_all", "soup", "ingredients",
                            "train_non_residual")}
    return f"{sel.get('method')} {json.dumps(options, sort_keys=True)}"


def changed_keys(base: StateDict, delta: StateDict) -> list[str]:
    """Keys of ``delta`` whose value differs from the base (all keys the base lacks)."""
    return [k for k, v in delta.items() if k not in base or not torch.equal(base[k], v)]


def _check_keys(base: StateDict, ingredients: Sequence[Ingredient]) -> None:
    for ing in ingredients:
        bad = [k for k, v in ing.delta.items() if k in base and base[k].shape != v.shape]
        if bad:
            raise PartialFTError(f"ingredient {ing.name} has {bad[0]} of shape "
                                 f"{tuple(ing.delta[bad[0]].shape)}, the base's is "
                                 f"{tuple(base[bad[0]].shape)}; it comes from another model.")
        extra = [k for k in ing.delta if k not in base
                 and not all(k in other.delta for other in ingredients)]
        if extra:
            raise PartialFTError(f"ingredient {ing.name} adds tensors the base lacks "
                                 f"({first_items(extra, 3)}) that other ingredients do not "
                                 "have; soup runs of the same method structure.")


def average(base: StateDict, deltas: Sequence[StateDict]) -> dict[str, torch.Tensor]:
    """Uniform average of the models base+delta_i, returned as a delta of changed tensors."""
    keys: dict[str, None] = {}
    for delta in deltas:
        keys.update(dict.fromkeys(changed_keys(base, delta)))
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        values = [d[key] if key in d else base[key] for d in deltas]
        if values[0].is_floating_point() or values[0].is_complex():
            acc = torch.zeros_like(values[0], dtype=torch.float64)
            for v in values:
                acc += v.to(torch.float64)  # float64: identical inputs average bit-exactly
            out[key] = (acc / len(values)).to(values[0].dtype)
        else:
            out[key] = values[0].clone()  # integer buffers: first ingredient's value
    return out


def uniform_soup(base: StateDict, ingredients: Sequence[Ingredient]) -> SoupResult:
    """Average all ingredients."""
    check_same_base(ingredients)
    _check_keys(base, ingredients)
    delta = average(base, [ing.delta for ing in ingredients])
    return SoupResult(delta=delta, kind="uniform", used=[ing.name for ing in ingredients])


# The greedy rule, stated once (code, `partialft soup --help`, docs and RESULTS say the same):
# Wortsman et al. 2022 (Model Soups), Recipe 1: rank the ingredients by their own held-out
# (val) accuracy, start from the best, and add each next one if the soup's held-out accuracy
# with it is not lower (the paper's Algorithm 1 writes >=). partialft follows the authors'
# official code (mlfoundations/model-soups main.py), which keeps an ingredient only when the
# accuracy strictly increases (>): ties keep the smaller soup. The ranking evaluates each
# ingredient's final weights, the ones that go into the soup, not its best epoch's accuracy.
GREEDY_RULE = ("ranked by the val accuracy of each ingredient's final weights, each next one "
               "added only if the soup's val accuracy strictly increases")


def greedy_soup(base: StateDict, ingredients: Sequence[Ingredient],
                evaluate: Evaluator) -> SoupResult:
    """Greedy soup (see :data:`GREEDY_RULE`).

    ``evaluate(full_state_dict) -> held-out (val) accuracy``; it is called once per ingredient
    alone (the ranking) and once per candidate soup.
    """
    check_same_base(ingredients)
    _check_keys(base, ingredients)
    alone = {ing.name: evaluate({**base, **ing.delta}) for ing in ingredients}
    order = sorted(ingredients, key=lambda ing: -alone[ing.name])  # stable: ties keep order
    kept = [order[0]]
    best = alone[order[0].name]
    history = [{"ingredient": order[0].name, "val_acc": best, "kept": True}]
    rejected: list[str] = []
    for ing in order[1:]:
        candidate = average(base, [k.delta for k in kept + [ing]])
        acc = evaluate({**base, **candidate})
        keep = acc > best
        history.append({"ingredient": ing.name, "val_acc": acc, "kept": keep})
        if keep:
            kept.append(ing)
            best = acc
        else:
            rejected.append(ing.name)
    delta = average(base, [k.delta for k in kept])
    return SoupResult(delta=delta, kind="greedy", used=[k.name for k in kept],
                      rejected=rejected, history=history, val_acc=best, ranking=alone)


def soup_params(ingredients: Sequence[Ingredient], used: Sequence[str]) -> dict[str, Any]:
    """Table 3 accounting: the soup's parameters are the sum of its ingredients' trained ones."""
    per = {ing.name: ing.trainable_params for ing in ingredients if ing.name in used}
    return {"trainable_params": sum(per.values()), "ingredient_params": per}


# --- run dirs ----------------------------------------------------------------------------------

def load_ingredient(run_dir: str | Path) -> Ingredient:
    """An ingredient from a finished run dir (its delta, summary and base metadata)."""
    from partialft.training.runs import delta_info

    meta = delta_info(run_dir)
    delta = load_state_dict_file(Path(run_dir) / DELTA)
    ing = Ingredient(name=str(run_dir), delta=delta, summary=read_summary(run_dir),
                     base=dict(meta["base"]))
    ing.summary.setdefault("selection", meta.get("selection", {}))
    return ing


def soup_selection(ingredients: Sequence[Ingredient], result: SoupResult) -> dict[str, Any]:
    """selection.json of the soup: a PEFT baseline's structure is kept, else method 'soup'."""
    from partialft.baselines import BASELINES

    sels = [ing.summary.get("selection", {}) for ing in ingredients if ing.name in result.used]
    structural = {s.get("method") for s in sels if s.get("method") in BASELINES}
    if structural:
        strip = [{k: v for k, v in s.items()
                  if k not in ("layers", "train_all", "train_non_residual")} for s in sels]
        if any(s != strip[0] for s in strip):
            raise PartialFTError(f"ingredients use different model structures "
                                 f"({', '.join(sorted(str(s.get('method')) for s in sels))}); "
                                 "a soup needs ingredients of one structure.")
        selection = dict(sels[0])
    else:
        selection = {"method": "soup"}
    layers = sorted({la for s in sels for la in s.get("layers", [])})
    selection.update(layers=layers, train_all=any(s.get("train_all") for s in sels),
                     soup=result.kind, ingredients=list(result.used))
    return selection


def soup_summary(ingredients: Sequence[Ingredient], result: SoupResult,
                 accuracies: Mapping[str, float | None]) -> dict[str, Any]:
    """summary.json of the soup run dir."""
    from partialft.training.runs import recipe

    used = [ing.summary for ing in ingredients if ing.name in result.used]
    first = used[0]
    params = soup_params(ingredients, result.used)
    seeds = {s.get("seed") for s in used}
    return {
        "method": "soup", "soup": result.kind, "model": first.get("model"),
        "num_classes": first.get("num_classes"), "dataset": first.get("dataset"),
        # one seed when every ingredient has it: soups of several seeds then average in reports
        "seed": seeds.pop() if len(seeds) == 1 else None,
        # what the ingredients were, without paths: reports group and name soups by it
        "ingredient_recipes": [{**recipe(s.get("config") or {}), "method": s.get("method"),
                                "angles_from": s.get("angles_from")} for s in used],
        "ingredients": [ing.name for ing in ingredients], "used": result.used,
        "rejected": result.rejected, "greedy_history": result.history,
        "ingredient_methods": {i.name: i.summary.get("method") for i in ingredients},
        # a greedy soup's ranking (final weights on val); else the runs' own best_acc
        "ingredient_val_acc": result.ranking or {i.name: i.summary.get("best_acc")
                                                 for i in ingredients},
        "layers": soup_selection(ingredients, result)["layers"],
        **params,
        "union_params": sum(t.numel() for t in result.delta.values()),
        "total_params": first.get("total_params"),
        "best_acc": accuracies.get("val_acc"), "final_acc": accuracies.get("val_acc"),
        "test_acc": accuracies.get("test_acc"),
        "config": {**first.get("config", {}), "method": "soup"},
    }


def write_soup_run(out: str | Path, ingredients: Sequence[Ingredient], result: SoupResult,
                   accuracies: Mapping[str, float | None], overwrite: bool = False) -> Path:
    """Write the soup as a run dir (delta, summary, selection, config); ingredients untouched."""
    from partialft.models import file_digest
    from partialft.training.rundir import RunDir
    from partialft.training.runs import CONFIG, SELECTION, SPLIT, read_config

    out = Path(out)
    selection = soup_selection(ingredients, result)
    summary = soup_summary(ingredients, result, accuracies)
    run = RunDir(out, kind="soup", overwrite=overwrite, inputs=[i.name for i in ingredients])
    try:
        first = Path(ingredients[0].name)
        delta = save_tensors(out / DELTA, result.delta, {"format": "partialft-delta",
                                                         "base": soup_base(ingredients),
                                                         "selection": selection})
        summary["delta_sha256"] = file_digest(delta)["sha256"]  # readers check it is this one
        atomic_write_json(out / SELECTION, selection)
        if (first / SPLIT).is_file():
            atomic_write_text(out / SPLIT, (first / SPLIT).read_text())
        cfg = read_config(first) if (first / CONFIG).is_file() else {}
        atomic_write_text(out / CONFIG, yaml.safe_dump({**cfg, "method": "soup"}))
        atomic_write_json(out / SUMMARY, summary)
    except BaseException:
        run.abandon()
        raise
    run.close()
    return out
