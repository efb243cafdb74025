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
