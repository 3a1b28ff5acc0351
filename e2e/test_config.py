"""Plugin configuration as Envoy loads it: rejected with a clear line, or applied."""

import json

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
        ('{"rules": [{"name": "a", "action": "audt"}]}',
         "meshaudit: invalid plugin configuration: rules[0].action: unknown variant `audt`, expected one of `audit`, `sample`, `drop`"),
        ('{"default_sample_rate": 2}',
         "meshaudit: invalid plugin configuration: default_sample_rate: must be a fraction from 0 to 1, got 2"),
        ('{"rules": [', "meshaudit: invalid plugin configuration: rules: EOF while parsing a list at line 1 column 11"),
    ],
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
