//! The records of a captured trail as the answers read them (`meshaudit summary`, `report`,
//! `policy`): each record parsed once into the facts the answers group by, a record handed
//! to both outputs kept once, and the hops one request left joined on its request id.
//!
//! Lines are read as `verify` reads them (`verify::extract`): Envoy's log, access logs, bare
//! JSON, a shipper's envelope. Memory grows with the records kept (a few hundred bytes
//! each), not with the lines read.

use super::verify::extract;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// A time window over records' `ts`: `since` included, `until` excluded. Bounds are RFC 3339
/// instants in UTC (`Z`), or a prefix of one (`2026-12-01`, `2026-12-01T10:00`), compared
/// with the records' fixed-width `ts` as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    pub since: Option<String>,
    pub until: Option<String>,
}

impl Window {
    /// Checks a bound's shape: what compares as text with a record's `ts` in time order.
    pub fn bound(text: &str) -> Result<String, String> {
        const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd.ddd";
        let text = text.strip_suffix('Z').unwrap_or(text);
        let shaped = text.len() >= 10
            && text.len() <= SHAPE.len()
            && text.bytes().zip(SHAPE).all(|(b, &s)| match s {
                b'd' => b.is_ascii_digit(),
                other => b == other,
            })
            && !text.ends_with(['-', 'T', ':', '.']);
        if shaped {
            Ok(text.to_string())
        } else {
            Err(format!(
                "{text:?} is not a UTC time: 2026-12-01, 2026-12-01T10:00 or 2026-12-01T10:00:00.000Z"
            ))
        }
    }

    pub fn contains(&self, ts: &str) -> bool {
        self.since.as_deref().is_none_or(|s| ts >= s)
            && self.until.as_deref().is_none_or(|u| ts < u)
    }
}

/// Seconds since the Unix epoch of a record's `ts` (`2026-12-01T10:00:00.000Z`).
pub fn epoch_seconds(ts: &str) -> Option<i64> {
    let number = |from: usize, to: usize| ts.get(from..to)?.parse::<i64>().ok();
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// One record's members the answers read; the rest is skipped.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Record {
    pub ts: String,
    pub kind: String,
    pub instance: String,
    pub stream: Option<String>,
    pub seq: Option<u64>,
    pub direction: Option<String>,
    pub why: Why,
    pub request: Request,
    pub response: Response,
    pub peer: Peer,
    pub authz: Option<Authz>,
    pub authn: Option<Authn>,
    pub rate_limit: Option<RateLimit>,
    pub source: Source,
    pub connection: Option<Connection>,
    pub config: Option<Config>,
    pub suppressed: Option<Suppressed>,
    pub interval: Option<Interval>,
    pub totals: BTreeMap<String, u64>,
    pub log_level: Option<LogLevel>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Why {
    pub reason: String,
    pub rule: Option<String>,
    pub action: Option<String>,
    pub sample_rate: Option<f64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Request {
    pub id: Option<String>,
    pub method: Option<String>,
    pub method_override: Option<String>,
    pub authority: Option<String>,
    pub path: Option<String>,
    pub canonical_path: Option<String>,
    pub ambiguities: Vec<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Response {
    pub code: Option<u64>,
    pub code_details: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Peer {
    pub mtls: bool,
    pub principal: Option<String>,
    pub namespace: Option<String>,
    pub local_principal: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Authz {
    pub decision: String,
    pub by: String,
    pub basis: String,
    pub policy: Option<String>,
    pub shadow: Vec<Shadow>,
    pub ext_authz: Option<ExtAuthz>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Shadow {
    pub result: String,
    pub prefix: Option<String>,
    pub policy: Option<String>,
    pub policy_namespace: Option<String>,
    pub policy_name: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct ExtAuthz {
    pub answer: String,
    pub policy: String,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Authn {
    pub method: String,
    pub result: String,
    pub reason: Option<String>,
    pub issuer: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct RateLimit {
    pub limit: Option<String>,
    pub remaining: Option<String>,
    pub window_calls: Option<u64>,
    pub window_seconds: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Source {
    pub address: Option<String>,
    pub forwarded_for: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Connection {
    pub failure: Option<String>,
    pub failure_reason: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    pub digest: String,
    pub previous_digest: Option<String>,
    pub version: Option<u64>,
    pub rules: Vec<String>,
    pub error: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Suppressed {
    pub kind: String,
    pub rule: Option<String>,
    pub caller: String,
    pub count: u64,
    pub first: String,
    pub last: String,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Interval {
    pub start: String,
    pub end: String,
    pub config: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct LogLevel {
    pub records_hidden: bool,
}

/// The request record kinds: one HTTP stream each (a connection record has none of these).
const REQUEST_KINDS: [&str; 6] = [
    "access",
    "denied",
    "auth_failure",
    "shadow_denied",
    "shadow_allowed",
    "rate_limited",
];

impl Record {
    pub fn is_request(&self) -> bool {
        REQUEST_KINDS.contains(&self.kind.as_str()) && self.connection.is_none()
    }

    /// The path the rules matched (without the query): the canonical path, or the path as sent.
    pub fn path(&self) -> &str {
        let request = &self.request;
        match (&request.canonical_path, &request.path) {
            (Some(canonical), _) => canonical,
            (None, Some(path)) => path.split('?').next().unwrap_or(path),
            (None, None) => "-",
        }
    }

    /// The method the request acted as: an override the rule matched on, else the request line's.
    pub fn method(&self) -> &str {
        let request = &self.request;
        request
            .method_override
            .as_deref()
            .or(request.method.as_deref())
            .unwrap_or("-")
    }

    /// Who called: the peer's certificate identity (a SPIFFE id in a mesh), else the address
    /// the connection came from (without its port), else `-`.
    pub fn caller(&self) -> String {
        if let Some(principal) = &self.peer.principal {
            return principal.clone();
        }
        self.source_host()
    }

    /// The directly connected peer's address without its port: a handshake that failed
    /// proved no identity, whatever certificate it showed.
    pub fn source_host(&self) -> String {
        self.source
            .address
            .as_deref()
            .map_or_else(|| "-".into(), |a| host_of(a).to_string())
    }

    /// An `audit` rule's endpoint, or one a mesh AUDIT policy marked.
    pub fn sensitive(&self) -> bool {
        (self.why.reason == "rule" && self.why.action.as_deref() == Some("audit"))
            || self.why.reason == "mesh_audit_policy"
    }

    /// Written at a sampling rate below 1: the trail does not hold every such request.
    pub fn sampled(&self) -> bool {
        self.why.sample_rate.is_some_and(|rate| rate < 1.0)
    }

    /// Which hop of a request this is, in the order a request passes them.
    fn hop_order(&self) -> u8 {
        match self.direction.as_deref() {
            Some("gateway") => 0,
            Some("outbound") => 1,
            Some("waypoint") => 2,
            Some("inbound") => 3,
            _ => 4,
        }
    }

    /// The proxy decided here (RBAC or ext_authz), rather than passing on an answer.
    fn decided_here(&self) -> bool {
        self.authz
            .as_ref()
            .is_some_and(|a| matches!(a.by.as_str(), "rbac" | "ext_authz"))
    }
}

/// `10.0.0.1:5000` → `10.0.0.1`, `[::1]:5000` → `[::1]`.
fn host_of(address: &str) -> &str {
    match address.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !host.is_empty() => {
            if host.starts_with('[') || !host.contains(':') {
                host
            } else {
                address
            }
        }
        _ => address,
    }
}

/// One request across its hops: the records it left at a gateway, the client's sidecar, a
/// waypoint and the server's sidecar, in that order.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub hops: Vec<&'a Record>,
}

impl<'a> Call<'a> {
    /// The record that speaks for the request: the hop whose proxy decided it (RBAC or
    /// ext_authz), else the server's sidecar, else the last hop.
    pub fn primary(&self) -> Option<&'a Record> {
        self.hops
            .iter()
            .rev()
            .find(|r| r.decided_here())
            .or_else(|| self.hops.iter().rev().find(|r| r.hop_order() == 3))
            .or(self.hops.last())
            .copied()
    }

    /// The caller as the first hop that knows a principal saw it (a sidecar's downstream is
    /// the application itself, so the server's sidecar names the calling workload).
    pub fn caller(&self) -> String {
        self.hops
            .iter()
            .rev()
            .find(|r| r.peer.principal.is_some())
            .or(self.primary().as_ref())
            .map_or_else(|| "-".into(), |r| r.caller())
    }

    pub fn any(&self, test: impl Fn(&Record) -> bool) -> bool {
        self.hops.iter().any(|r| test(r))
    }
}

/// What was read, before any answer: every record kept once, and what was not a record.
#[derive(Debug, Default)]
pub struct Trail {
    pub records: Vec<Record>,
    /// Records read a second time: the same stream and sequence number in another output.
    pub duplicates: u64,
    /// Lines that held no record (other log lines).
    pub other_lines: u64,
    /// Lines that looked like a record but did not parse.
    pub unreadable: u64,
    /// Records outside the window.
    pub outside_window: u64,
    seen: HashMap<String, HashSet<u64>>,
}

impl Trail {
    /// Reads every line of one input.
    pub fn read(
        &mut self,
        mut reader: impl std::io::BufRead,
        window: &Window,
    ) -> std::io::Result<()> {
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            if reader.read_until(b'\n', &mut buffer)? == 0 {
                return Ok(());
            }
            self.line(&String::from_utf8_lossy(&buffer), window);
        }
    }

    pub fn line(&mut self, line: &str, window: &Window) {
        let Some((text, _)) = extract(line) else {
            self.other_lines += 1;
            return;
        };
        let Ok(record) = serde_json::from_str::<Record>(&text) else {
            self.unreadable += 1;
            return;
        };
        if let (Some(stream), Some(seq)) = (&record.stream, record.seq) {
            let seen = match self.seen.get_mut(stream) {
                Some(seen) => seen,
                None => self.seen.entry(stream.clone()).or_default(),
            };
            if !seen.insert(seq) {
                self.duplicates += 1;
                return;
            }
        }
        if !window.contains(&record.ts) {
            self.outside_window += 1;
            return;
        }
        self.records.push(record);
    }

    /// Sorts the records by time (then stream and sequence number): inputs interleave.
    pub fn sort(&mut self) {
        self.records
            .sort_by(|a, b| (&a.ts, &a.stream, a.seq).cmp(&(&b.ts, &b.stream, b.seq)));
    }

    /// The request records joined into requests on their request id (a record without one is
    /// a request of its own; the same id at the same proxy and direction again starts another),
    /// in the order of each request's first record.
    pub fn requests(&self) -> Vec<Call<'_>> {
        let mut by_id: HashMap<&str, usize> = HashMap::new();
        let mut requests: Vec<Call<'_>> = Vec::new();
        for record in self.records.iter().filter(|r| r.is_request()) {
            // The same id at the same hop again is another request (a client that reuses ids).
            let joined = record.request.id.as_deref().and_then(|id| {
                let at = *by_id.get(id)?;
                let call = requests.get(at)?;
                let same_hop = call
                    .hops
                    .iter()
                    .any(|h| h.instance == record.instance && h.direction == record.direction);
                (!same_hop).then_some(at)
            });
            let at = match joined {
                Some(at) => at,
                None => {
                    requests.push(Call { hops: Vec::new() });
                    if let Some(id) = record.request.id.as_deref() {
                        by_id.insert(id, requests.len() - 1);
                    }
                    requests.len() - 1
                }
            };
            if let Some(request) = requests.get_mut(at) {
                request.hops.push(record);
            }
        }
        for request in &mut requests {
            request.hops.sort_by_key(|r| (r.hop_order(), r.ts.clone()));
        }
        requests
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A record line as the plugin writes it: `v` first (serde_json sorts the rest).
    pub(crate) fn line(mut value: serde_json::Value) -> String {
        if let Some(object) = value.as_object_mut() {
            object.remove("v");
        }
        format!("{{\"v\":1,{}", value.to_string().trim_start_matches('{'))
    }

    pub(crate) fn request(
        id: &str,
        instance: &str,
        direction: &str,
        seq: u64,
    ) -> serde_json::Value {
        json!({
            "v": 1, "ts": format!("2026-12-01T10:00:{:02}.000Z", seq % 60), "kind": "access",
            "instance": instance, "stream": format!("{:016x}", instance.bytes().map(u64::from).sum::<u64>()), "seq": seq,
            "direction": direction, "why": {"reason": "rule", "rule": "admin", "action": "audit", "sample_rate": 1.0},
            "request": {"id": id, "method": "GET", "path": "/admin/users?x=1"},
            "response": {"code": 200}, "peer": {"mtls": false}, "source": {"address": "10.0.0.7:4321"},
        })
    }

    #[test]
    fn window_bounds_are_utc_instants_or_their_prefixes() {
        assert_eq!(Window::bound("2026-12-01").unwrap(), "2026-12-01");
        assert_eq!(
            Window::bound("2026-12-01T10:00").unwrap(),
            "2026-12-01T10:00"
        );
        assert_eq!(
            Window::bound("2026-12-01T10:00:00.000Z").unwrap(),
            "2026-12-01T10:00:00.000"
        );
        for bad in [
            "yesterday",
            "2026-12-1",
            "2026-12-01T",
            "2026-12-01 10:00",
            "2026-12-01T10:00+01:00",
        ] {
            assert!(Window::bound(bad).is_err(), "{bad}");
        }
        let window = Window {
            since: Some("2026-12-01T10".into()),
            until: Some("2026-12-01T11".into()),
        };
        assert!(window.contains("2026-12-01T10:00:00.000Z"));
        assert!(window.contains("2026-12-01T10:59:59.999Z"));
        assert!(!window.contains("2026-12-01T11:00:00.000Z"));
        assert!(!window.contains("2026-12-01T09:59:59.999Z"));
    }

    #[test]
    fn epoch_seconds_of_known_instants() {
        assert_eq!(epoch_seconds("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(epoch_seconds("2000-03-01T00:00:00.000Z"), Some(951_868_800));
        assert_eq!(
            epoch_seconds("2026-12-01T10:00:00.000Z"),
            Some(1_796_119_200)
        );
        assert_eq!(epoch_seconds("not a time"), None);
    }

    #[test]
    fn a_record_in_both_outputs_is_kept_once() {
        let mut trail = Trail::default();
        let record = line(request("a", "server", "inbound", 1));
        trail.line(
            &format!("[info] wasm log: meshaudit.record {record}"),
            &Window::default(),
        );
        trail.line(&record, &Window::default());
        trail.line("[info] another log line", &Window::default());
        trail.line("{\"v\":1,\"ts\":", &Window::default());
        assert_eq!(trail.records.len(), 1);
        assert_eq!(
            (trail.duplicates, trail.other_lines, trail.unreadable),
            (1, 1, 1)
        );
        let only = trail.records.first().unwrap();
        assert_eq!(only.path(), "/admin/users", "the path without its query");
        assert_eq!(only.caller(), "10.0.0.7", "the address without its port");
    }

    #[test]
    fn hops_join_on_the_request_id_and_a_reused_id_at_one_hop_is_another_request() {
        let mut trail = Trail::default();
        let mut inbound = request("a", "server", "inbound", 1);
        inbound["peer"] =
            json!({"mtls": true, "principal": "spiffe://td/ns/shop/sa/web", "namespace": "shop"});
        inbound["authz"] = json!({"decision": "allowed", "by": "rbac", "basis": "allow_policy"});
        for value in [
            inbound,
            request("a", "client", "outbound", 1),
            request("a", "gw", "gateway", 1),
            request("a", "server", "inbound", 2),
            request("b", "server", "inbound", 3),
        ] {
            trail.line(&line(value), &Window::default());
        }
        trail.sort();
        let calls = trail.requests();
        assert_eq!(calls.len(), 3);
        let joined = calls.first().unwrap();
        let order: Vec<&str> = joined.hops.iter().map(|r| r.instance.as_str()).collect();
        assert_eq!(order, ["gw", "client", "server"]);
        assert_eq!(joined.primary().unwrap().instance, "server");
        assert_eq!(joined.caller(), "spiffe://td/ns/shop/sa/web");
    }
}
