"""The shedding HAProxy (adray.shed_proxy) with a real haproxy in front of slow local servers."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from adray.shed_proxy import ShedProxy, ShedSettings, render_config
from tests.helpers import free_port


class _Slow(BaseHTTPRequestHandler):
    seen: list[str] = []
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("content-length", 0)))
        with self.lock:
            type(self).seen.append(self.headers.get("x-request-start", ""))
        time.sleep(1.0)
        body = json.dumps({"port": self.server.server_address[1]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _server() -> tuple[ThreadingHTTPServer, str]:
    srv = ThreadingHTTPServer(("127.0.0.1", free_port()), _Slow)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


def test_config_bounds_each_replica_and_sheds_from_the_queue(tmp_path: Path) -> None:
    text = render_config(["http://10.0.0.2:30001", "http://10.0.0.1:30000"], ShedSettings(port=8100, per_replica=3,
                                                                                       queue_ms=12), tmp_path / "503")
    assert "server r0 10.0.0.1:30000 maxconn 3" in text and "server r1 10.0.0.2:30001 maxconn 3" in text
    assert "timeout queue 12ms" in text and f"errorfile 503 {tmp_path / '503'}" in text
    with pytest.raises(ValueError, match="expected http://host:port"):
        render_config(["10.0.0.1"], ShedSettings(), tmp_path / "503")
    with pytest.raises(ValueError, match="per_replica=0"):
        ShedSettings(per_replica=0)


def test_a_full_replica_sheds_in_haproxy_within_the_queue_time_and_a_reload_adds_one(tmp_path: Path) -> None:
    _Slow.seen = []
    a, url_a = _server()
    proxy = ShedProxy(ShedSettings(port=free_port(), host="127.0.0.1", per_replica=1, queue_ms=20), workdir=tmp_path)
    proxy.start([url_a])
    base = f"http://127.0.0.1:{proxy.settings.port}"
    try:
        def post(_: int) -> tuple[int, float, httpx.Response]:
            t0 = time.perf_counter()
            r = httpx.post(f"{base}/v1/feed", json={"x": 1}, timeout=10)
            return r.status_code, (time.perf_counter() - t0) * 1e3, r

        with ThreadPoolExecutor(6) as pool:
            out = list(pool.map(post, range(6)))
        ok = [o for o in out if o[0] == 200]
        shed = [o for o in out if o[0] == 503]
        assert len(ok) == 1 and len(shed) == 5, [o[0] for o in out]  # one at a time: the rest shed
        for _, ms, r in shed:
            assert ms < 500, ms  # answered from the queue (20 ms), not after the 1 s request
            assert r.headers["retry-after"] == "1" and r.json()["shed"] == "overload"
        assert len(_Slow.seen) == 1 and _Slow.seen[0].startswith("t=")  # a shed request never reached it
        assert abs(int(_Slow.seen[0][2:]) / 1e3 - time.time()) < 5  # epoch ms: the replica's deadline reads it

        b, url_b = _server()
        assert proxy.update([url_a, url_b]) and not proxy.update([url_b, url_a])
        time.sleep(0.5)  # the new worker takes over
        with ThreadPoolExecutor(2) as pool:
            out = list(pool.map(post, range(2)))
        assert [o[0] for o in out] == [200, 200]  # two replicas: two at once
        assert {o[2].json()["port"] for o in out} == {a.server_address[1], b.server_address[1]}
        b.shutdown()
    finally:
        proxy.stop()
        a.shutdown()
    assert proxy.proc is None


def test_a_full_queue_sheds_on_arrival_and_the_queue_keeps_its_bound(tmp_path: Path) -> None:
    """max_queue 1 with a 3 s queue timeout: one request runs, one waits, the rest are denied at once
    (not after 3 s); the waiting one reaches the replica once the first is done."""
    _Slow.seen = []
    a, url_a = _server()
    settings = ShedSettings(port=free_port(), host="127.0.0.1", per_replica=1, queue_ms=3000, max_queue=1)
    assert "http-request deny deny_status 503 if { queue(replicas) ge 1 }" in render_config([url_a], settings,
                                                                                           tmp_path / "503")
    proxy = ShedProxy(settings, workdir=tmp_path)
    proxy.start([url_a])
    base = f"http://127.0.0.1:{proxy.settings.port}"
    try:
        def post(delay_s: float) -> tuple[int, float, httpx.Response]:
            time.sleep(delay_s)  # the first in, then the second queued, then the rest
            t0 = time.perf_counter()
            r = httpx.post(f"{base}/v1/feed", json={"x": 1}, timeout=10)
            return r.status_code, (time.perf_counter() - t0) * 1e3, r

        with ThreadPoolExecutor(5) as pool:
            out = list(pool.map(post, [0.0, 0.2, 0.4, 0.4, 0.4]))
        assert [o[0] for o in out] == [200, 200, 503, 503, 503], [o[0] for o in out]
        for _, ms, r in out[2:]:
            assert ms < 500, ms  # denied on arrival, not after the 3 s queue timeout
            assert r.headers["retry-after"] == "1" and r.json()["shed"] == "overload"
        assert out[1][1] > 500  # the queued one waited for the first (1 s) and was then served
        assert len(_Slow.seen) == 2
    finally:
        proxy.stop()
        a.shutdown()
    with pytest.raises(ValueError, match="max_queue=-1"):
        ShedSettings(max_queue=-1)


def test_haproxy_runs_at_the_niceness_asked_for_master_and_worker(tmp_path: Path) -> None:
    """Raising the niceness is always permitted, so 19 is what both HAProxy processes get (lowering
    it, the default 0 under Ray's workers at 15, needs root or CAP_SYS_NICE)."""
    import os

    a, url_a = _server()
    proxy = ShedProxy(ShedSettings(port=free_port(), host="127.0.0.1", nice=19), workdir=tmp_path)
    proxy.start([url_a])
    try:
        assert proxy.nice == 19
        master = proxy.proc.pid
        workers = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == master]
        assert workers and all(os.getpriority(os.PRIO_PROCESS, w) == 19 for w in workers)
    finally:
        proxy.stop()
        a.shutdown()
    with pytest.raises(ValueError, match="nice=25"):
        ShedSettings(nice=25)


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return None
    return int(st[st.rfind(")") + 2:].split()[1])


def test_a_denied_request_keeps_its_connection_when_the_body_is_buffered(tmp_path: Path) -> None:
    """buffer_kb 64: HAProxy reads a 47 KB body before it denies it, so the client's next request
    goes over the same connection; buffer_kb 0: the deny answers on the headers and closes."""
    import socket

    a, url_a = _server()
    body = json.dumps({"pad": "x" * 47_000}).encode()
    raw = (b"POST /v1/feed HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
           b"content-length: %d\r\n\r\n" % len(body)) + body

    def answers_on_one_connection(buffer_kb: int) -> list[int]:
        settings = ShedSettings(port=free_port(), host="127.0.0.1", per_replica=1, queue_ms=3000, max_queue=0,
                                buffer_kb=buffer_kb)  # max_queue 0: every request is denied
        cfg = render_config([url_a], settings, tmp_path / "503")
        assert ("option http-buffer-request" in cfg) == bool(buffer_kb)
        assert (f"tune.bufsize {buffer_kb * 1024}" in cfg) == bool(buffer_kb)
        proxy = ShedProxy(settings, workdir=tmp_path / str(buffer_kb))
        proxy.start([url_a])
        statuses = []
        try:
            with socket.create_connection(("127.0.0.1", settings.port), timeout=5) as s:
                f = s.makefile("rb")
                for _ in range(3):
                    try:
                        s.sendall(raw)
                        status = int(f.readline().split()[1])
                        length = 0
                        while (line := f.readline()) not in (b"\r\n", b""):
                            if line.lower().startswith(b"content-length:"):
                                length = int(line.split(b":")[1])
                        assert json.loads(f.read(length))["shed"] == "overload"
                        statuses.append(status)
                    except (OSError, IndexError, ValueError):
                        statuses.append(0)  # the connection was closed under us
        finally:
            proxy.stop()
        return statuses

    try:
        assert answers_on_one_connection(64) == [503, 503, 503]
        unbuffered = answers_on_one_connection(0)
        assert unbuffered[0] == 503 and 0 in unbuffered, unbuffered
    finally:
        a.shutdown()
    with pytest.raises(ValueError, match="buffer_kb=8"):
        ShedSettings(buffer_kb=8)


def test_the_replicas_agent_sets_haproxys_maxconn_to_the_limit_it_admits_now(tmp_path: Path) -> None:
    """A replica's admission answers HAProxy's agent check with its limit in force; HAProxy then
    sends it no more than that although ``per_replica`` allows 4: of 4 requests at once one reaches
    the (1 s) replica, one waits its 100 ms in HAProxy's queue and the rest find it full."""
    import asyncio

    from serve_apps.feed_admission import Admission

    async def agent_port() -> tuple[int, str, str]:
        async def app(scope: object, receive: object, send: object) -> None:
            return None

        adm = Admission(app, max_in_flight=8, agent=True)
        await adm({"type": "http", "path": "/healthz", "headers": []}, None, None)  # the first request starts it
        adm.limit = 1.0  # as if the CPU were short

        async def ask() -> str:
            reader, writer = await asyncio.open_connection("127.0.0.1", adm.agent_port)
            line = (await reader.readline()).decode()
            writer.close()
            return line

        first = await ask()
        adm.limit = 3.7
        return adm.agent_port, first, await ask()

    port_seen, one, three = asyncio.run(agent_port())
    assert port_seen and one == "maxconn:1\n" and three == "maxconn:3\n"

    class Agent(threading.Thread):  # the same answer as the replica's, served while HAProxy asks
        def __init__(self) -> None:
            import socket

            super().__init__(daemon=True)
            self.sock = socket.create_server(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]

        def run(self) -> None:
            while True:
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    return
                conn.sendall(b"maxconn:1\n")
                conn.close()

    _Slow.seen = []
    a, url_a = _server()
    agent = Agent()
    agent.start()
    settings = ShedSettings(port=free_port(), host="127.0.0.1", per_replica=4, queue_ms=100, max_queue=1,
                            agent_inter_ms=20)
    text = render_config([url_a], settings, tmp_path / "503", {url_a: agent.port})
    assert f"maxconn 4 agent-check agent-port {agent.port} agent-inter 20ms" in text
    proxy = ShedProxy(settings, workdir=tmp_path)
    proxy.start([url_a], agents={url_a: agent.port})
    base = f"http://127.0.0.1:{proxy.settings.port}"
    try:
        time.sleep(0.3)  # a few agent checks
        with ThreadPoolExecutor(4) as pool:
            out = list(pool.map(lambda _: httpx.post(f"{base}/v1/feed", json={"x": 1}, timeout=10).status_code,
                                range(4)))
        assert sorted(out) == [200, 503, 503, 503] and len(_Slow.seen) == 1, out
        assert not proxy.update([url_a], {url_a: agent.port}) and proxy.update([url_a], {})  # agent gone: reload
    finally:
        proxy.stop()
        a.shutdown()
        agent.sock.close()
    with pytest.raises(ValueError, match="agent_inter_ms"):
        ShedSettings(agent_inter_ms=-1)
