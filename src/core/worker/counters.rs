//! Per-interval accounting of every decision, by rule and by kind: what
//! `accounting` records and Envoy's stats report.

use crate::core::record::Kind;

/// Declares a struct of counts once: its fields, their names (as accounting records
/// and Envoy stats show them, in this order) and their sum.
macro_rules! counts {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$field_meta:meta])* $field:ident,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: u64,)*
        }

        impl $name {
            pub const NAMES: [&'static str; [$(stringify!($field)),*].len()] = [$(stringify!($field)),*];

            /// The counts with their names, in `NAMES` order.
            pub fn named(&self) -> [(&'static str, u64); Self::NAMES.len()] {
                [$((stringify!($field), self.$field)),*]
            }

        }

        impl std::ops::AddAssign<&$name> for $name {
            fn add_assign(&mut self, other: &$name) {
                $(self.$field += other.$field;)*
            }
        }
    };
}

counts! {
    /// Per-rule counts for one interval. The last slot of `Counters::by_rule` is
    /// for requests no rule matched (`_default`).
    pub struct RuleCounts {
        requests,
        records,
        sampled_out,
        dropped,
        suppressed,
        /// Records of this rule that Envoy refused to take.
        sink_errors,
        /// Records of this rule that went to Envoy's log while its level filtered them out
        /// (`log_level`): not written.
        hidden,
        /// `started` records written (`record_start`): a request's second record, so not
        /// in `records`, nor in the identity `requests` = `records` + `hidden` +
        /// `sampled_out` + `dropped` + `suppressed`.
        started,
        /// `started` records a budget refused (the request's end is still recorded).
        started_suppressed,
        /// `started` records Envoy's log level filtered out.
        started_hidden,
    }
}

counts! {
    /// A worker's counts that belong to no rule.
    pub struct WorkerCounts {
        /// Callers evicted from the per-caller table to make room.
        caller_evictions,
        /// Suppressed events folded into the overflow entry because the aggregation table was full.
        suppressed_overflow,
    }
}

/// What a worker decided during one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    pub by_rule: Vec<RuleCounts>,
    /// Records written, by kind (`Kind::ALL` order).
    pub records_by_kind: [u64; Kind::ALL.len()],
    /// Records not tied to a request (configuration, accounting, suppressed) that Envoy refused.
    pub sink_errors: u64,
    pub worker: WorkerCounts,
}

impl Counters {
    pub fn new(rules: usize) -> Self {
        Self {
            by_rule: vec![RuleCounts::default(); rules + 1],
            records_by_kind: [0; Kind::ALL.len()],
            sink_errors: 0,
            worker: WorkerCounts::default(),
        }
    }

    /// Counts one record of `kind`.
    pub fn count_kind(&mut self, kind: Kind) {
        if let Some(n) = self.records_by_kind.get_mut(kind.index()) {
            *n += 1;
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
            total += counts;
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

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn counters_take_resets_the_interval() {
        let mut c = Counters::new(2);
        c.rule(Some(0)).unwrap().records += 2;
        c.rule(None).unwrap().sampled_out += 5;
        c.rule(Some(99)).unwrap().dropped += 1; // out of range: counted as default, never lost
        c.count_kind(Kind::Denied);
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
        assert_eq!(taken.records_by_kind[Kind::Denied.index()], 1);
        assert!(c.is_zero());
    }
}
