//! Per-worker state (one Wasm VM per Envoy worker thread): the record stream
//! and its sequence numbers, budgets, aggregation, counters, and the periodic
//! report that writes `suppressed` and `accounting` records. Volume control
//! without silent loss: every state is bounded in entries and costs no host call.

pub(crate) mod budget;
pub(crate) mod callers;
pub(crate) mod connections;
pub(crate) mod counters;
pub(crate) mod metrics;
pub(crate) mod peers;
pub(crate) mod suppress;

use crate::core::config::{Budget, LogLevel, LogThreshold, Settings};
use crate::core::envoy::mesh::ProxyKind;
use crate::core::record::report::{AccountingRecord, LogLevelRecord, SuppressedRecord};
use crate::core::record::{Envelope, Kind, RecordKind};
use crate::core::sample::Rng;
use crate::core::trail::Chain;
use budget::TokenBucket;
use callers::CallerTable;
use connections::ConnectionCache;
use counters::{Counters, RuleCounts};
use suppress::{SuppressedGroup, SuppressedKey, Suppressor};

/// The name of the counters slot for requests that no rule matched.
pub(crate) const DEFAULT_RULE: &str = "_default";

#[derive(Debug)]
pub struct Worker {
    pub instance: String,
    pub(crate) rng: Rng,
    /// Requests (or connections) this worker has seen since it started, at their end or,
    /// where a rule records starts, at their start too: zero until it serves traffic.
    pub requests_seen: u64,
    /// Names this worker's record stream; with `seq`, lets a collector detect gaps.
    pub stream: String,
    /// The configuration this worker runs under, as every record of its stream names it.
    pub config_digest: String,
    next_seq: u64,
    /// Seals every record of the stream when a trail key is configured.
    chain: Option<Chain>,
    /// The sequence number the current interval started at.
    interval_first_seq: u64,
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
    /// What Envoy's log shows of this plugin's lines, as last read.
    log_threshold: LogThreshold,
    /// Whether the records' level is hidden by it, as the last `log_level` record said.
    hidden_reported: bool,
    record_level: LogLevel,
    /// Request records go to Envoy's log alone (no access-log hand-off).
    request_records_in_log_only: bool,
    /// What kind of proxy this is (sidecar, gateway, waypoint), from its node id.
    pub(crate) proxy: ProxyKind,
}

fn bucket(budget: Budget) -> TokenBucket {
    TokenBucket::new(budget.per_second, budget.burst)
}

/// The seed of a worker's random numbers, which also name its stream. The host's random
/// source decides it: two workers' VMs configured at once can read the same clock and have
/// the same root context id, and two streams of one name break each other's trail (seen in
/// CI). The clock and context id are all a host without a random source leaves.
pub(crate) fn worker_seed(random: Option<u64>, now_ns: u64, context_id: u32) -> u64 {
    random.unwrap_or(0) ^ now_ns ^ (u64::from(context_id) << 40) ^ 0x6d65_7368_6175_6469
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
            config_digest: settings.short_digest().to_string(),
            next_seq: 0,
            chain: settings.integrity.clone().map(Chain::new),
            interval_first_seq: 0,
            counters: Counters::new(settings.rules.len()),
            security: bucket(settings.budgets.security),
            routine: bucket(settings.budgets.routine),
            rule_buckets: settings
                .rules
                .iter()
                .map(|r| r.budget.map(bucket))
                .collect(),
            suppressor: Suppressor::new(settings.budgets.max_suppressed_callers),
            callers: CallerTable::new(
                settings.rate_limit.max_callers,
                settings.rate_limit.window_seconds,
            ),
            connections: ConnectionCache::default(),
            interval_start_ns: now_ns,
            last_record_rule: None,
            log_threshold: LogThreshold::From(LogLevel::Trace),
            hidden_reported: false,
            record_level: settings.log_level,
            request_records_in_log_only: !settings.output.filter_state,
            proxy: ProxyKind::Other,
        }
    }

    /// The proxy's Envoy node id, which says whether it is a sidecar, a gateway or a waypoint.
    pub fn set_node_id(&mut self, id: &[u8]) {
        self.proxy = ProxyKind::from_node_id(id);
    }

    /// What Envoy's log shows now (the adapter reads it at configure and at every report).
    pub(crate) fn set_log_threshold(&mut self, threshold: LogThreshold) {
        self.log_threshold = threshold;
    }

    /// Whether Envoy's log filters out records at the configured level.
    pub(crate) fn records_hidden(&self) -> bool {
        !self.log_threshold.shows(self.record_level)
    }

    /// The level for the plugin's own records (configuration, accounting, suppressed,
    /// `log_level`): the configured one, or `critical` while that one is hidden.
    pub(crate) fn own_records_level(&self) -> LogLevel {
        if self.records_hidden() {
            LogLevel::Critical
        } else {
            self.record_level
        }
    }

    /// The next sequence number of this stream; every record written takes one.
    pub fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// A record of this stream as written: after `prefix` (Envoy's log line has one), sealed
    /// with the next chain value when a trail key is configured. Every record that took a
    /// sequence number passes here once, in sequence order.
    pub fn seal(&mut self, prefix: &str, record: &str) -> String {
        match &mut self.chain {
            Some(chain) => chain.seal(prefix, record),
            None => {
                let mut line = String::with_capacity(prefix.len() + record.len());
                line.push_str(prefix);
                line.push_str(record);
                line
            }
        }
    }

    /// The id of the trail key the stream is sealed with.
    pub(crate) fn trail_key_id(&self) -> Option<&str> {
        self.chain.as_ref().map(Chain::key_id)
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
            self.counters.worker.suppressed_overflow += 1;
        }
        self.tally(rule, |c| c.suppressed += 1);
    }

    /// Counts a record written, by rule and kind; or, when it goes to Envoy's log alone and
    /// the log filters out its level, as hidden (Envoy takes the line and drops it).
    pub(crate) fn count_record(&mut self, rule: Option<usize>, kind: Kind) {
        self.last_record_rule = Some(rule);
        let log_only = match kind {
            Kind::TlsFailure | Kind::Connection => true,
            _ => self.request_records_in_log_only,
        };
        if log_only && self.records_hidden() {
            self.tally(rule, |c| c.hidden += 1);
        } else {
            self.tally(rule, |c| c.records += 1);
            self.counters.count_kind(kind);
        }
    }

    /// Counts a `started` record, which goes to Envoy's log alone (Envoy's access loggers run
    /// at the end of a stream): written, or hidden by the log's level.
    pub(crate) fn count_start(&mut self, rule: Option<usize>) {
        self.last_record_rule = Some(rule);
        if self.records_hidden() {
            self.tally(rule, |c| c.started_hidden += 1);
        } else {
            self.tally(rule, |c| c.started += 1);
            self.counters.count_kind(Kind::Started);
        }
    }

    /// The periodic report: one `suppressed` record per group, then the
    /// `accounting` record of the interval; and the interval's counts, for metrics.
    /// A VM that has never served traffic (Envoy's main thread) reports nothing, but for the
    /// `last` report of a stream that wrote a record, which closes it.
    pub fn report(&mut self, settings: &Settings, now_ns: u64, last: bool) -> Report {
        let mut lines = Vec::new();
        if self.requests_seen == 0 && !(last && self.next_seq > 0) {
            self.interval_start_ns = now_ns;
            return Report {
                lines,
                counts: self.counters.take(),
            };
        }
        let hidden = self.records_hidden();
        if hidden != self.hidden_reported {
            let (envoy, records) = (self.log_threshold.name(), self.record_level.name());
            let line = LogLevelRecord {
                envelope: self.envelope(RecordKind::LogLevel, now_ns),
                envoy,
                records,
                records_hidden: hidden,
            }
            .encode();
            lines.push(line);
            self.hidden_reported = hidden;
        }
        for group in self.suppressor.take() {
            let line = self.suppressed_record(settings, &group, now_ns);
            lines.push(line);
            self.counters.count_kind(Kind::Suppressed);
        }
        let counts = self.counters.take();
        lines.push(self.accounting_record(settings, &counts, now_ns, last));
        self.interval_start_ns = now_ns;
        Report { lines, counts }
    }

    /// The envelope of a new record of this worker's stream, taking the next sequence number.
    pub(crate) fn envelope(&mut self, kind: RecordKind, now_ns: u64) -> Envelope<'_> {
        let seq = self.next_seq();
        Envelope {
            ts_unix_nanos: now_ns,
            kind,
            instance: &self.instance,
            stream: Some((&self.stream, seq)),
            config: Some(&self.config_digest),
        }
    }

    fn suppressed_record(
        &mut self,
        settings: &Settings,
        group: &SuppressedGroup,
        now_ns: u64,
    ) -> String {
        SuppressedRecord {
            envelope: self.envelope(RecordKind::Event(Kind::Suppressed), now_ns),
            kind: group.key.kind,
            rule: rule_name(settings, group.key.rule),
            caller: &group.key.caller,
            overflow: group.overflow,
            count: group.count,
            first_ns: group.first_ns,
            last_ns: group.last_ns,
        }
        .encode(settings.limits.max_field_bytes)
    }

    fn accounting_record(
        &mut self,
        settings: &Settings,
        counts: &Counters,
        now_ns: u64,
        last: bool,
    ) -> String {
        let interval_start_ns = self.interval_start_ns;
        let first_seq = self.interval_first_seq;
        // The record itself is the interval's last: the next one starts after it.
        self.interval_first_seq = self.next_seq + 1;
        let totals = counts
            .totals()
            .named()
            .into_iter()
            .chain(counts.worker.named())
            .collect();
        let by_rule = counts
            .by_rule
            .iter()
            .enumerate()
            .filter(|(_, c)| **c != RuleCounts::default())
            .map(|(i, c)| {
                let name = rule_name(settings, Some(i)).unwrap_or(DEFAULT_RULE);
                (name, c.named().to_vec())
            })
            .collect();
        AccountingRecord {
            envelope: self.envelope(RecordKind::Accounting, now_ns),
            interval_start_ns,
            first_seq,
            last,
            config: &settings.digest,
            totals,
            records_by_kind: &counts.records_by_kind,
            by_rule,
        }
        .encode(settings.limits.max_field_bytes)
    }
}

/// A rule's name; `None` for the default slot or an index out of range.
pub(crate) fn rule_name(settings: &Settings, rule: Option<usize>) -> Option<&str> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn settings(json: &str) -> Settings {
        Settings::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn records_envoys_log_level_hides_are_counted_as_hidden_and_said_so() {
        let s = settings(r#"{"rules": [{"name": "a", "action": "audit"}]}"#);
        let mut w = Worker::new(&s, "p".into(), 1, 0);
        w.requests_seen = 3;
        w.count_record(Some(0), Kind::Access);
        assert_eq!(w.own_records_level(), LogLevel::Warn);
        // `istioctl proxy-config log <pod> --level wasm:error`: records at `warn` vanish.
        w.set_log_threshold(LogThreshold::From(LogLevel::Error));
        assert!(w.records_hidden());
        assert_eq!(w.own_records_level(), LogLevel::Critical);
        w.count_record(Some(0), Kind::Denied);
        w.count_record(None, Kind::TlsFailure);
        let report = w.report(&s, 1_000_000_000, false);
        let said: Value = serde_json::from_str(&report.lines[0]).unwrap();
        assert_eq!(said["kind"], "log_level");
        assert_eq!(
            said["log_level"],
            serde_json::json!({"envoy": "error", "records": "warn", "records_hidden": true})
        );
        let accounting: Value = serde_json::from_str(report.lines.last().unwrap()).unwrap();
        assert_eq!(accounting["by_rule"]["a"]["records"], 1);
        assert_eq!(accounting["by_rule"]["a"]["hidden"], 1);
        assert_eq!(accounting["by_rule"]["_default"]["hidden"], 1);
        assert_eq!(accounting["totals"]["hidden"], 2);
        assert_eq!(
            accounting["records_by_kind"],
            serde_json::json!({"access": 1})
        );
        // Said once per change: the next report repeats nothing, and the end of it is said too.
        assert_eq!(w.report(&s, 2_000_000_000, false).lines.len(), 1);
        w.set_log_threshold(LogThreshold::From(LogLevel::Info));
        let report = w.report(&s, 3_000_000_000, false);
        let said: Value = serde_json::from_str(&report.lines[0]).unwrap();
        assert_eq!(said["log_level"]["records_hidden"], false);
        assert_eq!(w.own_records_level(), LogLevel::Warn);
        // Off hides everything.
        w.set_log_threshold(LogThreshold::from_code(6));
        assert!(w.records_hidden());
    }

    #[test]
    fn workers_configured_at_the_same_instant_name_different_streams() {
        let s = Settings::from_json(b"{}").unwrap();
        let stream = |random| Worker::new(&s, "p".into(), worker_seed(random, 7, 1), 7).stream;
        assert_ne!(stream(Some(1)), stream(Some(2)));
        // Without a random source, the clock and the context id still decide.
        assert_eq!(stream(None), stream(None));
        assert_ne!(
            Worker::new(&s, "p".into(), worker_seed(None, 8, 1), 8).stream,
            stream(None)
        );
    }

    #[test]
    fn accounting_records_name_their_interval_its_configuration_and_the_streams_end() {
        let s = settings(r#"{"rules": [{"name": "a", "action": "audit"}]}"#);
        let mut w = Worker::new(&s, "p".into(), 1, 0);
        w.requests_seen = 1;
        let accounting = |report: Report| -> Value {
            serde_json::from_str(report.lines.last().unwrap()).unwrap()
        };
        w.next_seq(); // a request record, seq 0
        let first = accounting(w.report(&s, 1_000_000_000, false));
        assert_eq!(first["seq"], 1);
        assert_eq!(first["interval"]["first_seq"], 0);
        assert_eq!(first["interval"]["config"], s.digest.as_str());
        assert!(first["interval"].get("final").is_none());
        w.next_seq();
        w.next_seq(); // seq 2 and 3
        let last = accounting(w.report(&s, 2_000_000_000, true));
        assert_eq!(last["seq"], 4);
        assert_eq!(
            last["interval"]["first_seq"], 2,
            "after the previous accounting record"
        );
        assert_eq!(last["interval"]["final"], true);
        // A VM that served nothing but wrote a record closes its stream at the end, not before.
        let mut idle = Worker::new(&s, "p".into(), 2, 0);
        idle.next_seq();
        assert!(idle.report(&s, 1, false).lines.is_empty());
        assert_eq!(
            accounting(idle.report(&s, 2, true))["interval"]["final"],
            true
        );
    }

    #[test]
    fn records_handed_to_the_access_loggers_are_not_hidden_by_the_log_level() {
        let s = settings(r#"{"output": {"filter_state": true}}"#);
        let mut w = Worker::new(&s, "p".into(), 1, 0);
        w.set_log_threshold(LogThreshold::Off);
        w.count_record(None, Kind::Access);
        assert_eq!(w.counters.by_rule[0].records, 1);
        // A network record goes to Envoy's log alone.
        w.count_record(None, Kind::TlsFailure);
        assert_eq!(w.counters.by_rule[0].hidden, 1);
    }
}
