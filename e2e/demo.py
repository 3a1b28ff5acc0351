"""The demo: Envoy 1.40 + meshaudit + an upstream on loopback, some traffic, the records.

Run through scripts/demo.sh (which builds the plugin first).
  --serve   keep the stack running afterwards, for your own requests (Ctrl-C stops it)
"""

import json
import sys
import time
import uuid

import harness

# Routine traffic first, so that the last request's record (a 401 is always audited) is
# the last to be written: the demo waits for it.
TRAFFIC = [("GET", f"/products/{n}", {}) for n in range(200)] + [
    ("GET", "/admin/users?token=never-logged", {"user-agent": "demo/1.0", "authorization": "Bearer demo.secret.token"}),
    ("GET", "//admin/%2e%2e/admin/settings", {"user-agent": "sneaky/1.0"}),
    ("GET", "/admin/forbidden/keys", {}),
    ("PUT", "/api/v1/users/42/roles", {}),
    ("GET", "/healthz", {}),
    ("GET", "/status/404", {}),
    ("GET", "/status/503", {}),
    ("GET", "/direct", {}),
    ("GET", "/status/401", {}),
]


def main() -> None:
    serve = "--serve" in sys.argv
    stack = harness.Stack()
    try:
        print(f"Envoy listening on 127.0.0.1:{stack.listen_port} (admin 127.0.0.1:{stack.envoy.admin_port})")
        print("  GET /products/0..199 -> 200 (routine traffic, sampled at the default rate)")
        for method, path, headers in TRAFFIC:
            last_id = str(uuid.uuid4())
            status, _, _ = stack.request(
                method, path, {"x-request-id": last_id, **headers}, body=b"{}" if method == "PUT" else None
            )
            if not path.startswith("/products/"):
                print(f"  {method} {path} -> {status}")
        # Envoy writes a request's record when the stream ends, before it serves the next one.
        stack.envoy.wait_records(lambda r: r.get("request", {}).get("id") == last_id)
        records = stack.envoy.records()
        print(
            f"\n{len(records)} audit records from {len(TRAFFIC)} requests (prefix '{harness.RECORD_PREFIX.strip()}' in Envoy's log):\n"
        )
        for record in records:
            print(json.dumps(record, indent=None))
        print(f"\nEnvoy's full log: {stack.envoy.log_path}")
        print(f"The same request records, written by Envoy's access logger (hand-off): {stack.audit_log_path}")
        if serve:
            print(f"\nServing; try: curl -s http://127.0.0.1:{stack.listen_port}/admin/x ; records go to {stack.envoy.log_path}")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
