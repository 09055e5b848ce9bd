"""Run every bad input in :data:`CASES` through the real CLI and write docs/errors.md.

    python benchmarks/bad_inputs.py            # regenerate docs/errors.md
    python benchmarks/bad_inputs.py --check    # only verify: exit 2, one stderr line, no traceback

Each case runs ``partialft.cli.main(argv)`` in this process (a few need a monkeypatch, e.g. a
simulated CUDA out-of-memory error), on tiny files made in a temporary directory, so the table
shows the exact message the current code prints. tests/test_bad_input.py runs the same cases.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shlex
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--model", "test_vit", "--no-pretrained", "--dataset", "synthetic:4", "--img-size", "32",
        "--max-per-split", "40", "--batch-size", "8", "--epochs", "1", "--amp", "no",
        "--no-progress"]


@dataclass
class Case:
    """One bad input: what is wrong, the command line (``{d}`` = the fixture dir), the message."""

    what: str
    argv: list[str]
    expect: str  # a part of the one-line error the case must print
    patch: Callable[[], contextlib.AbstractContextManager] | None = None
    tags: list[str] = field(default_factory=list)
    cwd: str | None = None  # run in this directory ({d} allowed) instead of the current one


@dataclass
class Outcome:
    code: int | None
    stderr: str
    stdout: str
    traceback: str | None = None

    @property
    def lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.strip()]


def run_cli(argv: list[str]) -> Outcome:
    """``partialft.cli.main(argv)`` with stdout/stderr captured; an escaping exception is a bug."""
    from partialft.cli import main

    out, err = io.StringIO(), io.StringIO()
    code: int | None
    tb = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception:  # noqa: BLE001 - the point is to catch what the CLI did not
            code, tb = None, traceback.format_exc()
    return Outcome(code, err.getvalue(), out.getvalue(), tb)


# --- fixtures -------------------------------------------------------------------------------

def make_fixtures(d: Path) -> None:
    """Tiny checkpoints, angles files, image folders and run dirs the cases point at."""
    import timm
    from PIL import Image
    from safetensors.torch import save_file

    from partialft.core.layers import find_layers

    torch.manual_seed(0)
    sd = timm.create_model("test_vit", num_classes=4).state_dict()
    save_file(sd, str(d / "ok.safetensors"))
    save_file({k: v for k, v in sd.items() if k != "blocks.0.attn.qkv.weight"},
              str(d / "missing.safetensors"))
    save_file({**sd, "blocks.9.mlp.fc1.weight": torch.zeros(2, 2)}, str(d / "extra.safetensors"))
    save_file({**sd, "blocks.0.mlp.fc1.weight": sd["blocks.0.mlp.fc1.weight"].t().contiguous()},
              str(d / "misshaped.safetensors"))
    raw = (d / "ok.safetensors").read_bytes()
    (d / "truncated.safetensors").write_bytes(raw[: len(raw) // 2])
    torch.save(sd, d / "ok.pth")
    raw = (d / "ok.pth").read_bytes()
    (d / "truncated.pth").write_bytes(raw[: len(raw) // 2])
    torch.save({"state_dict": sd, "hook": RunsCode()}, d / "evil.pth")
    with torch.device("meta"):
        convnext = find_layers(timm.create_model("test_convnext"))
        vit = find_layers(timm.create_model("test_vit"))
    (d / "convnext_angles.json").write_text(json.dumps(
        {"angles": {la.id: 10.0 + i for i, la in enumerate(convnext.layers)}}))
    (d / "vit_angles.json").write_text(json.dumps(
        {"angles": {la.id: 10.0 + i for i, la in enumerate(vit.layers)}}))
    (d / "nan_angles.json").write_text(json.dumps(
        {"angles": {la.id: float("nan") for la in vit.layers}}).replace("NaN", "NaN"))
    _image_folder(d / "images", Image)
    (d / "config_unknown.yaml").write_text("model: test_vit\nlearning_rate: 0.1\n")
    (d / "space_empty.yaml").write_text("# nothing\n")
    (d / "space_topk.yaml").write_text("topk: [5, 2]\n")
    (d / "config_list.yaml").write_text("- model\n- test_vit\n")
    (d / "config_broken.yaml").write_text("model: [test_vit\n")
    (d / "config_type.yaml").write_text("epochs: three\n")
    (d / "config_dataset.yaml").write_text("dataset: 3\n")
    (d / "existing").mkdir()
    (d / "existing" / "config.yaml").write_text("model: test_vit\n")
    (d / "str_angles.json").write_text(json.dumps(
        {"angles": {la.id: "12.5" for la in vit.layers}}))
    (d / "bool_angles.json").write_text(json.dumps(
        {"angles": {la.id: True for la in vit.layers}}))
    (d / "config_latin1.yaml").write_bytes("model: test_vit  # caf\xe9\n".encode("latin-1"))
    (d / "spec_latin1.yaml").write_bytes("layers: {}  # caf\xe9\n".encode("latin-1"))
    (d / "config_topk_list.yaml").write_text("topk: [1, 2]\n")
    (d / "afile").write_text("a user's file\n")
    sd32 = timm.create_model("test_vit", num_classes=4, img_size=32).state_dict()
    save_file(sd32, str(d / "base_copy.safetensors"))
    _bad_weights(d, sd32)
    _image_folder(d / "one_class", Image, classes=(("a", (200, 30, 30)),), corrupt=False)
    (d / "cwd").mkdir()
    (d / "cwd" / "thesis.tex").write_text("years of work\n")
    _issue21_cfg_fixtures(d)


def _bad_weights(d: Path, sd: dict[str, torch.Tensor]) -> None:
    """Checkpoints with int8 or NaN weights, a safetensors file named .pth, a legacy pickle."""
    from safetensors.torch import save_file

    key = "blocks.0.attn.qkv.weight"
    save_file({**sd, key: sd[key].to(torch.int8)}, str(d / "int8.safetensors"))
    save_file({**sd, key: torch.full_like(sd[key], float("nan"))}, str(d / "nan.safetensors"))
    (d / "really_safetensors.pth").write_bytes((d / "ok.safetensors").read_bytes())
    torch.save({**sd, "hook": RunsCode()}, d / "legacy_evil.pth",
               _use_new_zipfile_serialization=False)


class RunsCode:
    """An object whose unpickling would call a function: weights_only loading must refuse it."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (print, ("this pickle ran code",))


def _image_folder(root: Path, image: Any, classes: tuple = (("a", (200, 30, 30)),
                                                            ("b", (30, 30, 200))),
                  corrupt: bool = True) -> None:
    """root/{train,val}/CLASS/*.png, 6 images per class; with ``corrupt`` train/a/0.png is not
    an image."""
    for split in ("train", "val"):
        for c, colour in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(6):
                image.new("RGB", (16, 16), colour).save(root / split / c / f"{i}.png")
    if corrupt:
        (root / "train" / "a" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")


# fixture runs: name -> extra flags (all linear probes of TINY on 24 images per split)
RUNS = {
    "run4": [],
    "run3": ["--dataset", "synthetic:3"],
    "other_arch": ["--model", "partialft_vit_tiny"],
    "nest/full": ["--method", "full"],
    "unfinished_trunc": ["--max-steps", "1"],
    "unfinished_gone": ["--max-steps", "1"],
    "damaged_delta": [],
    "list_base": [],
    "seed_base": [],
    "hub_base": [],
    "from_ckpt": ["--checkpoint", "{d}/base_copy.safetensors"],
    "run4_bilinear": ["--interpolation", "bilinear"],
    "adapter4": ["--method", "adapter"],
}


def make_runs(d: Path) -> None:
    """Tiny finished (and two stopped) runs for the soup/eval/resume cases, some then damaged."""
    for name, extra in RUNS.items():
        argv = fill(["train", *TINY, "--method", "linear", "--max-per-split", "24",
                     "--out", str(d / name), *extra], d)
        result = run_cli(argv)
        if result.code != 0:
            raise RuntimeError(f"fixture run {name} failed: {result.stderr}{result.traceback}")
    _damage_runs(d)
    _read_fixtures(d)


def _damage_runs(d: Path) -> None:
    from safetensors.torch import load_file, save_file

    changed = load_file(str(d / "base_copy.safetensors"))
    changed["cls_token"] += 1.0
    save_file(changed, str(d / "base_copy.safetensors"))
    state = d / "unfinished_trunc" / "state" / "state.json"
    state.write_text(state.read_text()[:40])
    for tensors in (d / "unfinished_gone" / "state").glob("tensors-*.safetensors"):
        tensors.unlink()
    delta = d / "damaged_delta" / "delta.safetensors"
    delta.write_bytes(delta.read_bytes()[:200])
    for name, change in (("list_base", lambda b: [1, 2]),
                         ("seed_base", lambda b: {**b, "init_seed": "zero"}),
                         ("hub_base", lambda b: {**b, "model": "vit_tiny_patch16_224",
                                                 "img_size": 224, "pretrained": True})):
        path = d / name / "delta.safetensors"
        meta = read_metadata(path)
        meta["base"] = change(meta["base"])
        save_file(load_file(str(path)), str(path),
                  metadata={k: v if isinstance(v, str) else json.dumps(v)
                            for k, v in meta.items()})


def read_metadata(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return {k: json.loads(v) if v[:1] in "[{" else v for k, v in fh.metadata().items()}


# --- patches ----------------------------------------------------------------------------------

@contextlib.contextmanager
def cuda_oom() -> Iterator[None]:
    """Every training step raises the error PyTorch raises when the GPU is out of memory."""
    import partialft.training.loop as loop

    def step(*_args: Any, **_kw: Any) -> Any:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    saved, loop.train_step = loop.train_step, step
    try:
        yield
    finally:
        loop.train_step = saved


@contextlib.contextmanager
def nan_loss_after(good_steps: int = 4) -> Iterator[None]:
    """The loss turns NaN after ``good_steps`` optimizer steps (as a diverging run would)."""
    import partialft.training.loop as loop

    saved, calls = loop.train_step, [0]

    def step(s: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] > good_steps:
            with torch.no_grad():
                for p in s.model.parameters():
                    if p.requires_grad:
                        p.fill_(float("nan"))
        return saved(s, *args, **kwargs)

    loop.train_step = step
    try:
        yield
    finally:
        loop.train_step = saved


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Hugging Face's offline mode: no case ever touches the network."""
    from huggingface_hub import constants

    saved, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


@contextlib.contextmanager
def small_pil_limit() -> Iterator[None]:
    """PIL's decompression-bomb limit lowered below a 16x16 image: a bomb without gigabytes."""
    from PIL import Image

    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, 100
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


# --- issue 21: concurrency and reruns (races staged in-process) ------------------------------

@contextlib.contextmanager
def angles_written_meanwhile() -> Iterator[None]:
    """Another `angles --out SAME` lands while this one computes."""
    import partialft.cli.angles as mod

    real = mod._write_unchanged

    def racing(out: str, before: Any, write: Callable[[], None]) -> None:
        Path(out).write_text('{"angles": {}, "groups": {}}\n')
        real(out, before, write)

    mod._write_unchanged = racing
    try:
        yield
    finally:
        mod._write_unchanged = real


@contextlib.contextmanager
def run_replaced_during_eval() -> Iterator[None]:
    """The evaluated run is trained again (its summary.json changes) while eval runs."""
    import partialft.cli.eval as mod

    real, saved = mod.evaluate_run, {}

    def replaced(args: Any, *rest: Any) -> Any:
        result = real(args, *rest)
        summary = Path(args.run_dir) / "summary.json"
        saved[summary] = summary.read_bytes()
        summary.write_text(json.dumps({**json.loads(saved[summary]), "retrained": True}))
        return result

    mod.evaluate_run = replaced
    try:
        yield
    finally:
        mod.evaluate_run = real
        for path, data in saved.items():
            path.write_bytes(data)


@contextlib.contextmanager
def users_folder_where_soup_sets_aside() -> Iterator[None]:
    """(cwd: the fixture dir) a soup at soup_aside and a user's folder .soup_aside.old."""
    if run_cli(["soup", "run4", "--no-eval", "--out", "soup_aside"]).code not in (0, 2):
        raise RuntimeError("fixture soup failed")
    Path(".soup_aside.old").mkdir(exist_ok=True)
    Path(".soup_aside.old/notes.txt").write_text("mine")
    yield


# --- the cases --------------------------------------------------------------------------------

def _plan(*extra: str) -> list[str]:
    return ["plan", "--model", "test_vit", "--method", "full", *extra]


FAPFT = ["fapft", *TINY, "--mode", "large"]


def _topk(k: str) -> list[str]:
    return ["plan", "--model", "test_vit", "--method", "fapft", "--angles",
            "{d}/vit_angles.json", "--topk", k, "--mode", "large"]


def _search(out: str, *extra: str) -> list[str]:
    return ["search", *TINY, "--angles", "{d}/vit_angles.json", *extra, "--out", out]


def _train(out: str, *extra: str) -> list[str]:
    return ["train", *TINY, "--out", out, *extra]


CASES: list[Case] = [
    Case("unknown model", ["plan", "--model", "vit_bse_patch16_224", "--method", "full"],
         "unknown model 'vit_bse_patch16_224'"),
    Case("unknown method", ["plan", "--model", "test_vit", "--method", "fapt"], "fapt"),
    Case("unknown dataset", _train("{d}/r_ds", "--dataset", "cifar11"), "dataset 'cifar11'"),
    Case("top-k not a whole number", _topk("1.5"), "1.5"),
    Case("top-k larger than a group", _topk("9"), "9"),
    Case("negative top-k", _topk("-1"), "-1"),
    Case("top-k with the wrong number of stages", _topk("1,1"), "1,1"),
    Case("fapft without an angles file", ["plan", "--model", "test_vit", "--method", "fapft"],
         "angles"),
    Case("angles file from another model", ["plan", "--model", "test_vit", "--method", "fapft",
                                            "--angles", "{d}/convnext_angles.json"],
         "another model"),
    Case("angles file with NaN angles", ["plan", "--model", "test_vit", "--method", "fapft",
                                         "--angles", "{d}/nan_angles.json"], "nan"),
    Case("missing angles file", ["plan", "--model", "test_vit", "--method", "fapft", "--angles",
                                 "{d}/nope.json"], "does not exist"),
    Case("unknown layer id", ["plan", "--model", "test_vit", "--method", "layers", "--layers",
                              "blocks.7.attn"], "blocks.7.attn"),
    Case("checkpoint with a missing tensor", _plan("--checkpoint", "{d}/missing.safetensors"),
         "missing blocks.0.attn.qkv.weight"),
    Case("checkpoint with an extra tensor", _plan("--checkpoint", "{d}/extra.safetensors"),
         "unexpected blocks.9.mlp.fc1.weight"),
    Case("checkpoint with a mis-shaped tensor", _plan("--checkpoint", "{d}/misshaped.safetensors"),
         "mis-shaped blocks.0.mlp.fc1.weight"),
    Case("mis-shaped checkpoint given to train",
         _train("{d}/r_ckpt", "--checkpoint", "{d}/misshaped.safetensors", "--img-size", "160"),
         "mis-shaped blocks.0.mlp.fc1.weight"),
    Case("truncated safetensors checkpoint", _plan("--checkpoint", "{d}/truncated.safetensors"),
         "truncated"),
    Case("truncated .pth checkpoint", _plan("--checkpoint", "{d}/truncated.pth"), "truncated"),
    Case("pickle that would run code", _plan("--checkpoint", "{d}/evil.pth"), "refused"),
    Case("missing checkpoint file", _plan("--checkpoint", "{d}/nope.safetensors"),
         "does not exist"),
    Case("missing dataset path", _train("{d}/r_nodata", "--dataset", "folder:{d}/no_such_dir"),
         "no_such_dir"),
    Case("corrupt image in an image folder",
         _train("{d}/r_corrupt", "--dataset", "folder:{d}/images", "--batch-size", "4",
                "--max-per-split", "12"), "0.png"),
    Case("--num-classes that does not match the data", _train("{d}/r_nc", "--num-classes", "10"),
         "10"),
    Case("eval on a dataset with another number of classes",
         ["eval", "{d}/run4", "--dataset", "synthetic:3"], "classes"),
    Case("soup of runs with different numbers of classes",
         ["soup", "{d}/run4", "{d}/run3", "--out", "{d}/soup_nc", "--no-eval"], "num_classes"),
    Case("soup of a directory that is not a finished run",
         ["soup", "{d}/run4", "{d}/images", "--out", "{d}/soup_bad", "--no-eval"],
         "not a finished run dir"),
    Case("eval of a directory that is not a run", ["eval", "{d}/images", "--dataset", "digits"],
         "run dir"),
    Case("non-finite training loss", _train("{d}/r_nan", "--epochs", "2", "--checkpoint-every",
                                            "1"), "non-finite", patch=nan_loss_after),
    Case("learning rate so large the weights diverge",
         _train("{d}/r_lr_huge", "--lr", "1e8", "--grad-clip", "none", "--epochs", "2",
                "--checkpoint-every", "1"), "non-finite"),
    Case("CUDA out of memory (simulated)", _train("{d}/r_oom"), "--batch-size 4", patch=cuda_oom),
    Case("existing run dir without --overwrite", _train("{d}/existing"), "--overwrite"),
    Case("resume a run with another model", _train("{d}/run4", "--resume", "--model",
                                                   "test_convnext"), "test_convnext"),
    Case("batch larger than the training split", _train("{d}/r_big", "--batch-size", "512"),
         "512"),
    Case("zero epochs", _train("{d}/r_e0", "--epochs", "0"), "epochs 0"),
    Case("learning rate that is not a number", _train("{d}/r_lr", "--lr", "fast"), "fast"),
    Case("non-finite learning rate", _train("{d}/r_lrnan", "--lr", "nan"), "nan"),
    Case("unknown fapft mode", _train("{d}/r_mode", "--mode", "medium"), "medium"),
    Case("fapft without --mode", ["fapft", *TINY, "--out", "{d}/f_nomode"], "needs --mode"),
    Case("--topk with a method that ignores it",
         _train("{d}/r_topk", "--method", "attn", "--topk", "2"), "only used by --method fapft"),
    Case("--rank with another method", _train("{d}/r_lora", "--rank", "4"),
         "does not take the option --rank"),
    Case("unknown lora target", _train("{d}/r_lt", "--method", "lora", "--targets",
                                       "qkv,mlp.fc3"), "mlp.fc3"),
    Case("plan --mode auto", ["plan", "--model", "test_vit", "--method", "fapft", "--topk", "1",
                              "--mode", "auto"], "needs data"),
    Case("mode auto pilots of a share outside (0, 1]",
         _train("{d}/r_pilot", "--mode", "auto", "--pilot-fraction", "1.5"), "pilot_fraction 1.5"),
    Case("search: an empty space file", _search("{d}/s_empty", "--space",
                                                "{d}/space_empty.yaml"), "is empty"),
    Case("search: a top-k range whose low is above its high",
         _search("{d}/s_topk", "--space", "{d}/space_topk.yaml"), "topk [5, 2]"),
    Case("search: top-k past the size of a group", _search("{d}/s_big", "--search-topk", "1-9"),
         "smallest homogeneous group"),
    Case("search: --n-trials 0", _search("{d}/s_n0", "--n-trials", "0"), "--n-trials 0"),
    Case("search: a storage URL that cannot be opened",
         _search("{d}/s_url", "--storage", "sqlite:////nonexistent-dir/x/search.db"),
         "cannot be opened"),
    Case("a logger that is not installed", _train("{d}/r_wandb", "--log-with", "wandb"),
         "pip install wandb"),
    Case("unknown optimizer", _train("{d}/r_opt", "--opt", "adamz"), "adamz"),
    Case("a schedule that needs an epoch metric", _train("{d}/r_sched", "--sched", "plateau"),
         "plateau"),
    Case("colour jitter beside RandAugment", _train("{d}/r_cj", "--color-jitter", "0.4", "--aa",
                                                   "rand-m9-mstd0.5-inc1"), "color_jitter 0.4"),
    Case("model kwargs that are not key=value", _train("{d}/r_mk", "--model-kwargs", "drop"),
         "key=value"),
    Case("model kwargs repeating a setting", _train("{d}/r_mk2", "--model-kwargs", "img_size=64"),
         "--img-size"),
    Case("export of a run to a peft adapter when it is not LoRA",
         ["export", "{d}/run4", "--format", "peft", "--out", "{d}/x_peft"], "lora"),
    Case("export into the run dir it reads", ["export", "{d}/run4", "--out", "{d}/run4/exp"],
         "run4"),
    Case("export of a directory that is not a run", ["export", "{d}/images", "--out", "{d}/x_i"],
         "images"),
    Case("export to a Hub repo id that is not one",
         ["export", "{d}/run4", "--out", "{d}/x_hub", "--push-to-hub", "a/b/c"], "a/b/c"),
    Case("unknown mixed-precision mode", _train("{d}/r_amp", "--amp", "fp8"), "fp8"),
    Case("image size the model's patches do not divide", _train("{d}/r_img", "--img-size", "40"),
         "multiple of 16"),
    Case("label smoothing of 1 or more", _train("{d}/r_ls", "--label-smoothing", "1.5"), "1.5"),
    Case("EMA decay of 1 or more", _train("{d}/r_ema", "--ema", "5"), "ema 5"),
    Case("negative gradient clipping", _train("{d}/r_clip", "--grad-clip", "-1"), "grad_clip"),
    Case("missing YAML config", ["train", "--config", "{d}/nope.yaml"], "does not exist"),
    Case("YAML config with an unknown key", ["train", "--config", "{d}/config_unknown.yaml"],
         "learning_rate"),
    Case("YAML config that is not a mapping", ["train", "--config", "{d}/config_list.yaml"],
         "mapping"),
    Case("YAML config that does not parse", ["train", "--config", "{d}/config_broken.yaml"],
         "not valid YAML"),
    Case("YAML config value of the wrong type", ["train", "--config", "{d}/config_type.yaml"],
         "three"),
    Case("YAML config with a number where a name belongs",
         ["train", "--config", "{d}/config_dataset.yaml"], "dataset 3"),
    # --- what --out and --overwrite may touch ---
    Case("fapft into an existing train run dir", [*FAPFT, "--out", "{d}/run4"],
         "partialft train directory"),
    Case("soup whose --out holds its ingredients",
         ["soup", "{d}/nest/full", "{d}/run4", "--out", "{d}/nest", "--overwrite", "--no-eval"],
         "contains the input"),
    Case("fapft whose --out holds its --reference",
         [*FAPFT, "--reference", "{d}/nest/full", "--out", "{d}/nest", "--overwrite"],
         "contains the input"),
    Case("--out the current directory", _train(".", "--overwrite"), "current directory",
         cwd="{d}/cwd"),
    Case("--out empty", _train("", "--overwrite"), "empty", cwd="{d}/cwd"),
    Case("--overwrite of a folder partialft did not write", _train("{d}/cwd", "--overwrite"),
         "did not write"),
    Case("--out inside an input folder",
         _train("{d}/images/run", "--dataset", "folder:{d}/images"), "inside the input"),
    Case("--out under a file", _train("{d}/afile/run"), "cannot create"),
    Case("--out under /proc", _train("/proc/partialft-run"), "cannot create"),
    Case("--out under /sys", _train("/sys/partialft-run"), "cannot create"),
    Case("fapft --out an existing file with --overwrite",
         [*FAPFT, "--out", "{d}/afile", "--overwrite"], "not a directory"),
    Case("report --out an existing file", ["report", "{d}/run4", "--out", "{d}/afile"],
         "not a directory"),
    Case("--resume of a run dir that does not exist", _train("{d}/never", "--resume"),
         "nothing to resume"),
    Case("pretrain --resume of a run dir that does not exist",
         ["pretrain", "--out", "{d}/never_pt", "--resume", "--steps", "2", "--warmup-steps", "0",
          "--no-progress"], "nothing to resume"),
    # --- results that would be silently wrong ---
    Case("base checkpoint changed after the run", ["eval", "{d}/from_ckpt", "--dataset",
                                                   "synthetic:4"], "changed since"),
    Case("int8 checkpoint", _train("{d}/r_int8", "--checkpoint", "{d}/int8.safetensors"),
         "stores blocks.0.attn.qkv.weight as int8"),
    Case("checkpoint with NaN weights", _train("{d}/r_nanck", "--checkpoint",
                                               "{d}/nan.safetensors"),
         "NaN or infinite values in blocks.0.attn.qkv.weight"),
    Case("--min-lr above --lr", _train("{d}/r_minlr", "--min-lr", "0.1", "--lr", "0.001"),
         "min_lr 0.1"),
    Case("absurdly many epochs", _train("{d}/r_ep", "--epochs", "100000000000000000000"),
         "epochs 100000000000000000000"),
    Case("select --epsilon nan", ["select", *TINY[:-1], "--selector", "greedy", "--epsilon", "nan",
                                  "--out", "{d}/s_eps"], "--epsilon nan"),
    Case("angles given as strings", ["plan", "--model", "test_vit", "--method", "fapft",
                                     "--angles", "{d}/str_angles.json"], "not a number"),
    Case("angles given as booleans", ["plan", "--model", "test_vit", "--method", "fapft",
                                      "--angles", "{d}/bool_angles.json"], "not a number"),
    Case("--layers with a method that ignores them",
         _train("{d}/r_lay", "--method", "full", "--layers", "blocks.0.attn"), "--method layers"),
    Case("one-class dataset", _train("{d}/r_one", "--dataset", "folder:{d}/one_class"),
         "1 class"),
    Case("data dir that is a file", _train("{d}/r_ddf", "--dataset", "fashion-mnist",
                                           "--data-dir", "{d}/afile"), "is a file"),
    Case("multitask over different architectures", ["multitask", "{d}/run4", "{d}/other_arch"],
         "one base model"),
    Case("soup of the same run twice", ["soup", "{d}/run4", "{d}/run4", "--out", "{d}/s_dup",
                                        "--no-eval"], "twice"),
    Case("fapft --reference that is not a full run",
         [*FAPFT, "--reference", "{d}/run4", "--out", "{d}/f_ref"], "'linear' run"),
    # --- one line, not a traceback ---
    Case("config that is not UTF-8", ["train", "--config", "{d}/config_latin1.yaml"], "UTF-8"),
    Case("layer spec that is not UTF-8", _plan("--layer-spec", "{d}/spec_latin1.yaml"), "UTF-8"),
    Case("negative seed", _train("{d}/r_seed", "--seed", "-5"), "seed -5"),
    Case("seed beyond 32 bits", _train("{d}/r_seed2", "--seed", "99999999999999999999999"),
         "seed 99999999999999999999999"),
    Case("soup --batch-size 0", ["soup", "{d}/run4", "{d}/nest/full", "--out", "{d}/s_bs",
                                 "--batch-size", "0"], "--batch-size"),
    Case("eval of a run whose delta is truncated", ["eval", "{d}/damaged_delta", "--dataset",
                                                    "synthetic:4"], "truncated"),
    Case("delta metadata whose base is a list", ["eval", "{d}/list_base", "--dataset",
                                                 "synthetic:4"], "damaged metadata"),
    Case("delta metadata whose init_seed is not a number",
         ["eval", "{d}/seed_base", "--dataset", "synthetic:4"], "init_seed"),
    Case("--resume with a truncated state.json",
         _train("{d}/unfinished_trunc", "--resume", "--method", "linear", "--max-per-split",
                "24"), "damaged"),
    Case("--resume with its state tensors deleted",
         _train("{d}/unfinished_gone", "--resume", "--method", "linear", "--max-per-split",
                "24"), "damaged"),
    Case("corrupt image read by a loader worker",
         _train("{d}/r_corrupt2", "--dataset", "folder:{d}/images", "--batch-size", "4",
                "--max-per-split", "12", "--workers", "2"), "0.png"),
    # --- messages that must not mislead ---
    Case("directory as --checkpoint", _plan("--checkpoint", "{d}/images"), "is a directory"),
    Case("/dev/null as --config", ["train", "--config", "/dev/null"], "not a regular file"),
    Case("folder: without a path", _train("{d}/r_fold", "--dataset", "folder:"),
         "needs a path"),
    Case("pretrain with too few chaos-game steps",
         ["pretrain", "--out", "{d}/pt_iters", "--iters", "3", "--no-progress"], "iters 3"),
    Case("eval of a run whose hub base weights are not here (offline)",
         ["eval", "{d}/hub_base", "--dataset", "synthetic:4"], "Hugging Face cache",
         patch=hub_offline),
    Case("val_fraction nan", _train("{d}/r_vf", "--val-fraction", "nan"), "no validation"),
    Case("legacy pickle that would run code", _plan("--checkpoint", "{d}/legacy_evil.pth"),
         "refused"),
    Case("bench option that only a later row would reject",
         ["bench", "--model", "test_vit", "--methods", "full,fapft", "--topk", "99", "--out",
          "{d}/b_topk"], "top-k 99"),
    # issue 21: reading run dirs and files from elsewhere
    Case("eval of a run whose delta was copied in from another run",
         ["eval", "{d}/copied_delta", "--dataset", "synthetic:4"], "copied in from another run"),
    Case("export of a run whose delta was copied in from another run",
         ["export", "{d}/copied_delta", "--out", "{d}/e_copied"], "copied in from another run"),
    Case("eval of a run whose summary.json is truncated",
         ["eval", "{d}/truncated_summary", "--dataset", "synthetic:4"], "not valid JSON"),
    Case("soup of a run whose summary.json is a list",
         ["soup", "{d}/list_summary", "{d}/run4", "--out", "{d}/s_list", "--no-eval"],
         "not a mapping"),
    Case("report of a run whose selection.json has layers as text",
         ["report", "{d}/bad_selection", "--out", "{d}/rep_sel"], "field 'layers'"),
    Case("report of a run whose eval.json is a list",
         ["report", "{d}/list_eval", "--out", "{d}/rep_eval"], "eval.json is damaged"),
    Case("eval of a run whose config.yaml lacks the dataset",
         ["eval", "{d}/config_no_dataset", "--dataset", "synthetic:4"], "field 'dataset'"),
    Case("eval of a run whose config.yaml is not UTF-8",
         ["eval", "{d}/config_latin1", "--dataset", "synthetic:4"], "not UTF-8"),
    Case("multitask of a run whose delta metadata asks for img_size 1000000",
         ["multitask", "{d}/huge_img"], "img_size 1000000"),
    Case("eval of a run whose delta metadata names /etc/passwd as base checkpoint",
         ["eval", "{d}/passwd_base", "--dataset", "synthetic:4"], "not a weights file"),
    Case("angles of a run whose metadata passes timm a file to load",
         ["angles", "{d}/overlay_kwargs"], "model_kwargs 'pretrained_cfg_overlay'"),
    Case("soup of runs with different preprocessing",
         ["soup", "{d}/run4", "{d}/run4_bilinear", "--out", "{d}/s_pre", "--no-eval"],
         "interpolation"),
    Case("soup of a layer-method run and an adapter run",
         ["soup", "{d}/run4", "{d}/adapter4", "--out", "{d}/s_struct", "--no-eval"],
         "structure"),
    Case("select --reference that does not exist",
         ["select", *TINY[:-1], "--selector", "angle", "--mode", "large", "--reference",
          "{d}/no_such_run", "--out", "{d}/sel_missing"], "does not exist"),
    Case("select --reference that is a linear probe",
         ["select", *TINY[:-1], "--selector", "angle", "--mode", "large", "--reference",
          "{d}/run4", "--out", "{d}/sel_linear"], "angles need a run that trained"),
    Case("angles of a run of another architecture than the weights",
         ["angles", "{d}/ok.safetensors", "{d}/other_arch", "--model", "test_vit"],
         "partialft_vit_tiny"),
    Case("angles of an adapter run", ["angles", "{d}/adapter4"], "angles would all be 0"),
    Case("text file as --checkpoint", _plan("--checkpoint", "{d}/afile"), "not a weights file"),
    Case("pickle of a list as --checkpoint", _plan("--checkpoint", "{d}/list.pth"),
         "no state dict"),
    Case("zip archive that is not a checkpoint", _plan("--checkpoint", "{d}/zip.pth"),
         "zip archive"),
    Case("empty hf-hub: model name", ["plan", "--model", "hf-hub:", "--method", "full"],
         "not a valid Hugging Face Hub name", patch=hub_offline),
    Case("hf-hub: name with a path", ["plan", "--model", "hf-hub:../x", "--method", "full"],
         "not a valid Hugging Face Hub name", patch=hub_offline),
    Case("hf-hub: model offline", ["plan", "--model", "hf-hub:a/b", "--method", "full"],
         "HF_HUB_OFFLINE", patch=hub_offline),
    Case("local-dir: model folder that does not exist",
         ["plan", "--model", "local-dir:{d}/no_such_export", "--method", "full"],
         "does not exist"),
    Case("local-dir: model folder without config.json",
         ["plan", "--model", "local-dir:{d}/zero_images", "--method", "full"],
         "has no config.json"),
    Case("decompression-bomb image in a folder dataset",
         _train("{d}/r_bomb", "--dataset", "folder:{d}/bomb_images"), "decompression bomb",
         patch=small_pil_limit),
    Case("zero-byte image in a folder dataset",
         _train("{d}/r_zero", "--dataset", "folder:{d}/zero_images"), "0.png"),
    # issue 21: concurrency and reruns
    Case("angles --out written by another process while these were computed",
         ["angles", "{d}/run4", "--out", "{d}/angles_race.json"], "written by another process",
         patch=angles_written_meanwhile),
    Case("eval of a run trained again while it was evaluated",
         ["eval", "{d}/run4", "--dataset", "synthetic:4", "--max-images", "8", "--no-progress"],
         "was replaced while it was being evaluated", patch=run_replaced_during_eval),
    Case("soup --overwrite where a folder of the user's has the set-aside name",
         ["soup", "run4", "--no-eval", "--out", "soup_aside", "--overwrite"],
         "is not a soup partialft set aside", patch=users_folder_where_soup_sets_aside,
         cwd="{d}"),
    # issue 21: what --overwrite may delete
    Case("train --out inside a finished run dir", _train("{d}/run4/B"), "outputs do not nest"),
    Case("train --out deep inside a run dir", _train("{d}/run4/x/y/B"), "outputs do not nest"),
    Case("report --out inside a run dir", ["report", "{d}/run3", "--out", "{d}/run4/report"],
         "outputs do not nest"),
    Case("report --overwrite of a train run dir",
         ["report", "{d}/run3", "--out", "{d}/run4", "--overwrite"],
         "replaces only an earlier report output"),
    Case("export --overwrite of a train run dir",
         ["export", "{d}/run3", "--out", "{d}/run4", "--overwrite"],
         "replaces only an earlier export output"),
    Case("bench --overwrite of a train run dir",
         ["bench", "--model", "test_vit", "--methods", "linear", "--out", "{d}/run4",
          "--overwrite"], "replaces only an earlier bench output"),
    Case("soup --overwrite of a train run dir",
         ["soup", "{d}/run4", "{d}/damaged_delta", "--out", "{d}/run3", "--overwrite"],
         "replaces only an earlier soup output"),
    Case("train --overwrite of a run whose delta was changed after it was written",
         _train("{d}/damaged_delta", "--overwrite"), "holds delta.safetensors"),
    Case("train --overwrite of a run whose resume state was changed",
         _train("{d}/unfinished_trunc", "--overwrite"), "which changed since"),
    # issue 21: settings, resume and machine limits (helper CFG)
    Case("--resume with a setting other than the recorded one",
         _train("{d}/cfg21_stopped", "--resume", "--method", "linear", "--max-per-split", "24",
                "--lr", "0.5"), "but the run was started with lr 0.001"),
    Case("config nested thousands of levels deep",
         ["train", "--config", "{d}/cfg21_deep.yaml", "--out", "{d}/r21_deep"], "nests"),
    Case("config with YAML aliases", ["train", "--config", "{d}/cfg21_alias.yaml", "--out",
                                      "{d}/r21_alias"], "alias"),
    Case("layer spec nested too deeply", ["plan", "--model", "test_vit", "--method", "attn",
                                          "--layer-spec", "{d}/cfg21_deep_spec.json"],
         "layer spec"),
    Case("angles file nested too deeply", ["plan", "--model", "test_vit", "--method", "fapft",
                                           "--angles", "{d}/cfg21_deep_angles.json", "--mode",
                                           "large"], "angles file"),
    Case("--device that is not a device", ["eval", "{d}/run4", "--dataset", "synthetic:4",
                                           "--device", "foo"], "'foo'"),
    Case("--device meta", ["eval", "{d}/run4", "--dataset", "synthetic:4", "--device", "meta"],
         "--device meta"),
    Case("--device naming a GPU this machine lacks",
         ["eval", "{d}/run4", "--dataset", "synthetic:4", "--device", "cuda:7"], "cuda:7"),
    Case("negative --workers", ["eval", "{d}/run4", "--dataset", "synthetic:4", "--workers",
                                "-1"], "workers -1"),
    Case("model kwarg rate above 1", _train("{d}/r21_drop", "--model-kwargs", "drop_rate=2"),
         "drop_rate 2"),
    Case("model kwarg the model does not take", _train("{d}/r21_bogus", "--model-kwargs",
                                                       "bogus=1"), "bogus"),
    Case("model kwargs through a YAML alias", ["train", "--config", "{d}/cfg21_kwargs.yaml",
                                               "--out", "{d}/r21_kw"], "alias"),
    Case("--lr 1e308", _train("{d}/r21_lr", "--lr", "1e308"), "lr 1e+308"),
    Case("pretrain --lr 1e308", ["pretrain", "--out", "{d}/pt21_lr", "--lr", "1e308"],
         "lr 1e+308"),
    Case("pretrain --min-lr above --lr", ["pretrain", "--out", "{d}/pt21_min", "--min-lr", "1"],
         "min_lr 1.0 is above lr"),
    Case("pretrain --label-smoothing 1", ["pretrain", "--out", "{d}/pt21_ls",
                                          "--label-smoothing", "1"], "label_smoothing 1"),
    Case("plan --dim -1", ["plan", "--model", "test_vit", "--method", "adapter",
                           "--dim", "-1"], "--dim -1"),
    Case("--val-fraction that leaves no training images",
         ["train", *TINY, "--dataset", "digits", "--val-fraction", "0.999", "--out",
          "{d}/r21_vf"], "val_fraction 0.999"),
    Case("select --mode auto without a validation split",
         ["select", *[a for a in TINY if a != "--no-progress"], "--dataset", "digits",
          "--val-fraction", "0", "--out", "{d}/s21_auto"], "validation split"),
    Case("--threads 100000", _train("{d}/r21_threads", "--threads", "100000"),
         "threads 100000"),
    Case("--img-size 100000", _train("{d}/r21_img", "--img-size", "100000"), "img-size 100000"),
    Case("batch that cannot fit in memory", _train("{d}/r21_batch", "--img-size", "4096",
                                                   "--batch-size", "1000000"), "needs at least"),
    Case("multitask --batch-size too large for memory",
         ["multitask", "{d}/run4", "--batch-size", "1000000000"], "needs at least"),
    Case("--out a symbolic link to an empty folder", _train("{d}/link_out"),
         "is a symbolic link"),
]


def _read_fixtures(d: Path) -> None:
    """Copies of run4 damaged as issue 21 lists, odd checkpoints and odd image folders."""
    import shutil
    import zipfile

    from PIL import Image
    from safetensors.torch import load_file, save_file

    def copy(name: str) -> Path:
        shutil.copytree(d / "run4", d / name)
        return d / name

    shutil.copy(d / "run3" / "delta.safetensors", copy("copied_delta") / "delta.safetensors")
    (copy("truncated_summary") / "summary.json").write_text('{"method": "lin')
    (copy("list_summary") / "summary.json").write_text("[1, 2]")
    (copy("bad_selection") / "selection.json").write_text('{"method": "linear", "layers": "x"}')
    (copy("list_eval") / "eval.json").write_text("[]")
    cfg = copy("config_no_dataset") / "config.yaml"
    cfg.write_text("".join(ln for ln in cfg.read_text().splitlines(True)
                           if not ln.startswith("dataset:")))
    cfg = copy("config_latin1") / "config.yaml"
    cfg.write_bytes(cfg.read_bytes() + "# caf\xe9\n".encode("latin-1"))
    for name, change in (("huge_img", {"img_size": 1_000_000}),
                         ("passwd_base", {"checkpoint": "/etc/passwd", "checkpoint_file": {
                             "sha256": "0" * 64, "bytes": 1}}),
                         ("overlay_kwargs", {"model_kwargs": {"pretrained_cfg_overlay": {
                             "file": "/etc/passwd"}}})):
        path = copy(name) / "delta.safetensors"
        meta = read_metadata(path)
        meta["base"] = {**meta["base"], **change}
        save_file(load_file(str(path)), str(path),
                  metadata={k: v if isinstance(v, str) else json.dumps(v)
                            for k, v in meta.items()})
    # hub_base stands for a run trained from hub weights: its summary says so
    summary = json.loads((d / "hub_base" / "summary.json").read_text())
    summary.update(model="vit_tiny_patch16_224", delta_sha256=hashlib.sha256(
        (d / "hub_base" / "delta.safetensors").read_bytes()).hexdigest())
    (d / "hub_base" / "summary.json").write_text(json.dumps(summary))
    torch.save([1, 2, 3], d / "list.pth")
    with zipfile.ZipFile(d / "zip.pth", "w") as z:
        z.writestr("hello.txt", "not a checkpoint")
    _image_folder(d / "bomb_images", Image, corrupt=False)
    _image_folder(d / "zero_images", Image, corrupt=False)
    (d / "zero_images" / "train" / "a" / "0.png").write_bytes(b"")


def _issue21_cfg_fixtures(d: Path) -> None:
    """Files for the issue 21 settings cases: deep and aliased YAML/JSON."""
    (d / "cfg21_deep.yaml").write_text("model: " + "[" * 5000 + "]" * 5000 + "\n")
    (d / "cfg21_alias.yaml").write_text("a: &a [1, 2]\nb: &b [*a, *a]\nseed: *b\n")
    (d / "cfg21_kwargs.yaml").write_text("model: test_vit\nx: &r 0.1\n"
                                         "model_kwargs: {drop_rate: *r}\n")
    (d / "cfg21_deep_spec.json").write_text("[" * 100000 + "]" * 100000)
    (d / "empty_target").mkdir(exist_ok=True)  # --out given as a link to it
    if not (d / "link_out").is_symlink():
        (d / "link_out").symlink_to(d / "empty_target")
    (d / "cfg21_deep_angles.json").write_text('{"angles": ' + "[" * 100000 + "]" * 100000 + "}")


RUNS["cfg21_stopped"] = ["--max-steps", "1"]  # resumed with another --lr


def fill(argv: list[str], d: Path) -> list[str]:
    return [a.replace("{d}", str(d)) for a in argv]


def run_case(case: Case, d: Path) -> Outcome:
    here = os.getcwd()
    try:
        if case.cwd:
            os.chdir(case.cwd.replace("{d}", str(d)))
        with case.patch() if case.patch else contextlib.nullcontext():
            return run_cli(fill(case.argv, d))
    finally:
        os.chdir(here)


def problems(case: Case, got: Outcome) -> list[str]:
    """What is wrong with how the CLI handled ``case`` (empty when it is right)."""
    found = []
    if got.traceback or "Traceback" in got.stderr:
        found.append(f"traceback:\n{got.traceback or got.stderr}")
    if got.code != 2:
        found.append(f"exit code {got.code}, expected 2")
    if len(got.lines) != 1:
        found.append(f"{len(got.lines)} lines on stderr: {got.stderr!r}")
    if case.expect.lower() not in got.stderr.lower():
        found.append(f"message lacks {case.expect!r}: {got.stderr.strip()!r}")
    return found


TAIL = (
    "The simulated cases patch `partialft.training.loop.train_step` (CUDA out of memory; weights "
    "turned NaN after 4 steps); the NaN run keeps the resume point of its last finite step, so "
    "`--resume` after lowering `--lr` continues from there. The `--out .` and `--out ''` cases "
    "run inside `DIR/cwd`, which holds a file of the user's (it survives); the offline case sets "
    "Hugging Face's offline mode, so no case touches the network. Damaged run dirs (truncated "
    "delta or resume point, edited metadata, a replaced base checkpoint) are made by "
    "`_damage_runs` from real runs.\n")


def markdown(rows: list[tuple[Case, Outcome]], d: Path) -> str:
    head = ("# Errors a user can cause\n\nGenerated by `python benchmarks/bad_inputs.py` (do not "
            "edit by hand): each row is a real run of the `partialft` CLI on tiny files; every "
            "one exits with code 2 and prints one line on stderr, no traceback. Paths are "
            "shortened to `DIR/`.\n\n| bad input | command | exit | message |\n|---|---|---|---|\n")
    body = []
    for case, got in rows:
        cmd = shlex.join(fill(case.argv, Path("DIR")))
        cmd = cmd.replace(" ".join(TINY), "TINY")
        msg = got.stderr.strip().replace(str(d), "DIR").replace("|", "\\|")
        body.append(f"| {case.what} | `{cmd}` | {got.code} | {msg} |")
    tail = ("\n\n`TINY` stands for `" + " ".join(TINY) + "`. " + TAIL)
    return head + "\n".join(body) + tail


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="do not write docs/errors.md")
    ap.add_argument("--out", default=str(ROOT / "docs" / "errors.md"), help="file to write")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    failures = 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        make_fixtures(d)
        make_runs(d)
        for case in CASES:
            got = run_case(case, d)
            rows.append((case, got))
            bad = problems(case, got)
            failures += bool(bad)
            status = "ok  " if not bad else "FAIL"
            print(f"{status} {case.what}: {got.stderr.strip()}" + "".join(
                f"\n      {b}" for b in bad), flush=True)
        if not args.check:
            Path(args.out).write_text(markdown(rows, d))
    print(f"{len(CASES) - failures}/{len(CASES)} cases handled cleanly", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
