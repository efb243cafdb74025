"""The spend ceiling survives kill -9 of the process that hosts the ledger.

A child process runs a :class:`adray.pacing.Ledger` on a local Storage and settles charges in a
loop, printing the ledger's spend after each grant (a grant is printed only once made, so every
printed total was granted). The test kills it with SIGKILL at a random moment, then loads the file
in a fresh Ledger: its spend must be >= every total printed before the kill, and <= the budget.
Several rounds run on the same file, each incarnation going on from the last one's state.

What this shows and what it cannot: a SIGKILL loses the process' memory, not the kernel's page
cache, so it proves the order (the ceiling is persisted before a grant is made) and the atomic
replacement (the file always parses). That the bytes reach the disk before a grant (the host
losing power) rests on the fsyncs of ``Storage.write_text(durable=True)``, which
tests/unit/test_durable_write.py checks are made, in order. The Ray actor killed with kill -9 is
tests/workloads/test_pacing_actor.py.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from adray.pacing import Ledger, PacingSettings
from adray.storage import Storage

BUDGET = 20.0
SETTINGS = PacingSettings(steps_per_day=4, day_seconds=1e9, reserve_block=0.05, snapshot_every_s=1.0)
CHILD = """
import random, sys
from adray.pacing import Ledger, PacingSettings
from adray.storage import Storage

root, seed, budget = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
settings = PacingSettings(steps_per_day=4, day_seconds=1e9, reserve_block=0.05, snapshot_every_s=1.0)
led = Ledger(Storage(root), "pacing/kill", settings)
led.views([{"advertiser": "a", "budget": budget, "cpa_constraint": 1.0, "task": 0}])
rng = random.Random(seed)
print("start", repr(led.accounts["a"]["spent"]), flush=True)
n = 0
while True:
    price = round(rng.uniform(0.0005, 0.01), 5)
    n += 1
    ok = led.settle([{"advertiser": "a", "alpha": 1.0, "bid": price, "pvalue": 0.1, "won": True, "price": price,
                      "lwc": price, "conversions": 0.1}], key=f"{seed}:{n}")
    if ok == [True]:
        print("granted", repr(led.accounts["a"]["spent"]), flush=True)
"""


def _round(root: Path, seed: int, rng: random.Random) -> tuple[float, list[float]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2] / "platform"),
                                                          os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(seed), str(BUDGET)],
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        first = child.stdout.readline().split()  # type: ignore[union-attr]
        assert first and first[0] == "start", f"the child did not start: {first}"
        time.sleep(rng.uniform(0.02, 0.6))  # a random moment of the loop
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        rest = child.stdout.read()  # type: ignore[union-attr]
        child.wait()
    assert child.returncode == -signal.SIGKILL
    # complete lines only: the kill may cut the last one (print writes its pieces one by one)
    printed = [float(line.split()[1]) for line in rest.split("\n")[:-1] if line.startswith("granted ")]
    return float(first[1]), printed


def test_the_spend_survives_kill_9_of_the_ledger_host(tmp_path: Path) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    seed0 = rng.randrange(10**6)
    spent_before, grants = 0.0, 0
    for r in range(5):
        start, printed = _round(tmp_path, seed0 + r, rng)
        assert start >= spent_before  # the incarnation started from what the last one left
        loaded = Ledger(Storage(tmp_path), "pacing/kill", SETTINGS).accounts.get("a", {"spent": 0.0})["spent"]
        assert max([start, *printed]) <= loaded <= BUDGET, (r, max([start, *printed]), loaded)
        spent_before, grants = loaded, grants + len(printed)
    assert grants > 50, f"only {grants} grants were printed in 5 rounds: the test did not exercise the loop"
