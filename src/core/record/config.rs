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
        w.end_object();
        w.end_object();
        w.finish()
    }
}
