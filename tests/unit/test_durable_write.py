"""``Storage.write_text`` on a local folder: the temp file is fsynced before it is renamed over the
target; with ``durable=True`` the directory is fsynced after the rename (and every directory the
call created, in its parent), so the write survives a crash of the host once the call returns."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from adray.storage import Storage


@pytest.fixture()
def syscalls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Records ("fsync", path of the fd) and ("replace", target) in the order they happen."""
    out: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def spy_fsync(fd: int) -> None:
        out.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def spy_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        replace(src, dst)
        out.append(("replace", str(dst)))

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    return out


def test_a_durable_write_syncs_the_file_then_renames_then_syncs_the_directory(
        tmp_path: Path, syscalls: list[tuple[str, str]]) -> None:
    (tmp_path / "pacing" / "x").mkdir(parents=True)
    Storage(tmp_path).write_text("v1", "pacing", "x", "ledger.json", durable=True)
    target = tmp_path / "pacing" / "x" / "ledger.json"
    assert target.read_text() == "v1"
    assert len(syscalls) == 3
    (k0, tmp), (k1, renamed), (k2, directory) = syscalls
    assert (k0, k1, k2) == ("fsync", "replace", "fsync")
    assert Path(tmp).parent == target.parent and Path(tmp).name.startswith(".ledger.json.tmp-")
    assert (renamed, directory) == (str(target), str(target.parent))
    assert [p.name for p in target.parent.iterdir()] == ["ledger.json"]  # no temp file left


def test_a_durable_write_syncs_the_directories_it_created(tmp_path: Path, syscalls: list[tuple[str, str]]) -> None:
    Storage(tmp_path).write_text("v1", "a", "b", "f.json", durable=True)
    synced_dirs = [p for k, p in syscalls if k == "fsync" and Path(p).is_dir()]
    # the file's directory, then the parents of the two directories this call made
    assert synced_dirs == [str(tmp_path / "a" / "b"), str(tmp_path / "a"), str(tmp_path)]


def test_a_plain_write_syncs_the_file_only(tmp_path: Path, syscalls: list[tuple[str, str]]) -> None:
    Storage(tmp_path).write_text("v1", "f.txt")
    assert [k for k, _ in syscalls] == ["fsync", "replace"]
    assert (tmp_path / "f.txt").read_text() == "v1"


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Storage(tmp_path).write_text("old", "f.txt")

    def fail(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="Input/output error"):
        Storage(tmp_path).write_text("new", "f.txt", durable=True)
    assert (tmp_path / "f.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
