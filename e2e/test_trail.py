"""A trail you can prove. A real Envoy with a trail key in its VM environment writes a sealed
trail through both outputs (Envoy's log and the access-log hand-off); `meshaudit verify`
passes on it as captured, then fails on copies tampered with in each way, naming the stream
and the sequence number; a trail across SIGTERM, a restart and a listener update (new
streams) verifies clean; and `meshaudit hash` finds the pseudonyms Envoy wrote."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import harness
import pytest
from test_manifests import cli  # noqa: F401  (the fixture that builds the command)

MASTER = "m-e2e:" + "5a" * 32
HMAC_KEY = "an-hmac-key-for-the-trail-tests-0123"

PLUGIN = {
    "reporting": {"interval_seconds": 1},
    "output": {"log": True, "filter_state": True},
    "default_sample_rate": 0.5,
    "budgets": {"security": {"records_per_second": 2, "burst": 4}},
    "rules": [
        {"name": "health", "match": {"paths": [{"exact": "/healthz"}]}, "action": "drop"},
        {
            "name": "admin",
            "match": {"paths": [{"prefix": "/admin"}]},
            "action": "audit",
            "level": "request",
            "request_headers": [{"name": "x-user", "redact": "hash"}],
            # Its starts too: a `started` record is in Envoy's log alone, and verifies.
            "record_start": True,
        },
    ],
}


def workload_key(cli, tmp_path: Path, scope: str = "demo/app") -> str:  # noqa: F811
    """A workload's key, derived from the master as an operator would (`derive-key`)."""
    master = tmp_path / "master.key"
    master.write_text(MASTER + "\n")
    out = subprocess.run([cli, "derive-key", "--master", master, scope], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def with_keys(token: str):
    """Puts the trail key (and the HMAC key) into the plugin's VM environment."""

    def adjust(config: dict) -> None:
        vm = harness.wasm_filter(config)["typed_config"]["config"]["vm_config"]
        vm["environment_variables"] = {"key_values": {"MESHAUDIT_TRAIL_KEY": token, "MESHAUDIT_HMAC_KEY": HMAC_KEY}}

    return adjust


def traffic(stack, n: int, tag: str) -> None:
    for i in range(n):
        path = ["/admin/users", "/orders/1", "/healthz", "/admin/forbidden/keys", "/status/401"][i % 5]
        stack.request("GET", path, {"x-request-id": f"{tag}-{i}", "x-user": f"user-{i % 3}"})


def verify(cli, tmp_path: Path, *files: Path) -> tuple[int, dict]:  # noqa: F811
    keys = tmp_path / "keys"
    keys.write_text(f"# the auditor's key set\n{MASTER}\n")
    out = subprocess.run(
        [cli, "verify", "--keys", keys, "--json", *files],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "MESHAUDIT_TRAIL_KEY"},
    )
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout)


def record_lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def record_of(line: str) -> dict:
    return json.loads(line[line.index("{") :])


def breaks_at(report: dict, stream: str, seq: int) -> list[str]:
    """What the report says is broken at `seq` of `stream`."""
    return [
        b["what"]
        for s in report["streams"]
        if s["stream"] == stream
        for b in s["breaks"]
        if b["first_seq"] is not None and b["first_seq"] <= seq <= b["last_seq"]
    ]


@pytest.fixture(scope="module")
def captured(cli, tmp_path_factory):  # noqa: F811
    """One trail: traffic over several intervals, then SIGTERM (the final report)."""
    tmp_path = tmp_path_factory.mktemp("trail")
    s = harness.Stack(plugin=PLUGIN, adjust=with_keys(workload_key(cli, tmp_path)), workdir=tmp_path)
    try:
        traffic(s, 20, "a")
        s.envoy.wait_records(lambda r: r["kind"] == "accounting", timeout=10)
        traffic(s, 20, "b")
        time.sleep(1.5)
    finally:
        s.stop()
    assert s.envoy.proc.returncode == 0
    return tmp_path, s.envoy.log_path, s.audit_log_path


def test_the_trail_as_written_verifies_through_both_outputs(cli, captured):  # noqa: F811
    tmp_path, log, access = captured
    code, report = verify(cli, tmp_path, log, access)
    assert code == 0 and report["intact"], json.dumps(report, indent=1)
    # Envoy's main-thread VM wrote the configuration record; the worker everything else.
    [main] = [s for s in report["streams"] if s["configuration_only"]]
    [stream] = [s for s in report["streams"] if not s["configuration_only"]]
    assert main["records"] == 1 and main["configs"] == stream["configs"]
    written = [record_of(line) for line in record_lines(log) if "meshaudit.record " in line]
    assert main["records"] + stream["records"] == len(written)
    assert stream["key"] == "demo/app@m-e2e"
    assert stream["closed"], "SIGTERM wrote the final accounting record"
    assert stream["intervals"] >= 2
    assert stream["in_both_outputs"] == len(record_lines(access)) > 0
    assert {r["kind"] for r in written} >= {"config_applied", "access", "denied", "suppressed", "accounting", "started"}
    assert all(r["chain"]["key"] == "demo/app@m-e2e" for r in written)
    # The access log alone lacks what only Envoy's log carries: verify says so.
    code, alone = verify(cli, tmp_path, access)
    assert code == 1 and alone["breaks"] > 0


def tampered(tmp_path: Path, name: str, log: Path, access: Path, change) -> tuple[Path, Path]:
    """Copies of both outputs, `change(log_lines, access_lines)` applied."""
    log_lines, access_lines = record_lines(log), record_lines(access)
    change(log_lines, access_lines)
    out = tmp_path / name
    out.mkdir()
    (out / "envoy.log").write_text("".join(log_lines))
    (out / "audit.log").write_text("".join(access_lines))
    return out / "envoy.log", out / "audit.log"


def index_of(lines: list[str], predicate) -> int:
    return next(i for i, line in enumerate(lines) if "meshaudit.record " in line and predicate(record_of(line)))


@pytest.mark.parametrize("how", ["delete", "edit", "duplicate", "forge", "cut tail"])
def test_each_kind_of_tampering_is_named_by_stream_and_position(cli, captured, how):  # noqa: F811
    tmp_path, log, access = captured
    lines = record_lines(log)
    # The worker's stream: the one that served the traffic.
    stream = record_of(lines[index_of(lines, lambda r: r["kind"] == "accounting")])["stream"]
    accounting = [i for i, line in enumerate(lines) if '"kind":"accounting"' in line]
    target = {}

    def change(log_lines: list[str], access_lines: list[str]) -> None:
        if how == "delete":
            # A suppressed record: in Envoy's log alone.
            i = index_of(log_lines, lambda r: r["kind"] == "suppressed")
            target["seq"] = record_of(log_lines.pop(i))["seq"]
        elif how == "edit":
            # A denial made to look like a success, in Envoy's log (the hand-off keeps its copy).
            i = index_of(log_lines, lambda r: r["kind"] == "denied")
            target["seq"] = record_of(log_lines[i])["seq"]
            log_lines[i] = log_lines[i].replace('"code":403', '"code":200', 1)
            assert '"code":200' in log_lines[i]
        elif how == "duplicate":
            i = index_of(log_lines, lambda r: r["kind"] == "access")
            target["seq"] = record_of(log_lines[i])["seq"]
            log_lines.append(log_lines[i])
        elif how == "forge":
            # A record that never was: a copy of an accounting record given the next free seq.
            i = index_of(log_lines, lambda r: r["kind"] == "accounting")
            last = max(record_of(line)["seq"] for line in log_lines if "meshaudit.record " in line)
            forged = log_lines[i].replace(f'"seq":{record_of(log_lines[i])["seq"]},', f'"seq":{last + 1},', 1)
            target["seq"] = last + 1
            log_lines.append(forged)
        else:
            # The tail of an interval, from both outputs, up to its accounting record: the last
            # interval with records (the final one after SIGTERM may have none).
            pairs = reversed(list(zip(accounting, accounting[1:], strict=False)))
            first, final = next((a + 1, b) for a, b in pairs if any("meshaudit.record " in line for line in log_lines[a + 1 : b]))
            gone = [record_of(line)["seq"] for line in log_lines[first:final] if "meshaudit.record " in line]
            assert gone, "records in the last interval"
            del log_lines[first:final]
            access_lines[:] = [line for line in access_lines if record_of(line)["seq"] not in gone]
            target["seq"] = gone[0]

    files = tampered(tmp_path, how.replace(" ", "-"), log, access, change)
    code, report = verify(cli, tmp_path, *files)
    assert code == 1 and not report["intact"]
    found = breaks_at(report, stream, target["seq"])
    assert found, json.dumps(report, indent=1)
    expected = {
        "delete": "missing",
        "edit": "edited, or forged",
        "duplicate": "twice",
        "forge": "edited, or forged",
        "cut tail": "missing",
    }[how]
    assert any(expected in what for what in found), found


def test_a_trail_across_a_listener_update_and_a_restart_verifies(cli, tmp_path):  # noqa: F811
    """New streams at each change: the replaced configuration's streams are closed by their final
    reports, the restarted process starts its own, and the whole trail is intact."""
    token = workload_key(cli, tmp_path)
    upstream = harness.Upstream()
    lds = harness.LdsConfig(tmp_path, upstream.port)
    listener = {"static_resources": {"listeners": [lds.listener]}}
    with_keys(token)(listener)
    for log in harness.http_connection_manager(listener)["access_log"]:
        log["typed_config"]["path"] = str(tmp_path / "audit.log")
    lds.push(PLUGIN)
    envoy = harness.Envoy(lds.bootstrap, tmp_path, extra_args=("--drain-time-s", "1"), concurrency=2)
    stack = type("S", (), {"listen_port": lds.listen_port, "request": harness.Stack.request})()
    logs = []
    try:
        envoy.wait_ready()
        traffic(stack, 15, "before")
        lds.push({**PLUGIN, "instance_id": "after-update"})
        envoy.wait_records(lambda r: r["kind"] == "config_applied" and r["instance"] == "after-update")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if [r for r in envoy.records() if r["kind"] == "accounting" and r["interval"].get("final")]:
                break
            time.sleep(0.2)
        traffic(stack, 15, "after")
        time.sleep(1.2)
    finally:
        envoy.stop()
    logs.append(envoy.log_path)
    # The proxy restarts with the same key: a new process, new streams.
    restarted = tmp_path / "restarted"
    restarted.mkdir()
    s = harness.Stack(plugin=PLUGIN, adjust=with_keys(token), workdir=restarted)
    try:
        traffic(s, 10, "restarted")
        time.sleep(1.2)
    finally:
        s.stop()
        upstream.stop()
    logs += [s.envoy.log_path, s.audit_log_path, tmp_path / "audit.log"]
    code, report = verify(cli, tmp_path, *[p for p in logs if p.exists()])
    assert code == 0, json.dumps(report, indent=1)
    streams = report["streams"]
    assert len({s["instance"] for s in streams}) == 2 and len(streams) >= 3
    served = [s for s in streams if not s["configuration_only"]]
    assert served and all(s["closed"] for s in served), streams
    assert len({c for s in streams for c in s["configs"]}) == 2, "both configurations are named"
    # The replaced streams' final accounting records, cut: the restart shows they ended unclosed.
    first_log = record_lines(logs[0])
    in_first = {record_of(line)["stream"] for line in first_log if "meshaudit.record " in line}
    old = next(s for s in served if s["instance"] != "after-update" and s["stream"] in in_first)
    final = index_of(first_log, lambda r: r["stream"] == old["stream"] and r.get("interval", {}).get("final") is True)
    del first_log[final]
    cut = tmp_path / "cut.log"
    cut.write_text("".join(first_log))
    code, report = verify(cli, tmp_path, cut, *[p for p in logs[1:] if p.exists()])
    assert code == 1
    assert any("without its final accounting record" in w for w in breaks_at(report, old["stream"], old["max_seq"]))


def test_a_third_party_checks_the_seals_from_the_readmes_definition_alone(cli, captured):  # noqa: F811
    """Another BLAKE3 (Python's `blake3`), the README's canonical bytes, and the key derivation:
    every record of the worker's stream checks, and links to the one before it."""
    import blake3

    _, log, _ = captured
    master_id, master_hex = MASTER.split(":")
    scope = "demo/app"
    key = blake3.blake3(b"meshaudit trail key\0" + scope.encode(), key=bytes.fromhex(master_hex)).digest()
    records = {}
    for line in record_lines(log):
        if "meshaudit.record " not in line:
            continue
        text = line[line.index("meshaudit.record ") + len("meshaudit.record ") :].rstrip("\n")
        covered = text[: text.rindex(',"mac":"')]
        mac = blake3.blake3(covered.encode(), key=key).digest()[:16].hex()
        record = json.loads(text)
        assert list(record)[-1] == "chain" and record["chain"]["key"] == f"{scope}@{master_id}"
        assert record["chain"]["mac"] == mac, text
        records[(record["stream"], record["seq"])] = record
    assert len(records) > 10
    for (stream, seq), record in records.items():
        before = records.get((stream, seq - 1))
        expected = before["chain"]["mac"] if before else "0" * 32
        assert seq == 0 or before, "the captured trail is gap-free"
        assert record["chain"]["prev"] == expected


def test_hash_finds_the_pseudonyms_envoy_wrote(cli, captured):  # noqa: F811
    _, log, _ = captured
    written = {
        r["request"]["headers"]["x-user"]
        for r in (record_of(line) for line in record_lines(log) if "meshaudit.record " in line)
        if "x-user" in r.get("request", {}).get("headers", {})
    }
    assert written, "the admin rule records x-user, hashed"
    env = {**os.environ, "MESHAUDIT_HMAC_KEY": HMAC_KEY}
    looked_up = set()
    for user in ["user-0", "user-1", "user-2"]:
        out = subprocess.run([cli, "hash", user], capture_output=True, text=True, env=env, check=True)
        pseudonym, key_id = out.stdout.split()
        assert key_id.startswith("k-")
        looked_up.add(pseudonym)
    assert written <= looked_up, (written, looked_up)
    # A value never sent is not in the trail.
    out = subprocess.run([cli, "hash", "user-9"], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split()[0] not in written
