"""Build and run ``benchmarks/openloop.c``: the open-loop load of ``graph_load.py --client c``.

The C generator sends what :func:`graph_load.open_loop` sends (the same bodies, request ids,
``x-deadline-ms``, request i to ``urls[i % len(urls)]`` at t0 + ``sends[i]``) from one epoll thread,
and writes every answer to a file that is read here after the run, so the client's share of the
cores during the run is the kernel's copies and little else (the Python client: 0.27-0.35 ms of CPU
a request).
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

SOURCE = Path(__file__).with_name("openloop.c")
BINARY = Path(__file__).resolve().parents[1] / "build" / "openloop"


def build() -> Path:
    """The compiled generator (``build/openloop``), compiled again when the source is newer."""
    if BINARY.is_file() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit(f"--client c: no C compiler (cc or gcc) on PATH to build {SOURCE}; use --client python")
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    tmp = BINARY.with_suffix(".tmp")
    proc = subprocess.run([cc, "-O2", "-o", str(tmp), str(SOURCE)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"--client c: {cc} could not build {SOURCE}:\n{proc.stderr}")
    tmp.replace(BINARY)
    return BINARY


def run(urls: list[str], templates: list[tuple[bytes, bytes]], sends: list[float], rid_prefix: str,
        deadline_ms: float, path: str = "/v1/feed", timeout_s: float = 60.0,
        preopen: int = 4) -> tuple[list[tuple[int, float, float, bytes]], dict[str, float]]:
    """Send request i (``templates[i % len]``'s head, ``"<rid_prefix><i>"``, its tail) to
    ``urls[i % len(urls)]`` + ``path`` at t0 + ``sends[i]``. Returns per request ``(status, send
    offset s, latency ms, body)`` (status 0: no answer: refused, reset or ``timeout_s`` without a
    byte) and the generator's own ``{"cpu_s", "wall_s", "opened"}`` (CPU and wall from t0 to the last answer)."""
    binary = build()
    args = [str(binary), "--rid-prefix", rid_prefix, "--deadline-ms", f"{deadline_ms:g}",
            "--timeout-s", f"{timeout_s:g}", "--preopen", str(preopen)]
    for url in urls:
        u = urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"{url!r}: expected http://host[:port][/prefix]")
        args += ["--target", u.hostname, str(u.port or 80), u.path.rstrip("/") + path]
    with tempfile.TemporaryDirectory(prefix="openloop-") as tmp:
        t_file, s_file, o_file = (Path(tmp) / n for n in ("templates", "sends", "out"))
        t_file.write_bytes(struct.pack("<I", len(templates)) + b"".join(
            struct.pack("<I", len(h)) + h + struct.pack("<I", len(t)) + t for h, t in templates))
        s_file.write_bytes(struct.pack(f"<{len(sends)}d", *sends))
        proc = subprocess.run([*args, "--templates", str(t_file), "--sends", str(s_file), "--out", str(o_file)],
                              capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{binary} exited {proc.returncode}: {proc.stderr.strip()}")
        stats = json.loads(proc.stdout.strip().splitlines()[-1])
        raw = o_file.read_bytes()
    out, off, rec = [], 0, struct.Struct("<iddI")
    for _ in sends:
        status, sent, ms, n = rec.unpack_from(raw, off)
        off += rec.size
        out.append((status, sent, ms, raw[off:off + n]))
        off += n
    return out, stats
