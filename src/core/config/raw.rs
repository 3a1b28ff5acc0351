//! The plugin configuration as written by the operator (JSON), field by field.
//!
//! These types only describe the JSON; `settings` validates them into the
//! immutable form the filter runs with. Every struct denies unknown fields so
//! a typo is an error, not a silently ignored setting. The README's
//! "Configuration reference" documents the same fields.

#[cfg(feature = "schema")]
use super::defaults;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;

/// The whole plugin configuration (Envoy `configuration` / Istio `pluginConfig`).
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Schema version of this configuration. Only `1` exists.
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::VERSION)))]
    pub version: Option<WholeNumber>,
    /// Names this proxy in every record. Default: the Envoy node id (`xds.node.id`; Istio: `sidecar~<ip>~<pod>.<ns>~…`), else `unknown`.
    pub instance_id: Option<String>,
    /// Envoy log level the records are written at: `trace`, `debug`, `info`,
    /// `warn`, `error` or `critical` (Istio hides Wasm `info` logs by default).
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::LOG_LEVEL)))]
    pub log_level: Option<String>,
    /// Audit every security outcome (401, 403, a local reply from RBAC, jwt_authn
    /// or ext_authz) whatever the rules say. With `false`, rules decide alone.
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::ALWAYS_AUDIT_SECURITY_OUTCOMES)))]
    pub always_audit_security_outcomes: Option<bool>,
    /// Fraction (0 to 1) of requests that match no rule which is recorded.
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::DEFAULT_SAMPLE_RATE, "minimum" = 0, "maximum" = 1)))]
    pub default_sample_rate: Option<f64>,
    /// Key plaintext callers (per-caller counts, suppressed groups) by the client address
    /// Envoy derived from `X-Forwarded-For` rather than by the directly connected peer. Only
    /// behind proxies you trust to set that header, and only where Envoy trusts them too
    /// (`xff_num_trusted_hops`, Istio's `numTrustedProxies`): otherwise a caller picks its
    /// own identity.
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::TRUST_FORWARDED_ADDRESS)))]
    pub trust_forwarded_address: Option<bool>,
    /// How the canonical path that rules match on is derived.
    pub path_normalization: Option<RawPathNormalization>,
    /// Byte caps on what a record may carry.
    pub limits: Option<RawLimits>,
    /// What is kept out of records, or pseudonymised, beyond the built-in defaults.
    pub redaction: Option<RawRedaction>,
    /// How often each worker reports to Envoy's stats.
    pub reporting: Option<RawReporting>,
    /// What is read about authorization decisions.
    pub authorization: Option<RawAuthorization>,
    /// What is read about authentication (JWT).
    pub authentication: Option<RawAuthentication>,
    /// The network-filter mode (root id `network`): TLS handshake failures.
    pub network: Option<RawNetwork>,
    /// Per-worker budgets on records written; what they refuse is aggregated, never lost silently.
    pub budgets: Option<RawBudgets>,
    /// The plugin's own per-caller call counts on `audit` rules.
    pub rate_limit: Option<RawRateLimit>,
    /// Where request records go.
    pub output: Option<RawOutput>,
    /// Ordered rules; the first whose `match` fits the request decides.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = defaults::MAX_RULES), extend("default" = [])))]
    pub rules: Vec<RawRule>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawPathNormalization {
    /// Decode `%2F` and `%5C` to `/` before matching.
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::DECODE_ESCAPED_SLASHES)))]
    pub decode_escaped_slashes: Option<bool>,
    /// Treat `\` as `/` before matching.
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::BACKSLASH_IS_SLASH)))]
    pub backslash_is_slash: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Cap on each string field, in bytes.
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::MAX_FIELD_BYTES.default, "minimum" = defaults::MAX_FIELD_BYTES.min, "maximum" = defaults::MAX_FIELD_BYTES.max)))]
    pub max_field_bytes: Option<WholeNumber>,
    /// Cap on a whole record, in bytes.
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::MAX_RECORD_BYTES.default, "minimum" = defaults::MAX_RECORD_BYTES.min, "maximum" = defaults::MAX_RECORD_BYTES.max)))]
    pub max_record_bytes: Option<WholeNumber>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawAuthorization {
    /// Read RBAC shadow and Istio dry-run results for every request and record
    /// `shadow_denied` / `shadow_allowed` events. Costs one attribute read per request.
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::SHADOW_RESULTS)))]
    pub shadow_results: Option<bool>,
    /// Record every request (and, in network mode, every connection) a mesh AUDIT policy
    /// matched: Istio's `AUDIT` AuthorizationPolicy, compiled to an RBAC filter with
    /// `action: LOG`, which marks what it matches and leaves recording to a plugin.
    /// Recorded like an `audit` rule's request, whatever the rules and sampling say. The mark
    /// costs one attribute read per request the rules would not record.
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::AUDIT_POLICIES)))]
    pub audit_policies: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawAuthentication {
    /// jwt_authn's `payload_in_metadata` name: where the verified claims are read from.
    /// Absent: successful JWT authentication is not recorded.
    pub jwt_payload_metadata_key: Option<String>,
    /// How the JWT subject is recorded: `omit`, `hash` (keyed pseudonym) or `clear`.
    #[cfg_attr(feature = "schema", schemars(extend("default" = RawSubject::DEFAULT)))]
    pub jwt_subject: Option<RawSubject>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(rename_all = "snake_case")]
pub enum RawSubject {
    Omit,
    Hash,
    Clear,
}

impl RawSubject {
    pub const DEFAULT: RawSubject = RawSubject::Omit;
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawOutput {
    /// Write request records to Envoy's log, prefixed `meshaudit.record `.
    /// Configuration, accounting and suppressed records always go to the log.
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::OUTPUT_LOG)))]
    pub log: Option<bool>,
    /// Also expose each request record to Envoy's access loggers as the filter state
    /// `wasm.meshaudit_record` (`%FILTER_STATE(wasm.meshaudit_record:PLAIN)%`).
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::OUTPUT_FILTER_STATE)))]
    pub filter_state: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawBudgets {
    /// Security events: denials, authentication and TLS failures, rate-limited and shadow
    /// results, and requests matched by an `audit` rule.
    #[cfg_attr(feature = "schema", schemars(extend("default" = {"records_per_second": defaults::SECURITY_RECORDS_PER_SECOND, "burst": defaults::default_burst(defaults::SECURITY_RECORDS_PER_SECOND)})))]
    pub security: Option<RawBudget>,
    /// Everything else (sampled and `sample` rules).
    #[cfg_attr(feature = "schema", schemars(extend("default" = {"records_per_second": defaults::ROUTINE_RECORDS_PER_SECOND, "burst": defaults::default_burst(defaults::ROUTINE_RECORDS_PER_SECOND)})))]
    pub routine: Option<RawBudget>,
    /// Distinct callers aggregated per (kind, rule) in `suppressed` records per interval;
    /// beyond, callers are counted together as `(other callers)`.
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::MAX_SUPPRESSED_CALLERS.default, "minimum" = defaults::MAX_SUPPRESSED_CALLERS.min, "maximum" = defaults::MAX_SUPPRESSED_CALLERS.max)))]
    pub max_suppressed_callers: Option<WholeNumber>,
}

/// A token bucket.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// Sustained rate, records per second.
    #[cfg_attr(feature = "schema", schemars(extend("minimum" = defaults::RECORDS_PER_SECOND_MIN, "maximum" = defaults::RECORDS_PER_SECOND_MAX)))]
    pub records_per_second: f64,
    /// Records allowed at once above the rate. Default: twice the rate, at least 1.
    #[cfg_attr(feature = "schema", schemars(extend("minimum" = defaults::BURST_MIN, "maximum" = defaults::BURST_MAX)))]
    pub burst: Option<WholeNumber>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Window of the per-caller call count, in seconds.
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::CALLER_WINDOW_SECONDS.default, "minimum" = defaults::CALLER_WINDOW_SECONDS.min, "maximum" = defaults::CALLER_WINDOW_SECONDS.max)))]
    pub window_seconds: Option<WholeNumber>,
    /// Entries in the per-worker (rule, caller) table; the oldest make room.
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::MAX_CALLERS.default, "minimum" = defaults::MAX_CALLERS.min, "maximum" = defaults::MAX_CALLERS.max)))]
    pub max_callers: Option<WholeNumber>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    /// Also record successful connections (kind `connection`), not only failed handshakes.
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::RECORD_CONNECTIONS)))]
    pub record_connections: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawReporting {
    /// Seconds between two reports of a worker (metrics pushed to Envoy).
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::REPORTING_INTERVAL_SECONDS.default, "minimum" = defaults::REPORTING_INTERVAL_SECONDS.min, "maximum" = defaults::REPORTING_INTERVAL_SECONDS.max)))]
    pub interval_seconds: Option<WholeNumber>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawRedaction {
    /// More header names treated like `authorization`: never recorded in clear.
    #[serde(default)]
    pub sensitive_headers: Vec<String>,
    /// What a sensitive header a rule allow-lists becomes: `omit`, `mask` (keeps an auth
    /// scheme and the length) or `hash` (keyed pseudonym).
    #[cfg_attr(feature = "schema", schemars(extend("default" = RawRedact::DEFAULT)))]
    pub sensitive_header_action: Option<RawRedact>,
    /// Name of the VM environment variable holding the HMAC-SHA-256 key for `hash`
    /// (Envoy `vm_config.environment_variables`, Istio `vmConfig.env`).
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::HASH_KEY_ENV)))]
    pub hash_key_env: Option<String>,
    /// Query parameters recorded, by name; every other parameter is dropped. Default: none.
    #[serde(default)]
    pub query_params: Vec<String>,
    /// More parameter names whose values are masked even when allow-listed.
    #[serde(default)]
    pub sensitive_query_params: Vec<String>,
    /// Header, query and `;` parameter names that a credential word (`token`, `key`,
    /// `secret`…) would make sensitive but are not, e.g. `x-cache-key`. Listed names stay
    /// sensitive whatever this says.
    #[serde(default)]
    pub not_sensitive: Vec<String>,
    /// Replace secrets recognised by their shape (JWTs, key formats, long random tokens,
    /// IBANs, card numbers) with `{jwt}`, `{token}`, `{iban}`, `{card}` in recorded paths,
    /// parameter values and header values.
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::SECRET_SHAPES)))]
    pub secret_shapes: Option<bool>,
    /// The shortest hex or base64url run taken for a random token.
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::MIN_TOKEN_CHARS.default, "minimum" = defaults::MIN_TOKEN_CHARS.min, "maximum" = defaults::MIN_TOKEN_CHARS.max)))]
    pub min_token_chars: Option<WholeNumber>,
    /// Path segments that look like personal data, replaced by placeholders in recorded paths.
    pub path_placeholders: Option<RawPathPlaceholders>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawPathPlaceholders {
    /// Replace segments holding an e-mail address with `{email}`.
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::EMAIL_PLACEHOLDER)))]
    pub email: Option<bool>,
    /// Replace runs of at least this many digits (with `-`, `.`, `+`, `(`, `)` or spaces
    /// between them: card, phone, account numbers), anywhere in a path segment, parameter
    /// value or header value, with `{digits}` (`{card}` when Luhn-valid). `0` disables.
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::MIN_DIGITS.default, "minimum" = defaults::MIN_DIGITS.min, "maximum" = defaults::MIN_DIGITS.max)))]
    pub min_digits: Option<WholeNumber>,
    /// More segment patterns, each a glob over one segment (`*`, `?`) and its placeholder name.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = [])))]
    pub segments: Vec<RawSegmentPlaceholder>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawSegmentPlaceholder {
    /// Glob over one path segment, e.g. `user-*`.
    pub glob: String,
    /// Placeholder name, written as `{name}`: `[a-z0-9_]`, 1 to 32 bytes.
    pub placeholder: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(rename_all = "snake_case")]
pub enum RawRedact {
    /// Not recorded at all.
    Omit,
    /// Recorded as an auth scheme (if any) and a length: `Bearer [masked, 245 bytes]`.
    Mask,
    /// Recorded as a keyed pseudonym: `hmac-sha256:<32 hex>`, with the key's id in the record.
    Hash,
}

impl RawRedact {
    /// What a sensitive header a rule allow-lists becomes by default.
    pub const DEFAULT: RawRedact = RawRedact::Mask;
}

/// A header a rule records: a name, or `{"name": ..., "redact": ...}`.
#[derive(Debug)]
pub struct RawRecordedHeader {
    pub name: String,
    /// `omit`, `mask` or `hash`. Absent: clear for ordinary headers; the
    /// `sensitive_header_action` for sensitive ones (never clear).
    pub redact: Option<RawRedact>,
    pub url: bool,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RawRedactedHeader {
    name: String,
    redact: Option<RawRedact>,
    /// The value is a URL: recorded without userinfo, fragment and query (but for
    /// allow-listed parameters), its path redacted. Built in for `referer`, `origin`,
    /// `location`, `x-original-url` and `x-rewrite-url`.
    #[serde(default)]
    url: bool,
}

struct RecordedHeaderVisitor;

impl<'de> Visitor<'de> for RecordedHeaderVisitor {
    type Value = RawRecordedHeader;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a header name, or {\"name\": ..., \"redact\": \"omit\" | \"mask\" | \"hash\", \"url\": true}")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawRecordedHeader, E> {
        Ok(RawRecordedHeader {
            name: v.to_string(),
            redact: None,
            url: false,
        })
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawRecordedHeader, A::Error> {
        let h = RawRedactedHeader::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(RawRecordedHeader {
            name: h.name,
            redact: h.redact,
            url: h.url,
        })
    }
}

impl<'de> Deserialize<'de> for RawRecordedHeader {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RecordedHeaderVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Unique name, recorded as the reason a record was written: 1 to 64 of `a-z`, `0-9`,
    /// `-`, `_`, starting with a letter or digit (it becomes part of Envoy stat names).
    #[cfg_attr(feature = "schema", schemars(regex(pattern = defaults::RULE_NAME_PATTERN)))]
    pub name: String,
    /// What the request must look like; every given condition must hold. Absent: every request.
    #[serde(rename = "match", default)]
    pub matcher: RawMatch,
    /// `audit` (always record), `sample` (record a fraction `sample_rate`) or `drop` (never).
    pub action: RawAction,
    /// With `sample`: the fraction recorded, 0 to 1. Required with `sample`, refused otherwise.
    pub sample_rate: Option<f64>,
    /// `metadata`: no headers. `request`: also the headers in `request_headers`.
    #[cfg_attr(feature = "schema", schemars(extend("default" = RawLevel::DEFAULT)))]
    pub level: Option<RawLevel>,
    /// Records per second this rule may write (per worker), on top of the class budget.
    pub budget: Option<RawBudget>,
    /// With `audit`: whether its records share the security budget, as sensitive endpoints'
    /// do (`true`), or the routine budget (`false`), so that a flood of requests matching
    /// it (crafted ambiguous requests, say) cannot displace denials. A security outcome
    /// always uses the security budget.
    #[cfg_attr(feature = "schema", schemars(extend("default" = true)))]
    pub security_budget: Option<bool>,
    /// With `audit`: also write a `started` record when the request's headers pass the
    /// plugin, so that a long-lived stream (HTTP/2 or gRPC streaming, a WebSocket, a long
    /// download) is on the trail while it is open; its end record then says `started: true`.
    /// Refused on a rule that matches on the response status, or that comes after one that
    /// does: the status is not known when the request starts.
    #[serde(default)]
    pub record_start: bool,
    /// With level `request`: the request headers to record: lowercase names, or
    /// `{"name": ..., "redact": "omit" | "mask" | "hash"}`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(extend("default" = [])))]
    pub request_headers: Vec<RawRecordedHeader>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// Any of these path conditions, on the canonical path.
    #[serde(default)]
    pub paths: Vec<RawPathMatch>,
    /// Any of these methods (`GET`, `POST`…), compared without regard to case.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Any of these hosts (`:authority` without port): `api.example.com` or `*.example.com`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// All of these request header conditions.
    #[serde(default)]
    pub headers: Vec<RawHeaderMatch>,
    /// Any of these response statuses: a code (`404`), a class (`"5xx"`), or a gRPC call's
    /// status (`"grpc:PERMISSION_DENIED"`, `"grpc:7"`), which only a gRPC call has.
    #[serde(default)]
    pub status: Vec<RawStatus>,
    /// Any of these gRPC services (`/<service>/<method>` paths, whatever the content type):
    /// a full name such as `shop.v1.Admin`, or a prefix ending in `*` such as `shop.*`.
    #[serde(default)]
    pub grpc_services: Vec<String>,
    /// Any of these gRPC methods, as `<service>/<method>` (`shop.v1.Admin/DeleteUser`).
    #[serde(default)]
    pub grpc_methods: Vec<String>,
    /// `true`: the request means two things to different upstreams (its
    /// `request.ambiguities` is not empty); `false`: it does not.
    pub ambiguous: Option<bool>,
    /// Match paths without regard to ASCII case.
    #[cfg_attr(feature = "schema", schemars(extend("default" = defaults::CASE_INSENSITIVE)))]
    pub case_insensitive: Option<bool>,
    /// `true`: the connection is mTLS; `false`: it is not (plaintext or TLS without a client certificate).
    pub mtls: Option<bool>,
    /// Any of these caller principals (peer certificate URI SAN): exact, or ending in `*` for a prefix.
    #[serde(default)]
    pub principals: Vec<String>,
    /// Any of these caller namespaces (from the SPIFFE ID `spiffe://<td>/ns/<namespace>/sa/<sa>`).
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// One path condition: exactly one of `exact`, `prefix` or `glob`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RawPathMatch {
    /// The canonical path equals this.
    Exact(String),
    /// The canonical path starts with this (plain string prefix, as in Envoy routes).
    Prefix(String),
    /// `*` within a segment, `?` one character, `**` as a whole segment: any segments.
    Glob(String),
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RawHeaderMatch {
    /// Lowercase header name.
    pub name: String,
    /// `true`: the header is present; `false`: it is absent.
    pub present: Option<bool>,
    /// The header's value equals this exactly.
    pub equals: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum RawAction {
    Audit,
    Sample,
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(rename_all = "snake_case")]
pub enum RawLevel {
    Metadata,
    Request,
}

impl RawLevel {
    pub(crate) const DEFAULT: RawLevel = RawLevel::Metadata;
}

/// A response status condition: a code like `404`, a class like `"4xx"`, or a gRPC
/// status like `"grpc:PERMISSION_DENIED"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawStatus {
    Code(u64),
    Class(String),
}

/// A non-negative integer that also accepts whole doubles: Istio passes
/// `pluginConfig` as a protobuf Struct, so `100` arrives as `100.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WholeNumber(pub u64);

struct WholeNumberVisitor;

/// Largest double below which every whole number is exact.
const MAX_EXACT_DOUBLE: f64 = 9_007_199_254_740_992.0;

impl Visitor<'_> for WholeNumberVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a whole non-negative number")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v)
            .map_err(|_| E::custom(format!("expected a whole non-negative number, got {v}")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < MAX_EXACT_DOUBLE {
            // Checked just above: whole, non-negative and exactly representable.
            Ok(v as u64)
        } else {
            Err(E::custom(format!(
                "expected a whole non-negative number, got {v}"
            )))
        }
    }
}

impl<'de> Deserialize<'de> for WholeNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(WholeNumberVisitor)
            .map(WholeNumber)
    }
}

struct StatusVisitor;

impl Visitor<'_> for StatusVisitor {
    type Value = RawStatus;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a status code such as 404, a class such as \"5xx\" or a gRPC status such as \"grpc:PERMISSION_DENIED\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawStatus, E> {
        Ok(RawStatus::Code(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawStatus, E> {
        WholeNumberVisitor.visit_i64(v).map(RawStatus::Code)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawStatus, E> {
        WholeNumberVisitor.visit_f64(v).map(RawStatus::Code)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawStatus, E> {
        Ok(RawStatus::Class(v.to_string()))
    }
}

impl<'de> Deserialize<'de> for RawStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StatusVisitor)
    }
}

/// JSON Schema for the types with hand-written deserialisers (`meshaudit schema`).
#[cfg(feature = "schema")]
mod schema {
    use super::{RawRecordedHeader, RawStatus, WholeNumber};
    use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
    use std::borrow::Cow;

    impl JsonSchema for WholeNumber {
        fn schema_name() -> Cow<'static, str> {
            "WholeNumber".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "description": "A whole non-negative number; whole doubles such as 100.0 (Istio's encoding) are accepted.",
                "type": "number",
                "minimum": 0,
                "multipleOf": 1
            })
        }
    }

    impl JsonSchema for RawStatus {
        fn schema_name() -> Cow<'static, str> {
            "Status".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "description": "A response status code (100 to 599), class (\"1xx\" to \"5xx\"), or gRPC status (\"grpc:\" and a canonical name such as PERMISSION_DENIED, any case, or a code 0 to 16).",
                "oneOf": [
                    {"type": "number", "minimum": 100, "maximum": 599, "multipleOf": 1},
                    {"type": "string", "pattern": "^[1-5][xX][xX]$"},
                    {"type": "string", "pattern": "^grpc:([0-9]|1[0-6]|[A-Za-z_]+)$"}
                ]
            })
        }
    }

    impl JsonSchema for RawRecordedHeader {
        fn schema_name() -> Cow<'static, str> {
            "RecordedHeader".into()
        }
        fn json_schema(generator: &mut SchemaGenerator) -> Schema {
            let redact = generator.subschema_for::<super::RawRedact>();
            json_schema!({
                "description": "A request header to record: a lowercase name, or a name with how it is redacted and whether its value is a URL.",
                "oneOf": [
                    {"type": "string", "pattern": "^[a-z0-9!#$%&'*+.^_`|~-]+$"},
                    {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string", "pattern": "^[a-z0-9!#$%&'*+.^_`|~-]+$"},
                            "redact": redact,
                            "url": {
                                "type": "boolean",
                                "default": false,
                                "description": "The value is a URL: recorded without userinfo, fragment and query (but for allow-listed parameters), its path redacted. Built in for referer, origin, location, x-original-url and x-rewrite-url."
                            }
                        },
                        "required": ["name"],
                        "additionalProperties": false
                    }
                ]
            })
        }
    }
}
