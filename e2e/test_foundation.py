"""The foundation end to end: the built meshaudit.wasm in a real Envoy 1.40.

Every test sends real HTTP through Envoy and asserts on the records Envoy logged.
"""

import hashlib
import json
import re
import uuid

import harness
import pytest
import yaml

SHIPPED = yaml.safe_load((harness.E2E / "envoy.yaml").read_text())
SHIPPED_PLUGIN_JSON = harness.wasm_filter(SHIPPED)["typed_config"]["config"]["configuration"]["value"]
RATE = json.loads(SHIPPED_PLUGIN_JSON)["default_sample_rate"]


def rid() -> str:
    return f"e2e-{uuid.uuid4()}"


def trace_id(sampled: bool, rate: float = RATE) -> str:
    """A W3C trace id whose sampling decision at `rate` is known in advance."""
    while True:
        candidate = uuid.uuid4().hex
        if harness.sampled_in(candidate, rate) == sampled:
            return candidate


def traceparent(tid: str) -> str:
    return f"00-{tid}-00f067aa0ba902b7-01"


def record_for(stack, request_id: str, timeout: float = 10.0) -> dict:
    found = stack.envoy.wait_exactly(lambda r: r.get("request", {}).get("id") == request_id, 1, timeout, settle=0.2)
    assert len(found) == 1, f"expected exactly one record for {request_id}, got {found}"
    return found[0]


def assert_no_record(stack, request_id: str) -> None:
    """Proves a negative: a later audited request's record is written after the earlier one
    would have been (one worker, on_log in order), so if it is there and ours is not, ours never will be."""
    marker = rid()
    status, _, _ = stack.request("GET", "/admin/marker", {"x-request-id": marker})
    assert status == 200
    record_for(stack, marker)
    assert not [r for r in stack.envoy.records() if r.get("request", {}).get("id") == request_id]


def test_config_applied_once_with_the_digest_of_the_config(stack):
    configs = stack.envoy.wait_exactly(lambda r: r["kind"] == "config_applied", 1)
    assert len(configs) == 1, "one record per change per process, not one per worker VM"
    c = configs[0]
    assert c["v"] == 1
    assert c["instance"] == "meshaudit-demo", "defaults to Envoy's node id"
    assert c["config"]["digest"] == "sha256:" + hashlib.sha256(SHIPPED_PLUGIN_JSON.encode()).hexdigest()
    assert c["config"]["version"] == 1
    assert "previous_digest" not in c["config"]
    assert c["config"]["rules"] == [r["name"] for r in json.loads(SHIPPED_PLUGIN_JSON)["rules"]]
    assert c["config"]["coverage"] == {"always_audit_security_outcomes": True, "audit_policies": True, "records_hidden": False}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", c["ts"])


def test_sensitive_endpoint_is_audited_with_identity_route_and_trace(stack):
    request_id, tid = rid(), trace_id(sampled=False)
    status, _, _ = stack.request(
        "POST",
        "/admin/users?token=s3cr3t-value&x=1",
        {
            "x-request-id": request_id,
            "user-agent": "e2e-client/1.0",
            "authorization": "Bearer eyJ.secret-token.sig",
            "traceparent": traceparent(tid),
            "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
        },
        body=b"{}",
    )
    assert status == 200
    r = record_for(stack, request_id)
    assert r["v"] == 1
    assert r["kind"] == "access"
    assert r["instance"] == "meshaudit-demo"
    assert r["why"] == {"reason": "rule", "rule": "admin-api", "action": "audit", "sample_rate": 1}
    assert r["request"]["method"] == "POST"
    assert r["request"]["path"] == "/admin/users"
    assert r["request"]["query_removed"] is True
    assert r["request"]["canonical_path"] == "/admin/users"
    assert r["request"]["authority"] == f"127.0.0.1:{stack.listen_port}"
    assert r["request"]["headers"] == {
        "user-agent": "e2e-client/1.0",
        "authorization": "Bearer [masked, 27 bytes]",
    }
    assert r["response"] == {"code": 200, "code_details": "via_upstream"}
    assert r["trace"] == {"trace_id": tid, "span_id": "00f067aa0ba902b7", "b3_trace_id": "80f198ee56343ba864fe8b2a57d3eff7"}
    assert r["route"] == {"name": "backend", "cluster": "backend"}
    assert re.fullmatch(r"127\.0\.0\.1:\d+", r["source"]["address"])
    assert isinstance(r["duration_ms"], int) and 0 <= r["duration_ms"] < 10_000
    log = stack.envoy.log()
    assert "s3cr3t-value" not in log and "secret-token" not in log, "query and credentials never logged"


@pytest.mark.parametrize(
    "spelling",
    ["//admin/keys", "/%61dmin/keys", "/admin;jsessionid=1/keys", "/x/../admin/keys", "/ADMIN/../admin/keys", "/%2Fadmin/keys"],
)
def test_admin_rule_cannot_be_escaped_by_spelling(stack, spelling):
    request_id = rid()
    stack.request("GET", spelling, {"x-request-id": request_id, "traceparent": traceparent(trace_id(False))})
    r = record_for(stack, request_id)
    assert r["why"]["rule"] == "admin-api"
    assert r["request"]["canonical_path"] == "/admin/keys"
    # The raw path is recorded as sent, but for a `;` parameter's value (a session id here).
    assert r["request"]["path"] == spelling.replace("jsessionid=1", "jsessionid=[masked, 1 bytes]")


def test_routine_traffic_is_sampled_by_trace_id(stack):
    out_id, in_id = rid(), rid()
    in_trace = trace_id(sampled=True)
    assert stack.request("GET", "/products/1", {"x-request-id": out_id, "traceparent": traceparent(trace_id(False))})[0] == 200
    assert stack.request("GET", "/products/2", {"x-request-id": in_id, "traceparent": traceparent(in_trace)})[0] == 200
    r = record_for(stack, in_id)
    assert r["kind"] == "access"
    assert r["why"] == {"reason": "default_sample", "action": "sample", "sample_rate": RATE, "sampled_by": "trace_id"}
    assert r["trace"]["trace_id"] == in_trace
    assert_no_record(stack, out_id)


def test_routine_traffic_without_trace_is_sampled_by_request_id(stack):
    kept = [i for i in (f"req-{n}" for n in range(100_000)) if harness.sampled_in(i, RATE)][:1]
    request_id = kept[0]
    stack.request("GET", "/products/3", {"x-request-id": request_id})
    r = record_for(stack, request_id)
    assert r["why"]["sampled_by"] == "request_id"


def test_health_checks_are_dropped(stack):
    request_id = rid()
    # Sampled in by trace id: only the drop rule can keep it out.
    assert stack.request("GET", "/healthz", {"x-request-id": request_id, "traceparent": traceparent(trace_id(True))})[0] == 200
    assert_no_record(stack, request_id)


def test_not_found_and_server_errors_are_audited_by_status(stack):
    for path, rule, code in [("/status/404", "not-found", 404), ("/status/503", "server-errors", 503)]:
        request_id = rid()
        assert stack.request("GET", path, {"x-request-id": request_id, "traceparent": traceparent(trace_id(False))})[0] == code
        r = record_for(stack, request_id)
        assert r["why"]["rule"] == rule
        assert r["response"]["code"] == code
        assert r["kind"] == "access"


def test_rbac_denial_before_the_plugin_is_audited_from_on_log(stack):
    request_id = rid()
    status, _, body = stack.request("GET", "/admin/forbidden/x", {"x-request-id": request_id})
    assert (status, body) == (403, b"RBAC: access denied")
    r = record_for(stack, request_id)
    assert r["kind"] == "denied"
    assert r["response"]["code"] == 403
    assert r["response"]["code_details"] == "rbac_access_denied_matched_policy[ns[demo]-policy[deny-forbidden]-rule[0]]"
    assert r["response"]["replied_before_plugin"] is True
    assert r["request"]["canonical_path"] == "/admin/forbidden/x"
    assert r["request"]["method"] == "GET"


def test_security_outcomes_from_upstream_are_always_audited(stack):
    # No rule matches these paths and their traces are sampled out: only the built-in reason records them.
    for path, kind in [("/status/401", "auth_failure"), ("/status/403", "denied")]:
        request_id = rid()
        stack.request("GET", path, {"x-request-id": request_id, "traceparent": traceparent(trace_id(False))})
        r = record_for(stack, request_id)
        assert r["kind"] == kind
        assert r["why"]["reason"] == "security_outcome"
        assert r["response"]["code_details"] == "via_upstream"
        assert "replied_before_plugin" not in r["response"]


def test_direct_local_reply_is_audited(stack):
    request_id = rid()
    status, _, body = stack.request("GET", "/direct", {"x-request-id": request_id})
    assert (status, body) == (200, b"answered by Envoy\n")
    r = record_for(stack, request_id)
    assert r["why"]["rule"] == "direct-replies"
    assert r["response"]["code_details"] == "direct_response"
    assert r["route"] == {"name": "direct"}, "no cluster: Envoy answered itself"


def test_glob_and_method_rule(stack):
    put_id, get_id = rid(), rid()
    stack.request(
        "PUT", "/api/v1/users/42/roles", {"x-request-id": put_id, "traceparent": traceparent(trace_id(False))}, body=b"{}"
    )
    stack.request("GET", "/api/v1/users/42/roles", {"x-request-id": get_id, "traceparent": traceparent(trace_id(False))})
    assert record_for(stack, put_id)["why"]["rule"] == "user-roles"
    assert_no_record(stack, get_id)


def test_non_utf8_and_control_bytes_stay_one_valid_line(stack):
    """What Envoy's HTTP/1 codec lets through (it refuses DEL, NUL and raw non-ASCII in
    the path with a 400 before any filter): obs-text bytes, C1 controls, U+2028, quotes."""
    request_id = rid()
    raw = (
        b"GET /admin/%ff%00%C3%A9\\x HTTP/1.1\r\nHost: h\r\n"
        b'user-agent: ua\xff\xfe"\\\xc2\x85\xe2\x80\xa8\xe2\x80\xaeend\r\n'
        b"x-request-id: " + request_id.encode() + b"\r\nConnection: close\r\n\r\n"
    )
    response = stack.raw(raw)
    assert response.startswith(b"HTTP/1.1 200"), response[:200]
    r = record_for(stack, request_id)
    assert r["request"]["headers"]["user-agent"] == 'ua\\xff\\xfe"\\\x85\u2028\u202eend'
    assert r["request"]["path"] == "/admin/%ff%00%C3%A9\\x"
    assert r["request"]["canonical_path"] == "/admin/%FF%00%C3%A9/x"
    line = next(text for text in stack.envoy.log().splitlines() if request_id in text)
    for raw_char in ("\u2028", "\u202e", "\x85"):
        assert raw_char not in line, f"{raw_char!r} must be escaped in the log line itself"
    # Envoy is still serving.
    assert stack.request("GET", "/healthz")[0] == 200


def test_duration_is_the_requests_own(stack):
    """The duration comes from Envoy (in the attribute batch); a unit slip would show here."""
    request_id = rid()
    status, _, _ = stack.request("GET", "/admin/slow?delay_ms=300", {"x-request-id": request_id})
    assert status == 200
    r = record_for(stack, request_id)
    assert 300 <= r["duration_ms"] < 3_000, r["duration_ms"]


def test_every_record_came_from_one_attribute_batch(stack):
    """Runs last: after direct replies, RBAC denials, 404s, 5xx and odd bytes, Envoy answered
    every batch (the attributes it assumes present were present)."""
    assert stack.envoy.records()
    assert harness.BATCH_FALLBACK not in stack.envoy.log()
