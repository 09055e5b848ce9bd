"""``PretrainConfig``: one pretraining run, every field a ``partialft pretrain`` flag; kept free
of torch and timm so ``partialft pretrain --help`` answers instantly."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from partialft.data.fractal_config import FractalConfig
from partialft.errors import PartialFTError, suggest
from partialft.training import rules

# settings of one invocation, which a --resume may change: where, when to stop, when to save,
# and the command line recorded for the model card
RUNTIME = ("out", "max_steps", "checkpoint_every", "command")
BUNDLED = "partialft_vit_tiny"  # partialft.models.backbone.NAME (a test checks they agree)


@dataclass
class PretrainConfig:
    """One pretraining run; every field is a ``partialft pretrain`` flag."""

    out: str = "runs/pretrain"
    model: str = BUNDLED
    categories: int = 100
    seed: int = 0
    steps: int = 4000
    batch_size: int = 64
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_steps: int = 200
    label_smoothing: float = 0.1
    grad_clip: float = 1.0
    val_per_category: int = 10
    eval_every: int = 500
    checkpoint_every: int = 200
    log_every: int = 25
    amp: str = "no"
    chains: int = FractalConfig.chains
    iters: int = FractalConfig.iters
    max_steps: int | None = None
    command: str = ""

    def __post_init__(self) -> None:
        for name in ("categories", "steps", "batch_size", "val_per_category", "eval_every",
                     "checkpoint_every", "log_every", "chains", "iters"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise PartialFTError(f"{name} {value!r} is not valid; use a whole number >= 1.")
        burn_in = FractalConfig.burn_in
        if self.iters <= burn_in:
            raise PartialFTError(f"iters {self.iters} is not valid; use more than {burn_in} (the "
                                 f"chaos game discards its first {burn_in} steps per chain).")
        if not 0 <= self.warmup_steps < self.steps:
            raise PartialFTError(f"warmup_steps {self.warmup_steps} is not valid; use 0 <= "
                                 f"warmup_steps < steps ({self.steps}).")
        if self.amp not in ("no", "bf16", "fp16"):
            raise PartialFTError(f"amp {self.amp!r} is not valid; use no, bf16 or fp16.")
        # the rules partialft train applies to the same settings (training.rules)
        rules.check_seed(self.seed)
        rules.check_lr(self.lr)
        rules.check_min_lr(self.min_lr, self.lr)
        rules.check_weight_decay(self.weight_decay)
        rules.check_label_smoothing(self.label_smoothing)
        rules.check_non_negative("grad_clip", self.grad_clip)
        if self.max_steps is not None:
            rules.check_whole("max_steps", self.max_steps)
        import timm

        import partialft.models.backbone  # noqa: F401  (registers the bundled name with timm)

        if not timm.is_model(self.model):
            close = suggest(self.model, timm.list_models())
            raise PartialFTError(f"unknown model {self.model!r}{close}; use a timm model name "
                                 f"such as {BUNDLED}.")

    def recipe(self) -> dict:
        """The settings that decide the weights and metrics (all but :data:`RUNTIME`)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RUNTIME}

    def fractal(self, img_size: int) -> FractalConfig:
        return FractalConfig(img_size=img_size, render_size=2 * img_size, chains=self.chains,
                             iters=self.iters)
