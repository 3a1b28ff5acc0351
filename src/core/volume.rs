//! Volume control without silent loss: budgets (token buckets), aggregation of
//! what a budget refused into `suppressed` records, per-interval accounting of
//! every decision, and a bounded per-caller call count for sensitive rules.
//!
//! All state is per worker (one Wasm VM per Envoy worker thread), bounded in
//! entries, and costs no host call.

use super::decide::{strip_port, Kind};

/// A token bucket: `rate` tokens per second, at most `burst` stored.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last_ns: Option<u64>,
}

impl TokenBucket {
    pub fn new(per_second: f64, burst: f64) -> Self {
        Self {
            per_second,
            burst,
            tokens: burst,
            last_ns: None,
        }
    }

    /// Takes one token if there is one. Time going backwards refills nothing.
    pub fn take(&mut self, now_ns: u64) -> bool {
        if let Some(last) = self.last_ns {
            let elapsed = now_ns.saturating_sub(last) as f64 / 1e9;
            self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        }
        self.last_ns = Some(self.last_ns.map_or(now_ns, |last| last.max(now_ns)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Per-rule counts for one interval. The last slot of `Counters::by_rule` is
/// for requests no rule matched (`default`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleCounts {
    pub requests: u64,
    pub records: u64,
    pub sampled_out: u64,
    pub dropped: u64,
    pub suppressed: u64,
    /// Records of this rule that Envoy refused to take (the only records lost).
    pub sink_errors: u64,
}

impl RuleCounts {
    /// The counts with their names, as accounting records and Envoy stats show them.
    pub fn named(&self) -> [(&'static str, u64); 6] {
        [
            ("requests", self.requests),
            ("records", self.records),
            ("sampled_out", self.sampled_out),
            ("dropped", self.dropped),
            ("suppressed", self.suppressed),
            ("sink_errors", self.sink_errors),
        ]
    }

    fn add(&mut self, other: &RuleCounts) {
        self.requests += other.requests;
        self.records += other.records;
        self.sampled_out += other.sampled_out;
        self.dropped += other.dropped;
        self.suppressed += other.suppressed;
        self.sink_errors += other.sink_errors;
    }
}

/// Every kind a record can have, in a fixed order for counters and metrics.
pub const KINDS: [Kind; 9] = [
    Kind::Access,
    Kind::Denied,
    Kind::AuthFailure,
    Kind::ShadowDenied,
    Kind::ShadowAllowed,
    Kind::RateLimited,
    Kind::TlsFailure,
    Kind::Connection,
    Kind::Suppressed,
];

pub fn kind_index(kind: Kind) -> usize {
    KINDS.iter().position(|k| *k == kind).unwrap_or(0)
}

/// What a worker decided during one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    pub by_rule: Vec<RuleCounts>,
    /// Records written, by kind (`KINDS` order).
    pub records_by_kind: [u64; KINDS.len()],
    /// Records not tied to a request (configuration, accounting, suppressed) that Envoy refused.
    pub sink_errors: u64,
    /// Callers evicted from the per-caller table to make room.
    pub caller_evictions: u64,
    /// Suppressed events folded into the overflow entry because the aggregation table was full.
    pub suppressed_overflow: u64,
}

impl Counters {
    pub fn new(rules: usize) -> Self {
        Self {
            by_rule: vec![RuleCounts::default(); rules + 1],
            records_by_kind: [0; KINDS.len()],
            sink_errors: 0,
            caller_evictions: 0,
            suppressed_overflow: 0,
        }
    }

    /// The counts of a rule, or of the default slot for `None`.
    pub fn rule(&mut self, rule: Option<usize>) -> Option<&mut RuleCounts> {
        let default = self.by_rule.len().saturating_sub(1);
        self.by_rule.get_mut(rule.unwrap_or(default).min(default))
    }

    /// Sums over the rules; `sink_errors` also counts records not tied to a request.
    pub fn totals(&self) -> RuleCounts {
        let mut total = RuleCounts {
            sink_errors: self.sink_errors,
            ..RuleCounts::default()
        };
        for counts in &self.by_rule {
            total.add(counts);
        }
        total
    }

    /// Returns this interval's counts and starts the next interval at zero.
    pub fn take(&mut self) -> Counters {
        let fresh = Counters::new(self.by_rule.len().saturating_sub(1));
        std::mem::replace(self, fresh)
    }

    pub fn is_zero(&self) -> bool {
        *self == Counters::new(self.by_rule.len().saturating_sub(1))
    }
}

/// What identifies a group of suppressed events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppressedKey {
    pub kind: Kind,
    pub rule: Option<usize>,
    /// The caller's principal, or its IP address without the port.
    pub caller: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppressedGroup {
    pub key: SuppressedKey,
    /// The group for callers beyond the table's size (caller `(other callers)`).
    pub overflow: bool,
    pub count: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}

/// Events a budget refused, aggregated per (kind, rule, caller) until the next report.
/// At most `max_callers` named groups; beyond, one overflow group per (kind, rule), whose
/// number the configuration bounds.
#[derive(Debug)]
pub struct Suppressor {
    groups: Vec<SuppressedGroup>,
    named: usize,
    max_named: usize,
}

/// Caller bytes kept in a key: enough for any SPIFFE ID or address, bounded.
const MAX_CALLER_BYTES: usize = 256;
const OTHER_CALLERS: &[u8] = b"(other callers)";

impl Suppressor {
    pub fn new(max_named: usize) -> Self {
        Self {
            groups: Vec::new(),
            named: 0,
            max_named,
        }
    }

    /// Counts one refused event. Returns `true` when it went to an overflow group.
    pub fn add(&mut self, mut key: SuppressedKey, now_ns: u64) -> bool {
        key.caller.truncate(MAX_CALLER_BYTES);
        if self.bump(&key, false, now_ns) {
            return false;
        }
        if self.named < self.max_named {
            self.named += 1;
            self.push(key, false, now_ns);
            return false;
        }
        let key = SuppressedKey {
            caller: OTHER_CALLERS.to_vec(),
            ..key
        };
        if !self.bump(&key, true, now_ns) {
            self.push(key, true, now_ns);
        }
        true
    }

    fn bump(&mut self, key: &SuppressedKey, overflow: bool, now_ns: u64) -> bool {
        match self
            .groups
            .iter_mut()
            .find(|g| g.overflow == overflow && g.key == *key)
        {
            Some(group) => {
                group.count += 1;
                group.last_ns = now_ns;
                true
            }
            None => false,
        }
    }

    fn push(&mut self, key: SuppressedKey, overflow: bool, now_ns: u64) {
        self.groups.push(SuppressedGroup {
            key,
            overflow,
            count: 1,
            first_ns: now_ns,
            last_ns: now_ns,
        });
    }

    pub fn take(&mut self) -> Vec<SuppressedGroup> {
        self.named = 0;
        std::mem::take(&mut self.groups)
    }
}

/// Calls per (rule, caller) in a fixed window, in a table of bounded size.
#[derive(Debug)]
pub struct CallerTable {
    entries: Vec<CallerEntry>,
    max_entries: usize,
    window_ns: u64,
    /// Round-robin eviction cursor: cheap, and fair enough when the table is full.
    next_victim: usize,
}

#[derive(Debug)]
struct CallerEntry {
    rule: usize,
    caller: Vec<u8>,
    window_start_ns: u64,
    calls: u64,
}

impl CallerTable {
    pub fn new(max_entries: usize, window_seconds: u64) -> Self {
        Self {
            entries: Vec::new(),
            max_entries: max_entries.max(1),
            window_ns: window_seconds.saturating_mul(1_000_000_000).max(1),
            next_victim: 0,
        }
    }

    /// Counts a call and returns the caller's calls to this rule in the current
    /// window, and whether another caller had to be evicted to make room.
    pub fn hit(&mut self, rule: usize, caller: &[u8], now_ns: u64) -> (u64, bool) {
        let caller = caller.get(..MAX_CALLER_BYTES).unwrap_or(caller);
        let window = self.window_ns;
        if let Some(entry) = self
            .entries
            .iter_mut()
            .find(|e| e.rule == rule && e.caller == caller)
        {
            if now_ns.saturating_sub(entry.window_start_ns) >= window {
                entry.window_start_ns = now_ns;
                entry.calls = 0;
            }
            entry.calls += 1;
            return (entry.calls, false);
        }
        let entry = CallerEntry {
            rule,
            caller: caller.to_vec(),
            window_start_ns: now_ns,
            calls: 1,
        };
        if self.entries.len() < self.max_entries {
            self.entries.push(entry);
            return (1, false);
        }
        // Prefer a slot whose window has expired; otherwise evict round-robin.
        let victim = self
            .entries
            .iter()
            .position(|e| now_ns.saturating_sub(e.window_start_ns) >= window);
        let evicted = victim.is_none();
        let index = victim.unwrap_or(self.next_victim % self.max_entries);
        self.next_victim = index + 1;
        if let Some(slot) = self.entries.get_mut(index) {
            *slot = entry;
        }
        (1, evicted)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The caller as one key: the principal when the connection is mTLS, else the source IP.
pub fn caller_key<'a>(principal: Option<&'a [u8]>, source_address: Option<&'a [u8]>) -> &'a [u8] {
    if let Some(principal) = principal {
        return principal;
    }
    let Some(address) = source_address else {
        return b"unknown";
    };
    // Every connection has its own port: the caller is the host.
    strip_port(address)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn token_bucket_allows_burst_then_rate() {
        let mut b = TokenBucket::new(10.0, 5.0);
        let t0 = 100 * SECOND;
        assert_eq!((0..8).filter(|_| b.take(t0)).count(), 5, "the burst");
        assert!(!b.take(t0 + SECOND / 20), "half a token after 50 ms");
        assert!(b.take(t0 + SECOND / 10), "one token after 100 ms");
        // One second later: ten more, never more than the burst.
        assert_eq!((0..20).filter(|_| b.take(t0 + 2 * SECOND)).count(), 5);
        // Time going backwards refills nothing.
        assert!(!b.take(t0));
    }

    #[test]
    fn counters_take_resets_the_interval() {
        let mut c = Counters::new(2);
        c.rule(Some(0)).unwrap().records += 2;
        c.rule(None).unwrap().sampled_out += 5;
        c.rule(Some(99)).unwrap().dropped += 1; // out of range: counted as default, never lost
        c.records_by_kind[kind_index(Kind::Denied)] += 1;
        let taken = c.take();
        assert_eq!(taken.by_rule[0].records, 2);
        assert_eq!(
            taken.by_rule[2],
            RuleCounts {
                sampled_out: 5,
                dropped: 1,
                ..RuleCounts::default()
            }
        );
        assert_eq!(taken.totals().records, 2);
        assert!(c.is_zero());
    }

    #[test]
    fn suppressor_aggregates_per_kind_rule_and_caller_and_stays_bounded() {
        let mut s = Suppressor::new(3);
        let key = |caller: &str| SuppressedKey {
            kind: Kind::Denied,
            rule: Some(1),
            caller: caller.as_bytes().to_vec(),
        };
        for t in 0..10 {
            s.add(key("a"), t);
        }
        s.add(key("b"), 20);
        for i in 0..100 {
            s.add(key(&format!("c{i}")), 30 + i);
        }
        let groups = s.take();
        assert_eq!(
            groups.iter().map(|g| g.count).sum::<u64>(),
            111,
            "every event counted"
        );
        let a = groups.iter().find(|g| g.key.caller == b"a").unwrap();
        assert_eq!((a.count, a.first_ns, a.last_ns), (10, 0, 9));
        let overflow = groups.iter().find(|g| g.overflow).unwrap();
        assert_eq!(overflow.count, 99);
        assert_eq!(overflow.key.caller, b"(other callers)");
        assert_eq!(
            groups.len(),
            4,
            "three named callers and one overflow group"
        );
        assert!(s.take().is_empty());
    }

    #[test]
    fn caller_table_counts_per_window_and_evicts_when_full() {
        let mut t = CallerTable::new(2, 60);
        assert_eq!(t.hit(0, b"a", 0), (1, false));
        assert_eq!(t.hit(0, b"a", SECOND), (2, false));
        assert_eq!(t.hit(1, b"a", SECOND), (1, false), "per rule");
        assert!(t.hit(0, b"b", SECOND).1, "full: someone is evicted");
        assert_eq!(t.len(), 2);
        // A new window starts the count again.
        let mut t = CallerTable::new(4, 60);
        t.hit(0, b"a", 0);
        assert_eq!(t.hit(0, b"a", 61 * SECOND), (1, false));
        // An expired slot is reused without counting an eviction.
        let mut t = CallerTable::new(1, 60);
        t.hit(0, b"a", 0);
        assert_eq!(t.hit(0, b"b", 61 * SECOND), (1, false));
    }

    #[test]
    fn caller_keys() {
        assert_eq!(
            caller_key(Some(b"spiffe://td/ns/a/sa/b"), Some(b"1.2.3.4:5")),
            b"spiffe://td/ns/a/sa/b"
        );
        assert_eq!(caller_key(None, Some(b"10.0.0.1:43210")), b"10.0.0.1");
        assert_eq!(caller_key(None, Some(b"[::1]:8080")), b"[::1]");
        assert_eq!(caller_key(None, None), b"unknown");
    }
}
