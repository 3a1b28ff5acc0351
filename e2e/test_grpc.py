"""gRPC calls through the real Envoy and plugin: a real gRPC server and client (`grpcio`,
generic handlers, no generated code) over HTTP/2, with jwt_authn, ext_authz, RBAC and
local_ratelimit in front of meshaudit at `default_sample_rate: 0`.

gRPC answers HTTP 200 and carries its outcome in `grpc-status` (a trailer, or a header in a
trailers-only response, as every local reply to a gRPC client is): these tests check that
the refusals in it are audited as security outcomes, that routine OK calls stay unrecorded,
and that streams are recorded once, at their end, with their final status.
"""

from __future__ import annotations

import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc
import harness
import pki
import pytest

DENY_SECRET = "ns[shop]-policy[deny-secret]-rule[0]"
PLUGIN = {
    "default_sample_rate": 0,
    "authentication": {"jwt_payload_metadata_key": "jwt_payload"},
    "rules": [
        {
            "name": "audit-reads",
            "match": {"grpc_methods": ["shop.Audit/Read"]},
            "action": "audit",
            "level": "request",
        },
        {"name": "grpc-internal", "match": {"status": ["grpc:INTERNAL"]}, "action": "audit"},
    ],
}

# What the service answers, by method: a status (and message) for unary calls.
UNARY = {
    "/shop.Catalog/List": (grpc.StatusCode.OK, ""),
    "/shop.Secret/Get": (grpc.StatusCode.OK, ""),
    "/shop.Admin/DeleteUser": (grpc.StatusCode.PERMISSION_DENIED, "role admin required"),
    "/shop.Auth/Check": (grpc.StatusCode.UNAUTHENTICATED, "token expired"),
    "/shop.Billing/Charge": (grpc.StatusCode.RESOURCE_EXHAUSTED, "quota used up"),
    "/shop.Catalog/Broken": (grpc.StatusCode.INTERNAL, "boom"),
    "/shop.Audit/Read": (grpc.StatusCode.NOT_FOUND, "no entry for jane"),
    "/shop.Jwt/Get": (grpc.StatusCode.OK, ""),
    "/shop.DenyCheck/Get": (grpc.StatusCode.OK, ""),
    "/shop.Limited/Get": (grpc.StatusCode.OK, ""),
    "/shop.Quota/Get": (grpc.StatusCode.OK, ""),
}


def unary_handler(status: grpc.StatusCode, message: str):
    def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
        if status != grpc.StatusCode.OK:
            context.abort(status, message)
        return b"ok:" + request

    return grpc.unary_unary_rpc_method_handler(handle)


def server_stream(request: bytes, context: grpc.ServicerContext):
    """Three messages, then the status the request asks for."""
    for i in range(3):
        yield b"item %d" % i
    if request == b"refuse":
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "feed closed to you")


def client_stream(requests, context: grpc.ServicerContext) -> bytes:
    return b"got %d" % sum(1 for _ in requests)


def bidi_stream(requests, context: grpc.ServicerContext):
    for request in requests:
        if request == b"logout":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "session ended")
        yield b"echo:" + request


class Service(grpc.GenericRpcHandler):
    def service(self, details):
        method = details.method
        if method in UNARY:
            return unary_handler(*UNARY[method])
        if method in ("/shop.Feed/Watch", "/shop.Secret/Watch"):
            return grpc.unary_stream_rpc_method_handler(server_stream)
        if method == "/shop.Upload/Put":
            return grpc.stream_unary_rpc_method_handler(client_stream)
        if method == "/shop.Chat/Talk":
            return grpc.stream_stream_rpc_method_handler(bidi_stream)
        return None


def http2_cluster(name: str, port: int) -> dict:
    return harness.static_cluster(
        name,
        port,
        typed_extension_protocol_options={
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    )


def rate_limit(resource_exhausted: bool) -> dict:
    """One call a minute on the route; the second is refused."""
    return {
        "envoy.filters.http.local_ratelimit": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "grpc_limit",
            "token_bucket": {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval": "60s"},
            "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}, "runtime_key": "rl_enabled"},
            "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}, "runtime_key": "rl_enforced"},
            "rate_limited_as_resource_exhausted": resource_exhausted,
        }
    }


class GrpcStack:
    def __init__(self) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers((Service(),))
        grpc_port = harness.free_port()
        self.server.add_insecure_port(f"127.0.0.1:{grpc_port}")
        self.server.start()
        # Denies every call to a service whose name contains "Deny".
        self.authz = harness.ExtAuthzServer(lambda path, _headers: "Deny" in path)
        self.issuer = pki.JwtIssuer("https://issuer.shop.test")
        self.upstream = harness.Upstream()
        self.port = harness.free_port()
        config = harness.load_config(self.upstream.port, self.port, harness.free_port())
        hcm = harness.http_connection_manager(config)
        hcm.pop("access_log", None)
        harness.set_plugin_config(config, PLUGIN)
        wasm = harness.wasm_filter(config)
        router = hcm["http_filters"][-1]
        hcm["http_filters"] = [
            {
                "name": "envoy.filters.http.jwt_authn",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                    "providers": {
                        "shop": {
                            "issuer": self.issuer.issuer,
                            "audiences": ["meshaudit"],
                            "local_jwks": {"inline_string": self.issuer.jwks},
                            "payload_in_metadata": "jwt_payload",
                        }
                    },
                    "rules": [{"match": {"prefix": "/shop.Jwt/"}, "requires": {"provider_name": "shop"}}],
                },
            },
            {
                "name": "envoy.filters.http.ext_authz",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                    "transport_api_version": "V3",
                    "http_service": {
                        "server_uri": {
                            "uri": f"http://127.0.0.1:{self.authz.port}",
                            "cluster": "ext_authz",
                            "timeout": "2s",
                        }
                    },
                },
            },
            {
                "name": "envoy.filters.http.local_ratelimit",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                    "stat_prefix": "grpc_limit",
                },
            },
            harness.rbac_filter(
                {
                    DENY_SECRET: {
                        "permissions": [{"url_path": {"path": {"prefix": "/shop.Secret/"}}}],
                        "principals": [{"any": True}],
                    }
                }
            ),
            wasm,
            router,
        ]
        hcm["route_config"] = {
            "name": "grpc",
            "virtual_hosts": [
                {
                    "name": "grpc",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/shop.Limited/"},
                            "route": {"cluster": "grpc_backend"},
                            "typed_per_filter_config": rate_limit(resource_exhausted=False),
                        },
                        {
                            "match": {"prefix": "/shop.Quota/"},
                            "route": {"cluster": "grpc_backend"},
                            "typed_per_filter_config": rate_limit(resource_exhausted=True),
                        },
                        {"match": {"prefix": "/"}, "route": {"cluster": "grpc_backend", "timeout": "10s"}},
                    ],
                }
            ],
        }
        config["static_resources"]["clusters"] += [
            http2_cluster("grpc_backend", grpc_port),
            harness.static_cluster("ext_authz", self.authz.port),
        ]
        self.envoy = harness.Envoy(config, Path(tempfile.mkdtemp(prefix="meshaudit-grpc-")))
        self.envoy.wait_ready()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.sent = 0

    def request_id(self, method: str) -> str:
        self.sent += 1
        return f"{method}#{self.sent}"

    def records_of(self, request_id: str, recorded: bool) -> list[dict]:
        return self.envoy.wait_exactly(
            lambda r: r.get("request", {}).get("id") == request_id, int(recorded), settle=0.3 if recorded else 1.0
        )

    def unary(self, method: str, recorded: bool = True, token: str | None = None):
        """Calls `method`; returns the status code the client saw and the call's records."""
        request_id = self.request_id(method)
        metadata = [("x-request-id", request_id)]
        if token:
            metadata.append(("authorization", f"Bearer {token}"))
        try:
            self.channel.unary_unary(method)(b"hello", metadata=metadata, timeout=10)
            code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            code = e.code()
        return code, self.records_of(request_id, recorded)

    def stop(self) -> None:
        self.channel.close()
        self.envoy.stop()
        self.upstream.stop()
        self.authz.stop()
        self.server.stop(grace=None)


@pytest.fixture(scope="module")
def stack():
    s = GrpcStack()
    yield s
    s.stop()


only = harness.only


def status(code: int, name: str) -> dict:
    return {"code": code, "name": name}


def test_routine_ok_calls_stay_unrecorded(stack):
    for _ in range(3):
        code, records = stack.unary("/shop.Catalog/List", recorded=False)
        assert code == grpc.StatusCode.OK
        assert records == []
    assert harness.BATCH_FALLBACK not in stack.envoy.log()


def test_rbac_denial_carries_both_statuses(stack):
    code, records = stack.unary("/shop.Secret/Get")
    assert code == grpc.StatusCode.PERMISSION_DENIED
    r = only(records)
    assert (r["kind"], r["why"]["reason"]) == ("denied", "security_outcome")
    # Envoy answers a gRPC client's local reply with HTTP 200 and the status in grpc-status.
    assert r["response"]["code"] == 200
    assert r["response"]["replied_before_plugin"] is True
    assert r["grpc"] == {"service": "shop.Secret", "method": "Get", "status": status(7, "PERMISSION_DENIED")}
    assert (r["authz"]["by"], r["authz"]["basis"], r["authz"]["policy"]) == ("rbac", "deny_policy", DENY_SECRET)


@pytest.mark.parametrize(
    "method, kind, grpc_status",
    [
        ("/shop.Admin/DeleteUser", "denied", status(7, "PERMISSION_DENIED")),
        ("/shop.Auth/Check", "auth_failure", status(16, "UNAUTHENTICATED")),
        ("/shop.Billing/Charge", "rate_limited", status(8, "RESOURCE_EXHAUSTED")),
    ],
)
def test_refusals_from_the_service_are_security_outcomes(stack, method, kind, grpc_status):
    code, records = stack.unary(method)
    assert code.value[0] == grpc_status["code"]
    r = only(records)
    assert (r["kind"], r["why"]["reason"]) == (kind, "security_outcome")
    assert r["response"]["code"] == 200
    assert r["response"]["code_details"] == "via_upstream"
    service, name = method[1:].split("/")
    assert r["grpc"] == {"service": service, "method": name, "status": grpc_status}
    assert "message" not in r["grpc"], "the message only at level request"
    if kind == "denied":
        assert (r["authz"]["by"], r["authz"]["basis"]) == ("upstream", "upstream")
    if kind == "auth_failure":
        assert r["authn"] == {"method": "upstream", "result": "failed"}


def test_jwt_rejection(stack):
    code, records = stack.unary("/shop.Jwt/Get")
    assert code == grpc.StatusCode.UNAUTHENTICATED
    r = only(records)
    assert r["kind"] == "auth_failure"
    assert r["response"]["code"] == 200
    assert r["response"]["code_details"].startswith("jwt_authn_access_denied")
    assert r["grpc"]["status"] == status(16, "UNAUTHENTICATED")
    assert r["authn"]["method"] == "jwt"
    # With a valid token the call is routine again.
    code, records = stack.unary("/shop.Jwt/Get", recorded=False, token=stack.issuer.token("jane"))
    assert (code, records) == (grpc.StatusCode.OK, [])


def test_ext_authz_denial(stack):
    code, records = stack.unary("/shop.DenyCheck/Get")
    assert code == grpc.StatusCode.PERMISSION_DENIED
    r = only(records)
    assert r["kind"] == "denied"
    assert r["response"]["code_details"] == "ext_authz_denied"
    assert r["grpc"]["status"] == status(7, "PERMISSION_DENIED")
    assert (r["authz"]["by"], r["authz"]["decision"]) == ("ext_authz", "denied")


@pytest.mark.parametrize(
    "service, client_sees",
    [
        # Envoy's default for a gRPC client: UNAVAILABLE (gRPC's mapping of HTTP 429).
        ("shop.Limited", status(14, "UNAVAILABLE")),
        # With `rate_limited_as_resource_exhausted`.
        ("shop.Quota", status(8, "RESOURCE_EXHAUSTED")),
    ],
)
def test_rate_limited_calls(stack, service, client_sees):
    code, records = stack.unary(f"/{service}/Get", recorded=False)
    assert (code, records) == (grpc.StatusCode.OK, []), "the first call a minute passes"
    code, records = stack.unary(f"/{service}/Get")
    assert code.value[0] == client_sees["code"]
    r = only(records)
    assert r["kind"] == "rate_limited"
    assert r["response"]["code_details"] == "local_rate_limited"
    assert r["grpc"]["status"] == client_sees


def test_rules_on_grpc_status_and_method(stack):
    code, records = stack.unary("/shop.Catalog/Broken")
    assert code == grpc.StatusCode.INTERNAL
    r = only(records)
    assert (r["kind"], r["why"]["reason"], r["why"]["rule"]) == ("access", "rule", "grpc-internal")
    assert r["grpc"]["status"] == status(13, "INTERNAL")
    # A method rule at level request: the message is recorded.
    code, records = stack.unary("/shop.Audit/Read")
    assert code == grpc.StatusCode.NOT_FOUND
    r = only(records)
    assert r["why"]["rule"] == "audit-reads"
    assert r["grpc"] == {
        "service": "shop.Audit",
        "method": "Read",
        "status": status(5, "NOT_FOUND"),
        "message": "no entry for jane",
    }


def stream_records(stack, request_id: str, recorded: bool) -> list[dict]:
    return stack.records_of(request_id, recorded)


def test_server_stream_is_recorded_once_at_its_end(stack):
    request_id = stack.request_id("feed")
    call = stack.channel.unary_stream("/shop.Feed/Watch")(b"refuse", metadata=[("x-request-id", request_id)], timeout=10)
    received = []
    with pytest.raises(grpc.RpcError) as refused:
        for message in call:
            received.append(message)
    assert received == [b"item 0", b"item 1", b"item 2"]
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    r = only(stream_records(stack, request_id, True))
    assert r["kind"] == "denied"
    assert r["grpc"]["status"] == status(7, "PERMISSION_DENIED")
    # The same stream ending OK: routine.
    ok_id = stack.request_id("feed")
    items = list(stack.channel.unary_stream("/shop.Feed/Watch")(b"ok", metadata=[("x-request-id", ok_id)], timeout=10))
    assert len(items) == 3
    assert stream_records(stack, ok_id, False) == []


def test_rbac_denied_stream(stack):
    request_id = stack.request_id("secret-watch")
    call = stack.channel.unary_stream("/shop.Secret/Watch")(b"ok", metadata=[("x-request-id", request_id)], timeout=10)
    with pytest.raises(grpc.RpcError) as refused:
        list(call)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    r = only(stream_records(stack, request_id, True))
    assert (r["kind"], r["authz"]["policy"]) == ("denied", DENY_SECRET)
    assert r["grpc"] == {"service": "shop.Secret", "method": "Watch", "status": status(7, "PERMISSION_DENIED")}


def test_client_and_bidirectional_streams(stack):
    upload_id = stack.request_id("upload")
    answer = stack.channel.stream_unary("/shop.Upload/Put")(
        iter([b"a", b"b", b"c"]), metadata=[("x-request-id", upload_id)], timeout=10
    )
    assert answer == b"got 3"
    assert stream_records(stack, upload_id, False) == []

    chat_id = stack.request_id("chat")

    def messages():
        yield b"hi"
        time.sleep(0.2)
        yield b"logout"

    call = stack.channel.stream_stream("/shop.Chat/Talk")(messages(), metadata=[("x-request-id", chat_id)], timeout=10)
    received = []
    with pytest.raises(grpc.RpcError) as ended:
        for message in call:
            received.append(message)
    assert received == [b"echo:hi"]
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    r = only(stream_records(stack, chat_id, True))
    assert r["kind"] == "auth_failure"
    assert r["grpc"] == {"service": "shop.Chat", "method": "Talk", "status": status(16, "UNAUTHENTICATED")}
