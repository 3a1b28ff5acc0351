//! Per-worker state (one Wasm VM per Envoy worker thread): the record stream
//! and its sequence numbers, budgets, aggregation, counters, and the periodic
//! report that writes `suppressed` and `accounting` records.

use super::connection::ConnectionCache;
use super::decide::Kind;
use super::json::JsonWriter;
use super::record::Envelope;
use super::sample::Rng;
use super::settings::{Budget, Settings};
use super::volume::{
    kind_index, CallerTable, Counters, RuleCounts, SuppressedGroup, SuppressedKey, Suppressor,
    TokenBucket, KINDS,
};

/// The name of the counters slot for requests that no rule matched.
pub const DEFAULT_RULE: &str = "_default";

#[derive(Debug)]
pub struct Worker {
    pub instance: String,
    pub(crate) rng: Rng,
    /// Requests (or connections) this worker has decided on since it started.
    pub requests_seen: u64,
    /// Names this worker's record stream; with `seq`, lets a collector detect gaps.
    pub stream: String,
    next_seq: u64,
    pub counters: Counters,
    security: TokenBucket,
    routine: TokenBucket,
    rule_buckets: Vec<Option<TokenBucket>>,
    suppressor: Suppressor,
    pub(crate) callers: CallerTable,
    /// The caller facts of recent downstream connections.
    pub(crate) connections: ConnectionCache,
    interval_start_ns: u64,
    /// The rule of the request record produced last, until it is written.
    last_record_rule: Option<Option<usize>>,
}

fn bucket(budget: Budget) -> TokenBucket {
    TokenBucket::new(budget.per_second, budget.burst)
}

impl Worker {
    pub fn new(settings: &Settings, instance: String, seed: u64, now_ns: u64) -> Self {
        let mut rng = Rng::new(seed);
        let stream = format!("{:016x}", rng.next_u64());
        Self {
            instance,
            rng,
            requests_seen: 0,
            stream,
            next_seq: 0,
            counters: Counters::new(settings.rules.len()),
            security: bucket(settings.security_budget),
            routine: bucket(settings.routine_budget),
            rule_buckets: settings
                .rules
                .iter()
                .map(|r| r.budget.map(bucket))
                .collect(),
            suppressor: Suppressor::new(settings.max_suppressed_callers),
            callers: CallerTable::new(settings.max_callers, settings.caller_window_seconds),
            connections: ConnectionCache::default(),
            interval_start_ns: now_ns,
            last_record_rule: None,
        }
    }

    /// The next sequence number of this stream; every record written takes one.
    pub fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Envoy refused the record just produced: its sequence number is a gap, and
    /// this says why (by the record's rule when it was a request record).
    pub fn note_sink_error(&mut self) {
        match self.last_record_rule.take() {
            Some(rule) => self.tally(rule, |c| c.sink_errors += 1),
            None => self.counters.sink_errors += 1,
        }
    }

    /// Updates the interval's counts of a rule (`None`: the `_default` slot).
    pub(crate) fn tally(&mut self, rule: Option<usize>, update: impl FnOnce(&mut RuleCounts)) {
        if let Some(counts) = self.counters.rule(rule) {
            update(counts);
        }
    }

    /// Whether the budgets let one more record through: the rule's own, then
    /// its class's (security events never compete with routine traffic).
    pub(crate) fn admit(&mut self, rule: Option<usize>, security: bool, now_ns: u64) -> bool {
        let rule_ok = rule
            .and_then(|i| self.rule_buckets.get_mut(i))
            .and_then(Option::as_mut)
            .is_none_or(|b| b.take(now_ns));
        rule_ok
            && if security {
                self.security.take(now_ns)
            } else {
                self.routine.take(now_ns)
            }
    }

    /// Counts a record the budgets refused, for the next `suppressed` record.
    pub(crate) fn suppress(&mut self, key: SuppressedKey, now_ns: u64) {
        let rule = key.rule;
        if self.suppressor.add(key, now_ns) {
            self.counters.suppressed_overflow += 1;
        }
        self.tally(rule, |c| c.suppressed += 1);
    }

    /// Counts a record written, by rule and kind.
    pub(crate) fn count_record(&mut self, rule: Option<usize>, kind: Kind) {
        self.last_record_rule = Some(rule);
        self.tally(rule, |c| c.records += 1);
        if let Some(n) = self.counters.records_by_kind.get_mut(kind_index(kind)) {
            *n += 1;
        }
    }

    /// The periodic report: one `suppressed` record per group, then the
    /// `accounting` record of the interval; and the interval's counts, for metrics.
    /// A VM that has never served traffic (Envoy's main thread) reports nothing.
    pub fn report(&mut self, settings: &Settings, now_ns: u64) -> Report {
        let mut lines = Vec::new();
        if self.requests_seen == 0 {
            self.interval_start_ns = now_ns;
            return Report {
                lines,
                counts: self.counters.take(),
            };
        }
        for group in self.suppressor.take() {
            let line = self.suppressed_record(settings, &group, now_ns);
            lines.push(line);
            if let Some(n) = self
                .counters
                .records_by_kind
                .get_mut(kind_index(Kind::Suppressed))
            {
                *n += 1;
            }
        }
        let counts = self.counters.take();
        lines.push(self.accounting_record(settings, &counts, now_ns));
        self.interval_start_ns = now_ns;
        Report { lines, counts }
    }

    /// Opens a record of this worker's stream, taking the next sequence number.
    pub(crate) fn begin_record(&mut self, w: &mut JsonWriter, kind: &str, now_ns: u64, cap: usize) {
        let seq = self.next_seq();
        Envelope {
            ts_unix_nanos: now_ns,
            kind,
            instance: &self.instance,
            stream: Some((&self.stream, seq)),
        }
        .begin(w, cap);
    }

    fn suppressed_record(
        &mut self,
        settings: &Settings,
        group: &SuppressedGroup,
        now_ns: u64,
    ) -> String {
        let cap = settings.max_field_bytes;
        let mut w = JsonWriter::with_capacity(256);
        self.begin_record(&mut w, Kind::Suppressed.as_str(), now_ns, cap);
        w.object_field("suppressed");
        w.str_field("kind", group.key.kind.as_str());
        w.opt_str_field("rule", rule_name(settings, group.key.rule));
        w.bytes_field("caller", &group.key.caller, cap);
        if group.overflow {
            w.bool_field("overflow", true);
        }
        w.u64_field("count", group.count);
        w.timestamp_field("first", group.first_ns);
        w.timestamp_field("last", group.last_ns);
        w.end_object();
        w.end_object();
        w.finish()
    }

    fn accounting_record(&mut self, settings: &Settings, counts: &Counters, now_ns: u64) -> String {
        let mut w = JsonWriter::default();
        self.begin_record(&mut w, "accounting", now_ns, settings.max_field_bytes);
        w.object_field("interval");
        w.timestamp_field("start", self.interval_start_ns);
        w.timestamp_field("end", now_ns);
        w.end_object();
        w.object_field("totals");
        for (name, value) in counts.totals().named() {
            w.u64_field(name, value);
        }
        w.u64_field("caller_evictions", counts.caller_evictions);
        w.u64_field("suppressed_overflow", counts.suppressed_overflow);
        w.end_object();
        w.object_field("records_by_kind");
        for (kind, n) in KINDS.iter().zip(counts.records_by_kind.iter()) {
            if *n > 0 {
                w.u64_field(kind.as_str(), *n);
            }
        }
        w.end_object();
        w.object_field("by_rule");
        for (i, c) in counts.by_rule.iter().enumerate() {
            let named = c.named();
            if named.iter().all(|(_, value)| *value == 0) {
                continue;
            }
            w.name_key(rule_name(settings, Some(i)).unwrap_or(DEFAULT_RULE));
            w.begin_object();
            for (name, value) in named {
                w.u64_field(name, value);
            }
            w.end_object();
        }
        w.end_object();
        w.end_object();
        w.finish()
    }
}

/// A rule's name; `None` for the default slot or an index out of range.
pub fn rule_name(settings: &Settings, rule: Option<usize>) -> Option<&str> {
    rule.and_then(|i| settings.rules.get(i))
        .map(|r| r.name.as_str())
}

/// What a report produced.
#[derive(Debug)]
pub struct Report {
    /// Records to write, in order.
    pub lines: Vec<String>,
    /// The interval's counts, for Envoy's stats.
    pub counts: Counters,
}
