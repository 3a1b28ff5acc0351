//! The plugin's counters as Envoy stats. Counting happens inside the VM; each
//! report pushes the interval's deltas, one host call per counter that moved,
//! instead of one per request per counter.

use super::counters::{Counters, RuleCounts, WorkerCounts};
use super::DEFAULT_RULE;
use crate::core::config::Settings;
use crate::core::record::Kind;

/// Counter names, in the order `values` reports them. Envoy shows them under
/// `wasmcustom.`; the rule and kind in the name become Prometheus labels through
/// the `stats_tags` shipped in `e2e/envoy.yaml`.
pub(crate) fn counter_names(settings: &Settings) -> Vec<String> {
    let mut names = Vec::new();
    let rules = settings
        .rules
        .iter()
        .map(|r| r.name.as_str())
        .chain(std::iter::once(DEFAULT_RULE));
    for rule in rules {
        for field in RuleCounts::NAMES {
            names.push(format!("meshaudit.rule.{rule}.{field}"));
        }
    }
    for kind in Kind::ALL {
        names.push(format!("meshaudit.kind.{}.records", kind.as_str()));
    }
    names.push("meshaudit.sink_errors".to_string());
    for field in WorkerCounts::NAMES {
        names.push(format!("meshaudit.{field}"));
    }
    names
}

/// The interval's counts, in the order of `counter_names`.
pub(crate) fn values(counts: &Counters) -> Vec<u64> {
    let mut out = Vec::new();
    for rule in &counts.by_rule {
        out.extend(rule.named().map(|(_, value)| value));
    }
    out.extend(counts.records_by_kind);
    // All records lost, whatever their kind: the number to alert on.
    out.push(counts.totals().sink_errors);
    out.extend(counts.worker.named().map(|(_, value)| value));
    out
}

/// Counted by the root when a configuration is refused.
pub(crate) const CONFIG_ERRORS: &str = "meshaudit.config_errors";
/// The VM's linear memory, in bytes.
pub(crate) const VM_MEMORY_BYTES: &str = "meshaudit.vm_memory_bytes";
/// 1 while Envoy's log level hides the records (as the reporting worker last read it), else 0.
pub(crate) const LOG_HIDDEN: &str = "meshaudit.log_hidden";

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn names_and_values_line_up() {
        let s =
            Settings::from_json(br#"{"rules": [{"name": "admin", "action": "audit"}]}"#).unwrap();
        let names = counter_names(&s);
        let mut c = Counters::new(1);
        c.by_rule[0].records = 3;
        c.by_rule[1].sampled_out = 7;
        c.records_by_kind[Kind::Denied.index()] = 2;
        c.sink_errors = 1;
        c.by_rule[0].sink_errors = 2;
        let values = values(&c);
        assert_eq!(names.len(), values.len());
        let by_name: std::collections::HashMap<_, _> =
            names.iter().map(String::as_str).zip(values).collect();
        assert_eq!(by_name["meshaudit.rule.admin.records"], 3);
        assert_eq!(by_name["meshaudit.rule._default.sampled_out"], 7);
        assert_eq!(by_name["meshaudit.kind.denied.records"], 2);
        assert_eq!(by_name["meshaudit.sink_errors"], 3, "all records lost");
        assert_eq!(by_name["meshaudit.rule.admin.sink_errors"], 2);
        assert_eq!(by_name["meshaudit.rule.admin.requests"], 0);
    }
}
