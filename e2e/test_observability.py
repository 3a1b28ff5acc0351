"""Dashboards, collectors and retention examples (observability/): every file parses,
every field they use exists in the record schema (observability/record.schema.json,
which every record the e2e suite sees is validated against), every metric the dashboard
queries is one Envoy really exports, and the collectors' patterns extract real records
from a real Envoy log line. The compose stack that wires them is validated too."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import harness
import pytest
import yaml

OBS = harness.ROOT / "observability"
SCHEMA = json.loads((OBS / "record.schema.json").read_text())


def schema_paths() -> set[str]:
    """Every field path of every record kind, dotted (`request.canonical_path`)."""
    paths: set[str] = set()

    def walk(node: dict, prefix: str) -> None:
        for name, sub in node.get("properties", {}).items():
            if "$ref" in sub:  # "#/$defs/<name>"
                sub = SCHEMA["$defs"][sub["$ref"].rsplit("/", 1)[1]]
            path = f"{prefix}{name}"
            paths.add(path)
            walk(sub, f"{path}.")
            walk(sub.get("items", {}), f"{path}.")

    for variant in SCHEMA["oneOf"]:
        walk(variant, "")
    return paths


PATHS = schema_paths()
# The ECS fields observability/elasticsearch/ingest-pipeline.json sets (not record members).
ECS_SET = {"event.kind", "event.category", "event.type", "event.outcome"}
# LogQL's `| json` flattens nested fields with underscores.
FLAT = {p.replace(".", "_") for p in PATHS}


@pytest.fixture(scope="module")
def live():
    """A real Envoy with the plugin: its exported metric names and some real log lines."""
    plugin = harness.plugin_config(yaml.safe_load((harness.E2E / "envoy.yaml").read_text()))
    plugin["reporting"] = {"interval_seconds": 1}
    stack = harness.Stack(plugin=plugin)
    try:
        stack.request("GET", "/admin/users", {"x-request-id": "obs-1"})
        stack.request("GET", "/admin/forbidden/x", {"x-request-id": "obs-2"})
        stack.envoy.wait_records(lambda r: r["kind"] == "accounting")
        metrics = {
            line.split("{")[0].split(" ")[0]
            for line in stack.envoy.admin("/stats/prometheus").splitlines()
            if line and not line.startswith("#")
        }
        lines = [text for text in stack.envoy.log().splitlines() if "meshaudit.record " in text]
        yield metrics, lines
    finally:
        stack.stop()


def test_record_schema_is_a_valid_json_schema():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert {
        "request.canonical_path",
        "authz.policy",
        "peer.principal",
        "rate_limit.remaining",
        "connection.failure",
        "config.digest",
        "suppressed.count",
        "totals.sampled_out",
    } <= PATHS


def dashboard() -> dict:
    return json.loads((OBS / "grafana" / "dashboards" / "meshaudit.json").read_text())


def test_dashboard_loki_queries_use_record_fields():
    used: set[str] = set()
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            if target["datasource"]["type"] != "loki":
                continue
            expr = target["expr"]
            if expr.startswith('{job="kubernetes-audit"}'):
                continue  # the other stream: test_dashboard_change_trail_row
            assert '{job="meshaudit"} | json' in expr
            after_json = expr.split("| json", 1)[1]
            for group in re.findall(r"by \(([^)]*)\)", expr):
                used |= set(group.replace(" ", "").split(","))
            used |= set(re.findall(r"\|\s*([a-z_]+)\s*(?:=~|!=|=)", after_json))
            used |= set(re.findall(r"unwrap ([a-z_]+)", after_json))
            used |= set(re.findall(r"\{\{\{\{?\.([a-z_]+)\}", expr)) | set(re.findall(r"\{\{\.([a-z_]+)\}\}", expr))
    used.discard("")
    assert used, "the dashboard queries record fields"
    missing = used - FLAT
    assert not missing, f"dashboard fields not in the record schema: {missing}"
    assert {"authz_policy", "peer_principal", "authn_reason", "rate_limit_remaining", "connection_failure"} <= used


# The audit.k8s.io/v1 Event fields the change-trail row reads, as Loki's json stage flattens them.
K8S_AUDIT_EVENT_FIELDS = {
    "verb",
    "objectRef_resource",
    "objectRef_namespace",
    "objectRef_name",
    "user_username",
    "responseStatus_code",
}


def test_dashboard_change_trail_row():
    """One variable filters both streams: the requests an Istio object routed or decided,
    and the API server's record of who changed it."""
    board = dashboard()
    assert [v["name"] for v in board["templating"]["list"]] == ["object"]
    row = next(p for p in board["panels"] if p["type"] == "row" and "$object" in p["title"])
    below = [p for p in board["panels"] if p["gridPos"]["y"] > row["gridPos"]["y"]]
    exprs = [t["expr"] for p in below for t in p["targets"]]
    requests = next(e for e in exprs if e.startswith('{job="meshaudit"}'))
    changes = next(e for e in exprs if e.startswith('{job="kubernetes-audit"}'))
    for field in ("route_virtual_service_name", "route_destination_rule_name", "authz_policy_name", "direction"):
        assert field in FLAT and field in requests, field
    assert '="$object"' in requests and 'objectRef_name="$object"' in changes
    used = set(re.findall(r"\{\{\.([A-Za-z_]+)\}\}", changes)) | set(re.findall(r"\|\s*([A-Za-z_]+)\s*=", changes))
    assert used and used <= K8S_AUDIT_EVENT_FIELDS, used - K8S_AUDIT_EVENT_FIELDS


def prometheus_metric_names(expr: str) -> set[str]:
    """The meshaudit metrics a PromQL expression reads, however written (`m`, `m{…}`,
    `m[5m]`, `rate(m)`); label names (in matchers, `by (…)`, `on (…)`) and strings are not metrics."""
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r'"[^"]*"', " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    return set(re.findall(r"\b(meshaudit_[a-z_]+)\b", expr))


def test_prometheus_metric_names_are_found_however_written():
    assert prometheus_metric_names('sum by (meshaudit_rule) (rate(meshaudit_rule_records{meshaudit_rule="a"}[5m]))') == {
        "meshaudit_rule_records"
    }
    assert prometheus_metric_names("meshaudit_sink_errors > 0") == {"meshaudit_sink_errors"}
    assert prometheus_metric_names("max(meshaudit_vm_memory_bytes)") == {"meshaudit_vm_memory_bytes"}


def test_dashboard_prometheus_queries_use_exported_metrics(live):
    metrics, _ = live
    used = set()
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            if target["datasource"]["type"] == "prometheus":
                used |= prometheus_metric_names(target["expr"])
    assert used and used <= metrics, f"not exported by Envoy: {used - metrics}"


def test_grafana_provisioning_matches_the_dashboard():
    sources = yaml.safe_load((OBS / "grafana" / "provisioning" / "datasources" / "datasources.yaml").read_text())
    uids = {s["uid"] for s in sources["datasources"]}
    used = {t["datasource"]["uid"] for p in dashboard()["panels"] for t in p.get("targets", [])}
    assert used <= uids


def test_elasticsearch_template_maps_record_fields_and_ecs_aliases():
    template = json.loads((OBS / "elasticsearch" / "index-template.json").read_text())
    props = template["template"]["mappings"]["properties"]
    mapped, aliases = set(), {}

    def walk(node, prefix=""):
        for name, sub in node.items():
            path = f"{prefix}{name}"
            if sub.get("type") == "alias":
                aliases[path] = sub["path"]
            elif "properties" in sub:
                walk(sub["properties"], f"{path}.")
            else:
                mapped.add(path)

    walk(props)
    assert mapped - {"@timestamp"} - ECS_SET <= PATHS, mapped - PATHS
    assert {"request.canonical_path", "authz.policy", "peer.principal", "ts"} <= mapped
    for alias, target in aliases.items():
        assert target in mapped and target in PATHS, f"alias {alias} -> {target}"
    policy = json.loads((OBS / "elasticsearch" / "ilm-policy.json").read_text())["policy"]["phases"]
    assert policy["warm"]["min_age"] == "30d" and policy["cold"]["min_age"] == "60d"
    assert template["template"]["settings"]["index.lifecycle.name"] == "meshaudit"


def test_kibana_saved_search_uses_record_fields():
    objects = [json.loads(text) for text in (OBS / "kibana" / "saved-objects.ndjson").read_text().splitlines() if text]
    search = next(o for o in objects if o["type"] == "search")
    view = next(o for o in objects if o["type"] == "index-pattern")
    assert view["attributes"]["timeFieldName"] in PATHS
    assert set(search["attributes"]["columns"]) <= PATHS | ECS_SET
    query = json.loads(search["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])["query"]["query"]
    fields = set(re.findall(r"([a-z_.]+)\s*:", query))
    assert fields <= PATHS | ECS_SET and fields & ECS_SET, "the search reads the ECS fields"


def ecs_flat() -> dict:
    """Elastic's ECS definitions (npm @elastic/ecs, installed by scripts/setup.sh into .tools/)."""
    script = "process.stdout.write(JSON.stringify(require('@elastic/ecs/build/commonjs/ecs_flat.js').EcsFlat))"
    out = subprocess.run(["node", "-e", script], cwd=harness.ROOT / ".tools", capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def schema_kinds() -> tuple[set[str], set[str]]:
    """Every record kind the schema allows, and those of the network mode's connection records."""
    kinds, connection = set(), set()

    def walk(node):
        if isinstance(node, dict):
            kind = node.get("properties", {}).get("kind")
            if kind:
                names = set(kind.get("enum", [kind.get("const")])) - {None}
                kinds.update(names)
                if "connection" in node["properties"]:
                    connection.update(names)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads((OBS / "record.schema.json").read_text()))
    return kinds, connection


def ecs_key(record: dict) -> str:
    """The pipeline script's lookup key."""
    return ("connection." if "connection" in record else "") + record["kind"]


def test_the_ingest_pipeline_sets_values_ecs_allows_for_every_record_kind():
    flat = ecs_flat()
    allowed = {
        field: {v["name"]: v.get("expected_event_types") or [] for v in flat[field]["allowed_values"]} for field in ECS_SET
    }
    assert all(flat[field]["type"] == "keyword" for field in ECS_SET)
    pipeline = json.loads((OBS / "elasticsearch" / "ingest-pipeline.json").read_text())
    [processor] = pipeline["processors"]
    table = processor["script"]["params"]["by_kind"]
    kinds, connection = schema_kinds()
    assert kinds >= {"access", "denied", "tls_failure", "accounting", "config_applied", "suppressed", "log_level"}
    assert set(table) == (kinds - (connection - {"denied"})) | {f"connection.{k}" for k in connection}
    for key, ecs in table.items():
        assert set(ecs) <= {"kind", "category", "type", "outcome"}, key
        assert ecs["kind"] in allowed["event.kind"], key
        categories, types = ecs.get("category", []), ecs.get("type", [])
        if ecs["kind"] == "event":
            assert categories and types, f"{key}: an event has a category and a type"
        for category in categories:
            assert category in allowed["event.category"], key
            assert any(t in allowed["event.category"][category] for t in types), f"{key}: no type ECS expects for {category}"
        for t in types:
            assert t in allowed["event.type"] and any(t in allowed["event.category"][c] for c in categories), f"{key}: {t}"
        assert ecs.get("outcome", "success") in allowed["event.outcome"], key
    # The fields are mapped, the pipeline is the index's default, and aliases are never written.
    template = json.loads((OBS / "elasticsearch" / "index-template.json").read_text())
    assert template["template"]["settings"]["index.default_pipeline"] == "meshaudit-ecs"
    event = template["template"]["mappings"]["properties"]["event"]["properties"]
    assert all(event[f.split(".")[1]]["type"] == "keyword" for f in ECS_SET)
    assert all(v["type"] == "alias" for k, v in event.items() if f"event.{k}" not in ECS_SET)
    # Every record the e2e suite captured finds its entry.
    records = [json.loads(text) for text in harness.record_texts(harness.TRAIL.read_text())]
    assert {ecs_key(r) for r in records} <= set(table) and len({ecs_key(r) for r in records}) >= 6
    # The README's table is this one.
    readme = (harness.ROOT / "README.md").read_text()
    section = readme.split("<!-- ecs-table -->")[1]
    rows = {}
    for line in section.strip().splitlines()[2:]:
        if not line.startswith("|"):
            break
        key, kind, category, types, outcome = (c.strip().strip("`") for c in line.strip("|").split("|"))
        rows[key] = {"kind": kind, "category": category, "type": types, "outcome": outcome}
    as_written = {
        key: {
            "kind": e["kind"],
            "category": ", ".join(e.get("category", [])) or "-",
            "type": ", ".join(e.get("type", [])) or "-",
            "outcome": e.get("outcome", "-"),
        }
        for key, e in table.items()
    }
    assert rows == as_written


def onig_to_python(regex: str) -> str:
    return regex.replace("(?<", "(?P<")


def test_collectors_extract_real_records_from_envoys_log(live):
    _, lines = live
    assert lines
    parsers = (OBS / "fluent-bit" / "parsers.conf").read_text()
    fluent_bit = re.compile(onig_to_python(re.search(r"Regex\s+(.+)", parsers).group(1).strip()))
    grep = re.compile(re.search(r"Regex\s+log\s+(.+)", (OBS / "fluent-bit" / "istio-proxy.conf").read_text()).group(1).strip())
    fluentd_conf = (OBS / "fluentd" / "istio-proxy.conf").read_text()
    fluentd = re.compile(onig_to_python(re.search(r"expression /(.+)/", fluentd_conf).group(1)))
    fluentd_grep = re.compile(re.search(r"pattern /(.+)/", fluentd_conf).group(1))
    logstash = (OBS / "logstash" / "meshaudit.conf").read_text()
    marker = re.search(r'if "([^"]+)" not in \[message\]', logstash).group(1)
    dissect_sep = re.search(r"%\{envoy_prefix\}(.+?)%\{record\}", logstash).group(1)
    for line in lines:
        assert grep.search(line) and fluentd_grep.search(line) and marker in line
        for record_text in (
            fluent_bit.search(line).group("record"),
            fluentd.search(line).group("record"),
            line.split(dissect_sep, 1)[1],
        ):
            harness.validate_record(json.loads(record_text))
    # Envoy's other messages are left out by every collector.
    other = "[2026-11-25 17:16:00.087][1][warning][main] [source/server/server.cc:1059] There is no configured limit"
    assert not grep.search(other) and not fluentd_grep.search(other) and marker not in other


def test_collectors_reference_only_record_fields():
    logstash = (OBS / "logstash" / "meshaudit.conf").read_text()
    refs = {".".join(re.findall(r"\[([a-z_@]+)\]", m)) for m in re.findall(r"((?:\[[a-z_@]+\])+)", logstash)}
    own = {"message", "tags", "@metadata.stream", "event.outcome", "@timestamp"}
    assert refs - own <= PATHS, refs - own - PATHS
    for conf in ("istio-proxy.conf", "compose.conf"):
        labels = re.findall(r"\$([a-z_]+)", (OBS / "fluent-bit" / conf).read_text())
        assert labels and set(labels) <= PATHS
    assert re.search(r"time_key ts", (OBS / "fluentd" / "istio-proxy.conf").read_text()) and "ts" in PATHS


def test_loki_keeps_records_60_days():
    loki = yaml.safe_load((OBS / "loki" / "loki-config.yaml").read_text())
    assert loki["limits_config"]["retention_period"] == "1440h"
    assert loki["compactor"]["retention_enabled"] is True


def observability_compose() -> dict:
    docker_compose = shutil.which("docker-compose")
    assert docker_compose, "docker-compose is installed by scripts/setup.sh"
    compose = harness.E2E / "docker-compose.observability.yaml"
    out = subprocess.run([docker_compose, "-f", str(compose), "config"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_observability_compose_stack_is_valid():
    resolved = observability_compose()
    assert set(resolved["services"]) == {
        "envoy",
        "upstream",
        "fluent-bit",
        "loki",
        "prometheus",
        "grafana",
        "postgres",
        "syslog-ng",
        "clickhouse",
        "syslog-ng-clickhouse",
    }
    for name, service in resolved["services"].items():
        assert ":" in service["image"] and not service["image"].endswith(":latest"), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("/"):
                assert Path(source).exists() or source.endswith("meshaudit.wasm"), f"{name}: {source} missing"
    envoy_mounts = resolved["services"]["envoy"]["volumes"]
    assert any(str(v).startswith(str(harness.E2E / "envoy.yaml")) for v in envoy_mounts), "the same envoy.yaml as the tests"


def compose_shipper(service: str, conf: str) -> dict:
    """A syslog-ng service as e2e/test_pipeline.py runs it: the shipped directory and
    configuration, reading the files Envoy writes, every variable the configuration reads set."""
    services = observability_compose()["services"]
    ng = services[service]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in ng["volumes"]}
    env = ng["environment"]
    assert mounts[env["MESHAUDIT_SYSLOG_NG_DIR"]] == str(harness.ROOT / "observability" / "syslog-ng")
    assert ng["command"][-1].endswith(env["MESHAUDIT_SYSLOG_NG_DIR"] + "/" + conf)
    envoy_mounts = {v.split(":")[1]: v.split(":")[0] for v in services["envoy"]["volumes"]}
    for variable in ("MESHAUDIT_HANDOFF_LOG", "MESHAUDIT_ENVOY_LOG"):
        directory = str(Path(env[variable]).parent)
        assert mounts[directory] == envoy_mounts[directory], f"{variable}: the volume Envoy writes"
    shipped_log = yaml.safe_load((harness.E2E / "envoy.yaml").read_text())
    assert env["MESHAUDIT_HANDOFF_LOG"] == harness.http_connection_manager(shipped_log)["access_log"][0]["typed_config"]["path"]
    command = services["envoy"]["command"]
    assert command[command.index("--log-path") + 1] == env["MESHAUDIT_ENVOY_LOG"]
    config = "".join(
        (harness.ROOT / "observability" / "syslog-ng" / name).read_text() for name in (conf, "meshaudit-sources.conf")
    )
    assert set(re.findall(r"`(MESHAUDIT_\w+)`", config)) == set(env)
    return ng


def test_the_compose_postgres_path_is_the_one_the_pipeline_test_runs():
    """syslog-ng with e2e/test_pipeline.py's config into a PostgreSQL that loads the shipped
    schema and inbox, in that order."""
    ng = compose_shipper("syslog-ng", "meshaudit-postgres.conf")
    assert ng["environment"]["MESHAUDIT_PG_HOST"] == "postgres"
    services = observability_compose()["services"]
    init = sorted((v.split(":")[1], v.split(":")[0]) for v in services["postgres"]["volumes"] if "initdb" in v)
    assert [Path(src).name for _, src in init] == ["schema.sql", "inbox.sql"]
    assert "syslog-ng-mod-sql" in " ".join(ng["command"]) and "libdbd-pgsql" in " ".join(ng["command"])


def test_the_compose_clickhouse_path_is_the_one_the_pipeline_test_runs():
    ng = compose_shipper("syslog-ng-clickhouse", "meshaudit-clickhouse.conf")
    assert ng["environment"]["MESHAUDIT_CH_URL"] == "http://clickhouse:8123"
    services = observability_compose()["services"]
    init = [v.split(":")[0] for v in services["clickhouse"]["volumes"] if "initdb" in v]
    assert [Path(src).name for src in init] == ["schema.sql"]
    assert "syslog-ng-mod-http" in " ".join(ng["command"])
    # The two shippers keep their read positions and buffers apart.
    state = {v.split(":")[0] for v in services["syslog-ng"]["volumes"]} & {v.split(":")[0] for v in ng["volumes"]}
    assert not any("state" in v for v in state), state
