//! A worker's periodic records: `suppressed` (what a budget refused, aggregated)
//! and `accounting` (the interval's totals, by rule and kind).

use super::json::JsonWriter;
use super::{Envelope, Kind};

/// One group of events a budget refused.
#[derive(Debug)]
pub(crate) struct SuppressedRecord<'a> {
    pub envelope: Envelope<'a>,
    pub kind: Kind,
    pub rule: Option<&'a str>,
    pub caller: &'a [u8],
    /// The group for callers beyond the table's size.
    pub overflow: bool,
    pub count: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}

impl SuppressedRecord<'_> {
    pub(crate) fn encode(&self, cap: usize) -> String {
        let mut w = JsonWriter::with_capacity(256);
        self.envelope.begin(&mut w, cap);
        w.object_field("suppressed");
        w.str_field("kind", self.kind.as_str());
        w.opt_str_field("rule", self.rule);
        w.bytes_field("caller", self.caller, cap);
        if self.overflow {
            w.bool_field("overflow", true);
        }
        w.u64_field("count", self.count);
        w.timestamp_field("first", self.first_ns);
        w.timestamp_field("last", self.last_ns);
        w.end_object();
        w.end_object();
        w.finish()
    }
}

/// Named counts, in the order they are written.
pub(crate) type NamedCounts = Vec<(&'static str, u64)>;

/// One interval of a worker's stream.
#[derive(Debug)]
pub(crate) struct AccountingRecord<'a> {
    pub envelope: Envelope<'a>,
    pub interval_start_ns: u64,
    /// The interval's records are those of sequence numbers `first_seq` up to this record's.
    pub first_seq: u64,
    /// The stream's last interval: shutdown, or its configuration replaced.
    pub last: bool,
    /// The digest of the configuration in force.
    pub config: &'a str,
    /// Sums over every rule, then the worker's own counts.
    pub totals: NamedCounts,
    /// Records written, by kind (`Kind::ALL` order).
    pub records_by_kind: &'a [u64],
    /// Each rule's counts, by rule name; rules whose counts are all zero are left out.
    pub by_rule: Vec<(&'a str, NamedCounts)>,
}

impl AccountingRecord<'_> {
    pub(crate) fn encode(&self, cap: usize) -> String {
        let mut w = JsonWriter::default();
        self.envelope.begin(&mut w, cap);
        w.object_field("interval");
        w.timestamp_field("start", self.interval_start_ns);
        w.timestamp_field("end", self.envelope.ts_unix_nanos);
        w.u64_field("first_seq", self.first_seq);
        if self.last {
            w.bool_field("final", true);
        }
        w.str_field("config", self.config);
        w.end_object();
        w.object_field("totals");
        for (name, value) in &self.totals {
            w.u64_field(name, *value);
        }
        w.end_object();
        w.object_field("records_by_kind");
        for (kind, n) in Kind::ALL.iter().zip(self.records_by_kind) {
            if *n > 0 {
                w.u64_field(kind.as_str(), *n);
            }
        }
        w.end_object();
        w.object_field("by_rule");
        for (rule, counts) in &self.by_rule {
            w.name_key(rule);
            w.begin_object();
            for (name, value) in counts {
                w.u64_field(name, *value);
            }
            w.end_object();
        }
        w.end_object();
        w.end_object();
        w.finish()
    }
}

/// Envoy's log level began, or ceased, to hide the records' level. Written at `critical`
/// while it does, so that it passes any level short of `off`.
#[derive(Debug)]
pub(crate) struct LogLevelRecord<'a> {
    pub(crate) envelope: Envelope<'a>,
    /// What Envoy's log shows: a level and above, or `off`.
    pub(crate) envoy: &'static str,
    /// The level records are written at (`log_level`).
    pub(crate) records: &'static str,
    pub(crate) records_hidden: bool,
}

impl LogLevelRecord<'_> {
    pub(crate) fn encode(&self) -> String {
        let mut w = JsonWriter::with_capacity(256);
        self.envelope.begin(&mut w, usize::MAX);
        w.object_field("log_level");
        w.str_field("envoy", self.envoy);
        w.str_field("records", self.records);
        w.bool_field("records_hidden", self.records_hidden);
        w.end_object();
        w.end_object();
        w.finish()
    }
}
