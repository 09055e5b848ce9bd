"""Two CPU processes (gloo, via torchrun) train to the same weights as one process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from partialft.models import load_state_dict_file

ARGS = ["--model", "test_vit", "--no-pretrained", "--dataset", "synthetic:4", "--img-size", "32",
        "--max-per-split", "40", "--epochs", "1", "--batch-size", "8", "--hflip", "0",
        "--amp", "no", "--no-progress"]


def run(cmd: list[str], tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    run([sys.executable, "-m", "partialft", "train", *ARGS, "--out", "one"], tmp_path)
    run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", "29533", "-m", "partialft", "train", *ARGS, "--out", "two"], tmp_path)
    one = load_state_dict_file(tmp_path / "one" / "delta.safetensors")
    two = load_state_dict_file(tmp_path / "two" / "delta.safetensors")
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-5, msg=key)
    summary = (tmp_path / "two" / "summary.json").read_text()
    assert '"processes": 2' in summary
