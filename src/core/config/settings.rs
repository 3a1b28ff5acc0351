//! The validated, immutable settings the filter runs with (built by `validate`
//! from `raw::RawConfig`).

use crate::core::path::{CanonicalOptions, Glob};
use crate::core::redact::{Redact, Redaction};
use crate::core::trail::TrailKey;

/// Envoy's log levels, in the order (and with the codes) of the Proxy-Wasm ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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

    pub fn parse(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, l)| *l)
    }

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, l)| *l == self)
            .map_or("critical", |(n, _)| *n)
    }

    /// The level's code in the Proxy-Wasm ABI (`proxy_log`, `proxy_get_log_level`).
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The level a Proxy-Wasm code names; `None` above `critical` (Envoy's `off`).
    pub fn from_code(code: u32) -> Option<Self> {
        Self::NAMES
            .iter()
            .map(|(_, l)| *l)
            .find(|l| l.code() == code)
    }
}

/// What Envoy's log shows of the plugin's lines (`proxy_get_log_level`): Envoy filters out
/// lines below its level without telling the plugin (`proxy_log` still succeeds), and the
/// level can change at run time (`istioctl proxy-config log <pod> --level wasm:error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogThreshold {
    /// Lines at this level and above are shown.
    From(LogLevel),
    Off,
}

impl LogThreshold {
    pub(crate) fn from_code(code: u32) -> Self {
        LogLevel::from_code(code).map_or(LogThreshold::Off, LogThreshold::From)
    }

    pub(crate) fn shows(self, level: LogLevel) -> bool {
        matches!(self, LogThreshold::From(threshold) if level >= threshold)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            LogThreshold::From(level) => level.name(),
            LogThreshold::Off => "off",
        }
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
    /// A gRPC status code (`"grpc:PERMISSION_DENIED"`), only ever a gRPC call's.
    Grpc(u8),
}

impl StatusMatcher {
    /// `http`: 0 when no response was sent; `grpc`: the status of a gRPC call.
    pub fn matches(&self, http: u16, grpc: Option<i64>) -> bool {
        match *self {
            StatusMatcher::Code(code) => http == code,
            StatusMatcher::Class(class) => http / 100 == class,
            StatusMatcher::Grpc(code) => grpc == Some(i64::from(code)),
        }
    }
}

/// A name condition, exact or (written ending in `*`) a prefix: caller principals, gRPC services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameMatcher {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
}

impl NameMatcher {
    pub fn matches(&self, name: &[u8]) -> bool {
        match self {
            NameMatcher::Exact(exact) => name == exact.as_slice(),
            NameMatcher::Prefix(prefix) => name.starts_with(prefix),
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
    pub principals: Vec<NameMatcher>,
    pub namespaces: Vec<Vec<u8>>,
    pub paths: Vec<PathMatcher>,
    pub case_insensitive: bool,
    /// Uppercase.
    pub methods: Vec<String>,
    pub hosts: Vec<HostMatcher>,
    pub headers: Vec<HeaderMatcher>,
    pub status: Vec<StatusMatcher>,
    pub grpc_services: Vec<NameMatcher>,
    /// `true`: the request's readings disagree (`request.ambiguities`); `false`: they agree.
    pub ambiguous: Option<bool>,
    /// `<service>/<method>`.
    pub grpc_methods: Vec<Vec<u8>>,
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
    /// Its value is redacted as a URL (`redact::URL_HEADERS` are without saying).
    pub url: bool,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub matcher: Matcher,
    pub action: Action,
    pub level: Level,
    pub request_headers: Vec<RecordedHeader>,
    pub budget: Option<Budget>,
    /// An `audit` rule's records share the security budget (else the routine one).
    pub security_budget: bool,
    /// An `audit` rule that also writes a `started` record when the request headers pass.
    pub record_start: bool,
}

/// `sha256:` and 12 hex digits.
const SHORT_DIGEST_LEN: usize = 19;

impl Settings {
    /// The digest as records name the configuration in force (`config_digest`): `sha256:` and
    /// its first 12 hex digits, 48 bits, enough to tell a proxy's configurations apart; the
    /// configuration records carry it whole.
    pub fn short_digest(&self) -> &str {
        self.digest.get(..SHORT_DIGEST_LEN).unwrap_or(&self.digest)
    }

    /// Whether Envoy's AUDIT mark (`access_log_hint`, `None` without an AUDIT filter) makes
    /// a request or connection recorded, as far as the configuration heeds the mark.
    pub(crate) fn heeds_audit_mark(&self, hint: Option<bool>) -> bool {
        self.audit_policies && hint == Some(true)
    }
}

/// Validated plugin settings. Immutable once built; the sections follow the JSON's.
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
    pub limits: Limits,
    pub redaction: Redaction,
    /// Seconds between two reports of a worker.
    pub reporting_interval_seconds: u64,
    /// Read RBAC shadow / dry-run results for every request.
    pub shadow_results: bool,
    /// Record what a mesh AUDIT policy matched (`access_log_hint`).
    pub audit_policies: bool,
    pub jwt: JwtSettings,
    /// Network mode: record successful connections too.
    pub record_connections: bool,
    pub output: Output,
    pub budgets: Budgets,
    pub rate_limit: CallerWindow,
    /// Key plaintext callers by the forwarded address Envoy derived (`callers`).
    pub trust_forwarded_address: bool,
    pub rules: Vec<Rule>,
    /// What the rules read of each request beyond the path.
    pub reads: RuleReads,
    /// The trail key: every record of a worker's stream is sealed with it (`core::trail`).
    pub integrity: Option<TrailKey>,
}

/// Byte caps on what a record may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_field_bytes: usize,
    pub max_record_bytes: usize,
}

/// Where request records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    /// To Envoy's log.
    pub log: bool,
    /// Set as the filter state `wasm.meshaudit_record`, for Envoy's access loggers.
    pub filter_state: bool,
}

/// How successful JWT authentication is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// jwt_authn `payload_in_metadata` key; `None`: not recorded.
    pub payload_metadata_key: Option<String>,
    pub subject: SubjectMode,
}

/// The per-worker budgets on records written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budgets {
    pub security: Budget,
    pub routine: Budget,
    pub max_suppressed_callers: usize,
}

/// The plugin's own per-caller call counts on `audit` rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallerWindow {
    pub window_seconds: u64,
    pub max_callers: usize,
}

/// What any rule reads of a request besides its path, so the routine path reads
/// nothing more than the rules need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleReads {
    /// Request headers rules match on; each read once per request, in this order
    /// (`HeaderMatcher::header` indexes it).
    pub headers: Vec<String>,
    /// The caller (mTLS, principal, namespace): the connection's facts before matching.
    pub peer: bool,
    /// The response status, read before matching.
    pub status: bool,
    /// Whether the path's spelling is ambiguous, worked out before matching (otherwise
    /// only for a request that is recorded).
    pub ambiguity: bool,
    /// Some rule records a request's start: the rules are matched when its headers pass
    /// too (otherwise that callback reads nothing).
    pub start: bool,
}
