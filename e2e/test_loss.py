"""Nothing lost without a trace. When a plugin's configuration goes away (SIGTERM, a listener
update replacing it), each worker writes its partial interval (its suppressed and accounting
records) before it goes: the reporting interval here is longer than the tests, so every count
comes from that last report, and the accounting must add up to what Envoy served. And when
Envoy's log level hides the records, they are counted as hidden, and the plugin says so."""

from __future__ import annotations

import copy
import time

import harness
import pytest
from test_volume import SHIPPED_PLUGIN, h2load

FLOOD = 2000


def flood_plugin(**changes) -> dict:
    """The shipped configuration, with a tight security budget (most denials of a flood are
    suppressed) and a reporting interval no test reaches."""
    plugin = copy.deepcopy(SHIPPED_PLUGIN)
    plugin["reporting"] = {"interval_seconds": 600}
    plugin["budgets"] = {"security": {"records_per_second": 5, "burst": 10}}
    plugin.update(changes)
    return plugin


def assert_every_request_accounted(records: list[dict], served: int) -> None:
    """The accounting identity, to the last request: every request Envoy served is in an
    accounting record, as written, sampled out, dropped, suppressed or hidden, and every
    suppressed one in a `suppressed` record."""
    accounting = [r for r in records if r["kind"] == "accounting"]
    fields = ("requests", "records", "sampled_out", "dropped", "suppressed", "hidden")
    totals = {k: sum(a["totals"][k] for a in accounting) for k in fields}
    assert totals["requests"] == served, totals
    assert sum(totals[k] for k in fields[1:]) == served, totals
    assert totals["suppressed"] > 0, "the budget refused most of the flood"
    suppressed = [r for r in records if r["kind"] == "suppressed"]
    assert sum(r["suppressed"]["count"] for r in suppressed) == totals["suppressed"]
    request_records = [r for r in records if "request" in r]
    assert len(request_records) == totals["records"]


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_reports_the_partial_interval(workers):
    s = harness.Stack(plugin=flood_plugin(), concurrency=workers)
    try:
        h2load(s, FLOOD, "/admin/forbidden/keys", status_class="4xx")
        served = harness.stat(s.envoy, "http.ingress.downstream_rq_total")
        assert served == FLOOD
        assert not [r for r in s.envoy.records() if r["kind"] == "accounting"], "no interval has ended yet"
    finally:
        s.stop()  # SIGTERM
    assert s.envoy.proc.returncode == 0
    records = s.envoy.records()
    assert_every_request_accounted(records, FLOOD)
    streams = {r["stream"] for r in records if r["kind"] == "accounting"}
    assert 1 <= len(streams) <= workers, "one last report per worker that served traffic"


@pytest.mark.parametrize("change", ["configuration", "vm_id"])
def test_a_listener_update_reports_the_replaced_configurations_partial_interval(tmp_path, change):
    """The listener is replaced with a new plugin configuration, or the same one in a new VM
    (another `vm_id`), with a 1 s drain: Envoy ends the old roots once the old listener has
    drained, and each writes its last report."""
    upstream = harness.Upstream()
    lds = harness.LdsConfig(tmp_path, upstream.port)
    lds.push(flood_plugin())
    envoy = harness.Envoy(lds.bootstrap, tmp_path, extra_args=("--drain-time-s", "1"), concurrency=2)
    stack = type("S", (), {"listen_port": lds.listen_port})()
    try:
        envoy.wait_ready()
        first = envoy.wait_exactly(lambda r: r["kind"] == "config_applied", 1)[0]
        h2load(stack, FLOOD, "/admin/forbidden/keys", status_class="4xx")
        served = harness.stat(envoy, "http.ingress.downstream_rq_total")
        assert served == FLOOD
        if change == "vm_id":
            vm = harness.wasm_filter({"static_resources": {"listeners": [lds.listener]}})["typed_config"]["config"]["vm_config"]
            vm["vm_id"] = "meshaudit-next"
        lds.push(flood_plugin(instance_id="after-update"))
        update = envoy.wait_records(lambda r: r["kind"] == "config_applied" and r["instance"] == "after-update")
        assert update, envoy.log()[-3000:]
        if change == "configuration":
            assert update[0]["config"]["previous_digest"] == first["config"]["digest"]
        # Bounded: the old listener drains for a second, then its roots end and report.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if sum(r["totals"]["requests"] for r in envoy.records() if r["kind"] == "accounting") >= FLOOD:
                break
            time.sleep(0.2)
        records = envoy.records()
        assert_every_request_accounted(records, FLOOD)
        assert {r["instance"] for r in records if r["kind"] == "accounting"} == {first["instance"]}, (
            "the flood is reported by the configuration that served it"
        )
        assert envoy.proc.poll() is None
    finally:
        envoy.stop()
        upstream.stop()


def test_records_a_log_level_hides_are_counted_and_the_condition_is_said():
    """`POST /logging?wasm=error` (what `istioctl proxy-config log --level wasm:error` does):
    records at `warn` no longer reach Envoy's log, which tells the plugin nothing when it
    drops them. The plugin reads the level at every report: from then on its records are
    counted as hidden, its own records go out at `critical`, and a gauge says so."""
    plugin = {
        "reporting": {"interval_seconds": 1},
        "rules": [{"name": "admin", "match": {"paths": [{"prefix": "/admin"}]}, "action": "audit"}],
    }
    s = harness.Stack(plugin=plugin)
    log_level = lambda hidden: lambda r: r["kind"] == "log_level" and r["log_level"]["records_hidden"] is hidden  # noqa: E731

    def hidden_total() -> int:
        return sum(r["totals"]["hidden"] for r in s.envoy.records() if r["kind"] == "accounting")

    try:
        assert s.request("GET", "/admin/before", {"x-request-id": "level-before"})[0] == 200
        s.envoy.wait_records(lambda r: r.get("request", {}).get("id") == "level-before")
        s.envoy.admin("/logging?wasm=error", method="POST")
        said = s.envoy.wait_records(log_level(True), timeout=10)
        assert len(said) == 1, s.envoy.log()[-2000:]
        assert said[0]["log_level"] == {"envoy": "error", "records": "warn", "records_hidden": True}
        assert "[critical]" in next(line for line in s.envoy.log().splitlines() if '"kind":"log_level"' in line)
        for i in range(20):
            assert s.request("GET", f"/admin/hidden-{i}", {"x-request-id": f"hidden-{i}"})[0] == 200
        deadline = time.monotonic() + 15
        while hidden_total() < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert hidden_total() == 20, "every hidden record is counted, in accounting records Envoy still shows"
        assert not [r for r in s.envoy.records() if r.get("request", {}).get("id", "").startswith("hidden-")]
        assert harness.stat(s.envoy, "wasmcustom.meshaudit.rule.admin.hidden") == 20
        assert harness.stat(s.envoy, "wasmcustom.meshaudit.log_hidden") == 1
        # Back to Envoy's default: said once more, and records are written again.
        s.envoy.admin("/logging?wasm=warning", method="POST")
        assert s.envoy.wait_records(log_level(False), timeout=10)
        assert s.request("GET", "/admin/after", {"x-request-id": "level-after"})[0] == 200
        assert s.envoy.wait_records(lambda r: r.get("request", {}).get("id") == "level-after")
        assert harness.stat(s.envoy, "wasmcustom.meshaudit.log_hidden") == 0
        accounting = [r for r in s.envoy.records() if r["kind"] == "accounting"]
        t = {
            k: sum(a["totals"][k] for a in accounting)
            for k in ("requests", "records", "hidden", "sampled_out", "dropped", "suppressed")
        }
        assert (
            t["requests"] <= 22
            and t["records"] + t["hidden"] + t["sampled_out"] + t["dropped"] + t["suppressed"] == t["requests"]
        )
    finally:
        s.stop()


def test_config_applied_states_what_lowers_coverage(tmp_path):
    """Envoy started with its wasm log level above the records' (`--component-log-level
    wasm:error`), and a configuration that turns off the security-outcome override and the
    AUDIT policies: the configuration trail says all three, in a record Envoy still shows
    (written at `critical`)."""
    upstream = harness.Upstream()
    listen = harness.free_port()
    config = harness.load_config(upstream.port, listen, harness.free_port())
    harness.set_plugin_config(config, {"always_audit_security_outcomes": False, "authorization": {"audit_policies": False}})
    envoy = harness.Envoy(config, tmp_path, extra_args=("--component-log-level", "wasm:error"))
    try:
        envoy.wait_ready()
        applied = envoy.wait_exactly(lambda r: r["kind"] == "config_applied", 1)
        assert len(applied) == 1, envoy.log()[-2000:]
        assert applied[0]["config"]["coverage"] == {
            "always_audit_security_outcomes": False,
            "audit_policies": False,
            "records_hidden": True,
        }
    finally:
        envoy.stop()
        upstream.stop()
