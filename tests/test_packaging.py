"""The package as a user downloads it: the wheel and sdist build without warnings, the wheel
holds the typed package and its data, and every link of the README opens in the sdist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SKIP = shutil.ignore_patterns(".venv*", ".git", "build", "dist", "*.egg-info", "__pycache__",
                               ".pytest_cache", ".ruff_cache", ".mypy_cache", "runs")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, object]:
    """Build sdist and wheel from a copy of the tree (the build writes egg-info and build/)."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src-tree"
    shutil.copytree(ROOT, src, ignore=_SKIP)
    out, built, log = tmp / "dist", {}, ""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for kind in ("sdist", "wheel"):  # one process each: setuptools keeps state between them
        script = (f"import sys; from setuptools import build_meta as b; "
                  f"print('BUILT', b.build_{kind}(sys.argv[1]))")
        run = subprocess.run([sys.executable, "-W", "always", "-c", script, str(out)],
                             cwd=src, capture_output=True, text=True, timeout=300, env=env)
        assert run.returncode == 0, run.stderr[-3000:]
        built[kind] = out / run.stdout.rsplit("BUILT", 1)[1].strip()
        log += run.stdout + run.stderr
    return {**built, "log": log}


def test_the_build_gives_no_warnings(built):
    warnings = [line for line in str(built["log"]).splitlines()
                if re.search(r"warn|deprecat", line, re.I)]
    assert not warnings, "\n".join(warnings)


def test_the_wheel_holds_the_typed_package_its_data_and_licence(built):
    names = zipfile.ZipFile(built["wheel"]).namelist()
    for needed in ("partialft/py.typed", "partialft/configs/digits_demo.yaml",
                   "partialft/cli/__init__.py"):
        assert needed in names
    assert any(n.endswith(".safetensors") for n in names)  # the bundled backbone
    assert any(n.endswith("licenses/LICENSE") for n in names)
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(built["wheel"]).read(meta).decode()
    assert "License-Expression: Apache-2.0" in text
    from partialft import __version__

    assert f"Version: {__version__}" in text


def test_every_relative_link_of_the_readme_opens_in_the_sdist(built):
    with tarfile.open(built["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    readme = (ROOT / "README.md").read_text()
    links = {m.split("#")[0] for m in re.findall(r"\]\(([^)]+)\)", readme)
             if not re.match(r"[a-z]+:", m) and not m.startswith("#")}
    assert links, "the README links to no file: the check would pass vacuously"
    missing = sorted(link for link in links if link not in names)
    assert not missing, f"README links missing from the sdist: {missing}"
