"""docs/api.md is generated from the docstrings and current; every public function's docstring
names each of its parameters (its options), so the page documents them."""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# the packages whose functions are the library's face: each parameter named in the docstring
FACE = ["partialft", "partialft.integrations", "partialft.selectors.auto", "partialft.search"]
PACKAGES = [*FACE, "partialft.models", "partialft.data"]


def _run_gen(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_api.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_docs_api_md_is_current():
    done = _run_gen("--check")
    assert done.returncode == 0, done.stderr + " (run python scripts/gen_api.py)"


def test_docs_api_md_covers_every_public_name():
    text = (ROOT / "docs" / "api.md").read_text()
    for package in PACKAGES:
        for name in importlib.import_module(package).__all__:
            assert f"`{package}.{name}" in text, f"{package}.{name} missing from docs/api.md"


def _public(package: str):
    module = importlib.import_module(package)
    for name in module.__all__:
        yield f"{package}.{name}", getattr(module, name)


@pytest.mark.parametrize("package", FACE)
def test_every_public_function_documents_each_option(package):
    for qualname, obj in _public(package):
        if not callable(obj):
            continue
        doc = inspect.getdoc(obj) or ""
        assert len(doc.split()) >= 5, f"{qualname} has no real docstring"
        if inspect.isclass(obj):
            continue
        for param in inspect.signature(obj).parameters.values():
            assert param.name in doc, f"{qualname}'s docstring does not name {param.name!r}"


def test_the_generator_fails_on_a_stale_page(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "scripts" / "gen_api.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    stale = tmp_path / "api.md"
    stale.write_text(gen.render().replace("get_partial_model", "get_model", 1))
    monkeypatch.setattr(gen, "OUT", stale)
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    assert gen.main(["--check"]) == 1
    assert gen.main([]) == 0 and gen.main(["--check"]) == 0
