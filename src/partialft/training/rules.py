"""One rule per setting, shared by every verb that takes it.

``TrainConfig`` (train, fapft, select), ``PretrainConfig`` (pretrain) and the options of plan,
bench, eval, soup and multitask check the same setting with the same function here, so a value
one verb refuses is refused by all of them, with the same sentence. Messages name the setting
as the config does (``lr``); the CLI's flags are the same words with dashes.
"""

from __future__ import annotations

import math
from typing import Any

from partialft.errors import PartialFTError, named_option, option_error

# A stated maximum for learning rates (and weight decay, which multiplies lr in AdamW): 1e10 is
# far above any rate that trains (timm's recipes stay below 10) yet keeps lr times the schedule
# and update arithmetic well inside float32 (3.4e38); 1e308 overflowed to inf in the schedule.
# Rates between the two are accepted and diverge, which the loop stops ("non-finite loss").
MAX_LR = 1e10
MAX_SEED = 2**32 - 1  # NumPy's and scikit-learn's seeds are 32-bit
# timm.create_model arguments that are probabilities: valid in [0, 1)
RATES = ("drop_rate", "proj_drop_rate", "attn_drop_rate", "pos_drop_rate", "patch_drop_rate",
         "drop_block_rate", "drop_path_rate")

# --mode auto: share of the schedule's epochs after which the two pilots are compared. Chosen
# from the study's per-epoch validation curves of both modes (docs/selectors.md).
PILOT_FRACTION = 0.5


def number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_lr(value: Any, name: str = "lr") -> None:
    if not (number(value) and 0 < value <= MAX_LR):
        raise PartialFTError(f"{name} {value!r} is not valid; use a positive learning rate up to "
                             f"{MAX_LR:g}, such as 1e-3.")


def check_min_lr(min_lr: Any, lr: Any) -> None:
    check_non_negative("min_lr", min_lr)
    if min_lr > lr:
        raise PartialFTError(f"min_lr {min_lr} is above lr {lr}; the cosine decay ends at "
                             "min_lr, so use a value <= lr (e.g. lr / 1000).")


def check_non_negative(name: str, value: Any, high: float = math.inf) -> None:
    """A finite number in [0, high] (weight decay, mixup alpha, warm-up, clip norm...)."""
    if not (number(value) and 0 <= value <= high):
        upper = "" if math.isinf(high) else f" and <= {high:g}"
        raise PartialFTError(f"{name} {value!r} is not valid; use a finite number >= 0{upper}.")


def check_weight_decay(value: Any) -> None:
    check_non_negative("weight_decay", value, MAX_LR)


def check_probability(name: str, value: Any) -> None:
    """A share in [0, 1): label smoothing, dropout rates (1 would remove all signal)."""
    if not (number(value) and 0 <= value < 1):
        raise PartialFTError(f"{name} {value!r} is not valid; use a number in [0.0, 1.0).")


def check_label_smoothing(value: Any) -> None:
    check_probability("label_smoothing", value)


def check_whole(name: str, value: Any, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise PartialFTError(f"{name} {value!r} is not valid; use a whole number >= {low}.")


def check_tracker_name(name: str, value: Any) -> None:
    """A tracker's project or run name: one line of at most 128 characters, none of the ones
    W&B refuses in project names (``/ \\ # ? % :``), or None for the tracker's default."""
    if value is None:
        return
    if not isinstance(value, str) or not value.strip() or len(value) > 128 or any(
            c in value for c in '/\\#?%:\n\r'):
        raise PartialFTError(f"{name} {value!r} is not valid; use a name of 1 to 128 "
                             "characters without / \\ # ? % : or line breaks, such as "
                             "cifar100-fapft (or leave it out for the tracker's default).")


def check_seed(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise PartialFTError(f"seed {value!r} is not valid; use a whole number from 0 to "
                             f"{MAX_SEED} (2**32 - 1).")


def check_amp_device(amp: str, flag: str = "--amp") -> None:
    """fp16 needs a CUDA GPU: on the CPU accelerate silently trains in float32 (and a record
    of fp16 would then be false). bf16 runs on the CPU for real (torch's CPU autocast)."""
    import torch

    if amp == "fp16" and not torch.cuda.is_available():
        raise option_error(named_option(flag) + " needs a CUDA GPU, and none is available here "
                           "(on the CPU it would silently train in float32); use bf16 or no.",
                           value="fp16")


def check_model_kwargs(model: str, kwargs: dict[str, Any] | None, **create: Any) -> None:
    """Extra ``timm.create_model`` arguments: rates in [0, 1), then the model's constructor
    (built on the meta device: no memory, no weights) must accept every name and value."""
    import torch

    from partialft.models import create_model

    if not kwargs:
        return
    for key, value in kwargs.items():
        if key in RATES:
            check_probability(f"model_kwargs {key}", value)
    if model.startswith("hf-hub:"):  # its constructor is known only after a download
        return
    try:
        with torch.device("meta"):
            create_model(model, pretrained=False, **create, **kwargs)
    except PartialFTError:
        raise
    except (TypeError, ValueError, AssertionError, KeyError, RuntimeError,
            AttributeError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PartialFTError(f"model_kwargs {kwargs} are not accepted by {model}'s constructor "
                             f"({why}); pass only arguments of timm's {model}.") from None


def check_pilot_fraction(value: Any) -> None:
    """``pilot_fraction``: a share of the schedule in (0, 1]."""
    if not (number(value) and 0 < value <= 1):
        raise PartialFTError(f"pilot_fraction {value!r} is not valid; use a share of the "
                             f"schedule in (0, 1], such as {PILOT_FRACTION}.")
