use super::*;
use crate::core::config::Settings;
use crate::core::envoy::host::FakeHost;
use crate::core::worker::Worker;
use serde_json::Value;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const CONFIG: &str = r#"{
    "instance_id": "test-proxy",
    "rules": [
        {"name": "health", "match": {"paths": [{"exact": "/healthz"}]}, "action": "drop"},
        {"name": "admin", "match": {"paths": [{"prefix": "/admin"}]}, "action": "audit",
         "level": "request", "request_headers": ["user-agent", "authorization", "x-missing"]},
        {"name": "orders", "match": {"paths": [{"prefix": "/orders"}]}, "action": "sample", "sample_rate": 0.5}
    ]
}"#;

pub(super) fn settings(json: &str) -> Settings {
    Settings::from_json(json.as_bytes()).unwrap()
}

pub(super) fn worker(settings: &Settings) -> Worker {
    Worker::new(settings, "test-proxy".to_string(), 1, 0)
}

/// Runs a request through the filter as Envoy would: capture, then on_log.
fn run(settings: &Settings, host: &FakeHost, headers_reached_plugin: bool) -> Option<Value> {
    on_log(
        settings,
        &mut worker(settings),
        if headers_reached_plugin {
            Seen::Headers
        } else {
            Seen::LocalReply
        },
        host,
    )
    .map(|line| {
        assert!(!line.contains('\n'), "one record, one line: {line}");
        serde_json::from_str(&line).unwrap()
    })
}

#[test]
fn sensitive_endpoint_is_audited_with_allow_listed_headers() {
    let s = settings(CONFIG);
    let host = FakeHost::request("POST", "//admin/../admin/users;x=1?token=secret", 200)
        .with_request_header("user-agent", "curl/8")
        .with_request_header("authorization", "Bearer abc.def.ghi")
        .with_request_header("x-request-id", "req-1")
        .with_request_header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .with_request_header("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7")
        .with_property("response.code_details", "via_upstream")
        .with_int_property("response.flags", 0)
        .with_int_property("request.duration", 12_345_678)
        .with_property("source.address", "10.0.0.7:5123")
        .with_property("xds.route_name", "admin-route")
        .with_property("xds.cluster_name", "backend");
    let r = run(&s, &host, true).expect("audited");
    assert_eq!(r["v"], 1);
    assert_eq!(r["ts"], "2026-11-25T17:03:59.123Z");
    assert_eq!(r["kind"], "access");
    assert_eq!(r["instance"], "test-proxy");
    assert_eq!(r["why"]["reason"], "rule");
    assert_eq!(r["why"]["rule"], "admin");
    assert_eq!(r["why"]["action"], "audit");
    assert_eq!(r["why"]["sample_rate"], 1.0);
    assert_eq!(r["request"]["method"], "POST");
    // A `;` parameter's value is masked like a query parameter's that is not allow-listed.
    assert_eq!(
        r["request"]["path"],
        "//admin/../admin/users;x=[masked, 1 bytes]"
    );
    assert_eq!(r["request"]["query_removed"], true);
    assert_eq!(r["request"]["canonical_path"], "/admin/users");
    assert_eq!(r["request"]["id"], "req-1");
    assert_eq!(r["request"]["authority"], "api.example.com");
    assert_eq!(r["request"]["headers"]["user-agent"], "curl/8");
    assert_eq!(
        r["request"]["headers"]["authorization"],
        "Bearer [masked, 18 bytes]"
    );
    assert!(r["request"]["headers"].get("x-missing").is_none());
    assert_eq!(r["response"]["code"], 200);
    assert_eq!(r["response"]["code_details"], "via_upstream");
    assert!(r["response"].get("flags").is_none());
    assert_eq!(r["trace"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(r["trace"]["span_id"], "00f067aa0ba902b7");
    assert_eq!(
        r["trace"]["b3_trace_id"],
        "80f198ee56343ba864fe8b2a57d3eff7"
    );
    assert_eq!(r["source"]["address"], "10.0.0.7:5123");
    assert_eq!(r["route"]["name"], "admin-route");
    assert_eq!(r["route"]["cluster"], "backend");
    assert_eq!(r["duration_ms"], 12);
    let line = r.to_string();
    assert!(
        !line.contains("secret"),
        "the query string never appears: {line}"
    );
    assert!(
        !line.contains("abc.def"),
        "credentials never appear: {line}"
    );
}

#[test]
fn routine_request_costs_three_host_calls_when_dropped() {
    let s = settings(CONFIG);
    let host = FakeHost::request("GET", "/healthz", 200);
    assert!(run(&s, &host, true).is_none());
    assert_eq!(
        host.calls.get(),
        3,
        "the request header map, :status and the AUDIT mark, all in on_log"
    );
}

#[test]
fn routine_request_sampled_out_costs_three_host_calls() {
    let s = settings(r#"{"default_sample_rate": 0.0001}"#);
    let mut sampled_out = None;
    for i in 0..100 {
        let host = FakeHost::request("GET", "/products", 200)
            .with_request_header("x-request-id", format!("id-{i}"));
        if run(&s, &host, true).is_none() {
            sampled_out = Some(host.calls.get());
            break;
        }
    }
    assert_eq!(
        sampled_out,
        Some(3),
        "the header map (path and trace id), :status and the AUDIT mark"
    );
}

#[test]
fn sensitive_endpoint_record_carries_the_limiters_headers() {
    let s = settings(CONFIG);
    let limited = FakeHost::request("GET", "/admin/users", 200)
        .with_response_header("x-ratelimit-limit", "3, 3;w=60")
        .with_response_header("x-ratelimit-remaining", "2")
        .with_response_header("x-ratelimit-reset", "41");
    let r = run(&s, &limited, true).expect("audited");
    assert_eq!(r["rate_limit"]["limit"], "3, 3;w=60");
    assert_eq!(r["rate_limit"]["remaining"], "2");
    assert_eq!(r["rate_limit"]["reset"], "41");
    assert_eq!(r["rate_limit"]["window_calls"], 1);
    // Without a limiter, one probe: the header map, the time, the facts, the probe, the connection.
    let unlimited = FakeHost::request("GET", "/admin/users", 200);
    let r = run(&s, &unlimited, true).expect("audited");
    assert!(r["rate_limit"].get("limit").is_none());
    assert_eq!(r["rate_limit"]["window_calls"], 1);
    assert_eq!(unlimited.calls.get(), 5);
    assert_eq!(
        limited.calls.get(),
        7,
        "the other two headers read once the probe finds one"
    );
}

#[test]
fn requests_the_rules_record_take_their_status_from_the_batch() {
    // Every request sampled in: the status decides nothing, it comes with the record's facts.
    let s = settings(r#"{"default_sample_rate": 1.0}"#);
    let ok = FakeHost::request("GET", "/products", 200).with_int_property("connection.id", 3);
    let r = run(&s, &ok, true).expect("sampled in");
    assert_eq!(r["response"]["code"], 200);
    assert_eq!(
        r["why"],
        serde_json::json!({"reason": "default_sample", "action": "sample", "sample_rate": 1})
    );
    // The header map, the time, the record's facts, the connection's facts: no :status read.
    assert_eq!(ok.calls.get(), 4);
    // The same rules with a denial: still one batch, and the outcome raises it to an audit.
    let denied = FakeHost::request("GET", "/products", 403)
        .with_property(
            "response.code_details",
            "rbac_access_denied_matched_policy[ns[shop]-policy[deny]-rule[0]]",
        )
        .with_property(
            "metadata.filter_metadata.envoy.filters.http.rbac",
            rbac_struct(&[("enforced_engine_result", b"denied")]),
        );
    let r = run(&s, &denied, true).expect("audited");
    assert_eq!(r["kind"], "denied");
    assert_eq!(r["response"]["code"], 403);
    assert_eq!(
        r["why"],
        serde_json::json!({"reason": "security_outcome", "action": "audit", "sample_rate": 1})
    );
    assert_eq!(r["authz"]["by"], "rbac");
    assert_eq!(r["authz"]["policy"], "ns[shop]-policy[deny]-rule[0]");
    // No response at all (the client went away): recorded without a code.
    let mut gone = FakeHost::request("GET", "/products", 200);
    gone.response_headers.clear();
    let r = run(&s, &gone, true).expect("sampled in");
    assert!(r["response"].get("code").is_none());
}

#[test]
fn rules_on_the_status_read_it_before_matching() {
    let s = settings(
        r#"{"default_sample_rate": 0,
            "rules": [{"name": "server-errors", "match": {"status": ["5xx"]}, "action": "audit"}]}"#,
    );
    let failed = FakeHost::request("GET", "/products", 503);
    let r = run(&s, &failed, true).expect("a 5xx is audited");
    assert_eq!(r["why"]["rule"], "server-errors");
    assert_eq!(r["response"]["code"], 503);
    let fine = FakeHost::request("GET", "/products", 200);
    assert!(run(&s, &fine, true).is_none());
    assert_eq!(
        fine.calls.get(),
        3,
        "the header map, :status and the AUDIT mark"
    );
}

#[test]
fn security_outcome_is_audited_even_under_a_drop_rule() {
    let s = settings(CONFIG);
    let host = FakeHost::request("GET", "/healthz", 403).with_property(
        "response.code_details",
        "rbac_access_denied_matched_policy[ns[default]-policy[deny]-rule[0]]",
    );
    let r = run(&s, &host, true).expect("a 403 is always audited");
    assert_eq!(r["kind"], "denied");
    assert_eq!(r["why"]["reason"], "security_outcome");
    assert_eq!(r["why"]["rule"], "health");
    assert!(
        r.get("rate_limit").is_none(),
        "not a sensitive-endpoint call: the drop rule did not decide"
    );
    assert_eq!(
        r["response"]["code_details"],
        "rbac_access_denied_matched_policy[ns[default]-policy[deny]-rule[0]]"
    );
}

#[test]
fn local_reply_before_the_plugin_is_seen_in_on_log() {
    let s = settings(CONFIG);
    let host = FakeHost::request("GET", "/anything?x=1", 401).with_property(
        "response.code_details",
        "jwt_authn_access_denied{Jwt_is_missing}",
    );
    let r = run(&s, &host, false).expect("auth failure audited");
    assert_eq!(r["kind"], "auth_failure");
    assert_eq!(r["response"]["replied_before_plugin"], true);
    assert_eq!(r["request"]["path"], "/anything");
    assert_eq!(r["request"]["method"], "GET");
}

#[test]
fn sampling_follows_the_trace_id_so_hops_agree() {
    let s = settings(CONFIG);
    let mut kept = 0;
    for i in 0..400 {
        let traceparent = format!("00-{:032x}-00f067aa0ba902b7-01", 0x1000_0000_u64 + i * 7919);
        let decide = |seed: u64| {
            let host = FakeHost::request("GET", "/orders/1", 200)
                .with_request_header("traceparent", &traceparent);
            let mut w = Worker::new(&s, "x".into(), seed, 0);
            on_log(&s, &mut w, Seen::Headers, &host)
        };
        let (a, b) = (decide(1), decide(99));
        assert_eq!(
            a.is_some(),
            b.is_some(),
            "two sidecars disagree on {traceparent}"
        );
        if let Some(line) = a {
            kept += 1;
            let r: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(r["why"]["sampled_by"], "trace_id");
            assert_eq!(r["why"]["sample_rate"], 0.5);
        }
    }
    assert!((150..250).contains(&kept), "kept {kept} of 400 at 0.5");
}

#[test]
fn without_any_id_sampling_falls_back_to_random_and_says_so() {
    let s = settings(r#"{"default_sample_rate": 0.999999}"#);
    let host = FakeHost::request("GET", "/x", 200);
    let r = run(&s, &host, true).expect("kept at this rate");
    assert_eq!(r["why"]["reason"], "default_sample");
    assert_eq!(r["why"]["sampled_by"], "random");
    assert!(r["why"].get("rule").is_none());
}

#[test]
fn hostile_bytes_stay_one_valid_line() {
    let s = settings(
        r#"{"rules": [{"name": "all", "action": "audit", "level": "request", "request_headers": ["x-evil"]}]}"#,
    );
    let evil = b"a\"b\\c\r\nd\xff\xfe\x00e\xe2\x80\xa8f\xc2\x85g";
    let mut path = b"/p\xff\n".to_vec();
    path.extend(std::iter::repeat_n(b'a', 20_000));
    let host = FakeHost::new()
        .with_request_header(":path", &path)
        .with_request_header(":method", "G\x00T")
        .with_request_header("x-evil", evil)
        .with_response_header(":status", "200");
    let r = run(&s, &host, true).expect("audited");
    let recorded = r["request"]["headers"]["x-evil"].as_str().unwrap();
    assert_eq!(recorded, "a\"b\\c\r\nd\\xff\\xfe\u{0}e\u{2028}f\u{85}g");
    let recorded_path = r["request"]["path"].as_str().unwrap();
    assert!(
        recorded_path.ends_with("...[truncated, 20004 bytes]"),
        "{}",
        &recorded_path[recorded_path.len() - 40..]
    );
    assert!(recorded_path.len() < 1100);
}

#[test]
fn oversized_records_drop_headers_first_and_say_so() {
    let s = settings(
        r#"{"limits": {"max_field_bytes": 4096, "max_record_bytes": 4096},
            "rules": [{"name": "all", "action": "audit", "level": "request", "request_headers": ["a", "b"]}]}"#,
    );
    let big = "x".repeat(3000);
    let host = FakeHost::request("GET", "/big", 200)
        .with_request_header("a", &big)
        .with_request_header("b", &big);
    let line = on_log(&s, &mut worker(&s), Seen::Headers, &host).unwrap();
    assert!(line.len() <= 4096, "{} bytes", line.len());
    let r: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(r["truncated"], true);
    assert!(r["request"].get("headers").is_none());
    assert_eq!(r["request"]["canonical_path"], "/big");
}

#[test]
fn records_of_control_bytes_in_every_field_still_fit_their_cap() {
    // Found by the `request` fuzz target: every field at its cap of control bytes, each escaped
    // as six characters, left the last encoding 31 bytes over `max_record_bytes`.
    let s = settings(
        r#"{"limits": {"max_field_bytes": 64, "max_record_bytes": 4096}, "default_sample_rate": 1,
            "rules": [{"name": "all", "action": "audit", "level": "request", "request_headers": ["x-a"]}]}"#,
    );
    let junk = "\u{1e}".repeat(200);
    let host = FakeHost::request(&junk, &format!("/{junk}"), 200)
        .with_request_header(":authority", &junk)
        .with_request_header("x-request-id", &junk)
        .with_request_header("x-http-method-override", &junk)
        .with_request_header("x-http-method", &junk)
        .with_request_header("x-original-url", format!("/{junk}"))
        .with_request_header("x-a", &junk)
        .with_property("response.code_details", &junk)
        .with_property("source.address", &junk);
    let line = on_log(&s, &mut worker(&s), Seen::Headers, &host).unwrap();
    assert!(line.len() <= 4096, "{} bytes", line.len());
    let r: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(r["truncated"], true);
}

#[test]
fn non_numeric_status_and_missing_facts_are_tolerated() {
    let s = settings(r#"{"rules": [{"name": "all", "action": "audit"}]}"#);
    let host = FakeHost::new().with_response_header(":status", "abc");
    let r = run(&s, &host, true).expect("audited");
    assert!(r["response"].get("code").is_none());
    assert_eq!(r["request"]["canonical_path"], "/");
}

const PRIVACY: &str = r#"{
    "redaction": {
        "query_params": ["page", "token"],
        "sensitive_headers": ["x-internal-token"],
        "path_placeholders": {"segments": [{"glob": "acct-*", "placeholder": "account"}]}
    },
    "rules": [
        {"name": "users", "match": {"paths": [{"prefix": "/users"}]}, "action": "audit", "level": "request",
         "request_headers": ["x-internal-token", {"name": "x-user-id", "redact": "hash"}, {"name": "cookie", "redact": "omit"}]},
        {"name": "deletes", "match": {"methods": ["DELETE"]}, "action": "audit"}
    ]
}"#;

fn privacy_settings() -> Settings {
    Settings::from_json_with_env(PRIVACY.as_bytes(), &|name| {
        (name == "MESHAUDIT_HMAC_KEY").then(|| "a-test-key-of-32-bytes-xxxxxxxxx".to_string())
    })
    .unwrap()
}

#[test]
fn personal_data_and_secrets_are_redacted_in_the_record() {
    let s = privacy_settings();
    let host = FakeHost::request(
        "GET",
        "/users/jane@example.com/acct-991/cards/4111111111111111?page=2&token=t0k3n&email=x@y.z",
        200,
    )
    .with_request_header("x-internal-token", "s3cr3t-internal")
    .with_request_header("x-user-id", "user-1234")
    .with_request_header("cookie", "session=abc");
    let r = run(&s, &host, true).unwrap();
    let req = &r["request"];
    assert_eq!(req["path"], "/users/{email}/{account}/cards/{card}");
    assert_eq!(
        req["canonical_path"],
        "/users/{email}/{account}/cards/{card}"
    );
    assert_eq!(req["query"], "page=2&token=[masked, 5 bytes]");
    assert!(req.get("query_removed").is_none());
    assert_eq!(req["headers"]["x-internal-token"], "[masked, 15 bytes]");
    let pseudonym = req["headers"]["x-user-id"].as_str().unwrap();
    // HMAC-SHA-256 of the header's value under the test key, computed independently
    // (Python: hmac.new(key, b"user-1234", hashlib.sha256).hexdigest()[:32]).
    assert_eq!(pseudonym, "hmac-sha256:1cf0b39f09d1b05cc137730f95cbb49a");
    assert!(req["headers"].get("cookie").is_none(), "omitted");
    assert_eq!(
        r["pseudonym_key_id"],
        s.redaction.hash_key.as_ref().unwrap().id.as_str()
    );
    let line = r.to_string();
    for secret in [
        "jane",
        "991",
        "4111",
        "t0k3n",
        "x@y.z",
        "s3cr3t",
        "user-1234",
        "session=abc",
        "a-test-key",
    ] {
        assert!(!line.contains(secret), "{secret} leaked: {line}");
    }
    // Same input, same key: same pseudonym in another record.
    let again = run(
        &s,
        &FakeHost::request("GET", "/users/x", 200).with_request_header("x-user-id", "user-1234"),
        true,
    )
    .unwrap();
    assert_eq!(again["request"]["headers"]["x-user-id"], pseudonym);
}

#[test]
fn method_override_headers_cannot_dodge_a_method_rule() {
    let s = privacy_settings();
    for header in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        let host =
            FakeHost::request("POST", "/orders/1", 200).with_request_header(header, "DELETE");
        let r = run(&s, &host, true).unwrap_or_else(|| panic!("{header} dodged the rule"));
        assert_eq!(r["why"]["rule"], "deletes");
        assert_eq!(r["request"]["method"], "POST");
        assert_eq!(r["request"]["method_override"], "DELETE");
    }
    // With several overrides, the conventional header's wins.
    let host = FakeHost::request("POST", "/orders/1", 200)
        .with_request_header("x-method-override", "GET")
        .with_request_header("x-http-method-override", "DELETE");
    let r = run(&s, &host, true).unwrap();
    assert_eq!(r["request"]["method_override"], "DELETE");
    // Matching on methods and their overrides costs no host call beyond the header map.
    let host = FakeHost::request("GET", "/orders/1", 200);
    assert!(run(&s, &host, true).is_none());
    assert_eq!(host.calls.get(), 3);
}

fn rbac_struct(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    crate::core::envoy::headers::serialize(pairs)
}

fn mtls_host(method: &str, path: &str, status: u16) -> FakeHost {
    FakeHost::request(method, path, status)
        .with_property("connection.mtls", [1])
        .with_property("connection.tls_version", "TLSv1.3")
        .with_property(
            "connection.uri_san_peer_certificate",
            "spiffe://cluster.local/ns/shop/sa/checkout",
        )
        .with_property("connection.subject_peer_certificate", "CN=checkout")
        .with_property("connection.sha256_peer_certificate_digest", "ab12")
        .with_property(
            "connection.uri_san_local_certificate",
            "spiffe://cluster.local/ns/pay/sa/api",
        )
}

#[test]
fn records_of_one_connection_read_its_identity_once() {
    let s = settings(CONFIG);
    let mut w = worker(&s);
    let first = mtls_host("GET", "/admin/x", 200).with_int_property("connection.id", 41);
    let r1: Value =
        serde_json::from_str(&on_log(&s, &mut w, Seen::Headers, &first).unwrap()).unwrap();
    // The header map, the time, the record's facts with its status (an audit rule records
    // whatever the status; RBAC left no decision here), the rate-limit probe, and the connection facts.
    assert_eq!(first.calls.get(), 5);
    let again = FakeHost::request("GET", "/admin/y", 200).with_int_property("connection.id", 41);
    let r2: Value =
        serde_json::from_str(&on_log(&s, &mut w, Seen::Headers, &again).unwrap()).unwrap();
    assert_eq!(
        again.calls.get(),
        4,
        "no connection read for a known connection"
    );
    assert_eq!(r2["peer"], r1["peer"]);
    assert_eq!(
        r2["peer"]["principal"],
        "spiffe://cluster.local/ns/shop/sa/checkout"
    );
    // Another connection, even with the same facts on offer, is read for itself.
    let other = FakeHost::request("GET", "/admin/z", 200)
        .with_int_property("connection.id", 42)
        .with_property("connection.mtls", [0]);
    let r3: Value =
        serde_json::from_str(&on_log(&s, &mut w, Seen::Headers, &other).unwrap()).unwrap();
    assert_eq!(r3["peer"], serde_json::json!({"mtls": false}));
}

#[test]
fn rules_on_identity_read_a_known_connection_by_its_id_alone() {
    let s = settings(
        r#"{"default_sample_rate": 0,
            "rules": [{"name": "plaintext", "match": {"mtls": false}, "action": "audit"}]}"#,
    );
    let mut w = worker(&s);
    let mtls = mtls_host("GET", "/x", 200).with_int_property("connection.id", 9);
    assert!(
        on_log(&s, &mut w, Seen::Headers, &mtls).is_none(),
        "an mTLS caller is not matched"
    );
    // The header map, the connection id, the connection's facts, :status, the AUDIT mark.
    assert_eq!(mtls.calls.get(), 5);
    let again = FakeHost::request("GET", "/y", 200).with_int_property("connection.id", 9);
    assert!(on_log(&s, &mut w, Seen::Headers, &again).is_none());
    assert_eq!(again.calls.get(), 4, "a known connection: its id alone");
    let plain = FakeHost::request("GET", "/z", 200)
        .with_int_property("connection.id", 10)
        .with_property("connection.mtls", [0]);
    let r: Value =
        serde_json::from_str(&on_log(&s, &mut w, Seen::Headers, &plain).unwrap()).unwrap();
    assert_eq!(r["why"]["rule"], "plaintext");
    assert_eq!(r["peer"], serde_json::json!({"mtls": false}));
}

#[test]
fn every_record_says_who_called_over_mtls_or_that_it_was_plaintext() {
    let s = settings(CONFIG);
    let r = run(&s, &mtls_host("GET", "/admin/x", 200), true).unwrap();
    assert_eq!(
        r["peer"],
        serde_json::json!({"mtls": true, "tls_version": "TLSv1.3",
            "principal": "spiffe://cluster.local/ns/shop/sa/checkout", "trust_domain": "cluster.local",
            "namespace": "shop", "service_account": "checkout", "subject": "CN=checkout",
            "cert_sha256": "ab12", "local_principal": "spiffe://cluster.local/ns/pay/sa/api"})
    );
    let plain = FakeHost::request("GET", "/admin/x", 200).with_property("connection.mtls", [0]);
    let r = run(&s, &plain, true).unwrap();
    assert_eq!(r["peer"], serde_json::json!({"mtls": false}));
}

#[test]
fn rules_match_on_mtls_principal_and_namespace() {
    let s = settings(
        r#"{"default_sample_rate": 0, "rules": [
        {"name": "plaintext", "match": {"mtls": false}, "action": "audit"},
        {"name": "from-shop", "match": {"namespaces": ["shop"], "paths": [{"prefix": "/pay"}]}, "action": "audit"},
        {"name": "checkout", "match": {"principals": ["spiffe://cluster.local/ns/shop/sa/check*"]}, "action": "audit"}
    ]}"#,
    );
    let r = run(
        &s,
        &FakeHost::request("GET", "/x", 200).with_property("connection.mtls", [0]),
        true,
    )
    .unwrap();
    assert_eq!(r["why"]["rule"], "plaintext");
    assert_eq!(
        run(&s, &mtls_host("GET", "/pay/1", 200), true).unwrap()["why"]["rule"],
        "from-shop"
    );
    assert_eq!(
        run(&s, &mtls_host("GET", "/x", 200), true).unwrap()["why"]["rule"],
        "checkout"
    );
    // A header claiming an identity changes nothing: identity comes from the certificate.
    let forged = mtls_host("GET", "/x", 200)
        .with_property(
            "connection.uri_san_peer_certificate",
            "spiffe://cluster.local/ns/other/sa/x",
        )
        .with_request_header(
            "x-forwarded-client-cert",
            "URI=spiffe://cluster.local/ns/shop/sa/checkout",
        );
    assert!(run(&s, &forged, true).is_none());
}

#[test]
fn enforced_rbac_denial_records_the_istio_policy() {
    let s = settings(CONFIG);
    let host = FakeHost::request("GET", "/orders", 403)
        .with_property(
            "response.code_details",
            "rbac_access_denied_matched_policy[ns[shop]-policy[deny-orders]-rule[1]]",
        )
        .with_property(
            "metadata.filter_metadata.envoy.filters.http.rbac",
            rbac_struct(&[
                ("enforced_engine_result", b"denied"),
                (
                    "enforced_effective_policy_id",
                    b"ns[shop]-policy[deny-orders]-rule[1]",
                ),
            ]),
        );
    let r = run(&s, &host, false).unwrap();
    assert_eq!(r["kind"], "denied");
    assert_eq!(
        r["authz"],
        serde_json::json!({"decision": "denied", "by": "rbac", "basis": "deny_policy", "policy": "ns[shop]-policy[deny-orders]-rule[1]",
            "policy_namespace": "shop", "policy_name": "deny-orders", "policy_rule": 1})
    );
}

#[test]
fn shadow_denial_on_an_allowed_request_is_recorded_when_enabled() {
    let shadow = rbac_struct(&[
        ("enforced_engine_result", b"allowed"),
        ("istio_dry_run_allow_shadow_engine_result", b"denied"),
        (
            "istio_dry_run_allow_shadow_effective_policy_id",
            b"ns[shop]-policy[dry]-rule[0]",
        ),
    ]);
    let on = settings(r#"{"authorization": {"shadow_results": true}, "default_sample_rate": 0}"#);
    let host = FakeHost::request("GET", "/products", 200)
        .with_property("metadata.filter_metadata.envoy.filters.http.rbac", &shadow);
    let r = run(&on, &host, true).expect("a shadow denial is always audited");
    assert_eq!(r["kind"], "shadow_denied");
    assert_eq!(r["why"]["reason"], "security_outcome");
    assert_eq!(r["authz"]["decision"], "allowed");
    assert_eq!(
        r["authz"]["shadow"],
        serde_json::json!([{"result": "denied", "prefix": "istio_dry_run_allow_", "policy": "ns[shop]-policy[dry]-rule[0]",
            "policy_namespace": "shop", "policy_name": "dry", "policy_rule": 0}])
    );
    // Off by default: no attribute read for it on the routine path.
    let off = settings(r#"{"default_sample_rate": 0}"#);
    let host = FakeHost::request("GET", "/products", 200)
        .with_property("metadata.filter_metadata.envoy.filters.http.rbac", &shadow);
    assert!(run(&off, &host, true).is_none());
    assert_eq!(host.calls.get(), 3);
}

#[test]
fn jwt_failures_give_the_reason_and_success_a_pseudonymous_subject() {
    let s = settings(CONFIG);
    for reason in [
        "Jwt_is_missing",
        "Jwt_is_expired",
        "Jwt_verification_fails",
        "Jwt_issuer_is_not_configured",
        "Audiences_in_Jwt_are_not_allowed",
    ] {
        let host = FakeHost::request("GET", "/x", 401).with_property(
            "response.code_details",
            format!("jwt_authn_access_denied{{{reason}}}"),
        );
        let r = run(&s, &host, false).unwrap();
        assert_eq!(r["kind"], "auth_failure");
        assert_eq!(
            r["authn"],
            serde_json::json!({"method": "jwt", "result": "failed", "reason": reason})
        );
    }
    let hashed = Settings::from_json_with_env(
        br#"{"authentication": {"jwt_payload_metadata_key": "jwt_payload", "jwt_subject": "hash"},
             "rules": [{"name": "all", "action": "audit"}]}"#,
        &|name| (name == "MESHAUDIT_HMAC_KEY").then(|| "0123456789abcdef0123".into()),
    )
    .unwrap();
    let ok = FakeHost::request("GET", "/x", 200)
        .with_request_header("authorization", "Bearer aaa.bbb.ccc")
        .with_property(
            "metadata.filter_metadata.envoy.filters.http.jwt_authn.jwt_payload.iss",
            "https://issuer.example",
        )
        .with_property(
            "metadata.filter_metadata.envoy.filters.http.jwt_authn.jwt_payload.sub",
            "jane@example.com",
        );
    let r = run(&hashed, &ok, true).unwrap();
    assert_eq!(r["authn"]["result"], "ok");
    assert_eq!(r["authn"]["issuer"], "https://issuer.example");
    // HMAC-SHA-256 of the verified subject, computed independently (as above).
    assert_eq!(
        r["authn"]["subject"],
        "hmac-sha256:fbf542468168f8cffcc85ed2b799bfaa"
    );
    assert_eq!(
        r["pseudonym_key_id"],
        hashed.redaction.hash_key.as_ref().unwrap().id.as_str()
    );
    assert!(!r.to_string().contains("jane"));
    // An Authorization header without verified claims is not authentication.
    let unverified = FakeHost::request("GET", "/x", 200)
        .with_request_header("authorization", "Bearer aaa.bbb.ccc");
    assert!(run(&hashed, &unverified, true)
        .unwrap()
        .get("authn")
        .is_none());
    // Omitted by default.
    let omit = settings(
        r#"{"authentication": {"jwt_payload_metadata_key": "jwt_payload"}, "rules": [{"name": "all", "action": "audit"}]}"#,
    );
    let r = run(&omit, &ok, true).unwrap();
    assert!(r["authn"].get("subject").is_none());
}

#[test]
fn ext_authz_denials_and_errors() {
    let s = settings(CONFIG);
    for (details, decision, status) in [
        ("ext_authz_denied", "denied", 403),
        ("ext_authz_error", "error", 403),
        // An answer or header mutation ext_authz could not apply.
        ("ext_authz_invalid", "error", 500),
    ] {
        let host =
            FakeHost::request("GET", "/x", status).with_property("response.code_details", details);
        let r = run(&s, &host, false).unwrap();
        assert_eq!(r["kind"], "denied");
        assert_eq!(
            r["authz"],
            serde_json::json!({"decision": decision, "by": "ext_authz", "basis": "ext_authz", "status": status})
        );
    }
}

#[test]
fn the_request_cannot_forge_a_policy_name() {
    // code_details come from Envoy; a hostile path or header never becomes a policy.
    let s = settings(CONFIG);
    let host = FakeHost::request(
        "GET",
        "/rbac_access_denied_matched_policy[ns[x]-policy[evil]-rule[0]]",
        403,
    )
    .with_request_header(
        "x-envoy-details",
        "rbac_access_denied_matched_policy[ns[x]-policy[evil]-rule[0]]",
    )
    .with_property("response.code_details", "via_upstream");
    let r = run(&s, &host, true).unwrap();
    assert_eq!(
        r["authz"],
        serde_json::json!({"decision": "denied", "by": "upstream", "basis": "upstream"})
    );
}

#[test]
fn accounting_adds_up_and_names_lost_records_by_rule() {
    let s = settings(CONFIG);
    let mut w = worker(&s);
    let requests = [
        ("/admin/a", 200),  // audited
        ("/healthz", 200),  // dropped
        ("/orders/1", 200), // sampled at 0.5: written or sampled out
        ("/x", 403),        // security outcome
    ];
    for (path, status) in requests {
        let host = FakeHost::request("GET", path, status).with_request_header("x-request-id", path);
        let _ = on_log(&s, &mut w, Seen::Headers, &host);
    }
    // Envoy refuses the last record written (the 403): lost, and said so.
    w.note_sink_error();
    let report = w.report(&s, 2_000_000_000, false);
    let accounting: Value = serde_json::from_str(report.lines.last().unwrap()).unwrap();
    let totals = &accounting["totals"];
    assert_eq!(totals["requests"], 4);
    let sum = |k: &str| totals[k].as_u64().unwrap();
    assert_eq!(
        sum("records") + sum("sampled_out") + sum("dropped") + sum("suppressed"),
        4
    );
    // The ids are fixed, so is the split: the draw for "/orders/1" is its hash, and the
    // e2e suite's independent implementation of it (`harness.sampled_in("/orders/1", 0.5)`)
    // says it is sampled out.
    let orders_kept = false;
    let by_rule = &accounting["by_rule"];
    let count = |rule: &str, k: &str| by_rule[rule].get(k).and_then(Value::as_u64).unwrap_or(0);
    assert_eq!(
        (count("admin", "requests"), count("admin", "records")),
        (1, 1)
    );
    assert_eq!(
        (count("health", "requests"), count("health", "dropped")),
        (1, 1)
    );
    assert_eq!(
        (count("_default", "requests"), count("_default", "records")),
        (1, 1),
        "the 403, a security outcome"
    );
    assert_eq!(
        (
            count("orders", "requests"),
            count("orders", "records"),
            count("orders", "sampled_out")
        ),
        (1, u64::from(orders_kept), u64::from(!orders_kept))
    );
    assert_eq!(sum("records"), 2 + u64::from(orders_kept));
    assert_eq!(totals["sink_errors"], 1);
    assert_eq!(
        accounting["by_rule"]["_default"]["sink_errors"], 1,
        "the lost record was the 403, matched by no rule"
    );
    assert_eq!(accounting["by_rule"]["health"]["dropped"], 1);
    assert_eq!(
        accounting["seq"], totals["records"],
        "request records took seq 0.. before the accounting record"
    );
    assert_eq!(report.counts.totals().sink_errors, 1);
}

/// Istio's authorization filters, as its builder generates them (CUSTOM, AUDIT, DENY,
/// ALLOW), seen through what they leave: the merged RBAC metadata, the AUDIT mark and
/// the response's details.
mod istio_layout {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const RBAC: &str = "metadata.filter_metadata.envoy.filters.http.rbac";
    const HINT: &str = "metadata.filter_metadata.envoy.common.access_log_hint";
    const AUDIT_ID: &str = "ns[shop]-policy[audit-admin]-rule[0]";
    const ROUTINE: &str = r#"{"default_sample_rate": 0}"#;

    fn enforced(result: &str, policy: Option<&str>) -> Vec<u8> {
        let mut pairs: Vec<(&str, &[u8])> = vec![("enforced_engine_result", result.as_bytes())];
        if let Some(policy) = policy {
            pairs.push(("enforced_effective_policy_id", policy.as_bytes()));
        }
        rbac_struct(&pairs)
    }

    fn audited(host: FakeHost) -> FakeHost {
        host.with_property(HINT, [1])
    }

    #[test]
    fn an_audit_policy_match_is_recorded_whatever_the_sampling() {
        let s = settings(ROUTINE);
        // AUDIT only: the LOG filter's id is the one Envoy kept.
        let host = audited(FakeHost::request("GET", "/admin/users", 200))
            .with_property(RBAC, enforced("allowed", Some(AUDIT_ID)));
        let r = run(&s, &host, true).expect("an AUDIT policy matched");
        assert_eq!(r["kind"], "access");
        assert_eq!(r["why"]["reason"], "mesh_audit_policy");
        assert_eq!(r["why"]["action"], "audit");
        assert_eq!(
            r["authz"],
            serde_json::json!({"decision": "allowed", "by": "rbac", "basis": "allow_or_audit_policy",
                "unattributed_policy": AUDIT_ID, "audit": {"matched": true}})
        );
        // The header map, :status, the mark, RBAC's metadata, the time, the record's batch
        // and the connection's.
        assert_eq!(host.calls.get(), 7);

        // The mark says "no match": routine, three calls.
        let unmatched = FakeHost::request("GET", "/admin/users", 200)
            .with_property(HINT, [0])
            .with_property(RBAC, enforced("allowed", None));
        assert!(run(&s, &unmatched, true).is_none());
        assert_eq!(unmatched.calls.get(), 3);

        // Even a drop rule gives way, as it does to a security outcome.
        let dropping = settings(
            r#"{"rules": [{"name": "quiet", "match": {"paths": [{"prefix": "/admin"}]}, "action": "drop"}]}"#,
        );
        let r = run(&dropping, &host, true).unwrap();
        assert_eq!(r["why"]["reason"], "mesh_audit_policy");
        assert_eq!(r["why"]["rule"], "quiet");

        // Turned off, the mark is not heeded.
        let off =
            settings(r#"{"default_sample_rate": 0, "authorization": {"audit_policies": false}}"#);
        assert!(run(&off, &host, true).is_none());
    }

    #[test]
    fn an_audit_rule_names_itself_and_the_record_still_says_audit_matched() {
        let s = settings(CONFIG);
        let host = audited(FakeHost::request("GET", "/admin/users", 200)).with_property(
            RBAC,
            enforced("allowed", Some("ns[shop]-policy[allow-admins]-rule[0]")),
        );
        let r = run(&s, &host, true).unwrap();
        assert_eq!(r["why"]["reason"], "rule");
        assert_eq!(r["authz"]["audit"], serde_json::json!({"matched": true}));
        assert_eq!(r["authz"]["basis"], "allow_or_audit_policy");
        assert!(
            r["authz"].get("policy").is_none(),
            "never an id that may be the AUDIT policy's"
        );
    }

    #[test]
    fn a_denial_for_want_of_an_allow_policy_names_no_policy() {
        let s = settings(ROUTINE);
        // AUDIT + ALLOW, neither ALLOW policy matched: the LOG filter's id survived.
        let host = audited(FakeHost::request("GET", "/admin/other", 403))
            .with_property(
                "response.code_details",
                "rbac_access_denied_matched_policy[none]",
            )
            .with_property(RBAC, enforced("denied", Some(AUDIT_ID)));
        let r = run(&s, &host, false).unwrap();
        assert_eq!(r["kind"], "denied");
        assert_eq!(r["why"]["reason"], "security_outcome");
        assert_eq!(
            r["authz"],
            serde_json::json!({"decision": "denied", "by": "rbac", "basis": "no_allow_policy_matched",
                "audit": {"matched": true, "policy": AUDIT_ID, "policy_namespace": "shop",
                    "policy_name": "audit-admin", "policy_rule": 0}})
        );
        // Without an AUDIT policy: the same, with no audit.
        let host = FakeHost::request("GET", "/other", 403)
            .with_property(
                "response.code_details",
                "rbac_access_denied_matched_policy[none]",
            )
            .with_property(RBAC, enforced("denied", None));
        let r = run(&s, &host, false).unwrap();
        assert_eq!(r["authz"]["basis"], "no_allow_policy_matched");
        assert!(r["authz"].get("audit").is_none());
        assert!(r["authz"].get("policy").is_none());
    }

    #[test]
    fn a_deny_policy_after_an_audit_one_is_the_decider() {
        let s = settings(ROUTINE);
        let deny = "ns[shop]-policy[deny-x]-rule[0]";
        let host = audited(FakeHost::request("GET", "/admin/forbidden", 403))
            .with_property(
                "response.code_details",
                format!("rbac_access_denied_matched_policy[{deny}]"),
            )
            .with_property(RBAC, enforced("denied", Some(deny)));
        let r = run(&s, &host, false).unwrap();
        assert_eq!(r["authz"]["basis"], "deny_policy");
        assert_eq!(r["authz"]["policy"], deny);
        assert_eq!(r["authz"]["audit"], serde_json::json!({"matched": true}));
    }

    #[test]
    fn allowed_requests_name_the_allow_policy_or_say_none_applies() {
        let s = settings(r#"{"rules": [{"name": "all", "action": "audit"}]}"#);
        let host = FakeHost::request("GET", "/public", 200)
            .with_property(HINT, [0])
            .with_property(
                RBAC,
                enforced("allowed", Some("ns[shop]-policy[allow-public]-rule[0]")),
            );
        let r = run(&s, &host, true).unwrap();
        assert_eq!(r["authz"]["basis"], "allow_policy");
        assert_eq!(r["authz"]["policy_name"], "allow-public");
        // Only a DENY filter, which matched nothing.
        let host =
            FakeHost::request("GET", "/public", 200).with_property(RBAC, enforced("allowed", None));
        let r = run(&s, &host, true).unwrap();
        assert_eq!(
            r["authz"],
            serde_json::json!({"decision": "allowed", "by": "rbac", "basis": "no_allow_policy_applies"})
        );
    }

    #[test]
    fn a_custom_selection_is_a_check_not_a_dry_run() {
        let on =
            settings(r#"{"default_sample_rate": 0, "authorization": {"shadow_results": true}}"#);
        for (key, id, provider) in [
            (
                "istio_ext_authz_shadow",
                "istio-ext-authz-opa-ns[shop]-policy[ext]-rule[0]",
                Some("opa"),
            ),
            (
                "shadow",
                "istio-ext-authz-ns[shop]-policy[ext]-rule[0]",
                None,
            ),
        ] {
            let selection = rbac_struct(&[
                (&format!("{key}_engine_result"), b"denied"),
                (&format!("{key}_effective_policy_id"), id.as_bytes()),
            ]);
            // Allowed by the authorizer: not a shadow denial, so routine.
            let allowed = FakeHost::request("GET", "/orders", 200).with_property(RBAC, &selection);
            assert!(run(&on, &allowed, true).is_none(), "{key}");
            // Recorded (an audit rule), it says the authorizer was asked and what it answered.
            let r = run(
                &settings(r#"{"rules": [{"name": "all", "action": "audit"}]}"#),
                &allowed,
                true,
            )
            .unwrap();
            assert_eq!(r["kind"], "access");
            let mut check = serde_json::json!({"answer": "allowed", "policy": "ns[shop]-policy[ext]-rule[0]",
                "policy_namespace": "shop", "policy_name": "ext", "policy_rule": 0});
            if let Some(provider) = provider {
                check["provider"] = provider.into();
            }
            assert_eq!(r["authz"]["ext_authz"], check);
            assert_eq!(r["authz"]["by"], "ext_authz");
            assert!(r["authz"].get("shadow").is_none());
            // Denied by it.
            let denied = FakeHost::request("GET", "/orders", 403)
                .with_property("response.code_details", "ext_authz_denied")
                .with_property(RBAC, &selection);
            let r = run(&on, &denied, false).unwrap();
            assert_eq!(r["kind"], "denied");
            assert_eq!(r["authz"]["ext_authz"]["answer"], "denied");
            assert_eq!(r["authz"]["decision"], "denied");
        }
    }

    #[test]
    fn dry_run_audit_and_deny_policies() {
        let on =
            settings(r#"{"default_sample_rate": 0, "authorization": {"shadow_results": true}}"#);
        // A dry-run AUDIT policy that matched: shadow LOG rules, no prefix, "allowed".
        let dry_audit = rbac_struct(&[
            ("enforced_engine_result", b"allowed"),
            ("shadow_engine_result", b"allowed"),
            (
                "shadow_effective_policy_id",
                b"ns[shop]-policy[dry-audit]-rule[0]",
            ),
        ]);
        let host = FakeHost::request("GET", "/orders", 200).with_property(RBAC, &dry_audit);
        assert!(run(&on, &host, true).is_none(), "no false shadow_allowed");
        // A dry-run ALLOW policy that matched is one.
        let dry_allow = rbac_struct(&[
            ("istio_dry_run_allow_shadow_engine_result", b"allowed"),
            (
                "istio_dry_run_allow_shadow_effective_policy_id",
                b"ns[shop]-policy[dry-allow]-rule[0]",
            ),
        ]);
        let host = FakeHost::request("GET", "/orders", 200).with_property(RBAC, &dry_allow);
        let r = run(&on, &host, true).unwrap();
        assert_eq!(r["kind"], "shadow_allowed");
        assert_eq!(r["authz"]["basis"], "not_enforced");
    }
}

/// gRPC calls: HTTP 200 with the outcome in `grpc-status`.
mod grpc {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// A gRPC call as Envoy presents it, answered HTTP 200; `status` in the trailers.
    fn call(path: &str, status: Option<u8>) -> FakeHost {
        let host = FakeHost::request("POST", path, 200)
            .with_request_header("content-type", "application/grpc")
            .with_response_header("content-type", "application/grpc");
        match status {
            Some(code) => host.with_response_trailer("grpc-status", code.to_string()),
            None => host,
        }
    }

    const RATE_0: &str = r#"{"default_sample_rate": 0}"#;

    #[test]
    fn routine_calls_cost_one_read_more_and_plain_http_none() {
        let s = settings(RATE_0);
        let ok = call("/shop.Catalog/List", Some(0));
        assert!(run(&s, &ok, true).is_none());
        assert_eq!(
            ok.calls.get(),
            4,
            "the header map, :status, the AUDIT mark and the gRPC status"
        );
        // The same path without a gRPC content type: plain HTTP, three calls.
        let plain = FakeHost::request("POST", "/shop.Catalog/List", 200);
        assert!(run(&s, &plain, true).is_none());
        assert_eq!(plain.calls.get(), 3);
    }

    #[test]
    fn refusals_from_the_service_are_security_outcomes() {
        let s = settings(RATE_0);
        for (code, kind, name) in [
            (7, "denied", "PERMISSION_DENIED"),
            (16, "auth_failure", "UNAUTHENTICATED"),
            (8, "rate_limited", "RESOURCE_EXHAUSTED"),
        ] {
            let host = call("/shop.Admin/DeleteUser", Some(code))
                .with_property("response.code_details", "via_upstream");
            let r = run(&s, &host, true).unwrap_or_else(|| panic!("{name} is audited"));
            assert_eq!(r["kind"], kind, "{name}");
            assert_eq!(r["why"]["reason"], "security_outcome");
            assert_eq!(r["response"]["code"], 200);
            assert_eq!(
                r["grpc"],
                serde_json::json!({"service": "shop.Admin", "method": "DeleteUser",
                    "status": {"code": code, "name": name}}),
                "{name}"
            );
        }
        let denied = run(
            &s,
            &call("/shop.Admin/DeleteUser", Some(7))
                .with_property("response.code_details", "via_upstream"),
            true,
        )
        .unwrap();
        assert_eq!(
            (&denied["authz"]["by"], &denied["authz"]["basis"]),
            (&"upstream".into(), &"upstream".into())
        );
        let unauthenticated = run(&s, &call("/shop.Auth/Check", Some(16)), true).unwrap();
        assert_eq!(unauthenticated["authn"]["method"], "upstream");
        // Other failures stay routine.
        for code in [2, 5, 13, 14] {
            assert!(run(&s, &call("/shop.Catalog/List", Some(code)), true).is_none());
        }
    }

    #[test]
    fn local_replies_carry_both_statuses() {
        let s = settings(RATE_0);
        // RBAC's local reply to a gRPC client: trailers-only, the status in the headers.
        let host = FakeHost::request("POST", "/shop.Secret/Get", 200)
            .with_request_header("content-type", "application/grpc+proto")
            .with_response_header("grpc-status", "7")
            .with_response_header("grpc-message", "RBAC: access denied")
            .with_property(
                "response.code_details",
                "rbac_access_denied_matched_policy[ns[shop]-policy[deny-secret]-rule[0]]",
            );
        let r = run(&s, &host, false).expect("audited");
        assert_eq!(r["kind"], "denied");
        assert_eq!(r["response"]["code"], 200);
        assert_eq!(r["grpc"]["status"]["code"], 7);
        assert_eq!(r["authz"]["policy_name"], "deny-secret");
        assert!(
            r["grpc"].get("message").is_none(),
            "the message only at level request"
        );
        // local_ratelimit answers UNAVAILABLE; its details say what it was.
        let limited = FakeHost::request("POST", "/shop.Catalog/List", 200)
            .with_request_header("content-type", "application/grpc")
            .with_response_header("grpc-status", "14")
            .with_property("response.code_details", "local_rate_limited");
        let r = run(&s, &limited, false).expect("audited");
        assert_eq!(r["kind"], "rate_limited");
        assert_eq!(r["grpc"]["status"]["name"], "UNAVAILABLE");
    }

    #[test]
    fn an_unparsable_status_is_recorded_as_such() {
        let s = settings(r#"{"default_sample_rate": 1}"#);
        let host = FakeHost::request("POST", "/a/b/c", 200)
            .with_request_header("content-type", "application/grpc")
            .with_response_trailer("grpc-status", "7x");
        let r = run(&s, &host, true).expect("sampled in");
        assert_eq!(r["kind"], "access");
        assert_eq!(
            r["grpc"],
            serde_json::json!({"status": {"code": -1}}),
            "no service or method in a three-segment path, and no name for -1"
        );
    }

    #[test]
    fn recorded_calls_read_their_status_once() {
        let s = settings(r#"{"default_sample_rate": 1}"#);
        let host = call("/shop.Catalog/List", Some(0)).with_int_property("connection.id", 3);
        let r = run(&s, &host, true).expect("sampled in");
        assert_eq!(r["grpc"]["status"]["name"], "OK");
        // The header map, the time, the record's facts, the gRPC status, the connection.
        assert_eq!(host.calls.get(), 5);
        let plain =
            FakeHost::request("GET", "/products", 200).with_int_property("connection.id", 3);
        run(&s, &plain, true).expect("sampled in");
        assert_eq!(plain.calls.get(), 4);
    }

    #[test]
    fn rules_match_services_methods_and_grpc_statuses() {
        let s = settings(
            r#"{"default_sample_rate": 0, "rules": [
                {"name": "admin-delete", "match": {"grpc_methods": ["shop.Admin/DeleteUser"]},
                 "action": "audit", "level": "request"},
                {"name": "payments", "match": {"grpc_services": ["pay.*"]}, "action": "audit"},
                {"name": "internal", "match": {"status": ["grpc:INTERNAL", "grpc:4"]}, "action": "audit"}
            ]}"#,
        );
        let rule = |host: &FakeHost| run(&s, host, true).map(|r| r["why"]["rule"].clone());
        assert_eq!(
            rule(&call("/shop.Admin/DeleteUser", Some(0))),
            Some("admin-delete".into())
        );
        assert_eq!(rule(&call("/shop.Admin/ListUsers", Some(0))), None);
        assert_eq!(
            rule(&call("/pay.v1.Refunds/Create", Some(0))),
            Some("payments".into())
        );
        assert_eq!(rule(&call("/payx.Refunds/Create", Some(0))), None);
        assert_eq!(
            rule(&call("/shop.Catalog/List", Some(13))),
            Some("internal".into())
        );
        assert_eq!(
            rule(&call("/shop.Catalog/List", Some(4))),
            Some("internal".into())
        );
        // A gRPC status condition never matches a plain HTTP request, whatever its status.
        assert_eq!(
            rule(&FakeHost::request("GET", "/shop.Catalog/List", 500)),
            None
        );
        // Service and method conditions read the path whatever the content type (Connect).
        let connect = FakeHost::request("POST", "/shop.Admin/DeleteUser", 200)
            .with_request_header("content-type", "application/json");
        let r = run(&s, &connect, true).expect("audited");
        assert_eq!(r["why"]["rule"], "admin-delete");
        assert!(
            r.get("grpc").is_none(),
            "not a gRPC call: no gRPC status read"
        );
    }

    #[test]
    fn the_message_is_recorded_at_level_request_redacted_like_a_header() {
        let rules = r#""rules": [{"name": "admin", "match": {"grpc_services": ["shop.Admin"]},
            "action": "audit", "level": "request"}]"#;
        let host = || {
            call("/shop.Admin/DeleteUser", Some(7))
                .with_response_trailer("grpc-message", "user jane@example.com lacks role\n")
        };
        let clear = settings(&format!("{{{rules}}}"));
        let r = run(&clear, &host(), true).expect("audited");
        assert_eq!(r["grpc"]["message"], "user jane@example.com lacks role\n");
        let masked = settings(&format!(
            r#"{{"redaction": {{"sensitive_headers": ["grpc-message"]}}, {rules}}}"#
        ));
        let r = run(&masked, &host(), true).expect("audited");
        let message = r["grpc"]["message"].as_str().unwrap();
        assert!(!message.contains("jane"), "{message}");
    }
}

#[test]
fn a_refusal_by_the_application_behind_an_allowing_rbac_filter_is_the_applications() {
    let s = settings(r#"{"default_sample_rate": 0}"#);
    let host = FakeHost::request("DELETE", "/orders/7", 403)
        .with_property("response.code_details", "via_upstream")
        .with_property(
            "metadata.filter_metadata.envoy.filters.http.rbac",
            rbac_struct(&[("enforced_engine_result", b"allowed")]),
        );
    let r = run(&s, &host, true).expect("a 403 is audited");
    assert_eq!(r["kind"], "denied");
    assert_eq!(
        r["authz"],
        serde_json::json!({"decision": "denied", "by": "upstream", "basis": "upstream"}),
        "RBAC let it through; the decision the client saw is the application's"
    );
}

/// The peer, not the claim: what `source` says, and what keys a caller.
mod callers {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const AUDIT_ALL: &str = r#"{"rules": [{"name": "all", "action": "audit"}]}"#;

    fn on(connection: i64, source: &str) -> FakeHost {
        FakeHost::request("GET", "/orders", 200)
            .with_int_property("connection.id", connection)
            .with_property("source.address", source)
    }

    #[test]
    fn an_address_envoy_took_from_x_forwarded_for_is_a_claim() {
        let s = settings(AUDIT_ALL);
        let mut w = worker(&s);
        let claimed = on(3, "203.0.113.9:0");
        let r: Value =
            serde_json::from_str(&on_log(&s, &mut w, Seen::Headers, &claimed).unwrap()).unwrap();
        assert_eq!(
            r["source"],
            serde_json::json!({"forwarded_for": "203.0.113.9:0", "keyed_by": "connection"}),
            "no peer known without the network mode: keyed by the connection, never the claim"
        );
        // The network mode handed the connection's peer over.
        let mut handed = on(3, "203.0.113.9:0");
        handed
            .connection_peers
            .insert(3, b"127.0.0.1:40000".to_vec());
        let r: Value =
            serde_json::from_str(&on_log(&s, &mut w, Seen::Headers, &handed).unwrap()).unwrap();
        assert_eq!(
            r["source"],
            serde_json::json!({"address": "127.0.0.1:40000", "forwarded_for": "203.0.113.9:0",
                "keyed_by": "peer"})
        );
        // A direct address (its own port) is the peer.
        let direct = on(4, "10.0.0.7:5123");
        let r: Value =
            serde_json::from_str(&on_log(&s, &mut w, Seen::Headers, &direct).unwrap()).unwrap();
        assert_eq!(
            r["source"],
            serde_json::json!({"address": "10.0.0.7:5123", "keyed_by": "peer"})
        );
    }

    #[test]
    fn each_request_has_its_own_forwarded_address() {
        // One kept-alive connection, two claims: each record says its own.
        let s = settings(AUDIT_ALL);
        let mut w = worker(&s);
        for claim in ["203.0.113.9:0", "198.51.100.4:0"] {
            let r: Value =
                serde_json::from_str(&on_log(&s, &mut w, Seen::Headers, &on(5, claim)).unwrap())
                    .unwrap();
            assert_eq!(r["source"]["forwarded_for"], claim);
        }
    }

    #[test]
    fn trusted_forwarded_addresses_key_plaintext_callers() {
        let s = settings(
            r#"{"trust_forwarded_address": true,
                "rules": [{"name": "admin", "match": {"paths": [{"prefix": "/orders"}]}, "action": "audit"}]}"#,
        );
        let mut w = worker(&s);
        let mut host = on(6, "203.0.113.9:0");
        host.connection_peers.insert(6, b"10.0.0.1:1".to_vec());
        let r: Value =
            serde_json::from_str(&on_log(&s, &mut w, Seen::Headers, &host).unwrap()).unwrap();
        assert_eq!(r["source"]["keyed_by"], "forwarded");
        assert_eq!(r["rate_limit"]["window_calls"], 1);
        // The same client behind the same gateway, on another connection: the same caller.
        let mut again = on(7, "203.0.113.9:0");
        again.connection_peers.insert(7, b"10.0.0.1:2".to_vec());
        let r: Value =
            serde_json::from_str(&on_log(&s, &mut w, Seen::Headers, &again).unwrap()).unwrap();
        assert_eq!(r["rate_limit"]["window_calls"], 2);
        // Without the trust, the caller is the gateway's address.
        let untrusted = settings(
            r#"{"rules": [{"name": "admin", "match": {"paths": [{"prefix": "/orders"}]}, "action": "audit"}]}"#,
        );
        let mut w = worker(&untrusted);
        for (id, claim) in [(8, "203.0.113.9:0"), (9, "198.51.100.4:0")] {
            let mut host = on(id, claim);
            host.connection_peers
                .insert(id as u64, b"10.0.0.1:3".to_vec());
            on_log(&untrusted, &mut w, Seen::Headers, &host).unwrap();
        }
        let mut third = on(10, "192.0.2.1:0");
        third.connection_peers.insert(10, b"10.0.0.1:4".to_vec());
        let r: Value =
            serde_json::from_str(&on_log(&untrusted, &mut w, Seen::Headers, &third).unwrap())
                .unwrap();
        assert_eq!(
            (&r["source"]["keyed_by"], &r["rate_limit"]["window_calls"]),
            (&"peer".into(), &3.into()),
            "three claims, one peer: one caller"
        );
    }
}

/// Every plausible reading matches; disagreement is an event.
mod readings {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const RULES: &str = r#"{"default_sample_rate": 0, "rules": [
        {"name": "admin", "match": {"paths": [{"prefix": "/admin"}]}, "action": "audit"},
        {"name": "deletes", "match": {"methods": ["DELETE"]}, "action": "audit"},
        {"name": "api-host", "match": {"hosts": ["api.internal"]}, "action": "audit"},
        {"name": "ambiguous", "match": {"ambiguous": true}, "action": "audit", "security_budget": false,
         "budget": {"records_per_second": 1, "burst": 1}}
    ]}"#;

    fn record(host: &FakeHost) -> Option<Value> {
        run(&settings(RULES), host, true)
    }

    #[test]
    fn a_routing_header_naming_a_sensitive_path_matches_its_rule() {
        let host = FakeHost::request("GET", "/public", 200)
            .with_request_header("x-original-url", "/admin/users?token=s3cret");
        let r = record(&host).expect("audited by the admin rule");
        assert_eq!(r["why"]["rule"], "admin");
        assert_eq!(
            r["why"]["matched_on"],
            serde_json::json!(["x-original-url"])
        );
        assert_eq!(
            r["request"]["routing"],
            serde_json::json!({"x-original-url": "/admin/users"})
        );
        assert_eq!(
            r["request"]["ambiguities"],
            serde_json::json!(["routing_header"])
        );
        assert!(
            !r.to_string().contains("s3cret"),
            "the header's query is never recorded"
        );
        // The routine path's cost is unchanged: everything came from the header map.
        let routine = FakeHost::request("GET", "/public", 200);
        assert!(record(&routine).is_none());
        assert_eq!(routine.calls.get(), 3);
    }

    #[test]
    fn every_method_override_counts_and_conflicts_are_recorded() {
        let host = FakeHost::request("POST", "/items/7", 200)
            .with_request_header("x-http-method-override", "GET")
            .with_request_header("x-http-method", "DELETE");
        let r = record(&host).expect("the DELETE one upstream reads");
        assert_eq!(r["why"]["rule"], "deletes");
        assert_eq!(r["why"]["matched_on"], serde_json::json!(["x-http-method"]));
        assert_eq!(
            r["request"]["method_overrides"],
            serde_json::json!({"x-http-method-override": "GET", "x-http-method": "DELETE"})
        );
        assert_eq!(r["request"]["method_override"], "GET");
        assert_eq!(
            r["request"]["ambiguities"],
            serde_json::json!(["method_override_conflict"])
        );
        let query = FakeHost::request("POST", "/items/7?_method=DELETE", 200);
        let r = record(&query).expect("Symfony and Laravel read _method from the query");
        assert_eq!(r["why"]["matched_on"], serde_json::json!(["_method"]));
    }

    #[test]
    fn a_host_with_a_trailing_dot_is_the_same_name() {
        let host = FakeHost::request("GET", "/x", 200)
            .with_request_header(":authority", "API.internal.:8443");
        let r = record(&host).expect("the same fully qualified name");
        assert_eq!(r["why"]["rule"], "api-host");
        assert_eq!(
            r["request"]["ambiguities"],
            serde_json::json!(["host_trailing_dot"])
        );
    }

    #[test]
    fn ambiguous_requests_are_audited_on_the_routine_budget() {
        let config = |class: &str| {
            settings(&format!(
                r#"{{"default_sample_rate": 0, "budgets": {{"routine": {{"records_per_second": 1, "burst": 1}}}},
                    "rules": [{{"name": "ambiguous", "match": {{"ambiguous": true}}, "action": "audit"{class}}}]}}"#
            ))
        };
        let crafted = || FakeHost::request("GET", "/files/..;/x", 200);
        let routine = config(r#", "security_budget": false"#);
        let mut w = worker(&routine);
        let first: Value =
            serde_json::from_str(&on_log(&routine, &mut w, Seen::Headers, &crafted()).unwrap())
                .unwrap();
        assert_eq!(first["why"]["rule"], "ambiguous");
        assert_eq!(
            first["request"]["ambiguities"],
            serde_json::json!(["path_semicolon", "path_dot_segment"])
        );
        // The flood is held to the routine budget (1, burst 1), not the security one: a
        // denial still gets through.
        for _ in 0..50 {
            assert!(on_log(&routine, &mut w, Seen::Headers, &crafted()).is_none());
        }
        let denied = FakeHost::request("GET", "/orders", 403);
        let r: Value =
            serde_json::from_str(&on_log(&routine, &mut w, Seen::Headers, &denied).unwrap())
                .unwrap();
        assert_eq!(r["kind"], "denied");
        // A request whose readings agree is not matched by `ambiguous: true`.
        assert!(on_log(
            &routine,
            &mut w,
            Seen::Headers,
            &FakeHost::request("GET", "/files/x", 200)
        )
        .is_none());
        // By default an audit rule's records use the security budget: the flood is not held.
        let security = config("");
        let mut w = worker(&security);
        for _ in 0..5 {
            assert!(on_log(&security, &mut w, Seen::Headers, &crafted()).is_some());
        }
    }
}

#[test]
fn every_record_of_a_stream_names_the_configuration_in_force() {
    let audit_all = settings(r#"{"rules": [{"name": "all", "action": "audit"}]}"#);
    let short = audit_all.short_digest();
    assert!(
        short.len() == 19 && audit_all.digest.starts_with(short) && short.starts_with("sha256:")
    );
    let mut w = worker(&audit_all);
    let host = FakeHost::request("GET", "/x", 200);
    let line = on_log(&audit_all, &mut w, Seen::Headers, &host).unwrap();
    let record: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["config_digest"], short);
    // Beside the envelope, before the record's own members.
    assert!(
        line.contains(&format!(r#""seq":0,"config_digest":"{short}","why""#)),
        "{line}"
    );
    let report = w.report(&audit_all, 1_000_000_000, true);
    let kinds: Vec<Value> = report
        .lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .inspect(|r| assert_eq!(r["config_digest"], short, "{r}"))
        .map(|r| r["kind"].clone())
        .collect();
    assert!(kinds.contains(&Value::from("accounting")));
    // Another configuration, another name.
    let other =
        settings(r#"{"rules": [{"name": "all", "action": "audit"}], "default_sample_rate": 0}"#);
    let line = on_log(&other, &mut worker(&other), Seen::Headers, &host).unwrap();
    assert_ne!(other.short_digest(), short);
    assert!(line.contains(other.short_digest()));
}
