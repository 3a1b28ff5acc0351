//! What a budget refused, aggregated into `suppressed` records: bounded in
//! entries, never lost silently.

use super::callers::MAX_CALLER_BYTES;
use crate::core::record::Kind;

/// What identifies a group of suppressed events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SuppressedKey {
    pub kind: Kind,
    pub rule: Option<usize>,
    /// The caller's principal, or its IP address without the port.
    pub caller: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SuppressedGroup {
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
pub(crate) struct Suppressor {
    groups: Vec<SuppressedGroup>,
    named: usize,
    max_named: usize,
}

const OTHER_CALLERS: &[u8] = b"(other callers)";

impl Suppressor {
    pub(crate) fn new(max_named: usize) -> Self {
        Self {
            groups: Vec::new(),
            named: 0,
            max_named,
        }
    }

    /// Counts one refused event. Returns `true` when it went to an overflow group.
    pub(crate) fn add(&mut self, mut key: SuppressedKey, now_ns: u64) -> bool {
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

    pub(crate) fn take(&mut self) -> Vec<SuppressedGroup> {
        self.named = 0;
        std::mem::take(&mut self.groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

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
}
