"""Records as OTLP logs: Envoy 1.40's OpenTelemetry access logger, configured as
observability/istio/meshconfig-handoff.yaml's `meshaudit-otel` provider compiles to (the
record handed off as filter state is the log's body; the CEL filter passes only what the
plugin recorded), sends to a real OTLP/gRPC receiver (grpcio with opentelemetry-proto's
LogsService) started by the test. Every audited request arrives once, its body the record
and its attributes the documented key fields; a request the plugin did not record sends
nothing. The OpenTelemetry Collector example (observability/otel-collector/config.yaml) is
not run (the collector cannot be installed here): its pipelines are checked for completeness
against the provider, and the ClickHouse view it relies on runs on the current engine.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent import futures

import clickhouse
import grpc
import harness
import pytest
import yaml
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

# Both outputs; the admin API audited, routine traffic sampled out, security outcomes recorded.
PLUGIN = {
    "default_sample_rate": 0.0,
    "output": {"log": True, "filter_state": True},
    "rules": [{"name": "admin", "match": {"paths": [{"prefix": "/admin"}]}, "action": "audit"}],
}
LOGGER = "meshaudit"
# The record's key fields, as the OTLP log record's attributes (README, "Where records go"):
# each from Envoy's own command operators, so a collector can route without parsing the body.
ATTRIBUTES = {
    "meshaudit.request_id": "%REQ(X-REQUEST-ID)%",
    "meshaudit.status": "%RESPONSE_CODE%",
    "meshaudit.response_code_details": "%RESPONSE_CODE_DETAILS%",
    "meshaudit.route": "%ROUTE_NAME%",
    "meshaudit.peer_principal": "%DOWNSTREAM_PEER_URI_SAN%",
}


class Receiver(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self) -> None:
        self.records: list = []
        self.lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 (the gRPC method's name)
        with self.lock:
            for resource in request.resource_logs:
                for scope in resource.scope_logs:
                    self.records.extend(scope.log_records)
        return logs_service_pb2.ExportLogsServiceResponse()


@pytest.fixture
def otlp():
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(receiver, server)
    port = harness.free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        yield receiver, port
    finally:
        server.stop(grace=None)


def otel_logger(attributes: dict) -> dict:
    return {
        "name": "envoy.access_loggers.open_telemetry",
        "filter": {
            "extension_filter": {
                "name": "cel",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                    "expression": "'wasm.meshaudit_record' in filter_state",
                },
            }
        },
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig",
            "common_config": {
                "log_name": LOGGER,
                "transport_api_version": "V3",
                "grpc_service": {"envoy_grpc": {"cluster_name": "otlp"}},
            },
            "body": {"string_value": "%FILTER_STATE(wasm.meshaudit_record:PLAIN)%"},
            "attributes": {"values": [{"key": k, "value": {"string_value": v}} for k, v in attributes.items()]},
        },
    }


def test_every_audited_request_arrives_once_as_an_otlp_log(otlp):
    receiver, port = otlp

    def adjust(config: dict) -> None:
        harness.http_connection_manager(config).setdefault("access_log", []).append(otel_logger(ATTRIBUTES))
        cluster = harness.static_cluster("otlp", port)
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
        config["static_resources"]["clusters"].append(cluster)

    stack = harness.Stack(plugin=PLUGIN, adjust=adjust)
    try:
        audited = []
        for path in ("/admin/users", "/admin/forbidden/x", "/status/401", "/admin/users"):
            request_id = str(uuid.uuid4())
            stack.request("GET", path, {"x-request-id": request_id})
            audited.append(request_id)
        routine = str(uuid.uuid4())
        stack.request("GET", "/products/1", {"x-request-id": routine})
        records = stack.envoy.wait_records(lambda r: r.get("request", {}).get("id") in audited, count=len(audited))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with receiver.lock:
                if len(receiver.records) >= len(audited):
                    break
            time.sleep(0.2)
        time.sleep(1)  # anything more would have come by now
    finally:
        stack.stop()
    with receiver.lock:
        got = list(receiver.records)
    by_id = {}
    for log in got:
        attributes = {a.key: a.value.string_value for a in log.attributes}
        body = json.loads(log.body.string_value)
        harness.validate_record(body)
        assert attributes["meshaudit.request_id"] == body["request"]["id"]
        assert attributes["meshaudit.status"] == str(body["response"]["code"])
        by_id.setdefault(body["request"]["id"], []).append((body, attributes))
    assert sorted(by_id) == sorted(audited), "every audited request once, the routine one not at all"
    assert all(len(v) == 1 for v in by_id.values())
    # The body is the record Envoy's log holds for the same request, byte for byte in content.
    logged = {r["request"]["id"]: r for r in records}
    for request_id, [(body, _attributes)] in by_id.items():
        assert body == logged[request_id]
    denied = [a for b, a in (v[0] for v in by_id.values()) if b["kind"] == "denied"]
    assert denied and denied[0]["meshaudit.response_code_details"].startswith("rbac_access_denied")


COLLECTOR = harness.ROOT / "observability" / "otel-collector" / "config.yaml"


def test_the_collector_example_is_whole_and_listens_where_the_provider_sends():
    config = yaml.safe_load(COLLECTOR.read_text())
    mesh = yaml.safe_load((harness.ROOT / "observability" / "istio" / "meshconfig-handoff.yaml").read_text())
    [provider] = [p["envoyOtelAls"] for p in mesh["meshConfig"]["extensionProviders"] if "envoyOtelAls" in p]
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == f"0.0.0.0:{provider['port']}"
    pipelines = config["service"]["pipelines"]
    used = {kind: set() for kind in ("receivers", "processors", "exporters")}
    for name, pipeline in pipelines.items():
        assert name.startswith("logs/"), "records are logs"
        for kind in used:
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"{name}: {component} is not defined under {kind}"
                used[kind].add(component)
    for kind, names in used.items():
        assert names == set(config[kind]), f"{kind} defined but in no pipeline: {set(config[kind]) - names}"
    # Every exporter queues on disk (nothing lost across a collector restart or an outage).
    for name, exporter in config["exporters"].items():
        storage = exporter["sending_queue"]["storage"]
        assert storage in config["extensions"] and storage in config["service"]["extensions"], name
    # The exporters' tables and indices are the ones the shipped store configs read.
    view = (clickhouse.SQL / "from-otel-collector.sql").read_text()
    assert f"FROM {config['exporters']['clickhouse']['logs_table_name']}\n" in view
    template = json.loads((harness.ROOT / "observability" / "elasticsearch" / "index-template.json").read_text())
    assert any(p.rstrip("*") == config["exporters"]["elasticsearch"]["logs_index"] for p in template["index_patterns"])


def test_the_collectors_clickhouse_rows_reach_the_shipped_schema():
    """The exporter's table (its columns that matter here), the view into meshaudit_record, and
    the trail's records written as the exporter writes them, with a log that is no record."""
    texts = harness.record_texts(harness.TRAIL.read_text())
    engine = clickhouse.Chdb()
    try:
        engine.script((clickhouse.SQL / "schema.sql").read_text())
        engine.script(
            "CREATE TABLE otel_logs (Timestamp DateTime64(9), ServiceName LowCardinality(String), Body String,"
            " LogAttributes Map(LowCardinality(String), String)) ENGINE = MergeTree ORDER BY (ServiceName, Timestamp);\n"
        )
        engine.script((clickhouse.SQL / "from-otel-collector.sql").read_text())
        rows = ",".join(
            f"(now64(9), 'istio-proxy', {clickhouse.quote(t)}, map('meshaudit.status', '200'))" for t in [*texts, "GET / 200"]
        )
        engine.script(f"INSERT INTO otel_logs VALUES {rows};\n")
        assert engine.query("SELECT count() FROM meshaudit_record FINAL") == [[str(len(texts))]]
        records = sorted(r[0] for r in engine.query("SELECT record FROM meshaudit_record FINAL"))
        assert [json.loads(r) for r in records] == [json.loads(t) for t in sorted(texts)]
    finally:
        engine.close()
