//! The validated, immutable settings the filter runs with, built from
//! `config::RawConfig`. Every error names the JSON path it is about.

use super::config::{
    RawAction, RawBudget, RawConfig, RawHeaderMatch, RawLevel, RawMatch, RawPathMatch, RawRedact,
    RawRedaction, RawRule, RawStatus, RawSubject, WholeNumber,
};
use super::path::{canonicalize, CanonicalOptions, Glob};
use super::redact::{
    HashKey, Redact, Redaction, SegmentPlaceholder, DEFAULT_HASH_KEY_ENV, MIN_HASH_KEY_BYTES,
};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fmt;

/// The only configuration schema version so far.
pub const CONFIG_VERSION: u64 = 1;
pub const DEFAULT_SAMPLE_RATE: f64 = 0.01;
pub const DEFAULT_MAX_FIELD_BYTES: u64 = 1024;
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 16 * 1024;
pub const DEFAULT_REPORTING_INTERVAL_SECONDS: u64 = 10;
const MAX_RULES: usize = 256;
const MAX_RULE_NAME_BYTES: usize = 64;
const MAX_INSTANCE_ID_BYTES: usize = 256;
const MAX_PATTERN_BYTES: usize = 1024;

/// A configuration error: where in the JSON, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// JSON path of the offending value, such as `rules[2].sample_rate` (empty: the whole document).
    pub path: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

fn error(path: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        reason: reason.into(),
    }
}

/// Envoy's log levels, in the order of the Proxy-Wasm ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

impl LogLevel {
    const NAMES: [(&'static str, LogLevel); 6] = [
        ("trace", LogLevel::Trace),
        ("debug", LogLevel::Debug),
        ("info", LogLevel::Info),
        ("warn", LogLevel::Warn),
        ("error", LogLevel::Error),
        ("critical", LogLevel::Critical),
    ];

    fn parse(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, l)| *l)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    Audit,
    /// Record this fraction (0 to 1).
    Sample(f64),
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Metadata,
    Request,
}

#[derive(Debug, Clone)]
pub enum PathMatcher {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
    Glob(Glob),
}

impl PathMatcher {
    pub fn matches(&self, canonical: &[u8]) -> bool {
        match self {
            PathMatcher::Exact(p) => canonical == p.as_slice(),
            PathMatcher::Prefix(p) => canonical.starts_with(p),
            PathMatcher::Glob(g) => g.matches(canonical),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatcher {
    Exact(String),
    /// `*.example.com` is stored as `.example.com`: any host ending with it.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderCondition {
    Present,
    Absent,
    Equals(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatcher {
    /// Index into `Settings::match_headers`: each header is read from Envoy once per request.
    pub header: usize,
    pub condition: HeaderCondition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatcher {
    Code(u16),
    /// The hundreds digit: 4 for `4xx`.
    Class(u16),
}

impl StatusMatcher {
    pub fn matches(&self, status: u16) -> bool {
        match *self {
            StatusMatcher::Code(code) => status == code,
            StatusMatcher::Class(class) => status / 100 == class,
        }
    }
}

/// A caller principal condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalMatcher {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
}

impl PrincipalMatcher {
    pub fn matches(&self, principal: &[u8]) -> bool {
        match self {
            PrincipalMatcher::Exact(p) => principal == p.as_slice(),
            PrincipalMatcher::Prefix(p) => principal.starts_with(p),
        }
    }
}

/// How a verified JWT subject is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectMode {
    Omit,
    Hash,
    Clear,
}

#[derive(Debug, Clone, Default)]
pub struct Matcher {
    pub mtls: Option<bool>,
    pub principals: Vec<PrincipalMatcher>,
    pub namespaces: Vec<Vec<u8>>,
    pub paths: Vec<PathMatcher>,
    pub case_insensitive: bool,
    /// Uppercase.
    pub methods: Vec<String>,
    pub hosts: Vec<HostMatcher>,
    pub headers: Vec<HeaderMatcher>,
    pub status: Vec<StatusMatcher>,
}

/// A token bucket's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub per_second: f64,
    pub burst: f64,
}

/// A request header a rule records, and how (`None`: clear, unless sensitive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedHeader {
    pub name: String,
    pub redact: Option<Redact>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub matcher: Matcher,
    pub action: Action,
    pub level: Level,
    pub request_headers: Vec<RecordedHeader>,
    pub budget: Option<Budget>,
}

/// Validated plugin settings. Immutable once built.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `sha256:<hex>` of the configuration bytes as Envoy delivered them.
    pub digest: String,
    pub version: u64,
    pub instance_id: Option<String>,
    pub log_level: LogLevel,
    pub always_audit_security_outcomes: bool,
    pub default_sample_rate: f64,
    pub canonical: CanonicalOptions,
    pub max_field_bytes: usize,
    pub max_record_bytes: usize,
    pub redaction: Redaction,
    /// Seconds between two reports of a worker.
    pub reporting_interval_seconds: u64,
    /// Read RBAC shadow / dry-run results for every request.
    pub shadow_results: bool,
    /// jwt_authn `payload_in_metadata` key, when successful JWT authentication is recorded.
    pub jwt_payload_metadata_key: Option<String>,
    pub jwt_subject: SubjectMode,
    /// Network mode: record successful connections too.
    pub record_connections: bool,
    /// Request records go to Envoy's log.
    pub output_log: bool,
    /// Request records are also set as the filter state `wasm.meshaudit_record`.
    pub output_filter_state: bool,
    pub security_budget: Budget,
    pub routine_budget: Budget,
    pub max_suppressed_callers: usize,
    pub caller_window_seconds: u64,
    pub max_callers: usize,
    pub rules: Vec<Rule>,
    /// Request headers any rule matches on; read from Envoy once per request, in this order.
    pub match_headers: Vec<String>,
    /// Whether any rule matches on the method / the host, so they are read for every request.
    pub match_needs_method: bool,
    pub match_needs_authority: bool,
    /// Whether any rule matches on the caller (mTLS, principal, namespace).
    pub match_needs_peer: bool,
    /// Whether any rule matches on the response status, so it is read before matching.
    pub match_needs_status: bool,
}

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
                let at = super::jsonpath::path_at(bytes, e.line(), e.column());
                error(at, e.to_string())
            })?;
            de.end().map_err(|e| error("", e.to_string()))?;
            raw
        };
        Self::from_raw(raw, format!("sha256:{digest}"), env)
    }

    fn from_raw(
        mut raw: RawConfig,
        digest: String,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let version = raw.version.map_or(CONFIG_VERSION, |v| v.0);
        if version != CONFIG_VERSION {
            return Err(error(
                "version",
                format!("unsupported configuration version {version}; this plugin reads version {CONFIG_VERSION}"),
            ));
        }
        if let Some(id) = &raw.instance_id {
            check_printable("instance_id", id, MAX_INSTANCE_ID_BYTES)?;
        }
        let log_level = match raw.log_level.as_deref() {
            None => LogLevel::Warn,
            Some(name) => LogLevel::parse(name).ok_or_else(|| {
                error(
                    "log_level",
                    format!("unknown log level \"{name}\"; expected one of trace, debug, info, warn, error, critical"),
                )
            })?,
        };
        let default_sample_rate = match raw.default_sample_rate {
            None => DEFAULT_SAMPLE_RATE,
            Some(rate) => check_rate("default_sample_rate", rate)?,
        };
        let normalization = raw.path_normalization.unwrap_or_default();
        let defaults = CanonicalOptions::default();
        let canonical = CanonicalOptions {
            decode_escaped_slashes: normalization
                .decode_escaped_slashes
                .unwrap_or(defaults.decode_escaped_slashes),
            backslash_is_slash: normalization
                .backslash_is_slash
                .unwrap_or(defaults.backslash_is_slash),
        };
        let limits = raw.limits.unwrap_or_default();
        let max_field_bytes = check_range(
            "limits.max_field_bytes",
            limits.max_field_bytes,
            DEFAULT_MAX_FIELD_BYTES,
            64..=65_536,
        )?;
        let max_record_bytes = check_range(
            "limits.max_record_bytes",
            limits.max_record_bytes,
            DEFAULT_MAX_RECORD_BYTES,
            4096..=1_048_576,
        )?;
        if raw.rules.len() > MAX_RULES {
            return Err(error(
                "rules",
                format!("at most {MAX_RULES} rules, got {}", raw.rules.len()),
            ));
        }

        let raw_redaction = raw.redaction.unwrap_or_default();
        let hash_key_env = raw_redaction
            .hash_key_env
            .clone()
            .unwrap_or_else(|| DEFAULT_HASH_KEY_ENV.to_string());
        let redaction = build_redaction(raw_redaction)?;
        let authentication = raw.authentication.take().unwrap_or_default();
        if let Some(key) = &authentication.jwt_payload_metadata_key {
            check_printable("authentication.jwt_payload_metadata_key", key, 128)?;
        }
        let jwt_payload_metadata_key = authentication.jwt_payload_metadata_key;
        let jwt_subject = match authentication.jwt_subject {
            None | Some(RawSubject::Omit) => SubjectMode::Omit,
            Some(RawSubject::Hash) => SubjectMode::Hash,
            Some(RawSubject::Clear) => SubjectMode::Clear,
        };
        let budgets = raw.budgets.take().unwrap_or_default();
        let security_budget = build_budget("budgets.security", budgets.security.as_ref(), 1000.0)?;
        let routine_budget = build_budget("budgets.routine", budgets.routine.as_ref(), 100.0)?;
        let max_suppressed_callers = check_range(
            "budgets.max_suppressed_callers",
            budgets.max_suppressed_callers,
            256,
            1..=65_536,
        )?;
        let rate_limit = raw.rate_limit.take().unwrap_or_default();
        let caller_window_seconds = check_range(
            "rate_limit.window_seconds",
            rate_limit.window_seconds,
            60,
            1..=86_400,
        )? as u64;
        let max_callers = check_range(
            "rate_limit.max_callers",
            rate_limit.max_callers,
            1024,
            1..=65_536,
        )?;
        let output = raw.output.take().unwrap_or_default();
        let output_log = output.log.unwrap_or(true);
        let output_filter_state = output.filter_state.unwrap_or(false);
        if !output_log && !output_filter_state {
            return Err(error(
                "output",
                "request records must go somewhere: keep \"log\" or turn on \"filter_state\"",
            ));
        }
        let reporting = raw.reporting.unwrap_or_default();
        let reporting_interval_seconds = check_range(
            "reporting.interval_seconds",
            reporting.interval_seconds,
            DEFAULT_REPORTING_INTERVAL_SECONDS,
            1..=3600,
        )? as u64;
        let mut settings = Settings {
            digest,
            version,
            instance_id: raw.instance_id,
            log_level,
            always_audit_security_outcomes: raw.always_audit_security_outcomes.unwrap_or(true),
            default_sample_rate,
            canonical,
            max_field_bytes,
            max_record_bytes,
            redaction,
            reporting_interval_seconds,
            shadow_results: raw
                .authorization
                .as_ref()
                .and_then(|a| a.shadow_results)
                .unwrap_or(false),
            jwt_payload_metadata_key,
            jwt_subject,
            record_connections: raw
                .network
                .as_ref()
                .and_then(|n| n.record_connections)
                .unwrap_or(false),
            match_needs_peer: false,
            match_needs_status: false,
            output_log,
            output_filter_state,
            security_budget,
            routine_budget,
            max_suppressed_callers,
            caller_window_seconds,
            max_callers,
            rules: Vec::with_capacity(raw.rules.len()),
            match_headers: Vec::new(),
            match_needs_method: false,
            match_needs_authority: false,
        };
        let mut names = HashSet::new();
        for (i, raw_rule) in raw.rules.into_iter().enumerate() {
            let at = format!("rules[{i}]");
            if !names.insert(raw_rule.name.clone()) {
                return Err(error(
                    format!("{at}.name"),
                    format!(
                        "duplicate rule name \"{}\"; rule names must be unique",
                        raw_rule.name
                    ),
                ));
            }
            let rule = settings.build_rule(&at, raw_rule)?;
            settings.match_needs_method |= !rule.matcher.methods.is_empty();
            settings.match_needs_authority |= !rule.matcher.hosts.is_empty();
            settings.match_needs_status |= !rule.matcher.status.is_empty();
            settings.match_needs_peer |= rule.matcher.mtls.is_some()
                || !rule.matcher.principals.is_empty()
                || !rule.matcher.namespaces.is_empty();
            settings.rules.push(rule);
        }
        settings.redaction.hash_key = settings.hash_key_if_needed(&hash_key_env, env)?;
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
        } else if self.jwt_subject == SubjectMode::Hash {
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

    fn build_rule(&mut self, at: &str, raw: RawRule) -> Result<Rule, ConfigError> {
        check_rule_name(&format!("{at}.name"), &raw.name)?;
        let action = match (raw.action, raw.sample_rate) {
            (RawAction::Sample, Some(rate)) => {
                Action::Sample(check_rate(&format!("{at}.sample_rate"), rate)?)
            }
            (RawAction::Sample, None) => {
                return Err(error(
                    format!("{at}.sample_rate"),
                    "required with action \"sample\" (a fraction from 0 to 1, e.g. 0.05)",
                ))
            }
            (_, Some(_)) => {
                return Err(error(
                    format!("{at}.sample_rate"),
                    "only allowed with action \"sample\"",
                ))
            }
            (RawAction::Audit, None) => Action::Audit,
            (RawAction::Drop, None) => Action::Drop,
        };
        let level = match raw.level {
            None | Some(RawLevel::Metadata) => Level::Metadata,
            Some(RawLevel::Request) => Level::Request,
        };
        if level == Level::Metadata && !raw.request_headers.is_empty() {
            return Err(error(
                format!("{at}.request_headers"),
                "headers are only recorded at level \"request\"; set \"level\": \"request\" or remove the list",
            ));
        }
        if action == Action::Drop && level == Level::Request {
            return Err(error(
                format!("{at}.level"),
                "a \"drop\" rule writes no record, so a level has no effect; remove it",
            ));
        }
        let mut request_headers: Vec<RecordedHeader> =
            Vec::with_capacity(raw.request_headers.len());
        for (j, header) in raw.request_headers.into_iter().enumerate() {
            check_header_name(&format!("{at}.request_headers[{j}]"), &header.name)?;
            if request_headers.iter().any(|h| h.name == header.name) {
                return Err(error(
                    format!("{at}.request_headers[{j}]"),
                    format!("\"{}\" is listed twice", header.name),
                ));
            }
            request_headers.push(RecordedHeader {
                name: header.name,
                redact: header.redact.map(redact_from_raw),
            });
        }
        let matcher = self.build_matcher(&format!("{at}.match"), raw.matcher)?;
        let budget = match &raw.budget {
            Some(_) if action == Action::Drop => {
                return Err(error(
                    format!("{at}.budget"),
                    "a \"drop\" rule writes no record, so a budget has no effect; remove it",
                ));
            }
            Some(budget) => Some(build_budget(&format!("{at}.budget"), Some(budget), 0.0)?),
            None => None,
        };
        Ok(Rule {
            budget,
            name: raw.name,
            matcher,
            action,
            level,
            request_headers,
        })
    }

    fn build_matcher(&mut self, at: &str, raw: RawMatch) -> Result<Matcher, ConfigError> {
        let case_insensitive = raw.case_insensitive.unwrap_or(false);
        let mut paths = Vec::with_capacity(raw.paths.len());
        for (j, path) in raw.paths.into_iter().enumerate() {
            paths.push(self.build_path_matcher(
                &format!("{at}.paths[{j}]"),
                path,
                case_insensitive,
            )?);
        }
        let mut methods = Vec::with_capacity(raw.methods.len());
        for (j, method) in raw.methods.iter().enumerate() {
            if method.is_empty() || !method.bytes().all(is_token_byte) {
                return Err(error(
                    format!("{at}.methods[{j}]"),
                    format!(
                        "\"{}\" is not an HTTP method (a token such as GET or POST)",
                        method.escape_debug()
                    ),
                ));
            }
            methods.push(method.to_ascii_uppercase());
        }
        let mut hosts = Vec::with_capacity(raw.hosts.len());
        for (j, host) in raw.hosts.iter().enumerate() {
            hosts.push(build_host_matcher(&format!("{at}.hosts[{j}]"), host)?);
        }
        let mut headers = Vec::with_capacity(raw.headers.len());
        for (j, header) in raw.headers.into_iter().enumerate() {
            headers.push(self.build_header_matcher(&format!("{at}.headers[{j}]"), header)?);
        }
        let mut status = Vec::with_capacity(raw.status.len());
        for (j, s) in raw.status.into_iter().enumerate() {
            status.push(build_status_matcher(&format!("{at}.status[{j}]"), s)?);
        }
        let mut principals = Vec::with_capacity(raw.principals.len());
        for (j, p) in raw.principals.iter().enumerate() {
            if p.is_empty() || p.len() > MAX_PATTERN_BYTES || p.chars().any(char::is_control) {
                return Err(error(
                    format!("{at}.principals[{j}]"),
                    "a principal such as \"spiffe://cluster.local/ns/shop/sa/checkout\", or a prefix ending in '*'",
                ));
            }
            principals.push(match p.strip_suffix('*') {
                Some(prefix) => PrincipalMatcher::Prefix(prefix.as_bytes().to_vec()),
                None => PrincipalMatcher::Exact(p.as_bytes().to_vec()),
            });
        }
        let mut namespaces = Vec::with_capacity(raw.namespaces.len());
        for (j, ns) in raw.namespaces.iter().enumerate() {
            let valid = !ns.is_empty()
                && ns.len() <= 253
                && ns.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !valid {
                return Err(error(
                    format!("{at}.namespaces[{j}]"),
                    format!(
                        "\"{}\" is not a Kubernetes namespace name",
                        ns.escape_debug()
                    ),
                ));
            }
            namespaces.push(ns.as_bytes().to_vec());
        }
        Ok(Matcher {
            mtls: raw.mtls,
            principals,
            namespaces,
            paths,
            case_insensitive,
            methods,
            hosts,
            headers,
            status,
        })
    }

    fn build_path_matcher(
        &self,
        at: &str,
        raw: RawPathMatch,
        case_insensitive: bool,
    ) -> Result<PathMatcher, ConfigError> {
        let (kind, pattern) = match &raw {
            RawPathMatch::Exact(p) => ("exact", p),
            RawPathMatch::Prefix(p) => ("prefix", p),
            RawPathMatch::Glob(p) => ("glob", p),
        };
        let at = format!("{at}.{kind}");
        if !pattern.starts_with('/') {
            return Err(error(
                at,
                format!("must start with '/', got \"{}\"", pattern.escape_debug()),
            ));
        }
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(error(at, format!("at most {MAX_PATTERN_BYTES} bytes")));
        }
        if pattern.contains(['?', '#']) && kind != "glob" {
            return Err(error(
                at,
                "rules match the path without its query string; remove '?' and what follows",
            ));
        }
        let fold = |p: &str| {
            if case_insensitive {
                p.to_ascii_lowercase()
            } else {
                p.to_string()
            }
        };
        Ok(match raw {
            RawPathMatch::Exact(p) | RawPathMatch::Prefix(p) => {
                // A pattern the canonical form can never equal would silently never match.
                let canonical = canonicalize(p.as_bytes(), self.canonical);
                if *canonical != *p.as_bytes() {
                    return Err(error(
                        at,
                        format!(
                            "\"{}\" is not in canonical form (rules match canonical paths); write \"{}\"",
                            p.escape_debug(),
                            String::from_utf8_lossy(&canonical).escape_debug()
                        ),
                    ));
                }
                let bytes = fold(&p).into_bytes();
                if kind == "exact" {
                    PathMatcher::Exact(bytes)
                } else {
                    PathMatcher::Prefix(bytes)
                }
            }
            RawPathMatch::Glob(p) => {
                PathMatcher::Glob(Glob::new(&fold(&p)).map_err(|reason| error(at, reason))?)
            }
        })
    }

    fn build_header_matcher(
        &mut self,
        at: &str,
        raw: RawHeaderMatch,
    ) -> Result<HeaderMatcher, ConfigError> {
        check_header_name(&format!("{at}.name"), &raw.name)?;
        let condition = match (raw.present, raw.equals) {
            (Some(true), None) => HeaderCondition::Present,
            (Some(false), None) => HeaderCondition::Absent,
            (None, Some(value)) => HeaderCondition::Equals(value.into_bytes()),
            _ => {
                return Err(error(
                    at,
                    "give exactly one of \"present\" (true/false) or \"equals\" (a value)",
                ))
            }
        };
        let header = match self.match_headers.iter().position(|h| *h == raw.name) {
            Some(index) => index,
            None => {
                self.match_headers.push(raw.name);
                self.match_headers.len() - 1
            }
        };
        Ok(HeaderMatcher { header, condition })
    }
}

fn build_budget(
    at: &str,
    raw: Option<&RawBudget>,
    default_rate: f64,
) -> Result<Budget, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Budget {
            per_second: default_rate,
            burst: (default_rate * 2.0).max(1.0),
        });
    };
    let rate = raw.records_per_second;
    if !(rate.is_finite() && (0.001..=1_000_000.0).contains(&rate)) {
        return Err(error(
            format!("{at}.records_per_second"),
            format!("must be from 0.001 to 1000000, got {rate}"),
        ));
    }
    let burst = match raw.burst {
        None => (rate * 2.0).ceil().max(1.0),
        Some(burst) => check_range(&format!("{at}.burst"), Some(burst), 1, 1..=1_000_000)? as f64,
    };
    Ok(Budget {
        per_second: rate,
        burst,
    })
}

fn redact_from_raw(raw: RawRedact) -> Redact {
    match raw {
        RawRedact::Omit => Redact::Omit,
        RawRedact::Mask => Redact::Mask,
        RawRedact::Hash => Redact::Hash,
    }
}

fn build_redaction(raw: RawRedaction) -> Result<Redaction, ConfigError> {
    let mut redaction = Redaction::default();
    for (j, name) in raw.sensitive_headers.iter().enumerate() {
        check_header_name(&format!("redaction.sensitive_headers[{j}]"), name)?;
        if !redaction.is_sensitive_header(name) {
            redaction.sensitive_headers.push(name.clone());
        }
    }
    if let Some(action) = raw.sensitive_header_action {
        redaction.sensitive_header_action = redact_from_raw(action);
    }
    if let Some(variable) = &raw.hash_key_env {
        let valid = variable
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && variable
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(error(
                "redaction.hash_key_env",
                format!(
                    "\"{}\" is not an environment variable name",
                    variable.escape_debug()
                ),
            ));
        }
    }
    for (field, names, into) in [
        (
            "query_params",
            &raw.query_params,
            &mut redaction.query_params,
        ),
        (
            "sensitive_query_params",
            &raw.sensitive_query_params,
            &mut redaction.sensitive_query_params,
        ),
    ] {
        for (j, name) in names.iter().enumerate() {
            if name.is_empty() || name.len() > 128 || name.contains(['&', '=', '#']) {
                return Err(error(
                    format!("redaction.{field}[{j}]"),
                    format!("\"{}\" is not a query parameter name", name.escape_debug()),
                ));
            }
            let lower = name.to_ascii_lowercase();
            if !into.contains(&lower) {
                into.push(lower);
            }
        }
    }
    if let Some(placeholders) = raw.path_placeholders {
        redaction.email_placeholder = placeholders.email.unwrap_or(true);
        if let Some(min) = placeholders.min_digits {
            redaction.min_digits = check_range(
                "redaction.path_placeholders.min_digits",
                Some(min),
                9,
                0..=64,
            )?;
        }
        for (j, p) in placeholders.segments.into_iter().enumerate() {
            let at = format!("redaction.path_placeholders.segments[{j}]");
            if p.glob.is_empty() || p.glob.contains('/') || p.glob.len() > MAX_PATTERN_BYTES {
                return Err(error(
                    format!("{at}.glob"),
                    "a glob over one path segment: no '/', 1 to 1024 bytes (e.g. \"user-*\")",
                ));
            }
            let valid_name = (1..=32).contains(&p.placeholder.len())
                && p.placeholder
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid_name {
                return Err(error(
                    format!("{at}.placeholder"),
                    format!(
                        "\"{}\" is not a placeholder name: use 1 to 32 of a-z, 0-9, '_' (written as {{name}})",
                        p.placeholder.escape_debug()
                    ),
                ));
            }
            redaction.segment_placeholders.push(SegmentPlaceholder {
                glob: p.glob.into_bytes(),
                placeholder: format!("{{{}}}", p.placeholder),
            });
        }
    }
    Ok(redaction)
}

fn build_host_matcher(at: &str, host: &str) -> Result<HostMatcher, ConfigError> {
    let lower = host.to_ascii_lowercase();
    let (suffix, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid {
        return Err(error(
            at,
            format!(
                "\"{}\" is not a host name; write \"api.example.com\" or \"*.example.com\" (no port, no scheme)",
                host.escape_debug()
            ),
        ));
    }
    Ok(if suffix {
        HostMatcher::Suffix(format!(".{name}"))
    } else {
        HostMatcher::Exact(name.to_string())
    })
}

fn build_status_matcher(at: &str, raw: RawStatus) -> Result<StatusMatcher, ConfigError> {
    match raw {
        RawStatus::Code(code @ 100..=599) => Ok(StatusMatcher::Code(code as u16)),
        RawStatus::Code(code) => Err(error(at, format!("status code must be 100 to 599, got {code}"))),
        RawStatus::Class(class) => match class.to_ascii_lowercase().as_str() {
            "1xx" => Ok(StatusMatcher::Class(1)),
            "2xx" => Ok(StatusMatcher::Class(2)),
            "3xx" => Ok(StatusMatcher::Class(3)),
            "4xx" => Ok(StatusMatcher::Class(4)),
            "5xx" => Ok(StatusMatcher::Class(5)),
            _ => Err(error(
                at,
                format!("\"{}\" is not a status class; expected \"1xx\" to \"5xx\" or a code such as 404", class.escape_debug()),
            )),
        },
    }
}

fn check_rate(at: &str, rate: f64) -> Result<f64, ConfigError> {
    if rate.is_finite() && (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(error(
            at,
            format!("must be a fraction from 0 to 1, got {rate}"),
        ))
    }
}

fn check_range(
    at: &str,
    value: Option<WholeNumber>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<usize, ConfigError> {
    let value = value.map_or(default, |v| v.0);
    if !range.contains(&value) {
        return Err(error(
            at,
            format!(
                "must be from {} to {}, got {value}",
                range.start(),
                range.end()
            ),
        ));
    }
    usize::try_from(value).map_err(|_| error(at, format!("{value} is too large for this platform")))
}

fn check_rule_name(at: &str, name: &str) -> Result<(), ConfigError> {
    // Rule names become parts of Envoy stat names: no '.', and a leading
    // letter or digit keeps `_default` (requests no rule matched) unambiguous.
    let valid = name.len() <= MAX_RULE_NAME_BYTES
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'));
    if valid {
        Ok(())
    } else {
        Err(error(
            at,
            format!(
                "\"{}\" is not a valid rule name: use 1 to {MAX_RULE_NAME_BYTES} of a-z, 0-9, '-', '_', starting with a letter or digit",
                name.escape_debug()
            ),
        ))
    }
}

fn check_header_name(at: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return Err(error(
            at,
            format!("\"{}\" is not an HTTP header name", name.escape_debug()),
        ));
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(error(
            at,
            format!(
                "header names are matched in lowercase, as Envoy stores them; write \"{}\"",
                name.to_ascii_lowercase()
            ),
        ));
    }
    Ok(())
}

fn check_printable(at: &str, value: &str, max: usize) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(error(
            at,
            format!("must be 1 to {max} bytes of printable text"),
        ));
    }
    Ok(())
}

/// RFC 7230 token characters: what method and header names are made of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    super::redact::hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests;
