"""The feed graph's metrics reach a real Prometheus: Ray's metrics endpoint scraped, PromQL asked.

The graph runs with every stage ``none`` (their safe defaults: no models to train), one replica and
the real pacing ledger actor, so what each request costs is known: two auto-bidding advertisers
(advA with a budget for two impressions, advB with plenty) and two fixed-bid ones. Burst 1: 12
answers (advA's third charge is refused) and 2 invalid requests; then the ledger actor is killed
and burst 2's 4 answers fall back (``pacing``: ledger unavailable). Prometheus (``tests/prometheus.py``
installs Debian's package when it is missing) scrapes every 1 s; each counter is asked with PromQL
and compared with what the answers said.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.helpers import free_port

APP = "feed-metrics"
LEDGER = "pacing-test-metrics"
BUDGETS = {"advA": 0.1, "advB": 10.0}


def feed_request(i: int) -> dict[str, Any]:
    """Ranked by ecpm (fallback pCTR 0.01, pCVR 0.05, alpha = CPA): advA 0.05, advB 0.04, advF 0.01, advG 0.005."""
    def ad(ad_id: str, adv: str, cpa: float | None = None, bid: float | None = None) -> dict[str, Any]:
        auto = {"budget": BUDGETS[adv], "cpa_constraint": cpa, "task": 0} if cpa is not None else None
        return {"ad_id": ad_id, "advertiser": adv, "campaign": "auto" if auto else "fixed", "bid": bid, "auto": auto,
                "features": {}, "content": [0.1, 0.2], "value": 1.0, "p_long": 0.1}

    return {"request_id": f"m{i}", "user": {"user_id": f"u{i}", "utility_state": {}, "journey": None,
                                            "profile": [], "history": []},
            "screen": [], "ads": [ad("a1", "advA", cpa=100.0), ad("b1", "advB", cpa=80.0), ad("f1", "advF", bid=1.0),
                                  ad("f2", "advG", bid=0.5)],
            "organic": [{"item_id": f"o{k}", "content": [0.3, 0.1], "value": 1.0} for k in range(4)]}


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 120.0) -> Any:
    """``check()`` once it is truthy (Ray reports to its endpoint every few seconds, Prometheus scrapes every 1 s)."""
    deadline, got = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(1.0)
    raise AssertionError(f"{what}: not seen in Prometheus within {timeout_s} s (last: {got!r})")


@pytest.mark.slow
@pytest.mark.ray
def test_feed_counters_reach_prometheus(ray_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    import httpx
    import ray
    from ray import serve

    from adray.cli_serve import serve_graph
    from serve_apps.feed_app import FeedArgs
    from serve_apps.feed_schema import ROLES
    from tests.prometheus import PrometheusServer, ray_metrics_targets

    args = FeedArgs(**dict.fromkeys(ROLES, "none"), registry=str(tmp_path / "registry"), state_uri=str(tmp_path / "state"),
                    ledger_name=LEDGER, num_replicas=1, replica_cpus=0.25, log_flush_s=0.2,
                    metrics_advertisers=("advA", "advB"), metrics_flush_s=0.5, metrics_budget_s=1.0)
    sel = f'app="{APP}"'
    with PrometheusServer(ray_metrics_targets(), tmp_path / "prometheus", free_port()) as prom:
        url = serve_graph(args, port=free_port(), name=APP, route_prefix=f"/{APP}")
        answers: list[dict[str, Any]] = []
        try:
            with httpx.Client(base_url=f"{url}/{APP}", timeout=60) as client:
                for i in range(12):
                    r = client.post("/v1/feed", json=feed_request(i))
                    assert r.status_code == 200, r.text
                    answers.append(r.json())
                for bad in ({**feed_request(99), "request_id": None}, {**feed_request(98), "ads": "none"}):
                    assert client.post("/v1/feed", json=bad).status_code == 422
                spend: dict[str, float] = {}
                for a in answers:  # the auto-bidding ads shown (a1, b1) are what the ledger billed
                    for s in a["feed"]:
                        if s["kind"] == "ad" and s["id"] in ("a1", "b1"):
                            spend[s["advertiser"]] = spend.get(s["advertiser"], 0.0) + s["price"]
                assert spend["advA"] == pytest.approx(0.08) and spend["advB"] == pytest.approx(0.12), spend
                remaining = wait_for("budget gauges", lambda: (
                    (g := prom.by(f"max by (advertiser) (ray_adray_feed_budget_remaining{{{sel}}})", "advertiser"))
                    and g.get("advA") == pytest.approx(BUDGETS["advA"] - spend["advA"])
                    and g.get("advB") == pytest.approx(BUDGETS["advB"] - spend["advB"]) and g))
                ray.kill(ray.get_actor(LEDGER, namespace="adray"), no_restart=True)
                for i in range(12, 16):
                    r = client.post("/v1/feed", json=feed_request(i))
                    assert r.status_code == 200, r.text
                    answers.append(r.json())
                    assert "ledger unavailable" in r.json()["fallbacks"]["pacing"]

            q = {
                "requests": f"sum by (outcome) (ray_adray_feed_requests_total{{{sel}}})",
                "latency_count": f"sum by (stage) (ray_adray_feed_latency_ms_count{{{sel}}})",
                "fallbacks": f"sum by (reason) (ray_adray_feed_fallbacks_total{{{sel}}})",
                "shed": f"sum by (reason) (ray_adray_feed_shed_total{{{sel}}})",
                "refused": f"sum(ray_adray_feed_refused_charges_total{{{sel}}})",
                "settles": f"sum by (result) (ray_adray_feed_settles_total{{{sel}}})",
                "spend": f"sum by (advertiser) (ray_adray_feed_spend_total{{{sel}}})",
                "log_written": f"sum(ray_adray_feed_log_rows_written_total{{{sel}}})",
                "log_dropped": f"sum by (reason) (ray_adray_feed_log_rows_dropped_total{{{sel}}})",
            }
            labels = {"requests": "outcome", "latency_count": "stage", "fallbacks": "reason", "shed": "reason",
                      "settles": "result", "spend": "advertiser", "log_dropped": "reason"}

            def seen() -> dict[str, Any] | None:  # every series there, the last burst counted
                got = {k: prom.by(v, labels[k]) if k in labels else prom.scalar(v) for k, v in q.items()}
                ok = (got["requests"].get("fallback") == 4 and got["log_written"] == 16 and len(got["shed"]) == 2
                      and got["latency_count"].get("ingress") == 16 and len(got["log_dropped"]) == 2
                      and len(got["settles"]) == 2 and len(got["spend"]) == 2 and got["refused"] is not None)
                return got if ok else None

            got = wait_for("the counters after both bursts", seen)
            p95 = prom.scalar(f"histogram_quantile(0.95, sum by (le) (rate(ray_adray_feed_latency_ms_bucket"
                              f"{{{sel},stage=\"ingress\"}}[5m])))")
            print("PROMQL", json.dumps({**got, "budget_remaining": remaining, "ingress_p95_ms": p95}, sort_keys=True))
            dash = json.loads((REPO / "serve_apps" / "grafana" / "adray_feed_dashboard.json").read_text())
            empty = []
            for panel in dash["panels"]:  # every panel's PromQL parses, and the feed panels have data
                for t in panel.get("targets", []):
                    if not prom.query(t["expr"].replace("$app", APP)) and "adray_feed" in t["expr"]:
                        empty.append(panel["title"])
            print("EMPTY PANELS", empty)
        finally:
            serve.delete(APP)

    assert got["requests"] == {"ok": 12, "fallback": 4, "invalid": 2, "error": 0, "cancelled": 0, "shed": 0}
    assert got["latency_count"]["total"] == 16 and got["latency_count"]["settle"] == 12  # no settle without a ledger
    assert got["fallbacks"]["not_deployed"] > 0 and got["fallbacks"]["ledger_unavailable"] == 4
    assert got["shed"] == {"deadline": 0, "overload": 0}  # the series exist before anything sheds
    assert got["refused"] == 1  # advA's third impression: 0.12 > its budget 0.1
    assert got["settles"] == {"ok": 12, "failed": 0}
    assert got["spend"] == {"advA": pytest.approx(spend["advA"]), "advB": pytest.approx(spend["advB"])}
    assert got["log_written"] == 16 and got["log_dropped"] == {"buffer_full": 0, "unconvertible": 0}
    assert empty == []  # counters that never moved (shed, failed settles, out of vocabulary) answer 0
