"""The CLI's doors: a broken install says what broke; a reference with an empty version is refused
at every door that takes one (promote, eval, serve)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adray.registry import Registry, RegistryError

REPO = Path(__file__).resolve().parents[2]


def test_a_broken_install_names_what_broke() -> None:
    """The serve/jobs verbs' module fails to import: the verbs stay, and name the missing module.
    (One child process: the failed import must not leak into this test session's ``adray.cli``.)"""
    code = """
import json, sys
sys.modules["adray.jobs"] = None  # as if the file were missing
from typer.testing import CliRunner
from adray.cli import app
calls = [["serve", "up", "--model", "pwiser@v0001"], ["jobs", "--help"], ["submit", "--", "true"], ["--help"]]
print(json.dumps([[r.exit_code, r.output] for r in (CliRunner().invoke(app, c) for c in calls)]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    results = json.loads(out.stdout.strip().splitlines()[-1])
    for verb, (code_, output) in zip(("serve", "jobs", "submit"), results):
        assert code_ == 2, output
        assert f"error: `adray {verb}` is unavailable: importing adray.cli_serve failed" in output
        assert "missing module: adray.jobs" in output and "reinstall" in output
    assert results[3][0] == 0 and "unavailable" in results[3][1]  # --help lists them as unavailable


@pytest.fixture()
def published(adray_home: Path) -> Registry:
    reg = Registry()
    d = adray_home / "ckpt"
    d.mkdir(parents=True)
    (d / "model.pt").write_text("x")
    reg.publish("pwiser", d, {"workload": "pwiser"})
    return reg


def test_promote_with_an_empty_version_is_refused(published: Registry) -> None:
    from adray.cli import app

    res = CliRunner().invoke(app, ["models", "promote", "pwiser@", "--force"])
    assert res.exit_code == 2
    assert "model reference 'pwiser@': no version after '@'" in res.output
    assert published.aliases("pwiser") == {}  # nothing moved


def test_eval_and_serve_refuse_an_empty_version(published: Registry) -> None:
    from adray.models import load_model
    from adray.serving import ServeError, resolve_model

    with pytest.raises(RegistryError, match="'pwiser@': no version after '@'"):
        load_model("pwiser@")  # what `adray eval --model pwiser@` loads
    with pytest.raises(ServeError, match="'pwiser@': no version after '@'"):
        resolve_model("pwiser@")  # `adray serve up --model pwiser@`


def test_drlput_refuses_more_than_one_worker_instead_of_ignoring_it(tmp_path) -> None:  # noqa: ANN001
    import pytest

    from adray.config import ConfigError, load_config
    from adray.workload import TrainContext, get_workload

    wl = get_workload("drlput")
    cfg = load_config(wl.config_cls, "smoke", wl.configs_dir, {})
    ctx = TrainContext(data_dir=str(tmp_path), run_dir=tmp_path / "run", run_name="r", storage=str(tmp_path),
                       num_workers=4)
    with pytest.raises(ConfigError, match=r"--workers 4: drlput trains one RLlib learner .* use --workers 1"):
        wl.trainer.train(cfg, ctx)
    assert not (tmp_path / "run").exists()  # refused before anything was written
