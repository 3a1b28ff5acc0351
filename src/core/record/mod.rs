//! Audit record v1: every record kind, and its encoding as one JSON line.
//! The README's "Record reference" documents every field.
//!
//! `access` (request records), `connection` (network mode), `report` (the
//! periodic `suppressed` and `accounting` records) and `config` (the plugin's own
//! configuration changes) each encode one family; all start with `Envelope`.

pub(crate) mod access;
pub(crate) mod config;
pub(crate) mod connection;
pub(crate) mod json;
pub(crate) mod report;
pub(crate) mod time;

use crate::core::envoy::identity::{parse_spiffe, Peer};
use crate::core::envoy::source::CallerAddress;
use crate::core::worker::callers::KeyedBy;
use json::JsonWriter;

/// Record schema version, written as `"v"` in every record.
pub(crate) const SCHEMA_VERSION: u64 = 1;

/// Every record line in Envoy's log starts with this, so collectors can pick
/// audit lines out of the proxy's log stream; the JSON object follows it.
pub(crate) const RECORD_PREFIX: &str = "meshaudit.record ";

/// Declares the event kinds once: the enum, its names in records and metrics, and
/// the fixed order of per-kind counters (`Kind::ALL`, `Kind::index`).
macro_rules! kinds {
    ($($(#[$meta:meta])* $variant:ident => $name:literal,)*) => {
        /// The kind of event a record reports.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Kind {
            $($(#[$meta])* $variant,)*
        }

        impl Kind {
            /// Every kind, in the order of per-kind counters and metrics.
            pub const ALL: [Kind; [$($name),*].len()] = [$(Kind::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Kind::$variant => $name,)*
                }
            }

            /// Position in `ALL` (declaration order).
            pub fn index(self) -> usize {
                self as usize
            }
        }
    };
}

kinds! {
    /// A request recorded because a rule or sampling asked for it.
    Access => "access",
    /// Authorization refused it: Envoy RBAC, ext_authz, or a 403.
    Denied => "denied",
    /// Authentication failed: jwt_authn, or a 401.
    AuthFailure => "auth_failure",
    /// Allowed, but a shadow (dry-run) RBAC policy would have denied it.
    ShadowDenied => "shadow_denied",
    /// A shadow (dry-run) RBAC policy matched and would allow it.
    ShadowAllowed => "shadow_allowed",
    /// A rate limiter refused it (Envoy's local_ratelimit, or a 429).
    RateLimited => "rate_limited",
    /// Network mode: a TLS / mTLS handshake failed.
    TlsFailure => "tls_failure",
    /// Network mode: a connection, when configured.
    Connection => "connection",
    /// Events a budget refused, aggregated.
    Suppressed => "suppressed",
    /// A request an `audit` rule with `record_start` matched, when its headers passed: what
    /// is known then. Its end is recorded as well, with `started: true`.
    Started => "started",
}

impl Kind {
    /// Outcomes audited whatever the rules say (unless `always_audit_security_outcomes` is off).
    /// Shadow results are only known when the operator enabled `authorization.shadow_results`.
    pub fn is_security_outcome(self) -> bool {
        !matches!(self, Kind::Access | Kind::Connection | Kind::Started)
    }
}

/// The `kind` of a record: an event, or one of the plugin's own records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    Event(Kind),
    /// The periodic totals of a worker's stream.
    Accounting,
    /// Envoy's log level began, or ceased, to hide the records.
    LogLevel,
    ConfigApplied,
    ConfigRejected,
}

impl RecordKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RecordKind::Event(kind) => kind.as_str(),
            RecordKind::Accounting => "accounting",
            RecordKind::LogLevel => "log_level",
            RecordKind::ConfigApplied => "config_applied",
            RecordKind::ConfigRejected => "config_rejected",
        }
    }
}

/// Why a record was (or would have been) written (`why.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// A rule's action decided.
    Rule,
    /// A security outcome, audited whatever the rules say.
    SecurityOutcome,
    /// A mesh AUDIT policy matched (Istio's `AUDIT` action: RBAC's `access_log_hint`).
    MeshAuditPolicy,
    /// No rule matched: the default sample rate applied.
    Default,
    /// Network mode: `network.record_connections` records every connection.
    RecordConnections,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Rule => "rule",
            Reason::SecurityOutcome => "security_outcome",
            Reason::MeshAuditPolicy => "mesh_audit_policy",
            Reason::Default => "default_sample",
            Reason::RecordConnections => "record_connections",
        }
    }
}

/// The fields every record starts with: schema version, time, kind, the proxy,
/// and (for a worker's records) its stream and sequence number.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Envelope<'a> {
    pub ts_unix_nanos: u64,
    pub kind: RecordKind,
    pub instance: &'a str,
    /// The worker's stream id and this record's sequence number in it.
    pub stream: Option<(&'a str, u64)>,
    /// `config_digest`: the configuration in force, shortened (`Settings::short_digest`);
    /// none on the configuration records, which name it whole.
    pub config: Option<&'a str>,
}

impl Envelope<'_> {
    /// Opens the record's object and writes the envelope fields.
    pub(crate) fn begin(&self, w: &mut JsonWriter, cap: usize) {
        w.begin_object();
        w.u64_field("v", SCHEMA_VERSION);
        w.timestamp_field("ts", self.ts_unix_nanos);
        w.str_field("kind", self.kind.as_str());
        w.bytes_field("instance", self.instance.as_bytes(), cap);
        if let Some((stream, seq)) = self.stream {
            w.str_field("stream", stream);
            w.u64_field("seq", seq);
        }
        w.opt_str_field("config_digest", self.config);
    }
}

/// `peer`: the caller's TLS identity, or `{"mtls": false}` for plaintext.
fn write_peer(w: &mut JsonWriter, peer: &Peer, cap: usize) {
    w.object_field("peer");
    w.bool_field("mtls", peer.mtls.unwrap_or(false));
    w.opt_bytes_field("tls_version", peer.tls_version.as_deref(), cap);
    if let Some(principal) = peer.principal.as_deref() {
        w.bytes_field("principal", principal, cap);
        if let Some(spiffe) = parse_spiffe(principal) {
            w.bytes_field("trust_domain", spiffe.trust_domain, cap);
            w.opt_bytes_field("namespace", spiffe.namespace, cap);
            w.opt_bytes_field("service_account", spiffe.service_account, cap);
        }
    }
    w.opt_bytes_field("subject", peer.subject.as_deref(), cap);
    w.opt_bytes_field("cert_sha256", peer.cert_sha256.as_deref(), cap);
    w.opt_bytes_field("local_principal", peer.local_principal.as_deref(), cap);
    w.end_object();
}

/// `source.address`: the caller's address as Envoy gave it.
/// `source`: the directly connected peer, the address Envoy derived from
/// `X-Forwarded-For` (a claim) and, for request records, what the caller's key was made of.
fn write_source(w: &mut JsonWriter, address: CallerAddress, keyed_by: Option<KeyedBy>, cap: usize) {
    if address == CallerAddress::default() && keyed_by.is_none() {
        return;
    }
    w.object_field("source");
    w.opt_bytes_field("address", address.peer, cap);
    w.opt_bytes_field("forwarded_for", address.forwarded, cap);
    w.opt_str_field("keyed_by", keyed_by.map(KeyedBy::as_str));
    w.end_object();
}
