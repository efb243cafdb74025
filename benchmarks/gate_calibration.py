"""Calibration of the OPE promotion gate on planted candidates of known true value (DRL-PUT simulator).

    python benchmarks/gate_calibration.py [--reps 100] [--json]

The serving version is a fixed action worth 92% of the best fixed one (``STALE``: hand tuning gone
stale; deterministic, or ε-greedy over the 125 actions with ε in {0, 0.05, 0.3}). Planted candidates are policies of the
observable state (144 segments: surface x 6-hour block x historical-CTR bucket x
historical-long-click bucket) that take another action on some segments:

    worse_10, worse_5   the segment's worst action on the segments with the largest loss first
    equal               better actions on some segments and worse on others, netting 0
    better_5, better_10 the segment's best action on the segments with the largest gain first

(the last segment switched with a probability, so the true value is the target exactly; both
versions serve with the logging ε, so a cell's δ is the difference as served). The
actions are chosen on one set of simulated requests and the true values computed on another
(``TRUTH_REQUESTS``, the simulator's expected rewards): truth is used to plant and to score the
gate, never by the gate. Each repetition logs n fresh requests (n in {1k, 10k}) with the serving
rule, draws their outcomes, and asks :func:`adray.promote.decide` about every candidate under
the default rule (non_inferior) and the strict one (superior), and, for comparison, the rule the
gate replaced (``legacy``: SNIPS upper bound and ESS, no support check).

Output: the promote / hold / cannot-value rate per cell (candidate x ε x n) and, last, one JSON line
with ``false_promote_rate`` (highest promote rate over the worse-candidate cells, default rule),
``deterministic_promotions`` (promotions, by either rule, of any candidate, all of which decide
differently, from ε = 0 logs) and the power in the 10%-better cells.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from typing import Any

import numpy as np

from adray import ope
from adray.promote import decide
from workloads.drlput.actions import ActionSpace
from workloads.drlput.config import DRLPUTConfig
from workloads.drlput.reward import reward
from workloads.drlput.sim import Requests, make_requests, outcomes, shown_ads
from workloads.drlput.truth import reward_table

TARGETS = {"worse_10": -0.10, "worse_5": -0.05, "equal": 0.0, "better_5": 0.05, "better_10": 0.10}
EPSILONS = (0.0, 0.05, 0.3)
SIZES = (1000, 10000)
PLANT_REQUESTS, TRUTH_REQUESTS = 100_000, 200_000
PLANT_SEED, TRUTH_SEED, LOG_SEED = 31_000_001, 32_000_001, 33_000_001
RULES = ("non_inferior", "superior", "legacy")
"""The gate's two rules, and (for comparison only) the rule it replaced: promote when the SNIPS
upper 95% bound >= the serving version's mean logged reward and the Kish ESS >= 30."""
STALE = 0.92
"""The serving version: the fixed action worth about this share of the best fixed action's value
(hand tuning gone stale). Against the best fixed action itself the best per-segment policy is only
~11% better greedily, too little for a candidate 10% better as served under ε = 0.3 exploration."""


def segment(req: Requests) -> np.ndarray:
    """144 segments of the observable state (N,)."""
    st = req.state
    ctr = np.digitize(st["hist_ctr"], [0.05, 0.1, 0.2])
    long = np.digitize(st["hist_long"], [0.2, 0.4])
    return ((st["surface"] * 4 + st["hour"] // 6) * 4 + ctr) * 3 + long


N_SEGMENTS = 144


def segment_values(cfg: DRLPUTConfig, space: ActionSpace, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(P (G,), Q (G, A)): segment shares and each action's mean true reward per segment."""
    count, q = np.zeros(N_SEGMENTS), np.zeros((N_SEGMENTS, space.size))
    for lo in range(0, n, 25_000):
        req = make_requests(cfg.sim, min(25_000, n - lo), seed + lo)
        seg, table = segment(req), reward_table(cfg, req, space)
        np.add.at(count, seg, 1.0)
        np.add.at(q, seg, table)
    return count / n, q / np.maximum(count[:, None], 1)


def plant(p: np.ndarray, q_truth: np.ndarray, serving: int, alt: np.ndarray, target: float,
          order: np.ndarray) -> np.ndarray:
    """Per segment, the probability of taking ``alt`` instead of ``serving`` so that the true value
    moves by ``target`` (a signed amount), switching segments in ``order`` (G,)."""
    prob = np.zeros(len(p))
    left = target
    for g in order:
        gain = p[g] * (q_truth[g, alt[g]] - q_truth[g, serving])
        if left == 0 or gain == 0 or np.sign(gain) != np.sign(left):
            continue
        prob[g] = min(1.0, left / gain)
        left -= prob[g] * gain
        if abs(left) < 1e-12:
            break
    if abs(left) > 1e-9:
        raise RuntimeError(f"cannot plant a change of {target:+.4f}: {left:+.4f} left")
    return prob


def candidates(cfg: DRLPUTConfig, space: ActionSpace) -> tuple[int, dict[float, dict[str, dict[str, Any]]], float]:
    """The serving action and, per ε, each planted candidate ({alt (G,), prob (G,), true_rel, changed}).

    Both versions serve with the same ε (a candidate inherits ``serve_epsilon``): served, the
    serving version is worth (1-ε)·V(g) + ε·V(uniform) and a candidate (1-ε)·V(c) + ε·V(uniform),
    so the greedy part of a candidate moves by δ·((1-ε)·V(g) + ε·V(uniform)) / (1-ε) to be δ
    better or worse as served."""
    p_a, q_a = segment_values(cfg, space, PLANT_REQUESTS, PLANT_SEED)  # choose actions here
    p, q = segment_values(cfg, space, TRUTH_REQUESTS, TRUTH_SEED)  # true values here
    fixed = p_a @ q_a  # (A,) each fixed action's value on the planting set
    serving = int(np.abs(fixed - STALE * fixed.max()).argmin())
    v_g, v_u = float(p @ q[:, serving]), float(p @ q.mean(1))
    best, worst = q_a.argmax(1), q_a.argmin(1)
    gain = q[np.arange(N_SEGMENTS), best] - q[:, serving]  # (G,) true gain per request of each switch
    loss = q[np.arange(N_SEGMENTS), worst] - q[:, serving]
    out: dict[float, dict[str, dict[str, Any]]] = {}
    for eps in EPSILONS:
        served = (1 - eps) * v_g + eps * v_u
        scale = served / (1 - eps)
        out[eps] = {}
        for name, rel in TARGETS.items():
            if rel > 0:
                alt, prob = best, plant(p, q, serving, best, rel * scale, np.argsort(-gain))
            elif rel < 0:
                alt, prob = worst, plant(p, q, serving, worst, rel * scale, np.argsort(loss))
            else:  # +5% on the best segments, then -5% on others
                up = plant(p, q, serving, best, 0.05 * scale, np.argsort(-gain))
                rest = np.argsort(loss)[np.isin(np.argsort(loss), np.flatnonzero(up == 0))]
                down = plant(p, q, serving, worst, -0.05 * scale, rest)
                alt, prob = np.where(up > 0, best, worst), up + down
            prob = np.where(alt == serving, 0.0, prob)
            v_c = float(p @ (prob * q[np.arange(N_SEGMENTS), alt] + (1 - prob) * q[:, serving]))
            out[eps][name] = {"alt": alt, "prob": prob, "true_rel": ((1 - eps) * v_c + eps * v_u) / served - 1,
                              "changed": float(p @ prob)}
    return serving, out, v_g


def one_log(cfg: DRLPUTConfig, space: ActionSpace, serving: int, eps: float, n: int, seed: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n requests decided ε-greedily around ``serving``: (segment, action, propensity, reward)."""
    rng = np.random.default_rng(seed)
    req = make_requests(cfg.sim, n, seed)
    explore = rng.random(n) < eps
    action = np.where(explore, rng.integers(0, space.size, n), serving)
    prop = (1 - eps) * (action == serving) + eps / space.size
    r = reward(outcomes(req, shown_ads(req, space.values[action])), cfg.reward)
    return segment(req), action, prop, r


def legacy(r: np.ndarray, pi: np.ndarray, mu: np.ndarray) -> str:
    """The replaced rule (adray.promote before issue 19), for comparison: it had no support check."""
    est = ope.snips(r, pi, mu)
    ok = est.ess >= 30 and est.value + 1.96 * est.std_err >= r.mean()
    return "promote" if ok else "hold"


def run(reps: int, sizes: tuple[int, ...], progress: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    cfg = DRLPUTConfig()
    space = ActionSpace(cfg.action)
    t0 = time.perf_counter()
    serving, planted, v_s = candidates(cfg, space)
    if progress:
        print(f"serving: action {serving} (greedy true value {v_s:.4f}); planted in {time.perf_counter() - t0:.0f} s")
        for eps, cands in planted.items():
            for name, c in cands.items():
                print(f"  eps {eps:<4g} {name:<10} true {100 * c['true_rel']:+.2f}% (as served)  greedy action "
                      f"differs on {100 * c['changed']:.1f}% of requests")
    counts: dict[tuple[str, float, int, str], Counter] = {}
    for eps in EPSILONS:
        for n in sizes:
            for rep in range(reps):
                seg, action, prop, r = one_log(cfg, space, serving, eps, n, LOG_SEED + 7919 * rep + n + int(eps * 1e4))
                for name, c in planted[eps].items():
                    greedy = np.where(action == c["alt"][seg], c["prob"][seg], 0.0) \
                        + np.where(action == serving, 1 - c["prob"][seg], 0.0)  # c(a_i|s_i)
                    pi = (1 - eps) * greedy + eps / space.size  # π(a_i|s_i): the candidate as served
                    for rule in RULES:
                        if rule == "legacy":
                            decision = legacy(r, pi, prop)
                        else:
                            decision = decide(r, pi, prop, rule=rule, with_snips=False).decision  # type: ignore[arg-type]
                        counts.setdefault((name, eps, n, rule), Counter())[decision] += 1
            if progress:
                print(f"  eps {eps:g} n {n}: {reps} logs ({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = []
    for (name, eps, n, rule), c in counts.items():
        rows.append({"candidate": name, "true_rel": round(planted[eps][name]["true_rel"], 6),
                     "changed": round(planted[eps][name]["changed"], 4), "epsilon": eps, "n": n, "rule": rule, "reps": reps,
                     **{k: c[k] / reps for k in ("promote", "hold", "cannot_value")}})
    default = [x for x in rows if x["rule"] == "non_inferior"]
    summary = {
        "false_promote_rate": max(x["promote"] for x in default if x["true_rel"] < -1e-9),
        "deterministic_promotions": int(sum(counts[k]["promote"] for k in counts if k[1] == 0.0 and k[3] != "legacy")),
        "legacy_false_promote_rate": max(x["promote"] for x in rows if x["rule"] == "legacy" and x["true_rel"] < -1e-9),
        "legacy_deterministic_promotions": int(sum(counts[k]["promote"] for k in counts
                                                   if k[1] == 0.0 and k[3] == "legacy")),
        "power_better_10": {f"eps={x['epsilon']:g},n={x['n']}": x["promote"] for x in default
                            if x["candidate"] == "better_10"},
        "power_better_10_superior": {f"eps={x['epsilon']:g},n={x['n']}": x["promote"] for x in rows
                                     if x["candidate"] == "better_10" and x["rule"] == "superior"},
        "rule": "non_inferior (margin 1% of the serving value, alpha 0.05)", "reps": reps,
        "serving_greedy_value": round(v_s, 6), "seconds": round(time.perf_counter() - t0, 1)}
    return rows, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=100, help="logs per (epsilon, n) cell (>= 100 for the figures)")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="logged rows per log, comma-separated")
    ap.add_argument("--json", action="store_true", help="one JSON line per cell, then the summary line")
    args = ap.parse_args()
    rows, summary = run(args.reps, tuple(int(x) for x in args.sizes.split(",")), progress=not args.json)
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(f"\n{'candidate':<10} {'true':>7} {'eps':>5} {'n':>6} {'rule':<12} {'promote':>8} {'hold':>6} "
              f"{'cannot':>7}")
        for x in sorted(rows, key=lambda x: (x["rule"], x["epsilon"], x["n"], x["true_rel"])):
            print(f"{x['candidate']:<10} {100 * x['true_rel']:+6.1f}% {x['epsilon']:5.2f} {x['n']:6d} {x['rule']:<12} "
                  f"{x['promote']:8.2f} {x['hold']:6.2f} {x['cannot_value']:7.2f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
