"""Ctrl-C ends a command within seconds, whatever it was doing.

The commands stop what they started on ``KeyboardInterrupt`` (a Ray Train controller, Tune's trials,
a data write). :func:`install_interrupt_watchdog` (the CLI installs it) bounds that: a process still
alive ``INTERRUPT_GRACE_S`` after the first Ctrl-C (a stop that hangs in a Ray call, a main thread
blocked in C code where Python's handler never runs) prints every thread's stack and exits with
status 130; the cluster then ends the job's actors, as for any driver that dies. No Ray import here:
the CLI installs it before anything else.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import threading
import time

INTERRUPT_GRACE_S = 15.0


def install_interrupt_watchdog(grace_s: float = INTERRUPT_GRACE_S) -> bool:
    """After the first SIGINT, give the process ``grace_s`` to stop, then dump stacks and exit 130.

    Python runs a signal handler only between bytecodes of the main thread, so the watchdog listens
    on the C-level wakeup fd (:func:`signal.set_wakeup_fd`), which the interpreter writes the moment
    the signal arrives, from a daemon thread. The usual ``KeyboardInterrupt`` path is unchanged.
    Returns False (nothing installed) outside the main thread or when a wakeup fd is already in use.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except ValueError:
        os.close(r), os.close(w)
        return False
    if old != -1:  # someone else's (an event loop's): leave it theirs
        signal.set_wakeup_fd(old)
        os.close(r), os.close(w)
        return False

    def watch() -> None:
        while True:
            data = os.read(r, 64)
            if signal.SIGINT in data:
                break
        time.sleep(grace_s)
        print(f"\n[adray] interrupted: still stopping {grace_s:.0f} s after Ctrl-C; exiting now (the cluster ends "
              "this job's actors). Where each thread was:", file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        os._exit(130)

    threading.Thread(target=watch, name="adray-interrupt-watchdog", daemon=True).start()
    return True
