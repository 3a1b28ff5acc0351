"""`meshaudit report --html` opened in a real browser (Debian's chromium-headless-shell):
the page the command writes holds its four charts as inline SVG whose bars carry the trail's
counts, every table with its top-N cut, an explicit empty state for whatever has no data,
text from the trail escaped, and nothing fetched from anywhere. Trails are synthesized
(a small one with hostile text, 100,000 records, an empty one, all in the shape of
observability/record.schema.json) or written by the real Envoy (the `stack` fixture)."""

import json
import random
import shutil
import struct
import subprocess
import uuid
import zlib
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import harness
import pytest

ROOT = harness.ROOT
CLI = ROOT / "target" / "debug" / "meshaudit"
CHARTS = ("timeline", "sensitive_callers", "denials_by_policy", "completeness")
SVG_NS = 'xmlns="http://www.w3.org/2000/svg"'

# Colours the report draws with (src/bin/meshaudit/report.rs): a screenshot shows them.
DENIED_RED = (0xD6, 0x27, 0x28)
ACCESS_BLUE = (0x9E, 0xC5, 0xE6)


@pytest.fixture(scope="module", autouse=True)
def cli():
    subprocess.run(["cargo", "build", "--quiet", "--features", "cli", "--bin", "meshaudit"], cwd=ROOT, check=True, timeout=600)


# --- the trail -------------------------------------------------------------------------

T0 = 1_796_119_200  # 2026-12-01T10:00:00Z


def ts(seconds: float) -> str:
    """`2026-12-01T10:00:05.500Z`: `seconds` after T0, as the plugin writes times."""
    at = datetime.fromtimestamp(T0, tz=UTC) + timedelta(seconds=seconds)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03}Z"


class Trail:
    """Records as the plugin writes them: one stream, sequence numbers in order."""

    def __init__(self, instance: str = "checkout-7d9f"):
        self.instance = instance
        self.stream = "00000000000000a1"
        self.lines: list[str] = []
        self.records: list[dict] = []

    def add(self, record: dict, keep: bool = True) -> None:
        # The plugin's order of members: v, ts, kind, instance, stream, seq, then the rest.
        head = {"v": 1, "ts": record.pop("ts"), "kind": record.pop("kind"), "instance": self.instance}
        record = {**head, "stream": self.stream, "seq": len(self.lines), **record}
        if keep:
            self.records.append(record)
        self.lines.append(json.dumps(record, separators=(",", ":")))

    def request(
        self,
        at: float,
        caller: str,
        path: str,
        kind: str = "access",
        sensitive: bool = False,
        policy: str | None = None,
        keep: bool = True,
    ) -> None:
        why = {"reason": "rule", "rule": "admin", "action": "audit"} if sensitive else {"reason": "security_outcome"}
        if kind == "access" and not sensitive:
            why = {"reason": "default_sample", "sample_rate": 0.01, "sampled_by": "request_id"}
        record = {
            "ts": ts(at),
            "kind": kind,
            "why": why,
            "request": {"id": str(uuid.UUID(int=len(self.lines) + 1)), "method": "GET", "path": path},
            "response": {"code": {"denied": 403, "auth_failure": 401}.get(kind, 200)},
            "peer": {"mtls": True, "principal": caller},
            "direction": "inbound",
        }
        if kind == "denied":
            record["authz"] = {"decision": "denied", "by": "rbac", "basis": "deny_policy", "policy": policy}
        if kind == "auth_failure":
            record["authn"] = {"method": "jwt", "result": "failed", "reason": "jwt_expired", "issuer": "issuer.example"}
        self.add(record, keep)

    def tls_failure(self, at: float, address: str) -> None:
        self.add(
            {
                "ts": ts(at),
                "kind": "tls_failure",
                "why": {"reason": "security_outcome"},
                "connection": {"failure": "certificate_untrusted"},
                "source": {"address": address},
                "peer": {"mtls": False},
                "direction": "inbound",
            }
        )

    def accounting(self, at: float, totals: dict) -> None:
        self.add(
            {
                "ts": ts(at),
                "kind": "accounting",
                "interval": {"start": ts(0), "end": ts(at), "first_seq": 0, "config": "sha256:" + "ab" * 32},
                "totals": totals,
                "by_rule": {},
            }
        )

    def write(self, path: Path) -> Path:
        path.write_text("".join(line + "\n" for line in self.lines))
        return path


ALICE = "spiffe://cluster.local/ns/payments/sa/checkout-service-with-a-rather-long-service-account-name-v2"
BOB = "spiffe://cluster.local/ns/web/sa/frontend"
CAROL = "spiffe://cluster.local/ns/batch/sa/reporting"
EVIL = 'spiffe://evil.example/ns/x/sa/<script>alert("pwn")</script>&\''
POLICY_ADMIN = "ns[payments]-policy[deny-admin-from-outside-the-namespace]-rule[0]"
POLICY_HOSTILE = "ns[web]-policy[<b>\"quoted\"</b> & 'more']-rule[1]"
TOTALS = {"requests": 1000, "records": 180, "sampled_out": 800, "dropped": 5, "suppressed": 2, "hidden": 0, "sink_errors": 1}


def small_trail() -> Trail:
    """Ten minutes of traffic with known counts, long SPIFFE ids and hostile text."""
    trail = Trail()
    sensitive = {ALICE: (30, 6), BOB: (12, 2), EVIL: (5, 0)}
    at = 0.0
    for caller, (requests, denied) in sensitive.items():
        for n in range(requests):
            at += 5.5
            kind = "denied" if n < denied else "access"
            trail.request(at, caller, "/admin/users", kind, sensitive=True, policy=POLICY_ADMIN)
    for n in range(100):
        trail.request(n * 5.9, CAROL, f'/products/{n}?q=<i>&x="1"')
    for n in range(3):
        trail.request(300 + n, CAROL, "/internal/export", "denied", policy=POLICY_HOSTILE)
    for n in range(4):
        trail.request(400 + n, CAROL, "/orders", "auth_failure")
    for n in range(2):
        trail.tls_failure(500 + n, f"10.0.0.{n + 1}:41000")
    trail.accounting(599, TOTALS)
    return trail


# --- the report, the browser ------------------------------------------------------------


def report(tmp_path: Path, *inputs: Path, top: int | None = None) -> Path:
    out = tmp_path / "report.html"
    args = [str(CLI), "report", "--html", str(out), *map(str, inputs)]
    if top is not None:
        args += ["--top", str(top)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return out


def chromium_exe() -> str:
    exe = shutil.which("chromium-headless-shell") or "/usr/lib/chromium/chromium-headless-shell"
    assert Path(exe).exists(), "chromium-headless-shell is installed by scripts/setup.sh"
    return exe


def chromium(page: Path, *args: str) -> subprocess.CompletedProcess:
    profile = page.parent / "chromium-profile"
    command = [chromium_exe(), "--no-sandbox", "--hide-scrollbars", f"--user-data-dir={profile}", *args, page.as_uri()]
    result = subprocess.run(command, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result


class Node:
    def __init__(self, tag: str, attrs: dict, parent):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def walk(self):
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.walk()

    def all(self, tag: str | None = None, **attrs):
        return [
            n
            for n in self.walk()
            if (tag is None or n.tag == tag) and all(n.attrs.get(k.rstrip("_").replace("_", "-")) == v for k, v in attrs.items())
        ]

    def with_attr(self, name: str):
        return [n for n in self.walk() if name in n.attrs]

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def own_text(self) -> str:
        """The text outside child elements (a label without its <title>)."""
        return "".join(c for c in self.children if isinstance(c, str))

    def title(self) -> str:
        titles = [c for c in self.children if isinstance(c, Node) and c.tag == "title"]
        return titles[0].text() if titles else ""


class Dom(HTMLParser):
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.root = self.at = Node("#document", {}, None)
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.at)
        self.at.children.append(node)
        if tag not in self.VOID:
            self.at = node

    def handle_startendtag(self, tag, attrs):
        self.at.children.append(Node(tag, dict(attrs), self.at))

    def handle_endtag(self, tag):
        node = self.at
        while node.parent is not None and node.tag != tag:
            node = node.parent
        if node.parent is not None:
            self.at = node.parent

    def handle_data(self, data):
        self.at.children.append(data)


def dom(page: Path) -> Node:
    return Dom(chromium(page, "--dump-dom").stdout.decode()).root


def charts(root: Node) -> dict[str, Node]:
    found = {n.attrs["data-chart"]: n for n in root.all("svg") if "data-chart" in n.attrs}
    assert sorted(found) == sorted(CHARTS)
    return found


def counts_by(svg: Node, attr: str, cls: str | None = None) -> dict[str, int]:
    sums: Counter = Counter()
    for n in svg.all("rect"):
        if attr in n.attrs and "data-count" in n.attrs and (cls is None or n.attrs.get("class") == cls):
            sums[n.attrs[attr]] += int(n.attrs["data-count"])
    return dict(sums)


def bars(svg: Node) -> list[tuple[str, int]]:
    return [(n.attrs["data-label"], int(n.attrs["data-count"])) for n in svg.all("rect", class_="bar")]


def read_png(path: Path) -> tuple[int, int, list[bytes], int]:
    """The PNG's rows of pixels (8-bit RGB or RGBA, as Chromium writes them), with zlib alone."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = bpp = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif kind == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev, strict=True))
        elif kind in (3, 4):
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                if kind == 3:
                    line[i] = (line[i] + (a + b) // 2) & 255
                else:
                    c = prev[i - bpp] if i >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, rows, bpp


def screenshot(page: Path, width: int = 1280, height: int = 2400) -> dict:
    """A screenshot's colours: how many pixels each, and the rows each of the given ones is in."""
    png = page.parent / "report.png"
    chromium(page, f"--window-size={width},{height}", f"--screenshot={png}")
    w, h, rows, bpp = read_png(png)
    assert (w, h) == (width, height)
    colours: Counter = Counter()
    rows_of: dict[tuple, set] = defaultdict(set)
    for y, row in enumerate(rows):
        pixels = Counter(tuple(row[i : i + 3]) for i in range(0, len(row), bpp))
        colours.update(pixels)
        for colour in (DENIED_RED, ACCESS_BLUE):
            if colour in pixels:
                rows_of[colour].add(y)
    return {"colours": colours, "rows_of": rows_of, "pixels": w * h}


def assert_self_contained(page: Path) -> None:
    text = page.read_text()
    assert len(text.encode()) < 2_000_000, f"{len(text.encode())} bytes"
    lowered = text.lower()
    for fetch in ("<script", "<link", "<img", "<iframe", "<object", "<embed", " src=", " href=", "url(", "@import"):
        assert fetch not in lowered, fetch
    # The SVG namespace names no resource; nothing else may look like a URL to fetch.
    rest = lowered.replace(SVG_NS, "")
    assert "http://" not in rest and "https://" not in rest
    assert "default-src 'none'" in text


# --- the tests --------------------------------------------------------------------------


def test_the_report_shows_the_trail_s_counts_in_the_browser(tmp_path):
    trail = small_trail()
    for record in trail.records:
        harness.validate_record(record)
    page = report(tmp_path, trail.write(tmp_path / "trail.log"))
    assert_self_contained(page)
    root = dom(page)
    assert not root.all("script")
    found = charts(root)

    kinds = Counter(r["kind"] for r in trail.records if r["kind"] != "accounting")
    assert kinds == {"access": 139, "denied": 11, "auth_failure": 4, "tls_failure": 2}
    timeline = found["timeline"]
    assert counts_by(timeline, "data-kind") == kinds
    buckets = timeline.all("g", class_="bucket")
    assert 0 < len(buckets) <= 60
    denied = [n for n in timeline.all("rect") if n.attrs.get("data-kind") == "denied"]
    assert all(n.title().startswith(f"denied: {n.attrs['data-count']} at 2026-12-01 10:") for n in denied)
    legend = {n.attrs["data-legend"]: int(n.attrs["data-total"]) for n in timeline.all("g", class_="legend")}
    assert legend == kinds
    ticks = [n.own_text() for n in timeline.all("text", class_="tick")]
    assert "0" in ticks and any(t.startswith("10:0") for t in ticks), ticks

    callers = found["sensitive_callers"]
    assert bars(callers) == [(ALICE, 30), (BOB, 12), (EVIL, 5)]
    assert counts_by(callers, "data-kind", "part") == {"denied": 8}
    labels = {n.title(): n.own_text() for n in callers.all("text", class_="label")}
    # Long SPIFFE ids are clipped with an ellipsis; the whole id is the label's <title>.
    assert "…" in labels[ALICE] and len(labels[ALICE]) <= 48 and labels[BOB] == BOB
    # The hostile caller is text in the DOM, exactly as in the trail.
    assert EVIL in labels

    assert bars(found["denials_by_policy"]) == [(POLICY_ADMIN, 8), (POLICY_HOSTILE, 3)]
    completeness = {n.attrs["data-kind"]: int(n.attrs["data-count"]) for n in found["completeness"].all("rect", class_="bar")}
    assert completeness == {k: v for k, v in TOTALS.items() if k != "requests"}

    tables = {n.attrs["data-table"]: n for n in root.all("table")}
    assert set(tables) == {"sensitive", "denials", "auth_failures", "tls_failures", "completeness"}
    denials = [[td.attrs.get("title") or td.text() for td in tr.all("td")] for tr in tables["denials"].all("tr")[1:]]
    # By policy and caller, most first: Alice's 6, Carol's 3, Bob's 2.
    assert [(row[0], row[2], row[4]) for row in denials] == [
        (POLICY_ADMIN, ALICE, "6"),
        (POLICY_HOSTILE, CAROL, "3"),
        (POLICY_ADMIN, BOB, "2"),
    ]
    empty = {n.attrs["data-empty-table"]: n.text() for n in root.with_attr("data-empty-table")}
    assert empty == {
        "open_streams": "No stream started without an end.",
        "dry_run": "No dry-run policy would have denied a request.",
        "ambiguous": "No request that reads two ways.",
        "config": "No configuration change in the trail.",
        "suppressed": "Nothing suppressed.",
    }

    shot = screenshot(page)
    colours = shot["colours"]
    assert colours.most_common(1)[0][1] < 0.8 * shot["pixels"] and len(colours) > 50, "one uniform colour"
    # The charts are drawn: the denied segments and bars, the access segments.
    assert colours[DENIED_RED] > 500 and colours[ACCESS_BLUE] > 500
    # The timeline (blue and red together) is above the bar charts (red alone below it).
    assert min(shot["rows_of"][ACCESS_BLUE]) < max(shot["rows_of"][DENIED_RED])


def test_the_report_of_100000_records_stays_legible_and_small(tmp_path):
    rng = random.Random(7)
    trail = Trail()
    callers = [
        f"spiffe://cluster.local/ns/tenant-{n % 40:02}/sa/service-account-number-{n:04}-with-a-long-name" for n in range(500)
    ]
    policies = [f"ns[tenant-{n:02}]-policy[deny-cross-tenant-traffic-to-admin-endpoints]-rule[{n % 3}]" for n in range(40)]
    kinds: Counter = Counter()
    sensitive: Counter = Counter()
    denials: Counter = Counter()
    for n in range(100_000):
        at = n * 0.108  # three hours
        caller = callers[min(int(rng.paretovariate(1.2)) - 1, 499)] if n % 5 == 0 else rng.choice(callers)
        if n % 20 == 0:
            policy = rng.choice(policies)
            trail.request(at, caller, f"/admin/{n % 17}", "denied", sensitive=n % 40 == 0, policy=policy, keep=False)
            denials[policy] += 1
            kind = "denied"
        elif n % 5 == 0:
            trail.request(at, caller, f"/admin/{n % 17}", sensitive=True, keep=False)
            kind = "access"
        else:
            trail.request(at, caller, f"/products/{n % 1000}", keep=False)
            kind = "access"
        kinds[kind] += 1
        if n % 5 == 0 and (kind == "access" or n % 40 == 0):
            sensitive[caller] += 1
    assert len(trail.lines) == 100_000
    written = trail.write(tmp_path / "trail.log")
    page = report(tmp_path, written)
    written.unlink()  # 46 MB
    size = page.stat().st_size
    assert size < 2_000_000, size
    assert_self_contained(page)
    found = charts(dom(page))

    timeline = found["timeline"]
    assert 0 < len(timeline.all("g", class_="bucket")) <= 60
    assert counts_by(timeline, "data-kind") == kinds
    top = sorted(sensitive.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert bars(found["sensitive_callers"]) == top
    more = found["sensitive_callers"].with_attr("data-more")
    assert [int(n.attrs["data-more"]) for n in more] == [len(sensitive) - 10]
    assert bars(found["denials_by_policy"]) == sorted(denials.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert all(len(n.own_text()) <= 48 for n in found["sensitive_callers"].all("text", class_="label"))

    shot = screenshot(page)
    assert len(shot["colours"]) > 50 and shot["colours"][DENIED_RED] > 500 and shot["colours"][ACCESS_BLUE] > 500


def test_the_report_of_an_empty_trail_says_so(tmp_path):
    empty = tmp_path / "empty.log"
    empty.write_text("")
    page = report(tmp_path, empty)
    assert_self_contained(page)
    root = dom(page)
    found = charts(root)
    messages = {
        "timeline": "No records in the trail",
        "sensitive_callers": "No sensitive-endpoint access",
        "denials_by_policy": "No denials in the trail",
        "completeness": "No accounting records in the trail: what was not written is unknown",
    }
    for name, svg in found.items():
        assert [n.text() for n in svg.all("text") if n.attrs.get("data-empty") == name] == [messages[name]]
        assert not svg.with_attr("data-count")
    tables = {n.attrs["data-empty-table"] for n in root.with_attr("data-empty-table")}
    assert tables == {
        "sensitive",
        "open_streams",
        "denials",
        "auth_failures",
        "tls_failures",
        "dry_run",
        "ambiguous",
        "config",
        "completeness",
        "suppressed",
    }
    assert not root.all("table")
    shot = screenshot(page, 1280, 1600)
    assert len(shot["colours"]) > 10 and shot["colours"][DENIED_RED] == 0


def test_the_report_of_a_real_envoy_trail_agrees_with_the_summary(stack, tmp_path):
    marker = str(uuid.uuid4())
    for n in range(20):
        stack.request("GET", f"/products/{n}", {"x-request-id": str(uuid.uuid4())})
    for path in ["/admin/users"] * 4 + ["/admin/forbidden/keys"] * 2 + ["/api/v1/users/42/roles"]:
        stack.request("GET", path, {"x-request-id": str(uuid.uuid4())})
    assert stack.request("GET", "/admin/marker", {"x-request-id": marker})[0] == 200
    stack.envoy.wait_records(lambda r: r.get("request", {}).get("id") == marker)
    inputs = [stack.envoy.log_path, stack.audit_log_path]
    page = report(tmp_path, *inputs)
    assert_self_contained(page)
    found = charts(dom(page))
    out = subprocess.run([str(CLI), "summary", "--json", *map(str, inputs)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)

    kinds: Counter = Counter()
    for bucket in summary["timeline"]["buckets"]:
        kinds.update(bucket)
    assert counts_by(found["timeline"], "data-kind") == kinds and kinds["denied"] >= 2
    sensitive: Counter = Counter()
    for row in summary["tables"]["sensitive"]:
        sensitive[row["caller"]] += row["requests"]
    assert dict(bars(found["sensitive_callers"])) == sensitive and sum(sensitive.values()) >= 7
    denials: Counter = Counter()
    for row in summary["tables"]["denials"]:
        denials[row["policy"]] += row["count"]
    assert dict(bars(found["denials_by_policy"])) == denials
    completeness = summary["completeness"]
    if completeness["intervals"]:
        shown = {n.attrs["data-kind"]: int(n.attrs["data-count"]) for n in found["completeness"].all("rect", class_="bar")}
        assert shown == {k: completeness["totals"].get(k, 0) for k in shown}
    else:
        assert found["completeness"].with_attr("data-empty")
