//! From the operator's JSON (`raw`) to the immutable `Settings`, section by
//! section; every error names the JSON path it is about.

mod budgets;
mod checks;
mod redaction;
mod rules;

pub use checks::ConfigError;

use super::defaults::{
    ALWAYS_AUDIT_SECURITY_OUTCOMES, AUDIT_POLICIES, BACKSLASH_IS_SLASH, DECODE_ESCAPED_SLASHES,
    DEFAULT_SAMPLE_RATE, HASH_KEY_ENV, LOG_LEVEL, MAX_FIELD_BYTES, MAX_RECORD_BYTES,
    OUTPUT_FILTER_STATE, OUTPUT_LOG, RECORD_CONNECTIONS, REPORTING_INTERVAL_SECONDS,
    SHADOW_RESULTS, TRAIL_KEY_ENV, TRUST_FORWARDED_ADDRESS, VERSION,
};
use super::jsonpath;
use super::raw::{RawAuthentication, RawConfig, RawOutput, RawSubject};
use super::settings::{JwtSettings, Limits, LogLevel, Output, Settings, SubjectMode};
use crate::core::path::CanonicalOptions;
use crate::core::redact::{HashKey, Redact, MIN_HASH_KEY_BYTES};
use crate::core::trail::TrailKey;
use checks::{bounded, check_printable, check_rate, error};
use sha2::{Digest, Sha256};

const MAX_INSTANCE_ID_BYTES: usize = 256;

impl Settings {
    /// Parses and validates a configuration that reads no environment variable.
    pub fn from_json(bytes: &[u8]) -> Result<Settings, ConfigError> {
        Self::from_json_with_env(bytes, &|_| None)
    }

    /// Parses and validates the plugin configuration. Empty input means all defaults.
    /// `env` looks up the VM's environment variables (the HMAC key lives there, not in the config).
    pub fn from_json_with_env(
        bytes: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let digest = sha256_hex(bytes);
        let raw = if bytes.iter().all(u8::is_ascii_whitespace) {
            RawConfig::default()
        } else {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let raw = <RawConfig as serde::Deserialize>::deserialize(&mut de).map_err(|e| {
                let at = jsonpath::path_at(bytes, e.line(), e.column());
                error(at, e.to_string())
            })?;
            de.end().map_err(|e| error("", e.to_string()))?;
            raw
        };
        Self::from_raw(raw, format!("sha256:{digest}"), env)
    }

    fn from_raw(
        raw: RawConfig,
        digest: String,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let version = raw.version.map_or(VERSION, |v| v.0);
        if version != VERSION {
            return Err(error(
                "version",
                format!("unsupported configuration version {version}; this plugin reads version {VERSION}"),
            ));
        }
        if let Some(id) = &raw.instance_id {
            check_printable("instance_id", id, MAX_INSTANCE_ID_BYTES)?;
        }
        let log_level = log_level(raw.log_level.as_deref())?;
        let default_sample_rate = match raw.default_sample_rate {
            None => DEFAULT_SAMPLE_RATE,
            Some(rate) => check_rate("default_sample_rate", rate)?,
        };
        let normalization = raw.path_normalization.unwrap_or_default();
        let canonical = CanonicalOptions {
            decode_escaped_slashes: normalization
                .decode_escaped_slashes
                .unwrap_or(DECODE_ESCAPED_SLASHES),
            backslash_is_slash: normalization
                .backslash_is_slash
                .unwrap_or(BACKSLASH_IS_SLASH),
        };
        let raw_limits = raw.limits.unwrap_or_default();
        let limits = Limits {
            max_field_bytes: bounded(
                "limits.max_field_bytes",
                raw_limits.max_field_bytes,
                MAX_FIELD_BYTES,
            )?,
            max_record_bytes: bounded(
                "limits.max_record_bytes",
                raw_limits.max_record_bytes,
                MAX_RECORD_BYTES,
            )?,
        };
        rules::check_count(&raw.rules)?;
        let raw_redaction = raw.redaction.unwrap_or_default();
        let hash_key_env = raw_redaction
            .hash_key_env
            .clone()
            .unwrap_or_else(|| HASH_KEY_ENV.to_string());
        let redaction = redaction::redaction(raw_redaction)?;
        let jwt = jwt(raw.authentication.unwrap_or_default())?;
        let budgets = budgets::budgets(raw.budgets)?;
        let rate_limit = budgets::rate_limit(raw.rate_limit)?;
        let output = output(raw.output.unwrap_or_default())?;
        let reporting = raw.reporting.unwrap_or_default();
        let reporting_interval_seconds = bounded(
            "reporting.interval_seconds",
            reporting.interval_seconds,
            REPORTING_INTERVAL_SECONDS,
        )? as u64;
        let (rules, reads) = rules::rules(raw.rules, canonical)?;
        let authorization = raw.authorization.unwrap_or_default();
        let mut settings = Settings {
            digest,
            version,
            instance_id: raw.instance_id,
            log_level,
            always_audit_security_outcomes: raw
                .always_audit_security_outcomes
                .unwrap_or(ALWAYS_AUDIT_SECURITY_OUTCOMES),
            default_sample_rate,
            canonical,
            limits,
            redaction,
            reporting_interval_seconds,
            shadow_results: authorization.shadow_results.unwrap_or(SHADOW_RESULTS),
            audit_policies: authorization.audit_policies.unwrap_or(AUDIT_POLICIES),
            jwt,
            record_connections: raw
                .network
                .and_then(|n| n.record_connections)
                .unwrap_or(RECORD_CONNECTIONS),
            output,
            budgets,
            rate_limit,
            trust_forwarded_address: raw
                .trust_forwarded_address
                .unwrap_or(TRUST_FORWARDED_ADDRESS),
            rules,
            reads,
            integrity: None,
        };
        // Last: which setting first needs the key is known only once every section is built.
        settings.redaction.hash_key = settings.hash_key_if_needed(&hash_key_env, env)?;
        settings.integrity = trail_key(env)?;
        Ok(settings)
    }

    /// Reads the HMAC key when something may hash, and refuses the configuration without one.
    fn hash_key_if_needed(
        &self,
        variable: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<HashKey>, ConfigError> {
        let first_use = if self.redaction.sensitive_header_action == Redact::Hash {
            Some("redaction.sensitive_header_action".to_string())
        } else if self.jwt.subject == SubjectMode::Hash {
            Some("authentication.jwt_subject".to_string())
        } else {
            self.rules.iter().enumerate().find_map(|(i, rule)| {
                rule.request_headers
                    .iter()
                    .position(|h| h.redact == Some(Redact::Hash))
                    .map(|j| format!("rules[{i}].request_headers[{j}].redact"))
            })
        };
        let Some(at) = first_use else { return Ok(None) };
        match env(variable) {
            None => Err(error(
                at,
                format!(
                    "\"hash\" needs an HMAC key, but the environment variable {variable} is not set in the Wasm VM \
                     (Envoy: vm_config.environment_variables; Istio: WasmPlugin spec.vmConfig.env)"
                ),
            )),
            Some(key) if key.len() < MIN_HASH_KEY_BYTES => Err(error(
                at,
                format!(
                    "the HMAC key in {variable} is {} bytes; use at least {MIN_HASH_KEY_BYTES} random bytes \
                     (e.g. `openssl rand -hex 32`)",
                    key.len()
                ),
            )),
            Some(key) => Ok(Some(HashKey::new(key.as_bytes()))),
        }
    }
}

/// The trail key, from the VM's environment: when it is set, every record is sealed.
fn trail_key(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<TrailKey>, ConfigError> {
    env(TRAIL_KEY_ENV)
        .map(|token| {
            TrailKey::parse(&token).map_err(|e| {
                error(
                    "",
                    format!("the trail key in the VM environment variable {TRAIL_KEY_ENV}: {e}; `meshaudit derive-key` makes one"),
                )
            })
        })
        .transpose()
}

fn log_level(raw: Option<&str>) -> Result<LogLevel, ConfigError> {
    let name = raw.unwrap_or(LOG_LEVEL);
    LogLevel::parse(name).ok_or_else(|| {
        error(
            "log_level",
            format!("unknown log level \"{name}\"; expected one of trace, debug, info, warn, error, critical"),
        )
    })
}

fn jwt(raw: RawAuthentication) -> Result<JwtSettings, ConfigError> {
    if let Some(key) = &raw.jwt_payload_metadata_key {
        check_printable("authentication.jwt_payload_metadata_key", key, 128)?;
    }
    let subject = match raw.jwt_subject.unwrap_or(RawSubject::DEFAULT) {
        RawSubject::Omit => SubjectMode::Omit,
        RawSubject::Hash => SubjectMode::Hash,
        RawSubject::Clear => SubjectMode::Clear,
    };
    Ok(JwtSettings {
        payload_metadata_key: raw.jwt_payload_metadata_key,
        subject,
    })
}

fn output(raw: RawOutput) -> Result<Output, ConfigError> {
    let output = Output {
        log: raw.log.unwrap_or(OUTPUT_LOG),
        filter_state: raw.filter_state.unwrap_or(OUTPUT_FILTER_STATE),
    };
    if !output.log && !output.filter_state {
        return Err(error(
            "output",
            "request records must go somewhere: keep \"log\" or turn on \"filter_state\"",
        ));
    }
    Ok(output)
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    crate::core::redact::hex(&Sha256::digest(bytes))
}
