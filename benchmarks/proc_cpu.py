"""CPU seconds of processes and of the whole machine, from ``/proc`` (Linux): what a load run cost.

``CpuMeter(pids)`` reads each process's user + system time and the machine's busy time
(``/proc/stat``: everything but idle and iowait, all cores) at ``start()`` and ``stop()``; ``stop``
returns the seconds each used in between. A process that has gone counts what was read last.
"""

from __future__ import annotations

import os

HZ = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (all its threads), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return None
    fields = st[st.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def machine_busy_s() -> float:
    """Busy CPU seconds of all cores since boot (``/proc/stat``'s first line less idle and iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / HZ


class CpuMeter:
    """CPU used by named groups of processes and by the machine between ``start`` and ``stop``."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self._t0: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        out = {"machine": machine_busy_s()}
        for name, pids in self.groups.items():
            out[name] = sum(s for s in (process_cpu_s(p) for p in pids) if s is not None)
        return out

    def start(self) -> None:
        self._t0 = self._read()

    def stop(self) -> dict[str, float]:
        now = self._read()
        return {k: now[k] - self._t0[k] for k in now}
