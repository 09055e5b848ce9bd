"""Create timm models by name: hub weights (used from the local cache without network, or a fast
clear error offline), a local checkpoint (read by :mod:`partialft.models.loading`), input sizes."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn as nn

from partialft.errors import PartialFTError, option_error, suggest
from partialft.models.loading import first_line, load_into, load_state_dict_file


def _known_models() -> list[str]:
    _register_bundled()
    return timm.list_models()


def _register_bundled() -> None:
    """Register the backbone that ships with partialft (no-op if absent) and the architectures
    partialft defines (AS-MLP) with timm."""
    import partialft.models.as_mlp  # noqa: F401  (registers as_mlp_tiny/small/base on import)

    try:
        import partialft.models.backbone  # noqa: F401  (registers its timm names on import)
    except ImportError:
        pass


# a template (errors.option_error): keywords for a library caller, flags on the command line
TRAIN_HINT = ("without network, pass `checkpoint=FILE|FILE` (weights on disk) or "
              "`pretrained=False`, "
              "or copy the weights into the Hugging Face cache timm reads (HF_HOME) and set "
              "HF_HUB_OFFLINE=1 so nothing tries the network.")


def create_model(name: str, num_classes: int | None = None, pretrained: bool = False,
                 checkpoint: str | Path | None = None, img_size: int | None = None,
                 offline_hint: str = TRAIN_HINT, **kwargs) -> nn.Module:
    """A timm model by name; ``pretrained`` uses timm's hub, ``checkpoint`` a local file.

    ``img_size`` other than the model's own is passed to timm (which resizes position
    embeddings). Create it under ``with torch.device("meta"):`` to count parameters.
    ``offline_hint`` ends the error when pretrained weights can be neither found nor fetched.
    """
    _register_bundled()
    if not timm.is_model(name) and not name.startswith("hf-hub:"):
        raise PartialFTError(f"unknown model {name!r}{suggest(name, _known_models())}; use a "
                             "timm model name (see timm.list_models()).")
    if name.startswith("hf-hub:"):
        check_hub_name(name)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if img_size is not None and img_size != default_input_size(name)[-1]:
        kwargs["img_size"] = img_size
    if pretrained and checkpoint is None:
        local = local_pretrained(name, offline_hint)
        if local is not None:  # from the cache: no network round trips (or retries) at all
            kwargs["pretrained_cfg_overlay"] = {"file": local}
    try:
        model = _timm_create(name, pretrained and checkpoint is None, kwargs)
    except (OSError, RuntimeError) as exc:
        if not pretrained:
            raise
        raise option_error(f"could not get pretrained weights for {name!r} "
                           f"({first_line(exc)}); {offline_hint}") from None
    if checkpoint is not None:
        load_into(model, load_state_dict_file(checkpoint), source=str(checkpoint))
    return model


def check_hub_name(name: str) -> None:
    """An ``hf-hub:ORG/NAME`` model: a valid repo id whose config timm can read (cached, or the
    Hub reachable); checked here because timm fails on bad names with tracebacks, and on some
    (``hf-hub:../x``) retries for minutes."""
    from huggingface_hub import constants
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from partialft.utils.net import reachable

    repo = name.removeprefix("hf-hub:").split("@")[0]
    try:
        validate_repo_id(repo)
    except HFValidationError:
        raise PartialFTError(f"model {name!r} is not a valid Hugging Face Hub name; use "
                             "hf-hub:ORG/NAME, such as hf-hub:timm/vit_tiny_patch16_224."
                             ) from None
    if _hub_cache(repo, "config.json") is not None:
        return
    if constants.HF_HUB_OFFLINE or not reachable(constants.ENDPOINT):
        where = ("HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE
                 else f"{constants.ENDPOINT} cannot be reached")
        raise PartialFTError(f"the config of model {name!r} is not on this machine and {where}; "
                             "copy the model's files into the Hugging Face cache (HF_HOME), or "
                             "use a timm model name (see timm.list_models()).")


def local_pretrained(name: str, offline_hint: str = TRAIN_HINT) -> str | None:
    """The cached file of a model's hub weights, None to let timm fetch them; fails in seconds
    (not timm's minute of retries) when they are neither cached nor reachable."""
    cfg = timm.models.get_pretrained_cfg(name.removeprefix("hf-hub:")) if not name.startswith(
        "hf-hub:") else None
    if cfg is not None and (cfg.file or cfg.state_dict):
        return None  # bundled or local weights: timm reads them without network
    repo = name.removeprefix("hf-hub:") if cfg is None else cfg.hf_hub_id
    cached = _hub_cache(repo, getattr(cfg, "hf_hub_filename", None)) if repo else None
    if cached is None and cfg is not None and cfg.url:
        file = Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg.url).name
        cached = str(file) if file.is_file() else None
    if cached is not None:
        return cached
    from huggingface_hub import constants

    from partialft.utils.net import reachable

    host = constants.ENDPOINT if repo else (cfg.url if cfg is not None else None)
    if not host:  # e.g. AS-MLP: the authors' files are downloaded by hand
        raise option_error(f"the pretrained weights of {name!r} have no download address; "
                           "pass the released weights file with `checkpoint=FILE|FILE`, or "
                           "`pretrained=False`.")
    if constants.HF_HUB_OFFLINE or not reachable(host):
        where = f"{host} cannot be reached"
        if constants.HF_HUB_OFFLINE:
            where = "HF_HUB_OFFLINE is set"
        raise option_error(f"the pretrained weights of {name!r} are not on this machine and "
                           f"{where}; {offline_hint}")
    return None


def _hub_cache(repo: str, filename: str | None) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    names = [filename] if filename else ["model.safetensors", "pytorch_model.bin",
                                          "open_clip_pytorch_model.bin"]
    for candidate in names:
        found = try_to_load_from_cache(repo, candidate)
        if isinstance(found, str):
            return found
    return None


def _timm_create(name: str, pretrained: bool, kwargs: dict) -> nn.Module:
    """timm.create_model; convolutional models that take no ``img_size`` work at any size."""
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as exc:
        if "img_size" not in kwargs or "img_size" not in str(exc):
            raise
        kwargs = {k: v for k, v in kwargs.items() if k != "img_size"}
        return timm.create_model(name, pretrained=pretrained, **kwargs)


def shape_model(name: str) -> nn.Module:
    """Model ``name`` on the meta device: its structure and pretrained config, no weights."""
    with torch.device("meta"):
        return create_model(name)


def default_input_size(name: str) -> tuple[int, int, int]:
    """The (channels, height, width) timm's pretrained config gives model ``name``."""
    _register_bundled()
    cfg = timm.models.get_pretrained_cfg(name)
    return tuple(cfg.input_size) if cfg is not None and cfg.input_size else (3, 224, 224)


def input_size(model: nn.Module) -> tuple[int, int, int]:
    """The (channels, height, width) a timm model expects."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("input_size", (3, 224, 224)))  # type: ignore[return-value]
