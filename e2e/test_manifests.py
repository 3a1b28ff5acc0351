"""The Istio manifests in envoyfilter/: lint-clean, valid against Istio's CRD schemas
(../shared/istio-crds), their plugin configurations accepted by the plugin's own
validation (the same code Envoy runs, as the native `meshaudit` command), the
published JSON Schema current, and an Istio-encoded configuration loaded by Envoy."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import harness
import jsonschema
import pytest
import yaml

sys.path.insert(0, str(harness.ROOT / "scripts"))
import package_oci  # noqa: E402

ROOT = harness.ROOT
MANIFESTS = package_oci.manifest_paths()
CRDS = ROOT.parent / "shared" / "istio-crds"
SCHEMA = ROOT / "envoyfilter" / "meshaudit-config.schema.json"
CLI = ROOT / "target" / "debug" / "meshaudit"
CRD_FILES = {
    "WasmPlugin": "wasmplugins.extensions.istio.io.yaml",
    "TrafficExtension": "trafficextensions.extensions.istio.io.yaml",
    "EnvoyFilter": "envoyfilters.networking.istio.io.yaml",
    "AuthorizationPolicy": "authorizationpolicies.security.istio.io.yaml",
    "PeerAuthentication": "peerauthentications.security.istio.io.yaml",
    "RequestAuthentication": "requestauthentications.security.istio.io.yaml",
    "Telemetry": "telemetries.telemetry.istio.io.yaml",
}


def documents() -> list[tuple[Path, dict]]:
    return [(path, doc) for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def crd_schema(kind: str, api_version: str) -> dict:
    path = CRDS / CRD_FILES[kind]
    assert path.exists(), f"{path} is missing: Istio's CRD schemas are expected in ../shared/istio-crds"
    crd = yaml.safe_load(path.read_text())
    version = api_version.split("/")[1]
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            assert v.get("served"), f"{kind} {version} is not served"
            return v["schema"]["openAPIV3Schema"]
    raise AssertionError(f"{kind} has no version {version}")


def istio_struct(value):
    """What Istio delivers for pluginConfig: a protobuf Struct, so every number is a double."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return [istio_struct(v) for v in value]
    return {k: istio_struct(v) for k, v in value.items()}


def plugin_configs() -> list[tuple[str, str]]:
    """(where, JSON as Envoy receives it) for every plugin configuration in the manifests."""
    out = []
    for path, doc in documents():
        spec = doc.get("spec", {})
        where = f"{path.name}:{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "WasmPlugin":
            out.append((where, json.dumps(istio_struct(spec.get("pluginConfig", {})))))
        elif doc["kind"] == "TrafficExtension":
            out.append((where, json.dumps(istio_struct(spec["wasm"].get("pluginConfig", {})))))
        elif doc["kind"] == "EnvoyFilter":
            for patch in spec["configPatches"]:
                config = patch["patch"]["value"]["typed_config"]["config"]
                out.append((where, config["configuration"]["value"]))
    return out


@pytest.fixture(scope="module")
def cli():
    subprocess.run(["cargo", "build", "--quiet", "--features", "cli", "--bin", "meshaudit"], cwd=ROOT, check=True, timeout=600)
    return CLI


def test_there_is_a_manifest_for_each_way_of_deploying():
    kinds = {doc["kind"] for _, doc in documents()}
    assert kinds >= {
        "WasmPlugin",
        "TrafficExtension",
        "EnvoyFilter",
        "AuthorizationPolicy",
        "PeerAuthentication",
        "RequestAuthentication",
    }
    types = {doc["spec"].get("type") for _, doc in documents() if doc["kind"] == "WasmPlugin"}
    assert types == {"HTTP", "NETWORK"}


def test_a_waypoint_plugin_attaches_by_target_ref():
    """Ambient mode: ztunnel runs no Wasm, a waypoint does, and a waypoint heeds only
    targetRefs (a Gateway of the Gateway API), never a selector."""
    waypoint = [doc for path, doc in documents() if path.name == "wasmplugin-waypoint.yaml" and doc["kind"] == "WasmPlugin"]
    assert len(waypoint) == 1
    spec = waypoint[0]["spec"]
    assert "selector" not in spec
    assert spec["targetRefs"] == [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}]
    assert (spec["type"], spec["phase"]) == ("HTTP", "STATS")


def test_the_audit_policy_example_is_an_istio_audit_policy():
    audit = [doc for _, doc in documents() if doc["kind"] == "AuthorizationPolicy" and doc["spec"].get("action") == "AUDIT"]
    assert [doc["metadata"]["name"] for doc in audit] == ["audit-admin"]
    # The WasmPlugins act on it.
    for _, doc in documents():
        if doc["kind"] == "WasmPlugin" and doc["spec"]["type"] == "HTTP":
            assert doc["spec"]["pluginConfig"].get("authorization", {}).get("audit_policies", True) is True


# Every Istio API group and resource (Istio's crd-all.gen.yaml, 1.30), and the Gateway API
# routes istiod turns into VirtualServices: the change trail must name each write to them.
ISTIO_RESOURCES = {
    "networking.istio.io": {
        "destinationrules",
        "envoyfilters",
        "gateways",
        "proxyconfigs",
        "serviceentries",
        "sidecars",
        "virtualservices",
        "workloadentries",
        "workloadgroups",
    },
    "security.istio.io": {"authorizationpolicies", "peerauthentications", "requestauthentications"},
    "extensions.istio.io": {"wasmplugins", "trafficextensions"},
    "telemetry.istio.io": {"telemetries"},
    "gateway.networking.k8s.io": {"gateways", "httproutes", "grpcroutes", "tcproutes", "tlsroutes"},
}
# The audit.k8s.io/v1 Policy's fields (k8s.io/apiserver/pkg/apis/audit/v1/types.go).
AUDIT_POLICY_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "rules"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "audit.k8s.io/v1"},
        "kind": {"const": "Policy"},
        "metadata": {"type": "object"},
        "omitStages": {"type": "array", "items": {"enum": ["RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"]}},
        "omitManagedFields": {"type": "boolean"},
        "rules": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["level"],
                "additionalProperties": False,
                "properties": {
                    "level": {"enum": ["None", "Metadata", "Request", "RequestResponse"]},
                    "users": {"type": "array", "items": {"type": "string"}},
                    "userGroups": {"type": "array", "items": {"type": "string"}},
                    "verbs": {"type": "array", "items": {"type": "string"}},
                    "resources": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "group": {"type": "string"},
                                "resources": {"type": "array", "items": {"type": "string"}},
                                "resourceNames": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                    },
                    "namespaces": {"type": "array", "items": {"type": "string"}},
                    "nonResourceURLs": {"type": "array", "items": {"type": "string"}},
                    "omitStages": {"type": "array", "items": {"type": "string"}},
                    "omitManagedFields": {"type": "boolean"},
                },
            },
        },
    },
}


def test_the_kubernetes_audit_policy_records_every_write_to_istio_configuration():
    policy = yaml.safe_load((ROOT / "observability" / "kubernetes" / "audit-policy.yaml").read_text())
    jsonschema.validate(policy, AUDIT_POLICY_SCHEMA)

    def first_rule(group: str, resource: str, verb: str) -> dict | None:
        """The rule the API server applies (the first that matches), as it matches them."""
        for rule in policy["rules"]:
            if rule.get("verbs") and verb not in rule["verbs"]:
                continue
            if rule.get("userGroups") or rule.get("users") or rule.get("namespaces"):
                continue  # narrower than "any user": not relied on here
            if any(g.get("group", "") == group and resource in g.get("resources", []) for g in rule.get("resources", [])):
                return rule
        return None

    for group, resources in ISTIO_RESOURCES.items():
        for resource in resources:
            for verb in ("create", "update", "patch", "delete", "deletecollection"):
                rule = first_rule(group, resource, verb)
                assert rule and rule["level"] == "RequestResponse", f"{verb} {group}/{resource}: {rule}"
    # Nothing else is swept in at RequestResponse (Secrets least of all).
    listed = {(g.get("group", ""), r) for rule in policy["rules"] for g in rule.get("resources", []) for r in g["resources"]}
    assert listed - {(g, r) for g, rs in ISTIO_RESOURCES.items() for r in rs} == set()
    assert first_rule("", "secrets", "get") is None


def test_yamllint_clean():
    yamllint = shutil.which("yamllint")
    assert yamllint, "yamllint is installed by scripts/setup.sh"
    out = subprocess.run(
        [
            yamllint,
            "-c",
            str(ROOT / ".yamllint.yaml"),
            "envoyfilter",
            "observability",
            "e2e/envoy.yaml",
            "e2e/docker-compose.yaml",
            "e2e/docker-compose.observability.yaml",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout


@pytest.mark.parametrize("path, doc", documents(), ids=lambda x: x.name if isinstance(x, Path) else x["metadata"]["name"])
def test_manifest_matches_its_crd_schema(path, doc):
    schema = crd_schema(doc["kind"], doc["apiVersion"])
    jsonschema.validate({"spec": doc["spec"]}, {"type": "object", "properties": {"spec": schema["properties"]["spec"]}})
    spec = doc["spec"]
    # The CEL rules (x-kubernetes-validations) a plain JSON Schema validator skips, for these kinds.
    assert sum(k in spec for k in ("selector", "targetRef", "targetRefs")) <= 1, "one of selector / targetRef(s)"
    if doc["kind"] == "TrafficExtension":
        assert ("wasm" in spec) != ("lua" in spec), "exactly one of wasm or lua"
    wasm = spec.get("wasm", spec) if doc["kind"] in ("WasmPlugin", "TrafficExtension") else None
    if wasm is not None:
        assert wasm["url"].split("://")[0] in ("oci", "http", "https", "file")
        for env in wasm.get("vmConfig", {}).get("env", []):
            assert env.get("valueFrom") != "HOST" or "value" not in env, "value only with valueFrom INLINE"


@pytest.mark.parametrize("where, config", plugin_configs(), ids=lambda x: x if x.endswith(")") or ":" in x else "")
def test_embedded_plugin_config_passes_the_plugins_own_validation(cli, tmp_path, where, config):
    f = tmp_path / "config.json"
    f.write_text(config)
    out = subprocess.run([str(cli), "check", "--assume-hmac-key", "--strict", str(f)], capture_output=True, text=True)
    assert out.returncode == 0, f"{where}: {out.stdout}{out.stderr}"
    assert ": ok (" in out.stdout and "warning" not in out.stdout


def test_the_e2e_bootstrap_config_checks_strictly(cli, tmp_path):
    f = tmp_path / "config.json"
    f.write_text(json.dumps(harness.plugin_config(yaml.safe_load((harness.E2E / "envoy.yaml").read_text()))))
    out = subprocess.run([str(cli), "check", "--strict", str(f)], capture_output=True, text=True)
    assert out.returncode == 0 and "warning" not in out.stdout, out.stdout


def test_check_warns_about_rules_that_cannot_do_what_they_say(cli, tmp_path):
    """The issue's example: a drop for /healthz after a sample rule for every GET never
    applies to a GET. A warning never refuses; --strict makes it fail."""
    f = tmp_path / "config.json"
    f.write_text(
        json.dumps(
            {
                "rules": [
                    {"name": "gets", "match": {"methods": ["GET"]}, "action": "sample", "sample_rate": 0.05},
                    {"name": "health", "match": {"paths": [{"exact": "/healthz"}]}, "action": "drop"},
                    {"name": "admin", "match": {"paths": [{"prefix": "/admin"}], "methods": ["GET"]}, "action": "audit"},
                    {"name": "quiet", "action": "sample", "sample_rate": 0},
                ]
            }
        )
    )
    out = subprocess.run([str(cli), "check", str(f)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    lines = out.stdout.splitlines()
    assert lines[:-1] == [
        f'{f}: warning: rules[1]: "health" is partly shadowed: GET requests to /healthz go to rules[0] "gets" first '
        '(sample at 0.05); move "health" above it if they should be drop',
        f'{f}: warning: rules[2]: "admin" can never apply: every request it matches is taken first by rules[0] "gets" '
        "(first match wins); move it above, or remove it",
        f'{f}: warning: rules[3]: "quiet" samples at rate 0 and so never records; write "action": "drop" to say so '
        "(its requests are then counted as dropped, not sampled out)",
    ]
    assert lines[-1].startswith(f"{f}: ok (4 rules")
    strict = subprocess.run([str(cli), "check", "--strict", str(f)], capture_output=True, text=True)
    assert strict.returncode == 1
    assert strict.stdout.splitlines()[-1] == f"{f}: failed (--strict): 3 warnings"


def test_check_config_prints_what_envoy_would(cli, tmp_path):
    f = tmp_path / "bad.json"
    f.write_text('{"rules": [{"name": "a", "action": "audt"}]}')
    out = subprocess.run([str(cli), "check", str(f)], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stdout.strip() == (
        f"{f}: meshaudit: invalid plugin configuration: rules[0].action: unknown variant "
        "`audt`, expected one of `audit`, `sample`, `drop` at line 1 column 41"
    )
    # Hashing without a key is refused unless the key is known to come at run time.
    f.write_text('{"redaction": {"sensitive_header_action": "hash"}}')
    out = subprocess.run([str(cli), "check", str(f)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 1 and "MESHAUDIT_HMAC_KEY is not set" in out.stdout


def test_published_schema_is_current_and_accepts_the_shipped_configs(cli):
    generated = subprocess.run([str(cli), "schema"], capture_output=True, text=True, check=True).stdout
    assert SCHEMA.exists(), (
        "envoyfilter/meshaudit-config.schema.json is missing: run `cargo run --features cli --bin meshaudit -- schema`"
    )
    assert json.loads(SCHEMA.read_text()) == json.loads(generated), (
        "the committed schema is stale: regenerate it with "
        "`cargo run --features cli --bin meshaudit -- schema > envoyfilter/meshaudit-config.schema.json`"
    )
    schema = json.loads(generated)
    for _where, config in plugin_configs():
        jsonschema.validate(json.loads(config), schema)
    jsonschema.validate(harness.plugin_config(yaml.safe_load((harness.E2E / "envoy.yaml").read_text())), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"rules": [{"name": "a", "action": "audt"}]}, schema)


@pytest.mark.parametrize("name", ["a", "0x", "admin-api", "a_b", "x" * 64, "", "a.b", "-a", "_a", "Admin", "a b", "x" * 65])
def test_schema_and_validator_agree_on_rule_names(cli, tmp_path, name):
    """The rule-name grammar the schema publishes (a regular expression, checked here by
    jsonschema's own engine) is the one the plugin's validator applies."""
    config = {"rules": [{"name": name, "action": "audit"}]}
    try:
        jsonschema.validate(config, json.loads(SCHEMA.read_text()))
        schema_accepts = True
    except jsonschema.ValidationError:
        schema_accepts = False
    f = tmp_path / "config.json"
    f.write_text(json.dumps(config))
    validator_accepts = subprocess.run([str(cli), "check", str(f)], capture_output=True, text=True).returncode == 0
    assert schema_accepts == validator_accepts, f"{name!r}: schema {schema_accepts}, validator {validator_accepts}"


def test_istio_encoded_wasmplugin_config_loads_in_envoy(tmp_path):
    """The WasmPlugin's pluginConfig exactly as Istio delivers it (a Struct: doubles), with the
    HMAC key passed as a VM environment variable, as vmConfig.env does."""
    wasmplugin = next(doc for _, doc in documents() if doc["kind"] == "WasmPlugin" and doc["spec"].get("type") == "HTTP")
    plugin = json.dumps(istio_struct(wasmplugin["spec"]["pluginConfig"]))
    upstream = harness.Upstream()
    try:
        config = harness.load_config(upstream.port, harness.free_port(), harness.free_port())
        harness.set_plugin_config(config, plugin)
        vm = harness.wasm_filter(config)["typed_config"]["config"]["vm_config"]
        vm["environment_variables"] = {"key_values": {"MESHAUDIT_HMAC_KEY": "an-hmac-key-from-a-secret-0123"}}
        envoy = harness.Envoy(config, tmp_path)
        try:
            envoy.wait_ready()
            applied = envoy.wait_records(lambda r: r["kind"] == "config_applied")
            assert [a["config"]["rules"] for a in applied] == [[r["name"] for r in wasmplugin["spec"]["pluginConfig"]["rules"]]]
        finally:
            envoy.stop()
    finally:
        upstream.stop()


MESH_PROTO = harness.E2E / "data" / "istio-api" / "config.proto"
HANDOFF_MESH = ROOT / "observability" / "istio" / "meshconfig-handoff.yaml"


def proto_messages(text: str) -> dict[str, dict[str, str]]:
    """Every message of a .proto file, by its dotted name (`MeshConfig.ExtensionProvider`):
    its direct fields, name to type."""
    messages: dict[str, dict[str, str]] = {}
    scope: list[str | None] = []
    for line in text.splitlines():
        code = line.split("//", 1)[0].strip()
        opened = re.match(r"(message|enum|oneof)\s+(\w+)\s*{", code)
        field = re.match(r"(?:repeated\s+)?([\w.]+)\s+(\w+)\s*=\s*\d+", code)
        if opened:
            kind, name = opened.groups()
            # A oneof's fields belong to its message; an enum's values are no fields.
            scope.append(name if kind == "message" else (None if kind == "enum" else "oneof"))
            if kind == "message":
                messages[".".join(n for n in scope if n != "oneof")] = {}
            code = code[opened.end() :]
        elif field and scope and None not in scope:
            owner = ".".join(n for n in scope if n != "oneof")
            messages[owner][field.group(2)] = field.group(1)
        # Any other braces (options, message literals) open and close scopes of no fields.
        for brace in re.findall(r"[{}]", code):
            if brace == "{":
                scope.append(None)
            elif scope:
                scope.pop()
    return messages


def snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def check_fields(value, message: str, messages: dict, where: str) -> None:
    fields = messages[message]
    for key, sub in value.items():
        field = snake(key)
        assert field in fields, f"{where}.{key}: {message} has no field {field} ({sorted(fields)})"
        kind = fields[field]
        if kind.startswith("google.protobuf.") or kind[0].islower():
            continue  # a scalar, or a Struct (free-form labels)
        # The nested message, looked up from the innermost scope out, as protoc resolves it.
        parts = message.split(".")
        resolved = next(
            (".".join(parts[:i] + [kind]) for i in range(len(parts), -1, -1) if ".".join(parts[:i] + [kind]) in messages),
            None,
        )
        assert resolved, f"{where}.{key}: no message {kind}"
        for item in sub if isinstance(sub, list) else [sub]:
            check_fields(item, resolved, messages, f"{where}.{key}")


def test_the_handoff_mesh_config_uses_istios_field_names():
    """The MeshConfig fragment is no CRD: its every key is checked against Istio's own API
    (mesh/v1alpha1/config.proto from istio/api, copied into e2e/data/istio-api/)."""
    messages = proto_messages(MESH_PROTO.read_text())
    assert "envoy_otel_als" in messages["MeshConfig.ExtensionProvider"], "the parser reads oneof fields"
    fragment = yaml.safe_load(HANDOFF_MESH.read_text())
    check_fields(fragment["meshConfig"], "MeshConfig", messages, "meshConfig")
    with pytest.raises(AssertionError, match="has no field"):
        check_fields({"extensionProviders": [{"name": "x", "envoyFileAccesLog": {}}]}, "MeshConfig", messages, "meshConfig")
    providers = {p["name"]: p for p in fragment["meshConfig"]["extensionProviders"]}
    # The format is the record itself, as e2e/envoy.yaml's access logger writes it.
    assert all(
        "%FILTER_STATE(wasm.meshaudit_record:PLAIN)%"
        in (p.get("envoyFileAccessLog") or p.get("envoyOtelAls"))["logFormat"]["text"]
        for p in providers.values()
    )
    telemetry = yaml.safe_load((ROOT / "envoyfilter" / "telemetry-handoff.yaml").read_text())
    [logging] = telemetry["spec"]["accessLogging"]
    assert {p["name"] for p in logging["providers"]} == set(providers), "the Telemetry enables the providers defined"
    envoy = yaml.safe_load((harness.E2E / "envoy.yaml").read_text())
    assert logging["filter"]["expression"] in json.dumps(envoy), "the CEL filter the e2e Envoy runs"
