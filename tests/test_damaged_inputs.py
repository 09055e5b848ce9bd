"""Inputs written elsewhere, damaged: every verb that reads a run dir refuses a truncated,
wrong-typed, incomplete or non-UTF-8 file (and edited delta metadata) with one sentence naming
the file; odd checkpoints, Hub names and images give one sentence too (issue 21)."""

from __future__ import annotations

import json
import os
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import assert_user_error, cli
from read_runs import TINY, copy_run, shared_runs
from safetensors.torch import load_file, save_file


@pytest.fixture
def runs() -> dict[str, Path]:
    return shared_runs()


# --- the damage matrix: (file, damage) x each verb that reads that file -----------------------

def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _json_edit(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = json.loads(path.read_text())
        path.write_text(json.dumps(edit(data)))
    return damage


def _yaml_edit(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    import yaml

    def damage(path: Path) -> None:
        path.write_text(yaml.safe_dump(edit(yaml.safe_load(path.read_text()))))
    return damage


def _without(key: str) -> Callable[[dict], dict]:
    return lambda d: {k: v for k, v in d.items() if k != key}


def _latin1(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-2] + "caf\xe9\n".encode("latin-1"))


def _first_entry_list(data: dict) -> dict:
    return {k: [1, 2] for k in data}


DAMAGES: dict[str, dict[str, Callable[[Path], None]]] = {
    "summary.json": {
        "truncated": _truncate, "a list": _json_edit(lambda d: [d]),
        "no method": _json_edit(_without("method")),
        "best_acc text": _json_edit(lambda d: {**d, "best_acc": "high"}),
        "config a list": _json_edit(lambda d: {**d, "config": ["x"]}),
        "img_size text": _json_edit(lambda d: {**d, "config": {**d["config"], "img_size": "x"}}),
        "not UTF-8": _latin1,
    },
    "config.yaml": {
        "truncated": lambda p: p.write_text(p.read_text()[:30]), "a list": _yaml_edit(
            lambda d: list(d)), "no dataset": _yaml_edit(_without("dataset")),
        "img_size text": _yaml_edit(lambda d: {**d, "img_size": "big"}),
        "broken YAML": lambda p: p.write_text("model: [test_vit\n"), "not UTF-8": _latin1,
    },
    "selection.json": {
        "truncated": _truncate, "a list": _json_edit(lambda d: [d]),
        "no method": _json_edit(_without("method")),
        "layers text": _json_edit(lambda d: {**d, "layers": "all"}), "not UTF-8": _latin1,
    },
    "eval.json": {
        "truncated": _truncate, "a list": _json_edit(lambda d: [d]),
        "entry a list": _json_edit(_first_entry_list), "not UTF-8": _latin1,
    },
}
# which verbs read which file of a run dir
READERS = {
    "summary.json": ["eval", "soup", "export", "report", "multitask", "angles", "select"],
    "config.yaml": ["eval", "soup", "export"],
    "selection.json": ["report"],
    "eval.json": ["report", "eval"],
}


def _argv(verb: str, run: Path, other: Path, tmp: Path) -> list[object]:
    tiny = [a for a in TINY if a != "--no-progress"]
    return {"eval": ["eval", run, "--dataset", "synthetic:4", "--no-progress"],
            "soup": ["soup", run, other, "--out", tmp / "soup"],
            "export": ["export", run, "--out", tmp / "export"],
            "report": ["report", run, "--out", tmp / "report"],
            "multitask": ["multitask", run, "--iters", "1", "--batch-size", "2"],
            "angles": ["angles", run],
            "select": ["select", *tiny, "--selector", "angle", "--mode", "large",
                       "--reference", run, "--out", tmp / "sel"]}[verb]


MATRIX = [(f, d, v) for f, damages in DAMAGES.items() for d in damages for v in READERS[f]]


@pytest.mark.parametrize("file,damage,verb", MATRIX, ids=["-".join(m) for m in MATRIX])
def test_damaged_run_dir_file_gives_one_sentence(capsys, tmp_path, runs, file, damage,
                                                 verb) -> None:
    run = copy_run(runs, "full", tmp_path)
    (run / "eval.json").write_text(json.dumps({"test": {"acc": 50.0}}))
    DAMAGES[file][damage](run / file)
    damaged = (run / file).read_bytes()
    code, _, err = cli(capsys, *_argv(verb, run, runs["full_s1_threads"], tmp_path))
    assert_user_error(code, err, str(run / file))
    assert (run / file).read_bytes() == damaged  # named, never rewritten
    for out in ("soup", "export", "report", "sel"):
        assert not (tmp_path / out).exists(), f"{verb} left {out}/ behind"


# --- delta metadata, edited: checked as input before anything is allocated or read -----------

def _meta(path: Path, edit: Callable[[dict], dict]) -> None:
    from partialft.training.checkpoints import read_metadata

    meta = edit(read_metadata(path))
    save_file(load_file(str(path)), str(path),
              metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})


def _base(**changes: object) -> Callable[[dict], dict]:
    return lambda m: {**m, "base": {**m["base"], **changes}}


def _selection(**changes: object) -> Callable[[dict], dict]:
    return lambda m: {**m, "selection": {**m["selection"], **changes}}


SHA = "0" * 64
META_DAMAGES: dict[str, tuple[Callable[[dict], dict], str]] = {
    "base a list": (lambda m: {**m, "base": [1]}, "'base' must be a mapping"),
    "base without model": (lambda m: {**m, "base": _without("model")(m["base"])},
                           "'base' must be a mapping"),
    "img_size 1000000": (_base(img_size=1_000_000), "img_size 1000000"),
    "img_size 0": (_base(img_size=0), "img_size 0"),
    "num_classes a billion": (_base(num_classes=10**9), "num_classes 1000000000"),
    "init_seed negative": (_base(init_seed=-1), "init_seed -1"),
    "checkpoint /etc/passwd": (_base(checkpoint="/etc/passwd",
                                     checkpoint_file={"sha256": SHA, "bytes": 1}),
                               "not a weights file"),
    "checkpoint without its hash": (lambda m: {**m, "base": {
        **_without("checkpoint_file")(m["base"]), "checkpoint": "/tmp/x.safetensors"}},
        "without the SHA-256"),
    "unknown base field": (_base(extra_file="/etc/passwd"), "unknown field 'extra_file'"),
    "model_kwargs loading other files": (
        _base(model_kwargs={"pretrained_cfg_overlay": {"file": "/etc/passwd"}}),
        "model_kwargs 'pretrained_cfg_overlay'"),
    "model_kwargs drop_rate 2": (_base(model_kwargs={"drop_rate": 2}), "drop_rate"),
    "model_kwargs huge depth": (_base(model_kwargs={"depth": 10**9}), "depth"),
    "weights_sha256 not a hash": (_base(weights_sha256="abc"), "not a SHA-256"),
    "selection a list": (lambda m: {**m, "selection": [1]}, "'selection' must be a mapping"),
    "selection layers text": (_selection(layers="all"), "selection layers"),
    "baseline rank a billion": (_selection(rank=10**9), "selection rank"),
    "deeply nested metadata": (lambda m: {**m, "selection": "[" * 100_000 + "]" * 100_000},
                               "nested too deeply"),
}
META_VERBS = ["eval", "soup", "export", "multitask", "angles", "select"]
META_MATRIX = ([(d, "eval") for d in META_DAMAGES]
               + [(d, v) for d in ("img_size 1000000", "checkpoint /etc/passwd", "base a list")
                  for v in META_VERBS[1:]])


@pytest.mark.parametrize("damage,verb", META_MATRIX, ids=["-".join(m) for m in META_MATRIX])
def test_delta_metadata_is_checked_as_input(capsys, tmp_path, runs, damage, verb,
                                            monkeypatch) -> None:
    opened: list[str] = []
    real_open = open

    def spy(file, *args, **kwargs):  # noqa: ANN001 - records what the verb reads
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    run = copy_run(runs, "full", tmp_path)
    edit, needle = META_DAMAGES[damage]
    _meta(run / "delta.safetensors", edit)
    monkeypatch.setattr("builtins.open", spy)
    start = time.perf_counter()
    code, _, err = cli(capsys, *_argv(verb, run, runs["full_s1_threads"], tmp_path))
    assert_user_error(code, err, str(run / "delta.safetensors"), needle)
    assert "/etc/passwd" not in opened
    assert time.perf_counter() - start < 30  # nothing of a terabyte was attempted


# --- odd files as --checkpoint ----------------------------------------------------------------

def _odd_checkpoints(d: Path) -> dict[str, Path]:
    files = {"text.pth": b"a text file, not weights\n", "text.txt": b"hello\n",
             "empty.pth": b"", "binary.pt": os.urandom(64).replace(b"PK", b"pk")}
    for name, raw in files.items():
        (d / name).write_bytes(b"\x00" + raw if name == "binary.pt" else raw)
    torch.save([1, 2, 3], d / "list.pth")
    torch.save(torch.zeros(3), d / "tensor.pth")
    torch.save({"a": 1, "b": "x"}, d / "non_tensors.pth")
    torch.save({"state_dict": [1]}, d / "state_dict_list.pth")
    with zipfile.ZipFile(d / "zip.pth", "w") as z:
        z.writestr("hello.txt", "not a checkpoint")
    with zipfile.ZipFile(d / "zip_pickle.pth", "w") as z:
        z.writestr("archive/data.pkl", "garbage")
    (d / "legacy_garbage.pth").write_bytes(b"\x80\x02" + os.urandom(100))
    return {p.name: p for p in d.iterdir()}


@pytest.mark.parametrize("verb", ["plan", "train"])
def test_odd_checkpoint_files_give_one_sentence(capsys, tmp_path, verb) -> None:
    (tmp_path / "odd").mkdir()
    for name, path in _odd_checkpoints(tmp_path / "odd").items():
        argv = (["plan", "--model", "test_vit", "--method", "full", "--checkpoint", path]
                if verb == "plan" else
                ["train", *TINY, "--checkpoint", path, "--out", tmp_path / name])
        code, _, err = cli(capsys, *argv)
        assert_user_error(code, err, str(path))
        assert not (tmp_path / name).exists()


# --- Hub names offline --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["hf-hub:", "hf-hub:/x", "hf-hub:a/b", "hf-hub:a/b/c/d",
                                  "hf-hub: ", "hf-hub:../x"])
def test_hub_names_fail_fast_offline(capsys, tmp_path, monkeypatch, name) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    code, _, err = cli(capsys, "train", *TINY[:2], name, *TINY[2:], "--pretrained", "--out",
                       tmp_path / "r")
    assert_user_error(code, err, name.strip() or "hf-hub")
    assert time.perf_counter() - start < 20
    assert not (tmp_path / "r").exists()


# --- images in a folder: dataset ----------------------------------------------------------------

def _folder(root: Path, bad: str) -> Path:
    from PIL import Image

    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (16, 16), (90 * i, 30, 200)).save(root / split / c / f"{i}.png")
    target = root / "train" / "a" / "0.png"
    if bad == "truncated":
        raw = target.read_bytes()
        target.write_bytes(raw[: len(raw) // 2])
    elif bad == "zero bytes":
        target.write_bytes(b"")
    elif bad == "not an image":
        target.write_text("a text file named like an image\n")
    elif bad == "jpeg that is a png header":
        target.rename(target.with_suffix(".jpg"))
        (root / "train" / "a" / "0.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 20)
    return root


@pytest.mark.parametrize("bad", ["truncated", "zero bytes", "not an image",
                                 "jpeg that is a png header", "bomb", "bomb warning"])
@pytest.mark.parametrize("workers", [0, 1])
def test_bad_images_in_a_folder_dataset_give_one_sentence(capsys, tmp_path, monkeypatch, bad,
                                                          workers) -> None:
    from PIL import Image

    root = _folder(tmp_path / "images", bad)
    if bad.startswith("bomb"):
        # 16x16 = 256 pixels: an error above 2 x MAX_IMAGE_PIXELS, PIL's warning above it
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 if bad == "bomb" else 200)
    argv = ["train", *TINY, "--dataset", f"folder:{root}", "--batch-size", "4",
            "--max-per-split", "8", "--workers", str(workers), "--out", tmp_path / "r"]
    code, _, err = cli(capsys, *argv)
    assert_user_error(code, err, "0.")
    if bad.startswith("bomb"):
        assert "decompression bomb" in err


# --- memory-sized inputs of multitask ------------------------------------------------------------

def test_multitask_refuses_a_batch_that_does_not_fit_in_memory(capsys, runs, monkeypatch) -> None:
    import partialft.utils.limits as limits

    monkeypatch.setattr(limits, "available_bytes", lambda device=None: 64 * 2**20)  # 64 MiB free
    code, _, err = cli(capsys, "multitask", runs["full"], "--batch-size", "100000", "--iters", "1")
    assert_user_error(code, err, "batch of 100000 images of 32x32", "--batch-size")
    code, _, err = cli(capsys, "multitask", runs["full"], "--batch-size", "2", "--iters", "1")
    assert code == 0, err
