"""Library errors are worded for a Python caller: keyword arguments, never ``--flags``.

A PartialFTError's message is what a library caller reads; the CLI prints ``.cli`` (see
errors.option_error). This scan of the source keeps flags out of every message outside cli/:
the string parts (f-string constants included) of ``PartialFTError(...)``'s message and of
``option_error(...)``'s template after its wording for a library caller. ``cli=`` is the
command line's wording and may name flags.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from partialft.errors import PartialFTError, for_library, option_error

SRC = Path(__file__).resolve().parent.parent / "src" / "partialft"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# files whose errors may name flags, and why
EXEMPT = {
    # check_method_flags refuses flags argparse parsed; only `partialft train` calls it
    "training/config_flags.py",
}


def _callee(node: ast.Call) -> str | None:
    func = node.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)


def _strings(node: ast.AST) -> list[ast.Constant]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def flagged(source: str, name: str = "<snippet>") -> list[str]:
    """``name:line: text`` for each flag in a library error message of ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or _callee(node) not in ("PartialFTError",
                                                                   "option_error"):
            continue
        parts = node.args[:1] + [k.value for k in node.keywords if k.arg == "message"]
        wording = for_library if _callee(node) == "option_error" else str
        for part in parts:
            for const in _strings(part):
                match = FLAG.search(wording(const.value))
                if match:
                    found.append(f"{name}:{const.lineno}: {match[0]} in {const.value!r}")
    return found


def _library_files() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py")
                  if p.relative_to(SRC).parts[0] != "cli"
                  and p.relative_to(SRC).as_posix() not in EXEMPT)


def test_library_errors_name_no_flags():
    found = [hit for path in _library_files()
             for hit in flagged(path.read_text(encoding="utf-8"),
                                str(path.relative_to(SRC.parent.parent)))]
    assert not found, ("library error messages that name CLI flags (use errors.option_error "
                       "with `keyword` options):\n" + "\n".join(found))


def test_the_scan_covers_files():
    paths = {p.relative_to(SRC).as_posix() for p in _library_files()}
    assert {"workflows/fapft.py", "selectors/scores.py", "analysis/hub.py"} <= paths
    assert not any(p.startswith("cli/") for p in paths)
    assert all((SRC / p).is_file() for p in EXEMPT)


@pytest.mark.parametrize("snippet", [
    'raise PartialFTError("pass --overwrite to replace it.")',
    'raise PartialFTError(f"--reference {ref} does not exist.")',
    'raise PartialFTError(f"{ref} is bad; " "use --method full.") from None',
    'raise errors.PartialFTError(message=f"x {y}; see --help.")',
    'raise option_error(f"{out} exists; pass --overwrite.")',
    'raise PartialFTError(f"{a}; pass --val-fraction 0.1", cli="--val-fraction")',
])
def test_the_scan_finds_a_flag(snippet):
    assert flagged(snippet)


@pytest.mark.parametrize("snippet", [
    'raise option_error(f"{out} exists; pass `overwrite=True` or another `out`.")',
    'raise PartialFTError("repo x is bad; fix it.", cli="--push-to-hub x is bad; fix it.")',
    'raise PartialFTError(f"value {x} is negative -- use 1 or more.")',
    'print("--overwrite")',
])
def test_the_scan_passes_keyword_wording(snippet):
    assert not flagged(snippet)


def test_values_are_not_read_as_options():
    exc = option_error("{path} is damaged; pass `overwrite=True`.", path="/tmp/`odd`")
    assert str(exc) == "/tmp/`odd` is damaged; pass overwrite=True."
    assert exc.for_cli() == "/tmp/`odd` is damaged; pass --overwrite."
    assert isinstance(exc, PartialFTError)


def test_converted_errors_word_keywords_and_flags(monkeypatch):
    from partialft.analysis.export import check_format
    from partialft.search.space import space_from_flags
    from partialft.utils import extras
    from partialft.utils.limits import check_batch_memory, check_img_size

    cases = []
    for call in (lambda: check_format("peft", "ssf"),
                 lambda: check_img_size(0),
                 lambda: space_from_flags(None, "x", None),
                 lambda: extras.require("no_such_module_xyz", "fmt='onnx'", cli="--format onnx")):
        with pytest.raises(PartialFTError) as info:
            call()
        cases.append(info.value)
    monkeypatch.setattr("partialft.utils.limits.available_bytes", lambda device=None: 1)
    with pytest.raises(PartialFTError) as info:
        check_batch_memory(8, 32)
    cases.append(info.value)
    library = [str(e) for e in cases]
    cli = [e.for_cli() for e in cases]
    assert library[0].startswith("fmt='peft' writes a peft LoRA adapter but this is a ssf run; "
                                 "fmt='timm' and 'merged' work")
    assert cli[0].startswith("--format peft writes a peft LoRA adapter but this is a ssf run; "
                             "--format timm and merged work")
    assert library[1].startswith("img_size=0 is not valid") and cli[1].startswith("--img-size 0")
    assert library[2].startswith("topk 'x' is not valid") and cli[2].startswith("--search-topk 'x'")
    assert library[3].startswith("fmt='onnx' needs") and cli[3].startswith("--format onnx needs")
    assert library[4].endswith("use a smaller batch_size or img_size.")
    assert cli[4].endswith("use a smaller --batch-size or --img-size.")
    assert not any(FLAG.search(text) for text in library)
