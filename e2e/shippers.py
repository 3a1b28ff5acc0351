"""Debian's syslog-ng 3.38 running a shipped configuration (observability/syslog-ng/), as the
pipeline and drill tests start it."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import harness

SYSLOG_NG = harness.ROOT / "observability" / "syslog-ng"


class SyslogNg:
    """One syslog-ng with one shipped configuration, its persist file and disk buffer in `workdir`."""

    def __init__(self, conf: str, workdir: Path, env: dict) -> None:
        workdir.mkdir()
        (workdir / "buffer").mkdir()
        self.conf, self.workdir = SYSLOG_NG / conf, workdir
        self.env = {**env, "MESHAUDIT_SYSLOG_NG_DIR": str(SYSLOG_NG), "MESHAUDIT_BUFFER_DIR": str(workdir / "buffer")}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        w = self.workdir
        self.proc = subprocess.Popen(
            [
                "syslog-ng",
                "-F",
                "--no-caps",
                "--stderr",
                "-f",
                str(self.conf),
                f"--persist-file={w / 'syslog-ng.persist'}",
                f"--pidfile={w / 'syslog-ng.pid'}",
                f"--control={w / 'syslog-ng.ctl'}",
            ],
            env={**os.environ, **self.env},
            stdout=open(w / "syslog-ng.out", "a"),
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    def log(self) -> str:
        return (self.workdir / "syslog-ng.out").read_text(errors="replace")


def to_both_stores(workdir: Path, logs: dict, psql, ch) -> tuple[SyslogNg, SyslogNg]:
    """The shipped pipeline's two syslog-ngs, not started: `logs` (MESHAUDIT_HANDOFF_LOG and
    MESHAUDIT_ENVOY_LOG) into the PostgreSQL of test_change_trail's `psql` fixture and into
    the ClickHouse server `ch` (e2e/clickhouse.py)."""
    to_pg = SyslogNg(
        "meshaudit-postgres.conf",
        workdir / "to-postgres",
        {
            **logs,
            "MESHAUDIT_PG_HOST": psql.host,
            "MESHAUDIT_PG_PORT": psql.port,
            "MESHAUDIT_PG_USER": "meshaudit",
            "MESHAUDIT_PG_DATABASE": "postgres",
        },
    )
    to_ch = SyslogNg(
        "meshaudit-clickhouse.conf",
        workdir / "to-clickhouse",
        {**logs, "MESHAUDIT_CH_URL": f"http://127.0.0.1:{ch.http_port}", "MESHAUDIT_CH_DATABASE": "default"},
    )
    return to_pg, to_ch
