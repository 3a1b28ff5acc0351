use super::*;
use crate::core::host::FakeHost;
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

fn settings(json: &str) -> Settings {
    Settings::from_json(json.as_bytes()).unwrap()
}

fn worker() -> Worker {
    Worker::new("test-proxy".to_string(), 1)
}

/// Runs a request through the filter as Envoy would: capture, then on_log.
fn run(settings: &Settings, host: &FakeHost, headers_reached_plugin: bool) -> Option<Value> {
    let capture = headers_reached_plugin.then(|| RequestCapture::read(settings, host));
    on_log(settings, &mut worker(), capture, host).map(|line| {
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
    assert_eq!(r["request"]["path"], "//admin/../admin/users;x=1");
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
fn routine_request_costs_two_host_calls_when_dropped() {
    let s = settings(CONFIG);
    let host = FakeHost::request("GET", "/healthz", 200);
    assert!(run(&s, &host, true).is_none());
    assert_eq!(
        host.calls.get(),
        2,
        ":path in the request callback, :status in on_log"
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
        ":path, :status and the header map for the trace id"
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
            let mut w = Worker::new("x".into(), seed);
            let capture = RequestCapture::read(&s, &host);
            on_log(&s, &mut w, Some(capture), &host)
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
    let capture = RequestCapture::read(&s, &host);
    let line = on_log(&s, &mut worker(), Some(capture), &host).unwrap();
    assert!(line.len() <= 4096, "{} bytes", line.len());
    let r: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(r["truncated"], true);
    assert!(r["request"].get("headers").is_none());
    assert_eq!(r["request"]["canonical_path"], "/big");
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
    assert_eq!(req["path"], "/users/{email}/{account}/cards/{digits}");
    assert_eq!(
        req["canonical_path"],
        "/users/{email}/{account}/cards/{digits}"
    );
    assert_eq!(req["query"], "page=2&token=[masked, 5 bytes]");
    assert!(req.get("query_removed").is_none());
    assert_eq!(req["headers"]["x-internal-token"], "[masked, 15 bytes]");
    let pseudonym = req["headers"]["x-user-id"].as_str().unwrap();
    assert!(pseudonym.starts_with("hmac-sha256:"), "{pseudonym}");
    assert!(req["headers"].get("cookie").is_none(), "omitted");
    assert_eq!(
        req["pseudonym_key_id"],
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
    for header in METHOD_OVERRIDE_HEADERS {
        let host =
            FakeHost::request("POST", "/orders/1", 200).with_request_header(header, "DELETE");
        let r = run(&s, &host, true).unwrap_or_else(|| panic!("{header} dodged the rule"));
        assert_eq!(r["why"]["rule"], "deletes");
        assert_eq!(r["request"]["method"], "POST");
        assert_eq!(r["request"]["method_override"], "DELETE");
    }
    // Method rules read the whole map once instead of five headers one by one.
    let host = FakeHost::request("GET", "/orders/1", 200);
    host.reset_calls();
    let _ = RequestCapture::read(&s, &host);
    assert_eq!(host.calls.get(), 1);
}
