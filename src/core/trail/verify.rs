//! `meshaudit verify`: proves a captured trail complete and untampered, stream by stream.
//!
//! Lines come in any order (streams interleave, outputs are read one after the other): a
//! record's place is its stream and `seq`, never its line. For each stream it checks every
//! record's chain value under the key set, each record's link to the one before it, that no
//! sequence number is missing or repeated in an output, and each `accounting` record's
//! identities against the records of its interval. Memory per stream does not grow with its
//! records: what arrives in order is folded into the interval it belongs to as soon as that
//! interval's `accounting` record is in; only what is out of order waits.

use super::{unseal, TrailKey, MAC_BYTES};
use crate::core::record::{Kind, RECORD_PREFIX};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

/// Where a line came from: its input's index and its line number (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    pub input: usize,
    pub line: u64,
}

/// The output a copy of a record was read from: Envoy's log (the `meshaudit.record ` prefix)
/// or an access log or a bare JSON line. A request record handed to both is in both, once each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Output {
    Log,
    Other,
}

/// The keys a trail may be sealed with, by id; ids `<scope>@<master>` are derived from a master.
#[derive(Debug, Default, Clone)]
pub struct KeySet {
    keys: HashMap<String, TrailKey>,
}

impl KeySet {
    pub fn add(&mut self, key: TrailKey) {
        self.keys.insert(key.id.clone(), key);
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key with this id: held, or derived from a held master for `<scope>@<master id>`.
    fn find(&self, id: &str) -> Option<TrailKey> {
        if let Some(key) = self.keys.get(id) {
            return Some(key.clone());
        }
        let (scope, master) = id.rsplit_once('@')?;
        self.keys.get(master)?.derive(scope).ok()
    }
}

/// One break: what is wrong, in which stream, at which sequence number and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub stream: String,
    /// The first and last sequence numbers concerned (equal for one record).
    pub seq: Option<(u64, u64)>,
    pub place: Option<Place>,
    pub what: String,
}

/// The counts of one run of consecutive records, or of an interval.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tally {
    by_kind: [u64; Kind::ALL.len()],
    /// The `count` of `suppressed` records, by rule (`_default` for none).
    suppressed: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        for (a, b) in self.by_kind.iter_mut().zip(other.by_kind) {
            *a += b;
        }
        for (rule, n) in &other.suppressed {
            *self.suppressed.entry(rule.clone()).or_default() += n;
        }
    }
}

/// What an `accounting` record declares about its interval `[first_seq, seq)`.
#[derive(Debug, Clone, Default)]
struct Interval {
    first_seq: u64,
    place: Option<Place>,
    records_by_kind: [u64; Kind::ALL.len()],
    totals: BTreeMap<String, u64>,
    by_rule: BTreeMap<String, BTreeMap<String, u64>>,
    /// Records of the interval the plugin could not write: Envoy refused them, or its log level hid them.
    declared_losses: u64,
}

/// What a range of sequence numbers carries, combined when ranges join: nothing for a set
/// of numbers, the counts of its records for a run.
trait Fold: Default {
    fn fold(&mut self, other: &Self);
}

impl Fold for () {
    fn fold(&mut self, _: &Self) {}
}

impl Fold for Tally {
    fn fold(&mut self, other: &Self) {
        self.add(other);
    }
}

/// Sequence numbers, as disjoint inclusive ranges (first → last, and what they carry).
#[derive(Debug, Clone, Default)]
struct Ranges<T = ()>(BTreeMap<u64, (u64, T)>);

impl<T: Fold> Ranges<T> {
    fn contains(&self, seq: u64) -> bool {
        self.0
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, (last, _))| *last >= seq)
    }

    /// Adds one number and what it carries; `false` if it was already in.
    fn insert(&mut self, seq: u64, value: T) -> bool {
        // In order: the last range grows by one.
        if let Some(mut last) = self.0.last_entry() {
            let (end, carried) = last.get_mut();
            if end.checked_add(1) == Some(seq) {
                *end = seq;
                carried.fold(&value);
                return true;
            }
        }
        if self.contains(seq) {
            return false;
        }
        let before = self
            .0
            .range(..seq)
            .next_back()
            .filter(|(_, (last, _))| last.checked_add(1) == Some(seq))
            .map(|(&first, _)| first);
        let after = seq.checked_add(1).and_then(|next| self.0.remove(&next));
        let (end, carried) = self
            .0
            .entry(before.unwrap_or(seq))
            .or_insert_with(|| (seq, T::default()));
        *end = seq;
        carried.fold(&value);
        if let Some((after_end, after_carried)) = after {
            *end = after_end;
            carried.fold(&after_carried);
        }
        true
    }

    /// Takes out the ranges that start within `[first, end)`, and what they carried together.
    fn take_within(&mut self, first: u64, end: u64) -> T {
        let starts: Vec<u64> = self
            .0
            .range(first..end.max(first))
            .map(|(&f, _)| f)
            .collect();
        let mut total = T::default();
        for start in starts {
            if let Some((_, carried)) = self.0.remove(&start) {
                total.fold(&carried);
            }
        }
        total
    }

    /// How many numbers of `[first, end)` are in.
    fn count_within(&self, first: u64, end: u64) -> u64 {
        if first >= end {
            return 0;
        }
        self.overlapping(first, end)
            .map(|(f, l)| (l.min(end - 1) - f.max(first)).saturating_add(1))
            .sum()
    }

    /// The ranges that overlap `[first, end)`, as they are.
    fn overlapping(&self, first: u64, end: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let start = self
            .0
            .range(..=first)
            .next_back()
            .map_or(first, |(&f, _)| f);
        self.0
            .range(start..end.max(start))
            .map(|(&f, &(l, _))| (f, l))
            .filter(move |&(f, l)| l >= first && f < end)
    }

    /// Adds the numbers `first..=last`.
    fn insert_range(&mut self, first: u64, last: u64) {
        let mut first = first;
        let mut last = last;
        let touching: Vec<(u64, u64)> = self
            .overlapping(first.saturating_sub(1), last.saturating_add(2))
            .collect();
        let mut carried = T::default();
        for (f, l) in touching {
            if let Some((_, value)) = self.0.remove(&f) {
                carried.fold(&value);
            }
            first = first.min(f);
            last = last.max(l);
        }
        self.0.insert(first, (last, carried));
    }

    /// The numbers of `[first, end)` that are not in, as ranges.
    fn missing_within(&self, first: u64, end: u64) -> Vec<(u64, u64)> {
        let mut missing = Vec::new();
        let mut next = first;
        for (f, l) in self.overlapping(first, end) {
            if f > next {
                missing.push((next, f - 1));
            }
            next = next.max(l.saturating_add(1));
        }
        if next < end {
            missing.push((next, end - 1));
        }
        missing
    }
}

/// What is known of one stream.
#[derive(Debug, Default)]
struct Stream {
    instance: String,
    key_id: Option<String>,
    key: Option<TrailKey>,
    /// Every sequence number read, from any output.
    seen: Ranges,
    /// Per output, to tell a record in both outputs from one copied twice into one.
    by_output: [Ranges; 2],
    /// Runs of records not yet folded into an interval, with their counts.
    runs: Ranges<Tally>,
    /// Intervals whose `accounting` record is in, not yet settled, by that record's `seq`.
    intervals: BTreeMap<u64, Interval>,
    /// The sequence numbers of settled intervals, their `accounting` records included.
    covered: Ranges,
    intervals_settled: u64,
    /// Chain values waiting for the next record (by seq), and links waiting for the previous.
    macs: HashMap<u64, [u8; MAC_BYTES]>,
    /// The chain value of the latest record, while the next one is awaited (in order: always).
    latest: Option<(u64, [u8; MAC_BYTES])>,
    prevs: HashMap<u64, ([u8; MAC_BYTES], Option<Place>)>,
    /// The `seq` and whether it was final, of the last `accounting` record.
    last_accounting: Option<(u64, bool)>,
    max_seq: u64,
    /// The times of its first and last records (RFC 3339, which sorts as text).
    first_ts: String,
    last_ts: String,
    records: u64,
    /// Of which `config_applied` records.
    config_records: u64,
    in_both_outputs: u64,
    declared_losses: u64,
    configs: BTreeSet<String>,
    unchecked: u64,
    breaks: Vec<Break>,
}

/// The summary of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    pub instance: String,
    pub stream: String,
    pub key_id: Option<String>,
    pub records: u64,
    pub max_seq: u64,
    pub intervals: u64,
    /// Records after the last `accounting` record: not yet confirmed by one.
    pub open_tail: u64,
    /// The stream's last `accounting` record was its final one (shutdown or replaced configuration).
    pub closed: bool,
    /// It holds configuration records only (Envoy's main-thread VM): it is never closed.
    pub configuration_only: bool,
    pub in_both_outputs: u64,
    /// Records the plugin declared it could not write (Envoy refused them, or its log level hid them).
    pub declared_losses: u64,
    /// Records whose chain value could not be checked: no key set, or not sealed.
    pub unchecked: u64,
    pub configs: Vec<String>,
    pub breaks: Vec<Break>,
}

/// The whole trail's result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub streams: Vec<StreamSummary>,
    /// Lines that held no record.
    pub other_lines: u64,
    /// Lines that looked like a record but could not be read.
    pub unreadable: Vec<Place>,
    /// Records of no stream (`config_rejected`).
    pub outside_streams: u64,
}

impl Report {
    pub fn breaks(&self) -> usize {
        self.streams.iter().map(|s| s.breaks.len()).sum::<usize>() + self.unreadable.len()
    }
}

/// The verifier: feed it lines, then `finish`.
#[derive(Debug, Default)]
pub struct Verifier {
    keys: KeySet,
    streams: HashMap<String, Stream>,
    other_lines: u64,
    unreadable: Vec<Place>,
    outside_streams: u64,
}

/// The envelope of a record: the fields every record starts with.
#[derive(Debug, Default)]
pub(super) struct Envelope<'a> {
    pub(super) ts: Cow<'a, str>,
    pub(super) kind: Cow<'a, str>,
    pub(super) instance: Cow<'a, str>,
    pub(super) stream: Option<Cow<'a, str>>,
    pub(super) seq: Option<u64>,
}

/// Reads the envelope from the record's first members without parsing the rest: the encoder
/// always writes `v`, `ts`, `kind`, `instance`, then `stream` and `seq`, all strings or numbers.
pub(super) fn read_envelope(body: &str) -> Option<Envelope<'_>> {
    envelope_as_encoded(body).or_else(|| envelope_member_by_member(body))
}

/// The envelope in the exact layout the encoder writes (`Envelope::begin`), read by its
/// literal separators: a separator such as `","stream":"` cannot occur inside a string value,
/// whose quotes are escaped. Anything else goes to the member-by-member reader.
fn envelope_as_encoded(body: &str) -> Option<Envelope<'_>> {
    // Each value ends at its first `"` (a memchr), where the next separator must follow.
    let value = |text: &'_ str, next: &str| -> Option<(usize, usize)> {
        let end = text.find('"')?;
        text.get(end..)?
            .starts_with(next)
            .then_some((end, end + next.len()))
    };
    let rest = body.strip_prefix("{\"v\":1,\"ts\":\"")?;
    let (end, next) = value(rest, "\",\"kind\":\"")?;
    let (ts, rest) = (rest.get(..end)?, rest.get(next..)?);
    let (end, next) = value(rest, "\",\"instance\":\"")?;
    let (kind, rest) = (rest.get(..end)?, rest.get(next..)?);
    let (end, next) = value(rest, "\",\"stream\":\"")?;
    let (instance, rest) = (rest.get(..end)?, rest.get(next..)?);
    let (end, next) = value(rest, "\",\"seq\":")?;
    let (stream, rest) = (rest.get(..end)?, rest.get(next..)?);
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let seq = rest.get(..digits)?.parse().ok()?;
    if [ts, kind, instance, stream]
        .iter()
        .any(|v| v.contains(['"', '\\']))
    {
        return None;
    }
    Some(Envelope {
        ts: ts.into(),
        kind: kind.into(),
        instance: instance.into(),
        stream: Some(stream.into()),
        seq: Some(seq),
    })
}

fn envelope_member_by_member(body: &str) -> Option<Envelope<'_>> {
    let mut rest = body.strip_prefix('{')?;
    let mut envelope = Envelope::default();
    for _ in 0..6 {
        let (key, after) = json_string(rest)?;
        rest = after.strip_prefix(':')?;
        let (value, after) = if rest.starts_with('"') {
            let (s, after) = json_string(rest)?;
            (Value::Str(s), after)
        } else {
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let (digits, after) = rest.split_at(end);
            (Value::Num(digits.parse().ok()?), after)
        };
        match (key.as_ref(), value) {
            ("ts", Value::Str(s)) => envelope.ts = s,
            ("kind", Value::Str(s)) => envelope.kind = s,
            ("instance", Value::Str(s)) => envelope.instance = s,
            ("stream", Value::Str(s)) => envelope.stream = Some(s),
            ("seq", Value::Num(n)) => {
                envelope.seq = Some(n);
                return Some(envelope);
            }
            _ => {}
        }
        rest = match after.strip_prefix(',') {
            Some(next) => next,
            None => return Some(envelope),
        };
    }
    Some(envelope)
}

enum Value<'a> {
    Str(Cow<'a, str>),
    Num(u64),
}

/// A JSON string at the start of `text`, decoded (borrowed when it holds no escape), and what
/// follows it.
fn json_string(text: &str) -> Option<(Cow<'_, str>, &str)> {
    let inner = text.strip_prefix('"')?;
    let mut from = 0;
    loop {
        // `find` of a byte is a memchr: the envelope is read at the speed of the copy.
        let end = from + inner.get(from..)?.find('"')?;
        let raw = inner.get(..end)?;
        let escapes = raw.bytes().rev().take_while(|&b| b == b'\\').count();
        if escapes % 2 == 1 {
            from = end + 1;
            continue;
        }
        let after = inner.get(end + 1..)?;
        let value = if raw.contains('\\') {
            Cow::Owned(serde_json::from_str(text.get(..end + 2)?).ok()?)
        } else {
            Cow::Borrowed(raw)
        };
        return Some((value, after));
    }
}

/// The record in a line, read as [`extract`] reads it, for the readers outside the trail
/// (`meshaudit drill` tailing a captured trail).
pub fn record_in(line: &str) -> Option<std::borrow::Cow<'_, str>> {
    extract(line).map(|(record, _)| record)
}

/// The record in a line: after the `meshaudit.record ` prefix (Envoy's log, `kubectl logs`,
/// a CRI log file), a bare JSON line, or one JSON string member of a wrapping JSON object that
/// holds either (a log shipper's envelope, Docker's `{"log": …}`).
pub(super) fn extract(line: &str) -> Option<(std::borrow::Cow<'_, str>, Output)> {
    let line = line.trim();
    if line.starts_with("{\"v\":") {
        return Some((line.into(), Output::Other));
    }
    if line.starts_with('{') {
        if let Ok(wrapper) =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line)
        {
            return wrapper.values().find_map(|value| {
                let (record, output) = extract(value.as_str()?)?;
                Some((record.into_owned().into(), output))
            });
        }
    }
    // Envoy's log line holds no `{` before the record: look there first (a memchr).
    let at = match line.find('{') {
        Some(brace)
            if line
                .get(..brace)
                .is_some_and(|head| head.ends_with(RECORD_PREFIX)) =>
        {
            brace - RECORD_PREFIX.len()
        }
        _ => line.find(RECORD_PREFIX)?,
    };
    let record = line.get(at + RECORD_PREFIX.len()..)?;
    Some((record.into(), Output::Log))
}

/// The members of a `suppressed` record verify reads.
#[derive(Deserialize)]
struct SuppressedFields {
    suppressed: SuppressedInner,
}
#[derive(Deserialize)]
struct SuppressedInner {
    rule: Option<String>,
    count: u64,
}

/// The members of an `accounting` record verify reads.
#[derive(Deserialize)]
struct AccountingFields {
    interval: IntervalFields,
    totals: BTreeMap<String, u64>,
    records_by_kind: BTreeMap<String, u64>,
    by_rule: BTreeMap<String, BTreeMap<String, u64>>,
}
#[derive(Deserialize)]
struct IntervalFields {
    first_seq: u64,
    #[serde(default, rename = "final")]
    closing: bool,
    /// The configuration in force.
    #[serde(default)]
    config: Option<String>,
}

#[derive(Deserialize)]
struct ConfigFields {
    config: ConfigInner,
}
#[derive(Deserialize)]
struct ConfigInner {
    digest: String,
}

/// The names of the accounting identity: every request is written, hidden, sampled out,
/// dropped or suppressed.
const IDENTITY: [&str; 5] = ["records", "hidden", "sampled_out", "dropped", "suppressed"];

fn identity_holds(counts: &BTreeMap<String, u64>) -> bool {
    let get = |name: &str| counts.get(name).copied().unwrap_or(0);
    IDENTITY.iter().map(|name| get(name)).sum::<u64>() == get("requests")
}

fn kind_index(name: &str) -> Option<usize> {
    Kind::ALL.iter().position(|k| k.as_str() == name)
}

fn scope_namespace(key_id: &str) -> Option<&str> {
    let (scope, _) = key_id.rsplit_once('@')?;
    let (namespace, _) = scope.split_once('/')?;
    Some(namespace)
}

/// The namespace of an Istio node id: `sidecar~<ip>~<pod>.<namespace>~<namespace>.svc…`.
fn instance_namespace(instance: &str) -> Option<&str> {
    let mut parts = instance.split('~');
    let kind = parts.next()?;
    if !matches!(kind, "sidecar" | "router" | "waypoint") {
        return None;
    }
    let pod = parts.nth(1)?;
    pod.rsplit_once('.').map(|(_, namespace)| namespace)
}

impl Stream {
    /// Configuration records alone: written by Envoy's main-thread VM, which serves no
    /// traffic and is never ended (Envoy 1.40 calls no `on_done` there), so never closed.
    fn configuration_only(&self) -> bool {
        self.last_accounting.is_none() && self.records > 0 && self.config_records == self.records
    }

    fn broke(&mut self, stream: &str, seq: Option<(u64, u64)>, place: Option<Place>, what: String) {
        self.breaks.push(Break {
            stream: stream.to_string(),
            seq,
            place,
            what,
        });
    }
}

impl Verifier {
    pub fn new(keys: KeySet) -> Self {
        Self {
            keys,
            ..Self::default()
        }
    }

    /// Reads every line of one input (its index names it in breaks). Bytes that are not UTF-8
    /// (never the plugin's: it escapes them) are replaced, so such a record fails its seal.
    pub fn read(&mut self, mut reader: impl std::io::BufRead, input: usize) -> std::io::Result<()> {
        let mut buffer = Vec::new();
        let mut line = 0;
        loop {
            buffer.clear();
            if reader.read_until(b'\n', &mut buffer)? == 0 {
                return Ok(());
            }
            line += 1;
            let text = match std::str::from_utf8(&buffer) {
                Ok(text) => Cow::Borrowed(text),
                Err(_) => String::from_utf8_lossy(&buffer),
            };
            self.line(&text, Place { input, line });
        }
    }

    /// Reads one line.
    pub fn line(&mut self, line: &str, place: Place) {
        let Some((record, output)) = extract(line) else {
            self.other_lines += 1;
            return;
        };
        if self.record(&record, output, place).is_none() {
            self.unreadable.push(place);
        }
    }

    fn record(&mut self, record: &str, output: Output, place: Place) -> Option<()> {
        let seal = unseal(record);
        let body = seal.as_ref().map_or(record, |s| s.body);
        let envelope = read_envelope(body)?;
        let (Some(stream_id), Some(seq)) = (envelope.stream.as_deref(), envelope.seq) else {
            self.outside_streams += 1;
            return Some(());
        };
        let here = Some((seq, seq));
        if !self.streams.contains_key(stream_id) {
            self.streams
                .insert(stream_id.to_string(), Stream::default());
        }
        let stream = self.streams.get_mut(stream_id)?;
        if stream.instance.is_empty() {
            stream.instance = envelope.instance.to_string();
        } else if stream.instance != envelope.instance {
            let what = format!(
                "the record names proxy {:?}, the stream's other records {:?}",
                envelope.instance, stream.instance
            );
            stream.broke(stream_id, here, Some(place), what);
        }
        // Authenticity first: what fails it is not counted as part of the stream.
        match (&seal, self.keys.is_empty()) {
            (None, false) => {
                let what = "the record has no chain value (unsealed, or its seal was cut)".into();
                stream.broke(stream_id, here, Some(place), what);
                return Some(());
            }
            (None, true) => stream.unchecked += 1,
            (Some(seal), true) => {
                if stream.key_id.is_none() {
                    stream.key_id = Some(seal.key_id.to_string());
                }
                stream.unchecked += 1;
            }
            (Some(seal), false) => {
                if stream.key_id.as_deref() != Some(seal.key_id) {
                    if let Some(known) = &stream.key_id {
                        let what = format!(
                            "sealed with key {:?}, the stream's other records with {known:?}",
                            seal.key_id
                        );
                        stream.broke(stream_id, here, Some(place), what);
                        return Some(());
                    }
                    stream.key_id = Some(seal.key_id.to_string());
                    stream.key = self.keys.find(seal.key_id);
                    if stream.key.is_none() {
                        let what = format!("key {:?} is not in the key set", seal.key_id);
                        stream.broke(stream_id, here, Some(place), what);
                    }
                    if let (Some(scope), Some(namespace)) = (
                        scope_namespace(seal.key_id),
                        instance_namespace(&envelope.instance),
                    ) {
                        if scope != namespace {
                            let what = format!(
                                "key {:?} is for namespace {scope:?}, the proxy {:?} is in {namespace:?}",
                                seal.key_id, envelope.instance
                            );
                            stream.broke(stream_id, here, Some(place), what);
                        }
                    }
                }
                match &stream.key {
                    None => stream.unchecked += 1,
                    Some(key) => {
                        if key.mac(seal.covered.as_bytes()) != seal.mac {
                            let what =
                                "the chain value does not match the record: edited, or forged"
                                    .into();
                            stream.broke(stream_id, here, Some(place), what);
                            return Some(());
                        }
                    }
                }
            }
        }
        let slot = usize::from(output == Output::Other);
        let new_in_output = stream.by_output.get_mut(slot)?.insert(seq, ());
        if !new_in_output {
            let what = "the record appears twice in one output (duplicated)".into();
            stream.broke(stream_id, here, Some(place), what);
            return Some(());
        }
        if !stream.seen.insert(seq, ()) {
            // Already read from the other output: one record handed to both.
            stream.in_both_outputs += 1;
            return Some(());
        }
        stream.records += 1;
        stream.max_seq = stream.max_seq.max(seq);
        if stream.first_ts.is_empty() || *envelope.ts < *stream.first_ts {
            stream.first_ts = envelope.ts.to_string();
        }
        if *envelope.ts > *stream.last_ts {
            stream.last_ts.clear();
            stream.last_ts.push_str(&envelope.ts);
        }
        if let Some(seal) = &seal {
            link(stream, stream_id, seq, seal.prev, seal.mac, place);
        }
        if stream.covered.contains(seq) {
            let what = "a record inside an interval already settled without it".into();
            stream.broke(stream_id, here, Some(place), what);
            return Some(());
        }
        match envelope.kind.as_ref() {
            "accounting" => {
                let fields: AccountingFields = serde_json::from_str(&format!("{body}}}")).ok()?;
                accounting(stream, stream_id, seq, fields, place);
            }
            "config_applied" => {
                let fields: ConfigFields = serde_json::from_str(&format!("{body}}}")).ok()?;
                stream.configs.insert(fields.config.digest);
                stream.config_records += 1;
                stream.runs.insert(seq, Tally::default());
            }
            kind => {
                let mut tally = Tally::default();
                if let Some(i) = kind_index(kind) {
                    if let Some(n) = tally.by_kind.get_mut(i) {
                        *n += 1;
                    }
                }
                if kind == Kind::Suppressed.as_str() {
                    let fields: SuppressedFields =
                        serde_json::from_str(&format!("{body}}}")).ok()?;
                    let rule = fields.suppressed.rule.unwrap_or_else(|| "_default".into());
                    tally.suppressed.insert(rule, fields.suppressed.count);
                }
                stream.runs.insert(seq, tally);
            }
        }
        Some(())
    }

    /// Settles what is left and reports every stream.
    pub fn finish(mut self) -> Report {
        // A stream that stops without its final accounting record while its proxy wrote later
        // streams lost its tail: cut from the trail, or the proxy was killed.
        let mut later: HashMap<&str, &str> = HashMap::new();
        for stream in self.streams.values() {
            let newest = later.entry(&stream.instance).or_insert("");
            if stream.first_ts.as_str() > *newest {
                *newest = &stream.first_ts;
            }
        }
        let unclosed: Vec<String> = self
            .streams
            .iter()
            .filter(|(_, s)| {
                !s.last_accounting.is_some_and(|(_, last)| last)
                    && !s.configuration_only()
                    && later
                        .get(s.instance.as_str())
                        .is_some_and(|newest| *newest > s.last_ts.as_str())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in unclosed {
            if let Some(stream) = self.streams.get_mut(&id) {
                let what = "the stream ends without its final accounting record, and its proxy wrote later streams: its tail was cut, or the proxy was killed".into();
                let end = stream.max_seq;
                let next = end.saturating_add(1);
                stream.broke(&id, Some((next, next)), None, what);
            }
        }
        let mut streams: Vec<StreamSummary> = self
            .streams
            .drain()
            .map(|(id, mut stream)| {
                let pending: Vec<u64> = stream.intervals.keys().copied().collect();
                for seq in pending {
                    settle(&mut stream, &id, seq, true);
                }
                // Gaps no interval read accounts for: its `accounting` record is missing too.
                if let Some((last, _)) = stream.last_accounting {
                    for (first, last) in stream.seen.missing_within(0, last) {
                        for (a, b) in stream.covered.missing_within(first, last.saturating_add(1)) {
                            let what = format!("records {a} to {b} are missing, with the accounting record that would declare them");
                            stream.broke(&id, Some((a, b)), None, what);
                        }
                    }
                }
                // Gaps after the last accounting record, before the stream's last record read:
                // written earlier than what is there, so missing (or in an output not read).
                let tail_from = stream.last_accounting.map_or(0, |(seq, _)| seq.saturating_add(1));
                for (a, b) in stream.seen.missing_within(tail_from, stream.max_seq) {
                    let what = format!("records {a} to {b} are missing (deleted, or in an output not read); no accounting record covers them yet");
                    stream.broke(&id, Some((a, b)), None, what);
                }
                let open_tail = match stream.last_accounting {
                    Some((last, _)) => stream.seen.count_within(last.saturating_add(1), u64::MAX),
                    None => stream.records,
                };
                let closed = stream.last_accounting.is_some_and(|(_, last)| last);
                let configuration_only = stream.configuration_only();
                if closed && open_tail > 0 {
                    let what = format!("{open_tail} records after the stream's final accounting record");
                    let first = stream.last_accounting.map_or(0, |(seq, _)| seq.saturating_add(1));
                    stream.broke(&id, Some((first, stream.max_seq)), None, what);
                }
                stream.breaks.sort_by_key(|b| (b.seq, b.place));
                StreamSummary {
                    instance: stream.instance,
                    stream: id,
                    key_id: stream.key_id,
                    records: stream.records,
                    max_seq: stream.max_seq,
                    intervals: stream.intervals_settled,
                    open_tail,
                    closed,
                    configuration_only,
                    in_both_outputs: stream.in_both_outputs,
                    declared_losses: stream.declared_losses,
                    unchecked: stream.unchecked,
                    configs: stream.configs.into_iter().collect(),
                    breaks: stream.breaks,
                }
            })
            .collect();
        streams.sort_by(|a, b| (&a.instance, &a.stream).cmp(&(&b.instance, &b.stream)));
        Report {
            streams,
            other_lines: self.other_lines,
            unreadable: self.unreadable,
            outside_streams: self.outside_streams,
        }
    }
}

/// Checks the link between a record and its neighbours, whichever came first.
fn link(
    stream: &mut Stream,
    id: &str,
    seq: u64,
    prev: [u8; MAC_BYTES],
    mac: [u8; MAC_BYTES],
    place: Place,
) {
    if seq == 0 && prev != [0; MAC_BYTES] {
        let what = "the stream's first record does not start the chain".into();
        stream.broke(id, Some((0, 0)), Some(place), what);
    }
    // In order, the record before is the latest one: no map is touched.
    let before = seq.checked_sub(1).and_then(|before| match stream.latest {
        Some((latest, mac)) if latest == before => {
            stream.latest = None;
            Some(mac)
        }
        _ => stream.macs.remove(&before),
    });
    match before {
        Some(expected) if expected != prev => {
            let what = "the record does not follow the one before it in the chain".into();
            stream.broke(id, Some((seq, seq)), Some(place), what);
        }
        Some(_) => {}
        None if seq > 0 => {
            stream.prevs.insert(seq, (prev, Some(place)));
        }
        None => {}
    }
    let after = if stream.prevs.is_empty() {
        None
    } else {
        stream.prevs.remove(&seq.saturating_add(1))
    };
    match after {
        Some((expected, next_place)) if expected != mac => {
            let what = "the record does not follow the one before it in the chain".into();
            let next = seq.saturating_add(1);
            stream.broke(id, Some((next, next)), next_place, what);
        }
        Some(_) => {}
        None => match stream.latest {
            Some((latest, _)) if latest > seq => {
                stream.macs.insert(seq, mac);
            }
            previous => {
                if let Some((latest, latest_mac)) = previous {
                    stream.macs.insert(latest, latest_mac);
                }
                stream.latest = Some((seq, mac));
            }
        },
    }
}

fn accounting(stream: &mut Stream, id: &str, seq: u64, fields: AccountingFields, place: Place) {
    let here = Some((seq, seq));
    if fields.interval.first_seq > seq {
        let what = format!(
            "the interval starts at {} after its own record",
            fields.interval.first_seq
        );
        stream.broke(id, here, Some(place), what);
        return;
    }
    let mut records_by_kind = [0; Kind::ALL.len()];
    for (name, n) in &fields.records_by_kind {
        match kind_index(name).and_then(|i| records_by_kind.get_mut(i)) {
            Some(slot) => *slot = *n,
            None => {
                let what = format!("records_by_kind names an unknown kind {name:?}");
                stream.broke(id, here, Some(place), what);
            }
        }
    }
    let get = |name: &str| fields.totals.get(name).copied().unwrap_or(0);
    let interval = Interval {
        first_seq: fields.interval.first_seq,
        place: Some(place),
        records_by_kind,
        declared_losses: get("hidden") + get("sink_errors"),
        totals: fields.totals,
        by_rule: fields.by_rule,
    };
    if let Some(config) = fields.interval.config {
        stream.configs.insert(config);
    }
    if stream.last_accounting.is_none_or(|(last, _)| seq > last) {
        stream.last_accounting = Some((seq, fields.interval.closing));
    }
    stream.intervals.insert(seq, interval);
    // In order, everything of the interval is in: settle it now, so memory stays flat.
    settle(stream, id, seq, false);
}

/// Compares an interval's records with what its `accounting` record declares. Before the end of
/// the input (`at_end` false) only an interval with every record in is settled.
fn settle(stream: &mut Stream, id: &str, seq: u64, at_end: bool) {
    let Some(interval) = stream.intervals.get(&seq) else {
        return;
    };
    let first = interval.first_seq;
    let present = stream.seen.count_within(first, seq);
    let span = seq - first;
    if present < span && !at_end {
        return;
    }
    let Some(interval) = stream.intervals.remove(&seq) else {
        return;
    };
    let here = Some((seq, seq));
    let place = interval.place;
    let tally = stream.runs.take_within(first, seq);
    let missing = span - present;
    if missing > interval.declared_losses {
        for (a, b) in stream.seen.missing_within(first, seq) {
            let what = if a == b {
                format!("record {a} is missing (deleted, or cut)")
            } else {
                format!("records {a} to {b} are missing (deleted, or cut)")
            };
            stream.broke(id, Some((a, b)), None, what);
        }
    } else {
        stream.declared_losses += missing;
    }
    let mut deficit = 0;
    for (kind, (&declared, &read)) in Kind::ALL
        .iter()
        .zip(interval.records_by_kind.iter().zip(tally.by_kind.iter()))
    {
        if read > declared {
            let what = format!(
                "{read} {} records read, the accounting record declares {declared}",
                kind.as_str()
            );
            stream.broke(id, here, place, what);
        }
        deficit += declared.saturating_sub(read);
    }
    let sink_errors = interval.totals.get("sink_errors").copied().unwrap_or(0);
    if deficit > sink_errors && missing <= interval.declared_losses {
        let what = format!(
            "{deficit} records the accounting record declares written are not in the trail"
        );
        stream.broke(id, here, place, what);
    }
    if !identity_holds(&interval.totals) {
        let what =
            "totals: requests is not records + hidden + sampled_out + dropped + suppressed".into();
        stream.broke(id, here, place, what);
    }
    let mut broken_rules = String::new();
    for (rule, counts) in &interval.by_rule {
        if !identity_holds(counts) {
            let _ = write!(broken_rules, " {rule:?}");
        }
    }
    if !broken_rules.is_empty() {
        let what = format!("by_rule: requests do not add up for{broken_rules}");
        stream.broke(id, here, place, what);
    }
    if deficit == 0 {
        for (rule, counts) in &interval.by_rule {
            let declared = counts.get("suppressed").copied().unwrap_or(0);
            let read = tally.suppressed.get(rule).copied().unwrap_or(0);
            if declared != read {
                let what = format!(
                    "rule {rule:?}: {declared} suppressed declared, the suppressed records count {read}"
                );
                stream.broke(id, here, place, what);
            }
        }
    }
    stream.intervals_settled += 1;
    stream.covered.insert_range(first, seq);
}

#[cfg(test)]
mod tests;
