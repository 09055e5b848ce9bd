"""Type checkers see partialft's public names: the lazily imported attributes are mirrored by
TYPE_CHECKING imports, the wheel ships py.typed, and mypy checks a user's script."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "partialft"
TYPECHECK = Path(__file__).resolve().parent / "typecheck"
LAZY_PACKAGES = ["partialft", "partialft.models", "partialft.data", "partialft.integrations"]


def _type_checking_imports(path: Path) -> dict[str, str]:
    """name -> module of the imports under `if TYPE_CHECKING:` in ``path``."""
    found: dict[str, str] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom), ast.dump(imp)
                for alias in imp.names:
                    assert alias.asname == alias.name, f"{alias.name} must be re-exported as itself"
                    found[alias.name] = imp.module
    return found


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_lazy_names_are_mirrored_for_type_checkers(package):
    module = importlib.import_module(package)
    path = Path(module.__file__)
    assert _type_checking_imports(path) == module._API
    for name in module._API:  # and each resolves at run time
        assert getattr(module, name) is not None


def test_py_typed_is_shipped():
    assert (SRC / "py.typed").is_file()
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'partialft = \[[^\]]*"py\.typed"', text), "py.typed not in package-data"


def _mypy(*files: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("mypy", reason="mypy is in the test extra")
    # torch and timm are skipped (typed as Any): checking them costs minutes and tells nothing
    # about partialft's own signatures, which is what a user's script is checked against
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent",
         "--config-file", str(TYPECHECK / "mypy.ini"), *map(str, files)],
        capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.mark.slow
def test_mypy_checks_a_users_script_clean_and_catches_mistakes():
    clean = _mypy(TYPECHECK / "user_script.py")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    bad = _mypy(TYPECHECK / "mistakes.py")
    marked = [i for i, line in enumerate((TYPECHECK / "mistakes.py").read_text().splitlines(), 1)
              if line.endswith("# error")]
    reported = {int(m) for m in re.findall(r"mistakes\.py:(\d+): error", bad.stdout)}
    assert bad.returncode == 1 and reported == set(marked), bad.stdout
