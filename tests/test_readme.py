"""The README's examples run as written (so they cannot rot)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_the_library_example_runs_and_prints_what_it_says(tmp_path):
    code = re.search(r"## As a library\n\n```python\n(.*?)```", README, re.S).group(1)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, check=True)
    lines = done.stdout.splitlines()
    assert lines[0] == "28443748"  # the comment in the example says so
    assert lines[1] == "trainable params: 28,443,748 || all params: 85,875,556 || trainable%: " \
                       "33.1221"


def test_the_peft_shaped_example_runs_and_prints_what_it_says(tmp_path):
    section = README.split("## As a library", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[1]
    assert "get_partial_model" in code and "load_trained" in code
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, check=True)
    said = re.search(r"# (trainable params: .*)", code).group(1)
    assert done.stdout.splitlines() == [said]
    assert (tmp_path / "out" / "lora" / "delta.safetensors").is_file()


def test_every_config_the_readme_names_is_shipped():
    from partialft.training.config_files import shipped_configs

    named = set(re.findall(r"--config (?:configs/)?([a-z0-9_]+)(?:\.yaml)?", README))
    assert named and named <= set(shipped_configs())
