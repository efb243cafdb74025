"""Ray Jobs: submit an ``adray`` command to a cluster, follow its logs, report its exit status.

``adray submit --address http://head:8265 -- adray train pwiser --config smoke`` sends the command
through Ray's ``JobSubmissionClient`` with this project as the runtime env's ``working_dir`` (Ray
uploads it, honouring ``.gitignore``, so ``.venv``/``data``/``.adray`` stay behind) and, with
``--wait``, streams the job's output and returns the job's exit status.

Token authentication: a Ray >= 2.5x cluster started with ``RAY_AUTH_MODE=token`` rejects HTTP
requests without ``Authorization: Bearer <token>``. Ray's own client only adds that header when
the *client* process runs with ``RAY_AUTH_MODE=token``; we add it whenever a token is available
(``RAY_AUTH_TOKEN``, the file in ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``) unless
``RAY_AUTH_MODE=disabled``.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Never shipped with a job even if .gitignore misses them (Ray also honours .gitignore).
EXCLUDES = [".git", ".venv", ".adray", "data", "results", "**/__pycache__", "*.egg-info", ".ruff_cache"]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class JobError(RuntimeError):
    """A job could not be submitted or found (message names the address / job id)."""


def project_root() -> Path:
    """The repository root (the directory holding ``pyproject.toml``) that jobs ship as working_dir."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    raise JobError(f"cannot find the project root (pyproject.toml) above {here}")


def resolve_address(address: str | None) -> str:
    """``--address``, else an http(s) ``RAY_ADDRESS``, else the local dashboard on port 8265."""
    address = address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    if address.startswith("ray://") or "://" not in address:
        # A GCS address (host:6379) is not the job server; the dashboard is what Jobs talk to.
        raise JobError(
            f"job address {address!r}: expected the dashboard URL, e.g. http://HEAD:8265 "
            "(Ray Jobs go through the dashboard, not the GCS port)"
        )
    return address.rstrip("/")


def auth_token() -> str | None:
    """The Ray auth token from the environment or ``~/.ray/auth_token``, if any."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    for path in (os.environ.get("RAY_AUTH_TOKEN_PATH"), str(Path.home() / ".ray" / "auth_token")):
        if path and Path(path).is_file():
            return Path(path).read_text().strip() or None
    return None


def auth_headers() -> dict[str, str]:
    token = auth_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def client(address: str | None = None) -> Any:
    """A ``JobSubmissionClient`` for ``address`` carrying the auth token when there is one."""
    from ray.job_submission import JobSubmissionClient

    url = resolve_address(address)
    # Ray lets RAY_API_SERVER_ADDRESS / RAY_ADDRESS override the address it is given; `--address`
    # must win (resolve_address already fell back to RAY_ADDRESS when it was not given).
    hidden = {k: os.environ.pop(k) for k in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS") if k in os.environ}
    try:
        return JobSubmissionClient(url, headers=auth_headers())
    except ConnectionError as exc:
        raise JobError(f"cannot reach the Ray job server at {url}: {exc}") from None
    finally:
        os.environ.update(hidden)


def parse_env(items: Sequence[str] | None) -> dict[str, str]:
    """``["K=V", ...]`` from ``--env`` into a dict; a malformed item is an error naming it."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise JobError(f"--env {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def runtime_env(working_dir: Path | None = None, env_vars: dict[str, str] | None = None) -> dict[str, Any]:
    env: dict[str, Any] = {"working_dir": str(working_dir or project_root()), "excludes": list(EXCLUDES)}
    if env_vars:
        env["env_vars"] = dict(env_vars)
    return env


def submit(
    command: Sequence[str],
    *,
    address: str | None = None,
    env_vars: dict[str, str] | None = None,
    working_dir: Path | None = None,
    entrypoint_num_cpus: float | None = None,
) -> str:
    """Submit ``command`` (argv of an ``adray`` or any shell command) and return the job id."""
    if not command:
        raise JobError("nothing to submit: give the command after `--`, e.g. `adray submit -- adray train WORKLOAD`")
    c = client(address)
    return c.submit_job(
        entrypoint=shlex.join(command),
        runtime_env=runtime_env(working_dir, env_vars),
        entrypoint_num_cpus=entrypoint_num_cpus,
    )


def follow(job_id: str, address: str | None = None, out: Callable[[str], None] | None = None) -> int:
    """Stream the job's logs to ``out`` until it ends; return its exit status (0 = succeeded)."""
    out = out or (lambda s: print(s, end="", flush=True))
    c = client(address)

    async def _tail() -> None:
        async for chunk in c.tail_job_logs(job_id):
            out(chunk)

    try:
        asyncio.run(_tail())
    except RuntimeError:
        pass  # the log socket dropped; the status below is what counts
    return wait(job_id, address)


def wait(job_id: str, address: str | None = None, timeout_s: float = 24 * 3600) -> int:
    """Poll until the job is terminal; its exit status (driver exit code, 1 if unknown, 0 if ok)."""
    c = client(address)
    deadline = time.monotonic() + timeout_s
    while True:
        info = c.get_job_info(job_id)
        status = str(getattr(info.status, "value", info.status))
        if status in TERMINAL:
            return exit_status(status, info.driver_exit_code)
        if time.monotonic() > deadline:
            raise JobError(f"job {job_id} still {status} after {timeout_s:.0f}s")
        time.sleep(0.5)


def exit_status(status: str, driver_exit_code: int | None) -> int:
    if status == "SUCCEEDED":
        return 0
    return int(driver_exit_code) if driver_exit_code else 1


def list_jobs(address: str | None = None) -> list[dict[str, Any]]:
    """One row per job (newest first): id, status, exit code, entrypoint, start time."""
    rows = []
    for j in client(address).list_jobs():
        rows.append(
            {
                "id": j.submission_id or j.job_id,
                "status": str(getattr(j.status, "value", j.status)),
                "exit_code": j.driver_exit_code,
                "entrypoint": j.entrypoint,
                "start_time": j.start_time,
                "message": j.message,
            }
        )
    return sorted(rows, key=lambda r: r["start_time"] or 0, reverse=True)


def logs(job_id: str, address: str | None = None) -> str:
    try:
        return client(address).get_job_logs(job_id)
    except RuntimeError as exc:
        raise JobError(f"job {job_id!r}: {exc}") from None


def stop(job_id: str, address: str | None = None) -> bool:
    """Ask the cluster to stop the job; False when it had already ended."""
    try:
        return bool(client(address).stop_job(job_id))
    except RuntimeError as exc:
        raise JobError(f"job {job_id!r}: {exc}") from None
