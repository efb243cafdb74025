"""A real Prometheus server for tests: installed when missing, scraping Ray's metrics endpoints.

``ensure_prometheus()`` finds the ``prometheus`` binary, or installs Debian's ``prometheus``
package (``apt-get install -y prometheus``: root and apt needed; idempotent: nothing happens when
the binary is there). ``PrometheusServer`` runs it on a free port with a private TSDB and a scrape
config pointing at every alive Ray node's ``metrics_export_port``.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from adray.apt import apt_binary


def ensure_prometheus() -> str:
    """The path of the ``prometheus`` binary, installing Debian's package when it is missing.

    Raises:
        RuntimeError: not found and not installable here (says what to install).
    """
    return apt_binary("prometheus", "prometheus",
                      "install it (Debian: apt-get install -y prometheus; or a release binary on PATH)")


def ray_metrics_targets() -> list[str]:
    """``host:port`` of every alive Ray node's metrics endpoint (its ``metrics_export_port``)."""
    import ray

    return [f"{n['NodeManagerAddress']}:{n['MetricsExportPort']}" for n in ray.nodes() if n["Alive"]]


class PrometheusServer:
    """``prometheus`` scraping ``targets`` every ``scrape_s``, its data under ``workdir`` (a context manager)."""

    def __init__(self, targets: list[str], workdir: Path, port: int, scrape_s: float = 1.0) -> None:
        self.targets, self.workdir, self.port, self.scrape_s = targets, workdir, port, scrape_s
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        targets = ", ".join(f"'{t}'" for t in self.targets)
        every = f"{round(self.scrape_s * 1000)}ms"  # Prometheus durations are integers with a unit
        config.write_text(f"global:\n  scrape_interval: {every}\n  evaluation_interval: {every}\n"
                          f"scrape_configs:\n  - job_name: ray\n    static_configs:\n      - targets: [{targets}]\n")
        self._log = open(self.workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen([ensure_prometheus(), f"--config.file={config}",
                                      f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}"],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"prometheus did not start: {(self.workdir / 'prometheus.log').read_text()[-2000:]}")
            time.sleep(0.3)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector of ``promql`` now (``/api/v1/query``): ``[{"metric": {...}, "value": [t, "v"]}]``."""
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        body = r.json()
        if r.status_code != 200 or body.get("status") != "success":
            raise AssertionError(f"PromQL {promql!r}: {r.status_code} {body}")
        return body["data"]["result"]

    def by(self, promql: str, label: str) -> dict[str, float]:
        """``{value of label: float value}`` of ``promql``'s answer."""
        return {s["metric"].get(label, ""): float(s["value"][1]) for s in self.query(promql)}

    def scalar(self, promql: str) -> float | None:
        """The one value of ``promql`` (None: no series)."""
        got = self.query(promql)
        assert len(got) <= 1, (promql, got)
        return float(got[0]["value"][1]) if got else None
