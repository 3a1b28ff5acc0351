"""`meshaudit explain` against the real plugin: for each request sent through Envoy under the
e2e configuration (e2e/envoy.yaml), explain's verdict (recorded or not, the rule, the kind)
is what Envoy recorded."""

import json
import subprocess
import uuid

import harness
import pytest
import yaml
from test_manifests import CLI, ROOT


def trace_id(sampled: bool) -> str:
    while True:
        tid = uuid.uuid4().hex
        if harness.sampled_in(tid, 0.01) == sampled:
            return tid


# (method, path, extra headers, sampled-in trace): rules, their methods, spellings the
# canonical path folds, statuses the rules match, and routine traffic in and out of the sample.
REQUESTS = [
    ("GET", "/healthz", {}, True),
    ("GET", "/admin/users", {"user-agent": "e2e"}, False),
    ("GET", "/ADMIN/x", {}, False),
    ("GET", "/api/v1/../../admin/x", {}, False),
    ("DELETE", "/api/v1/users/7/roles", {}, False),
    ("GET", "/api/v1/users/7/roles", {}, False),
    ("GET", "/api/v1/users/7/roles", {}, True),
    ("PUT", "/api/v1/users//7/roles?x=1", {}, False),
    ("GET", "/status/404", {}, False),
    ("GET", "/status/503", {}, False),
    ("GET", "/status/403", {}, False),
    ("GET", "/healthz/../status/500", {}, False),
    ("POST", "/orders", {}, False),
    ("POST", "/orders", {}, True),
]


@pytest.fixture(scope="module")
def setup():
    subprocess.run(["cargo", "build", "--quiet", "--features", "cli", "--bin", "meshaudit"], cwd=ROOT, check=True, timeout=600)
    stack = harness.Stack()
    yield stack
    stack.stop()


def explain(config_file, method, path, headers, status) -> list[str]:
    args = [str(CLI), "explain", str(config_file), "--request", f"{method} {path}", "--status", str(status)]
    for name, value in headers.items():
        args += ["--header", f"{name}:{value}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_explain_agrees_with_what_envoy_recorded(setup, tmp_path):
    stack = setup
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(harness.plugin_config(yaml.safe_load((harness.E2E / "envoy.yaml").read_text()))))
    sent = []
    for method, path, extra, sampled in REQUESTS:
        rid = str(uuid.uuid4())
        headers = {"x-request-id": rid, "traceparent": f"00-{trace_id(sampled)}-00f067aa0ba902b7-01", **extra}
        status, _, _ = stack.request(method, path, headers)
        sent.append((rid, method, path, headers, status))
    # A marker audited last: once it is in the log, every earlier record is too (one worker).
    marker = str(uuid.uuid4())
    assert stack.request("GET", "/admin/marker", {"x-request-id": marker})[0] == 200
    stack.envoy.wait_records(lambda r: r.get("request", {}).get("id") == marker)
    by_id = {r["request"]["id"]: r for r in stack.envoy.records() if r.get("request", {}).get("id")}

    recorded_both = 0
    for rid, method, path, headers, status in sent:
        lines = explain(config_file, method, path, headers, status)
        verdict = next(line for line in lines if line.startswith("verdict: "))
        record = by_id.get(rid)
        where = f"{method} {path} ({status}): explain says {verdict!r}, Envoy wrote {record}"
        assert verdict.startswith("verdict: recorded") == (record is not None), where
        if record is None:
            continue
        recorded_both += 1
        explained = json.loads(next(line for line in lines if line.startswith("record: "))[len("record: ") :])
        assert explained["kind"] == record["kind"], where
        assert explained["why"] == record["why"], where
        assert explained["request"]["canonical_path"] == record["request"]["canonical_path"], where
    # Both outcomes were exercised.
    assert 0 < recorded_both < len(sent)
