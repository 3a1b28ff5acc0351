//! One HTTP stream, decided at its end (`on_log`, which also runs for local
//! replies), with the record assembled only for requests that will be recorded.
//!
//! The steps, in order: read the request (`inputs`), match the rules (`rules`),
//! plan what the rules want (`Plan`), read the outcome where it decides
//! (`outcome::EarlyOutcome`), read the record's facts in one batch and settle the
//! outcome (`Settled`), admit the record against its budgets, then assemble it.
//!
//! Host calls on the routine path (a request that will not be recorded): three.
//! The request header map, once (path, method, host, content type, the headers rules
//! match on, trace ids: one call costs less than two single reads), `:status` (is it
//! a security outcome after all?) and the mesh AUDIT mark (did an AUDIT policy
//! match it?): two single reads cost Envoy less than one batch of both
//! (bench/README.md). A gRPC call (by its content type) makes a fourth, its gRPC
//! status, wherever its status is needed: gRPC answers a refusal with HTTP 200.
//! Everything else is read only for
//! requests that produce a record: the time, one batch of attributes, and the
//! caller's facts once per connection; a request the rules record whatever its
//! outcome takes its status from the batch rather than a read of its own.
//! Reading the request headers at the end, not when they pass, also sees the
//! trace context a tracer injects downstream of the plugin, which the next hop sees.

// The rules' analysis and `explain` serve the native command, not the module.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod analysis;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod explain;
mod inputs;
mod outcome;
pub(crate) mod readings;
mod rules;
mod start;
#[cfg(test)]
mod tests;

use crate::core::config::{Action, Level, Settings, SubjectMode};
use crate::core::envoy::attributes::{
    decode_i64, Decoded, OutcomeRecordFacts, RecordFacts, SensitiveRecordFacts, CONNECTION_ID,
    GRPC_MESSAGE,
};
use crate::core::envoy::connection::ConnectionFacts;
use crate::core::envoy::grpc::{self, GrpcCall};
use crate::core::envoy::headers::HeaderMap;
use crate::core::envoy::host::Host;
use crate::core::envoy::identity::{JwtClaims, Peer};
use crate::core::envoy::mesh::direction;
use crate::core::envoy::rbac::Rbac;
use crate::core::envoy::response::LimiterHeaders;
use crate::core::envoy::source::CallerAddress;
use crate::core::path::{canonicalize, split_query};
use crate::core::record::access::{AccessRecord, GrpcFacts, RateLimitUsage, RequestReadings, Why};
use crate::core::record::{Kind, Reason};
use crate::core::sample::{self, traceparent, SampleKey};
use crate::core::worker::callers::{caller_key, KeyedBy};
use crate::core::worker::suppress::SuppressedKey;
use crate::core::worker::Worker;
use inputs::{recorded_headers, sampling_draw, KnownHeaders};
use outcome::{
    authentication, authorization, classify, likely_security, status_code, EarlyOutcome, Ending,
    Statuses,
};
use readings::{Ambiguities, Readings};
use rules::{first_matching_rule, matched_on, verdict, MatchInput, Verdict};
pub use start::on_request_start;
use std::borrow::Cow;
use std::rc::Rc;

/// What the plugin saw of a stream before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The request headers never reached the plugin: a filter before it answered with a
    /// local reply (RBAC, jwt_authn, ext_authz…).
    LocalReply,
    /// The request headers passed the plugin.
    Headers,
    /// They passed, and the request's `started` record was written (`on_request_start`).
    Started,
}

/// Decides at the end of a stream, and returns the record's JSON when one is due.
pub fn on_log(
    settings: &Settings,
    worker: &mut Worker,
    seen: Seen,
    host: &impl Host,
) -> Option<String> {
    worker.requests_seen += 1;
    let replied_before_plugin = seen == Seen::LocalReply;
    let map = HeaderMap::from_serialized(host.request_header_map().unwrap_or_default());
    let request = Parsed::of(settings, &map);
    let readings = request.readings(settings);
    let (known, path, query, canonical) = (
        &request.known,
        request.path,
        request.query,
        &request.canonical,
    );
    let is_grpc = known.is_grpc();

    // Rules on the caller's identity need the connection's facts before deciding: one
    // attribute (the connection id) for a connection already known.
    let connection_for_rules = settings
        .reads
        .peer
        .then(|| connection_of_stream(worker, host));
    // The status is read before matching only when a rule matches on it.
    let ending_for_rules = settings
        .reads
        .status
        .then(|| Ending::read(settings, is_grpc, host));
    let input = request.match_input(
        &readings,
        ending_for_rules.map(|e| e.statuses).unwrap_or_default(),
        connection_for_rules.as_deref().map(|c| &c.peer),
    );
    let rule = first_matching_rule(settings, &input);
    let matched_rule = rule.and_then(|i| settings.rules.get(i));
    // Every request is counted against the rule that matched (or `_default`), whatever happens next.
    worker.tally(rule, |c| c.requests += 1);
    let plan = Plan::new(settings, rule, known, worker);

    // The outcome before the record's facts, where it decides: for a request the rules
    // do not record, only a security outcome is, which the status and the details tell.
    let early =
        (matches!(plan.keep, Keep::UnlessSecurity(_)) || ending_for_rules.is_some()).then(|| {
            EarlyOutcome::read(
                settings,
                replied_before_plugin,
                is_grpc,
                ending_for_rules,
                host,
            )
        });
    if let (Keep::UnlessSecurity(unrecorded), Some(early)) = (plan.keep, &early) {
        if verdict(settings, early.kind(), rule, early.audit_hint).action != Action::Audit {
            unrecorded.count(worker, rule);
            return None;
        }
    }

    // Recorded unless a budget refuses: the budgets need the caller, so the record's facts
    // come first. Security events (and audit-rule requests, the sensitive endpoints) have
    // their own budget, which routine traffic cannot exhaust.
    let now = host.now_unix_nanos();
    let answer;
    let settled = match early {
        Some(early) if plan.sensitive => {
            answer = host.properties(SensitiveRecordFacts::BATCH);
            Settled::after_early_sensitive(early, answer.decode(), host)
        }
        Some(early) => {
            answer = host.properties(RecordFacts::BATCH);
            Settled::after_early(early, answer.decode())
        }
        None => {
            answer = host.properties(OutcomeRecordFacts::BATCH);
            Settled::from_batch(
                settings,
                &plan,
                replied_before_plugin,
                is_grpc,
                answer.decode(),
                host,
            )
        }
    };
    let kind = settled.kind();
    let verdict = verdict(settings, kind, rule, settled.audit_hint);
    let Some(why) = plan.why(&verdict) else {
        // Not reached: the rules recorded this request, or a security outcome did (audit).
        worker.tally(rule, |c| c.dropped += 1);
        return None;
    };

    let connection_id = non_negative(settled.facts.connection_id);
    let connection = match &connection_for_rules {
        Some(known) => Rc::clone(known),
        None => worker.connections.facts(connection_id, host),
    };
    // What a mesh AUDIT policy marked is as sensitive as an `audit` rule's endpoint, unless
    // the rule put its records in the routine class.
    let rule_is_security = matched_rule.is_none_or(|r| r.security_budget);
    let security =
        kind.is_security_outcome() || (plan.sensitive && rule_is_security) || settled.audit_hint;
    let handed_off = connection_id.and_then(|id| host.connection_peer(id));
    let address = CallerAddress::new(settled.facts.source_address, handed_off.as_deref());
    let (caller, keyed_by) = caller_key(
        connection.peer.principal.as_deref(),
        address,
        settings.trust_forwarded_address,
        connection_id,
    );
    if !admit(worker, &verdict, kind, security, &caller, now) {
        return None;
    }

    // From here on the request is recorded: read what the record carries.
    let recorded = Recorded {
        settings,
        verdict: &verdict,
        why,
        kind,
        sensitive: plan.sensitive,
        replied_before_plugin,
        started: seen == Seen::Started,
        now,
        map: &map,
        known,
        readings: &readings,
        matched_on: matched_rule
            .map(|r| matched_on(&r.matcher, &input))
            .unwrap_or_default(),
        caller: &caller,
        address,
        keyed_by,
        path,
        query,
        canonical,
        grpc_call: is_grpc.then_some(input.grpc_call),
    };
    Some(recorded.assemble(worker, host, &settled, &connection))
}

/// The caller's facts for the rules: the connection id, then the facts it names.
fn connection_of_stream(worker: &mut Worker, host: &impl Host) -> Rc<ConnectionFacts> {
    let id = host.property(CONNECTION_ID).as_deref().and_then(decode_i64);
    worker.connections.facts(non_negative(id), host)
}

/// Envoy's integers are signed; ids and flags are not.
fn non_negative(value: Option<i64>) -> Option<u64> {
    value.and_then(|v| u64::try_from(v).ok())
}

/// What the rules want of a request before its outcome is known.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// An `audit` rule matched: a sensitive endpoint, recorded whatever the outcome.
    sensitive: bool,
    keep: Keep,
}

#[derive(Debug, Clone, Copy)]
enum Keep {
    /// The rules record it whatever its outcome; with the key of the sampling draw
    /// that kept it, if one did.
    Recorded(Option<SampleKey>),
    /// The rules would not record it: only a security outcome can.
    UnlessSecurity(Unrecorded),
}

/// How a request the rules do not record is counted.
#[derive(Debug, Clone, Copy)]
enum Unrecorded {
    Dropped,
    SampledOut,
}

impl Unrecorded {
    fn count(self, worker: &mut Worker, rule: Option<usize>) {
        match self {
            Unrecorded::Dropped => worker.tally(rule, |c| c.dropped += 1),
            Unrecorded::SampledOut => worker.tally(rule, |c| c.sampled_out += 1),
        }
    }
}

impl Plan {
    /// What the rules decide for an ordinary request (a security outcome can only
    /// raise it to `audit`), with the sampling draw where it is needed.
    fn new(
        settings: &Settings,
        rule: Option<usize>,
        known: &KnownHeaders,
        worker: &mut Worker,
    ) -> Self {
        let planned = verdict(settings, Kind::Access, rule, false);
        let keep = match planned.action {
            Action::Drop => Keep::UnlessSecurity(Unrecorded::Dropped),
            Action::Audit => Keep::Recorded(None),
            Action::Sample(rate) if rate >= 1.0 => Keep::Recorded(None),
            Action::Sample(rate) if rate > 0.0 => {
                let (key, draw) = sampling_draw(known, &mut worker.rng);
                if sample::keep(rate, draw) {
                    Keep::Recorded(Some(key))
                } else {
                    Keep::UnlessSecurity(Unrecorded::SampledOut)
                }
            }
            Action::Sample(_) => Keep::UnlessSecurity(Unrecorded::SampledOut),
        };
        Self {
            // An `audit` rule decided, which no outcome changes.
            sensitive: planned.reason == Reason::Rule && planned.action == Action::Audit,
            keep,
        }
    }

    /// Why the record is written (its rule's name is filled in when it is assembled);
    /// `None` if the verdict is to drop it after all.
    fn why(&self, verdict: &Verdict) -> Option<Why<'static>> {
        let (action, sample_rate, sampled_by) = match verdict.action {
            Action::Audit => ("audit", 1.0, None),
            Action::Sample(rate) => match self.keep {
                Keep::Recorded(key) => ("sample", rate, key),
                Keep::UnlessSecurity(_) => ("sample", rate, None),
            },
            Action::Drop => return None,
        };
        Some(Why {
            reason: verdict.reason,
            rule: None,
            action,
            sample_rate,
            sampled_by,
        })
    }
}

/// The outcome once the record's batch is read, and the batch's facts.
struct Settled<'a> {
    statuses: Statuses,
    /// A mesh AUDIT policy matched (and the configuration heeds them).
    audit_hint: bool,
    code_details: Option<&'a [u8]>,
    rbac: Option<Rbac>,
    facts: RecordFacts<'a>,
    /// Details read before the batch, which `code_details` may borrow.
    early_details: Option<Vec<u8>>,
}

impl<'a> Settled<'a> {
    /// The outcome was read early; the details too if it looked like a security one.
    fn after_early(early: EarlyOutcome, facts: RecordFacts<'a>) -> Self {
        Self {
            statuses: early.statuses,
            audit_hint: early.audit_hint,
            code_details: (!early.likely_security)
                .then_some(facts.code_details)
                .flatten(),
            rbac: early.rbac,
            facts,
            early_details: early
                .likely_security
                .then_some(early.code_details)
                .flatten(),
        }
    }

    /// A sensitive endpoint's record says what RBAC decided even when it allowed:
    /// read only where the batch says RBAC left a decision.
    fn after_early_sensitive(
        early: EarlyOutcome,
        facts: SensitiveRecordFacts<'a>,
        host: &impl Host,
    ) -> Self {
        let mut settled = Self::after_early(early, facts.record);
        if settled.rbac.is_none() {
            settled.rbac = Some(read_rbac_if_present(facts.rbac_present, host));
        }
        settled
    }

    /// The HTTP status came with the batch; a gRPC call's gRPC status is one read more.
    fn from_batch(
        settings: &Settings,
        plan: &Plan,
        replied_before_plugin: bool,
        is_grpc: bool,
        facts: OutcomeRecordFacts<'a>,
        host: &impl Host,
    ) -> Self {
        let statuses = Statuses {
            http: status_code(facts.status),
            grpc: Statuses::read_grpc(is_grpc, host),
        };
        let audit_hint = settings.heeds_audit_mark(facts.audit_hint);
        let rbac = (settings.shadow_results
            || plan.sensitive
            || audit_hint
            || likely_security(replied_before_plugin, statuses))
        .then(|| read_rbac_if_present(facts.rbac_present, host));
        Self {
            statuses,
            audit_hint,
            code_details: facts.record.code_details,
            rbac,
            facts: facts.record,
            early_details: None,
        }
    }

    fn code_details(&self) -> Option<&[u8]> {
        self.early_details.as_deref().or(self.code_details)
    }

    fn kind(&self) -> Kind {
        classify(self.statuses, self.code_details(), self.rbac.as_ref())
    }
}

/// RBAC's decision, read only where the batch says RBAC left one (unknown counts as yes).
fn read_rbac_if_present(present: Option<bool>, host: &impl Host) -> Rbac {
    match present {
        Some(false) => Rbac::default(),
        _ => Rbac::read(host),
    }
}

/// Whether the budgets let the record through; what they refuse is aggregated by caller.
fn admit(
    worker: &mut Worker,
    verdict: &Verdict,
    kind: Kind,
    security: bool,
    caller: &[u8],
    now: u64,
) -> bool {
    if !worker.admit(verdict.rule, security, now) {
        worker.suppress(
            SuppressedKey {
                kind,
                rule: verdict.rule,
                caller: caller.to_vec(),
            },
            now,
        );
        return false;
    }
    worker.count_record(verdict.rule, kind);
    true
}

/// A request that is recorded: what the decision says of it.
struct Recorded<'s> {
    settings: &'s Settings,
    verdict: &'s Verdict,
    /// `rule` is filled in from `verdict` when assembled.
    why: Why<'s>,
    kind: Kind,
    sensitive: bool,
    replied_before_plugin: bool,
    /// The request's `started` record was written.
    started: bool,
    now: u64,
    map: &'s HeaderMap,
    known: &'s KnownHeaders<'s>,
    readings: &'s Readings<'s>,
    /// The readings beyond the request line the rule needed (`why.matched_on`).
    matched_on: Vec<&'static str>,
    /// The caller as the budgets and the per-caller counts key it, and by what.
    caller: &'s [u8],
    address: CallerAddress<'s>,
    keyed_by: KeyedBy,
    /// The path as sent, without its query string.
    path: &'s [u8],
    query: Option<&'s [u8]>,
    canonical: &'s [u8],
    /// A gRPC call (by its content type), and its service and method if its path has them.
    grpc_call: Option<Option<GrpcCall<'s>>>,
}

impl Recorded<'_> {
    /// Reads what only a record needs (rate-limit headers, JWT claims) and encodes the record.
    fn assemble(
        &self,
        worker: &mut Worker,
        host: &impl Host,
        settled: &Settled,
        connection: &ConnectionFacts,
    ) -> String {
        let (settings, known, query) = (self.settings, self.known, self.query);
        let kind = self.kind;
        let rule = self.verdict.rule.and_then(|i| settings.rules.get(i));
        // A sensitive endpoint's record carries the caller's rate-limit position, from the
        // limiter's response headers (CEL cannot test a header's presence in Envoy 1.40).
        let limiter = if self.sensitive {
            LimiterHeaders::read(host)
        } else {
            LimiterHeaders::default()
        };
        let rate_limit = match (self.sensitive, self.verdict.rule) {
            (true, Some(index)) => {
                let (window_calls, evicted) = worker.callers.hit(index, self.caller, self.now);
                if evicted {
                    worker.counters.worker.caller_evictions += 1;
                }
                Some(RateLimitUsage {
                    limit: limiter.limit.as_deref(),
                    remaining: limiter.remaining.as_deref(),
                    reset: limiter.reset.as_deref(),
                    window_calls,
                    window_seconds: settings.rate_limit.window_seconds,
                })
            }
            _ => None,
        };
        let jwt_claims = match (&settings.jwt.payload_metadata_key, kind) {
            (Some(key), Kind::Access | Kind::ShadowDenied | Kind::ShadowAllowed | Kind::Denied) => {
                JwtClaims::read(host, key)
            }
            _ => None,
        };
        let redaction = &settings.redaction;
        let (headers, mut hashed) = match (self.verdict.level, rule) {
            (Level::Request, Some(rule)) => {
                recorded_headers(self.map, &rule.request_headers, redaction)
            }
            _ => (Vec::new(), false),
        };
        let line = RecordedLine::new(settings, self.path, query, self.canonical, self.readings);
        let code_details = settled.code_details();
        let authz = authorization(
            kind,
            settled.statuses.http,
            code_details,
            settled.rbac.as_ref(),
            settled.audit_hint,
        );
        let subject = jwt_claims
            .as_ref()
            .and_then(|claims| claims.subject.as_deref())
            .and_then(|subject| match settings.jwt.subject {
                SubjectMode::Omit => None,
                SubjectMode::Clear => Some(subject.to_vec()),
                SubjectMode::Hash => redaction.hash_key.as_ref().map(|key| {
                    hashed = true;
                    key.pseudonym(subject)
                }),
            });
        let authn = authentication(kind, code_details, jwt_claims.as_ref(), subject.as_deref());
        let grpc = self.grpc_call.map(|call| {
            // The message can carry user data: only at level `request`, redacted like a header.
            let message = (self.verdict.level == Level::Request)
                .then(|| grpc::read_message(host))
                .flatten()
                .and_then(|message| redaction.header(GRPC_MESSAGE, None, false, message))
                .map(|redacted| {
                    hashed |= redacted.hashed;
                    redacted.value
                });
            GrpcFacts {
                call,
                status: settled.statuses.grpc,
                message,
            }
        });
        let seq = worker.next_seq();
        let record = AccessRecord {
            ts_unix_nanos: self.now,
            kind: Some(kind),
            instance: &worker.instance,
            stream: Some((&worker.stream, seq)),
            config: Some(&worker.config_digest),
            rate_limit,
            grpc,
            why: Some(Why {
                rule: rule.map(|r| r.name.as_str()),
                ..self.why
            }),
            started: self.started,
            matched_on: &self.matched_on,
            headers,
            pseudonym_key_id: hashed
                .then(|| redaction.hash_key.as_ref().map(|k| k.id.as_str()))
                .flatten(),
            status: settled.statuses.http,
            code_details,
            response_flags: non_negative(settled.facts.flags),
            replied_before_plugin: self.replied_before_plugin,
            peer: Some(&connection.peer),
            authz,
            authn,
            source: Some((self.address, self.keyed_by)),
            route_name: settled.facts.route_name,
            cluster_name: settled.facts.cluster_name,
            direction: direction(worker.proxy, settled.facts.listener_direction),
            route_config: settled.facts.route_config,
            cluster_config: settled.facts.cluster_config,
            duration_nanos: settled.facts.duration,
            ..line.record(known, self.readings)
        };
        record.encode(
            settings.limits.max_field_bytes,
            settings.limits.max_record_bytes,
        )
    }
}

/// A request as its header map gives it, with what the rules match on.
struct Parsed<'m> {
    known: KnownHeaders<'m>,
    /// The path as sent, without its query string.
    path: &'m [u8],
    query: Option<&'m [u8]>,
    canonical: Cow<'m, [u8]>,
    /// Values of `RuleReads::headers`, in that order.
    match_headers: Vec<Option<&'m [u8]>>,
}

impl<'m> Parsed<'m> {
    fn of(settings: &Settings, map: &'m HeaderMap) -> Self {
        let known = KnownHeaders::find(map);
        let (path, query) = split_query(known.path.unwrap_or_default());
        Self {
            canonical: canonicalize(path, settings.canonical),
            match_headers: settings
                .reads
                .headers
                .iter()
                .map(|name| map.get(name))
                .collect(),
            known,
            path,
            query,
        }
    }

    fn readings(&self, settings: &Settings) -> Readings<'m> {
        Readings::of(
            &self.known,
            (self.path, self.query),
            &self.canonical,
            settings.canonical,
            settings.reads.ambiguity,
        )
    }

    fn match_input<'a>(
        &'a self,
        readings: &'a Readings<'m>,
        statuses: Statuses,
        peer: Option<&'a Peer>,
    ) -> MatchInput<'a> {
        MatchInput {
            canonical_path: &self.canonical,
            method: self.known.method,
            method_overrides: &readings.method_overrides,
            routing_paths: &readings.routing_paths,
            ambiguities: readings.ambiguities,
            authority: self.known.authority,
            match_headers: &self.match_headers,
            statuses,
            grpc_call: GrpcCall::from_path(&self.canonical),
            peer,
        }
    }
}

/// The request line as a record carries it, redacted: the path, the allow-listed query, the
/// canonical path and the paths routing headers name; and all of the request's ambiguities.
struct RecordedLine<'a> {
    path: Cow<'a, [u8]>,
    query: Option<Vec<u8>>,
    /// A query string was sent and nothing of it is recorded.
    query_removed: bool,
    canonical: Cow<'a, [u8]>,
    /// A routing header's path only: its query can carry what the query would.
    routing: Vec<(&'static str, Cow<'a, [u8]>)>,
    /// The path's included, where the rules did not need them worked out already.
    ambiguities: Ambiguities,
}

impl<'a> RecordedLine<'a> {
    fn new(
        settings: &Settings,
        path: &'a [u8],
        query: Option<&[u8]>,
        canonical: &'a [u8],
        readings: &'a Readings,
    ) -> Self {
        let redaction = &settings.redaction;
        let recorded_path = redaction.path(path);
        let recorded_query = query.and_then(|q| redaction.query(q));
        Self {
            // Most paths are their own canonical form: redacted once.
            canonical: if canonical == path {
                recorded_path.clone()
            } else {
                redaction.path(canonical)
            },
            path: recorded_path,
            query_removed: query.is_some() && recorded_query.is_none(),
            query: recorded_query,
            routing: readings
                .routing_paths
                .iter()
                .map(|r| (r.source, redaction.path(split_query(r.sent).0)))
                .collect(),
            ambiguities: if settings.reads.ambiguity {
                readings.ambiguities
            } else {
                readings.ambiguities.with_path(path)
            },
        }
    }

    /// A record's request members, which every request record carries alike: this line,
    /// the ids and trace context of the request's headers, its readings.
    fn record<'r>(&'r self, known: &'r KnownHeaders, readings: &'r Readings) -> AccessRecord<'r> {
        let traceparent = known.traceparent.and_then(traceparent);
        AccessRecord {
            readings: RequestReadings {
                method_overrides: &readings.method_overrides,
                routing: self
                    .routing
                    .iter()
                    .map(|(source, path)| (*source, &**path))
                    .collect(),
                ambiguities: self.ambiguities.codes().collect(),
            },
            request_id: known.request_id,
            method: known.method,
            method_override: readings.method_overrides.iter().find_map(|m| *m),
            authority: known.authority,
            path: Some(&self.path),
            query: self.query.as_deref(),
            query_removed: self.query_removed,
            canonical_path: Some(&self.canonical),
            trace_id: traceparent.map(|t| t.trace_id),
            span_id: traceparent.map(|t| t.span_id),
            b3_trace_id: known.b3_trace_id(),
            ..AccessRecord::default()
        }
    }
}
