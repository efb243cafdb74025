"""The feed graph's metrics record what the answers say (no Ray, no Prometheus: fake metric objects)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adray.decision_log import LogStats
from serve_apps.feed_graph import FeedGraph
from serve_apps.feed_metrics import LE_LABELS, NAMES, AdvertiserTags, FeedMetrics, MetricsPump, fallback_tags
from tests.unit.test_feed_graph import FakeLedger, FakeStage, allocation, graph, request


class FakeMetric:
    """Keeps what a ray.util.metrics object would be given, per tag set."""

    def __init__(self, name: str, kind: str, description: str, tag_keys: tuple[str, ...]) -> None:
        self.name, self.kind, self.tag_keys, self.default = name, kind, tag_keys, {}
        self.values: dict[tuple[tuple[str, str], ...], Any] = {}

    def set_default_tags(self, tags: dict[str, str]) -> FakeMetric:
        self.default = tags
        return self

    def _key(self, tags: dict[str, str] | None) -> tuple[tuple[str, str], ...]:
        full = {**self.default, **(tags or {})}
        assert set(full) == set(self.tag_keys), (self.name, full)  # Ray refuses a missing or unknown tag
        return tuple(sorted((k, v) for k, v in full.items() if k != "app"))

    def inc(self, value: float, tags: dict[str, str] | None = None) -> None:
        assert self.kind == "counter" and value > 0
        k = self._key(tags)
        self.values[k] = self.values.get(k, 0.0) + value

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        assert self.kind == "histogram"
        self.values.setdefault(self._key(tags), []).append(value)

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        assert self.kind == "gauge"
        self.values[self._key(tags)] = value


def metrics(**kw: Any) -> FeedMetrics:
    return FeedMetrics("feed-test", factory=FakeMetric, **kw)


def values(m: FeedMetrics, name: str) -> dict[Any, Any]:
    return m.metrics[name].values


def test_every_metric_is_documented_in_the_module_table() -> None:
    import serve_apps.feed_metrics as fm

    assert all(name.startswith("adray_feed_") and name in fm.__doc__ for name in NAMES)
    m = metrics()
    assert all(m.metrics[name].tag_keys[0] == "app" for name in NAMES)


def test_an_answer_records_its_outcome_latencies_fallbacks_and_spend() -> None:
    ledger = FakeLedger(budget=10.0)
    g = graph(ledger=ledger, allocation=FakeStage("crossdqn@v0001", allocation([True, True, False, False])))
    req = request([("x", "auto", None, 0.4), ("y", "fixed", 1.0, 0.02)])
    out = asyncio.run(g.decide(req))
    m = metrics()
    m.answered(req, out.answer, ingress_ms=12.5)
    m.flush()
    assert out.answer["fallbacks"] == {"channel": "not deployed"}
    # a stage not deployed is the graph's configuration, not a failure: the outcome stays ok
    assert values(m, "adray_feed_requests_total") == {(("outcome", "ok"),): 1.0}
    assert values(m, "adray_feed_fallbacks_total") == {
        (("reason", "not_deployed"), ("scope", "request"), ("stage", "channel")): 1.0}
    count, total = values(m, "adray_feed_latency_ms_count"), values(m, "adray_feed_latency_ms_sum")
    assert {k[0][1] for k in count} == {s for s in out.answer["latency_ms"]} | {"ingress"}
    assert count[(("stage", "ingress"),)] == 1 and total[(("stage", "ingress"),)] == 12.5
    assert total[(("stage", "total"),)] == pytest.approx(out.answer["latency_ms"]["total"])
    bucket = values(m, "adray_feed_latency_ms_bucket")
    assert {le: bucket[(("le", le), ("stage", "ingress"))] for le in ("10.0", "20.0", "+Inf")} == {
        "10.0": 0, "20.0": 1, "+Inf": 1}
    # spend: the shown auto ad's price, as the ledger billed it; the fixed ad y is not billed
    assert values(m, "adray_feed_spend_total") == {(("advertiser", "adv-x"),): pytest.approx(ledger.spent["adv-x"])}


def test_the_latency_histogram_is_cumulative_prometheus_buckets_per_stage() -> None:
    """le is an upper bound (a value on a boundary counts in it), buckets and sums only grow, and a
    time past every boundary counts only in +Inf."""
    m = metrics()
    answer = {"latency_ms": {"total": 5.0, "ranking": None}, "fallbacks": {}, "bids": {}, "feed": []}
    m.answered({"ads": []}, answer, ingress_ms=0.5)
    m.flush()
    m.answered({"ads": []}, {**answer, "latency_ms": {"total": 6000.0}}, ingress_ms=float("nan"))
    m.flush()
    bucket = values(m, "adray_feed_latency_ms_bucket")
    total = [bucket[(("le", le), ("stage", "total"))] for le in LE_LABELS]
    assert total == [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2]  # 5.0 from le=5.0 on; 6000 in +Inf only
    assert [bucket[(("le", le), ("stage", "ingress"))] for le in LE_LABELS] == [1] * 13  # nan not counted
    assert values(m, "adray_feed_latency_ms_count") == {(("stage", "total"),): 2, (("stage", "ingress"),): 1}
    assert values(m, "adray_feed_latency_ms_sum") == {(("stage", "total"),): 6005.0, (("stage", "ingress"),): 0.5}
    assert not any(dict(k)["stage"] == "ranking" for k in bucket)  # a stage that did not run: no series


def test_failing_stages_count_as_fallback_requests_with_their_reasons() -> None:
    def boom(req: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("model exploded")

    g = graph(ranking=FakeStage("pwiser@v0001", boom), utility=FakeStage("drlput@v0001", boom),
              allocation=FakeStage("crossdqn@v0001", lambda r: boom(r), delay_s=2.0), ledger=None)
    req = request([("a", "fixed", 10.0, 0.3), ("b", "auto", None, 0.3)])
    out = asyncio.run(g.decide(req))
    m = metrics()
    m.answered(req, out.answer, ingress_ms=1.0)
    m.request("invalid")
    m.request("error")
    m.flush()
    assert values(m, "adray_feed_requests_total") == {(("outcome", "fallback"),): 1.0, (("outcome", "invalid"),): 1.0,
                                                      (("outcome", "error"),): 1.0}
    got = {dict(k)["stage"]: dict(k)["reason"] for k in values(m, "adray_feed_fallbacks_total")}
    assert got == {"ranking": "error", "utility": "error", "allocation": "timeout", "channel": "not_deployed",
                   "pacing": "no_ledger"}


@pytest.mark.parametrize(("key", "text", "tags"), [
    ("bidding:adv-1", "answered alpha nan: expected a finite number >= 0", ("bidding", "nonfinite", "advertiser")),
    ("pacing:adv-2", "budget -1.0 is not a finite number > 0; its auto-bidding ads not shown",
     ("pacing", "bad_settings", "advertiser")),
    ("pacing", "settle failed (TimeoutError: ); auto-bidding ads removed", ("pacing", "settle_failed", "request")),
    ("pacing", "ledger unavailable (RayActorError: dead); auto-bidding ads not shown",
     ("pacing", "ledger_unavailable", "request")),
    ("ranking", "non-finite answer (scores[0].pctr = nan)", ("ranking", "nonfinite", "request")),
    ("channel", "no journey in the request", ("channel", "no_input", "request")),
    ("surprise:x", "KeyError: 'q'", ("other", "error", "advertiser")),
])
def test_fallback_texts_map_to_a_bounded_set_of_tags(key: str, text: str, tags: tuple[str, str, str]) -> None:
    assert tuple(v for _, v in fallback_tags(key, text)) == tags


def test_refused_charges_settles_log_rows_and_budgets_are_sampled_off_the_request_path() -> None:
    g: FeedGraph = graph(ledger=FakeLedger(budget=0.025),
                         allocation=FakeStage("crossdqn@v0001", allocation([True, True, False, False])))
    for _ in range(2):  # the second charge passes the budget: refused
        asyncio.run(g.decide(request([("x", "auto", None, 0.4), ("y", "fixed", 1.0, 0.02)])))
    assert g.counters["refused"] == 1
    m = metrics(advertisers=AdvertiserTags(["adv-x"]))
    stats = LogStats(appended=10, flushed=7, dropped=2, rejected=1, pending=0, batch_files=1, files_closed=0,
                     bytes_written=100, last_error=None)
    pump = MetricsPump(m, lambda: dict(g.counters), lambda: stats, None, flush_s=3600)
    pump.tick({"adv-x": {"budget": 1.0, "spent": 0.25, "remaining": 0.75},
               "adv-y": {"budget": 2.0, "spent": 2.0, "remaining": 0.0},
               "adv-z": {"budget": 3.0, "spent": 1.0, "remaining": 2.0}})
    pump.tick()  # nothing new: nothing more counted
    pump._stop.set()
    assert values(m, "adray_feed_refused_charges_total") == {(): 1.0}
    assert values(m, "adray_feed_settles_total") == {(("result", "ok"),): 2.0}
    assert values(m, "adray_feed_log_rows_written_total") == {(): 7.0}
    assert values(m, "adray_feed_log_rows_dropped_total") == {(("reason", "buffer_full"),): 2.0,
                                                              (("reason", "unconvertible"),): 1.0}
    # only the configured advertiser has its own series; the others are summed under "other"
    assert values(m, "adray_feed_budget_remaining") == {(("advertiser", "adv-x"),): 0.75,
                                                        (("advertiser", "other"),): 2.0}
    assert values(m, "adray_feed_budget_spent")[(("advertiser", "other"),)] == 3.0


def test_advertiser_series_are_bounded() -> None:
    tag = AdvertiserTags(max_seen=2)
    assert [tag(a) for a in ("a", "b", "c", "a", "d")] == ["a", "b", "other", "a", "other"]
    m = metrics()
    m.shed("deadline")
    m.shed("made-up")
    m.flush()
    assert values(m, "adray_feed_shed_total") == {(("reason", "deadline"),): 1.0, (("reason", "other"),): 1.0}
    assert values(m, "adray_feed_requests_total") == {(("outcome", "shed"),): 2.0}


def test_the_grafana_dashboard_asks_for_the_metrics_as_prometheus_names_them() -> None:
    import json
    import re

    from serve_apps.feed_metrics import SPECS
    from tests.conftest import REPO

    dash = json.loads((REPO / "serve_apps" / "grafana" / "adray_feed_dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    asked = {n for e in exprs for n in re.findall(r"\bray_adray_feed_\w+", e)}
    known = {f"ray_{name}" for name, _, _, _ in SPECS}
    assert asked <= known, asked - known  # a misspelt name would be an empty panel
    # every metric has a panel (the latency histogram's through its buckets)
    assert set(NAMES) - {"adray_feed_latency_ms_sum", "adray_feed_latency_ms_count"} == {n[4:] for n in asked}
    assert all("$app" in e for e in exprs)
