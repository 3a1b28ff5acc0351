//! The per-request flow: decide at the end of the stream (`on_log`, which also
//! runs for local replies), and assemble the record only for requests that
//! will be recorded.
//!
//! Host calls on the routine path (a request that will not be recorded): two.
//! The request header map, once (path, method, host, the headers rules match
//! on, trace ids: one call costs less than two single reads), and `:status`
//! (is it a security outcome after all?). Everything else is read only for
//! requests that produce a record: the time, one batch of attributes, and the
//! caller's facts once per connection; a request the rules record whatever its
//! outcome takes its status from the batch rather than a read of its own.
//! Reading the request headers at the end, not when they pass, also sees the
//! trace context a tracer injects downstream of the plugin, which the next hop sees.

use super::batch::{fact, Facts, RECORD_FACTS, RECORD_FACTS_WITH_OUTCOME, SENSITIVE_RECORD_FACTS};
use super::decide::{
    classify, first_matching_rule, is_security_status, verdict, Kind, MatchInput, Reason,
};
use super::headers::HeaderMap;
use super::host::{decode_i64, Host};
use super::identity::{attr, jwt_failure_reason, Rbac};
use super::path::{canonicalize, split_query};
use super::record::{AccessRecord, Authn, Authz, RateLimitUsage, Why};
use super::redact::Redaction;
use super::sample::{self, b3_trace_id, traceparent, Rng, SampleKey};
use super::settings::{Action, Level, RecordedHeader, Settings, SubjectMode};
use super::volume::{caller_key, SuppressedKey};
pub use super::worker::Worker;

/// The request headers the flow reads, picked out in one pass over the map
/// (the first value of each, as Envoy keeps names lowercase).
#[derive(Debug, Default)]
struct KnownHeaders<'a> {
    method: Option<&'a [u8]>,
    path: Option<&'a [u8]>,
    authority: Option<&'a [u8]>,
    /// The headers clients use to tunnel a method through POST (rules match on
    /// them too), in order of precedence.
    method_overrides: [Option<&'a [u8]>; 3],
    request_id: Option<&'a [u8]>,
    traceparent: Option<&'a [u8]>,
    b3_trace_id: Option<&'a [u8]>,
    b3_single: Option<&'a [u8]>,
}

impl<'a> KnownHeaders<'a> {
    fn find(map: &'a HeaderMap) -> Self {
        let mut known = Self::default();
        for (name, value) in map.iter() {
            let slot = match name {
                b":method" => &mut known.method,
                b":path" => &mut known.path,
                b":authority" => &mut known.authority,
                b"x-http-method-override" => &mut known.method_overrides[0],
                b"x-http-method" => &mut known.method_overrides[1],
                b"x-method-override" => &mut known.method_overrides[2],
                b"x-request-id" => &mut known.request_id,
                b"traceparent" => &mut known.traceparent,
                b"x-b3-traceid" => &mut known.b3_trace_id,
                b"b3" => &mut known.b3_single,
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        known
    }

    fn method_override(&self) -> Option<&'a [u8]> {
        self.method_overrides.iter().find_map(|value| *value)
    }

    /// The B3 trace id, from `x-b3-traceid` or the single `b3` header.
    fn b3_trace_id(&self) -> Option<&'a [u8]> {
        self.b3_trace_id.or(self.b3_single).and_then(b3_trace_id)
    }
}

fn read_map(host: &impl Host) -> HeaderMap {
    HeaderMap::from_serialized(host.request_header_map().unwrap_or_default())
}

fn parse_status(bytes: &[u8]) -> Option<u16> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// `:status` from the response headers (`None` when no response was sent).
fn read_status(host: &impl Host) -> Option<u16> {
    host.response_header(":status")
        .as_deref()
        .and_then(parse_status)
}

/// Whether the outcome may be a security one, so the details (which name the filter
/// that answered) and RBAC's decision are worth reading.
fn likely_security(replied_before_plugin: bool, status: Option<u16>) -> bool {
    replied_before_plugin || status.is_some_and(is_security_status)
}

/// RBAC's decision, read only where the batch says RBAC left one (unknown counts as yes).
fn read_rbac_if_present(facts: &Facts, host: &impl Host) -> Rbac {
    match facts.present(fact::RBAC_PRESENT) {
        Some(false) => Rbac::default(),
        _ => Rbac::read(host),
    }
}

/// Decides at the end of a stream, and returns the record's JSON when one is due.
/// `headers_reached_plugin` is `false` when the request headers callback never
/// ran: a filter before the plugin answered with a local reply (RBAC,
/// jwt_authn, ext_authz…).
pub fn on_log(
    settings: &Settings,
    worker: &mut Worker,
    headers_reached_plugin: bool,
    host: &impl Host,
) -> Option<String> {
    worker.requests_seen += 1;
    let replied_before_plugin = !headers_reached_plugin;
    let map = read_map(host);
    let known = KnownHeaders::find(&map);
    let (method, authority) = (known.method, known.authority);
    let method_override = known.method_override();
    let match_headers: Vec<Option<&[u8]>> = settings
        .match_headers
        .iter()
        .map(|name| map.get(name))
        .collect();
    // Rules on the caller's identity need the connection's facts before deciding: one
    // attribute (the connection id) for a connection already known.
    let matched_connection = settings.match_needs_peer.then(|| {
        let id = host
            .property(&["connection", "id"])
            .as_deref()
            .and_then(decode_i64);
        worker
            .connections
            .facts(id.and_then(|id| u64::try_from(id).ok()), host)
    });
    // The status is read before matching only when a rule matches on it.
    let early_status = settings.match_needs_status.then(|| read_status(host));

    let (path, query) = split_query(known.path.unwrap_or_default());
    let canonical = canonicalize(path, settings.canonical);
    let matched_rule = first_matching_rule(
        settings,
        &MatchInput {
            canonical_path: &canonical,
            method,
            method_override,
            authority,
            match_headers: &match_headers,
            status: early_status.flatten().unwrap_or(0),
            peer: matched_connection.as_deref().map(|c| &c.peer),
        },
    );
    // Every request is counted against the rule that matched (or `_default`), whatever happens next.
    worker.tally(matched_rule, |c| c.requests += 1);
    // What the rules decide for an ordinary request; a security outcome can only raise it
    // to `audit`. `Some` when they record it (with the sampling key, if sampled in).
    let planned = verdict(settings, Kind::Access, matched_rule);
    let kept = match planned.action {
        Action::Drop => None,
        Action::Audit => Some(None),
        Action::Sample(rate) if rate >= 1.0 => Some(None),
        Action::Sample(rate) if rate > 0.0 => {
            let (key, draw) = sampling_draw(&known, &mut worker.rng);
            sample::keep(rate, draw).then_some(Some(key))
        }
        Action::Sample(_) => None,
    };
    // Sensitive: an `audit` rule decided, which no outcome changes.
    let sensitive = planned.reason == Reason::Rule && planned.action == Action::Audit;

    // The outcome before the record's facts, where it decides: for a request the rules
    // do not record, only a security outcome is, which the status and the details tell.
    let early = (kept.is_none() || early_status.is_some()).then(|| {
        let status = early_status.unwrap_or_else(|| read_status(host));
        let likely = likely_security(replied_before_plugin, status);
        let details = likely
            .then(|| host.property(&["response", "code_details"]))
            .flatten();
        let rbac = (settings.shadow_results || likely).then(|| Rbac::read(host));
        (status, likely, details, rbac)
    });
    if let (None, Some((status, _, details, rbac))) = (kept, &early) {
        let kind = classify(status.unwrap_or(0), details.as_deref(), rbac.as_ref());
        if verdict(settings, kind, matched_rule).action != Action::Audit {
            match planned.action {
                Action::Drop => worker.tally(matched_rule, |c| c.dropped += 1),
                _ => worker.tally(matched_rule, |c| c.sampled_out += 1),
            }
            return None;
        }
    }

    // Recorded unless a budget refuses: the budgets need the caller, so the record's facts
    // come first. Security events (and audit-rule requests, the sensitive endpoints) have
    // their own budget, which routine traffic cannot exhaust.
    let now = host.now_unix_nanos();
    // Most of what a record carries, in one host call (see `batch`); the caller's
    // identity once per connection (see `connection`).
    let facts = host.properties(match (&early, sensitive) {
        (None, _) => &RECORD_FACTS_WITH_OUTCOME,
        (Some(_), true) => &SENSITIVE_RECORD_FACTS,
        (Some(_), false) => &RECORD_FACTS,
    });
    let (status, code_details, mut rbac) = match &early {
        Some((status, likely, details, rbac)) => {
            let details = if *likely {
                details.as_deref()
            } else {
                facts.bytes(fact::CODE_DETAILS)
            };
            (*status, details, rbac.clone())
        }
        None => {
            let status = facts
                .int(fact::STATUS)
                .and_then(|code| u16::try_from(code).ok());
            let rbac = (settings.shadow_results
                || sensitive
                || likely_security(replied_before_plugin, status))
            .then(|| read_rbac_if_present(&facts, host));
            (status, facts.bytes(fact::CODE_DETAILS), rbac)
        }
    };
    // An audit rule marks a sensitive endpoint: record what RBAC decided even when it allowed.
    if rbac.is_none() && sensitive {
        rbac = Some(read_rbac_if_present(&facts, host));
    }
    let kind = classify(status.unwrap_or(0), code_details, rbac.as_ref());
    let verdict = verdict(settings, kind, matched_rule);
    let (action, sample_rate, sampled_by) = match verdict.action {
        Action::Audit => ("audit", 1.0, None),
        Action::Sample(rate) => ("sample", rate, kept.flatten()),
        // Not reached: the rules recorded this request, or a security outcome did (audit).
        Action::Drop => {
            worker.tally(matched_rule, |c| c.dropped += 1);
            return None;
        }
    };
    let security = kind.is_security_outcome() || sensitive;
    let connection_id = facts
        .int(fact::CONNECTION_ID)
        .and_then(|id| u64::try_from(id).ok());
    let connection = match matched_connection {
        Some(known) => known,
        None => worker.connections.facts(connection_id, host),
    };
    let (peer, source_address) = (&connection.peer, connection.source_address.as_deref());
    let caller = caller_key(peer.principal.as_deref(), source_address);
    if !worker.admit(verdict.rule, security, now) {
        worker.suppress(
            SuppressedKey {
                kind,
                rule: verdict.rule,
                caller: caller.to_vec(),
            },
            now,
        );
        return None;
    }
    worker.count_record(verdict.rule, kind);

    // From here on the request is recorded: read what the record carries.
    let rule = verdict.rule.and_then(|i| settings.rules.get(i));
    // A sensitive endpoint's record carries the caller's rate-limit position, from the
    // limiter's response headers (CEL cannot test a header's presence in Envoy 1.40).
    let limiter = if sensitive {
        LimiterHeaders::read(host)
    } else {
        LimiterHeaders::default()
    };
    let rate_limit = match (sensitive, verdict.rule) {
        (true, Some(index)) => {
            let (window_calls, evicted) = worker.callers.hit(index, caller, now);
            if evicted {
                worker.counters.caller_evictions += 1;
            }
            Some(RateLimitUsage {
                limit: limiter.limit.as_deref(),
                remaining: limiter.remaining.as_deref(),
                reset: limiter.reset.as_deref(),
                window_calls,
                window_seconds: settings.caller_window_seconds,
            })
        }
        _ => None,
    };
    let jwt_claims = match (&settings.jwt_payload_metadata_key, kind) {
        (Some(key), Kind::Access | Kind::ShadowDenied | Kind::ShadowAllowed | Kind::Denied) => {
            JwtClaims::read(host, key)
        }
        _ => None,
    };
    let response_flags = facts.int(fact::FLAGS);
    let duration = facts.duration_nanos(fact::DURATION);
    let traceparent = known.traceparent.and_then(traceparent);
    let b3 = known.b3_trace_id();

    let redaction = &settings.redaction;
    let (headers, mut hashed) = match (verdict.level, rule) {
        (Level::Request, Some(rule)) => recorded_headers(&map, &rule.request_headers, redaction),
        _ => (Vec::new(), false),
    };
    let recorded_query = query.and_then(|q| redaction.query(q));
    let recorded_path = redaction.path(path);
    let recorded_canonical = redaction.path(&canonical);
    let authz = authorization(kind, status, code_details, rbac.as_ref());
    let subject = jwt_claims
        .as_ref()
        .and_then(|claims| claims.subject.as_deref())
        .and_then(|subject| match settings.jwt_subject {
            SubjectMode::Omit => None,
            SubjectMode::Clear => Some(subject.to_vec()),
            SubjectMode::Hash => redaction.hash_key.as_ref().map(|key| {
                hashed = true;
                key.pseudonym(subject)
            }),
        });
    let authn = authentication(kind, code_details, jwt_claims.as_ref(), subject.as_deref());
    let seq = worker.next_seq();
    let record = AccessRecord {
        ts_unix_nanos: now,
        kind: Some(kind),
        instance: &worker.instance,
        stream: Some((&worker.stream, seq)),
        rate_limit,
        why: Some(Why {
            reason: verdict.reason,
            rule: rule.map(|r| r.name.as_str()),
            action,
            sample_rate,
            sampled_by,
        }),
        request_id: known.request_id,
        method,
        method_override,
        authority,
        path: Some(&recorded_path),
        query: recorded_query.as_deref(),
        query_removed: query.is_some() && recorded_query.is_none(),
        canonical_path: Some(&recorded_canonical),
        headers,
        pseudonym_key_id: hashed
            .then(|| redaction.hash_key.as_ref().map(|k| k.id.as_str()))
            .flatten(),
        status,
        code_details,
        response_flags: response_flags.and_then(|f| u64::try_from(f).ok()),
        replied_before_plugin,
        peer: Some(peer),
        authz,
        authn,
        trace_id: traceparent.map(|t| t.trace_id),
        span_id: traceparent.map(|t| t.span_id),
        b3_trace_id: b3,
        source_address,
        route_name: facts.bytes(fact::ROUTE_NAME),
        cluster_name: facts.bytes(fact::CLUSTER_NAME),
        duration_nanos: duration,
    };
    Some(record.encode(settings.max_field_bytes, settings.max_record_bytes))
}

/// A rate limiter's `x-ratelimit-*` response headers (Envoy's local and global rate
/// limit filters, draft 03 of the IETF RateLimit fields), which limiters send together.
#[derive(Debug, Default)]
struct LimiterHeaders {
    limit: Option<Vec<u8>>,
    remaining: Option<Vec<u8>>,
    reset: Option<Vec<u8>>,
}

impl LimiterHeaders {
    /// One read when no limiter answered, the usual case: a header that is absent
    /// costs Envoy no copy into the VM, unlike the whole response header map.
    fn read(host: &impl Host) -> Self {
        let Some(limit) = host.response_header("x-ratelimit-limit") else {
            return Self::default();
        };
        Self {
            limit: Some(limit),
            remaining: host.response_header("x-ratelimit-remaining"),
            reset: host.response_header("x-ratelimit-reset"),
        }
    }
}

/// Verified JWT claims, from jwt_authn's `payload_in_metadata`.
struct JwtClaims {
    issuer: Option<Vec<u8>>,
    subject: Option<Vec<u8>>,
}

impl JwtClaims {
    /// `None` without a verified payload: an `Authorization` header alone proves nothing.
    fn read(host: &impl Host, key: &str) -> Option<Self> {
        let claim = |name: &str| {
            host.property(&["metadata", "filter_metadata", attr::JWT_METADATA, key, name])
        };
        let issuer = claim("iss");
        let subject = claim("sub");
        (issuer.is_some() || subject.is_some()).then_some(Self { issuer, subject })
    }
}

/// What authorization decided, and which filter decided it.
fn authorization<'a>(
    kind: Kind,
    status: Option<u16>,
    code_details: Option<&'a [u8]>,
    rbac: Option<&'a Rbac>,
) -> Option<Authz<'a>> {
    let details = code_details.unwrap_or_default();
    let shadows = rbac.map(|r| r.shadows.as_slice()).unwrap_or_default();
    let enforced = rbac.and_then(|r| r.enforced.as_ref());
    let (decision, by, policy) = if details.starts_with(b"ext_authz_denied") {
        ("denied", "ext_authz", None)
    } else if details.starts_with(b"ext_authz_error") {
        ("error", "ext_authz", None)
    } else if let Some(engine) = enforced.filter(|e| e.result == b"denied") {
        (
            "denied",
            "rbac",
            engine
                .policy
                .as_deref()
                .or_else(|| rbac_policy_in_details(details)),
        )
    } else if details.starts_with(b"rbac_access_denied") {
        ("denied", "rbac", rbac_policy_in_details(details))
    } else if let Some(engine) = enforced {
        ("allowed", "rbac", engine.policy.as_deref())
    } else if kind == Kind::Denied {
        ("denied", "upstream", None)
    } else if shadows.is_empty() {
        return None;
    } else {
        ("allowed", "none", None)
    };
    Some(Authz {
        decision,
        by,
        policy,
        status: (by == "ext_authz").then_some(status).flatten(),
        shadows,
    })
}

/// The policy in `rbac_access_denied_matched_policy[<id>]` (Envoy writes it from its configuration).
fn rbac_policy_in_details(details: &[u8]) -> Option<&[u8]> {
    details
        .strip_prefix(b"rbac_access_denied_matched_policy[")?
        .strip_suffix(b"]")
        .filter(|id| !id.is_empty() && *id != b"none")
}

fn authentication<'a>(
    kind: Kind,
    code_details: Option<&'a [u8]>,
    claims: Option<&'a JwtClaims>,
    subject: Option<&'a [u8]>,
) -> Option<Authn<'a>> {
    if let Some(reason) = code_details.and_then(jwt_failure_reason) {
        return Some(Authn {
            method: "jwt",
            result: "failed",
            reason: Some(reason),
            issuer: None,
            subject: None,
        });
    }
    if kind == Kind::AuthFailure {
        return Some(Authn {
            method: "upstream",
            result: "failed",
            reason: None,
            issuer: None,
            subject: None,
        });
    }
    claims.map(|claims| Authn {
        method: "jwt",
        result: "ok",
        reason: None,
        issuer: claims.issuer.as_deref(),
        subject,
    })
}

/// The sampling draw: from the trace id when the request has one, so every hop agrees.
fn sampling_draw(known: &KnownHeaders, rng: &mut Rng) -> (SampleKey, u64) {
    if let Some(parent) = known.traceparent.and_then(traceparent) {
        return (SampleKey::TraceId, sample::hash_id(parent.trace_id));
    }
    if let Some(id) = known.b3_trace_id() {
        return (SampleKey::B3TraceId, sample::hash_id(id));
    }
    match known.request_id.filter(|id| !id.is_empty()) {
        Some(id) => (SampleKey::RequestId, sample::hash_id(id)),
        None => (SampleKey::Random, rng.next_u64()),
    }
}

/// The rule's allow-listed headers, repeated ones joined by `, `, each redacted as
/// configured; and whether any value is a keyed pseudonym.
fn recorded_headers<'a>(
    map: &HeaderMap,
    wanted: &'a [RecordedHeader],
    redaction: &Redaction,
) -> (Vec<(&'a str, Vec<u8>)>, bool) {
    let mut out = Vec::with_capacity(wanted.len());
    let mut hashed = false;
    for RecordedHeader { name, redact } in wanted {
        let mut joined: Option<Vec<u8>> = None;
        for value in map.get_all(name) {
            match &mut joined {
                Some(all) => {
                    all.extend_from_slice(b", ");
                    all.extend_from_slice(value);
                }
                None => joined = Some(value.to_vec()),
            }
        }
        if let Some(redacted) = joined.and_then(|value| redaction.header(name, *redact, value)) {
            hashed |= redacted.hashed;
            out.push((name.as_str(), redacted.value));
        }
    }
    (out, hashed)
}

#[cfg(test)]
mod tests;
