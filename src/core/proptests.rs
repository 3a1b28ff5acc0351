//! Property-based tests over arbitrary bytes: the core never panics, every
//! record is one valid JSON line, secrets never reach it, canonical paths are stable.

use super::config::Settings;
use super::envoy::headers::HeaderMap;
use super::envoy::host::FakeHost;
use super::path::{canonicalize, CanonicalOptions};
use super::record::json::JsonWriter;
use super::request::{on_log, Seen};
use super::worker::Worker;
use proptest::collection::vec;
use proptest::prelude::*;

fn options() -> impl Strategy<Value = CanonicalOptions> {
    (any::<bool>(), any::<bool>()).prop_map(|(d, b)| CanonicalOptions {
        decode_escaped_slashes: d,
        backslash_is_slash: b,
    })
}

/// Paths biased towards the characters that make canonicalisation interesting.
fn path_bytes() -> impl Strategy<Value = Vec<u8>> {
    let interesting = prop::sample::select(&b"/.%;\\?#aA2fF5cC0e"[..]);
    vec(prop_oneof![3 => interesting, 1 => any::<u8>()], 0..120)
}

/// Arbitrary JSON values, for configurations that are valid JSON but anything else.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        any::<i64>().prop_map(|i| Value::Number(i.into())),
        prop::sample::select(vec![
            "audit", "sample", "drop", "request", "metadata", "/admin", "/a/**", "5xx", "GET",
            "hash", "x-a", "",
        ])
        .prop_map(|s| Value::String(s.to_string())),
        ".{0,12}".prop_map(Value::String),
    ];
    let keys = prop::sample::select(vec![
        "version",
        "rules",
        "name",
        "match",
        "action",
        "sample_rate",
        "level",
        "request_headers",
        "paths",
        "prefix",
        "glob",
        "exact",
        "methods",
        "hosts",
        "headers",
        "status",
        "present",
        "equals",
        "limits",
        "max_field_bytes",
        "redaction",
        "query_params",
        "default_sample_rate",
        "redact",
        "log_level",
    ]);
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(keys.clone().prop_map(str::to_string), inner, 0..5)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn canonicalisation_is_idempotent(path in path_bytes(), options in options()) {
        let once = canonicalize(&path, options);
        prop_assert_eq!(canonicalize(&once, options), once.clone());
        prop_assert!(once.starts_with(b"/"));
        let body = once.strip_prefix(b"/").unwrap_or_default();
        let body = body.strip_suffix(b"/").unwrap_or(body);
        if !body.is_empty() {
            for segment in body.split(|&b| b == b'/') {
                prop_assert!(!segment.is_empty() && segment != b"." && segment != b"..", "segment {:?} in {:?}", segment, once);
            }
        }
    }

    #[test]
    fn the_fast_path_agrees_with_the_full_algorithm(path in path_bytes(), options in options()) {
        prop_assert_eq!(canonicalize(&path, options), super::path::canonicalize_in_full(&path, options));
    }

    #[test]
    fn any_bytes_encode_to_one_json_string(bytes in vec(any::<u8>(), 0..200), cap in 1usize..300) {
        let mut w = JsonWriter::default();
        w.bytes_value(&bytes, cap);
        let out = w.finish();
        let raw_unsafe = out
            .chars()
            .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}'));
        prop_assert!(!raw_unsafe, "unescaped character in {}", out);
        let decoded: String = serde_json::from_str(&out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if bytes.len() <= cap {
            if let Ok(text) = std::str::from_utf8(&bytes) {
                prop_assert_eq!(decoded, text);
            }
        }
    }

    #[test]
    fn header_maps_from_any_bytes_never_panic(bytes in vec(any::<u8>(), 0..300)) {
        let map = HeaderMap::from_serialized(bytes);
        prop_assert!(map.iter().count() == map.len());
        let _ = map.get(":path");
    }

    #[test]
    fn any_config_bytes_are_accepted_or_refused_never_panic(bytes in vec(any::<u8>(), 0..300)) {
        let _ = Settings::from_json(&bytes);
    }

    #[test]
    fn any_json_config_is_accepted_or_refused_with_a_path(value in json_value()) {
        let text = value.to_string();
        if let Err(e) = Settings::from_json(text.as_bytes()) {
            prop_assert!(!e.reason.is_empty());
            // serde reads a section written as an array as its fields in order, so a field's
            // error can name a key that array has only by position.
            prop_assume!(!names_a_key_of_an_array(&value, &e.path));
            // The path names a value the configuration has (or the whole document).
            prop_assert!(
                e.path.is_empty() || at_path(&value, &e.path).is_some(),
                "{} names nothing in {}", e.path, text
            );
        }
    }

    #[test]
    fn records_over_their_cap_are_cut_to_fit(
        header_values in vec(vec(any::<u8>(), 100..1200), 1..8),
        path in vec(prop::sample::select(&b"abz/.%;-_~"[..]), 4200..6000),
        max_field in 4096usize..=65_536,
    ) {
        // The path alone is longer than the record's cap, and fields may be as long as it:
        // the cap has to act, first by dropping headers, then by shrinking fields.
        let (settings, host) = capped_request(&header_values, &path, max_field, 4096);
        let line = on_log(&settings, &mut Worker::new(&settings, "p".into(), 1, 0), Seen::Headers, &host).unwrap();
        prop_assert!(line.len() <= 4096, "{} bytes", line.len());
        let parsed: serde_json::Value = serde_json::from_str(&line).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&parsed["truncated"], &serde_json::json!(true));
        prop_assert!(parsed["request"].get("headers").is_none(), "headers go first");
    }

    #[test]
    fn records_within_their_cap_are_whole(
        header_values in vec(vec(any::<u8>(), 0..200), 1..4),
        path in vec(prop::sample::select(&b"abz/.%;-_~"[..]), 1..300),
    ) {
        let (settings, host) = capped_request(&header_values, &path, 1024, 4096);
        let line = on_log(&settings, &mut Worker::new(&settings, "p".into(), 1, 0), Seen::Headers, &host).unwrap();
        let (roomy, _) = capped_request(&header_values, &path, 1024, 1_048_576);
        let uncapped = on_log(&roomy, &mut Worker::new(&roomy, "p".into(), 1, 0), Seen::Headers, &host).unwrap();
        prop_assert!(uncapped.len() <= 4096);
        // The two configurations differ (their caps), and each record names its own.
        let (line, uncapped) = (
            line.replacen(settings.short_digest(), "", 1),
            uncapped.replacen(roomy.short_digest(), "", 1),
        );
        prop_assert_eq!(line, uncapped, "a record that fits is not cut");
    }

    #[test]
    fn any_request_gives_one_valid_line_without_secrets(
        path in path_bytes(),
        value in vec(any::<u8>(), 0..300),
        status in prop::sample::select(vec!["200", "401", "403", "500", "", "abc", "99999"]),
        secret in "[A-Za-z0-9]{16,24}",
        local_reply in any::<bool>(),
        grpc in any::<bool>(),
        grpc_status in vec(any::<u8>(), 0..8),
    ) {
        let settings = Settings::from_json(br#"{
            "redaction": {"query_params": ["token"]},
            "rules": [{"name": "all", "action": "audit", "level": "request",
                       "request_headers": ["x-a", "authorization", "cookie", "x-api-key"]}]}"#).unwrap();
        let mut full_path = path.clone();
        full_path.extend_from_slice(format!("?token={secret}").as_bytes());
        let host = FakeHost::new()
            .with_request_header(":path", &full_path)
            .with_request_header("x-a", &value)
            .with_request_header("authorization", format!("Bearer {secret}"))
            .with_request_header("cookie", format!("s={secret}"))
            .with_request_header("x-api-key", &secret)
            .with_response_header(":status", status)
            .with_property("response.code_details", &value);
        // A gRPC call with any status bytes, and its message at level request.
        let host = if grpc {
            host.with_request_header("content-type", "application/grpc")
                .with_response_trailer("grpc-status", &grpc_status)
                .with_response_trailer("grpc-message", &value)
        } else {
            host
        };
        let line = on_log(&settings, &mut Worker::new(&settings, "p".into(), 1, 0), if local_reply { Seen::LocalReply } else { Seen::Headers }, &host).unwrap();
        prop_assert!(!line.contains('\n') && !line.contains('\r'));
        prop_assert!(line.len() <= settings.limits.max_record_bytes);
        let parsed: serde_json::Value = serde_json::from_str(&line).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(parsed.is_object());
        prop_assert!(!line.contains(&secret), "secret leaked: {}", line);
    }
}

/// A secret of one of the shapes `redact::shapes` knows, built from random material, and the
/// parts of it that must never be in a record.
fn planted_secret(shape: usize, body: &str, hex: &str, digits: &str) -> (String, Vec<String>) {
    let (head, tail) = body.split_at(20);
    match shape {
        0 => (
            format!("eyJ{head}.eyJ{tail}.{}", &body[..10]),
            vec![head.to_owned(), tail.to_owned()],
        ),
        1 => (format!("a1{hex}"), vec![hex.to_owned()]),
        2 => (format!("Q7{body}"), vec![body.to_owned()]),
        3 => {
            let number = format!("4{}", &digits[..14]);
            let card = format!("{number}{}", luhn_digit(&number));
            (card.clone(), vec![card])
        }
        4 => (digits.to_owned(), vec![digits.to_owned()]),
        5 => {
            let bban = &digits[..9].repeat(2);
            let iban = format!("DE{:02}{bban}", iban_check(bban));
            (iban, vec![bban.to_owned()])
        }
        _ => (
            format!("AKIA{}", body[..16].to_ascii_uppercase()),
            vec![body[..16].to_ascii_uppercase()],
        ),
    }
}

fn luhn_digit(number: &str) -> u32 {
    let sum: u32 = number
        .bytes()
        .rev()
        .map(|b| u32::from(b - b'0'))
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 0 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

/// The check digits of a German IBAN with this BBAN (ISO 7064: 98 minus the remainder).
fn iban_check(bban: &str) -> u32 {
    let digits = format!("{bban}131400"); // D = 13, E = 14, then 00
    98 - digits
        .bytes()
        .fold(0, |r, b| (r * 10 + u32::from(b - b'0')) % 97)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn planted_secrets_of_every_shape_never_survive(
        shape in 0usize..7,
        body in "[A-Za-z0-9]{40,48}",
        hex in "[0-9a-f]{32,40}",
        digits in "[0-9]{18}",
        prefix in prop::sample::select(vec!["", "x-", "card-", "id_", "tel:+", "n="]),
        suffix in prop::sample::select(vec!["", ".pdf", ".json", "-x", ";v=1"]),
        place in 0usize..6,
    ) {
        let (secret, material) = planted_secret(shape, &body, &hex, &digits);
        let settings = Settings::from_json(br#"{
            "redaction": {"query_params": ["q"]},
            "rules": [{"name": "all", "action": "audit", "level": "request",
                       "request_headers": ["x-a", "referer"]}]}"#).unwrap();
        let planted = format!("{prefix}{secret}{suffix}");
        let encoded: String = planted.bytes().map(|b| format!("%{b:02X}")).collect();
        let path = match place {
            0 => format!("/api/{planted}/x"),
            1 => format!("/api/x;q={planted}"),
            2 => format!("/api?q={planted}&r=1"),
            3 => format!("/api/{encoded}"),
            _ => "/api".to_owned(),
        };
        let mut host = FakeHost::new()
            .with_request_header(":path", &path)
            .with_response_header(":status", "200");
        if place == 4 {
            host = host.with_request_header("x-a", format!("v {planted} w"));
        }
        if place == 5 {
            host = host.with_request_header("referer", format!("https://u:{secret}@h/p/{planted}?q={planted}#{secret}"));
        }
        let line = on_log(&settings, &mut Worker::new(&settings, "p".into(), 1, 0), Seen::Headers, &host).unwrap();
        for part in &material {
            let part_encoded: String = part.bytes().map(|b| format!("%{b:02X}")).collect();
            prop_assert!(!line.contains(part.as_str()) && !line.contains(&part_encoded), "{} leaked from {}: {}", part, planted, line);
        }
    }
}

/// An `audit` rule at level `request` recording every header given, under the caps given.
#[expect(
    clippy::unwrap_used,
    reason = "a test helper (this module's cfg is not one clippy takes for a test)"
)]
fn capped_request(
    header_values: &[Vec<u8>],
    path: &[u8],
    max_field_bytes: usize,
    max_record_bytes: usize,
) -> (Settings, FakeHost) {
    let names: Vec<String> = (0..header_values.len())
        .map(|i| format!("x-h{i}"))
        .collect();
    let config = serde_json::json!({
        "limits": {"max_field_bytes": max_field_bytes, "max_record_bytes": max_record_bytes},
        "rules": [{"name": "all", "action": "audit", "level": "request", "request_headers": names}],
    });
    let settings = Settings::from_json(config.to_string().as_bytes()).unwrap();
    let mut full_path = b"/".to_vec();
    full_path.extend_from_slice(path);
    let mut host = FakeHost::new()
        .with_request_header(":path", &full_path)
        .with_response_header(":status", "200");
    for (name, value) in names.iter().zip(header_values) {
        host = host.with_request_header(name, value);
    }
    (settings, host)
}

/// Whether `path` looks a key up in an array on its way down `value`.
fn names_a_key_of_an_array(value: &serde_json::Value, path: &str) -> bool {
    let mut node = value;
    for part in path.split('.') {
        let key = part.split('[').next().unwrap_or_default();
        if !key.is_empty() {
            if node.is_array() {
                return true;
            }
            match node.get(key) {
                Some(next) => node = next,
                None => return false,
            }
        }
        for index in part.split('[').skip(1) {
            match index
                .trim_end_matches(']')
                .parse::<usize>()
                .ok()
                .and_then(|i| node.get(i))
            {
                Some(next) => node = next,
                None => return false,
            }
        }
    }
    false
}

/// The value a configuration error's path (`rules[0].match.paths`) names in `value`.
fn at_path<'a>(value: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    let mut node = value;
    for part in path.split('.') {
        let (key, indexes) = part
            .split_once('[')
            .map_or((part, ""), |(k, rest)| (k, rest));
        if !key.is_empty() {
            node = node.get(key)?;
        }
        for index in indexes.split('[').filter(|i| !i.is_empty()) {
            node = node.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(node)
}

proptest! {
    #[test]
    fn error_paths_from_any_text_and_position_never_panic(
        text in vec(prop::sample::select(&b"{}[],:\"\\ab1 \n"[..]), 0..200),
        line in 0usize..5,
        column in 0usize..300,
    ) {
        let _ = super::config::jsonpath::path_at(&text, line, column);
    }
}
