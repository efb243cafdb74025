"""Debian packages that a part of the platform needs at run time (``haproxy``; ``prometheus`` in tests)."""

from __future__ import annotations

import os
import shutil
import subprocess


def apt_binary(binary: str, package: str, hint: str) -> str:
    """The path of ``binary`` on PATH, installing Debian's ``package`` with apt-get when it is missing
    (root and apt needed; idempotent: nothing runs when the binary is there).

    Raises:
        RuntimeError: not found and not installable here (``hint`` says what to install), or the
            install failed (its stderr's tail).
    """
    found = shutil.which(binary)
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise RuntimeError(f"{binary} is not installed and cannot be installed here (needs root and apt-get): {hint}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = [apt, "install", "-y", "--no-install-recommends", package]
    if subprocess.run(cmd, env=env, capture_output=True, timeout=900).returncode != 0:
        subprocess.run([apt, "update"], env=env, capture_output=True, timeout=900, check=False)
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            raise RuntimeError(f"apt-get install {package} failed ({out.returncode}): {out.stderr[-2000:]}")
    found = shutil.which(binary)
    if not found:
        raise RuntimeError(f"apt-get installed {package}, but no {binary} binary is on PATH")
    return found
