"""Validated readers of the files in a run dir (summary.json, config.yaml, selection.json,
eval.json): a run dir may come from elsewhere, be truncated by a full disk or edited by hand.

Each reader checks that the file is UTF-8, parses (JSON, or YAML read with ``safe_load``),
is a mapping, and that every field partialft uses has the type it expects. A damaged file is
refused with one sentence naming the file and what is wrong, never a traceback further on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from partialft.errors import PartialFTError
from partialft.utils.parse import load_json, load_yaml

SUMMARY = "summary.json"
CONFIG = "config.yaml"
SELECTION = "selection.json"
EVAL = "eval.json"

NUMBER = (int, float)
OPT_NUMBER = (int, float, type(None))
OPT_INT = (int, type(None))
OPT_STR = (str, type(None))

# the fields partialft reads from each file and the JSON/YAML types each may have
SUMMARY_FIELDS: dict[str, tuple[type, ...]] = {
    "method": (str,), "model": OPT_STR, "num_classes": OPT_INT, "dataset": OPT_STR,
    "seed": OPT_INT, "layers": (list,), "trainable_params": OPT_INT, "total_params": OPT_INT,
    "best_acc": OPT_NUMBER, "final_acc": OPT_NUMBER, "test_acc": OPT_NUMBER,
    "wall_s": OPT_NUMBER, "config": (dict,), "angles_from": (dict, type(None)),
    "soup": OPT_STR, "used": (list,), "ingredients": (list,), "ingredient_recipes": (list,),
    "delta_sha256": (str,), "full_sha256": (str,), "topk": (list, int, str, type(None)),
}
CONFIG_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,), "dataset": (str,), "img_size": (int,), "val_fraction": NUMBER,
    "seed": (int,), "data_dir": OPT_STR, "max_per_split": OPT_INT, "crop_pct": OPT_NUMBER,
    "interpolation": OPT_STR, "mean": (list, type(None)), "std": (list, type(None)),
    "num_classes": OPT_INT, "method": (str,), "angles": OPT_STR, "checkpoint": OPT_STR,
    "pretrained": (bool,),
}
SELECTION_FIELDS: dict[str, tuple[type, ...]] = {
    "method": (str,), "layers": (list,), "train_all": (bool,),
    "topk": (list, int, str, type(None)), "mode": OPT_STR,
}
# the config fields a run's data and model are rebuilt from (eval, soup, export)
CONFIG_REQUIRED = ("model", "dataset", "img_size", "val_fraction", "seed")


def damaged(path: Path, problem: str) -> PartialFTError:
    """The one sentence for a damaged run-dir file."""
    return PartialFTError(f"{path} is damaged: {problem}; restore the file or train the run "
                          "again.")


def _text(path: Path, what: str) -> str:
    if not path.is_file():
        kind = "is not a regular file" if path.exists() else "is missing"
        raise PartialFTError(f"{path} {kind}; is {path.parent} a finished partialft run dir "
                             f"(it needs its {what})?")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise damaged(path, f"it is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise PartialFTError(f"{path} cannot be read ({exc.strerror}).") from None


def read_json(path: str | Path, what: str = "file") -> Any:
    """Parsed JSON of a run-dir file, or one sentence saying it is truncated, not JSON or nested
    too deeply (partialft's one loader for user JSON, :mod:`partialft.utils.parse`)."""
    path = Path(path)
    return load_json(_text(path, what), str(path))


def read_yaml(path: str | Path, what: str = "file") -> Any:
    """Parsed YAML of a run-dir file (safe constructors, no aliases, bounded nesting)."""
    path = Path(path)
    return load_yaml(_text(path, what), str(path))


def check_mapping(data: Any, path: Path, fields: dict[str, tuple[type, ...]],
                  required: tuple[str, ...] = ()) -> dict[str, Any]:
    """``data`` as a mapping whose ``fields`` (when present) have their types, and which has
    every ``required`` field."""
    if not isinstance(data, dict):
        raise damaged(path, f"it holds {_kind(data)}, not a mapping of fields")
    missing = [k for k in required if k not in data]
    if missing:
        raise damaged(path, f"it lacks the field {missing[0]!r}")
    for key, kinds in fields.items():
        if key in data and not is_kind(data[key], kinds):
            raise damaged(path, f"field {key!r} is {_kind(data[key])}, not "
                          f"{' or '.join(_name(k) for k in kinds)}")
    return data


def is_kind(value: Any, kinds: tuple[type, ...]) -> bool:
    """isinstance, except that a bool is no number and a float must be finite."""
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, kinds)


def _name(kind: type) -> str:
    return {dict: "a mapping", list: "a list", str: "text", int: "an integer",
            float: "a number", bool: "true/false", type(None): "null"}.get(kind, kind.__name__)


def _kind(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, float, str)):
        text = json.dumps(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return _name(type(value))


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """summary.json of a finished run, its fields checked."""
    path = Path(run_dir) / SUMMARY
    data = check_mapping(read_json(path, SUMMARY), path, SUMMARY_FIELDS, ("method",))
    if "ingredient_recipes" in data and not all(isinstance(r, dict)
                                                for r in data["ingredient_recipes"]):
        raise damaged(path, "field 'ingredient_recipes' must list mappings")
    if "config" in data:
        check_mapping(data["config"], path, CONFIG_FIELDS)
    return data


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """config.yaml of a run, with the fields its data and model are rebuilt from."""
    path = Path(run_dir) / CONFIG
    return check_mapping(read_yaml(path, CONFIG), path, CONFIG_FIELDS, CONFIG_REQUIRED)


def read_selection(run_dir: str | Path) -> dict[str, Any]:
    """selection.json of a run ({} when the run has none)."""
    path = Path(run_dir) / SELECTION
    if not path.exists():
        return {}
    data = check_mapping(read_json(path, SELECTION), path, SELECTION_FIELDS, ("method",))
    return data


def read_evals(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """eval.json of a run: evaluation key -> result mapping ({} when never evaluated)."""
    path = Path(run_dir) / EVAL
    if not path.exists():
        return {}
    data = check_mapping(read_json(path, EVAL), path, {})
    bad = next((k for k, v in data.items() if not isinstance(v, dict)), None)
    if bad is not None:
        raise damaged(path, f"entry {bad[:40]!r} is {_kind(data[bad])}, not a mapping of "
                      "metrics")
    return data
