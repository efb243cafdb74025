"""Model registry: ``name/version`` -> checkpoint directory + manifest; atomic publish.

Layout::

    ROOT/<name>/v0001/            everything the workload needs to load the model
    ROOT/<name>/v0001/manifest.json  {name, version, workload, config, dataset_hash, metrics,
                                      code_version, created, files}
    ROOT/<name>/latest            a text file holding the latest version ("v0001")

Publishing copies into ``ROOT/<name>/.staging-*`` and renames into place; ``latest`` is replaced
with ``os.replace`` after the version is complete. A failed or interrupted publish leaves at most a
staging folder (ignored and cleaned), never a half-written version, and never moves ``latest``.
A per-name lock file serialises concurrent publishers (e.g. Tune trials).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from adray.paths import registry_root

MANIFEST = "manifest.json"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_VERSION = re.compile(r"^v(\d{4,})$")


class RegistryError(LookupError):
    """Unknown model name or version, or a malformed reference."""


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    path: Path
    manifest: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def parse_ref(ref: str) -> tuple[str, str]:
    """``"pwiser"`` / ``"pwiser@latest"`` / ``"pwiser@v0003"`` / ``"pwiser@3"`` -> (name, version)."""
    name, _, version = ref.partition("@")
    version = version or "latest"
    if not _NAME.match(name):
        raise RegistryError(f"model reference {ref!r}: name must match {_NAME.pattern}")
    if version.isdigit():
        version = f"v{int(version):04d}"
    if version != "latest" and not _VERSION.match(version):
        raise RegistryError(f"model reference {ref!r}: version must be 'latest', vNNNN or a number")
    return name, version


class Registry:
    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root else registry_root()

    # ---------------------------------------------------------------- reading
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name))

    def versions(self, name: str) -> list[str]:
        d = self.root / name
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if _VERSION.match(p.name) and (p / MANIFEST).is_file())

    def latest(self, name: str) -> str | None:
        f = self.root / name / "latest"
        return f.read_text().strip() if f.is_file() else None

    def get(self, ref: str) -> ModelVersion:
        name, version = parse_ref(ref)
        if version == "latest":
            version = self.latest(name) or ""
            if not version:
                raise RegistryError(
                    f"no published model {name!r} in {self.root}; available: {self.names() or 'none'}"
                )
        path = self.root / name / version
        if not (path / MANIFEST).is_file():
            raise RegistryError(
                f"model {name}@{version} not found in {self.root}; available versions of {name!r}: "
                f"{self.versions(name) or 'none'}"
            )
        return ModelVersion(name, version, path, json.loads((path / MANIFEST).read_text()))

    def list(self) -> list[ModelVersion]:
        return [self.get(f"{n}@{v}") for n in self.names() for v in self.versions(n)]

    # ---------------------------------------------------------------- writing
    def publish(self, name: str, src: Path | str, manifest: dict[str, Any]) -> ModelVersion:
        """Copy ``src`` (a directory) as the next version of ``name`` and move ``latest`` to it."""
        if not _NAME.match(name):
            raise RegistryError(f"model name {name!r} must match {_NAME.pattern}")
        src = Path(src)
        if not src.is_dir():
            raise RegistryError(f"cannot publish {name}: {src} is not a directory")
        base = self.root / name
        base.mkdir(parents=True, exist_ok=True)
        with _lock(base / ".lock"):
            _clean_staging(base)
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=base))
            try:
                shutil.copytree(src, staging, dirs_exist_ok=True)
                existing = [int(_VERSION.match(v).group(1)) for v in self.versions(name)]  # type: ignore[union-attr]
                version = f"v{(max(existing) + 1 if existing else 1):04d}"
                full = {
                    **manifest,
                    "name": name,
                    "version": version,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "code_version": manifest.get("code_version") or code_version(),
                    "files": sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file()),
                }
                _write_atomic(staging / MANIFEST, json.dumps(full, indent=2, default=str))
                os.replace(staging, base / version)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            _write_atomic(base / "latest", version + "\n")
        return self.get(f"{name}@{version}")


def code_version() -> str:
    """The git commit of the project (``+dirty`` when uncommitted changes), or 'unknown'."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here, capture_output=True, text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("+dirty" if dirty else "")) if sha else "unknown"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _clean_staging(base: Path) -> None:
    for p in base.glob(".staging-*"):
        shutil.rmtree(p, ignore_errors=True)


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
