//! The plugin's own configuration changes (`config_applied`, `config_rejected`).

use super::json::JsonWriter;
use super::{Envelope, RecordKind};

/// A configuration change of the plugin itself.
#[derive(Debug)]
pub(crate) struct ConfigRecord<'a> {
    pub ts_unix_nanos: u64,
    pub instance: &'a str,
    pub stream: Option<(&'a str, u64)>,
    pub digest: &'a str,
    pub previous_digest: Option<&'a str>,
    pub config_version: u64,
    pub rules: Vec<&'a str>,
    /// Set when the configuration was refused: why (kind `config_rejected`).
    pub error: Option<&'a str>,
    /// What lowers the audit's coverage under this configuration (`config_applied`).
    pub coverage: Option<Coverage>,
}

/// The settings and conditions that lower coverage, stated where an alert on the
/// configuration trail can catch them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Coverage {
    /// `false`: security outcomes are recorded only where the rules say so.
    pub always_audit_security_outcomes: bool,
    /// `false`: what a mesh AUDIT policy matched is recorded only where the rules say so.
    pub audit_policies: bool,
    /// Envoy's log level hides the records' level now (see `log_level` records).
    pub records_hidden: bool,
}

impl ConfigRecord<'_> {
    pub(crate) fn encode(&self) -> String {
        let mut w = JsonWriter::default();
        Envelope {
            ts_unix_nanos: self.ts_unix_nanos,
            kind: if self.error.is_some() {
                RecordKind::ConfigRejected
            } else {
                RecordKind::ConfigApplied
            },
            instance: self.instance,
            stream: self.stream,
        }
        .begin(&mut w, usize::MAX);
        w.object_field("config");
        w.str_field("digest", self.digest);
        w.opt_str_field("previous_digest", self.previous_digest);
        w.u64_field("version", self.config_version);
        w.array_field("rules");
        for rule in &self.rules {
            w.str_value(rule);
        }
        w.end_array();
        w.opt_str_field("error", self.error);
        if let Some(coverage) = self.coverage {
            w.object_field("coverage");
            w.bool_field(
                "always_audit_security_outcomes",
                coverage.always_audit_security_outcomes,
            );
            w.bool_field("audit_policies", coverage.audit_policies);
            w.bool_field("records_hidden", coverage.records_hidden);
            w.end_object();
        }
        w.end_object();
        w.end_object();
        w.finish()
    }
}
