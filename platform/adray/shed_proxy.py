"""An HAProxy in front of a Serve app's replicas that sheds what they cannot take (issue 23).

Serve's own HAProxy ingress (``adray.haproxy``) sheds nothing: its config has no per-server
``maxconn`` and no ``timeout queue``, so under overload every request reaches a replica, whose Python
must at least parse it to refuse it (~1 ms of CPU each, and the refusal waits behind whatever the
replica's event loop is doing: 37-74 ms p99 at 2-4x overload on 2 cores). This proxy bounds each
replica to ``per_replica`` requests at once (HAProxy's per-server ``maxconn``); a request finding
every replica full waits in HAProxy's queue, which holds at most ``max_queue`` requests: one that
finds it full is answered at once, and one that waited ``queue_ms`` without a replica freeing up is
answered then. HAProxy itself answers: ``503``, ``Retry-After``, ``{"detail": ..., "shed":
"overload"}`` (the replicas' admission answers the same shape, ``serve_apps.feed_admission``). So no
Python touches a request that is shed, shedding costs the replicas nothing, and a shed answer takes
HAProxy's own time (a full queue) or ``queue_ms`` (a stall), plus whatever wait for a core the
machine imposes (README: on 2 saturated cores, 18-35 ms p99 at 2-4x overload). HAProxy stamps each
request it forwards with ``x-request-start: t=<epoch ms>``, so the replica's deadline counts the
time it queued here.

A replica's own admission limit adapts below ``per_replica`` when its CPU is short; the excess then
reached it and was shed there, in Python (45,242 of 46,851 shed requests at 4x, 8 a replica). So
each replica answers HAProxy's agent check with the limit it admits now (``agent_inter_ms``;
``maxconn:<n>``, ``FeedArgs.admission_agent``) and HAProxy holds it to that, while a request that
still finds the replica full waits there for a slot (``FeedArgs.admission_wait_ms``) rather than
being refused at once.

The replicas are Serve's direct-ingress ports (``adray.cli_serve.direct_urls``; clusters adray starts
run it). :class:`ShedProxy` runs HAProxy (master-worker mode) as its child and, given another set
of replicas, rewrites the config and reloads it (``SIGUSR2``: the old worker finishes its requests,
nothing is dropped). :class:`ShedProxyActor` is that process as a detached Ray actor that follows an
app's replicas (``adray serve graph --shed-port``); with none running, every request is a ``503``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from adray.config import Config

RETRY_AFTER_S = 1


@dataclasses.dataclass(frozen=True)
class ShedSettings(Config):
    """Where the proxy listens and how much it lets through.

    Attributes:
        port: the port clients send to (all interfaces of the proxy's node, or ``host``).
        host: the address it binds.
        per_replica: requests one replica decides at once (HAProxy ``maxconn`` per server); more
            wait in the proxy's queue. About the replicas' own ``max_in_flight`` or below; the
            replicas behind it wait for a slot rather than shed (``FeedArgs.admission_wait_ms``, set
            by ``adray serve graph --shed-port``), so that the excess is shed here, not in Python.
        queue_ms: the longest a request waits there for a replica before it is shed (``timeout
            queue``). A fraction of the requests' deadline: what waits here is not decided.
        max_queue: requests that may wait in the proxy's queue at once; one more is shed on arrival
            (``http-request deny`` on ``queue()``) instead of waiting ``queue_ms`` to be shed. None:
            no bound but ``queue_ms``.
        buffer_kb: HAProxy's buffer (``tune.bufsize``), and with it ``option http-buffer-request``:
            a request's body up to this size is read before its rules run, so one that is denied
            (``max_queue``) leaves its connection to be used again. Without it HAProxy answers on
            the headers and closes the connection under the body still coming, and the client
            connects again for its next request: with 47 KB feed requests denied at 1800/s, HAProxy
            and the C load generator spent 0.15 ms of CPU a shed request with a new connection each,
            0.07 ms with 64 KB buffers and 7-8 connections in all (``benchmarks/shed_deny_cost.py``).
            A larger body is handled as before. 0: HAProxy's default (16 KB) and no buffering.
        agent_inter_ms: 0, or how often HAProxy asks each replica's agent (``agent-check``; the
            replicas answer with their admission limit in force, ``maxconn:<n>``, when deployed
            with ``FeedArgs.admission_agent``): the replica's ``maxconn`` then follows what it
            admits, and the excess waits and is shed here. ``per_replica`` is the start.
        poll_s: how often :class:`ShedProxyActor` looks for the app's replicas.
        nice: HAProxy's niceness. Ray runs its workers, this actor among them, at niceness 15;
            HAProxy at the replicas' priority waits for the CPU behind them, and so does every
            shed answer (p99 38-76 ms at 2-4x overload on 2 cores). A load balancer takes a few
            percent of a core and is usually a system service at 0. Lowering the niceness needs
            root or CAP_SYS_NICE; without it HAProxy keeps the actor's and :attr:`ShedProxy.nice`
            says which it got. None: the actor's.
    """

    port: int = 8100
    host: str = "0.0.0.0"
    per_replica: int = 4
    queue_ms: float = 3.0
    max_queue: int | None = 16
    buffer_kb: int = 64
    agent_inter_ms: float = 0.0
    poll_s: float = 2.0
    nice: int | None = 0

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"shed proxy port={self.port}: expected 1..65535")
        if self.per_replica < 1:
            raise ValueError(f"shed proxy per_replica={self.per_replica}: expected >= 1")
        if not 0 < self.queue_ms <= 10_000:
            raise ValueError(f"shed proxy queue_ms={self.queue_ms}: expected a number of ms in (0, 10000]")
        if self.max_queue is not None and self.max_queue < 0:
            raise ValueError(f"shed proxy max_queue={self.max_queue}: expected >= 0 or None")
        if self.buffer_kb != 0 and not 16 <= self.buffer_kb <= 1024:
            raise ValueError(f"shed proxy buffer_kb={self.buffer_kb}: expected 0 (off) or 16..1024")
        if not 0 <= self.agent_inter_ms <= 60_000:
            raise ValueError(f"shed proxy agent_inter_ms={self.agent_inter_ms}: expected 0 (off) or ms in (0, 60000]")
        if not self.poll_s > 0:
            raise ValueError(f"shed proxy poll_s={self.poll_s}: expected > 0")
        if self.nice is not None and not -20 <= self.nice <= 19:
            raise ValueError(f"shed proxy nice={self.nice}: expected -20..19 or None")


def shed_answer() -> bytes:
    """The raw HTTP answer HAProxy gives a request it sheds (its ``errorfile 503``)."""
    body = json.dumps({"detail": "every replica is deciding as many requests as it can take and none freed "
                                 "up in time; retry later", "shed": "overload"}, separators=(",", ":")).encode()
    head = (f"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            f"retry-after: {RETRY_AFTER_S}\r\ncontent-length: {len(body)}\r\n\r\n")
    return head.encode() + body


def render_config(servers: list[str], settings: ShedSettings, errorfile: Path,
                  agents: dict[str, int] | None = None) -> str:
    """HAProxy's config for ``servers`` (``http://host:port`` base URLs); ``agents``: a server's
    agent port (``settings.agent_inter_ms``), for those that have one."""
    lines = [
        "global",
        "    maxconn 4096",
        "    nbthread 1",  # one thread does thousands of requests a second; the cores are the replicas'
        *([f"    tune.bufsize {settings.buffer_kb * 1024}"] if settings.buffer_kb else []),
        "defaults",
        "    mode http",
        "    option http-keep-alive",
        *(["    option http-buffer-request"] if settings.buffer_kb else []),  # a denied request's body is read
        "    timeout connect 1s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    timeout http-keep-alive 30s",
        f"    timeout queue {max(1, round(settings.queue_ms))}ms",
        f"    errorfile 503 {errorfile}",
        "frontend shed",
        f"    bind {settings.host}:{settings.port}",
        *([f"    http-request deny deny_status 503 if {{ queue(replicas) ge {settings.max_queue} }}"]
          if settings.max_queue is not None else []),  # the errorfile's answer (after a buffered body)
        "    http-request set-header x-request-start t=%[date(0,ms)]",
        "    default_backend replicas",
        "backend replicas",
        "    balance leastconn",
    ]
    for i, url in enumerate(sorted(servers)):
        u = urlsplit(url)
        if u.scheme != "http" or not u.hostname or not u.port:
            raise ValueError(f"replica URL {url!r}: expected http://host:port")
        agent = (agents or {}).get(url) if settings.agent_inter_ms else None
        lines.append(f"    server r{i} {u.hostname}:{u.port} maxconn {settings.per_replica}"
                     + (f" agent-check agent-port {agent} agent-inter {max(1, round(settings.agent_inter_ms))}ms"
                        if agent else ""))
    return "\n".join(lines) + "\n"


def _child_setup(nice: int | None) -> None:
    """In the child before exec: SIGTERM when the process that started it dies (Linux), so a proxy
    whose actor was killed (``ray.kill``: SIGKILL, no ``stop``) does not keep the port; and its
    niceness ``nice`` where permitted (HAProxy's worker, forked after exec, inherits it)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if nice is not None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError:  # lowering it needs root or CAP_SYS_NICE: it keeps the parent's
            pass


class ShedProxy:
    """HAProxy as this process's child, shedding for ``servers`` (module docstring)."""

    def __init__(self, settings: ShedSettings, binary: str | None = None, workdir: Path | None = None) -> None:
        from adray.haproxy import ensure_haproxy

        self.settings = settings
        self.binary = binary or ensure_haproxy()
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="adray-shed-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cfg_path, self.errorfile = self.dir / "haproxy.cfg", self.dir / "503.http"
        self.errorfile.write_bytes(shed_answer())
        self.servers: list[str] = []
        self.agents: dict[str, int] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.nice: int | None = None
        """HAProxy's niceness once started (``settings.nice`` if the OS allowed it)."""

    def _write(self, servers: list[str], agents: dict[str, int] | None = None) -> None:
        text = render_config(servers, self.settings, self.errorfile, agents)
        tmp = self.cfg_path.with_suffix(".tmp")
        tmp.write_text(text)
        check = subprocess.run([self.binary, "-c", "-q", "-f", str(tmp)], capture_output=True, text=True)
        if check.returncode != 0:  # never reload a config HAProxy refuses: the running one stays
            raise RuntimeError(f"haproxy refused {tmp}: {check.stderr.strip()[-2000:]}")
        os.replace(tmp, self.cfg_path)

    def start(self, servers: list[str], ready_s: float = 10.0, agents: dict[str, int] | None = None) -> None:
        """Write the config and start HAProxy; returns when it accepts connections.

        Raises:
            RuntimeError: HAProxy refused the config, exited, or did not listen within ``ready_s``.
        """
        import socket

        self._write(servers, agents)
        self.servers, self.agents = sorted(servers), dict(agents or {})
        self.proc = subprocess.Popen([self.binary, "-W", "-db", "-f", str(self.cfg_path)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True,
                                     preexec_fn=functools.partial(_child_setup, self.settings.nice))
        self.nice = os.getpriority(os.PRIO_PROCESS, self.proc.pid)
        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "::", "") else self.settings.host
        deadline = time.monotonic() + ready_s
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"haproxy exited ({self.proc.returncode}) on port {self.settings.port}: {err[-2000:]}")
            try:
                with socket.create_connection((host, self.settings.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"haproxy did not listen on {host}:{self.settings.port} within {ready_s} s") from None
                time.sleep(0.05)

    def update(self, servers: list[str], agents: dict[str, int] | None = None) -> bool:
        """Point the proxy at ``servers`` (and their ``agents``); True when that changed something
        (a reload)."""
        if self.proc is None:
            raise RuntimeError("ShedProxy.update before start")
        if sorted(servers) == self.servers and dict(agents or {}) == self.agents:
            return False
        self._write(servers, agents)
        self.servers, self.agents = sorted(servers), dict(agents or {})
        self.proc.send_signal(signal.SIGUSR2)  # master-worker reload: old worker drains, new one serves
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None


def replica_admission(urls: list[str], info_path: str = "/v1/graph", timeout_s: float = 2.0) -> dict[str, dict]:
    """url -> a feed replica's admission state (``info_path``, the app's ``/v1/graph`` under its
    route prefix: ``admission``), for the replicas that answer."""
    import urllib.request

    out = {}
    for url in urls:
        try:
            with urllib.request.urlopen(url.rstrip("/") + info_path, timeout=timeout_s) as resp:
                out[url] = json.load(resp)["admission"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def replica_agents(urls: list[str], info_path: str = "/v1/graph", timeout_s: float = 2.0) -> dict[str, int]:
    """url -> the agent port a feed replica reports (``admission.agent_port``), for the replicas
    that answer and have one (a replica starts its agent with its first request, this one
    included)."""
    out = {}
    for url, adm in replica_admission(urls, info_path, timeout_s).items():
        port = adm.get("agent_port")
        if isinstance(port, int) and 0 < port < 65536:
            out[url] = port
    return out


class ShedProxyActor:
    """A :class:`ShedProxy` that follows the replicas of Serve app ``app``: ``replicas(app)`` gives
    their base URLs (``adray.cli_serve.direct_urls``), asked every ``settings.poll_s``."""

    def __init__(self, app: str, settings: ShedSettings, replicas: Callable[[str], list[str]],
                 info_path: str = "/v1/graph") -> None:
        self.app, self.settings, self._urls, self.info_path = app, settings, replicas, info_path
        self.proxy = ShedProxy(settings)
        urls = replicas(app)
        self.proxy.start(urls, agents=self._agents(urls))
        self.reloads, self.last_error = 0, ""
        self._stop = threading.Event()
        threading.Thread(target=self._follow, daemon=True, name="shed-proxy-follow").start()

    def _follow(self) -> None:
        while not self._stop.wait(self.settings.poll_s):
            try:
                urls = self._urls(self.app)
                self.reloads += self.proxy.update(urls, self._agents(urls))
            except Exception as exc:  # noqa: BLE001 - keep serving with the last good config
                self.last_error = f"{type(exc).__name__}: {exc}"

    def _agents(self, urls: list[str]) -> dict[str, int]:
        """Each replica's agent port, from its ``/v1/graph`` (none: agent checks off, or not started)."""
        return replica_agents(urls, self.info_path) if self.settings.agent_inter_ms else {}

    def info(self) -> dict[str, object]:
        return {"app": self.app, "port": self.settings.port, "servers": list(self.proxy.servers),
                "agents": dict(self.proxy.agents), "agent_inter_ms": self.settings.agent_inter_ms,
                "reloads": self.reloads, "last_error": self.last_error,
                "per_replica": self.settings.per_replica, "queue_ms": self.settings.queue_ms,
                "max_queue": self.settings.max_queue, "buffer_kb": self.settings.buffer_kb, "nice": self.proxy.nice}

    def shutdown(self) -> None:
        self._stop.set()
        self.proxy.stop()
