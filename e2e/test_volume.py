"""Volume control without silent loss, in the real Envoy: trace-consistent sampling
across two hops, sampling rates, budgets with exact suppression counts, gap-free
sequence numbers, accounting records that match Envoy's stats, rate-limit usage."""

from __future__ import annotations

import copy
import shutil
import subprocess
import time
import uuid

import harness
import pytest
import yaml

SHIPPED = yaml.safe_load((harness.E2E / "envoy.yaml").read_text())
SHIPPED_PLUGIN = harness.plugin_config(SHIPPED)


def h2load(stack, n: int, path: str, *headers: str, status_class: str = "2xx") -> None:
    """`n` requests over h2c, every one answered with a status of `status_class`."""
    exe = shutil.which("h2load")
    assert exe, "nghttp2-client is installed by scripts/setup.sh"
    args = [exe, "-n", str(n), "-c", "4", "-m", "4", "-t", "1"]
    for h in headers:
        args += ["-H", h]
    out = subprocess.run(args + [f"http://127.0.0.1:{stack.listen_port}{path}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"{n} done" in out.stdout and f" {n} {status_class}" in out.stdout, out.stdout[-600:]


def accounting(envoy) -> list[dict]:
    return [r for r in envoy.records() if r["kind"] == "accounting"]


def wait_accounted(envoy, requests: int, timeout: float = 15.0) -> list[dict]:
    """Waits until the accounting records cover at least `requests` requests."""
    deadline = time.monotonic() + timeout
    while True:
        acc = accounting(envoy)
        # Each report writes its suppressed records before its accounting record: once the
        # accounting covers every request, every record of theirs is in the log.
        if sum(a["totals"]["requests"] for a in acc) >= requests or time.monotonic() > deadline:
            return acc
        time.sleep(0.2)


def prometheus(envoy) -> dict[str, int]:
    out = {}
    for line in envoy.admin("/stats/prometheus").splitlines():
        if line.startswith("meshaudit_"):
            name, _, value = line.rpartition(" ")
            out[name] = int(float(value))
    return out


def assert_gap_free(records: list[dict]) -> None:
    streams: dict[str, list[int]] = {}
    for r in records:
        if "stream" in r:
            streams.setdefault(r["stream"], []).append(r["seq"])
    assert streams, "records carry a stream id"
    for stream, seqs in streams.items():
        assert sorted(seqs) == list(range(len(seqs))), f"stream {stream} has gaps or duplicates: {sorted(seqs)[:20]}"


def test_two_hops_keep_the_same_traces():
    plugin = {
        "rules": [{"name": "products", "match": {"paths": [{"prefix": "/products"}]}, "action": "sample", "sample_rate": 0.5}]
    }
    inner = harness.Stack(plugin=plugin)

    def to_inner(config):
        cluster = config["static_resources"]["clusters"][0]
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        endpoint["address"]["socket_address"]["port_value"] = inner.listen_port
        config["node"]["id"] = "outer-hop"

    outer = harness.Stack(plugin=plugin, adjust=to_inner)
    try:
        traces = [uuid.uuid4().hex for _ in range(200)]
        for tid in traces:
            assert outer.request("GET", f"/products/{tid[:6]}", {"traceparent": f"00-{tid}-00f067aa0ba902b7-01"})[0] == 200
        for envoy in (inner.envoy, outer.envoy):
            envoy.wait_records(lambda r: False, timeout=0.5)

        def kept(envoy):
            return {r["trace"]["trace_id"] for r in envoy.records() if r["kind"] == "access"}

        kept_inner, kept_outer = kept(inner.envoy), kept(outer.envoy)
        assert kept_inner == kept_outer, "both hops keep exactly the same traces"
        assert 60 <= len(kept_inner) <= 140, f"kept {len(kept_inner)} of 200 at 0.5"
        assert kept_inner == {t for t in traces if harness.sampled_in(t, 0.5)}
    finally:
        outer.stop()
        inner.stop()


@pytest.fixture(scope="module")
def routine():
    plugin = {"default_sample_rate": 0.01, "reporting": {"interval_seconds": 1}}
    s = harness.Stack(plugin=plugin, adjust=lambda c: harness.add_direct_route(c, "/routine", "routine"))
    yield s
    s.stop()


def test_one_percent_of_routine_traffic_and_accounting_that_adds_up(routine):
    n = 6000
    h2load(routine, n, "/routine/items")
    acc = wait_accounted(routine.envoy, n)
    records = [r for r in routine.envoy.records() if r["kind"] == "access"]
    totals = {k: sum(a["totals"][k] for a in acc) for k in ("requests", "records", "sampled_out", "dropped", "suppressed")}
    assert totals["requests"] == n
    assert totals["records"] == len(records)
    assert totals["sampled_out"] == n - len(records), "nothing the plugin did not write goes uncounted"
    # Binomial(6000, 0.01): mean 60, sd 7.7; allow about 4 sd.
    assert 30 <= len(records) <= 95, f"{len(records)} records at 1%"
    assert all(r["why"]["sampled_by"] == "request_id" for r in records), "Envoy's x-request-id keys the sample"
    assert_gap_free(routine.envoy.records())
    # Envoy's stats show the same counts.
    prom = prometheus(routine.envoy)
    assert prom['meshaudit_rule_requests{meshaudit_rule="_default"}'] == n
    assert prom['meshaudit_rule_sampled_out{meshaudit_rule="_default"}'] == totals["sampled_out"]
    assert prom.get('meshaudit_rule_records{meshaudit_rule="_default"}', 0) == len(records)
    assert prom['meshaudit_kind_records{meshaudit_kind="access"}'] == len(records)


def test_denial_flood_within_a_budget_is_aggregated_exactly():
    plugin = copy.deepcopy(SHIPPED_PLUGIN)
    plugin["reporting"] = {"interval_seconds": 1}
    plugin["budgets"] = {"security": {"records_per_second": 5, "burst": 10}}
    s = harness.Stack(plugin=plugin)
    try:
        n = 400
        h2load(s, n, "/admin/forbidden/keys", status_class="4xx")
        acc = wait_accounted(s.envoy, n)
        denied = [r for r in s.envoy.records() if r["kind"] == "denied"]
        suppressed = [r for r in s.envoy.records() if r["kind"] == "suppressed"]
        assert 10 <= len(denied) < 60, f"{len(denied)} denials written within the budget"
        assert suppressed, "what the budget refused is reported"
        for r in suppressed:
            assert r["suppressed"]["kind"] == "denied"
            assert r["suppressed"]["rule"] == "admin-api"
            assert r["suppressed"]["caller"] == "127.0.0.1", "grouped by caller (the source IP without mTLS)"
            assert r["suppressed"]["first"] <= r["suppressed"]["last"]
        assert sum(r["suppressed"]["count"] for r in suppressed) == n - len(denied), "exactly what was not written"
        assert sum(a["totals"]["suppressed"] for a in acc) == n - len(denied)
        assert sum(a["by_rule"].get("admin-api", {}).get("suppressed", 0) for a in acc) == n - len(denied)
        assert_gap_free(s.envoy.records())
        prom = prometheus(s.envoy)
        assert prom['meshaudit_rule_suppressed{meshaudit_rule="admin-api"}'] == n - len(denied)
        assert prom['meshaudit_kind_records{meshaudit_kind="suppressed"}'] == len(suppressed)
    finally:
        s.stop()


def test_routine_flood_cannot_displace_security_events():
    plugin = {
        "default_sample_rate": 1.0,
        "reporting": {"interval_seconds": 1},
        "budgets": {"routine": {"records_per_second": 1, "burst": 5}, "security": {"records_per_second": 100, "burst": 100}},
    }
    s = harness.Stack(plugin=plugin, adjust=lambda c: harness.add_direct_route(c, "/routine", "routine"))
    try:
        h2load(s, 2000, "/routine/x")
        status, _, _ = s.request("GET", "/admin/forbidden/now", {"x-request-id": "deny-after-flood"})
        assert status == 403
        found = s.envoy.wait_records(lambda r: r.get("request", {}).get("id") == "deny-after-flood")
        assert [r["kind"] for r in found] == ["denied"]
        acc = wait_accounted(s.envoy, 2001)
        routine_written = [r for r in s.envoy.records() if r.get("request", {}).get("path", "").startswith("/routine/")]
        assert 5 <= len(routine_written) < 100, "the routine budget: its burst, then one a second"
        assert sum(a["totals"]["suppressed"] for a in acc) == 2000 - len(routine_written), "the routine flood hit its own budget"
    finally:
        s.stop()


def ratelimited(config):
    """local_ratelimit on /admin/limited (3 calls per minute), before the plugin."""
    hcm = harness.http_connection_manager(config)
    hcm["http_filters"].insert(
        0,
        {
            "name": "envoy.filters.http.local_ratelimit",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                "stat_prefix": "unlimited",
            },
        },
    )
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    percent = {"numerator": 100, "denominator": "HUNDRED"}
    routes.insert(
        0,
        {
            "name": "limited",
            "match": {"prefix": "/admin/limited"},
            "route": {"cluster": "backend"},
            "typed_per_filter_config": {
                "envoy.filters.http.local_ratelimit": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                    "stat_prefix": "admin_limited",
                    "token_bucket": {"max_tokens": 3, "tokens_per_fill": 3, "fill_interval": "60s"},
                    "filter_enabled": {"runtime_key": "rl_enabled", "default_value": percent},
                    "filter_enforced": {"runtime_key": "rl_enforced", "default_value": percent},
                    "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
                }
            },
        },
    )


def test_rate_limited_calls_to_a_sensitive_endpoint():
    s = harness.Stack(adjust=ratelimited)
    try:
        statuses = [s.request("GET", "/admin/limited/op", {"x-request-id": f"rl-{i}"})[0] for i in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        records = [s.envoy.wait_records(lambda r, i=i: r.get("request", {}).get("id") == f"rl-{i}")[0] for i in range(5)]
        assert [r["kind"] for r in records] == ["access", "access", "access", "rate_limited", "rate_limited"]
        assert [r["rate_limit"].get("remaining") for r in records[:3]] == ["2", "1", "0"]
        assert all(r["rate_limit"]["limit"] == "3" for r in records[:3])
        assert [r["rate_limit"]["window_calls"] for r in records] == [1, 2, 3, 4, 5], "the plugin's own count per caller"
        limited = records[3]
        assert limited["response"]["code"] == 429
        assert limited["response"]["code_details"] == "local_rate_limited"
        assert "RL" in limited["response"]["flags"]
        assert limited["why"]["reason"] == "rule" and limited["why"]["rule"] == "admin-api"
        assert limited["source"]["address"].startswith("127.0.0.1:"), "the caller"
        assert limited["peer"] == {"mtls": False}
    finally:
        s.stop()
