//! `meshaudit summary`: the auditor's questions answered from the trail alone — who reached
//! the sensitive endpoints, which policies denied whom, what failed authentication or TLS,
//! what the dry-run policies would have denied, which requests read two ways, what changed in
//! the configuration, and what the trail does not hold (sampled out, dropped, suppressed,
//! hidden). A request that crossed several proxies counts once (`event::Trail::requests`).

use super::event::{Call, HopRef, Record, Trail, Window};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

/// One value of a table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cell {
    Text(String),
    Count(u64),
}

impl Cell {
    pub fn text(&self) -> String {
        match self {
            Cell::Text(text) => text.clone(),
            Cell::Count(n) => n.to_string(),
        }
    }
}

/// A column: its key (JSON, CSV) and its heading (the terminal, the report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub key: &'static str,
    pub heading: &'static str,
}

const fn col(key: &'static str, heading: &'static str) -> Column {
    Column { key, heading }
}

/// One answer as a table; rows most frequent first (the configuration changes newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: &'static str,
    pub title: &'static str,
    pub columns: &'static [Column],
    pub rows: Vec<Vec<Cell>>,
}

/// The names `--csv` accepts, in the order the summary prints them.
pub const TABLES: [&str; 11] = [
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
    "hops",
];

/// Counts of records by kind per time bucket: the report's chart over time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    pub bucket_seconds: i64,
    /// Seconds since the epoch at which the first bucket starts.
    pub start: i64,
    pub buckets: Vec<BTreeMap<String, u64>>,
}

/// What the accounting records say was not written, summed over the window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Completeness {
    /// `accounting` records read.
    pub intervals: u64,
    /// Their totals, summed: requests, records, sampled_out, dropped, suppressed, hidden, …
    pub totals: BTreeMap<String, u64>,
    /// Reports that Envoy's log level hid the records.
    pub hidden_by_log_level: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub window: Window,
    pub first: Option<String>,
    pub last: Option<String>,
    pub records: u64,
    pub records_by_kind: BTreeMap<String, u64>,
    pub request_records: u64,
    pub requests: u64,
    pub duplicates: u64,
    pub other_lines: u64,
    pub unreadable: u64,
    pub outside_window: u64,
    pub completeness: Completeness,
    pub timeline: Timeline,
    pub tables: Vec<Table>,
}

impl Table {
    /// Which columns hold counts (right-aligned), by the first row.
    pub fn numeric_columns(&self) -> Vec<bool> {
        (0..self.columns.len())
            .map(|i| {
                self.rows
                    .first()
                    .and_then(|r| r.get(i))
                    .is_some_and(|c| matches!(c, Cell::Count(_)))
            })
            .collect()
    }
}

impl Summary {
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }
}

/// How many buckets the timeline aims for at most.
const MAX_BUCKETS: i64 = 60;
const BUCKET_SECONDS: [i64; 13] = [
    1, 5, 10, 30, 60, 300, 600, 1800, 3600, 10_800, 21_600, 86_400, 604_800,
];

/// How many requests, first and last seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    pub count: u64,
    pub first: String,
    pub last: String,
}

impl Evidence {
    pub(crate) fn add(&mut self, ts: &str) {
        self.count += 1;
        if self.first.is_empty() || ts < self.first.as_str() {
            self.first = ts.to_string();
        }
        if ts > self.last.as_str() {
            self.last = ts.to_string();
        }
    }

    pub(crate) fn merge(&mut self, other: &Evidence) {
        self.count += other.count;
        if self.first.is_empty() || (!other.first.is_empty() && other.first < self.first) {
            self.first.clone_from(&other.first);
        }
        if other.last > self.last {
            self.last.clone_from(&other.last);
        }
    }
}

/// Counts one group of a table: how many, when first and last, and what else its columns need.
#[derive(Debug, Default)]
struct Group {
    seen: Evidence,
    /// A second count (denied among the sensitive requests).
    also: u64,
    callers: BTreeSet<String>,
    /// The lowest rate-limit headroom seen: remaining, and the limit it was of.
    headroom: Option<(u64, String)>,
    window_calls: u64,
    example: String,
}

/// A table's groups by key. A key is allocated once, when its group is new: a lookup hashes
/// the borrowed values (requests far outnumber groups).
#[derive(Debug, Default)]
struct Groups {
    index: HashMap<u64, Vec<usize>>,
    keys: Vec<Vec<String>>,
    groups: Vec<Group>,
}

impl Groups {
    fn new() -> Self {
        Self::default()
    }
}

fn key_hash(key: &[&str]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for part in key {
        part.hash(&mut hasher);
    }
    hasher.finish()
}

/// The group of `key`, counted once more at `ts` (`None` never happens: a found or pushed
/// index is always in range).
fn group<'g>(groups: &'g mut Groups, key: &[&str], ts: &str) -> Option<&'g mut Group> {
    let Groups {
        index,
        keys,
        groups,
    } = groups;
    let slot = index.entry(key_hash(key)).or_default();
    let found = slot.iter().copied().find(|&at| {
        keys.get(at)
            .is_some_and(|k| k.len() == key.len() && k.iter().zip(key).all(|(a, b)| a == b))
    });
    let at = match found {
        Some(at) => at,
        None => {
            keys.push(key.iter().map(|s| s.to_string()).collect());
            groups.push(Group::default());
            slot.push(groups.len() - 1);
            groups.len() - 1
        }
    };
    let group = groups.get_mut(at)?;
    group.seen.add(ts);
    Some(group)
}

/// Rows most frequent first, then by key.
fn rows(groups: Groups, row: impl Fn(Vec<String>, Group) -> Vec<Cell>) -> Vec<Vec<Cell>> {
    let mut groups: Vec<(Vec<String>, Group)> =
        groups.keys.into_iter().zip(groups.groups).collect();
    groups.sort_by(|(ka, a), (kb, b)| b.seen.count.cmp(&a.seen.count).then_with(|| ka.cmp(kb)));
    groups.into_iter().map(|(k, g)| row(k, g)).collect()
}

fn text(value: impl Into<String>) -> Cell {
    Cell::Text(value.into())
}

fn keyed(key: &[String], at: usize) -> Cell {
    text(key.get(at).cloned().unwrap_or_default())
}

/// The digest as people read it: `sha256:` and the first 12 hex digits.
pub fn short_digest(digest: &str) -> String {
    match digest.strip_prefix("sha256:") {
        Some(hex) => format!("sha256:{}", hex.get(..12).unwrap_or(hex)),
        None => digest.to_string(),
    }
}

/// What denied a request, named as an operator looks for it: the policy, else what the
/// basis says (no ALLOW policy matched, the application's own 403), and by which filter.
fn denier(
    by: Option<&str>,
    basis: Option<&str>,
    policy: Option<&str>,
    ext_authz_policy: Option<&str>,
    code: Option<u64>,
) -> (String, String) {
    let Some(by) = by else {
        let code = code.map_or("-".into(), |c| c.to_string());
        return (format!("(status {code})"), "-".into());
    };
    let policy = match (by, policy, basis.unwrap_or("")) {
        (_, Some(policy), _) => policy.to_string(),
        ("ext_authz", None, _) => ext_authz_policy.unwrap_or("(ext_authz)").to_string(),
        (_, None, "no_allow_policy_matched") => "(no ALLOW policy matched)".into(),
        (_, None, "upstream") => "(the application answered 403)".into(),
        (_, None, basis) => format!("({basis})"),
    };
    (policy, by.to_string())
}

fn hop_denier(r: &HopRef<'_>) -> (String, String) {
    let h = r.hop;
    denier(
        r.text(h.authz_by),
        r.text(h.authz_basis),
        r.text(h.authz_policy),
        r.text(h.ext_authz_policy),
        h.code,
    )
}

fn record_denier(r: &Record) -> (String, String) {
    let authz = r.authz.as_ref();
    denier(
        authz.map(|a| a.by.as_str()),
        authz.map(|a| a.basis.as_str()),
        authz.and_then(|a| a.policy.as_deref()),
        authz.and_then(|a| Some(a.ext_authz.as_ref()?.policy.as_str())),
        r.response.code,
    )
}

pub fn summarize(trail: &Trail, window: &Window, with_hops: bool) -> Summary {
    let calls = trail.requests();
    let mut summary = Summary {
        window: window.clone(),
        first: trail.first.clone(),
        last: trail.last.clone(),
        records: trail.kept,
        records_by_kind: trail.records_by_kind.clone(),
        request_records: trail.hops.len() as u64,
        requests: calls.len() as u64,
        duplicates: trail.duplicates,
        other_lines: trail.other_lines,
        unreadable: trail.unreadable,
        outside_window: trail.outside_window,
        ..Summary::default()
    };
    summary.completeness = completeness(trail);
    summary.timeline = timeline(trail);
    summary.tables = vec![
        sensitive(&calls),
        open_streams(trail),
        denials(trail, &calls),
        auth_failures(&calls),
        tls_failures(trail),
        dry_run(&calls),
        ambiguous(&calls),
        config(trail),
        completeness_table(trail),
        suppressed(trail),
    ];
    if with_hops {
        summary.tables.push(hops(&calls));
    }
    summary
}

fn sensitive(calls: &[Call<'_>]) -> Table {
    const COLUMNS: &[Column] = &[
        col("caller", "caller"),
        col("namespace", "namespace"),
        col("method", "method"),
        col("path", "endpoint"),
        col("requests", "requests"),
        col("denied", "denied"),
        col("rate_limit_headroom", "lowest headroom"),
        col("window_calls", "most calls in a window"),
        col("first", "first"),
        col("last", "last"),
    ];
    let mut groups = Groups::new();
    for call in calls.iter().filter(|c| c.any(|r| r.hop.sensitive)) {
        let Some(primary) = call.primary() else {
            continue;
        };
        let key = [
            call.caller(),
            call.namespace(),
            primary.method(),
            primary.path(),
        ];
        let Some(g) = group(&mut groups, &key, primary.ts()) else {
            continue;
        };
        g.also += u64::from(primary.kind() == "denied");
        for r in &call.hops {
            if let Some(remaining) = r.hop.remaining {
                if g.headroom.as_ref().is_none_or(|(low, _)| remaining < *low) {
                    g.headroom = Some((remaining, r.text(r.hop.limit).unwrap_or("?").to_string()));
                }
            }
            g.window_calls = g.window_calls.max(r.hop.window_calls);
        }
    }
    Table {
        name: "sensitive",
        title: "Sensitive endpoints, by caller",
        columns: COLUMNS,
        rows: rows(groups, |k, g| {
            let headroom = g.headroom.map_or_else(
                || "-".to_string(),
                |(remaining, of)| {
                    format!(
                        "{remaining} of {}",
                        of.split([',', ';']).next().unwrap_or(&of).trim()
                    )
                },
            );
            vec![
                keyed(&k, 0),
                keyed(&k, 1),
                keyed(&k, 2),
                keyed(&k, 3),
                Cell::Count(g.seen.count),
                Cell::Count(g.also),
                text(headroom),
                Cell::Count(g.window_calls),
                text(g.seen.first),
                text(g.seen.last),
            ]
        }),
    }
}

fn denials(trail: &Trail, calls: &[Call<'_>]) -> Table {
    const COLUMNS: &[Column] = &[
        col("policy", "policy"),
        col("by", "by"),
        col("caller", "caller"),
        col("namespace", "namespace"),
        col("count", "denied"),
        col("example", "latest"),
        col("last", "last"),
    ];
    let mut groups = Groups::new();
    let mut note = |key: &[&str], ts: &str, example: String| {
        if let Some(g) = group(&mut groups, key, ts) {
            if ts >= g.seen.last.as_str() {
                g.example = example;
            }
        }
    };
    for call in calls {
        let Some(primary) = call.primary().filter(|r| r.kind() == "denied") else {
            continue;
        };
        let (policy, by) = hop_denier(&primary);
        let example = format!("{} {}", primary.method(), primary.path());
        note(
            &[&policy, &by, call.caller(), call.namespace()],
            primary.ts(),
            example,
        );
    }
    // Connections a network RBAC filter denied (network mode).
    for record in trail
        .records
        .iter()
        .filter(|r| r.kind == "denied" && r.connection.is_some())
    {
        let (policy, by) = record_denier(record);
        let namespace = record.peer.namespace.clone().unwrap_or_else(|| "-".into());
        note(
            &[&policy, &by, &record.caller(), &namespace],
            &record.ts,
            "(connection)".into(),
        );
    }
    Table {
        name: "denials",
        title: "Denials, by policy and caller",
        columns: COLUMNS,
        rows: rows(groups, |k, g| {
            vec![
                keyed(&k, 0),
                keyed(&k, 1),
                keyed(&k, 2),
                keyed(&k, 3),
                Cell::Count(g.seen.count),
                text(g.example),
                text(g.seen.last),
            ]
        }),
    }
}

fn auth_failures(calls: &[Call<'_>]) -> Table {
    const COLUMNS: &[Column] = &[
        col("reason", "reason"),
        col("issuer", "issuer"),
        col("count", "failures"),
        col("callers", "callers"),
        col("example", "latest"),
        col("last", "last"),
    ];
    let mut groups = Groups::new();
    for call in calls {
        // The hop nearest the authenticator: a client's sidecar only saw the 401 come back.
        let Some(failed) = call.hops.iter().rev().find(|r| r.kind() == "auth_failure") else {
            continue;
        };
        let reason = failed
            .text(failed.hop.authn_reason)
            .or(failed.text(failed.hop.code_details))
            .unwrap_or("-");
        let issuer = failed.text(failed.hop.authn_issuer).unwrap_or("-");
        let Some(g) = group(&mut groups, &[reason, issuer], failed.ts()) else {
            continue;
        };
        g.callers.insert(call.caller().to_string());
        if failed.ts() >= g.seen.last.as_str() {
            g.example = format!("{} {}", failed.method(), failed.path());
        }
    }
    Table {
        name: "auth_failures",
        title: "Authentication failures, by reason and issuer",
        columns: COLUMNS,
        rows: rows(groups, |k, g| {
            vec![
                keyed(&k, 0),
                keyed(&k, 1),
                Cell::Count(g.seen.count),
                Cell::Count(g.callers.len() as u64),
                text(g.example),
                text(g.seen.last),
            ]
        }),
    }
}

fn tls_failures(trail: &Trail) -> Table {
    const COLUMNS: &[Column] = &[
        col("reason", "reason"),
        col("source", "source"),
        col("count", "connections"),
        col("first", "first"),
        col("last", "last"),
    ];
    let mut groups = Groups::new();
    for record in trail.records.iter().filter(|r| r.kind == "tls_failure") {
        let reason = record
            .connection
            .as_ref()
            .and_then(|c| c.failure.clone())
            .unwrap_or_else(|| "-".into());
        group(&mut groups, &[&reason, &record.source_host()], &record.ts);
    }
    Table {
        name: "tls_failures",
        title: "TLS failures, by reason and source",
        columns: COLUMNS,
        rows: rows(groups, |k, g| {
            vec![
                keyed(&k, 0),
                keyed(&k, 1),
                Cell::Count(g.seen.count),
                text(g.seen.first),
                text(g.seen.last),
            ]
        }),
    }
}

/// Dry-run results a policy would have denied: shadow results of `shadow_denied` records,
/// never CUSTOM's selection for the external authorizer (prefix `istio_ext_authz_`).
pub(crate) fn would_deny<'t>(record: HopRef<'t>) -> impl Iterator<Item = &'t str> {
    let dry_run = record.kind() == "shadow_denied";
    record
        .hop
        .shadow
        .iter()
        .filter(move |s| {
            dry_run
                && s.denied
                && !record
                    .text(s.prefix)
                    .is_some_and(|p| p.starts_with("istio_ext_authz"))
        })
        .map(move |s| {
            record
                .text(s.policy)
                .or(record.text(s.prefix))
                .unwrap_or("(unnamed shadow policy)")
        })
}

fn dry_run(calls: &[Call<'_>]) -> Table {
    const COLUMNS: &[Column] = &[
        col("policy", "dry-run policy"),
        col("caller", "caller"),
        col("count", "would deny"),
        col("example", "latest"),
        col("last", "last"),
    ];
    let mut groups = Groups::new();
    for call in calls {
        let caller = call.caller();
        // Once per request and policy, however many hops report it.
        let policies: BTreeMap<&str, HopRef<'_>> = call
            .hops
            .iter()
            .flat_map(|r| would_deny(*r).map(move |p| (p, *r)))
            .collect();
        for (policy, record) in policies {
            let Some(g) = group(&mut groups, &[policy, caller], record.ts()) else {
                continue;
            };
            if record.ts() >= g.seen.last.as_str() {
                g.example = format!("{} {}", record.method(), record.path());
            }
        }
    }
    Table {
        name: "dry_run",
        title: "What dry-run policies would have denied",
        columns: COLUMNS,
        rows: rows(groups, |k, g| {
            vec![
                keyed(&k, 0),
                keyed(&k, 1),
                Cell::Count(g.seen.count),
                text(g.example),
                text(g.seen.last),
            ]
        }),
    }
}

/// Requests a `record_start` rule recorded as they started, with no end in the trail: an admin
/// stream still open, or one whose proxy died first.
fn open_streams(trail: &Trail) -> Table {
    const COLUMNS: &[Column] = &[
        col("ts", "started"),
        col("instance", "proxy"),
        col("caller", "caller"),
        col("method", "method"),
        col("path", "endpoint"),
        col("rule", "rule"),
        col("request_id", "request id"),
    ];
    let rows = trail
        .open_streams()
        .into_iter()
        .map(|start| {
            vec![
                text(start.ts()),
                text(start.instance()),
                text(start.caller()),
                text(start.method()),
                text(start.path()),
                text(start.rule().unwrap_or("-")),
                text(start.request_id().unwrap_or("-")),
            ]
        })
        .collect();
    Table {
        name: "open_streams",
        title: "Streams started and not ended in the trail (record_start)",
        columns: COLUMNS,
        rows,
    }
}

fn ambiguous(calls: &[Call<'_>]) -> Table {
    const COLUMNS: &[Column] = &[
        col("ambiguity", "ambiguity"),
        col("caller", "caller"),
        col("method", "method"),
        col("path", "path"),
        col("count", "requests"),
        col("last", "last"),
    ];
    let mut groups = Groups::new();
    for call in calls {
        let codes: BTreeSet<&str> = call
            .hops
            .iter()
            .flat_map(|r| r.hop.ambiguities.iter().filter_map(|a| r.text(*a)))
            .collect();
        let Some(primary) = call.primary() else {
            continue;
        };
        for code in codes {
            group(
                &mut groups,
                &[code, call.caller(), primary.method(), primary.path()],
                primary.ts(),
            );
        }
    }
    Table {
        name: "ambiguous",
        title: "Requests that read two ways",
        columns: COLUMNS,
        rows: rows(groups, |k, g| {
            vec![
                keyed(&k, 0),
                keyed(&k, 1),
                keyed(&k, 2),
                keyed(&k, 3),
                Cell::Count(g.seen.count),
                text(g.seen.last),
            ]
        }),
    }
}

fn config(trail: &Trail) -> Table {
    const COLUMNS: &[Column] = &[
        col("ts", "time"),
        col("instance", "proxy"),
        col("change", "change"),
        col("digest", "digest"),
        col("previous_digest", "previous"),
        col("version", "version"),
        col("rules", "rules"),
        col("error", "error"),
    ];
    let mut changes: Vec<&Record> = trail
        .records
        .iter()
        .filter(|r| r.kind.starts_with("config_"))
        .collect();
    changes.sort_by(|a, b| b.ts.cmp(&a.ts));
    let rows = changes
        .into_iter()
        .filter_map(|r| {
            let config = r.config.as_ref()?;
            Some(vec![
                text(&r.ts),
                text(&r.instance),
                text(r.kind.trim_start_matches("config_")),
                text(short_digest(&config.digest)),
                text(
                    config
                        .previous_digest
                        .as_deref()
                        .map_or("-".into(), short_digest),
                ),
                Cell::Count(config.version.unwrap_or(0)),
                Cell::Count(config.rules.len() as u64),
                text(config.error.clone().unwrap_or_else(|| "-".into())),
            ])
        })
        .collect();
    Table {
        name: "config",
        title: "Configuration changes, newest first",
        columns: COLUMNS,
        rows,
    }
}

/// The accounting totals the completeness table and chart show, in this order.
pub const LOSS_TOTALS: [&str; 7] = [
    "records",
    "sampled_out",
    "dropped",
    "suppressed",
    "hidden",
    "sink_errors",
    "caller_evictions",
];

/// The totals of what a proxy produced or had to record and did not write.
pub const NOT_WRITTEN: [&str; 5] = [
    "sampled_out",
    "dropped",
    "suppressed",
    "hidden",
    "sink_errors",
];

impl Completeness {
    pub fn total(&self, name: &str) -> u64 {
        self.totals.get(name).copied().unwrap_or(0)
    }

    pub fn not_written(&self) -> u64 {
        // Totals come from the records: a hostile one must not overflow the sum.
        NOT_WRITTEN
            .iter()
            .fold(0u64, |sum, n| sum.saturating_add(self.total(n)))
    }
}

fn completeness(trail: &Trail) -> Completeness {
    let mut completeness = Completeness::default();
    for record in &trail.records {
        match record.kind.as_str() {
            "accounting" => {
                completeness.intervals += 1;
                for (name, n) in &record.totals {
                    let total = completeness.totals.entry(name.clone()).or_default();
                    *total = total.saturating_add(*n);
                }
            }
            "log_level" if record.log_level.as_ref().is_some_and(|l| l.records_hidden) => {
                completeness.hidden_by_log_level += 1;
            }
            _ => {}
        }
    }
    completeness
}

fn completeness_table(trail: &Trail) -> Table {
    const COLUMNS: &[Column] = &[
        col("instance", "proxy"),
        col("intervals", "intervals"),
        col("requests", "requests"),
        col("records", "written"),
        col("sampled_out", "sampled out"),
        col("dropped", "dropped"),
        col("suppressed", "suppressed"),
        col("hidden", "hidden"),
        col("sink_errors", "sink errors"),
        col("caller_evictions", "caller evictions"),
    ];
    let mut by_instance: BTreeMap<&str, (u64, BTreeMap<&str, u64>)> = BTreeMap::new();
    for record in trail.records.iter().filter(|r| r.kind == "accounting") {
        let (intervals, totals) = by_instance.entry(&record.instance).or_default();
        *intervals += 1;
        for (name, n) in &record.totals {
            let total = totals.entry(name).or_default();
            *total = total.saturating_add(*n);
        }
    }
    let rows = by_instance
        .into_iter()
        .map(|(instance, (intervals, totals))| {
            let get = |name: &str| Cell::Count(totals.get(name).copied().unwrap_or(0));
            let mut row = vec![text(instance), Cell::Count(intervals), get("requests")];
            row.extend(LOSS_TOTALS.iter().map(|name| get(name)));
            row
        })
        .collect();
    Table {
        name: "completeness",
        title: "Completeness: what each proxy's accounting says it did not write",
        columns: COLUMNS,
        rows,
    }
}

fn suppressed(trail: &Trail) -> Table {
    const COLUMNS: &[Column] = &[
        col("kind", "kind"),
        col("rule", "rule"),
        col("caller", "caller"),
        col("count", "suppressed"),
        col("first", "first"),
        col("last", "last"),
    ];
    let mut groups: BTreeMap<Vec<String>, (u64, String, String)> = BTreeMap::new();
    for s in trail.records.iter().filter_map(|r| r.suppressed.as_ref()) {
        let rule = s.rule.clone().unwrap_or_else(|| "-".into());
        let entry = groups
            .entry(vec![s.kind.clone(), rule, s.caller.clone()])
            .or_insert_with(|| (0, s.first.clone(), s.last.clone()));
        entry.0 = entry.0.saturating_add(s.count);
        entry.1 = entry.1.clone().min(s.first.clone());
        entry.2 = entry.2.clone().max(s.last.clone());
    }
    let mut rows: Vec<Vec<Cell>> = groups
        .into_iter()
        .map(|(k, (count, first, last))| {
            vec![
                keyed(&k, 0),
                keyed(&k, 1),
                keyed(&k, 2),
                Cell::Count(count),
                text(first),
                text(last),
            ]
        })
        .collect();
    rows.sort_by(|a, b| b.get(3).cmp(&a.get(3)));
    Table {
        name: "suppressed",
        title: "Suppressed by a budget (counted, not written), by rule and caller",
        columns: COLUMNS,
        rows,
    }
}

fn hops(calls: &[Call<'_>]) -> Table {
    const COLUMNS: &[Column] = &[
        col("request_id", "request id"),
        col("first", "first"),
        col("method", "method"),
        col("path", "path"),
        col("hops", "hops"),
        col("route", "proxy direction: kind status, in order"),
    ];
    let rows = calls
        .iter()
        .filter(|c| c.hops.len() > 1)
        .filter_map(|call| {
            let primary = call.primary()?;
            let route = call
                .hops
                .iter()
                .map(|r| {
                    let code = r.hop.code.map_or("-".into(), |c| c.to_string());
                    let direction = r.direction().unwrap_or("-");
                    format!("{} {direction}: {} {code}", r.instance(), r.kind())
                })
                .collect::<Vec<_>>()
                .join(" -> ");
            let first = call.hops.iter().map(|r| r.ts()).min()?;
            Some(vec![
                text(primary.request_id().unwrap_or("-")),
                text(first),
                text(primary.method()),
                text(primary.path()),
                Cell::Count(call.hops.len() as u64),
                text(route),
            ])
        })
        .collect();
    Table {
        name: "hops",
        title: "Requests seen at more than one proxy",
        columns: COLUMNS,
        rows,
    }
}

fn timeline(trail: &Trail) -> Timeline {
    let (Some(first), Some(last)) = (
        trail.per_second.keys().map(|(t, _)| *t).min(),
        trail.per_second.keys().map(|(t, _)| *t).max(),
    ) else {
        return Timeline::default();
    };
    let span = last - first + 1;
    let bucket_seconds = BUCKET_SECONDS
        .into_iter()
        .find(|b| (span + b - 1) / b <= MAX_BUCKETS)
        .unwrap_or(604_800);
    let start = first - first.rem_euclid(bucket_seconds);
    let count = usize::try_from((last - start) / bucket_seconds + 1).unwrap_or(1);
    let mut buckets = vec![BTreeMap::new(); count];
    for ((t, kind), n) in &trail.per_second {
        let at = usize::try_from((t - start) / bucket_seconds).unwrap_or(0);
        if let Some(bucket) = buckets.get_mut(at) {
            *bucket.entry(kind.clone()).or_default() += n;
        }
    }
    Timeline {
        bucket_seconds,
        start,
        buckets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::trail::event::tests::{line, request};
    use serde_json::json;

    fn summary_of(records: Vec<serde_json::Value>) -> Summary {
        let mut trail = Trail::default();
        for record in records {
            trail.line(&line(record), &Window::default());
        }
        trail.sort();
        summarize(&trail, &Window::default(), true)
    }

    fn counts(s: &Summary, table: &str, column: usize) -> Vec<(String, u64)> {
        s.table(table)
            .unwrap()
            .rows
            .iter()
            .map(|r| {
                let Some(Cell::Count(n)) = r.iter().find(|c| matches!(c, Cell::Count(_))) else {
                    panic!("no count in {r:?}")
                };
                (r[column].text(), *n)
            })
            .collect()
    }

    /// A `started` record of `request`'s shape: no response, its kind `started`.
    fn start(id: &str, seq: u64) -> serde_json::Value {
        let mut r = request(id, "proxy-a", "inbound", seq);
        r["kind"] = json!("started");
        r.as_object_mut().unwrap().remove("response");
        r
    }

    fn ended(id: &str, seq: u64) -> serde_json::Value {
        let mut r = request(id, "proxy-a", "inbound", seq);
        r["started"] = json!(true);
        r
    }

    #[test]
    fn a_stream_started_and_not_ended_is_open_and_not_a_request() {
        let s = summary_of(vec![start("a", 0), start("b", 1), ended("a", 2)]);
        let open = &s.table("open_streams").unwrap().rows;
        assert_eq!(open.len(), 1, "{open:?}");
        assert_eq!(open[0][6].text(), "b");
        assert_eq!(open[0][4].text(), "/admin/users");
        assert_eq!(open[0][5].text(), "admin");
        assert_eq!(s.requests, 1, "a start is not a request: its end is");
        assert_eq!(s.records_by_kind.get("started"), Some(&2));
        // Its end arrives: nothing open.
        let s = summary_of(vec![
            start("a", 0),
            start("b", 1),
            ended("a", 2),
            ended("b", 3),
        ]);
        assert!(s.table("open_streams").unwrap().rows.is_empty());
        // An end of another stream with the same id does not close it.
        let mut elsewhere = ended("b", 3);
        elsewhere["stream"] = json!("00000000000000ff");
        let s = summary_of(vec![start("b", 1), elsewhere]);
        assert_eq!(s.table("open_streams").unwrap().rows.len(), 1);
    }

    #[test]
    fn a_denied_request_counts_once_for_the_policy_that_decided() {
        let mut server = request("a", "server", "inbound", 1);
        server["kind"] = json!("denied");
        server["authz"] = json!({"decision": "denied", "by": "rbac", "basis": "deny_policy", "policy": "ns[a]-policy[deny]-rule[0]"});
        let mut client = request("a", "client", "outbound", 1);
        client["kind"] = json!("denied");
        client["authz"] = json!({"decision": "denied", "by": "upstream", "basis": "upstream"});
        let mut alone = request("b", "client", "outbound", 2);
        alone["kind"] = json!("denied");
        alone["authz"] = json!({"decision": "denied", "by": "upstream", "basis": "upstream"});
        let s = summary_of(vec![server, client, alone]);
        assert_eq!(
            counts(&s, "denials", 0),
            [
                ("(the application answered 403)".to_string(), 1),
                ("ns[a]-policy[deny]-rule[0]".to_string(), 1)
            ]
        );
        assert_eq!(
            counts(&s, "sensitive", 3),
            [("/admin/users".to_string(), 2)]
        );
        assert_eq!((s.requests, s.request_records), (2, 3));
        assert_eq!(s.table("hops").unwrap().rows.len(), 1);
    }

    #[test]
    fn a_custom_selection_is_no_dry_run_denial() {
        let mut dry = request("a", "server", "inbound", 1);
        dry["kind"] = json!("shadow_denied");
        dry["authz"] = json!({"decision": "allowed", "by": "rbac", "basis": "allow_policy", "shadow": [
            {"result": "denied", "prefix": "istio_dry_run_deny_", "policy": "ns[a]-policy[dry]-rule[0]"},
            {"result": "denied", "prefix": "istio_ext_authz_", "policy": "istio-ext-authz-ns[a]-policy[ext]-rule[0]"},
        ]});
        let s = summary_of(vec![dry]);
        assert_eq!(
            counts(&s, "dry_run", 0),
            [("ns[a]-policy[dry]-rule[0]".to_string(), 1)]
        );
    }

    #[test]
    fn completeness_sums_the_accounting_and_the_timeline_stays_within_its_buckets() {
        let mut records = Vec::new();
        for n in 0..200u64 {
            let mut r = request(&format!("r{n}"), "server", "inbound", n);
            // Spread over about three hours.
            r["ts"] = json!(format!(
                "2026-12-01T{:02}:{:02}:00.000Z",
                10 + n / 60,
                n % 60
            ));
            records.push(r);
        }
        records.push(json!({
            "ts": "2026-12-01T14:00:00.000Z", "kind": "accounting", "instance": "server", "stream": "00000000000000ff",
            "seq": 0, "interval": {"start": "a", "end": "b", "first_seq": 0, "config": "sha256:00"},
            "totals": {"requests": 230, "records": 200, "sampled_out": 20, "dropped": 4, "suppressed": 3, "hidden": 2, "sink_errors": 1, "caller_evictions": 9},
            "by_rule": {},
        }));
        let s = summary_of(records);
        assert_eq!(
            s.completeness.not_written(),
            30,
            "caller evictions lose no record"
        );
        let t = &s.timeline;
        assert!(
            t.buckets.len() as i64 <= MAX_BUCKETS && t.buckets.len() > 10,
            "{}",
            t.buckets.len()
        );
        let total: u64 = t.buckets.iter().flat_map(|b| b.values()).sum();
        assert_eq!(total, 200, "the accounting record is not traffic");
        assert_eq!(t.start % t.bucket_seconds, 0);
        assert_eq!(summary_of(Vec::new()).timeline, Timeline::default());
    }
}
