"""Records at a stream's start (`record_start`, README "Records at a stream's start"): in the
real Envoy with the real module, an HTTP/2 stream and a WebSocket upgrade to an audited
endpoint, each held open for seconds, are on the trail while open (a `started` record), and
their end record comes after, with `started: true`; a routine stream writes neither early.
Accounting counts the starts apart from the requests; e2e/test_trail.py verifies a trail with
them."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time

import pytest
from harness import Stack, http_connection_manager
from test_manifests import cli  # noqa: F401  (the fixture that builds the command)

PLUGIN = {
    "instance_id": "started-test",
    "default_sample_rate": 0,
    "reporting": {"interval_seconds": 1},
    "rules": [
        {
            "name": "admin-streams",
            "match": {"paths": [{"prefix": "/admin"}]},
            "action": "audit",
            "level": "request",
            "request_headers": ["user-agent"],
            "record_start": True,
        },
        {"name": "health", "match": {"paths": [{"exact": "/healthz"}]}, "action": "drop"},
    ],
}

HOLD_MS = 3000


def with_websockets(config: dict) -> None:
    http_connection_manager(config)["upgrade_configs"] = [{"upgrade_type": "websocket"}]


@pytest.fixture(scope="module")
def stack():
    s = Stack(PLUGIN, adjust=with_websockets)
    yield s
    s.stop()


def of(request_id: str):
    return lambda r: r.get("request", {}).get("id") == request_id


def held_h2(port: int, path: str, request_id: str) -> subprocess.Popen:
    """An HTTP/2 stream (prior knowledge) the upstream holds open for HOLD_MS."""
    nghttp = shutil.which("nghttp")
    assert nghttp, "nghttp2-client is installed by scripts/setup.sh"
    url = f"http://127.0.0.1:{port}{path}?delay_ms={HOLD_MS}"
    return subprocess.Popen(
        [nghttp, "-n", "-H", f"x-request-id: {request_id}", "-H", "user-agent: console/1", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_an_open_h2_stream_to_an_audited_endpoint_is_on_the_trail_before_it_ends(stack):
    client = held_h2(stack.listen_port, "/admin/export", "h2-admin")
    try:
        started = stack.envoy.wait_records(lambda r: of("h2-admin")(r) and r["kind"] == "started", timeout=HOLD_MS / 1000)
        assert len(started) == 1, "the started record is written while the stream is open"
        assert client.poll() is None, "the stream was still open when the started record was read"
        assert [r for r in stack.envoy.records() if of("h2-admin")(r) and r["kind"] != "started"] == []
    finally:
        assert client.wait(timeout=15) == 0
    start = started[0]
    assert start["why"]["rule"] == "admin-streams"
    assert start["request"]["method"] == "GET"
    assert start["request"]["path"] == "/admin/export"
    assert start["request"]["headers"]["user-agent"] == "console/1"
    assert "response" not in start and "duration_ms" not in start
    end = stack.envoy.wait_records(lambda r: of("h2-admin")(r) and r["kind"] == "access")
    assert len(end) == 1
    assert end[0]["started"] is True
    assert end[0]["response"]["code"] == 200
    assert end[0]["duration_ms"] >= HOLD_MS - 100
    assert end[0]["seq"] > start["seq"] and end[0]["stream"] == start["stream"]


def test_a_websocket_upgrade_is_on_the_trail_while_it_is_open(stack):
    conn = socket.create_connection(("127.0.0.1", stack.listen_port), timeout=10)
    try:
        conn.sendall(
            b"GET /admin/shell HTTP/1.1\r\nHost: console\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"x-request-id: ws-admin\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(4096)
        assert head.startswith(b"HTTP/1.1 101"), head
        started = stack.envoy.wait_records(lambda r: of("ws-admin")(r) and r["kind"] == "started")
        assert len(started) == 1
        # The upgraded stream carries data both ways, and is still open.
        conn.sendall(b"whoami\n")
        assert conn.recv(4096) == b"whoami\n"
        time.sleep(1.5)
        assert [r for r in stack.envoy.records() if of("ws-admin")(r) and r["kind"] != "started"] == []
    finally:
        conn.close()
    end = stack.envoy.wait_records(lambda r: of("ws-admin")(r) and r["kind"] != "started")
    assert len(end) == 1
    assert end[0]["started"] is True
    assert end[0]["response"]["code"] == 101
    assert started[0]["request"]["path"] == "/admin/shell"


def test_a_routine_stream_writes_nothing_early(stack):
    client = held_h2(stack.listen_port, "/products", "h2-routine")
    try:
        time.sleep(HOLD_MS / 2000)
        assert client.poll() is None
        assert [r for r in stack.envoy.records() if of("h2-routine")(r)] == []
    finally:
        assert client.wait(timeout=15) == 0
    # Sampled out at its end too (default_sample_rate 0), and counted.
    time.sleep(0.5)
    assert [r for r in stack.envoy.records() if of("h2-routine")(r)] == []


def test_accounting_counts_the_starts_apart_from_the_requests(stack):
    for i in range(3):
        assert stack.request("GET", "/admin/users", {"x-request-id": f"acct-{i}"})[0] == 200
    stack.request("GET", "/healthz")
    ends = stack.envoy.wait_records(lambda r: r.get("request", {}).get("id", "").startswith("acct-") and r["kind"] == "access", 3)
    assert len(ends) == 3 and all(r["started"] for r in ends)
    accounting = stack.envoy.wait_records(lambda r: r["kind"] == "accounting" and r["seq"] > max(e["seq"] for e in ends))
    assert accounting
    totals = {"started": 0, "records": 0, "started_suppressed": 0, "started_hidden": 0}
    by_kind = {"started": 0, "access": 0}
    for a in (r for r in stack.envoy.records() if r["kind"] == "accounting"):
        rule = a["by_rule"].get("admin-streams", {})
        for name in totals:
            totals[name] += rule.get(name, 0)
        for kind in by_kind:
            by_kind[kind] += a["records_by_kind"].get(kind, 0)
    starts = [r for r in stack.envoy.records() if r["kind"] == "started"]
    admin_ends = [r for r in stack.envoy.records() if r["kind"] != "started" and r.get("why", {}).get("rule") == "admin-streams"]
    assert totals["started"] == len(starts) >= 5, (totals, len(starts))
    assert totals["records"] == len(admin_ends)
    assert totals["started_suppressed"] == totals["started_hidden"] == 0
    assert by_kind["started"] == len(starts)


def open_streams(cli, stack) -> list[dict]:  # noqa: F811
    out = subprocess.run([cli, "summary", "--json", stack.envoy.log_path], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["tables"]["open_streams"]


def test_the_summary_lists_a_stream_while_it_is_open_and_not_after(cli, stack):  # noqa: F811
    client = held_h2(stack.listen_port, "/admin/console", "h2-open")
    try:
        assert stack.envoy.wait_records(lambda r: of("h2-open")(r) and r["kind"] == "started")
        open_now = [row for row in open_streams(cli, stack) if row["request_id"] == "h2-open"]
        assert client.poll() is None, "still open when the summary read the log"
        assert len(open_now) == 1 and open_now[0]["path"] == "/admin/console" and open_now[0]["rule"] == "admin-streams"
    finally:
        assert client.wait(timeout=15) == 0
    assert stack.envoy.wait_records(lambda r: of("h2-open")(r) and r.get("started") is True)
    assert [row for row in open_streams(cli, stack) if row["request_id"] == "h2-open"] == []
