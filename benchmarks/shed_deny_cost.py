"""What a request shed by the shedding HAProxy's deny costs, with and without body buffering.

    python benchmarks/shed_deny_cost.py --rps 1800 --seconds 10 --buffer-kb 64,0 --json

adray's shedding HAProxy (``adray.shed_proxy``) in front of two local servers that hold each
request 0.5 s, with one request a replica and at most one waiting (``max_queue`` 1), so nearly every request
is denied; the C open-loop generator (``benchmarks/openloop.c``) sends 47 KB JSON bodies (a feed
request's size) at ``--rps``. Per ``buffer_kb`` one JSON line: the answers by status, the
connections the generator opened, the CPU a request of HAProxy (master and worker, ``/proc``) and
of the generator (its own, from t0 to the last answer), and the shed answers' p99. No Ray, no
replicas: the proxy's and the client's share of a shed request alone.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers

from openloop_c import run  # noqa: E402  (benchmarks/ is this script's folder)
from proc_cpu import CpuMeter  # noqa: E402

from adray.shed_proxy import ShedProxy, ShedSettings  # noqa: E402
from tests.helpers import free_port  # noqa: E402


class _Hold(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["content-length"]))
        time.sleep(0.5)
        out = b'{"ok":1}'
        self.send_response(200)
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: object) -> None:
        pass


def measure(buffer_kb: int, rps: float, seconds: float, urls: list[str]) -> dict[str, object]:
    proxy = ShedProxy(ShedSettings(port=free_port(), host="127.0.0.1", per_replica=1, queue_ms=5, max_queue=1,
                                   buffer_kb=buffer_kb, nice=0))
    proxy.start(urls)
    try:
        time.sleep(1.0)
        kids = subprocess.run(["pgrep", "-P", str(proxy.proc.pid)], capture_output=True, text=True).stdout.split()
        meter = CpuMeter({"haproxy": [proxy.proc.pid, *map(int, kids)]})
        meter.start()
        template = (b'{"request_id":', b',"pad":"' + b"x" * 47_000 + b'"}')
        answers, stats = run([f"http://127.0.0.1:{proxy.settings.port}"], [template],
                             [i / rps for i in range(int(rps * seconds))], "shed-", 100.0)
        cpu = meter.stop()
    finally:
        proxy.stop()
    n = len(answers)
    shed = sorted(a[2] for a in answers if a[0] == 503)
    return {"buffer_kb": buffer_kb, "rps": rps, "requests": n,
            "statuses": {str(k): v for k, v in collections.Counter(a[0] for a in answers).items()},
            "connections_opened": stats["opened"], "haproxy_cpu_ms_per_request": round(cpu["haproxy"] * 1e3 / n, 4),
            "client_cpu_ms_per_request": round(stats["cpu_s"] * 1e3 / n, 4),
            "shed_p99_ms": round(shed[int(0.99 * (len(shed) - 1))], 2) if shed else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rps", type=float, default=1800.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--buffer-kb", default="64,0", help="ShedSettings.buffer_kb values, comma-separated")
    ap.add_argument("--repeat", type=int, default=2, help="rounds over the values, interleaved")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    servers = [ThreadingHTTPServer(("127.0.0.1", free_port()), _Hold) for _ in range(2)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    urls = [f"http://127.0.0.1:{s.server_address[1]}" for s in servers]
    for _ in range(args.repeat):
        for kb in (int(x) for x in args.buffer_kb.split(",")):
            out = measure(kb, args.rps, args.seconds, urls)
            print(json.dumps(out) if args.json else
                  f"buffer_kb {kb:4d}: {out['statuses']}, {out['connections_opened']} connections, HAProxy "
                  f"{out['haproxy_cpu_ms_per_request']} + client {out['client_cpu_ms_per_request']} ms CPU a request, "
                  f"shed p99 {out['shed_p99_ms']} ms", flush=True)
    for s in servers:
        s.shutdown()


if __name__ == "__main__":
    main()
