"""Hand-off to Envoy's access loggers: the plugin sets each request record as filter
state in on_log, and Envoy's file access logger (e2e/envoy.yaml) writes exactly those."""

import json
import time

import harness
import pytest


@pytest.fixture(scope="module")
def stack():
    s = harness.Stack()
    yield s
    s.stop()


def access_log(stack) -> list[dict]:
    if not stack.audit_log_path.exists():
        return []
    return [json.loads(line) for line in stack.audit_log_path.read_text().splitlines() if line]


def test_access_log_holds_exactly_the_records_the_plugin_decided(stack):
    sent = {
        "ho-admin": ("GET", "/admin/users"),  # audit rule
        "ho-denied": ("GET", "/admin/forbidden/x"),  # RBAC local reply, before the plugin
        "ho-direct": ("GET", "/direct"),  # direct response
        "ho-404": ("GET", "/status/404"),  # status rule
        "ho-health": ("GET", "/healthz"),  # dropped by a rule
    }
    sampled_out = [f"ho-routine-{i}" for i in range(300) if not harness.sampled_in(f"ho-routine-{i}", 0.01)][:20]
    for request_id, (method, path) in sent.items():
        stack.request(method, path, {"x-request-id": request_id})
    for request_id in sampled_out:
        stack.request("GET", "/products/1", {"x-request-id": request_id})
    marker = "ho-marker"
    stack.request("GET", "/admin/marker", {"x-request-id": marker})
    deadline = time.monotonic() + 15  # Envoy flushes access logs on its own schedule
    while time.monotonic() < deadline and not any(r["request"]["id"] == marker for r in access_log(stack)):
        time.sleep(0.2)
    stack.envoy.wait_records(lambda r: r.get("request", {}).get("id") == marker)

    logged = [r for r in stack.envoy.records() if r.get("request", {}).get("id", "").startswith("ho-")]
    handed_off = [r for r in access_log(stack) if r["request"]["id"].startswith("ho-")]
    assert handed_off == logged, "the access log and the plugin's own log carry the same records, in order"
    ids = {r["request"]["id"] for r in handed_off}
    assert ids == {"ho-admin", "ho-denied", "ho-direct", "ho-404", marker}
    assert "ho-health" not in ids and not ids & set(sampled_out), "nothing for dropped or sampled-out requests"
    denied = next(r for r in handed_off if r["request"]["id"] == "ho-denied")
    assert denied["kind"] == "denied" and denied["response"]["replied_before_plugin"] is True, (
        "set in on_log, the record reaches the access logger even for a local reply"
    )
