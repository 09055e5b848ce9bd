"""What a bench measures: its options (every field a ``partialft bench`` flag) and the rows,
one per method plus the ablations that switch one efficiency measure."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from partialft.errors import PartialFTError, option_error, suggest

DEFAULT_METHODS = ("full", "linear", "attn", "ffn", "fapft", "adapter", "vpt-deep", "ssf", "lora")
DEPTH_ABLATION = ("full", "last-half-blocks", "first-half-blocks")
AMPS = ("no", "bf16", "fp16")
@dataclass
class BenchOptions:
    """What to measure; every field is a ``partialft bench`` flag."""

    model: str = "partialft_vit_tiny"
    methods: tuple[str, ...] = DEFAULT_METHODS
    batch_size: int = 32
    img_size: int | None = None
    num_classes: int = 100
    amp: str = "no"
    compile: bool = False
    warmup: int = 3
    steps: int = 10
    angles: str | None = None
    topk: str | None = None
    layer_spec: str | None = None
    grad_clip: float | None = 1.0
    ablate: bool = False
    threads: int | None = None  # torch CPU threads while measuring (None = leave as is)

    def __post_init__(self) -> None:
        from partialft.methods import all_methods

        valid = all_methods()
        for method in self.methods:
            if method not in valid:
                raise PartialFTError(f"unknown method {method!r}{suggest(method, valid)}; valid "
                                     f"methods: {', '.join(valid)}.")
        if not self.methods:
            raise option_error("no methods to bench; pass e.g. "
                               "`methods=('full', 'linear', 'fapft')|full,linear,fapft`.")
        for name in ("batch_size", "warmup", "steps", "num_classes", "threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise PartialFTError(f"{name} {getattr(self, name)} is not valid; use a whole "
                                     "number >= 1.")
        if self.amp not in AMPS:
            raise PartialFTError(f"amp {self.amp!r} is not valid; use one of {', '.join(AMPS)}.")


@dataclass(frozen=True)
class Variant:
    """One row: a method, optionally with one efficiency measure switched (an ablation)."""

    label: str
    method: str
    ablation: str | None = None  # depth, optimizer, compile, channels-last
    optimizer: str | None = None  # fused / foreach; None = what train.build picks
    compile: bool | None = None  # None = BenchOptions.compile
    channels_last: bool | None = None  # False = undo train.build's channels_last


def plan_variants(opts: BenchOptions, device: torch.device, family: str
                  ) -> tuple[list[Variant], list[str]]:
    """The rows to measure and notes on ablations that do not apply here."""
    rows = [Variant(m, m) for m in opts.methods]
    notes: list[str] = []
    if not opts.ablate:
        return rows, notes
    rows += [Variant(m, m, "depth") for m in DEPTH_ABLATION if m not in opts.methods]
    cuda = device.type == "cuda"
    if cuda:
        rows.append(Variant("full (foreach AdamW)", "full", "optimizer", optimizer="foreach"))
    else:
        notes.append("fused vs foreach AdamW: CUDA only (train.build passes fused=True on "
                     "CUDA), skipped on this CPU.")
    pick = "fapft" if "fapft" in opts.methods else opts.methods[0]
    other = "eager" if opts.compile else "torch.compile"
    rows.append(Variant(f"{pick} ({other})", pick, "compile", compile=not opts.compile))
    if family == "convnext" and cuda:
        rows.append(Variant(f"{pick} (no channels_last)", pick, "channels-last",
                            channels_last=False))
    else:
        notes.append("channels_last vs contiguous: ConvNeXt on CUDA only (train.build uses "
                     "channels_last there), skipped for this model/device.")
    return rows, notes
