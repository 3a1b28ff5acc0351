//! The plugin's own configuration changes (`config_applied`, `config_rejected`).

use super::json::JsonWriter;
use super::{Envelope, RecordKind};
use crate::core::config::sha256_hex;

/// A configuration change of the plugin itself.
#[derive(Debug)]
pub(crate) struct ConfigRecord<'a> {
    pub ts_unix_nanos: u64,
    pub instance: &'a str,
    pub stream: Option<(&'a str, u64)>,
    pub digest: &'a str,
    pub previous_digest: Option<&'a str>,
    /// No configuration was applied before under this history in this VM (`config_history`):
    /// the process started, or a new `vm_id` started a new history.
    pub first_in_vm: bool,
    pub config_version: u64,
    pub rules: Vec<&'a str>,
    /// Set when the configuration was refused: why (kind `config_rejected`).
    pub error: Option<&'a str>,
    /// The id of the trail key the stream's records are sealed with.
    pub integrity_key: Option<&'a str>,
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

/// The shared-data key of the digest history a root context's configuration belongs to: its
/// plugin name and root id, so plugins that share a name under different root ids never
/// claim to replace each other's configuration. Envoy 1.40 tells a root context nothing of
/// its listener (`listener_direction` and `listener_metadata` are not found during
/// `on_configure`), so listeners whose plugins share a name and a root id share a history:
/// give each its own name (Istio does: one per WasmPlugin) or root id. Hashed: bounded,
/// whatever the names hold.
pub(crate) fn config_history(plugin_name: &[u8], root_id: &[u8]) -> String {
    let mut parts = Vec::with_capacity(16 + plugin_name.len() + root_id.len());
    for part in [plugin_name, root_id] {
        parts.extend_from_slice(&(part.len() as u64).to_le_bytes());
        parts.extend_from_slice(part);
    }
    let digest = sha256_hex(&parts);
    format!(
        "meshaudit.config_digest.{}",
        digest.get(..16).unwrap_or_default()
    )
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
            config: None,
        }
        .begin(&mut w, usize::MAX);
        w.object_field("config");
        w.str_field("digest", self.digest);
        w.opt_str_field("previous_digest", self.previous_digest);
        if self.first_in_vm {
            w.bool_field("first_in_vm", true);
        }
        w.u64_field("version", self.config_version);
        w.array_field("rules");
        for rule in &self.rules {
            w.str_value(rule);
        }
        w.end_array();
        w.opt_str_field("error", self.error);
        w.opt_str_field("integrity_key", self.integrity_key);
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

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn each_plugin_name_and_root_id_has_a_history_of_its_own() {
        let http = config_history(b"meshaudit", b"");
        assert_eq!(http, config_history(b"meshaudit", b""));
        assert!(http.starts_with("meshaudit.config_digest.") && http.len() == 24 + 16);
        for other in [
            config_history(b"meshaudit", b"network"),
            config_history(b"other", b""),
            // Lengths are hashed too: parts cannot slide into each other.
            config_history(b"meshaudi", b"t"),
        ] {
            assert_ne!(http, other);
        }
    }

    #[test]
    fn a_first_configuration_says_so() {
        let record = |first_in_vm| ConfigRecord {
            ts_unix_nanos: 0,
            instance: "i",
            stream: None,
            digest: "sha256:d",
            previous_digest: None,
            first_in_vm,
            config_version: 1,
            rules: Vec::new(),
            error: None,
            integrity_key: None,
            coverage: None,
        };
        let first: serde_json::Value = serde_json::from_str(&record(true).encode()).unwrap();
        assert_eq!(first["config"]["first_in_vm"], true);
        let later: serde_json::Value = serde_json::from_str(&record(false).encode()).unwrap();
        assert!(later["config"].get("first_in_vm").is_none());
        // It names its configuration whole, in `config.digest`, not shortened in the envelope.
        assert!(first.get("config_digest").is_none() && first["config"]["digest"] == "sha256:d");
    }
}
