"""The peer, not the claim: in a real Envoy with Envoy's defaults (`use_remote_address:
false`, as Istio's sidecar inbound listeners have it), a plaintext request's
`X-Forwarded-For` becomes the stream's `source.address` (with port 0). The record must name
the directly connected peer, carry the forwarded address only as a claim, and key per-caller
counts by an identity the caller cannot choose. The peer comes from the network mode, which
runs in the same VM (same `vm_config`) on the same listener and hands it over by connection id.
"""

from __future__ import annotations

import http.client
import json
import tempfile
from pathlib import Path

import harness
import pytest

RULES = [{"name": "admin", "match": {"paths": [{"prefix": "/admin"}]}, "action": "audit"}]
SENT = iter(range(1_000_000))


def start(network_mode: bool, trust: bool = False) -> tuple[harness.Upstream, harness.Envoy, int]:
    upstream = harness.Upstream()
    port = harness.free_port()
    config = harness.load_config(upstream.port, port, harness.free_port())
    plugin = {"default_sample_rate": 0, "rules": RULES}
    if trust:
        plugin["trust_forwarded_address"] = True
    harness.set_plugin_config(config, plugin)
    listener = config["static_resources"]["listeners"][0]
    if network_mode:
        http_wasm = harness.wasm_filter(config)["typed_config"]["config"]
        network_wasm = {
            "name": "envoy.filters.network.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
                # The same vm_config as the HTTP filter's: the same VM, which the hand-off needs.
                "config": {**json.loads(json.dumps(http_wasm)), "name": "meshaudit-network", "root_id": "network"},
            },
        }
        listener["filter_chains"][0]["filters"].insert(0, network_wasm)
    envoy = harness.Envoy(config, Path(tempfile.mkdtemp(prefix="meshaudit-xff-")))
    envoy.wait_ready()
    return upstream, envoy, port


@pytest.fixture(scope="module")
def handed_over():
    upstream, envoy, port = start(network_mode=True)
    yield envoy, port
    envoy.stop()
    upstream.stop()


def requests_on_one_connection(port: int, claims: list[str | None], path: str = "/admin/users") -> tuple[str, list[str]]:
    """Sends one request per claim on one kept-alive connection; returns the connection's
    local address and the request ids."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    ids = []
    for claim in claims:
        request_id = f"xff-{next(SENT)}-{claim}"
        headers = {"x-request-id": request_id}
        if claim:
            headers["x-forwarded-for"] = claim
        conn.request("GET", path, headers=headers)
        conn.getresponse().read()
        ids.append(request_id)
    host, local_port = conn.sock.getsockname()
    conn.close()
    return f"{host}:{local_port}", ids


def record_of(envoy: harness.Envoy, request_id: str) -> dict:
    return envoy.only_record(request_id)


def test_the_record_names_the_peer_and_marks_the_claim(handed_over):
    envoy, port = handed_over
    peer, ids = requests_on_one_connection(port, ["203.0.113.9", "198.51.100.4", None])
    first, second, plain = (record_of(envoy, i) for i in ids)
    # Envoy took each claim as the stream's address, port 0: the record keeps it apart.
    assert first["source"] == {"address": peer, "forwarded_for": "203.0.113.9:0", "keyed_by": "peer"}
    assert second["source"] == {"address": peer, "forwarded_for": "198.51.100.4:0", "keyed_by": "peer"}
    assert plain["source"] == {"address": peer, "keyed_by": "peer"}
    # Per-caller counts follow the peer, whatever the claims: three calls by one caller.
    assert [r["rate_limit"]["window_calls"] for r in (first, second, plain)] == [1, 2, 3]


def test_a_caller_cannot_pose_as_another(handed_over):
    envoy, port = handed_over
    # A second connection claims the first's forwarded address: it is still its own peer.
    peer_a, ids_a = requests_on_one_connection(port, ["192.0.2.50"], path="/admin/pose")
    peer_b, ids_b = requests_on_one_connection(port, ["192.0.2.50"], path="/admin/pose")
    a, b = record_of(envoy, ids_a[0]), record_of(envoy, ids_b[0])
    assert a["source"]["address"] == peer_a and b["source"]["address"] == peer_b
    assert a["source"]["forwarded_for"] == b["source"]["forwarded_for"] == "192.0.2.50:0"
    # Both come from 127.0.0.1: one caller by address, counted together, not as the claim.
    assert b["rate_limit"]["window_calls"] == a["rate_limit"]["window_calls"] + 1


def test_without_the_network_mode_the_claim_keys_nothing():
    upstream, envoy, port = start(network_mode=False)
    try:
        _, ids = requests_on_one_connection(port, ["203.0.113.9"])
        r = record_of(envoy, ids[0])
        assert r["source"] == {"forwarded_for": "203.0.113.9:0", "keyed_by": "connection"}
        # Without a claim, Envoy's address is the peer's own.
        peer, ids = requests_on_one_connection(port, [None])
        assert record_of(envoy, ids[0])["source"] == {"address": peer, "keyed_by": "peer"}
    finally:
        envoy.stop()
        upstream.stop()


def test_trusted_forwarded_addresses_key_callers():
    upstream, envoy, port = start(network_mode=True, trust=True)
    try:
        _, ids_a = requests_on_one_connection(port, ["203.0.113.9"])
        _, ids_b = requests_on_one_connection(port, ["198.51.100.4"])
        _, ids_c = requests_on_one_connection(port, ["203.0.113.9"])
        a, b, c = (record_of(envoy, i[0]) for i in (ids_a, ids_b, ids_c))
        assert a["source"]["keyed_by"] == "forwarded"
        assert [r["rate_limit"]["window_calls"] for r in (a, b, c)] == [1, 1, 2]
    finally:
        envoy.stop()
        upstream.stop()
