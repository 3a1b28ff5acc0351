"""Hostile input through the real Envoy: odd encodings, huge values, h2, and a long
run of hostile requests with the Wasm VM's memory watched."""

import re
import shutil
import subprocess
import time

import harness
import pytest

PLUGIN = {
    "reporting": {"interval_seconds": 1},
    "redaction": {"query_params": ["q", "token"]},
    "rules": [
        {
            "name": "quiet-flood",
            "match": {"paths": [{"prefix": "/flood"}]},
            "action": "audit",
            "level": "request",
            "request_headers": ["user-agent", "authorization", "x-evil"],
        },
        {
            "name": "admin",
            "match": {"paths": [{"prefix": "/admin"}]},
            "action": "audit",
            "level": "request",
            "request_headers": ["user-agent", "authorization", "x-evil"],
        },
    ],
}


def adjust(config):
    harness.add_direct_route(config, "/flood", "flood")
    # Room for a 16 KiB path plus a 60 KiB header (Envoy's default cap is 60 KiB in all),
    # and for thousands of headers (Envoy's default cap is 100).
    hcm = harness.http_connection_manager(config)
    hcm["max_request_headers_kb"] = 96
    hcm["common_http_protocol_options"] = {"max_headers_count": 2000}


@pytest.fixture(scope="module")
def stack():
    s = harness.Stack(plugin=PLUGIN, adjust=adjust)
    yield s
    s.stop()


def only_record(stack, request_id):
    return stack.envoy.only_record(request_id)


def test_huge_path_and_header_are_capped_with_their_length(stack):
    path = "/admin/" + "a" * 16_000
    evil = "v" * 60_000
    status, _, _ = stack.request("GET", path + "?token=t0p&q=ok", {"x-request-id": "huge-1", "x-evil": evil})
    assert status == 200
    r = only_record(stack, "huge-1")
    assert r["request"]["path"].endswith("...[truncated, 16007 bytes]")
    assert len(r["request"]["path"]) < 1100
    assert r["request"]["headers"]["x-evil"].endswith("...[truncated, 60000 bytes]")
    assert r["request"]["query"] == "token=[masked, 3 bytes]&q=ok"


def test_invalid_percent_encoding_and_many_headers(stack):
    headers = {f"x-filler-{i}": "z" * 10 for i in range(1500)}
    headers["x-request-id"] = "pct-1"
    # Answered by Envoy itself: the Python upstream refuses more than 100 headers.
    status, _, _ = stack.request("GET", "/flood/%zz/%/%2", headers)
    assert status == 200
    r = only_record(stack, "pct-1")
    assert r["request"]["path"] == "/flood/%zz/%/%2"
    assert r["request"]["canonical_path"] == "/flood/%25zz/%25/%252"


def test_bare_cr_in_a_header_cannot_split_the_record(stack):
    response = stack.raw(b"GET /admin/cr HTTP/1.1\r\nHost: h\r\nx-request-id: cr-1\r\nx-evil: a\rb\r\nConnection: close\r\n\r\n")
    # Envoy 1.40's HTTP/1 codec accepts the request and drops the bare CR; whatever reaches
    # the plugin, the record stays one line.
    assert response.startswith(b"HTTP/1.1 200"), response[:100]
    r = only_record(stack, "cr-1")
    assert r["request"]["headers"]["x-evil"] in ("ab", "a\rb")
    line = next(text for text in stack.envoy.log().split("\n") if "cr-1" in text)
    assert "\r" not in line
    assert stack.request("GET", "/healthz")[0] == 200, "still serving"


def test_hostile_headers_over_h2(stack):
    nghttp = shutil.which("nghttp")
    assert nghttp, "nghttp2-client is installed by scripts/setup.sh"
    out = subprocess.run(
        [
            nghttp,
            "-n",
            "-s",
            f"http://127.0.0.1:{stack.listen_port}/admin/h2/%2e%2e/keys;x",
            "-H",
            "x-request-id: h2-1",
            "-H",
            'user-agent: h2\u202e\u2028"\\',
            "-H",
            "authorization: Bearer h2-secret-token",
        ],
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    r = only_record(stack, "h2-1")
    assert r["request"]["canonical_path"] == "/admin/keys"
    assert r["request"]["headers"]["user-agent"] == 'h2\u202e\u2028"\\'
    assert r["request"]["headers"]["authorization"] == "Bearer [masked, 22 bytes]"
    line = next(text for text in stack.envoy.log().splitlines() if "h2-1" in text)
    assert "\u202e" not in line and "h2-secret-token" not in line


@pytest.fixture
def own_stack():
    """A stack of its own: the counts checked are then the flood's alone."""
    s = harness.Stack(plugin=PLUGIN, adjust=adjust)
    yield s
    s.stop()


def test_vm_memory_is_flat_across_100k_hostile_requests(own_stack):
    """h2load drives hostile requests at a route Envoy answers itself, each audited at level
    `request`. The plugin's VM reports its linear memory (which never shrinks) as a gauge."""
    stack = own_stack
    h2load = shutil.which("h2load")
    assert h2load, "nghttp2-client is installed by scripts/setup.sh"
    base = f"http://127.0.0.1:{stack.listen_port}"
    uris = [
        f"{base}/flood/%zz/%2e%2e/..;x=1//a%2F%5C?token=secret&q=" + "x" * 2000,
        f"{base}/flood/users/jane@example.com/4111111111111111",
        f"{base}/flood/" + "%ff" * 3000,
    ]
    evil = "e" * 8000 + '\u202e\u2028"\\'

    def blast(n):
        out = subprocess.run(
            [
                h2load,
                "-n",
                str(n),
                "-c",
                "4",
                "-m",
                "8",
                "-t",
                "1",
                "-H",
                f"x-evil: {evil}",
                "-H",
                "authorization: Bearer flood-secret",
                *uris,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert out.returncode == 0, out.stderr
        summary = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out.stdout)
        assert summary, out.stdout[-800:]
        assert [int(g) for g in summary.groups()] == [n, n, n, 0], out.stdout[-800:]
        codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out.stdout)
        assert codes and [int(g) for g in codes.groups()] == [n, 0, 0, 0], out.stdout[-800:]

    def audited(total):
        """Waits (bounded) until the plugin has pushed the counts of `total` requests, then
        checks each was decided: written, sampled out, or refused by the budget and aggregated.
        (The dot segments of the first URI climb out of /flood: those match no rule.)"""

        def counts():
            out = {"requests": 0, "records": 0, "sampled_out": 0, "dropped": 0, "suppressed": 0}
            for line in stack.envoy.admin("/stats?filter=^wasmcustom[.]meshaudit[.]rule[.]").splitlines():
                name, _, value = line.partition(": ")
                field = name.rsplit(".", 1)[-1]
                if field in out:
                    out[field] += int(value)
            return out

        deadline = time.monotonic() + 30
        while counts()["requests"] < total and time.monotonic() < deadline:
            time.sleep(0.2)
        c = counts()
        assert c["requests"] == total, c
        assert c["records"] + c["sampled_out"] + c["dropped"] + c["suppressed"] == total, c
        # The gauge is set in the same report that pushed the counts.
        value = harness.stat(stack.envoy, "wasmcustom.meshaudit.vm_memory_bytes")
        assert value, "the plugin reports its VM memory"
        return c["records"], value

    blast(10_000)  # warm-up: the allocator reaches its working size
    written, warm = audited(10_000)
    blast(100_000)
    written_after, after = audited(110_000)
    assert written_after > written, "the plugin kept writing records through the flood"
    print(f"VM memory after warm-up {warm} bytes, after 100k more {after} bytes")
    assert after <= warm + 2 * 65_536, f"VM memory grew from {warm} to {after} bytes"
    assert stack.envoy.proc.poll() is None
    assert stack.request("GET", "/healthz")[0] == 200
    assert "flood-secret" not in stack.envoy.log()
    assert harness.BATCH_FALLBACK not in stack.envoy.log()


def test_every_record_came_from_one_attribute_batch(stack):
    """Runs last: hostile requests over HTTP/1.1 and HTTP/2 never broke the attribute batch."""
    assert stack.envoy.records()
    assert harness.BATCH_FALLBACK not in stack.envoy.log()
