"""What meshaudit costs per request, side by side with the alternatives, in one run.

Every variant is its own Envoy 1.40 (one worker, pinned to CPU 0) answering with a
direct response; wrk (HTTP/1.1) and h2load (HTTP/2), pinned to CPU 1, drive them in
interleaved rounds (A B C … A B C …, each variant under each protocol). For each variant
and protocol: the median over rounds of requests per second, p50/p99 latency and Envoy's
CPU time per request (all threads' on-CPU time from /proc/<pid>/task/*/schedstat over
the round, divided by the requests served).

Run it with `bash bench/run.sh` (which builds everything first). Environment:
ROUNDS (default 7), DURATION seconds per round (default 5), CONNECTIONS for HTTP/1.1
(default 32), H2_CONNECTIONS and H2_STREAMS for HTTP/2 (default 4 connections of 32
concurrent streams, as between sidecars), PROTOCOLS (default "http1,h2"), OUT (default
bench/RESULTS.md), VARIANTS (name prefixes to run, separated by ";", with the two
baselines), LOG_TO_FILE=1
(Envoy writes its log file itself instead of a pipe a collector drains), BASELINE_WASM (another
build of meshaudit, e.g. main's before a change: each chosen meshaudit variant also runs with it,
as "<name> (baseline)", in the same interleaved rounds).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "e2e"))
import harness  # noqa: E402

BENCH_WASM = ROOT / "bench" / "filters" / "target" / "wasm32-wasip1" / "release" / "bench_filters.wasm"
ROUNDS = int(os.environ.get("ROUNDS", "7"))
DURATION = int(os.environ.get("DURATION", "5"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "32"))
H2_CONNECTIONS = int(os.environ.get("H2_CONNECTIONS", "4"))
H2_STREAMS = int(os.environ.get("H2_STREAMS", "32"))
PROTOCOLS = [p for p in os.environ.get("PROTOCOLS", "http1,h2").split(",") if p]
PROTOCOL_NAMES = {"http1": "HTTP/1.1 (wrk)", "h2": "HTTP/2 (h2load)"}
TARGET = "/products/42?page=2&token=abc"
OUT = Path(os.environ.get("OUT", ROOT / "bench" / "RESULTS.md"))
HMAC_KEY = "bench-hmac-key-0123456789abcdef"
# Envoy's log (where records go by default) is a pipe that another process drains into a file,
# as a container runtime collects a sidecar's stderr; LOG_TO_FILE=1 makes Envoy write the file itself.
LOG_COLLECTOR_CPU = None if os.environ.get("LOG_TO_FILE") == "1" else 1
UNBOUNDED = {"security": {"records_per_second": 1000000}, "routine": {"records_per_second": 1000000}}


# The trail key of the sealed variants (core::trail): every record gets its chain value.
TRAIL_KEY = "m-bench:" + "5a" * 32


def wasm_filter(wasm: Path, root_id: str, plugin: dict | None, sealed: bool = False) -> dict:
    env = {"MESHAUDIT_HMAC_KEY": HMAC_KEY, **({"MESHAUDIT_TRAIL_KEY": TRAIL_KEY} if sealed else {})}
    config = {
        "name": root_id,
        "root_id": root_id,
        "vm_config": {
            "vm_id": root_id,
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": str(wasm)}},
            "environment_variables": {"key_values": env},
        },
    }
    if plugin is not None:
        config["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": json.dumps(plugin)}
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", "config": config},
    }


def deny_all() -> dict:
    return harness.rbac_filter(
        {"ns[bench]-policy[deny-all]-rule[0]": {"permissions": [{"any": True}], "principals": [{"any": True}]}}
    )


def file_log(path: Path, cel: str | None = None) -> dict:
    log = {
        "name": "envoy.access_loggers.file",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog", "path": str(path)},
    }
    if cel:
        log["filter"] = {
            "extension_filter": {
                "name": "cel",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                    "expression": cel,
                },
            }
        }
    return log


def istio_rbac_layout() -> list[dict]:
    """Istio's authorization filters as its builder generates them for a workload with AUDIT,
    DENY and ALLOW policies (e2e/test_istio_authz.py checks the shapes): the benchmark's
    requests are allowed, matched by no AUDIT or DENY policy."""

    def rbac(action: str | None, policy: str, prefix: str) -> dict:
        permission = {"permissions": [{"url_path": {"path": {"prefix": prefix}}}], "principals": [{"any": True}]}
        return harness.rbac_filter({policy: permission}, action, shadow_rules_stat_prefix="istio_dry_run_allow_")

    return [
        rbac("LOG", "ns[bench]-policy[audit-admin]-rule[0]", "/admin"),
        rbac("DENY", "ns[bench]-policy[deny-forbidden]-rule[0]", "/forbidden"),
        rbac(None, "ns[bench]-policy[allow-all]-rule[0]", "/"),
    ]


def handoff_log(path: Path) -> dict:
    """Envoy's file access logger writing the records the plugin hands off (as in e2e/envoy.yaml)."""
    log = file_log(path, "'wasm.meshaudit_record' in filter_state")
    log["typed_config"]["log_format"] = {"text_format_source": {"inline_string": "%FILTER_STATE(wasm.meshaudit_record:PLAIN)%\n"}}
    return log


# name -> (extra http filters, access loggers, request headers wrk sends, what it shows)
def variants(workdir: Path, wasm: Path = harness.WASM) -> list[tuple[str, list, list, list[str]]]:
    def meshaudit(plugin: dict, sealed: bool = False) -> list[dict]:
        return [wasm_filter(wasm, "meshaudit", plugin, sealed)]

    request_level = {
        "budgets": UNBOUNDED,
        "redaction": {"query_params": ["page", "token"]},
        "rules": [
            {
                "name": "all",
                "action": "audit",
                "level": "request",
                "request_headers": ["user-agent", {"name": "authorization", "redact": "hash"}],
            }
        ],
    }
    new_callers = {"budgets": {"security": {"records_per_second": 1000}}, "rules": [{"name": "all", "action": "audit"}]}
    return [
        ("no filter", [], [], []),
        ("file access log, every request", [], [file_log(workdir / "all.log")], []),
        ("file access log, CEL response.code >= 400", [], [file_log(workdir / "cel.log", "response.code >= 400")], []),
        ("empty Rust Wasm filter", [wasm_filter(BENCH_WASM, "empty", None)], [], []),
        ("reference filter (:path + :status)", [wasm_filter(BENCH_WASM, "reference", None)], [], []),
        # The routine path itself: every request goes through the sampling draw and is sampled
        # out (one in ten thousand is kept), what the routine target is about.
        ("meshaudit, routine sampled out", meshaudit({"default_sample_rate": 0.0001}), [], []),
        # The same in Istio's authorization layout: every request also carries RBAC's metadata
        # and the AUDIT mark, which the routine path reads with the status in one batch. Its
        # cost is the difference to the layout alone.
        ("Istio RBAC layout (AUDIT, DENY, ALLOW), no meshaudit", istio_rbac_layout(), [], []),
        (
            "meshaudit, routine sampled out, Istio RBAC layout",
            istio_rbac_layout() + meshaudit({"default_sample_rate": 0.0001}),
            [],
            [],
        ),
        # One `record_start` rule (for /admin, which no benchmark request hits): the routine
        # path then reads the request header map when the headers pass too.
        (
            "meshaudit, routine sampled out, one record_start rule",
            meshaudit(
                {
                    "default_sample_rate": 0.0001,
                    "rules": [
                        {"name": "admin", "match": {"paths": [{"prefix": "/admin"}]}, "action": "audit", "record_start": True}
                    ],
                }
            ),
            [],
            [],
        ),
        # Every request matches a `record_start` rule: two records each.
        (
            "meshaudit, audit all, metadata, record_start",
            meshaudit({"budgets": UNBOUNDED, "rules": [{"name": "all", "action": "audit", "record_start": True}]}),
            [],
            [],
        ),
        # The routine path of gRPC-shaped requests (content type application/grpc, answered
        # with grpc-status 0): one host call more than a plain request, the gRPC status.
        (
            "meshaudit, routine gRPC sampled out",
            meshaudit({"default_sample_rate": 0.0001}),
            [],
            ["Content-Type: application/grpc"],
        ),
        # A realistic mix: the same with 1% of requests recorded through Envoy's log.
        ("meshaudit, routine sampled at 1%", meshaudit({"default_sample_rate": 0.01}), [], []),
        (
            "meshaudit, audit all, metadata",
            meshaudit({"budgets": UNBOUNDED, "rules": [{"name": "all", "action": "audit"}]}),
            [],
            [],
        ),
        # The same with the trail sealed: each record's chain value (BLAKE3, keyed) is the
        # difference, through Envoy's log and through the hand-off.
        (
            "meshaudit, audit all, metadata, sealed",
            meshaudit({"budgets": UNBOUNDED, "rules": [{"name": "all", "action": "audit"}]}, sealed=True),
            [],
            [],
        ),
        # Every request recorded as routine traffic (sampled at rate 1), not as a sensitive endpoint:
        # no RBAC decision or rate-limit position to read.
        ("meshaudit, sample all, metadata", meshaudit({"budgets": UNBOUNDED, "default_sample_rate": 1.0}), [], []),
        # The same records handed to Envoy's file access logger instead of its log (buffered I/O).
        (
            "meshaudit, audit all, metadata, via access log",
            meshaudit(
                {
                    "budgets": UNBOUNDED,
                    "output": {"log": False, "filter_state": True},
                    "rules": [{"name": "all", "action": "audit"}],
                }
            ),
            [handoff_log(workdir / "handoff.log")],
            [],
        ),
        (
            "meshaudit, audit all, metadata, via access log, sealed",
            meshaudit(
                {
                    "budgets": UNBOUNDED,
                    "output": {"log": False, "filter_state": True},
                    "rules": [{"name": "all", "action": "audit"}],
                },
                sealed=True,
            ),
            [handoff_log(workdir / "handoff-sealed.log")],
            [],
        ),
        # The same records at a level Envoy's logger discards: the cost of deciding and encoding alone.
        (
            "meshaudit, audit all, metadata, not written",
            meshaudit({"budgets": UNBOUNDED, "log_level": "debug", "rules": [{"name": "all", "action": "audit"}]}),
            [],
            [],
        ),
        (
            "meshaudit, audit all, request + redaction + hash",
            meshaudit(request_level),
            [],
            ["Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJqYW5lIn0.c2ln", "User-Agent: wrk-bench"],
        ),
        (
            "meshaudit, denial flood, budget 100/s",
            [deny_all()] + meshaudit({"budgets": {"security": {"records_per_second": 100}}}),
            [],
            [],
        ),
        # A new caller on every request (bench/new_caller.lua), recorded (1000 a second) or
        # suppressed: the per-caller and suppression tables at their default sizes, then at
        # their maximum, which must cost the same. HTTP/1.1 only (h2load cannot vary headers).
        ("meshaudit, new caller per request, default tables", meshaudit(new_callers), [], []),
        (
            "meshaudit, new caller per request, tables at maximum",
            meshaudit(
                {
                    **new_callers,
                    "rate_limit": {"max_callers": 65536},
                    "budgets": {**new_callers["budgets"], "max_suppressed_callers": 65536},
                }
            ),
            [],
            [],
        ),
    ]


def envoy_config(port: int, admin: int, filters: list, loggers: list) -> dict:
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "bench",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "bench",
                    "domains": ["*"],
                    "routes": [
                        # gRPC-shaped requests get a gRPC answer: the status in a header, as a
                        # trailers-only response carries it.
                        {
                            "match": {
                                "prefix": "/",
                                "headers": [{"name": "content-type", "string_match": {"prefix": "application/grpc"}}],
                            },
                            "direct_response": {"status": 200, "body": {"inline_string": "ok"}},
                            "response_headers_to_add": [{"header": {"key": "grpc-status", "value": "0"}}],
                        },
                        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}},
                    ],
                }
            ]
        },
        "http_filters": filters
        + [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    if loggers:
        hcm["access_log"] = loggers
    return {
        "node": {"id": "bench"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "bench",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ]
        },
    }


def truncate_logs(workdir: Path) -> None:
    """Empties every log before a measurement. A run writes gigabytes of logs (the audit
    variants 30 MB/s); once they fill the page cache, the kernel's reclaim is charged to
    whichever thread writes next, which measures the disk, not the filter. Envoy and the
    log collector append (O_APPEND), so they carry on at the new end."""
    for log in workdir.rglob("*.log"):
        os.truncate(log, 0)


def cpu_ns(pid: int) -> int:
    """On-CPU time of every thread of a process, in nanoseconds."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return total


# Variants whose load comes from a wrk script, by name prefix; they run under HTTP/1.1 only.
WRK_SCRIPTS = {"meshaudit, new caller per request": ROOT / "bench" / "new_caller.lua"}


def wrk_script(name: str) -> Path | None:
    return next((script for prefix, script in WRK_SCRIPTS.items() if name.startswith(prefix)), None)


def wrk(port: int, headers: list[str], script: Path | None = None) -> dict:
    args = ["taskset", "-c", "1", shutil.which("wrk") or "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--latency"]
    for h in headers:
        args += ["-H", h]
    if script:
        args += ["-s", str(script)]
    out = subprocess.run(
        args + [f"http://127.0.0.1:{port}{TARGET}"], capture_output=True, text=True, timeout=DURATION + 60
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))

    def latency(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 1e-3, "ms": 1, "s": 1e3}[unit]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": requests,
        "rps": requests / DURATION,
        "p50_ms": latency(50),
        "p99_ms": latency(99),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def h2load(port: int, headers: list[str], log: Path) -> dict:
    """HTTP/2 with prior knowledge (h2c): a few connections carrying many concurrent streams."""
    args = [
        "taskset",
        "-c",
        "1",
        shutil.which("h2load") or "h2load",
        "-t1",
        f"-c{H2_CONNECTIONS}",
        f"-m{H2_STREAMS}",
        "-D",
        str(DURATION),
        f"--log-file={log}",
    ]
    for h in headers:
        args += ["-H", h]
    out = subprocess.run(
        args + [f"http://127.0.0.1:{port}{TARGET}"], capture_output=True, text=True, timeout=DURATION + 60
    ).stdout
    done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", out).group(1))
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    # h2load prints no percentiles: they come from its per-request log (microseconds, third column).
    latencies = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.count("\t") == 2)

    def latency(p):
        return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] / 1e3 if latencies else float("nan")

    return {
        "requests": done,
        "rps": done / DURATION,
        "p50_ms": latency(50),
        "p99_ms": latency(99),
        "non2xx": int(codes.group(3)) + int(codes.group(4)) if codes else 0,
    }


def main() -> None:
    for tool in ("wrk", "h2load", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run bash bench/run.sh")
    workdir = Path(tempfile.mkdtemp(prefix="meshaudit-bench-"))
    envoys = []
    only = os.environ.get("VARIANTS")  # name prefixes separated by ";" (names hold commas)

    def wanted(name: str) -> bool:
        return not only or name in ("no filter", "empty Rust Wasm filter") or any(name.startswith(p) for p in only.split(";"))

    chosen = [v for v in variants(workdir) if wanted(v[0])]
    baseline = os.environ.get("BASELINE_WASM")
    if baseline:
        (workdir / "baseline").mkdir()
        twins = {v[0]: v for v in variants(workdir / "baseline", Path(baseline)) if v[0].startswith("meshaudit")}
        # Each baseline variant runs right after its twin, in every round.
        chosen = [w for v in chosen for w in ([v, (f"{v[0]} (baseline)", *twins[v[0]][1:])] if v[0] in twins else [v])]
    for i, (name, filters, loggers, headers) in enumerate(chosen):
        port, admin = harness.free_port(), harness.free_port()
        (workdir / str(i)).mkdir()
        envoy = harness.Envoy(
            envoy_config(port, admin, filters, loggers), workdir / str(i), pin_cpu=0, log_collector_cpu=LOG_COLLECTOR_CPU
        )
        envoys.append((name, envoy, port, headers))
    try:
        for _, envoy, _, _ in envoys:
            envoy.wait_ready()
        samples: dict[str, dict[str, list[dict]]] = {
            p: {name: [] for name, *_ in envoys if p == "http1" or not wrk_script(name)} for p in PROTOCOLS
        }
        for rnd in range(ROUNDS):
            for protocol in PROTOCOLS:
                for name, envoy, port, headers in envoys:
                    if name not in samples[protocol]:
                        continue
                    truncate_logs(workdir)
                    before = cpu_ns(envoy.proc.pid)
                    if protocol == "h2":
                        result = h2load(port, headers, workdir / "h2load-requests.log")
                    else:
                        result = wrk(port, headers, wrk_script(name))
                    result["cpu_us_per_req"] = (cpu_ns(envoy.proc.pid) - before) / 1e3 / max(result["requests"], 1)
                    samples[protocol][name].append(result)
                    print(
                        f"round {rnd + 1}/{ROUNDS} {protocol:<5} {name:<52} {result['rps']:>9.0f} rps  "
                        f"{result['cpu_us_per_req']:6.2f} us CPU/req",
                        flush=True,
                    )
        memory = {name: harness.stat(envoy, "wasmcustom.meshaudit.vm_memory_bytes") for name, envoy, _, _ in envoys}
        write_results(samples, memory, workdir)
    finally:
        for _, envoy, _, _ in envoys:
            envoy.stop()


def median(values):
    return statistics.median(values)


def summarise(samples: dict[str, list[dict]]) -> tuple[dict, dict, list[str]]:
    """Medians per variant, the CPU each adds over no filter, and the table's rows."""
    names = list(samples)
    med = {
        n: {k: median([s[k] for s in samples[n]]) for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "non2xx")} for n in names
    }
    base = med["no filter"]
    # CPU added over no filter: the median of each round's paired difference, which cancels the
    # machine's drift between rounds (a difference of medians would not).
    added = {
        n: median([s["cpu_us_per_req"] - b["cpu_us_per_req"] for s, b in zip(samples[n], samples["no filter"], strict=True)])
        for n in names
    }
    empty_added = added["empty Rust Wasm filter"]
    rows = [
        f"| {n} | {med[n]['rps']:,.0f} | {med[n]['rps'] / base['rps']:.2f} | {med[n]['p50_ms']:.3f} | {med[n]['p99_ms']:.3f} "
        f"| {med[n]['cpu_us_per_req']:.2f} | {added[n]:+.2f} | {added[n] / empty_added:.2f}× |"
        for n in names
    ]
    return med, {n: added[n] / empty_added for n in names}, rows


def write_results(samples: dict[str, dict[str, list[dict]]], memory: dict, workdir: Path) -> None:
    core = subprocess.run(
        ["cargo", "run", "--quiet", "--release", "--example", "core_bench"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    core_wasm = ROOT / "target" / "wasm32-wasip1" / "release" / "examples" / "core_bench.wasm"
    core_v8 = subprocess.run(
        ["node", "--no-warnings", str(ROOT / "bench" / "core_wasi.mjs"), str(core_wasm)], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    tables, targets, rounds = [], [], []
    for protocol, by_variant in samples.items():
        label = PROTOCOL_NAMES.get(protocol, protocol)
        med, times_empty, rows = summarise(by_variant)
        tables += [
            f"### {label}",
            "",
            "| variant | req/s | vs no filter | p50 ms | p99 ms | CPU µs/req | added µs/req | × empty |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *rows,
            "",
        ]
        for target, name, limit in [
            ("routine sampled-out request ≤ 2.0× the empty filter", "meshaudit, routine sampled out", 2.0),
            ("every-request audit at metadata level ≤ 6×, records in Envoy's log", "meshaudit, audit all, metadata", 6.0),
            (
                "every-request audit at metadata level ≤ 6×, records via Envoy's file access logger",
                "meshaudit, audit all, metadata, via access log",
                6.0,
            ),
        ]:
            if name in med:
                value = times_empty[name]
                targets.append(f"- {target}, {label}: **{value:.2f}×** — {'met' if value <= limit else 'MISSED'}")
        layout, in_layout, plain = (
            "Istio RBAC layout (AUDIT, DENY, ALLOW), no meshaudit",
            "meshaudit, routine sampled out, Istio RBAC layout",
            "meshaudit, routine sampled out",
        )
        if all(n in med for n in (layout, in_layout, plain)):
            # What meshaudit adds on top of Istio's filters, against what it adds alone.
            extra = times_empty[in_layout] - times_empty[layout] - times_empty[plain]
            targets.append(
                f"- routine sampled-out request in Istio's RBAC layout ≤ the plain routine variant + 0.2× the empty "
                f"filter, {label}: **{extra:+.2f}×** — {'met' if extra <= 0.2 else 'MISSED'}"
            )
        full, default = (
            "meshaudit, new caller per request, tables at maximum",
            "meshaudit, new caller per request, default tables",
        )
        if full in med and default in med:
            ratio = med[full]["cpu_us_per_req"] / med[default]["cpu_us_per_req"]
            targets.append(
                f"- per-caller and suppression tables at their maximum ≤ 1.2× the CPU per request at default sizes, "
                f"a new caller per request, {label}: **{ratio:.2f}×** — {'met' if ratio <= 1.2 else 'MISSED'}"
            )
        rounds += [
            f"{label}:",
            "",
            "| variant | rounds |",
            "| --- | --- |",
            *[f"| {n} | {rounds_cpu(r)} |" for n, r in by_variant.items()],
            "",
        ]
    wasm_kib = harness.WASM.stat().st_size / 1024
    lines = [
        "# Benchmark results",
        "",
        f"Run {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} on {platform.node() or 'this machine'}: "
        f"{os.cpu_count()} CPUs ({cpu_model()}), {platform.system()} {platform.release()}, Envoy 1.40.0 (V8), "
        f"one worker pinned to CPU 0; load pinned to CPU 1: wrk (1 thread, {CONNECTIONS} connections) for HTTP/1.1, "
        f"h2load (1 thread, {H2_CONNECTIONS} connections of {H2_STREAMS} concurrent streams) for HTTP/2; "
        f"{ROUNDS} interleaved rounds of {DURATION} s per protocol, medians. Command: `bash bench/run.sh`.",
        "",
        "Every variant answers with an Envoy direct response, so the numbers are Envoy plus the filter under test.",
        "CPU is all Envoy threads' on-CPU time over the round divided by requests served; it is steadier than",
        'throughput on a shared machine, so judge by it. "added" is the median over rounds of each round\'s CPU',
        "minus the no-filter variant's in the same round; \"× empty\" divides it by the empty Rust Wasm filter's.",
        "The empty filter's own cost divides every ratio, so its noise moves them all: compare variants within one run.",
        "",
        *tables,
        "Targets:",
        "",
        *targets,
        f"- `.wasm` ≤ 400 KiB: **{wasm_kib:.0f} KiB** — {'met' if wasm_kib <= 400 else 'MISSED'}",
        "- VM memory after the run (gauge `meshaudit.vm_memory_bytes`), per meshaudit variant: "
        + ", ".join(f"{n.removeprefix('meshaudit, ')}: {v / 1024:.0f} KiB" for n, v in memory.items() if v),
        "",
        "Each round's CPU µs/req, in the order run:",
        "",
        *rounds,
        "The core alone (`examples/core_bench.rs`: the flow of `on_log` over answers held in memory, no",
        "host calls), natively and compiled to wasm32-wasip1 under Node's V8 (the engine Envoy embeds):",
        "",
        "```",
        "natively:",
        core,
        "in V8:",
        core_v8,
        "```",
        "",
    ]
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"written to {OUT}; work files in {workdir}")


def rounds_cpu(rounds: list[dict]) -> str:
    return " ".join(f"{r['cpu_us_per_req']:.2f}" for r in rounds)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


if __name__ == "__main__":
    main()
