"""Plugin configuration as Envoy loads it: rejected with a clear line, or applied."""

import hashlib
import json
import subprocess
import time

import harness
import pytest


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


def start_envoy(workdir, plugin):
    upstream_port = harness.free_port()
    config = harness.load_config(upstream_port, harness.free_port(), harness.free_port())
    harness.set_plugin_config(config, plugin)
    return harness.Envoy(config, workdir)


@pytest.mark.parametrize(
    "plugin, message",
    [
        (
            '{"rules": [{"name": "a", "action": "audt"}]}',
            "meshaudit: invalid plugin configuration: rules[0].action: unknown variant `audt`, expected one of `audit`, `sample`, `drop`",
        ),
        (
            '{"default_sample_rate": 2}',
            "meshaudit: invalid plugin configuration: default_sample_rate: must be a fraction from 0 to 1, got 2",
        ),
        ('{"rules": [', "meshaudit: invalid plugin configuration: rules: EOF while parsing a list at line 1 column 11"),
        # Refused before it is read into the VM: a valid document, padded past 1 MiB.
        (
            '{"rules": []' + " " * (1 << 20) + "}",
            f"meshaudit: invalid plugin configuration: the configuration is {(1 << 20) + 13} bytes; at most {1 << 20} are accepted",
        ),
    ],
    ids=["unknown-action", "sample-rate", "truncated-json", "oversized"],
)
def test_invalid_config_is_refused_at_start_with_a_clear_line(workdir, plugin, message):
    envoy = start_envoy(workdir, plugin)
    try:
        code = envoy.wait_exit(timeout=60)
    finally:
        envoy.stop()
    log = envoy.log()
    assert code != 0, "Envoy must not start with an invalid plugin configuration"
    assert message in log, log[-3000:]
    rejected = [r for r in envoy.records() if r["kind"] == "config_rejected"]
    assert rejected and message.split("configuration: ", 1)[1] in rejected[0]["config"]["error"]


def test_istio_encoded_numbers_load(workdir):
    """Istio turns every pluginConfig number into a double."""
    plugin = {
        "version": 1.0,
        "default_sample_rate": 0.0,
        "limits": {"max_field_bytes": 512.0},
        "rules": [{"name": "teapots", "match": {"status": [418.0]}, "action": "audit"}],
    }
    upstream = harness.Upstream()
    try:
        listen = harness.free_port()
        config = harness.load_config(upstream.port, listen, harness.free_port())
        harness.set_plugin_config(config, json.dumps(plugin))
        envoy = harness.Envoy(config, workdir)
        try:
            envoy.wait_ready()
            stack = type("S", (), {"listen_port": listen})()
            status, _, _ = harness.Stack.request(stack, "GET", "/status/418", {"x-request-id": "teapot-1"})
            assert status == 418
            found = envoy.wait_records(lambda r: r.get("request", {}).get("id") == "teapot-1")
            assert [r["why"]["rule"] for r in found] == ["teapots"]
        finally:
            envoy.stop()
    finally:
        upstream.stop()


def test_config_update_is_recorded_and_a_bad_update_keeps_the_old_config(tmp_path):
    """Listener updates through file-based LDS, as a control plane would push them, to an
    Envoy with two workers: every VM configures (the main thread's and one per worker), and
    one `config_applied` is written per change."""
    upstream = harness.Upstream()
    lds = harness.LdsConfig(tmp_path, upstream.port)
    push, listen, static = lds.push, lds.listen_port, lds.bootstrap

    first = '{"rules": [{"name": "admin", "match": {"paths": [{"prefix": "/admin"}]}, "action": "audit"}]}'
    second = '{"rules": [{"name": "b-only", "match": {"paths": [{"exact": "/b-only"}]}, "action": "audit"}]}'
    push(first)
    envoy = harness.Envoy(static, tmp_path, concurrency=2)
    stack = type("S", (), {"listen_port": listen})()
    send = lambda path, rid: harness.Stack.request(stack, "GET", path, {"x-request-id": rid})  # noqa: E731
    try:
        envoy.wait_ready()
        digest = lambda text: "sha256:" + hashlib.sha256(text.encode()).hexdigest()  # noqa: E731
        applied = envoy.wait_exactly(lambda r: r["kind"] == "config_applied", 1)
        assert [a["config"]["digest"] for a in applied] == [digest(first)]
        assert applied[0]["config"]["first_in_vm"] is True and "previous_digest" not in applied[0]["config"]
        # Envoy's base VM, the main thread's and one per worker: four VMs, one record.
        assert harness.stat(envoy, "wasm.envoy.wasm.runtime.v8.active") == 4

        push(second)
        update = envoy.wait_exactly(lambda r: r["kind"] == "config_applied" and r["config"]["digest"] == digest(second), 1)
        assert len(update) == 1
        assert update[0]["config"]["previous_digest"] == digest(first)
        assert "first_in_vm" not in update[0]["config"]
        assert update[0]["config"]["rules"] == ["b-only"]
        wait_serving = time.monotonic() + 10
        while send("/b-only", "probe")[0] != 200 and time.monotonic() < wait_serving:
            time.sleep(0.1)
        assert send("/b-only", "after-update")[0] == 200
        assert envoy.wait_records(lambda r: r.get("request", {}).get("id") == "after-update")[0]["why"]["rule"] == "b-only"

        push('{"rules": [{"name": "x", "action": "sometimes"}]}')
        rejected = envoy.wait_records(lambda r: r["kind"] == "config_rejected")
        assert rejected, envoy.log()[-3000:]
        assert rejected[0]["config"]["error"].startswith("rules[0].action: unknown variant `sometimes`")
        assert "meshaudit: invalid plugin configuration: rules[0].action" in envoy.log()
        # The previous configuration stays in force.
        assert send("/b-only", "after-bad-update")[0] == 200
        assert envoy.wait_records(lambda r: r.get("request", {}).get("id") == "after-bad-update")[0]["why"]["rule"] == "b-only"
        assert envoy.proc.poll() is None
    finally:
        envoy.stop()
        upstream.stop()


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_plugins_that_share_a_name_under_different_root_ids_each_have_their_own_history(tmp_path):
    """Two listeners, each with a plugin named `meshaudit` in one VM but configured
    differently, under different root ids, on two workers: one `config_applied` per
    configuration, neither claiming to replace the other (they used to write four)."""
    upstream = harness.Upstream()
    config = harness.load_config(upstream.port, harness.free_port(), harness.free_port())
    listeners = config["static_resources"]["listeners"]
    first = '{"instance_id": "one", "rules": [{"name": "admin", "match": {"paths": [{"prefix": "/admin"}]}, "action": "audit"}]}'
    second = '{"instance_id": "two", "rules": [{"name": "all", "match": {"paths": [{"prefix": "/"}]}, "action": "audit"}]}'
    harness.set_plugin_config(config, first)
    other = json.loads(json.dumps(listeners[0]))
    other["name"] = "other"
    other["address"]["socket_address"]["port_value"] = harness.free_port()
    listeners.append(other)
    other_view = {"static_resources": {"listeners": [other]}}
    harness.set_plugin_config(other_view, second)
    harness.wasm_filter(other_view)["typed_config"]["config"]["root_id"] = "second"
    envoy = harness.Envoy(config, tmp_path, concurrency=2)
    try:
        envoy.wait_ready()
        applied = envoy.wait_exactly(lambda r: r["kind"] == "config_applied", 2, settle=2.0)
        assert sorted(a["config"]["digest"] for a in applied) == sorted([digest_of(first), digest_of(second)])
        for record in applied:
            assert "previous_digest" not in record["config"], record
            assert record["config"]["first_in_vm"] is True
    finally:
        envoy.stop()
        upstream.stop()


def test_a_new_vm_id_starts_a_new_history_and_says_so(tmp_path):
    """Shared data is per `vm_id`: a listener update that moves the plugin to a new VM has no
    previous digest to name, and its `config_applied` says it is the first in that VM."""
    upstream = harness.Upstream()
    lds = harness.LdsConfig(tmp_path, upstream.port)
    first = '{"rules": [{"name": "one", "match": {"paths": [{"prefix": "/one"}]}, "action": "audit"}]}'
    second = '{"rules": [{"name": "two", "match": {"paths": [{"prefix": "/two"}]}, "action": "audit"}]}'
    lds.push(first)
    envoy = harness.Envoy(lds.bootstrap, tmp_path)
    try:
        envoy.wait_ready()
        envoy.wait_exactly(lambda r: r["kind"] == "config_applied", 1)
        harness.wasm_filter({"static_resources": {"listeners": [lds.listener]}})["typed_config"]["config"]["vm_config"][
            "vm_id"
        ] = "meshaudit-next"
        lds.push(second)
        update = envoy.wait_exactly(lambda r: r["kind"] == "config_applied" and r["config"]["digest"] == digest_of(second), 1)
        assert update[0]["config"]["first_in_vm"] is True
        assert "previous_digest" not in update[0]["config"]
    finally:
        envoy.stop()
        upstream.stop()


THREE_MISTAKES = """{"rules": [
  {"name": "a", "matchh": {}, "action": "audit"},
  {"name": "b", "action": "sample"},
  {"name": "a", "action": "audit"}
]}"""


def test_check_reports_every_error_and_envoys_line_first(workdir):
    """`meshaudit check` lists every independent error, one line each; its first is the line
    the real Envoy logs when it refuses the same configuration."""
    f = workdir / "three.json"
    f.write_text(THREE_MISTAKES)
    cli = harness.ROOT / "target" / "debug" / "meshaudit"
    out = subprocess.run([str(cli), "check", str(f)], capture_output=True, text=True)
    assert out.returncode == 1
    lines = [line.removeprefix(f"{f}: ") for line in out.stdout.splitlines()]
    assert lines[1:] == [
        'meshaudit: invalid plugin configuration: rules[1].sample_rate: required with action "sample" (a fraction from 0 to 1, e.g. 0.05)',
        'meshaudit: invalid plugin configuration: rules[2].name: duplicate rule name "a"; rule names must be unique',
        "3 errors",
    ]
    envoy = start_envoy(workdir, THREE_MISTAKES)
    try:
        assert envoy.wait_exit(timeout=60) != 0
    finally:
        envoy.stop()
    assert lines[0] in envoy.log(), (lines[0], envoy.log()[-3000:])
