//! One request through the whole flow (canonicalisation, rule matching, the outcome, the
//! record's encoding) under configurations that use every kind of condition: any input
//! gives at most one record, one valid JSON line within its cap.
#![no_main]

mod common;

use common::{check_record, fields, FuzzHost};
use libfuzzer_sys::fuzz_target;
use meshaudit::core::{on_log, on_request_start, serialize_header_map, Seen, Settings, Worker};
use std::sync::OnceLock;

const CONFIGS: [&str; 3] = [
    r#"{"default_sample_rate": 0.5, "redaction": {"query_params": ["page", "token"]}, "rules": [
        {"name": "health", "match": {"paths": [{"exact": "/healthz"}]}, "action": "drop"},
        {"name": "admin", "match": {"paths": [{"prefix": "/admin"}], "case_insensitive": true},
         "action": "audit", "level": "request", "request_headers": ["user-agent", "authorization", "x-a"],
         "record_start": true},
        {"name": "roles", "match": {"paths": [{"glob": "/api/*/users/**/roles"}], "methods": ["PUT", "DELETE"]},
         "action": "audit"},
        {"name": "hosts", "match": {"hosts": ["*.example.com"], "headers": [{"name": "x-debug", "present": true}]},
         "action": "sample", "sample_rate": 0.1}
    ]}"#,
    r#"{"default_sample_rate": 0, "authorization": {"shadow_results": true}, "rules": [
        {"name": "errors", "match": {"status": ["5xx", 404, "grpc:INTERNAL"]}, "action": "audit"},
        {"name": "grpc", "match": {"grpc_services": ["shop.*"], "grpc_methods": ["shop.Admin/Delete"]},
         "action": "audit", "level": "request"},
        {"name": "callers", "match": {"mtls": true, "namespaces": ["shop"]}, "action": "audit"},
        {"name": "ambiguous", "match": {"ambiguous": true}, "action": "audit", "security_budget": false}
    ]}"#,
    r#"{"limits": {"max_field_bytes": 64, "max_record_bytes": 4096}, "default_sample_rate": 1,
        "redaction": {"path_placeholders": {"segments": [{"glob": "acct-*", "placeholder": "account"}]}},
        "rules": [{"name": "all", "action": "audit", "level": "request", "request_headers": ["x-a", "x-b", "cookie"]}]}"#,
];

fn settings() -> &'static [Settings] {
    static SETTINGS: OnceLock<Vec<Settings>> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        CONFIGS
            .iter()
            .map(|c| Settings::from_json(c.as_bytes()).expect("a shipped fuzz configuration"))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let [selector, method, path, authority, header, status, details, grpc_status, content_type, rbac] =
        fields(data, 10)[..]
    else {
        return;
    };
    let all = settings();
    let settings = &all[usize::from(selector.first().copied().unwrap_or(0)) % all.len()];
    let request: Vec<(&str, &[u8])> = vec![
        (":method", method),
        (":path", path),
        (":authority", authority),
        ("content-type", content_type),
        ("x-a", header),
        ("x-debug", header),
        ("authorization", header),
        ("x-http-method-override", method),
        ("x-http-method", header),
        ("x-original-url", details),
        ("traceparent", header),
        ("x-request-id", header),
    ];
    let mut host = FuzzHost {
        request_map: serialize_header_map(&request),
        ..FuzzHost::default()
    };
    host.response_headers
        .insert(":status".into(), status.to_vec());
    host.response_trailers
        .insert("grpc-status".into(), grpc_status.to_vec());
    host.response_trailers
        .insert("grpc-message".into(), header.to_vec());
    host.properties
        .insert("response.code_details".into(), details.to_vec());
    host.properties
        .insert("response.grpc_status".into(), grpc_status.to_vec());
    host.properties.insert(
        "metadata.filter_metadata.envoy.filters.http.rbac".into(),
        rbac.to_vec(),
    );
    host.properties.insert(
        "metadata.filter_metadata.envoy.common.access_log_hint".into(),
        rbac.to_vec(),
    );
    host.properties
        .insert("source.address".into(), authority.to_vec());
    let mut worker = Worker::new(settings, "fuzz".into(), 7, 0);
    let seen = if selector.get(1).is_some_and(|b| b & 1 == 0) {
        match on_request_start(settings, &mut worker, &host) {
            Some(line) => {
                check_record(settings, &line);
                Seen::Started
            }
            None => Seen::Headers,
        }
    } else {
        Seen::LocalReply
    };
    if let Some(line) = on_log(settings, &mut worker, seen, &host) {
        check_record(settings, &line);
    }
});
