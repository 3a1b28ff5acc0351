//! Request records: one audited request (kinds `access`, `denied`, `auth_failure`, …).

use super::json::JsonWriter;
use super::{write_peer, write_source, Envelope, Kind, Reason, RecordKind};
use crate::core::envoy::flags;
use crate::core::envoy::grpc::{status_name, GrpcCall};
use crate::core::envoy::identity::Peer;
use crate::core::envoy::mesh::parse_istio_config;
use crate::core::envoy::rbac::{parse_istio_policy, EngineResult};
use crate::core::envoy::source::CallerAddress;
use crate::core::request::readings::OVERRIDE_SOURCES;
use crate::core::sample::SampleKey;
use crate::core::worker::callers::KeyedBy;

/// Field cap used when a record is still over its size cap after dropping headers.
const MIN_FIELD_BYTES: usize = 64;

/// Why a record was written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Why<'a> {
    pub reason: Reason,
    pub rule: Option<&'a str>,
    /// `audit` or `sample`.
    pub action: &'static str,
    pub sample_rate: f64,
    pub sampled_by: Option<SampleKey>,
}

/// The caller's rate-limit position on a sensitive endpoint (`rate_limit` in the record).
#[derive(Debug, Clone, Default)]
pub(crate) struct RateLimitUsage<'a> {
    pub limit: Option<&'a [u8]>,
    pub remaining: Option<&'a [u8]>,
    pub reset: Option<&'a [u8]>,
    /// The plugin's count of this caller's calls to the rule in the current window (per worker).
    pub window_calls: u64,
    pub window_seconds: u64,
}

/// What authorization decided (`authz` in the record).
#[derive(Debug, Clone)]
pub(crate) struct Authz<'a> {
    /// `allowed`, `denied` or `error`.
    pub decision: &'static str,
    /// `rbac`, `ext_authz`, `upstream` (a 403 from the application) or `none`.
    pub by: &'static str,
    /// On what grounds (see `Basis`).
    pub basis: Basis,
    /// The deciding policy; never an AUDIT (LOG) or dry-run policy.
    pub policy: Option<&'a [u8]>,
    /// ext_authz: the status sent downstream.
    pub status: Option<u16>,
    pub shadows: &'a [EngineResult],
    /// A mesh AUDIT policy matched (`Some`), and its id where Envoy's metadata still tells it.
    pub audit: Option<Option<&'a [u8]>>,
    /// The policy id Envoy's merged RBAC metadata holds when it cannot say whose it is
    /// (`Basis::AllowOrAuditPolicy`).
    pub unattributed_policy: Option<&'a [u8]>,
    /// Istio's CUSTOM action sent the request to the external authorizer.
    pub ext_authz: Option<ExtAuthzCheck<'a>>,
}

/// The grounds of an authorization decision (`authz.basis`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Basis {
    /// A DENY policy matched (named in `response.code_details`).
    DenyPolicy,
    /// ALLOW policies apply to the workload and none matched (`…matched_policy[none]`).
    NoAllowPolicyMatched,
    /// An ALLOW policy matched.
    AllowPolicy,
    /// No policy denied and no ALLOW policy applies to the workload.
    NoAllowPolicyApplies,
    /// Allowed, with a mesh AUDIT policy matched: the policy id Envoy kept is the ALLOW
    /// policy that matched, or the AUDIT policy's when no ALLOW policy applies. Envoy's
    /// RBAC filters share one metadata namespace and Istio sets no `rules_stat_prefix`
    /// that would tell them apart.
    AllowOrAuditPolicy,
    /// The external authorizer answered.
    ExtAuthz,
    /// The application answered 403.
    Upstream,
    /// Nothing enforced; only dry-run results or an AUDIT mark.
    NotEnforced,
    /// A connection the network RBAC filter let through: it leaves no trace of which
    /// policy allowed it.
    NotDenied,
}

impl Basis {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Basis::DenyPolicy => "deny_policy",
            Basis::NoAllowPolicyMatched => "no_allow_policy_matched",
            Basis::AllowPolicy => "allow_policy",
            Basis::NoAllowPolicyApplies => "no_allow_policy_applies",
            Basis::AllowOrAuditPolicy => "allow_or_audit_policy",
            Basis::ExtAuthz => "ext_authz",
            Basis::Upstream => "upstream",
            Basis::NotEnforced => "not_enforced",
            Basis::NotDenied => "not_denied",
        }
    }
}

/// Istio's CUSTOM action: the request went to the external authorizer (`authz.ext_authz`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExtAuthzCheck<'a> {
    /// The CUSTOM AuthorizationPolicy that selected it (`ns[…]-policy[…]-rule[…]`).
    pub policy: &'a [u8],
    /// The provider, where Istio names it in the policy (1.30 and later).
    pub provider: Option<&'a [u8]>,
    /// `allowed`, `denied` or `error`.
    pub answer: &'static str,
}

/// The readings of the request beyond its request line (`core::request::readings`).
#[derive(Debug, Default)]
pub(crate) struct RequestReadings<'a> {
    /// The methods each override names, in `OVERRIDE_SOURCES` order.
    pub method_overrides: &'a [Option<&'a [u8]>],
    /// Each routing header sent, and its path (redacted).
    pub routing: Vec<(&'static str, &'a [u8])>,
    /// `request.ambiguities`.
    pub ambiguities: Vec<&'static str>,
}

/// A gRPC call (`grpc` in the record).
#[derive(Debug, Clone, Default)]
pub(crate) struct GrpcFacts<'a> {
    /// From the canonical path, when it has the gRPC shape `/<service>/<method>`.
    pub call: Option<GrpcCall<'a>>,
    /// As Envoy derived it (see `envoy::grpc`); -1 when Envoy could not parse it.
    pub status: Option<i64>,
    /// `grpc-message`, at level `request` only, redacted like a request header.
    pub message: Option<Vec<u8>>,
}

/// What authentication concluded (`authn` in the record).
#[derive(Debug, Clone)]
pub(crate) struct Authn<'a> {
    /// `jwt` or `upstream` (a 401 from the application).
    pub method: &'static str,
    /// `ok` or `failed`.
    pub result: &'static str,
    /// jwt_authn's status name, e.g. `Jwt_is_expired`.
    pub reason: Option<&'a [u8]>,
    pub issuer: Option<&'a [u8]>,
    /// Already redacted as configured (pseudonym or clear); absent when omitted.
    pub subject: Option<&'a [u8]>,
}

/// One audited request. Byte fields are as Envoy gave them; encoding escapes and caps them.
#[derive(Debug, Default)]
pub(crate) struct AccessRecord<'a> {
    pub ts_unix_nanos: u64,
    pub kind: Option<Kind>,
    pub instance: &'a str,
    pub stream: Option<(&'a str, u64)>,
    pub config: Option<&'a str>,
    pub why: Option<Why<'a>>,
    /// The end of a request whose `started` record was written.
    pub started: bool,
    /// The readings beyond the request line the matched rule needed (`why.matched_on`).
    pub matched_on: &'a [&'static str],
    pub readings: RequestReadings<'a>,
    pub request_id: Option<&'a [u8]>,
    pub method: Option<&'a [u8]>,
    pub method_override: Option<&'a [u8]>,
    pub authority: Option<&'a [u8]>,
    /// The path as sent, with the query string removed and personal data replaced.
    pub path: Option<&'a [u8]>,
    /// The allow-listed query parameters, sensitive values masked.
    pub query: Option<&'a [u8]>,
    /// A query string was sent and nothing of it is recorded.
    pub query_removed: bool,
    pub canonical_path: Option<&'a [u8]>,
    /// Allow-listed request headers (level `request`), values already redacted.
    pub headers: Vec<(&'a str, Vec<u8>)>,
    /// The id of the HMAC key, when some value in the record is a keyed pseudonym.
    pub pseudonym_key_id: Option<&'a str>,
    pub status: Option<u16>,
    pub code_details: Option<&'a [u8]>,
    pub response_flags: Option<u64>,
    pub replied_before_plugin: bool,
    pub peer: Option<&'a Peer>,
    pub authz: Option<Authz<'a>>,
    pub authn: Option<Authn<'a>>,
    pub rate_limit: Option<RateLimitUsage<'a>>,
    pub grpc: Option<GrpcFacts<'a>>,
    pub trace_id: Option<&'a [u8]>,
    pub span_id: Option<&'a [u8]>,
    pub b3_trace_id: Option<&'a [u8]>,
    /// The caller's addresses, and what its key was made of.
    pub source: Option<(CallerAddress<'a>, KeyedBy)>,
    pub route_name: Option<&'a [u8]>,
    pub cluster_name: Option<&'a [u8]>,
    /// `inbound`, `outbound`, `gateway` or `waypoint` (see `envoy::mesh::direction`).
    pub direction: Option<&'static str>,
    /// The route's and the cluster's `filter_metadata.istio.config` (the VirtualService,
    /// the DestinationRule).
    pub route_config: Option<&'a [u8]>,
    pub cluster_config: Option<&'a [u8]>,
    pub duration_nanos: Option<i64>,
}

impl AccessRecord<'_> {
    /// One JSON line of at most `max_record_bytes`: over it, headers go first, then fields shrink.
    pub(crate) fn encode(&self, max_field_bytes: usize, max_record_bytes: usize) -> String {
        let full = self.encode_with(max_field_bytes, true, false);
        if full.len() <= max_record_bytes {
            return full;
        }
        let without_headers = self.encode_with(max_field_bytes, false, true);
        if without_headers.len() <= max_record_bytes {
            return without_headers;
        }
        // Escaping can make a capped field six times its bytes (`\u001e` for one): halve the
        // cap until the record fits. A record of no more than markers is far under the smallest
        // `max_record_bytes`, so this ends.
        let mut cap = MIN_FIELD_BYTES.min(max_field_bytes);
        loop {
            let record = self.encode_with(cap, false, true);
            if record.len() <= max_record_bytes || cap == 0 {
                return record;
            }
            cap /= 2;
        }
    }

    /// `response`: the status Envoy sent, its details and flags.
    fn write_response(&self, w: &mut JsonWriter, cap: usize) {
        w.object_field("response");
        if let Some(code) = self.status {
            w.u64_field("code", u64::from(code));
        }
        w.opt_bytes_field("code_details", self.code_details, cap);
        if let Some(bits) = self.response_flags.filter(|&b| b != 0) {
            w.array_field("flags");
            for name in flags::short_names(bits) {
                w.str_value(&name);
            }
            w.end_array();
        }
        if self.replied_before_plugin {
            w.bool_field("replied_before_plugin", true);
        }
        w.end_object();
    }

    fn encode_with(&self, cap: usize, with_headers: bool, truncated: bool) -> String {
        let mut w = JsonWriter::default();
        Envelope {
            ts_unix_nanos: self.ts_unix_nanos,
            kind: RecordKind::Event(self.kind.unwrap_or(Kind::Access)),
            instance: self.instance,
            stream: self.stream,
            config: self.config,
        }
        .begin(&mut w, cap);
        if let Some(why) = &self.why {
            w.object_field("why");
            w.str_field("reason", why.reason.as_str());
            w.opt_str_field("rule", why.rule);
            w.str_field("action", why.action);
            w.f64_field("sample_rate", why.sample_rate);
            w.opt_str_field("sampled_by", why.sampled_by.map(SampleKey::as_str));
            write_names(&mut w, "matched_on", self.matched_on);
            w.end_object();
        }
        if self.started {
            w.bool_field("started", true);
        }

        w.object_field("request");
        w.opt_bytes_field("id", self.request_id, cap);
        w.opt_bytes_field("method", self.method, cap);
        w.opt_bytes_field("method_override", self.method_override, cap);
        let overrides = &self.readings.method_overrides;
        if overrides.iter().flatten().count() > 1 {
            w.object_field("method_overrides");
            for (source, method) in OVERRIDE_SOURCES.iter().zip(overrides.iter()) {
                if let Some(method) = method {
                    w.name_key(source);
                    w.bytes_value(method, cap);
                }
            }
            w.end_object();
        }
        w.opt_bytes_field("authority", self.authority, cap);
        w.opt_bytes_field("path", self.path, cap);
        w.opt_bytes_field("query", self.query, cap);
        if self.query_removed {
            w.bool_field("query_removed", true);
        }
        w.opt_bytes_field("canonical_path", self.canonical_path, cap);
        if !self.readings.routing.is_empty() {
            w.object_field("routing");
            for (source, path) in &self.readings.routing {
                w.name_key(source);
                w.bytes_value(path, cap);
            }
            w.end_object();
        }
        write_names(&mut w, "ambiguities", &self.readings.ambiguities);
        if with_headers && !self.headers.is_empty() {
            w.object_field("headers");
            for (name, value) in &self.headers {
                w.name_key(name);
                w.bytes_value(value, cap);
            }
            w.end_object();
        }
        w.end_object();

        // A `started` record is written before any response.
        if self.kind != Some(Kind::Started) {
            self.write_response(&mut w, cap);
        }

        if let Some(peer) = self.peer {
            write_peer(&mut w, peer, cap);
        }
        if let Some(authz) = &self.authz {
            w.object_field("authz");
            w.str_field("decision", authz.decision);
            w.str_field("by", authz.by);
            w.str_field("basis", authz.basis.as_str());
            if let Some(policy) = authz.policy {
                write_policy(&mut w, policy, cap);
            }
            if let Some(status) = authz.status {
                w.u64_field("status", u64::from(status));
            }
            if let Some(id) = authz.unattributed_policy {
                w.bytes_field("unattributed_policy", id, cap);
            }
            if let Some(policy) = authz.audit {
                write_audit(&mut w, policy, cap);
            }
            if let Some(check) = &authz.ext_authz {
                w.object_field("ext_authz");
                w.str_field("answer", check.answer);
                w.opt_bytes_field("provider", check.provider, cap);
                write_policy(&mut w, check.policy, cap);
                w.end_object();
            }
            if !authz.shadows.is_empty() {
                w.array_field("shadow");
                for shadow in authz.shadows {
                    w.begin_object();
                    w.bytes_field("result", &shadow.result, cap);
                    if !shadow.prefix.is_empty() {
                        w.bytes_field("prefix", &shadow.prefix, cap);
                    }
                    if let Some(policy) = &shadow.policy {
                        write_policy(&mut w, policy, cap);
                    }
                    w.end_object();
                }
                w.end_array();
            }
            w.end_object();
        }
        if let Some(authn) = &self.authn {
            w.object_field("authn");
            w.str_field("method", authn.method);
            w.str_field("result", authn.result);
            w.opt_bytes_field("reason", authn.reason, cap);
            w.opt_bytes_field("issuer", authn.issuer, cap);
            w.opt_bytes_field("subject", authn.subject, cap);
            w.end_object();
        }
        if let Some(usage) = &self.rate_limit {
            w.object_field("rate_limit");
            w.opt_bytes_field("limit", usage.limit, cap);
            w.opt_bytes_field("remaining", usage.remaining, cap);
            w.opt_bytes_field("reset", usage.reset, cap);
            w.u64_field("window_calls", usage.window_calls);
            w.u64_field("window_seconds", usage.window_seconds);
            w.end_object();
        }
        if let Some(grpc) = &self.grpc {
            w.object_field("grpc");
            if let Some(call) = grpc.call {
                w.bytes_field("service", call.service, cap);
                w.bytes_field("method", call.method, cap);
            }
            if let Some(code) = grpc.status {
                w.object_field("status");
                w.i64_field("code", code);
                w.opt_str_field("name", status_name(code));
                w.end_object();
            }
            w.opt_bytes_field("message", grpc.message.as_deref(), cap);
            w.end_object();
        }
        if self.trace_id.is_some() || self.b3_trace_id.is_some() {
            w.object_field("trace");
            w.opt_bytes_field("trace_id", self.trace_id, cap);
            w.opt_bytes_field("span_id", self.span_id, cap);
            w.opt_bytes_field("b3_trace_id", self.b3_trace_id, cap);
            w.end_object();
        }
        if let Some((address, keyed_by)) = self.source {
            write_source(&mut w, address, Some(keyed_by), cap);
        }
        w.opt_str_field("direction", self.direction);
        if self.route_name.is_some()
            || self.cluster_name.is_some()
            || self.route_config.is_some()
            || self.cluster_config.is_some()
        {
            w.object_field("route");
            w.opt_bytes_field("name", self.route_name, cap);
            w.opt_bytes_field("cluster", self.cluster_name, cap);
            let route_object = ("virtual_service", "route_config");
            write_istio_object(
                &mut w,
                route_object,
                b"virtual-service",
                self.route_config,
                cap,
            );
            let cluster_object = ("destination_rule", "cluster_config");
            write_istio_object(
                &mut w,
                cluster_object,
                b"destination-rule",
                self.cluster_config,
                cap,
            );
            w.end_object();
        }
        if let Some(nanos) = self.duration_nanos.and_then(|n| u64::try_from(n).ok()) {
            w.u64_field("duration_ms", nanos / 1_000_000);
        }
        w.opt_str_field("pseudonym_key_id", self.pseudonym_key_id);
        if truncated {
            w.bool_field("truncated", true);
        }
        w.end_object();
        w.finish()
    }
}

/// `field: {namespace, name}` for the Istio object of `kind` that `config` names; any
/// other value as it is, in `raw_field`, rather than lost or misread.
fn write_istio_object(
    w: &mut JsonWriter,
    (field, raw_field): (&'static str, &'static str),
    kind: &[u8],
    config: Option<&[u8]>,
    cap: usize,
) {
    let Some(config) = config else {
        return;
    };
    match parse_istio_config(config) {
        Some(object) if object.kind == kind => {
            w.object_field(field);
            w.bytes_field("namespace", object.namespace, cap);
            w.bytes_field("name", object.name, cap);
            w.end_object();
        }
        _ => w.bytes_field(raw_field, config, cap),
    }
}

/// `key: [names…]`, when there is any.
fn write_names(w: &mut JsonWriter, key: &'static str, names: &[&'static str]) {
    if names.is_empty() {
        return;
    }
    w.array_field(key);
    for name in names {
        w.str_value(name);
    }
    w.end_array();
}

/// `audit`: a mesh AUDIT policy matched, and which, where known.
pub(super) fn write_audit(w: &mut JsonWriter, policy: Option<&[u8]>, cap: usize) {
    w.object_field("audit");
    w.bool_field("matched", true);
    if let Some(policy) = policy {
        write_policy(w, policy, cap);
    }
    w.end_object();
}

/// `policy`, and for Istio's naming also `policy_namespace`, `policy_name`, `policy_rule`.
pub(super) fn write_policy(w: &mut JsonWriter, policy: &[u8], cap: usize) {
    w.bytes_field("policy", policy, cap);
    if let Some(istio) = parse_istio_policy(policy) {
        w.bytes_field("policy_namespace", istio.namespace, cap);
        w.bytes_field("policy_name", istio.name, cap);
        w.u64_field("policy_rule", u64::from(istio.rule));
    }
}
