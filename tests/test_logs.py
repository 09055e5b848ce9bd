"""What a training prints: a progress bar only on a terminal; redirected to a file or a pipe, one
plain line per epoch and no carriage returns (real `python -m partialft train` processes)."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

ARGV = ["train", "--model", "test_vit", "--no-pretrained", "--img-size", "32", "--batch-size",
        "4", "--dataset", "synthetic:2", "--max-per-split", "8", "--epochs", "2",
        "--warmup-epochs", "0", "--amp", "no", "--method", "attn"]  # progress on (the default)
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": SRC + (os.pathsep + path if path else ""),
            "OMP_NUM_THREADS": "1"}


@pytest.mark.slow  # two fresh interpreters import torch and timm
def test_redirected_output_has_one_line_per_epoch_and_a_terminal_gets_the_bar(tmp_path) -> None:
    log = tmp_path / "train.log"
    with open(log, "wb") as fh:  # stdout and stderr into one file, as `> train.log 2>&1`
        code = subprocess.run([sys.executable, "-m", "partialft", *ARGV, "--out",
                               str(tmp_path / "a")], stdout=fh, stderr=fh, env=_env(),
                              stdin=subprocess.DEVNULL, timeout=600).returncode
    text = log.read_bytes().decode()
    assert code == 0, text
    assert "\r" not in text and "\x1b[" not in text
    epochs = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"], text

    main_fd, term = os.openpty()  # stderr on an 80-column terminal: tqdm draws its bar there
    fcntl.ioctl(term, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "partialft", *ARGV, "--out",
                             str(tmp_path / "b")], stdout=subprocess.DEVNULL, stderr=term,
                            stdin=subprocess.DEVNULL, env=_env())
    os.close(term)
    seen = b""
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(main_fd)
    assert proc.wait(timeout=600) == 0, seen.decode(errors="replace")
    assert b"\r" in seen and b"epoch 1/2" in seen and b"step" in seen
