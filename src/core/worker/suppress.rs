//! What a budget refused, aggregated into `suppressed` records: bounded in
//! entries, never lost silently.

use super::callers::MAX_CALLER_BYTES;
use crate::core::record::Kind;
use std::collections::HashMap;

/// What identifies a group of suppressed events.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
/// number the configuration bounds. A group is found by hashing: every event costs the
/// same whatever the table holds.
#[derive(Debug)]
pub(crate) struct Suppressor {
    /// In the order they began, as the `suppressed` records are written.
    groups: Vec<SuppressedGroup>,
    /// (key, overflow) → position in `groups`.
    index: HashMap<(SuppressedKey, bool), usize>,
    named: usize,
    max_named: usize,
}

const OTHER_CALLERS: &[u8] = b"(other callers)";

impl Suppressor {
    pub(crate) fn new(max_named: usize) -> Self {
        Self {
            groups: Vec::new(),
            index: HashMap::new(),
            named: 0,
            max_named,
        }
    }

    /// Counts one refused event. Returns `true` when it went to an overflow group.
    pub(crate) fn add(&mut self, mut key: SuppressedKey, now_ns: u64) -> bool {
        key.caller.truncate(MAX_CALLER_BYTES);
        let named = (key, false);
        if self.bump(&named, now_ns) {
            return false;
        }
        let (key, _) = named;
        if self.named < self.max_named {
            self.named += 1;
            self.push(key, false, now_ns);
            return false;
        }
        let other = (
            SuppressedKey {
                caller: OTHER_CALLERS.to_vec(),
                ..key
            },
            true,
        );
        if !self.bump(&other, now_ns) {
            self.push(other.0, true, now_ns);
        }
        true
    }

    /// Counts one more event of an existing group; `false` if there is none yet.
    fn bump(&mut self, group: &(SuppressedKey, bool), now_ns: u64) -> bool {
        match self.index.get(group).and_then(|&i| self.groups.get_mut(i)) {
            Some(group) => {
                group.count += 1;
                group.last_ns = now_ns;
                true
            }
            None => false,
        }
    }

    fn push(&mut self, key: SuppressedKey, overflow: bool, now_ns: u64) {
        self.index
            .insert((key.clone(), overflow), self.groups.len());
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
        self.index.clear();
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

    #[test]
    fn a_full_table_counts_every_event_of_every_caller() {
        let mut s = Suppressor::new(65_536);
        let key = |i: u32| SuppressedKey {
            kind: Kind::Denied,
            rule: None,
            caller: format!("10.0.{}.{}", i / 256, i % 256).into_bytes(),
        };
        for i in 0..70_000u32 {
            let overflow = s.add(key(i % 68_000), u64::from(i));
            assert_eq!(overflow, i % 68_000 >= 65_536, "{i}");
        }
        let groups = s.take();
        assert_eq!(
            groups.len(),
            65_537,
            "every named caller and one overflow group"
        );
        assert_eq!(groups.iter().map(|g| g.count).sum::<u64>(), 70_000);
        assert_eq!(groups[0].count, 2, "the first callers came again");
        assert!(s.take().is_empty() && s.index.is_empty());
    }
}
