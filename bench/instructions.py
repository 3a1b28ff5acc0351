"""Instructions per request in the real Envoy, counted by valgrind's callgrind: a figure
that does not move with the machine's load, unlike CPU time on a shared VM.

Each named variant (bench/run.py's names; with BASELINE_WASM also "<name> (baseline)") runs
in its own Envoy 1.40 (one worker) under callgrind. After a warm-up of 300 requests (V8's
tiers), the counters are zeroed, N requests (default 2000) go over one kept-alive HTTP/1.1
connection, and the counters are dumped: their total divided by N is printed. Everything
Envoy executes counts (its timers too, a few hundred instructions per request at most), the
client's work does not. Two runs of one variant agree within 0.5%.

    python3 bench/instructions.py "no filter" "empty Rust Wasm filter" "meshaudit, routine sampled out"

Needs valgrind (`apt-get install valgrind`); build first as bench/run.sh does.
"""

from __future__ import annotations

import glob
import http.client
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402
from run import harness  # noqa: E402

N = int(os.environ.get("N", "2000"))
WARM_UP = 300


def requests(port: int, count: int, headers: list[str]) -> None:
    """`headers`: the variant's own, as "Name: value" (bench/run.py's form)."""
    sent = {"x-request-id": "r", **dict(h.split(": ", 1) for h in headers)}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(count):
        conn.request("GET", "/bench/path?x=1", headers=sent)
        conn.getresponse().read()
    conn.close()


def count(name: str, filters: list, loggers: list, headers: list[str], work: Path) -> float:
    port, admin = harness.free_port(), harness.free_port()
    config = work / "envoy.yaml"
    config.write_text(yaml.safe_dump(bench.envoy_config(port, admin, filters, loggers), sort_keys=False))
    out = work / "callgrind.out"
    for stale in glob.glob(f"{out}*"):
        os.remove(stale)
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        # V8 writes the code it compiles: valgrind must watch for it.
        "--smc-check=all-non-file",
        "--dump-instr=no",
        *(harness.envoy_binary(), "-c", str(config), "--concurrency", "1", "--disable-hot-restart", "-l", "error"),
    ]
    with open(work / f"{name.replace('/', '_')}.log", "w") as log:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{name}: Envoy did not start under valgrind") from None
                time.sleep(1)
        requests(port, WARM_UP, headers)
        subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True, capture_output=True)
        requests(port, N, headers)
        subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True, capture_output=True)
        time.sleep(1)
        totals = [
            int(line.split()[1])
            for dump in sorted(glob.glob(f"{out}.*"))
            for line in open(dump)
            if line.startswith(("summary:", "totals:"))
        ]
        if not totals:
            raise RuntimeError(f"{name}: callgrind wrote no counts")
        return totals[-1] / N
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="meshaudit-instructions-"))
    table = {v[0]: v for v in bench.variants(work)}
    baseline = os.environ.get("BASELINE_WASM")
    if baseline:
        table.update({f"{v[0]} (baseline)": v for v in bench.variants(work, Path(baseline)) if v[0].startswith("meshaudit")})
    for name in sys.argv[1:]:
        _, filters, loggers, headers = table[name]
        print(f"{name}: {count(name, filters, loggers, headers, work):,.0f} instructions/request ({N} requests)", flush=True)


if __name__ == "__main__":
    main()
