use super::defaults::DEFAULT_SAMPLE_RATE;
use super::*;
use crate::core::redact::Redact;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn err(json: &str) -> String {
    Settings::from_json(json.as_bytes())
        .unwrap_err()
        .to_string()
}

#[test]
fn empty_config_gives_documented_defaults() {
    for input in ["", "  \n", "{}"] {
        let s = Settings::from_json(input.as_bytes()).unwrap();
        assert_eq!(s.version, 1);
        assert_eq!(s.log_level, LogLevel::Warn);
        assert!(s.always_audit_security_outcomes);
        assert_eq!(s.default_sample_rate, DEFAULT_SAMPLE_RATE);
        assert_eq!(s.limits.max_field_bytes, 1024);
        assert_eq!(s.limits.max_record_bytes, 16384);
        assert!(s.rules.is_empty());
        assert!(s.canonical.decode_escaped_slashes && s.canonical.backslash_is_slash);
    }
}

#[test]
fn digest_is_sha256_of_the_bytes() {
    let s = Settings::from_json(b"{}").unwrap();
    assert_eq!(
        s.digest,
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
}

#[test]
fn istio_whole_doubles_are_accepted_for_integers() {
    let s = Settings::from_json(
        br#"{"version": 1.0, "limits": {"max_field_bytes": 2048.0},
             "rules": [{"name": "e", "match": {"status": [404.0, "5XX"]}, "action": "audit"}]}"#,
    )
    .unwrap();
    assert_eq!(s.limits.max_field_bytes, 2048);
    assert_eq!(
        s.rules[0].matcher.status,
        [StatusMatcher::Code(404), StatusMatcher::Class(5)]
    );
}

#[test]
fn a_full_rule_compiles() {
    let s = Settings::from_json(
        br#"{"rules": [{"name": "admin-api", "action": "audit", "level": "request",
              "request_headers": ["user-agent", {"name": "x-user", "redact": "mask"}, {"name": "x-callback", "url": true}],
              "match": {"paths": [{"prefix": "/Admin"}, {"glob": "/api/**/roles"}], "case_insensitive": true,
                        "methods": ["post"], "hosts": ["*.Example.com"],
                        "headers": [{"name": "x-a", "present": true}, {"name": "x-b", "equals": "1"}, {"name": "x-a", "present": false}]}}]}"#,
    )
    .unwrap();
    let rule = &s.rules[0];
    assert_eq!(
        rule.request_headers,
        [
            RecordedHeader {
                name: "user-agent".into(),
                redact: None,
                url: false
            },
            RecordedHeader {
                name: "x-user".into(),
                redact: Some(Redact::Mask),
                url: false
            },
            RecordedHeader {
                name: "x-callback".into(),
                redact: None,
                url: true
            },
        ]
    );
    assert_eq!(rule.matcher.methods, ["POST"]);
    assert_eq!(
        rule.matcher.hosts,
        [HostMatcher::Suffix(".example.com".into())]
    );
    assert!(matches!(&rule.matcher.paths[0], PathMatcher::Prefix(p) if p == b"/admin"));
    assert_eq!(s.reads.headers, ["x-a", "x-b"]);
    assert_eq!(
        rule.matcher.headers[2],
        HeaderMatcher {
            header: 0,
            condition: HeaderCondition::Absent
        }
    );
    assert!(
        !s.reads.peer && !s.reads.status,
        "no rule matches on the caller or the status"
    );
}

#[test]
fn a_start_recording_rule_above_a_status_rule_is_accepted() {
    let s = Settings::from_json(
        br#"{"rules": [{"name": "admin", "match": {"paths": [{"prefix": "/admin"}]}, "action": "audit", "record_start": true},
                       {"name": "errors", "match": {"status": ["5xx"]}, "action": "audit"}]}"#,
    )
    .unwrap();
    assert!(s.reads.start && s.reads.status);
    assert!(s.rules[0].record_start && !s.rules[1].record_start);
    let without =
        Settings::from_json(br#"{"rules": [{"name": "admin", "action": "audit"}]}"#).unwrap();
    assert!(
        !without.reads.start,
        "no rule records starts: the request callback reads nothing"
    );
}

/// Each invalid configuration, and the exact line an operator reads.
#[test]
fn every_error_names_the_field_and_the_reason() {
    let cases: &[(&str, &str)] = &[
        (r#"{"rules": [{"name": "a", "action": "audt"}]}"#,
         "rules[0].action: unknown variant `audt`, expected one of `audit`, `sample`, `drop` at line 1 column 41"),
        (r#"{"rulez": []}"#, "rulez: unknown field `rulez`, expected one of `version`, `instance_id`, `log_level`, `always_audit_security_outcomes`, `default_sample_rate`, `trust_forwarded_address`, `path_normalization`, `limits`, `redaction`, `reporting`, `authorization`, `authentication`, `network`, `budgets`, `rate_limit`, `output`, `rules` at line 1 column 8"),
        (r#"{"version": 2}"#, "version: unsupported configuration version 2; this plugin reads version 1"),
        (r#"{"version": 1.5}"#, "version: expected a whole non-negative number, got 1.5 at line 1 column 15"),
        (r#"{"log_level": "loud"}"#, "log_level: unknown log level \"loud\"; expected one of trace, debug, info, warn, error, critical"),
        (r#"{"default_sample_rate": 1.5}"#, "default_sample_rate: must be a fraction from 0 to 1, got 1.5"),
        (r#"{"limits": {"max_record_bytes": 10}}"#, "limits.max_record_bytes: must be from 4096 to 1048576, got 10"),
        (r#"{"instance_id": ""}"#, "instance_id: must be 1 to 256 bytes of printable text"),
        (r#"{"rules": [{"name": "a", "action": "sample"}]}"#, "rules[0].sample_rate: required with action \"sample\" (a fraction from 0 to 1, e.g. 0.05)"),
        (r#"{"rules": [{"name": "a", "action": "audit", "sample_rate": 0.5}]}"#, "rules[0].sample_rate: only allowed with action \"sample\""),
        (r#"{"rules": [{"name": "a", "action": "sample", "sample_rate": -1}]}"#, "rules[0].sample_rate: must be a fraction from 0 to 1, got -1"),
        (r#"{"rules": [{"name": "a", "action": "audit"}, {"name": "a", "action": "drop"}]}"#, "rules[1].name: duplicate rule name \"a\"; rule names must be unique"),
        (r#"{"rules": [{"name": "Admin API", "action": "audit"}]}"#, "rules[0].name: \"Admin API\" is not a valid rule name: use 1 to 64 of a-z, 0-9, '-', '_', starting with a letter or digit"),
        (r#"{"rules": [{"name": "_x", "action": "audit"}]}"#, "rules[0].name: \"_x\" is not a valid rule name: use 1 to 64 of a-z, 0-9, '-', '_', starting with a letter or digit"),
        (r#"{"budgets": {"security": {"records_per_second": 0}}}"#, "budgets.security.records_per_second: must be from 0.001 to 1000000, got 0"),
        (r#"{"budgets": {"routine": {"records_per_second": 5, "burst": 0}}}"#, "budgets.routine.burst: must be from 1 to 1000000, got 0"),
        (r#"{"rules": [{"name": "a", "action": "drop", "budget": {"records_per_second": 1}}]}"#, "rules[0].budget: a \"drop\" rule writes no record, so a budget has no effect; remove it"),
        (r#"{"rate_limit": {"window_seconds": 0}}"#, "rate_limit.window_seconds: must be from 1 to 86400, got 0"),
        (r#"{"output": {"log": false}}"#, "output: request records must go somewhere: keep \"log\" or turn on \"filter_state\""),
        (r#"{"rules": [{"name": "a", "action": "audit", "request_headers": ["x"]}]}"#, "rules[0].request_headers: headers are only recorded at level \"request\"; set \"level\": \"request\" or remove the list"),
        (r#"{"rules": [{"name": "a", "action": "drop", "level": "request"}]}"#, "rules[0].level: a \"drop\" rule writes no record, so a level has no effect; remove it"),
        (r#"{"rules": [{"name": "a", "action": "audit", "level": "request", "request_headers": ["a", "a"]}]}"#, "rules[0].request_headers[1]: \"a\" is listed twice"),
        (r#"{"rules": [{"name": "a", "action": "audit", "level": "request", "request_headers": [{"name": "a", "redact": "clear"}]}]}"#,
         "rules[0].request_headers[0].redact: unknown variant `clear`, expected one of `omit`, `mask`, `hash` at line 1 column 115"),
        (r#"{"rules": [{"name": "a", "action": "audit", "level": "request", "request_headers": [{"name": "a", "url": 1}]}]}"#,
         "rules[0].request_headers[0].url: invalid type: integer `1`, expected a boolean at line 1 column 106"),
        (r#"{"redaction": {"min_token_chars": 8}}"#, "redaction.min_token_chars: must be from 16 to 1024, got 8"),
        (r#"{"redaction": {"not_sensitive": ["a;b"]}}"#, "redaction.not_sensitive[0]: \"a;b\" is not a name: 1 to 128 bytes, without '&', '=', '#' or ';'"),
        (r#"{"rules": [{"name": "a", "action": "audit", "level": "request", "request_headers": [7]}]}"#,
         "rules[0].request_headers[0]: invalid type: integer `7`, expected a header name, or {\"name\": ..., \"redact\": \"omit\" | \"mask\" | \"hash\", \"url\": true} at line 1 column 85"),
        (r#"{"rules": [{"name": "a", "action": "audit", "level": "request", "request_headers": [{"name": "a", "redact": "hash"}]}]}"#,
         "rules[0].request_headers[0].redact: \"hash\" needs an HMAC key, but the environment variable MESHAUDIT_HMAC_KEY is not set in the Wasm VM (Envoy: vm_config.environment_variables; Istio: WasmPlugin spec.vmConfig.env)"),
        (r#"{"redaction": {"sensitive_header_action": "hash", "hash_key_env": "MY_KEY"}}"#,
         "redaction.sensitive_header_action: \"hash\" needs an HMAC key, but the environment variable MY_KEY is not set in the Wasm VM (Envoy: vm_config.environment_variables; Istio: WasmPlugin spec.vmConfig.env)"),
        (r#"{"redaction": {"hash_key_env": "1BAD"}}"#, "redaction.hash_key_env: \"1BAD\" is not an environment variable name"),
        (r#"{"redaction": {"sensitive_headers": ["X-Token"]}}"#, "redaction.sensitive_headers[0]: header names are matched in lowercase, as Envoy stores them; write \"x-token\""),
        (r#"{"redaction": {"query_params": ["a=b"]}}"#, "redaction.query_params[0]: \"a=b\" is not a name: 1 to 128 bytes, without '&', '=', '#' or ';'"),
        (r#"{"redaction": {"path_placeholders": {"segments": [{"glob": "a/b", "placeholder": "x"}]}}}"#,
         "redaction.path_placeholders.segments[0].glob: a glob over one path segment: no '/', 1 to 1024 bytes (e.g. \"user-*\")"),
        (r#"{"redaction": {"path_placeholders": {"segments": [{"glob": "u-*", "placeholder": "{u}"}]}}}"#,
         "redaction.path_placeholders.segments[0].placeholder: \"{u}\" is not a placeholder name: use 1 to 32 of a-z, 0-9, '_' (written as {name})"),
        (r#"{"redaction": {"path_placeholders": {"min_digits": 65}}}"#, "redaction.path_placeholders.min_digits: must be from 0 to 64, got 65"),
        (r#"{"rules": [{"name": "a", "action": "audit", "level": "request", "request_headers": ["User-Agent"]}]}"#, "rules[0].request_headers[0]: header names are matched in lowercase, as Envoy stores them; write \"user-agent\""),
        (r#"{"rules": [{"name": "a", "action": "audit", "match": {"paths": [{"prefix": "admin"}]}}]}"#, "rules[0].match.paths[0].prefix: must start with '/', got \"admin\""),
        (r#"{"rules": [{"name": "a", "action": "audit", "match": {"paths": [{"exact": "//admin/./x"}]}}]}"#, "rules[0].match.paths[0].exact: \"//admin/./x\" is not in canonical form (rules match canonical paths); write \"/admin/x\""),
        (r#"{"rules": [{"name": "a", "action": "audit", "match": {"paths": [{"exact": "/a?b=1"}]}}]}"#, "rules[0].match.paths[0].exact: rules match the path without its query string; remove '?' and what follows"),
        (r#"{"rules": [{"name": "a", "action": "audit", "match": {"paths": [{"glob": "/a**"}]}}]}"#, "rules[0].match.paths[0].glob: '**' must be a whole path segment (as in '/a/**/b'), got segment 'a**'"),
        (r#"{"rules": [{"name": "a", "action": "audit", "match": {"paths": [{"regex": "/a"}]}}]}"#, "rules[0].match.paths[0].regex: unknown variant `regex`, expected one of `exact`, `prefix`, `glob` at line 1 column 72"),
        (r#"{"rules": [{"name": "a", "action": "audit", "match": {"methods": ["GET POST"]}}]}"#, "rules[0].match.methods[0]: \"GET POST\" is not an HTTP method (a token such as GET or POST)"),
        (r#"{"rules": [{"name": "a", "action": "audit", "match": {"hosts": ["https://x.com"]}}]}"#, "rules[0].match.hosts[0]: \"https://x.com\" is not a host name; write \"api.example.com\" or \"*.example.com\" (no port, no scheme)"),
        (r#"{"rules": [{"name": "a", "action": "audit", "match": {"headers": [{"name": "x a", "present": true}]}}]}"#, "rules[0].match.headers[0].name: \"x a\" is not an HTTP header name"),
        (r#"{"rules": [{"name": "a", "action": "audit", "match": {"principals": [""]}}]}"#, "rules[0].match.principals[0]: a principal such as \"spiffe://cluster.local/ns/shop/sa/checkout\", or a prefix ending in '*'"),
        (r#"{"rules": [{"name": "a", "action": "audit", "match": {"namespaces": ["Shop"]}}]}"#, "rules[0].match.namespaces[0]: \"Shop\" is not a Kubernetes namespace name"),
        (r#"{"rules": [{"name": "a", "action": "audit", "match": {"headers": [{"name": "x"}]}}]}"#, "rules[0].match.headers[0]: give exactly one of \"present\" (true/false) or \"equals\" (a value)"),
        (r#"{"rules": [{"name": "a", "action": "sample", "sample_rate": 1, "record_start": true}]}"#, "rules[0].record_start: only an \"audit\" rule records a request's start (other rules decide at its end, by sampling or outcome); remove it"),
        (r#"{"rules": [{"name": "a", "match": {"status": [500]}, "action": "audit", "record_start": true}]}"#, "rules[0].record_start: the rule matches on the response status, which a request does not have when it starts; remove the status condition or record_start"),
        (r#"{"rules": [{"name": "errors", "match": {"status": ["5xx"]}, "action": "drop"}, {"name": "admin", "action": "audit", "record_start": true}]}"#, "rules[1].record_start: rules[0] (\"errors\"), before this rule, matches on the response status, so which rule decides is not known when the request starts; move this rule above it or remove record_start"),
        (r#"{"rules": [{"name": "a", "action": "sample", "sample_rate": 1, "security_budget": false}]}"#, "rules[0].security_budget: only an \"audit\" rule chooses its budget class (other rules' records are routine); remove it"),
        (r#"{"rules": [{"name": "a", "action": "audit", "match": {"status": [600]}}]}"#, "rules[0].match.status[0]: status code must be 100 to 599, got 600"),
        (r#"{"rules": [{"name": "a", "action": "audit", "match": {"status": ["4xy"]}}]}"#, "rules[0].match.status[0]: \"4xy\" is not a status class; expected \"1xx\" to \"5xx\", a code such as 404, or a gRPC status such as \"grpc:PERMISSION_DENIED\""),
        (r#"{"rules": [{"name": "a", "action": "audit", "match": {"status": ["grpc:DENIED"]}}]}"#, "rules[0].match.status[0]: \"grpc:DENIED\" is not a gRPC status; write \"grpc:\" and a canonical name such as \"grpc:PERMISSION_DENIED\" or a code 0 to 16"),
        (r#"{"rules": [{"name": "a", "action": "audit", "match": {"status": ["grpc:17"]}}]}"#, "rules[0].match.status[0]: \"grpc:17\" is not a gRPC status; write \"grpc:\" and a canonical name such as \"grpc:PERMISSION_DENIED\" or a code 0 to 16"),
        (r#"{"rules": [{"name": "a", "action": "audit", "match": {"grpc_services": ["/shop.Admin"]}}]}"#, "rules[0].match.grpc_services[0]: \"/shop.Admin\" is not a gRPC service; write its full name such as \"shop.v1.Admin\", or a prefix ending in '*' such as \"shop.*\""),
        (r#"{"rules": [{"name": "a", "action": "audit", "match": {"grpc_services": ["shop..Admin"]}}]}"#, "rules[0].match.grpc_services[0]: \"shop..Admin\" is not a gRPC service; write its full name such as \"shop.v1.Admin\", or a prefix ending in '*' such as \"shop.*\""),
        (r#"{"rules": [{"name": "a", "action": "audit", "match": {"grpc_methods": ["/shop.Admin/DeleteUser"]}}]}"#, "rules[0].match.grpc_methods[0]: \"/shop.Admin/DeleteUser\" is not a gRPC method; write \"<service>/<method>\" such as \"shop.v1.Admin/DeleteUser\" (no leading '/')"),
        (r#"{"rules": [{"name": "a", "action": "audit", "match": {"grpc_methods": ["DeleteUser"]}}]}"#, "rules[0].match.grpc_methods[0]: \"DeleteUser\" is not a gRPC method; write \"<service>/<method>\" such as \"shop.v1.Admin/DeleteUser\" (no leading '/')"),
        (r#"{"rules": [{"name": "a", "action": "audit", "match": {"status": [true]}}]}"#, "rules[0].match.status[0]: invalid type: boolean `true`, expected a status code such as 404, a class such as \"5xx\" or a gRPC status such as \"grpc:PERMISSION_DENIED\" at line 1 column 69"),
        (r#"{"rules": [{"name": "a", "action": "audit", "match": {"pathz": []}}]}"#, "rules[0].match.pathz: unknown field `pathz`, expected one of `paths`, `methods`, `hosts`, `headers`, `status`, `grpc_services`, `grpc_methods`, `ambiguous`, `case_insensitive`, `mtls`, `principals`, `namespaces` at line 1 column 61"),
        (r#"{"rules": [{"name": "a"}]}"#, "rules[0]: missing field `action` at line 1 column 24"),
        (r#"{"rules": {}}"#, "rules: invalid type: map, expected a sequence at line 1 column 10"),
        (r#"{} x"#, "trailing characters at line 1 column 4"),
        (r#"["#, "EOF while parsing a list at line 1 column 1"),
        (r#"{"instance_id": "a\u0001"}"#, "instance_id: must be 1 to 256 bytes of printable text"),
    ];
    for (json, expected) in cases {
        assert_eq!(&err(json), expected, "config: {json}");
    }
}

#[test]
fn the_trail_key_comes_from_the_vm_environment_and_is_refused_when_malformed() {
    let token = "m-1:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let env = |value: &'static str| {
        move |name: &str| (name == "MESHAUDIT_TRAIL_KEY").then(|| value.to_string())
    };
    let s = Settings::from_json_with_env(b"{}", &env(token)).unwrap();
    assert_eq!(s.integrity.as_ref().unwrap().id, "m-1");
    assert!(
        !format!("{s:?}").contains("0001020304"),
        "Debug never shows the key"
    );
    assert!(Settings::from_json(b"{}").unwrap().integrity.is_none());
    let e = Settings::from_json_with_env(b"{}", &env("m-1:00")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the trail key in the VM environment variable MESHAUDIT_TRAIL_KEY: key \"m-1\" is not 64 hex digits (32 bytes); `meshaudit derive-key` makes one"
    );
}

#[test]
fn non_utf8_config_is_an_error_not_a_panic() {
    let e = Settings::from_json(b"{\"instance_id\": \"\xff\"}").unwrap_err();
    assert!(
        e.to_string().contains("invalid unicode") || e.to_string().contains("UTF-8"),
        "{e}"
    );
}

#[test]
fn the_hmac_key_comes_from_the_vm_environment_and_must_be_long_enough() {
    let config = br#"{"redaction": {"hash_key_env": "AUDIT_KEY"},
        "rules": [{"name": "a", "action": "audit", "level": "request", "request_headers": [{"name": "x-user", "redact": "hash"}]}]}"#;
    let env =
        |value: &'static str| move |name: &str| (name == "AUDIT_KEY").then(|| value.to_string());
    let s = Settings::from_json_with_env(config, &env("0123456789abcdef0123")).unwrap();
    let key = s.redaction.hash_key.as_ref().expect("key loaded");
    assert!(key.id.starts_with("k-"));
    assert!(
        !format!("{s:?}").contains("0123456789abcdef0123"),
        "Debug never shows the key"
    );
    let e = Settings::from_json_with_env(config, &env("short")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "rules[0].request_headers[0].redact: the HMAC key in AUDIT_KEY is 5 bytes; use at least 16 random bytes (e.g. `openssl rand -hex 32`)"
    );
    // No `hash` anywhere: no key needed, none read.
    let s = Settings::from_json_with_env(b"{}", &|name| {
        assert_ne!(name, "MESHAUDIT_HMAC_KEY", "no lookup expected");
        None
    })
    .unwrap();
    assert!(s.redaction.hash_key.is_none());
}

/// The rule-name grammar the schema publishes is the one the validator applies.
#[test]
fn rule_names_follow_the_published_pattern() {
    assert_eq!(
        super::defaults::RULE_NAME_PATTERN,
        format!(
            "^[a-z0-9][a-z0-9_-]{{0,{}}}$",
            super::defaults::MAX_RULE_NAME_BYTES - 1
        )
    );
    let accepts = |name: &str| {
        Settings::from_json(
            format!(r#"{{"rules": [{{"name": "{name}", "action": "audit"}}]}}"#).as_bytes(),
        )
        .is_ok()
    };
    for ok in ["a", "0", "admin-api", "a_b", &"x".repeat(64)] {
        assert!(accepts(ok), "{ok}");
    }
    for bad in ["", "a.b", "-a", "_a", "A", "a b", &"x".repeat(65)] {
        assert!(!accepts(bad), "{bad}");
    }
}

#[cfg(feature = "schema")]
mod schema {
    use crate::core::config::raw::RawConfig;
    use serde_json::Value;

    const COMMITTED: &str = include_str!("../../../envoyfilter/meshaudit-config.schema.json");
    const README: &str = include_str!("../../../README.md");

    fn generated() -> Value {
        serde_json::to_value(schemars::schema_for!(RawConfig)).unwrap()
    }

    #[test]
    fn the_committed_schema_is_current() {
        let text = serde_json::to_string_pretty(&schemars::schema_for!(RawConfig)).unwrap() + "\n";
        assert!(
            text == COMMITTED,
            "envoyfilter/meshaudit-config.schema.json is stale: regenerate it with \
             `cargo run --features cli --bin meshaudit -- schema > envoyfilter/meshaudit-config.schema.json`"
        );
    }

    /// The property schema of `path` (`limits.max_field_bytes`, `rules[].level`), through `$ref`s.
    fn property<'a>(schema: &'a Value, path: &str) -> Option<&'a Value> {
        let defs = &schema["$defs"];
        let resolve = |node: &'a Value| -> &'a Value {
            let reference = node["$ref"].as_str().or_else(|| {
                node["anyOf"]
                    .as_array()?
                    .iter()
                    .find_map(|v| v["$ref"].as_str())
            });
            let reference = reference.or_else(|| node["items"]["$ref"].as_str());
            match reference.and_then(|r| r.strip_prefix("#/$defs/")) {
                Some(name) => &defs[name],
                None => node,
            }
        };
        let mut node = schema;
        let mut prop = None;
        for part in path.split('.') {
            let object = resolve(prop.unwrap_or(node));
            let found = object["properties"].get(part.trim_end_matches("[]"))?;
            node = object;
            prop = Some(found);
        }
        prop
    }

    /// `(field, default cell)` of the README's tables under "Configuration reference"
    /// that have a default column; the rule table's fields are under `rules.`.
    fn readme_rows() -> Vec<(String, String)> {
        let section = README
            .split("\n## Configuration reference")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("a Configuration reference section");
        let mut rows = Vec::new();
        let mut prefix = None;
        for line in section.lines() {
            if line.starts_with("| field | type | default |") {
                prefix = Some(if rows.is_empty() { "" } else { "rules." });
                continue;
            }
            if !line.starts_with('|') {
                // A table ends; only the two with a default column are read.
                prefix = None;
                continue;
            }
            if !line.starts_with("| `") {
                continue;
            }
            let Some(prefix) = prefix else { continue };
            let cells: Vec<&str> = line.split(" | ").collect();
            let field = cells[0].trim_start_matches("| ").trim_matches('`');
            rows.push((format!("{prefix}{field}"), cells[2].trim().to_string()));
        }
        rows
    }

    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
            }
            _ => a == b,
        }
    }

    #[test]
    fn the_readme_configuration_table_agrees_with_the_schema() {
        let schema = generated();
        let rows = readme_rows();
        assert!(rows.len() > 30, "the tables were found: {rows:?}");
        for (field, cell) in &rows {
            let property = property(&schema, field)
                .unwrap_or_else(|| panic!("README documents `{field}`, which the schema lacks"));
            let literal = cell
                .strip_prefix('`')
                .and_then(|c| c.strip_suffix('`'))
                .filter(|c| !c.contains('`'))
                .and_then(|c| serde_json::from_str::<Value>(c).ok());
            match (literal, property.get("default")) {
                (Some(readme), Some(schema)) => assert!(
                    same(&readme, schema),
                    "`{field}`: README says {readme}, the schema {schema}"
                ),
                (None, None) => {}
                (Some(readme), None) => {
                    panic!("`{field}`: README gives the default {readme}, the schema none")
                }
                (None, Some(schema)) => {
                    panic!("`{field}`: the schema's default is {schema}, README says {cell:?}")
                }
            }
        }
        // Every default the schema carries is in the README.
        let documented: Vec<&str> = rows.iter().map(|(f, _)| f.as_str()).collect();
        let root = &schema["properties"];
        for (name, prop) in root.as_object().unwrap() {
            if prop.get("default").is_some() {
                assert!(
                    documented.contains(&name.as_str()),
                    "`{name}` is not in the README table"
                );
            }
        }
    }
}
