"""Fine-tuned angles (paper Eq. 2) and agreement between angle rankings (Kendall tau)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from scipy.stats import kendalltau

from partialft.core.layers import LayerMap
from partialft.errors import PartialFTError, check_input_file, first_items
from partialft.utils.parse import load_json

StateDict = Mapping[str, torch.Tensor]


def check_compatible(pretrained: StateDict, finetuned: StateDict, names: list[str]) -> None:
    """Raise a clear error naming the first missing or mis-shaped tensors among ``names``."""
    for label, sd in (("pretrained", pretrained), ("fine-tuned", finetuned)):
        missing = [n for n in names if n not in sd]
        if missing:
            raise PartialFTError(
                f"the {label} weights lack {len(missing)} tensor(s) the model's layers need, "
                f"first: {first_items(missing, 3)}; were they saved from another model?"
            )
    bad = [n for n in names if tuple(pretrained[n].shape) != tuple(finetuned[n].shape)]
    if bad:
        n = bad[0]
        raise PartialFTError(
            f"tensor {n} has shape {tuple(pretrained[n].shape)} in the pretrained weights but "
            f"{tuple(finetuned[n].shape)} in the fine-tuned weights ({len(bad)} mismatch(es), "
            f"first: {first_items(bad, 3)}); both must come from the same architecture."
        )


def layer_angle(pretrained: list[torch.Tensor], finetuned: list[torch.Tensor]) -> float:
    """Angle in degrees between two flattened weight vectors (Eq. 2), computed in float64.

    A zero vector has no direction: two zero vectors give 0, one zero vector gives 90.
    """
    dot = norm_p = norm_f = 0.0
    for p, f in zip(pretrained, finetuned):
        p64, f64 = p.detach().to("cpu", torch.float64), f.detach().to("cpu", torch.float64)
        dot += float((p64 * f64).sum())
        norm_p += float((p64 * p64).sum())
        norm_f += float((f64 * f64).sum())
    if not all(map(math.isfinite, (dot, norm_p, norm_f))):
        return math.nan  # NaN/inf weights have no angle; compute_angles names the layer
    if norm_p == 0.0 or norm_f == 0.0:
        return 0.0 if norm_p == norm_f else 90.0
    cos = dot / math.sqrt(norm_p * norm_f)
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def compute_angles(pretrained: StateDict, finetuned: StateDict, layer_map: LayerMap
                   ) -> dict[str, float]:
    """Fine-tuned angle of every layer of ``layer_map``, in degrees, keyed by layer id.

    Args:
        pretrained: the state dict before fine-tuning (the base weights).
        finetuned: the state dict after fully fine-tuning the same model.
        layer_map: the model's layers (:func:`find_layers`); each angle is the arccos of the
            cosine between the flattened ``pretrained`` and ``finetuned`` parameters of one
            layer (paper Eq. 2), computed in float64.
    """
    names = [n for layer in layer_map.layers for n in layer.param_names]
    check_compatible(pretrained, finetuned, names)
    angles = {
        layer.id: layer_angle([pretrained[n] for n in layer.param_names],
                              [finetuned[n] for n in layer.param_names])
        for layer in layer_map.layers
    }
    bad = [layer_id for layer_id, angle in angles.items() if math.isnan(angle)]
    if bad:
        raise PartialFTError(f"layer(s) {first_items(bad, 3)} hold NaN or infinite weights, "
                             "which have no angle; check the fine-tuning run diverged or not.")
    return angles


def rank(angles: Mapping[str, float], ids: list[str]) -> list[int]:
    """Rank of each id by angle, 1 = largest angle (the paper's Fig. 4 convention)."""
    order = sorted(ids, key=lambda i: -angles[i])
    position = {layer_id: r + 1 for r, layer_id in enumerate(order)}
    return [position[i] for i in ids]


def kendall_tau(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Kendall tau between two angle rankings over the same layer ids (scipy).

    Args:
        a: layer id -> angle (or any score), e.g. from one seed.
        b: the same layer ids -> angles from another run; other ids raise
            :class:`PartialFTError`.
    """
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        raise PartialFTError(
            f"the two angle sets cover different layers ({first_items(only, 3)}); "
            "Kendall tau needs angles of the same model."
        )
    ids = sorted(a)
    if len(ids) < 2:
        raise PartialFTError(f"Kendall tau needs at least 2 layers, got {len(ids)}.")
    return float(kendalltau([a[i] for i in ids], [b[i] for i in ids]).statistic)


def save_angles(path: str | Path, angles: Mapping[str, float], layer_map: LayerMap,
                **meta: Any) -> None:
    """Write the angles file: ``{"angles": {id: degrees}, "groups": {...}, **meta}``."""
    from partialft.utils.io import atomic_write_text

    groups = {g: [la.id for la in ls] for g, ls in layer_map.groups().items()}
    payload = {"angles": dict(angles), "groups": groups, **meta}
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def is_angles_file(path: str | Path) -> bool:
    """True for a file :func:`save_angles` wrote (a JSON object with angles and groups)."""
    try:
        data = load_json(Path(path).read_text(encoding="utf-8"), f"angles file {path}")
    except (OSError, ValueError):  # PartialFTError too: not an angles file
        return False
    return isinstance(data, dict) and isinstance(data.get("angles"), dict) and "groups" in data


def load_angles(path: str | Path, layer_map: LayerMap | None = None) -> dict[str, float]:
    """Read an angles file; with ``layer_map``, check it covers exactly that model's layers."""
    path = Path(path)
    check_input_file(path, "angles file", "the JSON file 'partialft angles ... --out FILE' "
                     "writes")
    try:
        data = load_json(path.read_text(encoding="utf-8"), f"angles file {path}")
        raw = dict(data["angles"])
    except PartialFTError:  # malformed or too deeply nested: its own sentence
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OSError):
        raise PartialFTError(f"angles file {path} is not a JSON object whose key 'angles' maps "
                             "layer ids to degrees.") from None
    wrong = next((k for k, v in raw.items() if isinstance(v, bool)
                  or not isinstance(v, (int, float))), None)
    if wrong is not None:
        raise PartialFTError(f"angles file {path} gives layer {wrong} the value "
                             f"{json.dumps(raw[wrong])}, which is not a number; angles are "
                             "numbers of degrees, such as 12.5.")
    angles = {str(k): float(v) for k, v in raw.items()}
    # Scores of other selectors (e.g. relative gradient norms) need only be finite.
    is_angle = data.get("selector", "angle") in ("angle", "probe-angle")
    valid = (lambda v: 0.0 <= v <= 180.0) if is_angle else math.isfinite  # NaN fails both
    bad = [k for k, v in angles.items() if not valid(v)]
    if bad:
        what = "angles are degrees from 0 to 180" if is_angle else "scores must be finite"
        raise PartialFTError(f"angles file {path} gives layer {bad[0]} the value "
                             f"{angles[bad[0]]}; {what}.")
    if layer_map is not None:
        ids = {la.id for la in layer_map.layers}
        missing, extra = sorted(ids - set(angles)), sorted(set(angles) - ids)
        if missing or extra:
            which = (f"lacks {first_items(missing, 3)}" if missing
                     else f"has {first_items(extra, 3)}")
            raise PartialFTError(f"angles file {path} does not match the model's layers (it "
                                 f"{which}); was it computed for another model?")
    return angles
