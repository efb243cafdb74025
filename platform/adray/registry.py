"""Model registry: ``name/version`` -> model directory + manifest; atomic publish; on a storage URI.

Layout under the registry's storage (a local folder, ``s3://...``, ``gs://...``; see
:mod:`adray.storage`)::

    ROOT/<name>/v0001/               everything the workload needs to load the model
    ROOT/<name>/v0001/manifest.json  {name, version, workload, config, dataset_hash, metrics,
                                      code_version, created, files}
    ROOT/<name>/latest               a text file holding the latest version ("v0001")
    ROOT/<name>/aliases/<alias>      a text file per alias holding the version it names ("v0001")

A version exists once its ``manifest.json`` exists, and the manifest is written last. Locally the
files are staged in ``ROOT/<name>/.staging-*`` and renamed into place; on an object store they are
uploaded to the version's prefix and the manifest is PUT after them. Either way a failed or
interrupted publish never leaves a readable half-written version and never moves ``latest``,
which is replaced (one atomic write) after the version is complete. Publishers of one name are
serialised by a lock file on the local machine; two machines publishing the same name to one
object store at the same instant could pick the same version number (object stores here offer no
create-if-absent), so publish from one place per name (the driver of a run or a sweep does).

Aliases (``serving``, ``canary``, ...) are names a person or a gate moves on purpose
(``adray models promote``), unlike ``latest``, which every publish moves: ``get("name@serving")``
resolves one. Every move is recorded in ``ROOT/<name>/alias-history/`` (time, from, to, how: the
gate and its report, or forced) and ``adray models history NAME`` prints it. An alias file is replaced in one write (``Storage.write_text``: one PUT, or temp +
rename locally), so a reader sees the old or the new version, never a mix. An alias names an
existing version; alias names are ``[a-z][a-z0-9_-]*`` except ``latest`` and ``v<digits>``.

Loading reads a local directory: ``Registry.local_dir(mv)`` is the version folder itself on local
storage, or a copy fetched once into ``$ADRAY_HOME/cache`` (versions are immutable).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
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

from adray.paths import cache_root, home, registry_uri
from adray.storage import Storage

MANIFEST = "manifest.json"
LATEST = "latest"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_VERSION = re.compile(r"^v(\d{4,})$")
ALIASES = "aliases"
HISTORY = "alias-history"
"""One JSON file per alias move: ``<time_ns>-<alias>.json`` (time, alias, from, to, how, gate, by)."""
_ALIAS = re.compile(r"^[a-z][a-z0-9_\-]*$")
_RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$")


class RegistryError(LookupError):
    """Unknown model name or version, or a malformed reference."""


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    location: str
    """Where the version lives (a local path or ``s3://bucket/.../name/v0001``)."""
    manifest: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def parse_ref(ref: str) -> tuple[str, str]:
    """``"pwiser"`` / ``"pwiser@latest"`` / ``"pwiser@v0003"`` / ``"pwiser@3"`` -> (name, version).

    ``"pwiser@"`` is refused: an ``@`` with nothing after it is a version left out (a shell variable
    that was empty), not a request for the latest one.
    """
    name, at, version = ref.partition("@")
    if at and not version:
        raise RegistryError(f"model reference {ref!r}: no version after '@'; expected {name or 'NAME'}@vNNNN (or a "
                            f"number), {name or 'NAME'}@latest or {name or 'NAME'}@ALIAS (e.g. @serving)")
    version = version or "latest"
    if not _NAME.match(name):
        raise RegistryError(f"model reference {ref!r}: name must match {_NAME.pattern}")
    if version.isdigit():
        version = f"v{int(version):04d}"
    if version != "latest" and not _VERSION.match(version):
        raise RegistryError(f"model reference {ref!r}: version must be 'latest', vNNNN or a number")
    return name, version


def is_alias(tag: str) -> bool:
    """Whether the part of a reference after ``@`` names an alias (not ``latest``, vNNNN or a number)."""
    return bool(_ALIAS.match(tag)) and not _RESERVED_ALIAS.match(tag)


def check_alias(alias: str) -> str:
    """``alias`` if it is a valid alias name, else a RegistryError saying what is expected."""
    if not is_alias(alias):
        why = "is reserved" if _RESERVED_ALIAS.match(alias) else f"must match {_ALIAS.pattern}"
        raise RegistryError(f"alias {alias!r} {why} (aliases are names such as 'serving' or 'canary'; "
                            "not 'latest', not a version vNNNN)")
    return alias


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise RegistryError(f"model name {name!r} must match {_NAME.pattern}")


class Registry:
    def __init__(self, root: Storage | Path | str | None = None) -> None:
        self.storage = root if isinstance(root, Storage) else Storage(root or registry_uri())
        self.root = self.storage.display()
        """Human address of the registry (for messages)."""

    # ---------------------------------------------------------------- reading
    def names(self) -> list[str]:
        return [n for n in self.storage.list_dirs() if _NAME.match(n)]

    def versions(self, name: str) -> list[str]:
        return [v for v in self.storage.list_dirs(name)
                if _VERSION.match(v) and self.storage.is_file(name, v, MANIFEST)]

    def latest(self, name: str) -> str | None:
        text = self.storage.read_text(name, LATEST)
        return text.strip() if text else None

    def get(self, ref: str) -> ModelVersion:
        name, _, tag = ref.partition("@")
        if is_alias(tag):  # name@serving -> name@v0003
            ref = f"{name}@{self.alias(name, tag)}"
        name, version = parse_ref(ref)
        if version == "latest":
            version = self.latest(name) or ""
            if not version:
                raise RegistryError(
                    f"no published model {name!r} in {self.root}; available: {self.names() or 'none'}"
                )
        text = self.storage.read_text(name, version, MANIFEST)
        if text is None:
            raise RegistryError(
                f"model {name}@{version} not found in {self.root}; available versions of {name!r}: "
                f"{self.versions(name) or 'none'}"
            )
        return ModelVersion(name, version, self.storage.display(name, version), json.loads(text))

    def aliases(self, name: str) -> dict[str, str]:
        """``{alias: version}`` of a model name ({} if it has none)."""
        _check_name(name)
        out = {}
        for alias in self.storage.list_files(name, ALIASES):
            if is_alias(alias):  # skips local temp files of an alias being replaced
                text = self.storage.read_text(name, ALIASES, alias)
                if text and text.strip():
                    out[alias] = text.strip()
        return dict(sorted(out.items()))

    def alias(self, name: str, alias: str) -> str:
        """The version an alias of ``name`` names, or a RegistryError listing the aliases that exist."""
        _check_name(name)
        check_alias(alias)
        text = self.storage.read_text(name, ALIASES, alias)
        if not text or not text.strip():
            have = self.aliases(name)
            listed = ", ".join(f"{a} -> {v}" for a, v in have.items()) or "none"
            raise RegistryError(f"model {name!r} has no alias {alias!r} in {self.root}; its aliases: {listed}")
        return text.strip()

    def list(self) -> list[ModelVersion]:
        return [self.get(f"{n}@{v}") for n in self.names() for v in self.versions(n)]

    def local_dir(self, mv: ModelVersion) -> Path:
        """A local directory with the version's files (fetched once when the registry is remote)."""
        return self.storage.cached_copy(cache_root() / "registry", mv.name, mv.version)

    # ---------------------------------------------------------------- writing
    def publish(self, name: str, src: Path | str, manifest: dict[str, Any]) -> ModelVersion:
        """Copy ``src`` (a local directory) as the next version of ``name`` and move ``latest`` to it."""
        if not _NAME.match(name):
            raise RegistryError(f"model name {name!r} must match {_NAME.pattern}")
        src = Path(src)
        if not src.is_dir():
            raise RegistryError(f"cannot publish {name}: {src} is not a directory")
        with _lock(self._lock_path(name)):
            existing = [int(_VERSION.match(v).group(1)) for v in self.versions(name)]  # type: ignore[union-attr]
            version = f"v{(max(existing) + 1 if existing else 1):04d}"
            files = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file() and p.name != MANIFEST)
            full = {
                **manifest,
                "name": name,
                "version": version,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "code_version": manifest.get("code_version") or code_version(),
                "files": files,
            }
            text = json.dumps(full, indent=2, default=str)
            if self.storage.is_local:
                self._publish_local(name, version, src, text)
            else:
                self._publish_remote(name, version, src, text)
            self.storage.write_text(version + "\n", name, LATEST)
        return self.get(f"{name}@{version}")

    def set_alias(self, name: str, alias: str, version: str, *, how: str = "api",
                  gate: dict[str, Any] | None = None) -> ModelVersion:
        """Point ``name@alias`` at ``version`` (vNNNN, a number, ``latest`` or another alias: the
        concrete version it names is what is written) and record the move.

        Args:
            how: why the alias moved, as the history shows it: ``gate`` (a gate's promote),
                ``forced`` (``--force``: no gate), ``api`` (a program called this directly).
            gate: the gate's report (``how="gate"``).

        The history record is written first (one file per move, so object stores need no append):
        a move is never unrecorded; if the alias write then fails, the record says so. One atomic
        write of the alias file; returns the version it names now.
        """
        check_alias(alias)
        mv = self.get(f"{name}@{version}")  # must exist; pins latest / aliases to a version
        before = self.storage.read_text(name, ALIASES, alias)
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "alias": alias,
                  "from": before.strip() if before and before.strip() else None, "to": mv.version, "how": how,
                  "gate": gate, "by": _who()}
        key = f"{time.time_ns():020d}-{alias}.json"
        self.storage.write_text(json.dumps(record, default=str), name, HISTORY, key)
        try:
            self.storage.write_text(mv.version + "\n", name, ALIASES, alias)
        except BaseException as exc:
            record.update(failed=f"{type(exc).__name__}: {exc}"[:300])
            self.storage.write_text(json.dumps(record, default=str), name, HISTORY, key)
            raise
        return mv

    def history(self, name: str, alias: str | None = None) -> list[dict[str, Any]]:
        """Every recorded move of ``name``'s aliases (or of one alias), oldest first."""
        _check_name(name)
        out = []
        for key in self.storage.list_files(name, HISTORY):
            if not key.endswith(".json") or key.startswith("."):
                continue
            text = self.storage.read_text(name, HISTORY, key)
            rec = json.loads(text) if text else None
            if isinstance(rec, dict) and (alias is None or rec.get("alias") == alias):
                out.append(rec)
        return out

    def _publish_local(self, name: str, version: str, src: Path, manifest_text: str) -> None:
        base = self.storage.local_path(name)
        base.mkdir(parents=True, exist_ok=True)
        for p in base.glob(".staging-*"):
            shutil.rmtree(p, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=base))
        try:
            shutil.copytree(src, staging, dirs_exist_ok=True)
            (staging / MANIFEST).write_text(manifest_text)
            os.replace(staging, base / version)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _publish_remote(self, name: str, version: str, src: Path, manifest_text: str) -> None:
        self.storage.delete_dir(name, version)  # leftovers of an interrupted publish (no manifest)
        with tempfile.TemporaryDirectory(prefix="adray-publish-") as tmp:
            staged = Path(tmp) / "v"
            shutil.copytree(src, staged)
            (staged / MANIFEST).unlink(missing_ok=True)
            self.storage.upload_dir(staged, name, version)
        self.storage.write_text(manifest_text, name, version, MANIFEST)  # last: the version exists now

    def _lock_path(self, name: str) -> Path:
        if self.storage.is_local:
            base = self.storage.local_path(name)
            base.mkdir(parents=True, exist_ok=True)
            return base / ".lock"
        locks = home() / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        return locks / f"{hashlib.sha256(self.storage.display(name).encode()).hexdigest()[:16]}.lock"


def _who() -> str:
    try:
        import getpass
        import socket

        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:  # noqa: BLE001 - the record is still worth writing
        return "unknown"


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


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
