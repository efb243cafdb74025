"""Generators and importers at scale: wall time and peak memory of one ``make`` per size.

Workloads (``--workload``):

* ``mtorl``: ``make_data`` with ``source: simulator`` (the journey simulator's logs); ``--rows`` is
  the number of logged steps, ``sim.steps`` (30) per user, so ``rows / 30`` users.
* ``mtorl-import``: ``import_criteo`` of a synthetic ``Criteo_sequence.csv`` of ``--rows`` steps in
  the released layout (global time order, users interleaved, 5-40 steps each, unnamed index column;
  written once per size before the measured run, not measured).
* ``drlput``: ``make_data`` (``adray data make drlput``): ``--rows`` logged requests.

Each make runs in a fresh subprocess; memory is the peak PSS of that process tree
(benchmarks/proc_memory.py, sampled every 0.1 s), wall time includes the interpreter's start and
imports; ``cpu_s`` is the subprocess's user + system CPU time (on a shared machine the wall time
moves with the load, the CPU time much less). ``--code DIR`` runs the make with another copy of the code on ``PYTHONPATH`` (e.g. the
last commit's: ``git archive HEAD platform workloads | tar -x -C DIR``) to measure before/after.

    python benchmarks/gen_scale.py --workload mtorl --rows 300000,3000000 --json
    python benchmarks/gen_scale.py --workload mtorl --rows 300000,3000000 --code /tmp/head --json

Last line with --json: ``{"workload", "code", "sizes": [{rows, wall_s, cpu_s, peak_mb, ok}, ...]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from proc_memory import PeakPss  # benchmarks/proc_memory.py (this script's folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
STEPS = 30
MAKE = """
import sys
from pathlib import Path
kind, rows, out, src, steps = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
if kind == "drlput":
    from workloads.drlput.config import DRLPUTConfig
    from workloads.drlput.data import make_data
    make_data(DRLPUTConfig().override({"behaviour.n_requests": rows}), out)
elif kind == "mtorl":
    from workloads.mtorl.config import MTORLConfig
    from workloads.mtorl.data import make_data
    make_data(MTORLConfig().override({"sim.num_users": rows // steps, "sim.steps": steps}), out)
else:
    from workloads.mtorl.config import MTORLConfig
    from workloads.mtorl.data import import_criteo
    import_criteo([Path(src)], out, MTORLConfig(source="criteo", gain="both"))
"""


def criteo_csv(path: Path, rows: int, seed: int = 0) -> None:
    """A Criteo-sequence file of ``rows`` steps as released: users' steps interleaved in time order."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 41, rows // 5 + 1)
    lengths = lengths[: int(np.searchsorted(np.cumsum(lengths), rows)) + 1]
    lengths[-1] -= int(lengths.sum()) - rows
    user = np.repeat(np.arange(len(lengths)), lengths)
    order = np.argsort(rng.random(rows) + user * 0.02, kind="stable")  # interleaved, each user in order
    user = user[order]
    header = ",uid,campaign,conversion,attribution,click,click_nb,cost,cpo," + ",".join(
        f"cat{i}" for i in range(1, 10)) + "," + ",".join(f"Type_{k}" for k in range(11))
    with open(path, "w") as f:
        f.write(header + "\n")
        for lo in range(0, rows, 200_000):
            n = min(200_000, rows - lo)
            click = (rng.random(n) < 0.3).astype(int)
            ch = rng.integers(0, 11, n)
            cols = [np.arange(lo, lo + n), user[lo:lo + n], rng.integers(0, 700, n),
                    click * (rng.random(n) < 0.1), np.zeros(n, int), click, np.zeros(n, int),
                    np.round(rng.random(n), 6), np.round(rng.random(n), 4)]
            cols += [rng.integers(0, 30, n) for _ in range(9)]
            cols += [(ch == k).astype(int) for k in range(11)]
            block = np.column_stack([c.astype(np.float64) for c in cols])
            np.savetxt(f, block, delimiter=",", fmt=["%d"] * 7 + ["%.6f", "%.4f"] + ["%d"] * 20)


def _children_cpu() -> float:
    """User + system CPU seconds of the waited-for children (a figure the machine's load barely moves)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workload", choices=("mtorl", "mtorl-import", "drlput"), required=True)
    ap.add_argument("--rows", default="300000,3000000")
    ap.add_argument("--code", default="", help="a copy of the code to run instead of this checkout's")
    ap.add_argument("--data-root", default="", help="where datasets and inputs go (default: a temporary folder)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    root = Path(args.data_root or tempfile.mkdtemp(prefix="adray-gen-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.code:
        code = Path(args.code).resolve()
        env["PYTHONPATH"] = os.pathsep.join([str(code / "platform"), str(code)])
    sizes = []
    for n in [int(x) for x in args.rows.split(",") if x]:
        src = root / f"criteo-{n}.csv"
        if args.workload == "mtorl-import" and not src.is_file():
            criteo_csv(src, n)
        out = root / f"{args.workload}-{n}"
        cmd = [sys.executable, "-c", MAKE, args.workload, str(n), str(out), str(src), str(STEPS)]
        t0, cpu0 = time.perf_counter(), _children_cpu()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                cwd=tempfile.gettempdir() if args.code else REPO)
        with PeakPss(proc.pid, every_s=0.1) as peak:
            try:
                log, _ = proc.communicate(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                log, _ = proc.communicate()
        wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
        ok = proc.returncode == 0
        sizes.append({"rows": n, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "peak_mb": round(peak.peak), "ok": ok})
        print(f"{args.workload} {n:>11,} rows: {wall:7.1f} s ({cpu:.1f} CPU s), peak {peak.peak:7.0f} MB"
              f"{'' if ok else ' FAILED'}", file=sys.stderr, flush=True)
        if not ok:
            print(log[-3000:], file=sys.stderr)
        subprocess.run(["rm", "-rf", str(out)], check=False)
    if not args.data_root:
        subprocess.run(["rm", "-rf", str(root)], check=False)
    if args.json:
        print(json.dumps({"workload": args.workload, "code": args.code or "checkout", "sizes": sizes}))


if __name__ == "__main__":
    main()
