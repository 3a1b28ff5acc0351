"""Packages meshaudit.wasm as an OCI artifact in the layout Istio pulls, pushes it,
and renders the WasmPlugin / TrafficExtension manifests pinned to what was pushed.

  python3 scripts/package_oci.py REGISTRY/REPOSITORY:TAG [--insecure] [--out dist/envoyfilter]

The artifact: one layer `application/vnd.module.wasm.content.layer.v1+wasm` (the module)
and config `application/vnd.module.wasm.config.v1+json`, the Wasm OCI layout Istio's
agent understands. The manifests get `url: oci://REGISTRY/REPOSITORY:TAG` and `sha256:`
the manifest digest, so Istio refuses anything else under that tag.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
WASM = ROOT / "target" / "meshaudit.wasm"
LAYER_MEDIA_TYPE = "application/vnd.module.wasm.content.layer.v1+wasm"
CONFIG_MEDIA_TYPE = "application/vnd.module.wasm.config.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def push(reference: str, wasm: Path, insecure: bool) -> str:
    """Pushes the module; returns the manifest digest (`sha256:<hex>`)."""
    import oras.client  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.json"
        config.write_text("{}")
        module = Path(tmp) / "plugin.wasm"
        module.write_bytes(wasm.read_bytes())
        client = oras.client.OrasClient(insecure=insecure)
        client.push(
            target=reference,
            files=[f"{module}:{LAYER_MEDIA_TYPE}"],
            manifest_config=f"{config}:{CONFIG_MEDIA_TYPE}",
            disable_path_validation=True,
        )
    return manifest(reference, insecure)[0]


def manifest(reference: str, insecure: bool) -> tuple[str, dict]:
    """The manifest digest and body of `reference`, straight from the registry API."""
    registry, _, rest = reference.partition("/")
    repository, _, tag = rest.rpartition(":")
    scheme = "http" if insecure else "https"
    request = urllib.request.Request(f"{scheme}://{registry}/v2/{repository}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    with urllib.request.urlopen(request, timeout=30) as r:
        body = r.read()
    return "sha256:" + hashlib.sha256(body).hexdigest(), json.loads(body)


def manifest_paths() -> list[Path]:
    """The manifests in envoyfilter/; `*.cases.yaml` beside them are rule tests (`meshaudit test`)."""
    return sorted(p for p in (ROOT / "envoyfilter").glob("*.yaml") if not p.name.endswith(".cases.yaml"))


def render(reference: str, digest: str, out: Path) -> list[Path]:
    """Copies the manifests that load the module, with url and sha256 pinned."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in manifest_paths():
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        changed = False
        for doc in docs:
            spec = doc.get("spec", {})
            target = spec.get("wasm", spec) if doc["kind"] in ("WasmPlugin", "TrafficExtension") else None
            if target is not None:
                target["url"] = f"oci://{reference}"
                target["sha256"] = digest.removeprefix("sha256:")
                changed = True
        if changed:
            dest = out / path.name
            dest.write_text(yaml.safe_dump_all(docs, sort_keys=False))
            written.append(dest)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", help="REGISTRY/REPOSITORY:TAG")
    parser.add_argument("--insecure", action="store_true", help="plain HTTP registry (a local one)")
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "envoyfilter")
    args = parser.parse_args()
    if not WASM.exists():
        sys.exit(f"{WASM} is missing: cargo build --release --target wasm32-wasip1")
    digest = push(args.reference, WASM, args.insecure)
    for path in render(args.reference, digest, args.out):
        print(f"wrote {path}")
    print(f"pushed oci://{args.reference} ({digest})")


if __name__ == "__main__":
    main()
