//! The records of a captured trail as the answers read them (`meshaudit summary`, `report`,
//! `policy`): each record parsed once into the facts the answers group by, a record handed
//! to both outputs kept once, and the hops one request left joined on its request id.
//!
//! Lines are read as `verify` reads them (`verify::extract`): Envoy's log, access logs, bare
//! JSON, a shipper's envelope. A request record is kept compact (`Hop`: its texts interned,
//! parsed without copying), so memory grows by about 320 bytes per request record kept;
//! the other records (configuration, accounting, connections) are few and kept whole.

use super::verify::{extract, read_envelope, Envelope};
use hashbrown::HashTable;
use rustc_hash::{FxHashMap, FxHasher};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hash::Hasher;

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

/// The UTC date and time of seconds since the epoch: year, month, day, hour, minute, second
/// (the inverse of `epoch_seconds`, by the records' own calendar, `record::time`). The
/// plugin writes no time before 1970: an earlier one reads as 1970-01-01.
pub fn utc_parts(epoch: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = u64::try_from(epoch.div_euclid(86_400)).unwrap_or(0);
    let secs = epoch.rem_euclid(86_400);
    let (year, month, day) = crate::core::record::time::civil_from_days(days);
    let whole = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    (
        whole(year),
        whole(month),
        whole(day),
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
    )
}

/// A record that is not a request record (configuration, accounting, suppressed, log level,
/// connection records): the members the answers read; the rest is skipped.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Record {
    pub ts: String,
    pub kind: String,
    pub instance: String,
    pub stream: Option<String>,
    pub seq: Option<u64>,
    pub response: Response,
    pub peer: Peer,
    pub authz: Option<Authz>,
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
pub struct Response {
    pub code: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Peer {
    pub principal: Option<String>,
    pub namespace: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Authz {
    pub by: String,
    pub basis: String,
    pub policy: Option<String>,
    pub ext_authz: Option<ExtAuthz>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct ExtAuthz {
    pub policy: String,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Source {
    pub address: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Connection {
    pub failure: Option<String>,
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

/// Record kinds about the plugin itself, not about traffic: not on the timeline.
const META_KINDS: [&str; 5] = [
    "accounting",
    "suppressed",
    "log_level",
    "config_applied",
    "config_rejected",
];

impl Record {
    /// Who called: the peer's certificate identity (a SPIFFE id in a mesh), else the address
    /// the connection came from (without its port), else `-`.
    pub fn caller(&self) -> String {
        match &self.peer.principal {
            Some(principal) => principal.clone(),
            None => self.source_host(),
        }
    }

    /// The directly connected peer's address without its port: a handshake that failed
    /// proved no identity, whatever certificate it showed.
    pub fn source_host(&self) -> String {
        self.source
            .address
            .as_deref()
            .map_or_else(|| "-".into(), |a| host_of(a).to_string())
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

/// An interned text: request records repeat their callers, paths and policies, so each is
/// kept once (`Symbols`). `Sym::NONE` is an absent member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sym(u32);

impl Sym {
    pub const NONE: Sym = Sym(0);
}

#[derive(Debug)]
pub struct Symbols {
    /// Indexes into `spans`, by the text's hash.
    ids: HashTable<u32>,
    /// Where each text is in `arena`: one allocation for them all, not one each.
    spans: Vec<(usize, usize)>,
    arena: String,
}

impl Default for Symbols {
    fn default() -> Self {
        Self {
            ids: HashTable::new(),
            spans: vec![(0, 0)],
            arena: String::new(),
        }
    }
}

fn text_hash(text: &str) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(text.as_bytes());
    hasher.finish()
}

impl Symbols {
    fn text(&self, id: u32) -> Option<&str> {
        let &(start, end) = self.spans.get(id as usize)?;
        self.arena.get(start..end)
    }

    fn intern(&mut self, text: &str) -> Sym {
        let hash = text_hash(text);
        if let Some(&id) = self.ids.find(hash, |id| self.text(*id) == Some(text)) {
            return Sym(id);
        }
        let id = u32::try_from(self.spans.len()).unwrap_or(u32::MAX);
        let start = self.arena.len();
        self.arena.push_str(text);
        self.spans.push((start, self.arena.len()));
        let (spans, arena) = (&self.spans, &self.arena);
        self.ids.insert_unique(hash, id, |id| {
            spans
                .get(*id as usize)
                .and_then(|&(s, e)| arena.get(s..e))
                .map_or(0, text_hash)
        });
        Sym(id)
    }

    fn opt(&mut self, text: Option<&str>) -> Sym {
        text.map_or(Sym::NONE, |t| self.intern(t))
    }

    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn get(&self, sym: Sym) -> Option<&str> {
        if sym == Sym::NONE {
            return None;
        }
        self.text(sym.0)
    }
}

/// The envelope, wherever its members stand.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Head<'a> {
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    instance: Cow<'a, str>,
    #[serde(borrow)]
    stream: Option<Cow<'a, str>>,
    seq: Option<u64>,
}

/// A request record's members the answers read, borrowed from the line.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawHop<'a> {
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    instance: Cow<'a, str>,
    #[serde(borrow)]
    stream: Option<Cow<'a, str>>,
    seq: Option<u64>,
    #[serde(borrow)]
    direction: Option<Cow<'a, str>>,
    #[serde(borrow)]
    why: RawWhy<'a>,
    #[serde(borrow)]
    request: RawRequest<'a>,
    #[serde(borrow)]
    response: RawResponse<'a>,
    #[serde(borrow)]
    peer: RawPeer<'a>,
    #[serde(borrow)]
    authz: Option<RawAuthz<'a>>,
    #[serde(borrow)]
    authn: Option<RawAuthn<'a>>,
    #[serde(borrow)]
    rate_limit: Option<RawRateLimit<'a>>,
    #[serde(borrow)]
    source: RawSource<'a>,
    connection: Option<serde::de::IgnoredAny>,
    started: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawWhy<'a> {
    #[serde(borrow)]
    reason: Cow<'a, str>,
    #[serde(borrow)]
    rule: Option<Cow<'a, str>>,
    #[serde(borrow)]
    action: Option<Cow<'a, str>>,
    sample_rate: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawRequest<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    method_override: Option<Cow<'a, str>>,
    #[serde(borrow)]
    path: Option<Cow<'a, str>>,
    #[serde(borrow)]
    canonical_path: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ambiguities: Vec<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawResponse<'a> {
    code: Option<u64>,
    #[serde(borrow)]
    code_details: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawPeer<'a> {
    #[serde(borrow)]
    principal: Option<Cow<'a, str>>,
    #[serde(borrow)]
    namespace: Option<Cow<'a, str>>,
    #[serde(borrow)]
    local_principal: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawAuthz<'a> {
    #[serde(borrow)]
    by: Cow<'a, str>,
    #[serde(borrow)]
    basis: Cow<'a, str>,
    #[serde(borrow)]
    policy: Option<Cow<'a, str>>,
    #[serde(borrow)]
    shadow: Vec<RawShadow<'a>>,
    #[serde(borrow)]
    ext_authz: Option<RawExtAuthz<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawShadow<'a> {
    #[serde(borrow)]
    result: Cow<'a, str>,
    #[serde(borrow)]
    prefix: Option<Cow<'a, str>>,
    #[serde(borrow)]
    policy: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawExtAuthz<'a> {
    #[serde(borrow)]
    policy: Cow<'a, str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawAuthn<'a> {
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    issuer: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawRateLimit<'a> {
    #[serde(borrow)]
    limit: Option<Cow<'a, str>>,
    #[serde(borrow)]
    remaining: Option<Cow<'a, str>>,
    window_calls: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawSource<'a> {
    #[serde(borrow)]
    address: Option<Cow<'a, str>>,
}

/// A record's `ts`: the plugin's (`2026-12-01T10:00:00.000Z`, 24 bytes) inline; any other
/// text interned.
#[derive(Debug, Clone, Copy)]
pub enum Ts {
    Inline { bytes: [u8; TS_BYTES], len: u8 },
    Other(Sym),
}

const TS_BYTES: usize = 24;

impl Ts {
    fn new(text: &str, symbols: &mut Symbols) -> Self {
        match (
            <[u8; TS_BYTES]>::try_from(text.as_bytes()),
            u8::try_from(text.len()),
        ) {
            (Ok(bytes), Ok(len)) => Ts::Inline { bytes, len },
            _ => Ts::Other(symbols.intern(text)),
        }
    }
}

/// One shadow engine's result on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShadowResult {
    pub denied: bool,
    pub prefix: Sym,
    pub policy: Sym,
}

/// One request record, compact: its texts interned in the trail's `Symbols`.
#[derive(Debug, Clone)]
pub struct Hop {
    /// Milliseconds since the epoch: the order of records.
    pub at: i64,
    /// `ts` as written: nearly every record's is its own, so it is kept inline, not interned.
    pub ts: Ts,
    pub kind: Sym,
    pub instance: Sym,
    pub stream: Sym,
    pub seq: u64,
    pub direction: Sym,
    pub request_id: Sym,
    /// The method the request acted as: an override the rule matched on, else the request line's.
    pub method: Sym,
    /// The path the rules matched (without the query): the canonical path, or the path as sent.
    pub path: Sym,
    pub principal: Sym,
    pub namespace: Sym,
    pub local_principal: Sym,
    pub source_host: Sym,
    pub rule: Sym,
    /// An `audit` rule's endpoint, or one a mesh AUDIT policy marked.
    pub sensitive: bool,
    /// Written at a sampling rate below 1: the trail does not hold every such request.
    pub sampled: bool,
    pub code: Option<u64>,
    pub code_details: Sym,
    pub authz_by: Sym,
    pub authz_basis: Sym,
    pub authz_policy: Sym,
    pub ext_authz_policy: Sym,
    pub shadow: Box<[ShadowResult]>,
    pub ambiguities: Box<[Sym]>,
    pub authn_reason: Sym,
    pub authn_issuer: Sym,
    /// The lowest `x-ratelimit-remaining` value and its limit, when the response had them.
    pub remaining: Option<u64>,
    pub limit: Sym,
    pub window_calls: u64,
    /// The end of a request whose `started` record was written (`record_start`).
    pub started: bool,
}

/// A request record as the answers read it: the compact record and the trail's texts.
#[derive(Debug, Clone, Copy)]
pub struct HopRef<'t> {
    pub hop: &'t Hop,
    symbols: &'t Symbols,
}

impl<'t> HopRef<'t> {
    pub fn text(&self, sym: Sym) -> Option<&'t str> {
        self.symbols.get(sym)
    }

    fn or_dash(&self, sym: Sym) -> &'t str {
        self.text(sym).unwrap_or("-")
    }

    pub fn ts(&self) -> &'t str {
        match &self.hop.ts {
            Ts::Inline { bytes, len } => bytes
                .get(..usize::from(*len))
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or("-"),
            Ts::Other(sym) => self.or_dash(*sym),
        }
    }

    pub fn kind(&self) -> &'t str {
        self.or_dash(self.hop.kind)
    }

    pub fn instance(&self) -> &'t str {
        self.or_dash(self.hop.instance)
    }

    pub fn direction(&self) -> Option<&'t str> {
        self.text(self.hop.direction)
    }

    pub fn request_id(&self) -> Option<&'t str> {
        self.text(self.hop.request_id)
    }

    pub fn method(&self) -> &'t str {
        self.or_dash(self.hop.method)
    }

    pub fn path(&self) -> &'t str {
        self.or_dash(self.hop.path)
    }

    pub fn principal(&self) -> Option<&'t str> {
        self.text(self.hop.principal)
    }

    pub fn namespace(&self) -> Option<&'t str> {
        self.text(self.hop.namespace)
    }

    pub fn rule(&self) -> Option<&'t str> {
        self.text(self.hop.rule)
    }

    /// Who called: the peer's certificate identity, else the peer's address, else `-`.
    pub fn caller(&self) -> &'t str {
        self.principal()
            .or(self.text(self.hop.source_host))
            .unwrap_or("-")
    }

    /// Which hop of a request this is, in the order a request passes them.
    fn hop_order(&self) -> u8 {
        match self.direction() {
            Some("gateway") => 0,
            Some("outbound") => 1,
            Some("waypoint") => 2,
            Some("inbound") => 3,
            _ => 4,
        }
    }

    /// The proxy decided here (RBAC or ext_authz), rather than passing on an answer.
    fn decided_here(&self) -> bool {
        matches!(self.text(self.hop.authz_by), Some("rbac" | "ext_authz"))
    }
}

/// One request across its hops: the records it left at a gateway, the client's sidecar, a
/// waypoint and the server's sidecar, in that order.
#[derive(Debug, Clone)]
pub struct Call<'t> {
    pub hops: Vec<HopRef<'t>>,
}

impl<'t> Call<'t> {
    /// The record that speaks for the request: the hop whose proxy decided it (RBAC or
    /// ext_authz), else the server's sidecar, else the last hop.
    pub fn primary(&self) -> Option<HopRef<'t>> {
        self.hops
            .iter()
            .rev()
            .find(|r| r.decided_here())
            .or_else(|| self.hops.iter().rev().find(|r| r.hop_order() == 3))
            .or(self.hops.last())
            .copied()
    }

    /// The caller as the hop nearest the server that knows a principal saw it (a sidecar's
    /// downstream is the application itself, so the server's sidecar names the workload).
    pub fn caller(&self) -> &'t str {
        self.hops
            .iter()
            .rev()
            .find(|r| r.principal().is_some())
            .copied()
            .or_else(|| self.primary())
            .map_or("-", |r| r.caller())
    }

    pub fn namespace(&self) -> &'t str {
        self.hops
            .iter()
            .rev()
            .find_map(|r| r.namespace())
            .unwrap_or("-")
    }

    pub fn any(&self, test: impl Fn(&HopRef<'t>) -> bool) -> bool {
        self.hops.iter().any(test)
    }
}

/// What was read, before any answer: every request record kept once and compact, the other
/// records whole, the counts of what was not a record, and what the timeline needs.
#[derive(Debug, Default)]
pub struct Trail {
    pub hops: Vec<Hop>,
    /// `started` records: requests as they started (`record_start`), read like request records
    /// but not joined into requests (their end records are).
    pub starts: Vec<Hop>,
    /// Every record that is not a request record: configuration, accounting, suppressed,
    /// log level, connection records.
    pub records: Vec<Record>,
    pub symbols: Symbols,
    /// Records kept (in the window, once each).
    pub kept: u64,
    pub records_by_kind: BTreeMap<String, u64>,
    pub first: Option<String>,
    pub last: Option<String>,
    /// Traffic records (not the plugin's own) by second and kind: the timeline's input.
    pub per_second: BTreeMap<(i64, String), u64>,
    /// Records read a second time: the same stream and sequence number in another output.
    pub duplicates: u64,
    /// Lines that held no record (other log lines).
    pub other_lines: u64,
    /// Lines that looked like a record but did not parse.
    pub unreadable: u64,
    /// Records outside the window.
    pub outside_window: u64,
    seen: FxHashMap<String, SeqSet>,
}

/// The sequence numbers of a stream read so far, as ranges: a stream read in order is one
/// range, whatever its length.
#[derive(Debug, Default)]
struct SeqSet {
    /// Start → end (exclusive).
    ranges: BTreeMap<u64, u64>,
    /// `u64::MAX` was read.
    max: bool,
}

impl SeqSet {
    /// Adds `seq`; false when it was there already.
    fn insert(&mut self, seq: u64) -> bool {
        // A hostile record's `u64::MAX`: no range can end after it.
        let Some(next) = seq.checked_add(1) else {
            return !std::mem::replace(&mut self.max, true);
        };
        let before = self.ranges.range(..=seq).next_back().map(|(&s, &e)| (s, e));
        if before.is_some_and(|(_, end)| seq < end) {
            return false;
        }
        let end = self.ranges.remove(&next).unwrap_or(next);
        match before {
            Some((start, e)) if e == seq => {
                self.ranges.insert(start, end);
            }
            _ => {
                self.ranges.insert(seq, end);
            }
        }
        true
    }
}

/// Milliseconds since the epoch of a record's `ts`.
fn millis(ts: &str) -> i64 {
    let ms = ts
        .get(20..23)
        .and_then(|m| m.parse::<i64>().ok())
        .unwrap_or(0);
    epoch_seconds(ts).map_or(0, |s| s * 1000 + ms)
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
            // Valid UTF-8 (every line the plugin wrote) is read in place.
            match std::str::from_utf8(&buffer) {
                Ok(text) => self.line(text, window),
                Err(_) => self.line(&String::from_utf8_lossy(&buffer), window),
            }
        }
    }

    pub fn line(&mut self, line: &str, window: &Window) {
        let Some((text, _)) = extract(line) else {
            self.other_lines += 1;
            return;
        };
        // The plugin writes the envelope's members first (read without parsing the rest); a
        // shipper that re-serialised the record may have moved them.
        let envelope = match read_envelope(&text) {
            Some(envelope) if !envelope.kind.is_empty() && !envelope.ts.is_empty() => envelope,
            _ => match serde_json::from_str::<Head<'_>>(&text) {
                Ok(head) => Envelope {
                    ts: head.ts,
                    kind: head.kind,
                    instance: head.instance,
                    stream: head.stream,
                    seq: head.seq,
                },
                Err(_) => {
                    self.unreadable += 1;
                    return;
                }
            },
        };
        if let (Some(stream), Some(seq)) = (envelope.stream.as_deref(), envelope.seq) {
            let seen = match self.seen.get_mut(stream) {
                Some(seen) => seen,
                None => self.seen.entry(stream.to_string()).or_default(),
            };
            if !seen.insert(seq) {
                self.duplicates += 1;
                return;
            }
        }
        if !window.contains(&envelope.ts) {
            self.outside_window += 1;
            return;
        }
        let start = &*envelope.kind == "started";
        let raw = if start || REQUEST_KINDS.contains(&&*envelope.kind) {
            serde_json::from_str::<RawHop<'_>>(&text).ok()
        } else {
            None
        };
        let kept = match raw {
            Some(raw) if start => {
                let hop = self.compact(raw);
                self.starts.push(hop);
                true
            }
            // A network-mode `denied` is a connection record, not a request's.
            Some(raw) if raw.connection.is_none() => {
                let hop = self.compact(raw);
                self.hops.push(hop);
                true
            }
            _ => serde_json::from_str::<Record>(&text)
                .map(|record| self.records.push(record))
                .is_ok(),
        };
        if !kept {
            self.unreadable += 1;
            return;
        }
        self.kept += 1;
        let (ts, kind) = (&*envelope.ts, &*envelope.kind);
        if self.first.as_deref().is_none_or(|f| ts < f) {
            self.first = Some(ts.to_string());
        }
        if self.last.as_deref().is_none_or(|l| ts > l) {
            self.last = Some(ts.to_string());
        }
        match self.records_by_kind.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                self.records_by_kind.insert(kind.to_string(), 1);
            }
        }
        if !META_KINDS.contains(&kind) {
            if let Some(second) = epoch_seconds(ts) {
                // Records of one second and kind come together: count them without a new key.
                match self.per_second.last_key_value() {
                    Some(((s, k), _)) if *s == second && k == kind => {
                        if let Some(mut last) = self.per_second.last_entry() {
                            *last.get_mut() += 1;
                        }
                    }
                    _ => {
                        *self
                            .per_second
                            .entry((second, kind.to_string()))
                            .or_default() += 1
                    }
                }
            }
        }
    }

    fn compact(&mut self, raw: RawHop<'_>) -> Hop {
        let s = &mut self.symbols;
        let request = &raw.request;
        let path = match (&request.canonical_path, &request.path) {
            (Some(canonical), _) => Some(&**canonical),
            (None, Some(path)) => path.split('?').next(),
            (None, None) => None,
        };
        let authz = raw.authz.as_ref();
        let rate = raw.rate_limit.as_ref();
        let why = &raw.why;
        Hop {
            at: millis(&raw.ts),
            ts: Ts::new(&raw.ts, s),
            kind: s.intern(&raw.kind),
            instance: s.intern(&raw.instance),
            stream: s.opt(raw.stream.as_deref()),
            seq: raw.seq.unwrap_or(0),
            direction: s.opt(raw.direction.as_deref()),
            request_id: s.opt(request.id.as_deref()),
            method: s.opt(
                request
                    .method_override
                    .as_deref()
                    .or(request.method.as_deref()),
            ),
            path: s.opt(path),
            principal: s.opt(raw.peer.principal.as_deref()),
            namespace: s.opt(raw.peer.namespace.as_deref()),
            local_principal: s.opt(raw.peer.local_principal.as_deref()),
            source_host: s.opt(raw.source.address.as_deref().map(host_of)),
            rule: s.opt(why.rule.as_deref()),
            sensitive: (why.reason == "rule" && why.action.as_deref() == Some("audit"))
                || why.reason == "mesh_audit_policy",
            sampled: why.sample_rate.is_some_and(|rate| rate < 1.0),
            code: raw.response.code,
            code_details: s.opt(raw.response.code_details.as_deref()),
            authz_by: s.opt(authz.map(|a| &*a.by)),
            authz_basis: s.opt(authz.map(|a| &*a.basis)),
            authz_policy: s.opt(authz.and_then(|a| a.policy.as_deref())),
            ext_authz_policy: s.opt(authz.and_then(|a| Some(&*a.ext_authz.as_ref()?.policy))),
            shadow: authz
                .map(|a| {
                    a.shadow
                        .iter()
                        .map(|r| ShadowResult {
                            denied: r.result == "denied",
                            prefix: s.opt(r.prefix.as_deref()),
                            policy: s.opt(r.policy.as_deref()),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            ambiguities: request.ambiguities.iter().map(|a| s.intern(a)).collect(),
            authn_reason: s.opt(raw.authn.as_ref().and_then(|a| a.reason.as_deref())),
            authn_issuer: s.opt(raw.authn.as_ref().and_then(|a| a.issuer.as_deref())),
            remaining: rate
                .and_then(|r| r.remaining.as_deref())
                .and_then(|r| r.trim().split([',', ';']).next()?.trim().parse().ok()),
            limit: s.opt(rate.and_then(|r| r.limit.as_deref())),
            window_calls: rate.and_then(|r| r.window_calls).unwrap_or(0),
            started: raw.started,
        }
    }

    /// Sorts both kinds of records by time (then stream and sequence number): inputs interleave.
    pub fn sort(&mut self) {
        self.hops.sort_by_key(|h| (h.at, h.stream, h.seq));
        self.starts.sort_by_key(|h| (h.at, h.stream, h.seq));
        self.records
            .sort_by(|a, b| (&a.ts, &a.stream, a.seq).cmp(&(&b.ts, &b.stream, b.seq)));
    }

    /// The `started` records whose request has no end record in the trail (same stream and
    /// request id, `started: true`): streams still open when the trail was read, or whose
    /// proxy died before they ended. A start without a request id cannot be paired: it is
    /// counted open.
    pub fn open_streams(&self) -> Vec<HopRef<'_>> {
        let ended: std::collections::HashSet<(Sym, Sym)> = self
            .hops
            .iter()
            .filter(|h| h.started && h.request_id != Sym::NONE)
            .map(|h| (h.stream, h.request_id))
            .collect();
        self.starts
            .iter()
            .filter(|s| s.request_id == Sym::NONE || !ended.contains(&(s.stream, s.request_id)))
            .map(|hop| HopRef {
                hop,
                symbols: &self.symbols,
            })
            .collect()
    }

    /// The request records joined into requests on their request id (a record without one is
    /// a request of its own; the same id at the same proxy and direction again starts another),
    /// in the order of each request's first record.
    pub fn requests(&self) -> Vec<Call<'_>> {
        // By request id's symbol: symbols are dense, so a vector, not a hash map.
        let mut by_id: Vec<Option<usize>> = vec![None; self.symbols.len()];
        let mut requests: Vec<Call<'_>> = Vec::new();
        for hop in &self.hops {
            let record = HopRef {
                hop,
                symbols: &self.symbols,
            };
            // The same id at the same hop again is another request (a client that reuses ids).
            let joined = (hop.request_id != Sym::NONE)
                .then(|| by_id.get(hop.request_id.0 as usize).copied().flatten())
                .flatten()
                .filter(|&at| {
                    requests.get(at).is_some_and(|call| {
                        !call.hops.iter().any(|h| {
                            h.hop.instance == hop.instance && h.hop.direction == hop.direction
                        })
                    })
                });
            let at = match joined {
                Some(at) => at,
                None => {
                    requests.push(Call { hops: Vec::new() });
                    if hop.request_id != Sym::NONE {
                        if let Some(slot) = by_id.get_mut(hop.request_id.0 as usize) {
                            *slot = Some(requests.len() - 1);
                        }
                    }
                    requests.len() - 1
                }
            };
            if let Some(request) = requests.get_mut(at) {
                request.hops.push(record);
            }
        }
        for request in &mut requests {
            request.hops.sort_by_key(|r| (r.hop_order(), r.hop.at));
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
    fn sequence_numbers_in_any_order_are_each_kept_once() {
        let mut seen = SeqSet::default();
        for seq in [5, 6, 7, 2, 3, 9, 4, 8, 0] {
            assert!(seen.insert(seq), "{seq}");
        }
        for seq in [0, 2, 5, 9, 4] {
            assert!(!seen.insert(seq), "{seq} again");
        }
        assert_eq!(seen.ranges, BTreeMap::from([(0, 1), (2, 10)]));
        assert!(seen.insert(1));
        assert_eq!(seen.ranges, BTreeMap::from([(0, 10)]));
        assert!(seen.insert(u64::MAX) && !seen.insert(u64::MAX));
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
        assert_eq!((trail.hops.len(), trail.kept), (1, 1));
        assert_eq!(
            (trail.duplicates, trail.other_lines, trail.unreadable),
            (1, 1, 1)
        );
        let calls = trail.requests();
        let only = calls.first().unwrap().hops.first().unwrap();
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
        let order: Vec<&str> = joined.hops.iter().map(|r| r.instance()).collect();
        assert_eq!(order, ["gw", "client", "server"]);
        assert_eq!(joined.primary().unwrap().instance(), "server");
        assert_eq!(joined.caller(), "spiffe://td/ns/shop/sa/web");
    }
}
