"""The interrupt watchdog: a process that does not stop after Ctrl-C exits 130 within the grace."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

STUCK = """
import signal, sys, time
sys.path.insert(0, {platform!r})
from adray.interrupts import install_interrupt_watchdog
assert install_interrupt_watchdog(grace_s=0.5)
signal.signal(signal.SIGINT, lambda *a: print("swallowed", flush=True))  # a stop that never ends
print("ready", flush=True)
while True:
    time.sleep(0.1)
"""


def test_a_process_that_ignores_ctrl_c_exits_130_after_the_grace() -> None:
    proc = subprocess.Popen([sys.executable, "-c", STUCK.format(platform=str(REPO / "platform"))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=20)
        took = time.monotonic() - t0
    finally:
        proc.kill()
    err = proc.stderr.read()
    assert code == 130, err
    assert took < 10, took
    assert "still stopping 0 s after Ctrl-C" in err or "still stopping 1 s after Ctrl-C" in err, err
    assert "adray-interrupt-watchdog" in err or "Thread" in err  # every thread's stack, to find the hang


def test_nothing_happens_without_ctrl_c() -> None:
    code = subprocess.run([sys.executable, "-c", (
        f"import sys, time; sys.path.insert(0, {str(REPO / 'platform')!r});"
        "from adray.interrupts import install_interrupt_watchdog;"
        "assert install_interrupt_watchdog(grace_s=0.1); time.sleep(0.5)")], timeout=30).returncode
    assert code == 0
