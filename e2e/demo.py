"""The demo: two Envoy 1.40 sidecars with meshaudit (e2e/mesh.py: mTLS with SPIFFE
certificates, RBAC enforced and dry-run, jwt_authn, a network filter for TLS failures) on
loopback, some traffic, the records, and the trail's answers: `meshaudit summary`, `report`,
`policy impact`, then a short learning window and `policy suggest`.

Run through scripts/demo.sh (which builds the plugin and the command first).
  --serve   keep the mesh running after the traffic, for your own requests (Ctrl-C stops it
            and prints the answers)
"""

import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import harness
import mesh
import yaml

CLI = harness.ROOT / "target" / "debug" / "meshaudit"
LEARNING = yaml.safe_load((harness.ROOT / "envoyfilter" / "wasmplugin-learning.yaml").read_text())["spec"]["pluginConfig"]


def send(m: mesh.Mesh, method: str, path: str, headers: dict | None = None, note: str = "") -> str:
    request_id = str(uuid.uuid4())
    status, _, _ = m.via_client(method, path, {"x-request-id": request_id, **(headers or {})})
    if note:
        print(f"  {method} {path} -> {status}  ({note})")
    return request_id


def traffic(m: mesh.Mesh) -> None:
    for n in range(50):
        send(m, "GET", f"/products/{n}")
    print("  GET /products/0..49 -> 200  (routine: sampled out at rate 0, counted in accounting)")
    for _ in range(3):
        send(m, "GET", "/admin/users", note="an audited endpoint: a record at both sidecars")
    send(m, "GET", "/admin/forbidden/keys", note="denied by ns[pay]-policy[deny-forbidden]")
    send(m, "GET", "/admin/refunds", note="denied by a principal-based DENY policy")
    for _ in range(2):
        send(m, "GET", "/reports/daily", note="allowed; a dry-run DENY policy would deny it")
    send(m, "GET", "/jwt/me", note="no token")
    send(m, "GET", "/jwt/me", {"authorization": f"Bearer {m.issuer.token('jane', expires_in=-120)}"}, note="expired token")
    send(m, "GET", "//admin/x/%2e%2e/users", note="reads as /admin/users: ambiguous")
    status, _, _ = m.plaintext("GET", "/orders", {"x-request-id": str(uuid.uuid4())})
    print(f"  GET /orders (plaintext, no certificate) -> {status}")
    for cert in (None, "expired", "rogue"):
        m.handshake(m.certs[cert] if cert else None)
    print("  three TLS handshakes refused: no client certificate, an expired one, one from another CA")


def cli(*args: str) -> str:
    out = subprocess.run([str(CLI), *args], capture_output=True, text=True)
    return out.stdout + out.stderr


def main() -> None:
    serve = "--serve" in sys.argv
    workdir = Path(tempfile.mkdtemp(prefix="meshaudit-demo-"))
    (workdir / "mesh").mkdir()
    (workdir / "learning").mkdir()
    m = mesh.Mesh(workdir / "mesh", adjust_server=mesh.set_directions, adjust_client=mesh.with_client_plugin)
    logs = [str(m.server.log_path), str(m.client.log_path)]
    try:
        print(
            f"Client sidecar on 127.0.0.1:{m.ports['client']} (plain HTTP in, mTLS out as {mesh.CLIENT_ID})\n"
            f"  -> server sidecar on 127.0.0.1:{m.ports['mtls']} ({mesh.SERVER_ID}) -> a local upstream\n"
        )
        traffic(m)
        time.sleep(0.5)
        if serve:
            print(f"\nServing; try: curl -s http://127.0.0.1:{m.ports['client']}/admin/x ; Ctrl-C stops and prints the answers")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        # Each sidecar writes its final accounting when it stops.
        m.stop()
    records = m.server.records() + m.client.records()
    print(f"\n{len(records)} records in the two sidecars' logs (prefix '{harness.RECORD_PREFIX.strip()}'); the denials:\n")
    for record in records:
        if record["kind"] in ("denied", "auth_failure", "tls_failure", "shadow_denied"):
            print(json.dumps(record))
    print(f"\n$ meshaudit summary {' '.join(logs)}\n")
    print(cli("summary", *logs))
    report = workdir / "report.html"
    print(f"$ meshaudit report --html {report} ...\n{cli('report', '--html', str(report), *logs)}")
    print(f"$ meshaudit policy impact ...\n{cli('policy', 'impact', *logs)}")

    # A learning window: the server's sidecar records every request at rate 1
    # (envoyfilter/wasmplugin-learning.yaml), then `policy suggest` reads the trail.
    learning = mesh.Mesh(workdir / "learning", adjust_server=mesh.with_server_plugin(LEARNING))
    try:
        for n in range(7):
            send(learning, "GET", f"/api/items/{n}")
        send(learning, "POST", "/api/orders")
        send(learning, "GET", "/admin/users")
    finally:
        learning.stop()
    learned = [str(learning.server.log_path)]
    print("A learning window: GET /api/items/0..6, POST /api/orders, GET /admin/users from the client sidecar")
    print(f"$ meshaudit policy suggest --workload {mesh.SERVER_ID} --selector app=pay {learned[0]}\n")
    print(cli("policy", "suggest", "--workload", mesh.SERVER_ID, "--selector", "app=pay", *learned))
    print(f"Envoy's logs: {' '.join(logs + learned)}\nThe report: {report}")


if __name__ == "__main__":
    main()
