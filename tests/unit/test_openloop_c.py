"""The C open-loop generator (benchmarks/openloop.c) against local HTTP/1.1 servers: what it sends,
what it records, and that a slow answer does not delay the sends after it (open loop)."""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers import free_port

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

from graph_load import Tally  # noqa: E402  (benchmarks/ is not a package)
from openloop_c import run  # noqa: E402

pytestmark = pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler")


class _Echo(BaseHTTPRequestHandler):
    """Answers each POST with what it got; request id "slow..." sleeps 1 s first, "shed..." gets
    the admission's 503, "bad..." a 500; "chunked..." is answered chunked, 20 ms between chunks."""

    protocol_version = "HTTP/1.1"  # keep-alive
    seen: list[tuple[float, int, str, dict[str, str]]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        raw = self.rfile.read(int(self.headers["content-length"]))
        body = json.loads(raw)
        rid = body["request_id"]
        with self.lock:
            type(self).seen.append((time.monotonic(), self.server.server_address[1], self.path,
                                    {k.lower(): v for k, v in self.headers.items()}))
        if rid.startswith("slow"):
            time.sleep(1.0)
        status, answer = 200, {"request_id": rid, "fallbacks": {}, "latency_ms": {"total": 1.0}, "n": body["n"]}
        if rid.startswith("shed"):
            status, answer = 503, {"detail": "busy", "shed": "overload"}
        elif rid.startswith("bad"):
            status, answer = 500, {"detail": "boom"}
        out = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        if rid.startswith("chunked"):
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            half = len(out) // 2
            for part in (out[:half], out[half:], b""):  # in pieces, apart: a read sees part of them
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                self.wfile.flush()
                time.sleep(0.02)
            return
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def servers():
    _Echo.seen = []
    out = []
    for _ in range(2):
        srv = ThreadingHTTPServer(("127.0.0.1", free_port()), _Echo)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        out.append(srv)
    yield [f"http://127.0.0.1:{s.server_address[1]}" for s in out]
    for s in out:
        s.shutdown()


def _templates(n: int) -> list[tuple[bytes, bytes]]:
    return [(b'{"n":%d,"request_id":' % k, b',"pad":"' + b"x" * 40_000 + b'"}') for k in range(n)]


def test_sends_each_request_to_its_target_with_its_id_and_deadline(servers) -> None:
    sends = [i * 0.01 for i in range(40)]
    answers, stats = run(servers, _templates(3), sends, "load-1-", 80.0, path="/v1/feed")
    assert [a[0] for a in answers] == [200] * 40
    for i, (_, _, ms, raw) in enumerate(answers):
        body = json.loads(raw)
        assert body["request_id"] == f"load-1-{i}" and body["n"] == i % 3
        assert 0 < ms < 1000
    ports = [int(u.rsplit(":", 1)[1]) for u in servers]
    by_id = sorted(_Echo.seen, key=lambda s: s[0])
    assert [s[1] for s in by_id] == [ports[i % 2] for i in range(40)]  # round-robin, in send order
    assert all(s[2] == "/v1/feed" and s[3]["x-deadline-ms"] == "80" and
               s[3]["content-type"] == "application/json" for s in by_id)
    assert stats["opened"] >= 2 and stats["cpu_s"] > 0
    sent = [a[1] for a in answers]
    assert all(abs(s - want) < 0.02 for s, want in zip(sent, sends, strict=True))


def test_a_slow_answer_does_not_hold_back_the_sends_after_it(servers) -> None:
    """Open loop: request 0 takes 1 s; requests 1-9, due every 20 ms, go out on time on other
    connections and are answered long before it."""
    templates = [(b'{"n":0,"request_id":', b"}")]
    sends = [i * 0.02 for i in range(10)]
    answers, _ = run(servers[:1], templates, sends, "x", 100.0)
    answers0, _ = run(servers[:1], templates, [0.0], "slow", 100.0)
    assert answers0[0][2] >= 1000
    mixed, _ = run(servers[:1], templates, sends, "slow", 100.0)  # every one sleeps 1 s
    assert all(a[0] == 200 for a in mixed)
    assert all(abs(a[1] - s) < 0.05 for a, s in zip(mixed, sends, strict=True))  # sent on time, not after 1 s each
    assert max(a[1] + a[2] / 1e3 for a in mixed) < 1.0 + 0.2 + 0.2  # answered in parallel
    assert all(a[2] < 1000 for a in answers)


def test_records_statuses_and_bodies_as_the_tally_counts_them(servers) -> None:
    templates = [(b'{"n":0,"request_id":', b"}")]
    for prefix, status in (("shed-", 503), ("bad-", 500), ("chunked-", 200)):
        answers, _ = run(servers, templates, [0.0, 0.005], prefix, 100.0)
        assert [a[0] for a in answers] == [status, status]
        tally = Tally(trace=[])
        for st, sent, ms, raw in answers:
            tally.add(sent, ms, st, raw)
        res = tally.result(2.0, 2, 1.0, 100.0, None)
        want = {"shed-": (0, 2, 0), "bad-": (0, 0, 2), "chunked-": (2, 0, 0)}[prefix]
        assert (len(tally.lat), res["shed"], res["errors"]) == want
        cpu = tally.result(2.0, 2, 1.0, 100.0, {"replicas": 0.008, "machine": 0.01})
        assert cpu["replica_cpu_ms_per_answer"] == (4.0 if prefix == "chunked-" else None)  # 8 ms over 2 answers
    assert json.loads(answers[0][3])["request_id"] == "chunked-0"


def test_a_refused_connection_is_a_failed_request_not_a_hang() -> None:
    port = free_port()  # nothing listens there
    t = time.monotonic()
    answers, _ = run([f"http://127.0.0.1:{port}"], [(b'{"request_id":', b"}")], [0.0, 0.01], "r", 100.0,
                     timeout_s=5.0)
    assert [a[0] for a in answers] == [0, 0]
    assert time.monotonic() - t < 5.0
    tally = Tally(trace=None)
    for st, sent, ms, raw in answers:
        tally.add(sent, ms, st, raw)
    assert tally.errors == 2


def test_an_answer_before_the_whole_body_is_sent_counts(servers) -> None:
    """A proxy that sheds on the headers answers 503 and closes while the client still sends the
    body (HAProxy's ``http-request deny``): the 503 is the request's answer, not a failed request."""
    import socket

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    port = srv.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += conn.recv(4096)
            body = b'{"detail":"busy","shed":"overload"}'
            conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
            conn.close()  # the body unread: the kernel resets the connection

    threading.Thread(target=serve, daemon=True).start()
    big = [(b'{"request_id":', b',"pad":"' + b"x" * 4_000_000 + b'"}')]  # more than the socket buffers take
    answers, stats = run([f"http://127.0.0.1:{port}"], big, [0.0, 0.05, 0.1], "shed-", 100.0, preopen=0)
    srv.close()
    assert [a[0] for a in answers] == [503, 503, 503]
    assert all(b'"shed"' in a[3] for a in answers)
    assert stats["opened"] == 3  # each closed connection is replaced, none reused after its close


def test_admission_delta_sums_the_replicas_counters_and_their_mean_wave() -> None:
    from graph_load import admission_delta

    before = [{"shed": {"deadline": 1, "queue": 0}, "waited": 2, "waves": 10, "started": 15},
              {"shed": {"deadline": 0, "queue": 3}, "waited": 0, "waves": 5, "started": 5}]
    after = [{"shed": {"deadline": 4, "queue": 0}, "waited": 5, "waves": 20, "started": 45},
             {"shed": {"deadline": 0, "queue": 4}, "waited": 1, "waves": 15, "started": 25}]
    got = admission_delta(before, after)
    assert got["replica_shed"] == {"deadline": 3, "queue": 1}
    assert got["replica_waited"] == 4
    assert got["replica_wave_mean"] == 2.5  # (30 + 20) requests started in (10 + 10) waves
    assert admission_delta(before, None) == {}
    assert admission_delta(after, after)["replica_wave_mean"] is None  # no wave in between
