"""Write docs/api.md, the API reference, from the docstrings of every public name.

Public names: ``partialft.__all__`` and the ``__all__`` of the public subpackages
(:data:`PACKAGES`). Run ``python scripts/gen_api.py`` after changing a docstring or a
signature; ``--check`` exits 1 when docs/api.md is stale (``tests/test_api_docs.py`` runs it).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "api.md"
# package -> one line about it, in the order the page lists them
PACKAGES = {
    "partialft": "the method and the PEFT-shaped face: `import partialft`",
    "partialft.integrations": "hooks into other trainers (optional extras, imported when used)",
    "partialft.models": "timm model creation and weight files",
    "partialft.data": "datasets, augmentation and splits",
    "partialft.selectors.auto": "`--mode auto`: FAPFT's mode decided by validation pilots",
    "partialft.search": "`partialft search` on Optuna (extra `partialft[search]`, imported "
                        "when a search runs)",
}
HEADER = """# API reference

Generated from the docstrings by `python scripts/gen_api.py` (do not edit by hand;
`tests/test_api_docs.py` fails when this page is stale). Every name below is importable from its
package, e.g. `from partialft import get_partial_model`; the CLI is documented in
[cli.md](cli.md).
"""


def _doc(obj: Any) -> str:
    """The docstring as Markdown: reST ``code`` and :func:`name` roles become `code`."""
    text = inspect.cleandoc(obj.__doc__ or "").strip()
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _param(p: inspect.Parameter) -> str:
    """One parameter as written in code: ``name: type = default`` (annotations unquoted)."""
    stars = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
    text = stars + p.name
    if p.annotation is not p.empty:
        ann = p.annotation if isinstance(p.annotation, str) else inspect.formatannotation(
            p.annotation)
        text += f": {ann}"
    if p.default is not p.empty:
        default = "<factory>" if "factory" in repr(p.default) else repr(p.default)
        text += f" = {default}"
    return text


def _signature(name: str, obj: Any) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return name
    parts: list[str] = []
    for p in sig.parameters.values():
        if p.kind == p.KEYWORD_ONLY and not any(x.startswith("*") for x in parts):
            parts.append("*")
        parts.append(_param(p))
    ret = sig.return_annotation
    arrow = "" if ret is sig.empty or inspect.isclass(obj) else f" -> {ret}"
    return f"{name}({', '.join(parts)}){arrow}"


def _methods(cls: type) -> list[str]:
    """Public methods and properties a class defines itself, each with its first line."""
    lines = []
    for attr, value in vars(cls).items():
        if attr.startswith("_") and attr not in ("__iter__", "__str__"):
            continue
        if isinstance(value, property):
            first = _doc(value).splitlines()[0] if _doc(value) else ""
            lines.append(f"- `{attr}` (property){': ' + first if first else ''}")
        elif inspect.isfunction(value):
            first = _doc(value).splitlines()[0] if _doc(value) else ""
            lines.append(f"- `{_signature(attr, value)}`{': ' + first if first else ''}")
    return lines


def _entry(package: str, name: str, obj: Any) -> list[str]:
    if inspect.isclass(obj):
        out = [f"### class `{package}.{_signature(name, obj)}`", "", _doc(obj)]
        methods = _methods(obj)
        return out + ([""] + methods if methods else [])
    if callable(obj):
        return [f"### `{package}.{_signature(name, obj)}`", "", _doc(obj)]
    keys = ", ".join(f"`{k}`" for k in obj) if isinstance(obj, dict) else ""
    return [f"### `{package}.{name}`", "", f"A `{type(obj).__name__}`" +
            (f" with the keys {keys}." if keys else ".")]


def render() -> str:
    parts = [HEADER]
    for package, about in PACKAGES.items():
        module = importlib.import_module(package)
        parts += [f"## `{package}`", "", f"{about[0].upper()}{about[1:]}.", ""]
        for name in sorted(module.__all__):
            parts += _entry(package, name, getattr(module, name)) + [""]
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/api.md is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT.relative_to(ROOT)} is stale; run python scripts/gen_api.py",
                  file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
