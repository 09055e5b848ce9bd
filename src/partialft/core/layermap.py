"""The types layer discovery and layer specs share: one ``Layer`` (a residual unit) and the
``LayerMap`` of a whole model (its layers in depth order, head and parameter sizes)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Layer:
    """One residual unit of a model."""

    id: str
    kind: str  # attn | ffn | block | token | channel | as | mbconv | convnext | window-attn |
    #            grid-attn (core.layers.FAMILIES) or a layer spec's own kind
    stage: int
    index: int  # block index within its stage
    group: str
    param_names: tuple[str, ...]
    num_params: int


@dataclass
class LayerMap:
    """Every residual layer of a model, its head and its parameter sizes, in depth order."""

    family: str
    layers: list[Layer]
    head_params: tuple[str, ...]
    param_numel: dict[str, int] = field(repr=False)

    @property
    def num_stages(self) -> int:
        return 1 + max((layer.stage for layer in self.layers), default=0)

    def by_id(self) -> dict[str, Layer]:
        return {layer.id: layer for layer in self.layers}

    def groups(self) -> dict[str, list[Layer]]:
        """Homogeneous groups in depth order of their first layer."""
        out: dict[str, list[Layer]] = defaultdict(list)
        for layer in self.layers:
            out[layer.group].append(layer)
        return dict(out)

    def kinds(self) -> list[str]:
        return sorted({layer.kind for layer in self.layers})

    def layer_params(self) -> set[str]:
        return {name for layer in self.layers for name in layer.param_names}

    def non_residual_params(self) -> list[str]:
        """Parameters outside every layer and the head: embeddings, downsampling, final norm."""
        taken = self.layer_params() | set(self.head_params)
        return [name for name in self.param_numel if name not in taken]

    def count(self, names: Any) -> int:
        return sum(self.param_numel[name] for name in names)

    @property
    def total_params(self) -> int:
        return sum(self.param_numel.values())

    def to_dict(self) -> dict[str, Any]:
        groups = self.groups()
        return {
            "family": self.family,
            "num_stages": self.num_stages,
            "total_params": self.total_params,
            "head_params": self.count(self.head_params),
            "non_residual_params": self.count(self.non_residual_params()),
            "groups": {
                name: {"layers": [la.id for la in ls], "params": sum(la.num_params for la in ls)}
                for name, ls in groups.items()
            },
            "layers": [
                {k: v for k, v in asdict(layer).items() if k != "param_names"}
                for layer in self.layers
            ],
        }
