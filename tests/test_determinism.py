"""Deterministic files: the same run twice gives byte-identical outputs (timings aside)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from partialft.utils.canonical import canonicalize


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(path: Path, sort: bool) -> Path:
    meta = {k: str(i) for i, k in enumerate(["format", "base", "selection", "zz", "aa", "é"])}
    save_file({"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.float16)},
              str(path), metadata=meta)
    if sort:
        canonicalize(path)
    return path


def test_canonical_safetensors_are_byte_identical(tmp_path):
    """safetensors orders its header from a hash map (a new order for each file written, even
    in one process); canonicalize() makes the bytes depend on the content alone, and the file
    still loads with every tensor and metadata key."""
    raw = {_sha(_write(tmp_path / f"raw{i}.safetensors", False)) for i in range(8)}
    assert len(raw) > 1  # the problem is real: the same content, other bytes
    fixed = [_write(tmp_path / f"sorted{i}.safetensors", True) for i in range(8)]
    assert len({_sha(p) for p in fixed}) == 1
    assert torch.equal(load_file(str(fixed[0]))["w"], torch.arange(6.0).reshape(2, 3))
    with safe_open(str(fixed[0]), "pt") as fh:
        assert fh.metadata()["é"] == "5"


def test_canonicalize_keeps_every_tensor_and_key(tmp_path):
    path = tmp_path / "x.safetensors"
    tensors = {f"t{i}": torch.randn(i + 1, 3) for i in range(20)}
    save_file(tensors, str(path), metadata={"k": "v"})
    canonicalize(path)
    back = load_file(str(path))
    assert back.keys() == tensors.keys()
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)


# summary.json keys that measure time (or the machine's load), not the run's result
TIMINGS = {"wall_s", "images_per_s", "train_s", "eval_s", "elapsed_s", "started", "finished"}


def _hashes(run: Path, angles: Path) -> dict[str, str]:
    import json

    summary = json.loads((run / "summary.json").read_text())
    timed = sorted(k for k in summary if k in TIMINGS)
    untimed = {k: v for k, v in summary.items() if k not in TIMINGS}
    return {"delta.safetensors": _sha(run / "delta.safetensors"),
            "selection.json": _sha(run / "selection.json"),
            "metrics.jsonl (lines, timing fields aside)": str(_metrics(run)),
            "summary.json minus " + ",".join(timed): json.dumps(untimed),
            "angles.json": _sha(angles)}


def _metrics(run: Path) -> list[dict]:
    import json

    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_the_same_run_twice_gives_byte_identical_files(tmp_path, capsys):
    """Train, measure angles, then do both again with --overwrite: the delta, selection and
    angles files hash the same, the summary differs only in its timing keys."""
    from conftest import REAL, cli

    run, angles, runs = tmp_path / "run", tmp_path / "angles.json", []
    for again in ([], ["--overwrite"]):
        code, _, err = cli(capsys, "train", *REAL, "--method", "attn", "--out", run, *again)
        assert code == 0, err
        code, _, err = cli(capsys, "angles", run, "--out", angles, *again)
        assert code == 0, err
        runs.append(_hashes(run, angles))
    assert runs[0] == runs[1]
