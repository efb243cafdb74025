"""The source root must not shadow the stdlib: `import platform` from the repo root still works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_stdlib_platform_not_shadowed() -> None:
    assert not (REPO / "platform" / "__init__.py").exists()
    out = subprocess.run([sys.executable, "-c", "import platform, uuid; print(platform.system())"],
                         cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() in {"Linux", "Darwin", "Windows"}


def test_ruff_forbids_stdlib_shadowing_modules() -> None:
    text = (REPO / "pyproject.toml").read_text()
    assert '"A"' in text and "builtins-strict-checking = true" in text


def _code_strings_and_names(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every identifier, attribute and string constant of a module that is not a
    docstring (docstrings may give examples; code may not depend on a workload)."""
    import ast

    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            out.append((node.lineno, node.value))
        elif isinstance(node, ast.Name):
            out.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            out.append((node.lineno, node.attr))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if getattr(node, "module", None) else [])
            out.extend((node.lineno, n) for n in names)
    return out


def test_platform_code_names_no_workload() -> None:
    """The platform reaches workloads only through the registry dict (the demo is the exception)."""
    import re

    from workloads import WORKLOADS

    pattern = re.compile(r"\b(" + "|".join(map(re.escape, WORKLOADS)) + r")\b")
    hits = []
    for top in ("platform/adray", "serve_apps"):
        for f in sorted((REPO / top).rglob("*.py")):
            if f.name == "demo.py":
                continue
            hits += [f"{f.relative_to(REPO)}:{line}: {text!r}" for line, text in _code_strings_and_names(f)
                     if pattern.search(text)]
    assert hits == []
