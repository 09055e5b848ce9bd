"""Model cards of exports: ``README.md`` by timm's ``generate_readme`` (base, base-weights
SHA-256, method, selected layers, trainable parameters, dataset, accuracy) with a loading
example for each format (timm folder, peft adapter, ONNX file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from partialft import __version__
from partialft.training.runs import base_source

MERGEABLE = {"ssf": "SSF", "lora": "LoRA"}  # methods whose modules fold into the weights


def native(base: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pretrained_cfg overrides, model_args) that plain timm (without partialft) can build."""
    from partialft.models import backbone

    if base["model"] == backbone.NAME:  # registered by partialft: a plain timm ViT with ARCH
        return {"architecture": "vit_tiny_patch16_224"}, dict(backbone.ARCH)
    return {}, {}


def base_name(ctx: dict[str, Any]) -> str:
    """The base model as the Hub or timm names it (for peft's base_model_name_or_path)."""
    base = ctx["base"]
    if ctx["hub_id"]:
        return str(ctx["hub_id"])
    if base.get("pretrained") and not base.get("checkpoint") and base.get("pretrained_tag"):
        return str(base["pretrained_tag"])
    return str(base["model"])


def _details(ctx: dict[str, Any]) -> dict[str, Any]:
    """Model-card facts: base, method, layers, trainable parameters, dataset, accuracy."""
    s, base = ctx["summary"], ctx["base"]
    total, trained = s.get("total_params") or 0, s.get("trainable_params") or 0
    share = f" ({100 * trained / total:.2f}%)" if total else ""
    acc = s.get("test_acc")
    return {
        "Model Type": "Image classification (partial fine-tuning, partialft)",
        "Base model": base_source(base),
        "Base weights SHA-256": base.get("weights_sha256") or "not recorded (older run)",
        "Method": ctx["method"],
        "Selected layers": ", ".join(s.get("layers") or []) or (
            f"none (the {ctx['method']} modules and the head train)"
            if ctx["method"] in MERGEABLE else "none (only the head trains)"),
        "Trainable parameters": f"{trained:,} of {total:,}{share}",
        "Fine-tuning dataset": s.get("dataset"),
        "Test accuracy": "n/a" if acc is None else f"{acc:.2f}%",
        "Classes": len(ctx["classes"]) if ctx["classes"] else s.get("num_classes"),
        "Exported by": f"partialft {__version__} (partialft export)",
    }


def _card(ctx: dict[str, Any], usage: str, library: str, tags: list[str]) -> str:
    """README.md by timm's generate_readme, with the base's Hub repo as ``base_model``."""
    from timm.models._hub import generate_readme

    card = {"tags": tags, "library_name": library, "details": _details(ctx), "usage": usage,
            "license": ctx.get("license") or "other",
            "description": f"A {ctx['method']} fine-tune of {base_name(ctx)} on "
            f"{ctx['summary'].get('dataset')}, exported by partialft."}
    name = ctx["repo"].split("/")[-1] if ctx["repo"] else Path(ctx["run"]).name
    text = generate_readme(card, name)
    hub_id = ctx["hub_id"]
    return text.replace("---\n", f"---\nbase_model: {hub_id}\n", 1) if hub_id else text


def timm_card(ctx: dict[str, Any], load: str) -> str:
    """The model card of a timm folder."""
    usage = ("```python\nimport timm\n\n"
             f"model = {load}.eval()\n"
             "transform = timm.data.create_transform(**timm.data.resolve_data_config({}, "
             "model=model))\n```\n")
    return _card(ctx, usage, "timm", ["image-classification", "timm", "partialft",
                                      ctx["method"]])


def peft_card(ctx: dict[str, Any], load: str) -> str:
    """The model card of a peft adapter: how to build its base model with timm alone."""
    base = ctx["base"]
    _, args = native(base)
    hub = base.get("pretrained") and not base.get("checkpoint") and base.get("pretrained_tag")
    name = "vit_tiny_patch16_224" if args else str(hub or base["model"])
    kwargs = "".join(f", {k}={v!r}" for k, v in {**args, "img_size": base.get("img_size"),
                                                  **(base.get("model_kwargs") or {})}.items())
    weights = ("pretrained=True" if base.get("pretrained") and not base.get("checkpoint")
               and not args else "pretrained=False")
    source = base_source(base) + (" (the file bundled with partialft)" if args else "")
    usage = ("```python\nimport peft\nimport timm\n\n"
             f"base = timm.create_model(\"{name}\", {weights}, "
             f"num_classes={base.get('num_classes')}{kwargs})\n"
             f"# the base weights must be {source} (the adapter replaces the head); partialft's "
             f"base, head drawn from seed {base.get('init_seed', 0)}, had SHA-256 "
             f"{base.get('weights_sha256') or 'not recorded'}\n"
             f"model = {load}.eval()\n```\n")
    return _card(ctx, usage, "peft", ["image-classification", "timm", "peft", "lora",
                                      "partialft"])


def onnx_card(ctx: dict[str, Any], load: str) -> str:
    """The model card of an ONNX export: how to run it with ONNX Runtime."""
    usage = ("```python\nimport json\n\nimport numpy as np\nimport onnxruntime\n\n"
             f"session = {load}\n"
             "config = json.load(open(\"config.json\"))  # input size, mean, std, labels\n"
             "x = np.zeros([2, *config[\"input_size\"]], dtype=np.float32)  # normalised images\n"
             "logits = session.run([\"logits\"], {\"pixel_values\": x})[0]\n```\n")
    return _card(ctx, usage, "onnx", ["image-classification", "onnx", "partialft",
                                      ctx["method"]])
