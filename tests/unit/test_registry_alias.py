"""Registry aliases: set / get / list, names refused by name, unknown alias lists what exists,
an alias stays put when a publish moves latest; the same on S3 (moto server, when installed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adray.registry import Registry, RegistryError


def _ckpt(tmp_path: Path, text: str) -> Path:
    d = tmp_path / f"ckpt-{text}"
    d.mkdir()
    (d / "model.pt").write_text(text)
    return d


def _three_versions(reg: Registry, tmp_path: Path) -> None:
    for text in "abc":
        reg.publish("pwiser", _ckpt(tmp_path, text), {"workload": "pwiser"})


def test_set_get_and_list_aliases(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    _three_versions(reg, tmp_path)
    assert reg.aliases("pwiser") == {}
    assert reg.set_alias("pwiser", "serving", "v0001").version == "v0001"
    assert reg.set_alias("pwiser", "canary", "latest").version == "v0003"  # latest is pinned when set
    reg.set_alias("pwiser", "shadow", "2")
    assert reg.aliases("pwiser") == {"canary": "v0003", "serving": "v0001", "shadow": "v0002"}
    assert reg.get("pwiser@serving").ref == "pwiser@v0001"
    assert (reg.local_dir(reg.get("pwiser@serving")) / "model.pt").read_text() == "a"
    assert reg.set_alias("pwiser", "serving", "canary").version == "v0003"  # from another alias
    assert reg.get("pwiser@serving").version == "v0003"
    assert (tmp_path / "reg" / "pwiser" / "aliases" / "serving").read_text() == "v0003\n"
    assert reg.versions("pwiser") == ["v0001", "v0002", "v0003"]  # the aliases folder is not a version


@pytest.mark.parametrize("alias", ["latest", "v0002", "v2", "Serving", "1st", "-x", "a/b", ""])
def test_bad_alias_names_are_refused_by_name(tmp_path: Path, alias: str) -> None:
    reg = Registry(tmp_path / "reg")
    _three_versions(reg, tmp_path)
    with pytest.raises(RegistryError, match=f"alias '{alias}'"):
        reg.set_alias("pwiser", alias, "v0001")
    assert reg.aliases("pwiser") == {}


def test_unknown_alias_lists_the_existing_ones(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    _three_versions(reg, tmp_path)
    with pytest.raises(RegistryError, match=r"no alias 'serving'.*aliases: none"):
        reg.get("pwiser@serving")
    reg.set_alias("pwiser", "serving", "v0001")
    reg.set_alias("pwiser", "canary", "v0002")
    with pytest.raises(RegistryError, match=r"no alias 'prod'.*canary -> v0002, serving -> v0001"):
        reg.get("pwiser@prod")
    with pytest.raises(RegistryError, match=r"pwiser@v0009 not found"):
        reg.set_alias("pwiser", "serving", "v0009")  # an alias names an existing version
    assert reg.alias("pwiser", "serving") == "v0001"


def test_alias_survives_a_new_publish(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    reg.publish("pwiser", _ckpt(tmp_path, "a"), {"workload": "pwiser"})
    reg.set_alias("pwiser", "serving", "latest")
    reg.publish("pwiser", _ckpt(tmp_path, "b"), {"workload": "pwiser"})
    assert reg.get("pwiser@latest").version == "v0002"
    assert reg.get("pwiser@serving").version == "v0001"


def test_models_list_and_show_print_aliases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adray.cli import app

    monkeypatch.setenv("ADRAY_REGISTRY", str(tmp_path / "reg"))
    reg = Registry(tmp_path / "reg")
    _three_versions(reg, tmp_path)
    reg.set_alias("pwiser", "serving", "v0001")
    runner = CliRunner()
    res = runner.invoke(app, ["models", "list"])
    assert res.exit_code == 0, res.output
    lines = {ln.split()[0]: ln for ln in res.output.splitlines()}
    assert lines["pwiser@v0001"].endswith("@serving") and lines["pwiser@v0003"].endswith("latest")
    rows = json.loads(runner.invoke(app, ["models", "list", "--json"]).output)
    assert [r["aliases"] for r in rows] == [["serving"], [], []]
    res = runner.invoke(app, ["models", "show", "pwiser@serving"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("pwiser@v0001") and "aliases: @serving" in res.output


def test_promote_without_gate_needs_force_and_every_move_is_recorded(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from adray.cli import app

    monkeypatch.setenv("ADRAY_REGISTRY", str(tmp_path / "reg"))
    reg = Registry(tmp_path / "reg")
    _three_versions(reg, tmp_path)
    res = CliRunner().invoke(app, ["models", "promote", "pwiser@v0002"])
    assert res.exit_code == 2 and "without a gate needs --force" in res.output, res.output
    assert reg.aliases("pwiser") == {} and reg.history("pwiser") == []
    res = CliRunner().invoke(app, ["models", "promote", "pwiser@v0002", "--force"])
    assert res.exit_code == 0 and "unset -> v0002 (forced, no gate; recorded)" in res.output, res.output
    res = CliRunner().invoke(app, ["models", "promote", "pwiser@1", "--alias", "serving", "--force", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["previous"] == "pwiser@v0002"
    assert reg.aliases("pwiser") == {"serving": "v0001"}
    reg.set_alias("pwiser", "canary", "v0003")  # a program moving an alias is recorded too
    moves = [(m["alias"], m["from"], m["to"], m["how"]) for m in reg.history("pwiser")]
    assert moves == [("serving", None, "v0002", "forced"), ("serving", "v0002", "v0001", "forced"),
                     ("canary", None, "v0003", "api")]
    assert [m["to"] for m in reg.history("pwiser", "canary")] == ["v0003"]
    assert all(m["time"] and m["by"] and m["gate"] is None for m in reg.history("pwiser"))
    res = CliRunner().invoke(app, ["models", "promote", "pwiser@1", "--alias", "latest", "--force"])
    assert res.exit_code == 2 and "alias 'latest' is reserved" in res.output


def test_a_failed_alias_write_is_recorded_as_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = Registry(tmp_path / "reg")
    _three_versions(reg, tmp_path)
    real = reg.storage.write_text

    def flaky(text: str, *parts: str) -> None:
        if parts[-2:] == ("aliases", "serving"):
            raise OSError("disk full")
        real(text, *parts)

    monkeypatch.setattr(reg.storage, "write_text", flaky)
    with pytest.raises(OSError, match="disk full"):
        reg.set_alias("pwiser", "serving", "v0001", how="forced")
    assert reg.aliases("pwiser") == {}
    (rec,) = reg.history("pwiser")
    assert rec["to"] == "v0001" and "disk full" in rec["failed"]


# ---------------------------------------------------------------------------------- S3 (moto)
def test_aliases_on_s3(s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.fs as pafs

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("ADRAY_HOME", str(tmp_path / "home"))
    query = f"endpoint_override={s3_server}&scheme=http"
    pafs.FileSystem.from_uri(f"s3://models?{query}&allow_bucket_creation=true")[0].create_dir("models")
    reg = Registry(f"s3://models/team/registry?{query}")
    reg.publish("pwiser", _ckpt(tmp_path, "a"), {"workload": "pwiser"})
    reg.set_alias("pwiser", "serving", "v0001")
    reg.publish("pwiser", _ckpt(tmp_path, "b"), {"workload": "pwiser"})
    assert reg.aliases("pwiser") == {"serving": "v0001"}
    assert reg.get("pwiser@serving").location.startswith("s3://models/team/registry/pwiser/v0001")
    assert (reg.local_dir(reg.get("pwiser@serving")) / "model.pt").read_text() == "a"
    assert reg.versions("pwiser") == ["v0001", "v0002"]
    with pytest.raises(RegistryError, match=r"no alias 'canary'.*serving -> v0001"):
        reg.get("pwiser@canary")
