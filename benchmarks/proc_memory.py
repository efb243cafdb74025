"""Memory of a process tree for the scale benchmarks: PSS from ``/proc/PID/smaps_rollup``.

PSS counts a shared page once across the processes that map it, so the sum over a driver, its Ray
processes (GCS, raylet with the object store's pages, workers) and their children is what the tree
costs the machine. Linux only.
"""

from __future__ import annotations

import os
import threading
from typing import Any


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree_pss(root: int) -> tuple[float, dict[str, float]]:
    """PSS (MB) summed over ``root`` and all its descendants, and the same by process name."""
    kids, todo, total, by = _children(), [root], 0, {}
    while todo:
        pid = todo.pop()
        todo += kids.get(pid, [])
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                kb = next((int(x.split()[1]) for x in f if x.startswith("Pss:")), 0)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                name = f.read().split(b"\0")[0].decode(errors="replace").rsplit("/", 1)[-1][:40] or "?"
        except OSError:
            continue
        total += kb
        by[name] = by.get(name, 0) + kb / 1024
    return total / 1024, by


class PeakPss:
    """Peak PSS (MB) of a process tree, sampled in a thread while the ``with`` block runs."""

    def __init__(self, pid: int, every_s: float = 0.5) -> None:
        self.pid, self.every_s, self.peak = pid, every_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_pss(self.pid)[0])
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def communicate_or_kill(proc: Any, timeout: float, tag: str) -> str:
    """The output of ``proc`` (a ``Popen`` started with ``start_new_session=True``, text stdout); past
    ``timeout`` seconds its whole process group is killed and the output says so after ``[tag]``."""
    import subprocess

    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        out += f"\n[{tag}] killed after {timeout:.0f} s"
    return out
