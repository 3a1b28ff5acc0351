//! A request's start: the `started` record of an `audit` rule with `record_start`, written
//! when the request headers pass the plugin, so that a long-lived stream (HTTP/2 or gRPC
//! streaming, a WebSocket, a long download) is on the trail while it is open, and even if
//! the proxy dies before it ends. It says what is known then: the caller, the request, the
//! route. The request's end is decided and recorded as any other (`on_log`), and says
//! `started: true`.
//!
//! While no rule records starts, the filter does not call this. When one does, every
//! request costs what matching needs at its start: the request header map, and the
//! connection's facts where a rule matches on the caller. A request that matches a
//! `record_start` rule then reads the time and one batch (`StartFacts`).

use super::inputs::recorded_headers;
use super::outcome::Statuses;
use super::rules::{first_matching_rule, matched_on};
use super::{connection_of_stream, non_negative, Parsed, RecordedLine};
use crate::core::config::{Level, Settings};
use crate::core::envoy::attributes::{Decoded, StartFacts};
use crate::core::envoy::headers::HeaderMap;
use crate::core::envoy::host::Host;
use crate::core::envoy::mesh::direction;
use crate::core::envoy::source::CallerAddress;
use crate::core::record::access::{AccessRecord, Why};
use crate::core::record::{Kind, Reason};
use crate::core::worker::callers::caller_key;
use crate::core::worker::Worker;
use std::rc::Rc;

/// The `started` record's JSON, when the request headers that just passed match a rule
/// that records starts and its budgets let the record through (a refusal is counted,
/// `started_suppressed`).
pub fn on_request_start(
    settings: &Settings,
    worker: &mut Worker,
    host: &impl Host,
) -> Option<String> {
    if !settings.reads.start {
        return None;
    }
    // A worker whose first request is still open has served traffic: its next report
    // must account for the `started` record.
    worker.requests_seen += 1;
    let map = HeaderMap::from_serialized(host.request_header_map().unwrap_or_default());
    let request = Parsed::of(settings, &map);
    let readings = request.readings(settings);
    let connection_for_rules = settings
        .reads
        .peer
        .then(|| connection_of_stream(worker, host));
    let input = request.match_input(
        &readings,
        // No rule up to one that records starts matches on the status (configuration).
        Statuses::default(),
        connection_for_rules.as_deref().map(|c| &c.peer),
    );
    let index = first_matching_rule(settings, &input)?;
    let rule = settings.rules.get(index).filter(|rule| rule.record_start)?;

    let now = host.now_unix_nanos();
    let answer = host.properties(StartFacts::BATCH);
    let facts: StartFacts = answer.decode();
    let connection_id = non_negative(facts.connection_id);
    let connection = match &connection_for_rules {
        Some(known) => Rc::clone(known),
        None => worker.connections.facts(connection_id, host),
    };
    let handed_off = connection_id.and_then(|id| host.connection_peer(id));
    let address = CallerAddress::new(facts.source_address, handed_off.as_deref());
    let (_, keyed_by) = caller_key(
        connection.peer.principal.as_deref(),
        address,
        settings.trust_forwarded_address,
        connection_id,
    );
    if !worker.admit(Some(index), rule.security_budget, now) {
        worker.tally(Some(index), |c| c.started_suppressed += 1);
        return None;
    }
    worker.count_start(Some(index));

    let redaction = &settings.redaction;
    let (headers, hashed) = match rule.level {
        Level::Request => recorded_headers(&map, &rule.request_headers, redaction),
        Level::Metadata => (Vec::new(), false),
    };
    let line = RecordedLine::new(
        settings,
        request.path,
        request.query,
        &request.canonical,
        &readings,
    );
    let matched_on = matched_on(&rule.matcher, &input);
    let seq = worker.next_seq();
    let record = AccessRecord {
        ts_unix_nanos: now,
        kind: Some(Kind::Started),
        instance: &worker.instance,
        stream: Some((&worker.stream, seq)),
        config: Some(&worker.config_digest),
        why: Some(Why {
            reason: Reason::Rule,
            rule: Some(&rule.name),
            action: "audit",
            sample_rate: 1.0,
            sampled_by: None,
        }),
        matched_on: &matched_on,
        headers,
        pseudonym_key_id: hashed
            .then(|| redaction.hash_key.as_ref().map(|k| k.id.as_str()))
            .flatten(),
        peer: Some(&connection.peer),
        source: Some((address, keyed_by)),
        route_name: facts.route_name,
        direction: direction(worker.proxy, facts.listener_direction),
        route_config: facts.route_config,
        ..line.record(&request.known, &readings)
    };
    Some(record.encode(
        settings.limits.max_field_bytes,
        settings.limits.max_record_bytes,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::envoy::host::FakeHost;
    use crate::core::request::tests::{settings, worker};
    use crate::core::request::{on_log, Seen};
    use serde_json::Value;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const CONFIG: &str = r#"{
        "instance_id": "test-proxy",
        "default_sample_rate": 0,
        "rules": [
            {"name": "health", "match": {"paths": [{"exact": "/healthz"}]}, "action": "drop"},
            {"name": "admin", "match": {"paths": [{"prefix": "/admin"}]}, "action": "audit",
             "level": "request", "request_headers": ["user-agent"], "record_start": true},
            {"name": "orders", "match": {"paths": [{"prefix": "/orders"}]}, "action": "audit"}
        ]
    }"#;

    fn admin_stream() -> FakeHost {
        FakeHost::new()
            .with_request_header(":method", "GET")
            .with_request_header(":path", "/admin/users?token=secret")
            .with_request_header(":authority", "api.example.com")
            .with_request_header("user-agent", "curl/8")
            .with_request_header("x-request-id", "req-1")
            .with_int_property("connection.id", 7)
            .with_property("source.address", "10.0.0.9:4000")
            .with_property("xds.route_name", "admin-route")
    }

    fn accounting(worker: &mut Worker, settings: &Settings) -> Value {
        let report = worker.report(settings, 5_000_000_000, false);
        let line = report.lines.last().unwrap();
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn a_matching_request_gets_a_started_record_with_what_is_known_at_its_start() {
        let s = settings(CONFIG);
        let mut w = worker(&s);
        let host = admin_stream();
        let r: Value =
            serde_json::from_str(&on_request_start(&s, &mut w, &host).expect("started")).unwrap();
        assert_eq!(r["kind"], "started");
        assert_eq!(r["why"]["rule"], "admin");
        assert_eq!(r["why"]["action"], "audit");
        assert_eq!(r["request"]["id"], "req-1");
        assert_eq!(r["request"]["method"], "GET");
        assert_eq!(r["request"]["path"], "/admin/users");
        assert_eq!(r["request"]["headers"]["user-agent"], "curl/8");
        assert_eq!(r["source"]["address"], "10.0.0.9:4000");
        assert_eq!(r["route"]["name"], "admin-route");
        assert_eq!(r["peer"]["mtls"], false);
        assert_eq!(r["seq"], 0);
        assert!(r.get("response").is_none(), "no response exists yet: {r}");
        assert!(
            !r.to_string().contains("secret"),
            "the query is redacted: {r}"
        );
        assert_eq!(
            host.calls.get(),
            4,
            "the header map, the time, the start batch, the connection's facts"
        );
    }

    #[test]
    fn the_end_record_says_started_and_accounting_counts_both_apart() {
        let s = settings(CONFIG);
        let mut w = worker(&s);
        let host = admin_stream().with_response_header(":status", "200");
        assert!(on_request_start(&s, &mut w, &host).is_some());
        let end: Value =
            serde_json::from_str(&on_log(&s, &mut w, Seen::Started, &host).unwrap()).unwrap();
        assert_eq!(end["kind"], "access");
        assert_eq!(end["started"], true);
        assert_eq!(end["request"]["id"], "req-1");
        assert_eq!(end["seq"], 1);
        let a = accounting(&mut w, &s);
        let admin = &a["by_rule"]["admin"];
        assert_eq!(admin["requests"], 1);
        assert_eq!(
            admin["records"], 1,
            "the end record; the start is counted apart"
        );
        assert_eq!(admin["started"], 1);
        assert_eq!(a["records_by_kind"]["started"], 1);
        assert_eq!(a["records_by_kind"]["access"], 1);
        // An end without a start says nothing of one.
        let later: Value =
            serde_json::from_str(&on_log(&s, &mut w, Seen::Headers, &host).unwrap()).unwrap();
        assert!(later.get("started").is_none(), "{later}");
    }

    #[test]
    fn a_routine_request_reads_only_the_header_map_at_its_start() {
        let s = settings(CONFIG);
        let mut w = worker(&s);
        for path in ["/products", "/healthz", "/orders/1"] {
            let host = FakeHost::request("GET", path, 200);
            assert!(on_request_start(&s, &mut w, &host).is_none(), "{path}");
            assert_eq!(host.calls.get(), 1, "{path}: the header map alone");
        }
    }

    #[test]
    fn without_a_record_start_rule_the_start_reads_nothing() {
        let s = settings(&CONFIG.replace(r#", "record_start": true"#, ""));
        assert!(!s.reads.start);
        let mut w = worker(&s);
        let host = admin_stream();
        assert!(on_request_start(&s, &mut w, &host).is_none());
        assert_eq!(host.calls.get(), 0);
        assert_eq!(w.requests_seen, 0);
    }

    #[test]
    fn a_start_the_budget_refuses_is_counted_and_the_end_still_recorded() {
        let s = settings(&CONFIG.replace(
            r#""record_start": true"#,
            r#""record_start": true, "budget": {"records_per_second": 1, "burst": 1}"#,
        ));
        let mut w = worker(&s);
        let host = admin_stream().with_response_header(":status", "200");
        assert!(on_request_start(&s, &mut w, &host).is_some());
        assert!(
            on_request_start(&s, &mut w, &host).is_none(),
            "the rule's budget is spent"
        );
        let a = accounting(&mut w, &s);
        assert_eq!(a["by_rule"]["admin"]["started"], 1);
        assert_eq!(a["by_rule"]["admin"]["started_suppressed"], 1);
    }

    #[test]
    fn a_start_the_log_level_hides_is_counted_as_hidden() {
        let s = settings(CONFIG);
        let mut w = worker(&s);
        w.set_log_threshold(crate::core::config::LogThreshold::From(
            crate::core::config::LogLevel::Critical,
        ));
        assert!(on_request_start(&s, &mut w, &admin_stream()).is_some());
        let a = accounting(&mut w, &s);
        assert_eq!(a["by_rule"]["admin"]["started_hidden"], 1);
        assert_eq!(a["by_rule"]["admin"]["started"], 0);
        assert!(a["records_by_kind"].get("started").is_none(), "{a}");
    }

    #[test]
    fn a_worker_whose_only_request_is_still_open_reports_its_start() {
        let s = settings(CONFIG);
        let mut w = worker(&s);
        assert!(on_request_start(&s, &mut w, &admin_stream()).is_some());
        let a = accounting(&mut w, &s);
        assert_eq!(a["kind"], "accounting");
        assert_eq!(a["records_by_kind"]["started"], 1);
    }

    #[test]
    fn a_rule_matching_on_the_caller_reads_the_connection_once() {
        let s = settings(
            r#"{"rules": [{"name": "shop", "match": {"namespaces": ["shop"]}, "action": "audit", "record_start": true}]}"#,
        );
        let mut w = worker(&s);
        let host = admin_stream()
            .with_property("connection.mtls", [1])
            .with_property(
                "connection.uri_san_peer_certificate",
                "spiffe://cluster.local/ns/shop/sa/web",
            );
        let r: Value =
            serde_json::from_str(&on_request_start(&s, &mut w, &host).expect("started")).unwrap();
        assert_eq!(r["peer"]["namespace"], "shop");
        assert_eq!(
            host.calls.get(),
            5,
            "the header map, the connection id and its facts, the time, the start batch"
        );
    }
}
