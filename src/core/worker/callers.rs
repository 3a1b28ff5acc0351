//! The plugin's own per-caller call counts on sensitive rules, in a table of
//! bounded size, and the key that names a caller.

use crate::core::envoy::identity::strip_port;
use crate::core::envoy::source::CallerAddress;
use std::borrow::Cow;
use std::collections::HashMap;

/// Up to this many entries a caller is found by comparing, beyond by hashing.
const LOOK_UP_TO: usize = 8;

/// Caller bytes kept in a key: enough for any SPIFFE ID or address, bounded.
pub(crate) const MAX_CALLER_BYTES: usize = 256;

/// Calls per (rule, caller) in a fixed window, in a table of bounded size. A caller is found
/// by hashing and a full table evicts the next slot in turn: every call costs the same
/// whatever the table holds, up to its maximum of 65,536.
#[derive(Debug)]
pub(crate) struct CallerTable {
    entries: Vec<CallerEntry>,
    /// Per rule, caller → position in `entries`.
    index: Vec<HashMap<Vec<u8>, usize>>,
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
    pub(crate) fn new(max_entries: usize, window_seconds: u64) -> Self {
        Self {
            entries: Vec::new(),
            index: Vec::new(),
            max_entries: max_entries.max(1),
            window_ns: window_seconds.saturating_mul(1_000_000_000).max(1),
            next_victim: 0,
        }
    }

    /// Counts a call and returns the caller's calls to this rule in the current window, and
    /// whether a caller whose window had not ended was evicted to make room.
    pub(crate) fn hit(&mut self, rule: usize, caller: &[u8], now_ns: u64) -> (u64, bool) {
        let caller = caller.get(..MAX_CALLER_BYTES).unwrap_or(caller);
        let window = self.window_ns;
        // A few callers (the common case) are found faster by comparing than by hashing.
        let found = if self.entries.len() <= LOOK_UP_TO {
            self.entries
                .iter()
                .position(|e| e.rule == rule && e.caller == caller)
        } else {
            self.index
                .get(rule)
                .and_then(|callers| callers.get(caller))
                .copied()
        };
        if let Some(entry) = found.and_then(|at| self.entries.get_mut(at)) {
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
        if self.index.len() <= rule {
            self.index.resize_with(rule + 1, HashMap::new);
        }
        let at = if self.entries.len() < self.max_entries {
            self.entries.push(entry);
            self.entries.len() - 1
        } else {
            let at = self.next_victim % self.max_entries;
            self.next_victim = at + 1;
            let Some(slot) = self.entries.get_mut(at) else {
                return (1, false);
            };
            let old = std::mem::replace(slot, entry);
            if let Some(callers) = self.index.get_mut(old.rule) {
                callers.remove(&old.caller);
            }
            if now_ns.saturating_sub(old.window_start_ns) < window {
                self.insert(rule, caller, at);
                return (1, true);
            }
            at
        };
        self.insert(rule, caller, at);
        (1, false)
    }

    fn insert(&mut self, rule: usize, caller: &[u8], at: usize) {
        if let Some(callers) = self.index.get_mut(rule) {
            callers.insert(caller.to_vec(), at);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// What identity a caller key is (`source.keyed_by` in request records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyedBy {
    /// The mTLS peer's principal.
    Principal,
    /// The directly connected peer's IP.
    Peer,
    /// The client address Envoy derived from `X-Forwarded-For`, which the operator trusts.
    Forwarded,
    /// The downstream connection: no identity the caller cannot choose is known.
    Connection,
}

impl KeyedBy {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            KeyedBy::Principal => "principal",
            KeyedBy::Peer => "peer",
            KeyedBy::Forwarded => "forwarded",
            KeyedBy::Connection => "connection",
        }
    }
}

/// The caller as one key, from an identity the caller cannot choose: the principal when
/// the connection is mTLS, else the directly connected peer's IP; the forwarded address
/// only when the operator trusts the proxies that set it (a workload behind a gateway,
/// whose callers all share its address); else the connection itself.
pub(crate) fn caller_key<'a>(
    principal: Option<&'a [u8]>,
    address: CallerAddress<'a>,
    trust_forwarded: bool,
    connection_id: Option<u64>,
) -> (Cow<'a, [u8]>, KeyedBy) {
    if let Some(principal) = principal {
        return (Cow::Borrowed(principal), KeyedBy::Principal);
    }
    // Every connection has its own port: the caller is the host.
    match (address.forwarded.filter(|_| trust_forwarded), address.peer) {
        (Some(forwarded), _) => (Cow::Borrowed(strip_port(forwarded)), KeyedBy::Forwarded),
        (None, Some(peer)) => (Cow::Borrowed(strip_port(peer)), KeyedBy::Peer),
        (None, None) => {
            let key = match connection_id {
                Some(id) => format!("connection {id}").into_bytes(),
                None => b"unknown".to_vec(),
            };
            (Cow::Owned(key), KeyedBy::Connection)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const SECOND: u64 = 1_000_000_000;

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
        // The evicted caller is forgotten; the one in its place is counted on.
        assert_eq!(t.hit(0, b"b", 62 * SECOND), (2, false));
        assert_eq!(t.hit(0, b"a", 62 * SECOND), (1, true));
    }

    #[test]
    fn a_large_table_finds_callers_by_hashing() {
        let mut t = CallerTable::new(100, 60);
        for n in 0..100u32 {
            assert_eq!(t.hit(0, &n.to_le_bytes(), 0), (1, false));
        }
        for n in 0..100u32 {
            assert_eq!(t.hit(0, &n.to_le_bytes(), SECOND), (2, false), "{n}");
        }
        assert_eq!(
            t.hit(1, &7u32.to_le_bytes(), SECOND),
            (1, true),
            "per rule; full"
        );
        assert_eq!(
            t.hit(0, &0u32.to_le_bytes(), SECOND),
            (1, true),
            "0 was evicted"
        );
    }

    #[test]
    fn a_full_table_evicts_in_turn_and_keeps_every_other_count() {
        let mut t = CallerTable::new(3, 60);
        for caller in [b"a", b"b", b"c"] {
            t.hit(0, caller, 0);
        }
        assert_eq!(t.hit(0, b"d", SECOND), (1, true), "a goes");
        assert_eq!(t.hit(0, b"b", SECOND), (2, false));
        assert_eq!(t.hit(0, b"c", SECOND), (2, false));
        assert_eq!(t.hit(0, b"d", SECOND), (2, false));
        assert_eq!(t.hit(0, b"e", SECOND), (1, true), "then b");
        assert_eq!(
            t.hit(0, b"b", SECOND),
            (1, true),
            "b is new again, in c's place"
        );
        assert_eq!(t.hit(0, b"d", SECOND), (3, false));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn caller_keys_are_identities_the_caller_cannot_choose() {
        let key = |principal, stream: &'static [u8], handed: Option<&'static [u8]>, trust| {
            let (key, by) = caller_key(
                principal,
                CallerAddress::new(Some(stream), handed),
                trust,
                Some(7),
            );
            (String::from_utf8(key.into_owned()).unwrap(), by)
        };
        let spiffe = Some(&b"spiffe://td/ns/a/sa/b"[..]);
        assert_eq!(
            key(spiffe, b"203.0.113.9:0", None, true),
            ("spiffe://td/ns/a/sa/b".into(), KeyedBy::Principal)
        );
        assert_eq!(
            key(None, b"10.0.0.1:43210", None, false),
            ("10.0.0.1".into(), KeyedBy::Peer)
        );
        assert_eq!(
            key(None, b"[::1]:8080", None, false),
            ("[::1]".into(), KeyedBy::Peer)
        );
        // A forwarded claim never keys a caller unless the operator trusts it.
        assert_eq!(
            key(None, b"203.0.113.9:0", Some(b"127.0.0.1:5000"), false),
            ("127.0.0.1".into(), KeyedBy::Peer)
        );
        assert_eq!(
            key(None, b"203.0.113.9:0", None, false),
            ("connection 7".into(), KeyedBy::Connection)
        );
        assert_eq!(
            key(None, b"203.0.113.9:0", Some(b"127.0.0.1:5000"), true),
            ("203.0.113.9".into(), KeyedBy::Forwarded)
        );
        let (unknown, by) = caller_key(None, CallerAddress::default(), false, None);
        assert_eq!((&*unknown, by), (&b"unknown"[..], KeyedBy::Connection));
    }
}
