"""Model registry: versions, @latest, atomic publish that never moves latest on failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from adray.registry import Registry, RegistryError, parse_ref


def _ckpt(tmp_path: Path, text: str) -> Path:
    d = tmp_path / f"ckpt-{text}"
    d.mkdir()
    (d / "model.pt").write_text(text)
    return d


def test_publish_versions_and_latest(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    a = reg.publish("pwiser", _ckpt(tmp_path, "a"), {"workload": "pwiser", "metrics": {"auc": 0.7}})
    b = reg.publish("pwiser", _ckpt(tmp_path, "b"), {"workload": "pwiser"})
    assert (a.version, b.version) == ("v0001", "v0002")
    assert reg.get("pwiser").version == "v0002" == reg.get("pwiser@latest").version
    assert reg.get("pwiser@1").manifest["metrics"] == {"auc": 0.7}
    assert (reg.local_dir(reg.get("pwiser@v0001")) / "model.pt").read_text() == "a"
    assert reg.versions("pwiser") == ["v0001", "v0002"]
    assert reg.get("pwiser@2").manifest["files"] == ["model.pt"]


def test_unknown_refs_list_what_exists(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    reg.publish("pwiser", _ckpt(tmp_path, "a"), {"workload": "pwiser"})
    with pytest.raises(RegistryError, match=r"pwiser@v0009 not found.*\['v0001'\]"):
        reg.get("pwiser@9")
    with pytest.raises(RegistryError, match=r"no published model 'mtorl'.*\['pwiser'\]"):
        reg.get("mtorl@latest")
    with pytest.raises(RegistryError, match="version must be"):
        parse_ref("pwiser@newest")


def test_an_empty_version_is_refused_not_read_as_latest(tmp_path: Path) -> None:
    """``adray models promote pwiser@`` (a version left out) used to promote the latest version."""
    reg = Registry(tmp_path / "reg")
    reg.publish("pwiser", _ckpt(tmp_path, "a"), {"workload": "pwiser"})
    for ref in ("pwiser@", "@"):
        with pytest.raises(RegistryError, match=rf"model reference '{ref}': no version after '@'"):
            reg.get(ref)
    with pytest.raises(RegistryError, match="no version after '@'"):
        parse_ref("pwiser@")
    assert reg.get("pwiser").version == "v0001"  # a bare name still means the latest


def test_failed_publish_leaves_no_version_and_keeps_latest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = Registry(tmp_path / "reg")
    reg.publish("pwiser", _ckpt(tmp_path, "a"), {"workload": "pwiser"})

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("adray.registry.shutil.copytree", boom)
    with pytest.raises(OSError, match="disk full"):
        reg.publish("pwiser", _ckpt(tmp_path, "b"), {"workload": "pwiser"})
    monkeypatch.undo()
    assert reg.versions("pwiser") == ["v0001"]
    assert reg.latest("pwiser") == "v0001"
    assert not list((tmp_path / "reg" / "pwiser").glob(".staging-*"))
    # the next publish still works and gets the next number
    assert reg.publish("pwiser", _ckpt(tmp_path, "c"), {"workload": "pwiser"}).version == "v0002"
