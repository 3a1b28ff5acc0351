//! `meshaudit drill`: the compliance drill ("simulate edge scenarios (failed token
//! authenticators, invalid requests) to validate how audit logs react and cascade
//! downstream"). It sends a scripted set of edge cases to a target, each with a marker request
//! id of its own, then waits for each case's record where the records land (a captured trail,
//! PostgreSQL or ClickHouse) and prints a pass/fail table with how long each record took to
//! arrive. Exit status: 0 every case passed, 1 a case failed, 2 the drill could not run.
//!
//! The cases, each enabled by the option naming its path:
//! - `--jwt-path`: `token-missing`, `token-expired`, `token-forged`: no token; a token of the
//!   issuer that expired an hour ago; a token of the issuer, valid for an hour, signed by no key
//!   the issuer has. Expected: an `auth_failure` record with Envoy's reason.
//! - `--denied-path`: `denied`: a request the mesh denies. Expected: a `denied` record.
//! - `--sensitive-path` (a path the plugin audits): `malformed`, an invalid percent-encoding
//!   under it (expected: recorded, the path as sent), and `ambiguous`, a POST carrying two
//!   method overrides that disagree (expected: the ambiguity `method_override_conflict`).
//!
//! The target is plain HTTP (a sidecar's or gateway's listener, or a port-forward): the drill
//! sends raw HTTP/1.1 so that it can send what a client library would refuse to. The target
//! must keep the caller's `x-request-id` (Envoy does for internal callers; a gateway needs
//! `preserve_external_request_id`). PostgreSQL is read with `psql` (its conninfo, password from
//! `PGPASSWORD` or `~/.pgpass`), ClickHouse through its HTTP interface, both with the shipped
//! schemas (observability/postgres/, observability/clickhouse/).

use meshaudit::core::trail::verify::record_in;
use serde_json::{json, Value};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often the drill looks for the records while it waits.
const POLL: Duration = Duration::from_millis(200);
/// How long one request may take to be answered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a case's record must show.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// An authentication failure with Envoy's reason (`jwt_authn_access_denied{REASON}`).
    AuthFailure(&'static str),
    Denied,
    /// Recorded, with the path exactly as sent.
    PathAsSent(String),
    Ambiguity(&'static str),
}

impl Expect {
    fn text(&self) -> String {
        match self {
            Expect::AuthFailure(reason) => format!("auth_failure, reason {reason}"),
            Expect::Denied => "denied".into(),
            Expect::PathAsSent(path) => format!("recorded, path {path} as sent"),
            Expect::Ambiguity(name) => format!("ambiguity {name}"),
        }
    }

    fn met_by(&self, record: &Value) -> bool {
        let text = |pointer: &str| record.pointer(pointer).and_then(Value::as_str);
        match self {
            Expect::AuthFailure(reason) => {
                text("/kind") == Some("auth_failure") && text("/authn/reason") == Some(reason)
            }
            Expect::Denied => text("/kind") == Some("denied"),
            Expect::PathAsSent(path) => text("/request/path") == Some(path.as_str()),
            Expect::Ambiguity(name) => record
                .pointer("/request/ambiguities")
                .and_then(Value::as_array)
                .is_some_and(|names| names.iter().any(|n| n.as_str() == Some(name))),
        }
    }
}

#[derive(Debug)]
struct Case {
    name: &'static str,
    id: String,
    request: Vec<u8>,
    expect: Expect,
}

/// The paths and identities the cases are built from.
#[derive(Debug, Default)]
struct Plan {
    authority: String,
    jwt_path: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
    denied_path: Option<String>,
    sensitive_path: Option<String>,
}

/// An HTTP/1.1 request as bytes, with the case's marker id; `Connection: close` so the answer
/// ends with the connection.
fn request(plan: &Plan, method: &str, path: &str, id: &str, headers: &[(&str, String)]) -> Vec<u8> {
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nhost: {}\r\nx-request-id: {id}\r\nuser-agent: meshaudit-drill\r\nconnection: close\r\n",
        plan.authority
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" {
        text.push_str("content-length: 0\r\n");
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// base64url without padding (RFC 7515's encoding of a JWT's parts).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..=chunk.len() {
            let six = (n >> (18 - 6 * i)) & 63;
            if let Some(&c) = ALPHABET.get(six as usize) {
                out.push(char::from(c));
            }
        }
    }
    out
}

/// A token in the issuer's name that no key of the issuer signed: RS256 over a 2048-bit key
/// takes 256 signature bytes, and these are a hash of the marker.
fn unsigned_token(plan: &Plan, issuer: &str, now: u64, expires: u64, marker: &str) -> String {
    let mut claims =
        json!({"iss": issuer, "sub": "meshaudit-drill", "iat": now.min(expires), "exp": expires});
    if let (Some(audience), Some(map)) = (&plan.audience, claims.as_object_mut()) {
        map.insert("aud".into(), Value::from(audience.as_str()));
    }
    let mut signature = [0u8; 256];
    blake3::Hasher::new()
        .update(marker.as_bytes())
        .finalize_xof()
        .fill(&mut signature);
    format!(
        "{}.{}.{}",
        base64url(br#"{"alg":"RS256","typ":"JWT"}"#),
        base64url(claims.to_string().as_bytes()),
        base64url(&signature)
    )
}

/// The cases the plan enables, each with a marker id unique to this run.
fn cases(plan: &Plan, run: &str, now: u64) -> Vec<Case> {
    let mut cases = Vec::new();
    let id = |name: &str| format!("drill-{run}-{name}");
    if let (Some(path), Some(issuer)) = (&plan.jwt_path, &plan.issuer) {
        let missing = id("token-missing");
        cases.push(Case {
            name: "token-missing",
            request: request(plan, "GET", path, &missing, &[]),
            id: missing,
            expect: Expect::AuthFailure("Jwt_is_missing"),
        });
        for (name, expires, reason) in [
            ("token-expired", now.saturating_sub(3600), "Jwt_is_expired"),
            ("token-forged", now + 3600, "Jwt_verification_fails"),
        ] {
            let marker = id(name);
            let token = unsigned_token(plan, issuer, now, expires, &marker);
            cases.push(Case {
                name,
                request: request(
                    plan,
                    "GET",
                    path,
                    &marker,
                    &[("authorization", format!("Bearer {token}"))],
                ),
                id: marker,
                expect: Expect::AuthFailure(reason),
            });
        }
    }
    if let Some(path) = &plan.denied_path {
        let marker = id("denied");
        cases.push(Case {
            name: "denied",
            request: request(plan, "GET", path, &marker, &[]),
            id: marker,
            expect: Expect::Denied,
        });
    }
    if let Some(path) = &plan.sensitive_path {
        let marker = id("malformed");
        let malformed = format!("{}/drill%zz%", path.trim_end_matches('/'));
        cases.push(Case {
            name: "malformed",
            request: request(plan, "GET", &malformed, &marker, &[]),
            id: marker,
            expect: Expect::PathAsSent(malformed),
        });
        let marker = id("ambiguous");
        let overrides = [
            ("x-http-method-override", "GET".to_string()),
            ("x-http-method", "DELETE".to_string()),
        ];
        cases.push(Case {
            name: "ambiguous",
            request: request(plan, "POST", path, &marker, &overrides),
            id: marker,
            expect: Expect::Ambiguity("method_override_conflict"),
        });
    }
    cases
}

/// `http://HOST:PORT[/]`: the only form the drill speaks (raw HTTP/1.1, no TLS).
#[derive(Debug, Clone, PartialEq)]
struct HttpUrl {
    host: String,
    port: u16,
}

impl HttpUrl {
    fn parse(option: &str, url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("{option} {url}: only http://HOST:PORT (plain HTTP: use a port-forward or a sidecar for TLS)")
        })?;
        let authority = rest.trim_end_matches('/');
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| format!("{option} {url}: the port is missing"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{option} {url}: {port} is not a port"))?;
        if host.is_empty() || authority.contains('/') {
            return Err(format!("{option} {url}: expected http://HOST:PORT"));
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(HttpUrl { host, port })
    }

    fn text(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}", self.host, self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }
}

/// Sends raw bytes and reads the answer to its end; the status code, or why there is none.
fn exchange(url: &HttpUrl, bytes: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let mut stream = TcpStream::connect((url.host.as_str(), url.port))
        .map_err(|e| format!("cannot connect to {}: {e}", url.text()))?;
    let io = |e: std::io::Error| format!("{}: {e}", url.text());
    stream.set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(io)?;
    stream
        .set_write_timeout(Some(REQUEST_TIMEOUT))
        .map_err(io)?;
    stream.write_all(bytes).map_err(io)?;
    let mut answer = Vec::new();
    stream.take(16 << 20).read_to_end(&mut answer).map_err(io)?;
    let status = answer
        .get(9..12)
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|_| answer.starts_with(b"HTTP/1."))
        .ok_or_else(|| format!("{}: no HTTP answer", url.text()))?;
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, body) = match split {
        Some(at) => (
            answer.get(..at).unwrap_or_default(),
            answer.get(at + 4..).unwrap_or_default(),
        ),
        None => (answer.as_slice(), &[][..]),
    };
    let chunked = String::from_utf8_lossy(head)
        .lines()
        .any(|line| line.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    let body = if chunked {
        dechunk(body).ok_or_else(|| format!("{}: a malformed chunked answer", url.text()))?
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

/// The body of a chunked answer (RFC 9112, 7.1), its chunk extensions and trailers dropped.
fn dechunk(mut bytes: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = bytes.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(bytes.get(..line_end)?).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        bytes = bytes.get(line_end + 2..)?;
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(bytes.get(..size)?);
        bytes = bytes.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

/// Percent-encodes a URL's query value (RFC 3986: everything but the unreserved characters).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A trail file read as it grows: from where the last look stopped, whole lines only.
#[derive(Debug)]
struct Tail {
    file: String,
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    /// From the file's end as it is now, so that only records written after it are read.
    fn at_end(file: String) -> Self {
        let offset = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        Tail {
            file,
            offset,
            partial: Vec::new(),
        }
    }
}

/// Where the drill looks for the records.
#[derive(Debug)]
enum Source {
    Trail {
        tails: Vec<Tail>,
        found: Vec<Value>,
    },
    Postgres(String),
    ClickHouse {
        url: HttpUrl,
        database: Option<String>,
    },
}

impl Source {
    fn text(&self) -> String {
        match self {
            Source::Trail { tails, .. } => {
                let files: Vec<&str> = tails.iter().map(|t| t.file.as_str()).collect();
                format!("trail {}", files.join(", "))
            }
            Source::Postgres(conninfo) => format!("PostgreSQL {conninfo}"),
            Source::ClickHouse { url, database } => format!(
                "ClickHouse {}{}",
                url.text(),
                database
                    .as_deref()
                    .map(|d| format!(" database {d}"))
                    .unwrap_or_default()
            ),
        }
    }

    /// Every record of the marker ids visible now.
    fn records(&mut self, ids: &[&str]) -> Result<Vec<Value>, String> {
        let quoted: Vec<String> = ids.iter().map(|id| format!("'{id}'")).collect();
        let list = quoted.join(",");
        match self {
            Source::Trail { tails, found } => {
                for tail in tails.iter_mut() {
                    for line in read_new_lines(tail)? {
                        if let Some(record) = record_in(&line)
                            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                            .filter(|r| {
                                r.pointer("/request/id")
                                    .and_then(Value::as_str)
                                    .is_some_and(|id| ids.contains(&id))
                            })
                        {
                            found.push(record);
                        }
                    }
                }
                Ok(found.clone())
            }
            Source::Postgres(conninfo) => {
                let sql = format!(
                    "SELECT record::text FROM meshaudit_record WHERE request_id IN ({list})"
                );
                let out = Command::new("psql")
                    .args([
                        "-X",
                        "-A",
                        "-t",
                        "-v",
                        "ON_ERROR_STOP=1",
                        "-d",
                        conninfo.as_str(),
                        "-c",
                        &sql,
                    ])
                    .output()
                    .map_err(|e| format!("cannot run psql (the PostgreSQL client): {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "psql: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                Ok(String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|line| serde_json::from_str(line).ok())
                    .collect())
            }
            Source::ClickHouse { url, database } => {
                let sql = format!(
                    "SELECT record FROM meshaudit_record FINAL WHERE request_id IN ({list}) FORMAT JSONEachRow"
                );
                let mut target = format!("/?query={}", percent_encode(&sql));
                if let Some(database) = database {
                    target.push_str(&format!("&database={}", percent_encode(database)));
                }
                let get = format!(
                    "GET {target} HTTP/1.1\r\nhost: {}:{}\r\nconnection: close\r\n\r\n",
                    url.host, url.port
                );
                let (status, body) = exchange(url, get.as_bytes())?;
                let body = String::from_utf8_lossy(&body);
                if status != 200 {
                    return Err(format!("ClickHouse answered {status}: {}", body.trim()));
                }
                Ok(body
                    .lines()
                    .filter_map(|row| serde_json::from_str::<Value>(row).ok())
                    .filter_map(|row| serde_json::from_str(row.get("record")?.as_str()?).ok())
                    .collect())
            }
        }
    }
}

fn read_new_lines(tail: &mut Tail) -> Result<Vec<String>, String> {
    let Ok(mut file) = std::fs::File::open(&tail.file) else {
        return Ok(Vec::new()); // not written yet
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len < tail.offset {
        tail.offset = 0; // rotated or truncated: read it anew
        tail.partial.clear();
    }
    file.seek(SeekFrom::Start(tail.offset))
        .map_err(|e| format!("{}: {e}", tail.file))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", tail.file))?;
    tail.offset += bytes.len() as u64;
    tail.partial.extend_from_slice(&bytes);
    let complete = tail
        .partial
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1);
    let lines: Vec<u8> = tail.partial.drain(..complete).collect();
    Ok(String::from_utf8_lossy(&lines)
        .lines()
        .map(str::to_string)
        .collect())
}

/// One case's outcome.
#[derive(Debug)]
struct Outcome<'a> {
    case: &'a Case,
    status: Result<u16, String>,
    sent: Instant,
    matched: Option<(Value, Duration)>,
    seen: Vec<Value>,
}

fn describe(record: &Value) -> String {
    let text = |pointer: &str| {
        record
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("-")
    };
    let mut out = text("/kind").to_string();
    if let Some(reason) = record.pointer("/authn/reason").and_then(Value::as_str) {
        out.push_str(&format!(" {reason}"));
    }
    if let Some(names) = record
        .pointer("/request/ambiguities")
        .and_then(Value::as_array)
    {
        let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
        out.push_str(&format!(" [{}]", names.join(",")));
    }
    format!("{out} at {}", text("/instance"))
}

impl Outcome<'_> {
    fn passed(&self) -> bool {
        self.matched.is_some()
    }

    fn record_text(&self, timeout: Duration) -> String {
        match (&self.matched, self.seen.is_empty()) {
            (Some((record, _)), _) => describe(record),
            (None, false) => {
                let seen: Vec<String> = self.seen.iter().map(describe).collect();
                format!("only: {}", seen.join("; "))
            }
            (None, true) => format!("none within {} s", timeout.as_secs()),
        }
    }
}

fn take_one(args: &mut Vec<String>, name: &str) -> Result<Option<String>, String> {
    let mut values = crate::take_option(args, name)?;
    if values.len() > 1 {
        return Err(format!("{name} is given more than once"));
    }
    Ok(values.pop())
}

pub(crate) fn drill(args: &[String]) -> Result<ExitCode, String> {
    let mut args = args.to_vec();
    let usage = || crate::USAGE.to_string();
    let target = take_one(&mut args, "--target")?.ok_or_else(usage)?;
    let target = HttpUrl::parse("--target", &target)?;
    let plan = Plan {
        authority: take_one(&mut args, "--authority")?.map_or_else(
            || target.text().trim_start_matches("http://").to_string(),
            |authority| authority.trim().to_string(),
        ),
        jwt_path: take_one(&mut args, "--jwt-path")?,
        issuer: take_one(&mut args, "--issuer")?,
        audience: take_one(&mut args, "--audience")?,
        denied_path: take_one(&mut args, "--denied-path")?,
        sensitive_path: take_one(&mut args, "--sensitive-path")?,
    };
    for (option, path) in [
        ("--jwt-path", &plan.jwt_path),
        ("--denied-path", &plan.denied_path),
        ("--sensitive-path", &plan.sensitive_path),
    ] {
        if let Some(path) = path
            .as_deref()
            .filter(|p| !p.starts_with('/') || p.contains(char::is_whitespace))
        {
            return Err(format!(
                "{option} {path}: a path starts with / and holds no space"
            ));
        }
    }
    if plan.jwt_path.is_some() != plan.issuer.is_some() {
        return Err("--jwt-path and --issuer go together: the token cases need the issuer the path requires".into());
    }
    if plan.audience.is_some() && plan.issuer.is_none() {
        return Err("--audience needs --jwt-path and --issuer".into());
    }
    let timeout = match take_one(&mut args, "--timeout")? {
        Some(text) => Duration::from_secs_f64(
            text.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
                .ok_or_else(|| {
                    format!("--timeout {text}: seconds, more than 0 and at most 3600")
                })?,
        ),
        None => Duration::from_secs(30),
    };
    let json_out = crate::answers::take_flag(&mut args, "--json");
    let trails = crate::take_option(&mut args, "--trail")?;
    let postgres = take_one(&mut args, "--postgres")?;
    let clickhouse = take_one(&mut args, "--clickhouse")?;
    let database = take_one(&mut args, "--clickhouse-database")?;
    // Further trail files follow the first --trail.
    let mut files = trails;
    if !files.is_empty() {
        files.extend(args.iter().filter(|a| !a.starts_with("--")).cloned());
        args.retain(|a| a.starts_with("--"));
    }
    crate::answers::no_unknown_options(&args)?;
    if database.is_some() && clickhouse.is_none() {
        return Err("--clickhouse-database goes with --clickhouse".into());
    }
    if !args.is_empty() {
        return Err(format!("unexpected: {}\n{}", args.join(" "), usage()));
    }
    let mut source = match (files.is_empty(), postgres, clickhouse) {
        (false, None, None) => Source::Trail {
            // Opened before the first request: only this run's records are looked at.
            tails: files.into_iter().map(Tail::at_end).collect(),
            found: Vec::new(),
        },
        (true, Some(conninfo), None) => Source::Postgres(conninfo),
        (true, None, Some(url)) => Source::ClickHouse {
            url: HttpUrl::parse("--clickhouse", &url)?,
            database,
        },
        _ => {
            return Err(format!(
                "one place to read the records from: --trail, --postgres or --clickhouse\n{}",
                usage()
            ))
        }
    };

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // Unique to this run: the time and the process, so two drills at once cannot mix.
    let run = format!("{:x}{:04x}", now.as_millis(), std::process::id() & 0xffff);
    let cases = cases(&plan, &run, now.as_secs());
    if cases.is_empty() {
        return Err(format!(
            "no case to run: give --jwt-path with --issuer, --denied-path or --sensitive-path\n{}",
            usage()
        ));
    }
    let mut outcomes: Vec<Outcome> = cases
        .iter()
        .map(|case| {
            let sent = Instant::now();
            let status = exchange(&target, &case.request).map(|(status, _)| status);
            Outcome {
                case,
                status,
                sent,
                matched: None,
                seen: Vec::new(),
            }
        })
        .collect();
    let ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
    let deadline = Instant::now() + timeout;
    loop {
        let records = source.records(&ids)?;
        let seen_at = Instant::now();
        for outcome in outcomes.iter_mut().filter(|o| o.matched.is_none()) {
            let mine = |r: &&Value| {
                r.pointer("/request/id").and_then(Value::as_str) == Some(outcome.case.id.as_str())
            };
            outcome.seen = records.iter().filter(mine).cloned().collect();
            if let Some(record) = outcome.seen.iter().find(|r| outcome.case.expect.met_by(r)) {
                outcome.matched = Some((record.clone(), seen_at.duration_since(outcome.sent)));
            }
        }
        if outcomes.iter().all(Outcome::passed) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL);
    }
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    if json_out {
        println!("{}", outcome_json(&target, &source, &outcomes));
    } else {
        print!("{}", outcome_table(&target, &source, &outcomes, timeout));
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn outcome_table(
    target: &HttpUrl,
    source: &Source,
    outcomes: &[Outcome],
    timeout: Duration,
) -> String {
    let header = [
        "case",
        "request id",
        "expected",
        "sent",
        "record",
        "after",
        "result",
    ];
    let rows: Vec<[String; 7]> = outcomes
        .iter()
        .map(|o| {
            [
                o.case.name.to_string(),
                o.case.id.clone(),
                o.case.expect.text(),
                o.status
                    .as_ref()
                    .map_or_else(|e| format!("error: {e}"), u16::to_string),
                o.record_text(timeout),
                o.matched.as_ref().map_or("-".into(), |(_, after)| {
                    format!("{:.2} s", after.as_secs_f64())
                }),
                if o.passed() { "pass" } else { "FAIL" }.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = format!(
        "drill of {} (records from {})\n",
        target.text(),
        source.text()
    );
    out.push_str(&line(header.to_vec()));
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    let passed = outcomes.iter().filter(|o| o.passed()).count();
    out.push_str(&format!(
        "{} of {} cases passed{}\n",
        passed,
        outcomes.len(),
        if passed == outcomes.len() {
            ""
        } else {
            ": a FAIL names what arrived instead, if anything"
        }
    ));
    out
}

fn outcome_json(target: &HttpUrl, source: &Source, outcomes: &[Outcome]) -> Value {
    let cases: Vec<Value> = outcomes
        .iter()
        .map(|o| {
            json!({
                "case": o.case.name,
                "request_id": o.case.id,
                "expected": o.case.expect.text(),
                "status": o.status.as_ref().ok(),
                "error": o.status.as_ref().err(),
                "passed": o.passed(),
                "arrival_seconds": o.matched.as_ref().map(|(_, after)| after.as_secs_f64()),
                "record": o.matched.as_ref().map(|(record, _)| record),
                "seen": o.seen.iter().map(describe).collect::<Vec<_>>(),
            })
        })
        .collect();
    let passed = outcomes.iter().filter(|o| o.passed()).count();
    json!({
        "target": target.text(),
        "source": source.text(),
        "cases": cases,
        "passed": passed,
        "failed": outcomes.len() - passed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            authority: "pay.local".into(),
            jwt_path: Some("/jwt/me".into()),
            issuer: Some("https://issuer.test".into()),
            audience: Some("meshaudit".into()),
            denied_path: Some("/admin/forbidden/x".into()),
            sensitive_path: Some("/admin/".into()),
        }
    }

    fn decode(part: &str) -> Value {
        // Test-only base64url decoding, to read the token back.
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bits: Vec<u32> = part
            .chars()
            .map(|c| alphabet.find(c).unwrap() as u32)
            .collect();
        let mut bytes = Vec::new();
        for chunk in bits.chunks(4) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | (b << (18 - 6 * i)));
            for i in 0..chunk.len() - 1 {
                bytes.push((n >> (16 - 8 * i)) as u8);
            }
        }
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn base64url_is_rfc_4648s_url_alphabet_unpadded() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn each_case_carries_its_own_marker_and_the_enabled_cases_only() {
        let all = cases(&plan(), "r1", 1_000_000);
        let names: Vec<&str> = all.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "token-missing",
                "token-expired",
                "token-forged",
                "denied",
                "malformed",
                "ambiguous"
            ]
        );
        for case in &all {
            let text = String::from_utf8(case.request.clone()).unwrap();
            assert_eq!(case.id, format!("drill-r1-{}", case.name));
            assert!(
                text.contains(&format!("\r\nx-request-id: {}\r\n", case.id)),
                "{text}"
            );
            assert!(text.starts_with("GET /") || text.starts_with("POST /"));
            assert!(text.ends_with("\r\n\r\n") && text.contains("\r\nhost: pay.local\r\n"));
        }
        let only_denied = Plan {
            jwt_path: None,
            issuer: None,
            sensitive_path: None,
            ..plan()
        };
        let names: Vec<&str> = cases(&only_denied, "r", 0).iter().map(|c| c.name).collect();
        assert_eq!(names, ["denied"]);
    }

    #[test]
    fn the_tokens_name_the_issuer_and_expire_as_the_case_says() {
        let all = cases(&plan(), "r1", 1_000_000);
        let token = |name: &str| {
            let text =
                String::from_utf8(all.iter().find(|c| c.name == name).unwrap().request.clone())
                    .unwrap();
            let line = text
                .lines()
                .find(|l| l.starts_with("authorization: Bearer "))
                .unwrap()
                .to_string();
            line.trim_start_matches("authorization: Bearer ")
                .to_string()
        };
        for (name, exp) in [
            ("token-expired", 1_000_000 - 3600),
            ("token-forged", 1_000_000 + 3600),
        ] {
            let token = token(name);
            let parts: Vec<&str> = token.split('.').collect();
            assert_eq!(parts.len(), 3);
            assert_eq!(decode(parts[0]), json!({"alg": "RS256", "typ": "JWT"}));
            let claims = decode(parts[1]);
            assert_eq!(claims["iss"], "https://issuer.test");
            assert_eq!(claims["aud"], "meshaudit");
            assert_eq!(claims["exp"], exp);
            assert_eq!(parts[2].len(), 342, "256 signature bytes");
        }
        assert_ne!(
            token("token-expired").rsplit('.').next(),
            token("token-forged").rsplit('.').next()
        );
        let missing = String::from_utf8(all[0].request.clone()).unwrap();
        assert!(!missing.contains("authorization"));
    }

    #[test]
    fn the_expectations_read_the_record() {
        let failure = json!({"kind": "auth_failure", "authn": {"reason": "Jwt_is_expired"}});
        assert!(Expect::AuthFailure("Jwt_is_expired").met_by(&failure));
        assert!(!Expect::AuthFailure("Jwt_is_missing").met_by(&failure));
        assert!(!Expect::AuthFailure("Jwt_is_expired").met_by(&json!({"kind": "auth_failure"})));
        assert!(Expect::Denied.met_by(&json!({"kind": "denied"})));
        assert!(!Expect::Denied.met_by(&json!({"kind": "access"})));
        let path = Expect::PathAsSent("/admin/drill%zz%".into());
        assert!(path.met_by(&json!({"kind": "access", "request": {"path": "/admin/drill%zz%"}})));
        assert!(
            !path.met_by(&json!({"kind": "access", "request": {"path": "/admin/drill%25zz%25"}}))
        );
        let ambiguous = Expect::Ambiguity("method_override_conflict");
        assert!(ambiguous.met_by(
            &json!({"request": {"ambiguities": ["path_semicolon", "method_override_conflict"]}})
        ));
        assert!(!ambiguous.met_by(&json!({"request": {"ambiguities": ["path_semicolon"]}})));
        assert!(!ambiguous.met_by(&json!({"request": {}})));
    }

    #[test]
    fn urls_are_plain_http_with_a_port() {
        assert_eq!(
            HttpUrl::parse("--target", "http://127.0.0.1:8080/").unwrap(),
            HttpUrl {
                host: "127.0.0.1".into(),
                port: 8080
            }
        );
        assert_eq!(
            HttpUrl::parse("--target", "http://[::1]:80")
                .unwrap()
                .text(),
            "http://[::1]:80"
        );
        for bad in [
            "https://h:443",
            "http://h",
            "http://h:x",
            "http://:80",
            "http://h:80/path",
            "h:80",
        ] {
            let error = HttpUrl::parse("--target", bad).unwrap_err();
            assert!(error.starts_with(&format!("--target {bad}: ")), "{error}");
        }
    }

    #[test]
    fn a_chunked_answer_is_put_back_together() {
        assert_eq!(
            dechunk(b"4\r\nWiki\r\n6;ext=1\r\npedia \r\n0\r\n\r\n").unwrap(),
            b"Wikipedia "
        );
        assert_eq!(dechunk(b"0\r\n\r\n").unwrap(), b"");
        assert!(dechunk(b"4\r\nWi").is_none(), "cut short");
        assert!(dechunk(b"zz\r\n").is_none());
    }

    #[test]
    fn a_query_is_percent_encoded() {
        assert_eq!(
            percent_encode("SELECT a FROM t WHERE x IN ('d-1')"),
            "SELECT%20a%20FROM%20t%20WHERE%20x%20IN%20%28%27d-1%27%29"
        );
    }

    #[test]
    fn a_trail_is_read_as_it_grows_whole_lines_only() {
        let dir = std::env::temp_dir().join(format!("meshaudit-drill-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("envoy.log");
        std::fs::write(&file, "old line\n").unwrap();
        let mut source = Source::Trail {
            tails: vec![Tail::at_end(file.display().to_string())],
            found: Vec::new(),
        };
        let record = |id: &str| {
            format!(
                r#"[info] wasm log: meshaudit.record {{"v":1,"kind":"denied","request":{{"id":"{id}"}}}}"#
            )
        };
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        write!(f, "{}\n{}", record("a"), &record("b")[..20]).unwrap();
        assert_eq!(
            source.records(&["a", "b"]).unwrap().len(),
            1,
            "the half line waits"
        );
        writeln!(f, "{}", &record("b")[20..]).unwrap();
        writeln!(f, "{}", record("other")).unwrap();
        let found = source.records(&["a", "b"]).unwrap();
        let ids: Vec<&str> = found
            .iter()
            .map(|r| r["request"]["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
