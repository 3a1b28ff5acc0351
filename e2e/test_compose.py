"""The docker-compose stack for users: validated here (CI has no Docker engine to run it)."""

import shutil
import subprocess
from pathlib import Path

import harness
import pytest
import yaml

COMPOSE = harness.E2E / "docker-compose.yaml"


@pytest.fixture(scope="module")
def resolved():
    docker_compose = shutil.which("docker-compose")
    assert docker_compose, "docker-compose is installed by scripts/setup.sh"
    out = subprocess.run([docker_compose, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_compose_file_is_valid_and_images_are_pinned(resolved):
    for name, service in resolved["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: image {image} is not pinned"
    assert resolved["services"]["envoy"]["image"] == "envoyproxy/envoy:v1.40.0", "the Envoy the tests run"


def test_compose_runs_the_same_envoy_config_and_wasm_as_the_tests(resolved):
    volumes = resolved["services"]["envoy"]["volumes"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in volumes}
    # The directory of the hand-off access log exists in the container.
    shipped_log = yaml.safe_load((harness.E2E / "envoy.yaml").read_text())
    log_path = harness.http_connection_manager(shipped_log)["access_log"][0]["typed_config"]["path"]
    assert str(Path(log_path).parent) in mounts, f"{log_path} needs a volume"
    assert mounts["/etc/envoy/envoy.yaml"] == str(harness.E2E / "envoy.yaml")
    assert mounts["/etc/envoy/meshaudit.wasm"] == str(harness.WASM)
    shipped = yaml.safe_load((harness.E2E / "envoy.yaml").read_text())
    code = harness.wasm_filter(shipped)["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"]
    assert code == "/etc/envoy/meshaudit.wasm"


def test_upstream_shares_envoys_network_so_the_cluster_address_holds(resolved):
    assert resolved["services"]["upstream"]["network_mode"] == "service:envoy"
    shipped = yaml.safe_load((harness.E2E / "envoy.yaml").read_text())
    cluster = shipped["static_resources"]["clusters"][0]
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert (address["address"], address["port_value"]) == ("127.0.0.1", 8081)
    assert resolved["services"]["upstream"]["command"][-1] == "8081"
