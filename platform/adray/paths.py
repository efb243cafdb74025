"""Where adray keeps its state: ``$ADRAY_HOME`` (default ``./.adray`` in the working directory)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("ADRAY_HOME", ".adray")).absolute()


def registry_root() -> Path:
    return Path(os.environ.get("ADRAY_REGISTRY", str(home() / "registry"))).absolute()


def runs_root() -> Path:
    return home() / "runs"
