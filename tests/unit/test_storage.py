"""Storage addressed by URI (local folder here; tests/integration/test_s3_storage.py runs the same
registry against a real S3-compatible server)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from adray.storage import Storage, StorageError


def test_local_storage_reads_writes_lists_and_copies(tmp_path: Path) -> None:
    st = Storage(tmp_path / "root")
    assert st.is_local and st.read_text("a", "b.txt") is None and st.list_dirs() == []
    st.write_text("hello", "a", "b.txt")
    assert st.read_text("a", "b.txt") == "hello" and st.is_file("a", "b.txt") and st.is_dir("a")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.bin").write_bytes(b"\x00\x01")
    st.upload_dir(src, "m", "v1")
    assert st.list_files("m", "v1") == ["sub/f.bin"] and st.list_dirs("m") == ["v1"]
    child = st.child("m")
    assert child.list_dirs() == ["v1"] and pickle.loads(pickle.dumps(child)).list_dirs() == ["v1"]
    assert st.cached_copy(tmp_path / "cache", "m", "v1") == tmp_path / "root" / "m" / "v1"  # local: no copy
    out = tmp_path / "out"
    st.download_dir(out, "m", "v1")
    assert (out / "sub" / "f.bin").read_bytes() == b"\x00\x01"
    st.delete_dir("m")
    assert not st.is_dir("m")


def test_bad_uri_names_it() -> None:
    with pytest.raises(StorageError, match="nosuchscheme://x"):
        Storage("nosuchscheme://x/y")
