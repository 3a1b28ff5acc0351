"""ClickHouse for the tests, two ways, one interface: Debian 12's clickhouse-server 18.16 run as a
throwaway server on loopback ports below 32768, and chdb-core (the current ClickHouse engine,
in-process). Both run the shipped SQL (observability/clickhouse/) as an operator would.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import harness

SQL = harness.ROOT / "observability" / "clickhouse"


def statements(text: str) -> list[str]:
    """The statements of a SQL file: comments dropped, split at a `;` that ends a line (the
    shipped files put no `;` inside a literal)."""
    text = re.sub(r"--[^\n]*", "", text)
    return [s.strip() for s in re.split(r";\s*\n", text + "\n") if s.strip()]


_TSV_ESCAPES = {"b": "\b", "f": "\f", "r": "\r", "n": "\n", "t": "\t", "0": "\0", "'": "'", "\\": "\\"}


def rows(tsv: str) -> list[list[str]]:
    """TabSeparated output, each value unescaped (ClickHouse escapes \\, tab, newline and
    the other control bytes with a backslash)."""

    def unescape(value: str) -> str:
        return re.sub(r"\\(.)", lambda m: _TSV_ESCAPES.get(m.group(1), "\\" + m.group(1)), value)

    return [[unescape(v) for v in line.split("\t")] for line in tsv.split("\n") if line]


def insert_rows(records: list[str]) -> str:
    """What a shipper sends: one JSONEachRow row per record, the record whole as `record`."""
    return "".join(json.dumps({"record": r}) + "\n" for r in records)


class Server:
    """clickhouse-server 18.16 in a temporary directory; `stop()` and `start()` make an outage."""

    name = "clickhouse-server 18.16"

    def __init__(self) -> None:
        assert shutil.which("clickhouse-server"), "clickhouse-server is installed by scripts/setup.sh"
        self.work = Path(tempfile.mkdtemp(prefix="meshaudit-ch-"))
        self.http_port, self.tcp_port = harness.free_port(), harness.free_port()
        (self.work / "users.xml").write_text(
            "<yandex><profiles><default/></profiles><quotas><default/></quotas>"
            "<users><default><password/><networks><ip>127.0.0.1</ip></networks>"
            "<profile>default</profile><quota>default</quota></default></users></yandex>"
        )
        (self.work / "config.xml").write_text(
            f"""<yandex>
  <logger><level>warning</level><log>{self.work}/server.log</log><errorlog>{self.work}/error.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{self.http_port}</http_port>
  <tcp_port>{self.tcp_port}</tcp_port>
  <path>{self.work}/data/</path>
  <tmp_path>{self.work}/tmp/</tmp_path>
  <format_schema_path>{self.work}/format_schemas/</format_schema_path>
  <users_config>{self.work}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>67108864</mark_cache_size>
</yandex>
"""
        )
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["clickhouse-server", f"--config-file={self.work / 'config.xml'}"],
            stdout=open(self.work / "stdout.log", "a"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.query("SELECT 1")
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError((self.work / "stdout.log").read_text()[-2000:]) from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    def _post(self, query: str, body: bytes = b"") -> str:
        url = f"http://127.0.0.1:{self.http_port}/?" + urllib.parse.urlencode({"query": query})
        request = urllib.request.Request(url, data=body or None, method="POST" if body else "GET")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.read().decode()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{self.name}: {e.read().decode()[:2000]}") from None

    def query(self, sql: str) -> list[list[str]]:
        return rows(self._post(sql.strip().rstrip(";") + " FORMAT TabSeparated" if _is_select(sql) else sql))

    def script(self, text: str) -> None:
        for statement in statements(text):
            self._post(statement, b" ")

    def insert(self, records: list[str]) -> None:
        self._post("INSERT INTO meshaudit_record (record) FORMAT JSONEachRow", insert_rows(records).encode())


class Chdb:
    """The current ClickHouse engine (chdb-core), in-process, with its data in a temporary
    directory."""

    def __init__(self) -> None:
        from chdb import session  # type: ignore[import-not-found]

        self.work = Path(tempfile.mkdtemp(prefix="meshaudit-chdb-"))
        self.session = session.Session(str(self.work))
        self.name = "ClickHouse " + self.query("SELECT version()")[0][0] + " (chdb-core)"

    def close(self) -> None:
        self.session.close()
        shutil.rmtree(self.work, ignore_errors=True)

    def query(self, sql: str) -> list[list[str]]:
        return rows(str(self.session.query(sql.strip().rstrip(";"), "TabSeparated")))

    def script(self, text: str) -> None:
        for statement in statements(text):
            self.session.query(statement)

    def insert(self, records: list[str]) -> None:
        values = ",".join("(" + quote(r) + ")" for r in records)
        self.session.query(f"INSERT INTO meshaudit_record (record) VALUES {values}")


def _is_select(sql: str) -> bool:
    return bool(re.match(r"\s*(--[^\n]*\n\s*)*(SELECT|WITH)\b", sql, re.I))


def quote(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def wait_until(check, timeout: float = 30.0):
    """A mutation (ALTER ... DELETE) is asynchronous in 18.16: poll until it shows."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)
