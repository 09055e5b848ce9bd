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


LOCAL_DIR = "local-dir:"
# the weights files timm reads from a local-dir: folder, in its order of preference
LOCAL_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")

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
    if name.startswith(LOCAL_DIR):
        return _create_local(name, num_classes, pretrained, checkpoint, img_size, kwargs)
    if not timm.is_model(name) and not name.startswith("hf-hub:"):
        raise PartialFTError(f"unknown model {name!r}{suggest(name, _known_models())}; use a "
                             "timm model name, hf-hub:ORG/NAME or local-dir:DIR (see "
                             "timm.list_models()).")
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


def _create_local(name: str, num_classes: int | None, pretrained: bool,
                  checkpoint: str | Path | None, img_size: int | None, kwargs: dict
                  ) -> nn.Module:
    """A ``local-dir:DIR`` model: timm builds it from DIR's config.json, and partialft loads
    DIR's weights itself (safetensors, or ``torch.load(weights_only=True)``), so a new head
    size is reset as for any pretrained weights and a damaged file is one sentence."""
    folder = local_dir(name)
    weights = local_weights(folder) if pretrained and checkpoint is None else None
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if img_size is not None:
        kwargs["img_size"] = img_size
    try:
        model = _timm_create(f"{LOCAL_DIR}{folder}", False, kwargs)
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise PartialFTError(f"model folder {folder} holds a config.json timm cannot build a "
                             f"model from ({first_line(exc)}); use a folder written by "
                             "partialft export or timm's save_for_hf.") from None
    source = checkpoint if checkpoint is not None else weights
    if source is not None:
        what = str(checkpoint) if checkpoint is not None else f"model folder weights {weights}"
        load_into(model, load_state_dict_file(source), source=what)
    return model


def local_dir(name: str) -> Path:
    """The folder of a ``local-dir:DIR`` model, checked: it exists and holds a config.json
    naming a timm architecture (what ``partialft export`` and timm's ``save_for_hf`` write)."""
    folder = Path(name.removeprefix(LOCAL_DIR)).expanduser()
    hint = "use local-dir:DIR with a folder written by partialft export or timm's save_for_hf."
    if not name.removeprefix(LOCAL_DIR).strip():
        raise PartialFTError(f"model {name!r} names no folder; {hint}")
    if not folder.is_dir():
        why = "is not a folder" if folder.exists() else "does not exist"
        raise PartialFTError(f"model {name!r}: {folder} {why}; {hint}")
    config = local_config(folder)
    arch = config.get("architecture")
    if not isinstance(arch, str) or not timm.is_model(arch):
        raise PartialFTError(f"model folder {folder} has a config.json whose architecture "
                             f"{arch!r} is not a timm model; {hint}")
    return folder.resolve()


def absolute_local_dir(name: str) -> str:
    """``local-dir:DIR`` with DIR made absolute (a run is read back from any directory)."""
    folder = name.removeprefix(LOCAL_DIR)
    return f"{LOCAL_DIR}{Path(folder).expanduser().resolve()}" if folder.strip() else name


def local_dir_inputs(name: str, pretrained: bool) -> dict[str, str | None]:
    """What a ``local-dir:`` model reads, by role: the folder (no output may sit inside it) and,
    for pretrained weights, its weights file (hashed when a run starts, checked on resume)."""
    if not name.removeprefix(LOCAL_DIR).strip():
        return {}
    folder = Path(name.removeprefix(LOCAL_DIR))
    weights = [folder / n for n in LOCAL_WEIGHTS if (folder / n).is_file()]
    return {"model": str(folder), "model_weights": str(weights[0]) if weights and pretrained
            else None}


def local_config(folder: Path) -> dict:
    """DIR/config.json of a ``local-dir:`` model, as a mapping (one sentence when it is not)."""
    import json

    path = folder / "config.json"
    hint = "use a folder written by partialft export or timm's save_for_hf."
    if not path.is_file():
        raise PartialFTError(f"model folder {folder} has no config.json; {hint}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PartialFTError(f"model folder {folder} has a damaged config.json "
                             f"({first_line(exc)}); {hint}") from None
    if not isinstance(config, dict):
        raise PartialFTError(f"model folder {folder} has a config.json that is not a JSON "
                             f"object; {hint}")
    return config


def local_weights(folder: Path) -> Path:
    """The weights file of a ``local-dir:`` folder, in timm's order of preference."""
    for name in LOCAL_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    raise option_error("model folder {folder} holds no weights file ({names}); export the run "
                       "again, or pass `pretrained=False` to start from random weights.",
                       folder=folder, names=", ".join(LOCAL_WEIGHTS))


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
    from huggingface_hub import constants, try_to_load_from_cache

    names = [filename] if filename else ["model.safetensors", "pytorch_model.bin",
                                          "open_clip_pytorch_model.bin"]
    for candidate in names:
        # the cache folder read now (older huggingface_hub bind it when imported)
        found = try_to_load_from_cache(repo, candidate, cache_dir=constants.HF_HUB_CACHE)
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
    if name.startswith(LOCAL_DIR):
        size = local_config(local_dir(name)).get("pretrained_cfg", {}).get("input_size")
        ok = isinstance(size, list) and len(size) == 3 and all(isinstance(v, int) for v in size)
        return tuple(size) if ok else (3, 224, 224)  # type: ignore[return-value]
    cfg = timm.models.get_pretrained_cfg(name)
    return tuple(cfg.input_size) if cfg is not None and cfg.input_size else (3, 224, 224)


def input_size(model: nn.Module) -> tuple[int, int, int]:
    """The (channels, height, width) a timm model expects."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("input_size", (3, 224, 224)))  # type: ignore[return-value]
