"""The OCI image: meshaudit.wasm pushed in the layout Istio pulls to a local registry
(Debian's docker-registry on loopback), pulled back byte for byte, and the rendered
manifests pinned to exactly what was pushed."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys

import harness
import pytest
import yaml

sys.path.insert(0, str(harness.ROOT / "scripts"))
import package_oci  # noqa: E402


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    exe = shutil.which("docker-registry")
    assert exe, "docker-registry is installed by scripts/setup.sh"
    root = tmp_path_factory.mktemp("registry")
    port = harness.free_port()
    config = root / "config.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "log": {"level": "error"},
                "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
                "http": {"addr": f"127.0.0.1:{port}"},
            }
        )
    )
    proc = subprocess.Popen([exe, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        harness.wait_for_port(port)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_push_pull_and_pin(registry, tmp_path):
    reference = f"{registry}/meshaudit/meshaudit:test"
    wasm = harness.WASM.read_bytes()
    digest = package_oci.push(reference, harness.WASM, insecure=True)

    manifest_digest, manifest = package_oci.manifest(reference, insecure=True)
    assert manifest_digest == digest
    assert manifest["config"]["mediaType"] == package_oci.CONFIG_MEDIA_TYPE
    [layer] = manifest["layers"]
    assert layer["mediaType"] == package_oci.LAYER_MEDIA_TYPE
    assert layer["digest"] == "sha256:" + hashlib.sha256(wasm).hexdigest()
    assert layer["size"] == len(wasm)

    import oras.client  # type: ignore[import-not-found]

    pulled = oras.client.OrasClient(insecure=True).pull(target=reference, outdir=str(tmp_path / "pulled"))
    [path] = [p for p in pulled if p.endswith(".wasm")]
    assert hashlib.sha256(open(path, "rb").read()).digest() == hashlib.sha256(wasm).digest(), "pulled back byte for byte"

    written = package_oci.render(reference, digest, tmp_path / "manifests")
    assert {p.name for p in written} == {
        "wasmplugin-admin-streams.yaml",
        "wasmplugin-http.yaml",
        "wasmplugin-learning.yaml",
        "wasmplugin-network.yaml",
        "wasmplugin-waypoint.yaml",
        "trafficextension.yaml",
    }
    for p in written:
        for doc in yaml.safe_load_all(p.read_text()):
            target = doc["spec"].get("wasm", doc["spec"])
            assert target["url"] == f"oci://{reference}"
            assert target["sha256"] == digest.removeprefix("sha256:")
