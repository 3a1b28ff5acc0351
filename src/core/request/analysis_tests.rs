use super::*;

fn settings(rules: &str) -> Settings {
    Settings::from_json(format!(r#"{{"rules": {rules}}}"#).as_bytes()).unwrap()
}

fn lines(rules: &str) -> Vec<String> {
    warnings(&settings(rules))
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_rule_for_every_get_shadows_a_later_path_rule_in_part() {
    // The issue's example: the drop for /healthz can never apply to a GET.
    let out = lines(
        r#"[{"name": "gets", "match": {"methods": ["GET"]}, "action": "sample", "sample_rate": 0.1},
            {"name": "health", "match": {"paths": [{"exact": "/healthz"}]}, "action": "drop"}]"#,
    );
    assert_eq!(
        out,
        ["rules[1]: \"health\" is partly shadowed: GET requests to /healthz go to rules[0] \"gets\" first (sample at 0.1); move \"health\" above it if they should be drop"]
    );
    // In the other order the path rule is an exception carved out of the broader one.
    let out = lines(
        r#"[{"name": "health", "match": {"paths": [{"exact": "/healthz"}]}, "action": "drop"},
            {"name": "gets", "match": {"methods": ["GET"]}, "action": "sample", "sample_rate": 0.1}]"#,
    );
    assert_eq!(out, Vec::<String>::new());
}

#[test]
fn a_rule_inside_an_earlier_broader_one_never_applies() {
    for (earlier, later) in [
        (
            r#"{"paths": [{"prefix": "/admin"}]}"#,
            r#"{"paths": [{"exact": "/admin/users"}], "methods": ["DELETE"]}"#,
        ),
        (
            r#"{"paths": [{"glob": "/api/**"}]}"#,
            r#"{"paths": [{"prefix": "/api/v1/"}]}"#,
        ),
        (
            r#"{"paths": [{"glob": "/api/*/users"}]}"#,
            r#"{"paths": [{"exact": "/api/v1/users"}]}"#,
        ),
        (
            r#"{"paths": [{"prefix": "/admin"}], "case_insensitive": true}"#,
            r#"{"paths": [{"prefix": "/Admin/x"}]}"#,
        ),
        (
            r#"{"methods": ["GET", "POST"]}"#,
            r#"{"methods": ["post"], "hosts": ["api.example.com"]}"#,
        ),
        (
            r#"{"hosts": ["*.example.com"]}"#,
            r#"{"hosts": ["a.b.example.com", "*.c.example.com"]}"#,
        ),
        (r#"{"status": ["5xx", 404]}"#, r#"{"status": [503, 404]}"#),
        (
            r#"{"headers": [{"name": "x-debug", "present": true}]}"#,
            r#"{"headers": [{"name": "x-debug", "equals": "1"}, {"name": "x-b", "present": false}]}"#,
        ),
        (
            r#"{"principals": ["spiffe://cluster.local/ns/shop/*"]}"#,
            r#"{"principals": ["spiffe://cluster.local/ns/shop/sa/a"], "mtls": true}"#,
        ),
        (
            r#"{"grpc_services": ["shop.*"]}"#,
            r#"{"grpc_services": ["shop.v1.Admin"]}"#,
        ),
        ("{}", r#"{"ambiguous": true}"#),
    ] {
        let rules = format!(
            r#"[{{"name": "a", "match": {earlier}, "action": "audit"}}, {{"name": "b", "match": {later}, "action": "drop"}}]"#
        );
        let out = lines(&rules);
        assert_eq!(out.len(), 1, "{rules}: {out:?}");
        assert!(
            out[0].starts_with("rules[1]: \"b\" can never apply: every request it matches is taken first by rules[0] \"a\""),
            "{rules}: {out:?}"
        );
    }
}

#[test]
fn rules_that_meet_no_common_request_or_agree_are_not_flagged() {
    for (earlier, later) in [
        // Narrower earlier rules: exceptions.
        (
            r#"{"paths": [{"exact": "/admin/users"}]}"#,
            r#"{"paths": [{"prefix": "/admin"}]}"#,
        ),
        (
            r#"{"paths": [{"exact": "/healthz"}]}"#,
            r#"{"status": ["5xx"]}"#,
        ),
        // Disjoint in some condition.
        (
            r#"{"methods": ["GET"]}"#,
            r#"{"methods": ["DELETE"], "paths": [{"prefix": "/a"}]}"#,
        ),
        (
            r#"{"paths": [{"prefix": "/a/"}], "methods": ["GET"]}"#,
            r#"{"paths": [{"prefix": "/b"}]}"#,
        ),
        (
            r#"{"hosts": ["a.example.com"], "methods": ["GET"]}"#,
            r#"{"hosts": ["*.other.com"]}"#,
        ),
        (
            r#"{"headers": [{"name": "x-a", "present": false}]}"#,
            r#"{"headers": [{"name": "x-a", "equals": "1"}]}"#,
        ),
        (
            r#"{"headers": [{"name": "x-a", "equals": "2"}]}"#,
            r#"{"headers": [{"name": "x-a", "equals": "1"}]}"#,
        ),
        (
            r#"{"status": [404]}"#,
            r#"{"status": ["5xx"], "paths": [{"prefix": "/a"}]}"#,
        ),
        (
            r#"{"mtls": false}"#,
            r#"{"mtls": true, "paths": [{"prefix": "/a"}]}"#,
        ),
        // Not analysed: two globs.
        (
            r#"{"paths": [{"glob": "/*/x"}]}"#,
            r#"{"paths": [{"glob": "/a/*"}]}"#,
        ),
        // A path condition beside a gRPC one.
        (
            r#"{"grpc_services": ["shop.Admin"]}"#,
            r#"{"paths": [{"prefix": "/x"}]}"#,
        ),
    ] {
        let rules = format!(
            r#"[{{"name": "a", "match": {earlier}, "action": "audit"}}, {{"name": "b", "match": {later}, "action": "drop"}}]"#
        );
        assert_eq!(lines(&rules), Vec::<String>::new(), "{rules}");
    }
    // A case-sensitive rule does not cover one that ignores case: it takes only the lowercase.
    let out = lines(
        r#"[{"name": "a", "match": {"paths": [{"prefix": "/admin"}]}, "action": "audit"},
            {"name": "b", "match": {"paths": [{"prefix": "/admin/x"}], "case_insensitive": true}, "action": "drop"}]"#,
    );
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(
        out[0].contains("is partly shadowed: requests under /admin/x go to rules[0]"),
        "{out:?}"
    );
    // The same action: whichever rule takes the request, it is treated alike.
    let same = r#"[{"name": "a", "match": {"methods": ["GET"]}, "action": "audit"},
                   {"name": "b", "match": {"paths": [{"prefix": "/admin"}]}, "action": "audit"}]"#;
    assert_eq!(lines(same), Vec::<String>::new());
}

#[test]
fn sample_rate_zero_drops_of_security_outcomes_and_impossible_patterns() {
    let out = lines(r#"[{"name": "z", "action": "sample", "sample_rate": 0}]"#);
    assert_eq!(out.len(), 1);
    assert!(
        out[0].contains("samples at rate 0 and so never records"),
        "{out:?}"
    );

    let drop = |status: &str, always: bool| {
        let s = Settings::from_json(
            format!(r#"{{"always_audit_security_outcomes": {always}, "rules": [{{"name": "d", "match": {{"status": {status}}}, "action": "drop"}}]}}"#)
                .as_bytes(),
        )
        .unwrap();
        warnings(&s).len()
    };
    assert_eq!(drop(r#"[403, 401, "grpc:PERMISSION_DENIED"]"#, true), 1);
    assert_eq!(drop("[429]", false), 0, "the override is off");
    assert_eq!(drop(r#"["4xx"]"#, true), 0, "it still drops 404s");
    assert_eq!(drop("[403, 404]", true), 0);

    let out = lines(
        r#"[{"name": "h", "match": {"hosts": ["api.example.com.", "ok.example.com", "*.a..b"]}, "action": "audit"}]"#,
    );
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out[0]
        .starts_with("rules[0].match.hosts[0]: no :authority can match this host: a final dot"));
    assert!(out[1].starts_with(
        "rules[0].match.hosts[2]: no :authority can match this host: it has an empty label"
    ));

    let out = lines(
        r#"[{"name": "g", "match": {"paths": [{"glob": "/api/../x/*"}, {"glob": "/api/%41/*"}, {"glob": "/api/*/x"}]}, "action": "audit"}]"#,
    );
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out[0].starts_with("rules[0].match.paths[0].glob: \"/api/../x/*\" has literal parts that are not in canonical form"));
    assert!(out[1].starts_with("rules[0].match.paths[1].glob"));
    // Lowercase hex escapes fold to what a case-insensitive rule compares.
    let ci = r#"[{"name": "g", "match": {"paths": [{"glob": "/a%3Ab/*"}], "case_insensitive": true}, "action": "audit"}]"#;
    assert_eq!(lines(ci), Vec::<String>::new());
}

#[test]
fn a_wholly_shadowed_rule_is_not_also_reported_as_partly_shadowed() {
    let out = lines(
        r#"[{"name": "gets", "match": {"methods": ["GET"]}, "action": "drop"},
            {"name": "all", "action": "audit"},
            {"name": "admin", "match": {"paths": [{"prefix": "/admin"}]}, "action": "sample", "sample_rate": 0.5}]"#,
    );
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].starts_with("rules[2]: \"admin\" can never apply: every request it matches is taken first by rules[1] \"all\""));
}

/// The analysis against brute force: small random rule sets over a small vocabulary,
/// every request of a grid built from that vocabulary matched by the plugin's own
/// `first_matching_rule`. The grid holds each pattern, its extensions and a value outside
/// every list, so on this vocabulary "every grid request" means "every request".
mod brute_force {
    use super::super::super::outcome::Statuses;
    use super::super::super::readings::Ambiguities;
    use super::super::super::rules::{first_matching_rule, MatchInput};
    use super::*;
    use crate::core::envoy::grpc::GrpcCall;
    use crate::core::envoy::identity::Peer;
    use proptest::prelude::*;

    const PATHS: [&str; 4] = ["/a", "/a/b", "/ab", "/b"];
    const METHODS: [&str; 3] = ["GET", "POST", "DELETE"];
    const STATUSES: [&str; 4] = ["403", "404", "500", "\"4xx\""];
    const GRID_STATUSES: [u16; 7] = [200, 401, 403, 404, 500, 503, 0];

    fn rule_json() -> impl Strategy<Value = String> {
        let path = (0..3usize, 0..PATHS.len()).prop_map(|(kind, i)| {
            let kind = ["exact", "prefix", "prefix"][kind];
            format!(r#"{{"{kind}": "{}"}}"#, PATHS[i])
        });
        (
            proptest::collection::vec(path, 0..3),
            proptest::sample::subsequence(METHODS.to_vec(), 0..3),
            proptest::sample::subsequence(STATUSES.to_vec(), 0..2),
            0..4usize,
            0..3usize,
            0..3usize,
        )
            .prop_map(|(paths, methods, status, header, mtls, action)| {
                let mut m = Vec::new();
                if !paths.is_empty() {
                    m.push(format!(r#""paths": [{}]"#, paths.join(",")));
                }
                if !methods.is_empty() {
                    m.push(format!(r#""methods": {methods:?}"#));
                }
                if !status.is_empty() {
                    m.push(format!(r#""status": [{}]"#, status.join(",")));
                }
                match header {
                    1 => m.push(r#""headers": [{"name": "x-a", "present": true}]"#.into()),
                    2 => m.push(r#""headers": [{"name": "x-a", "present": false}]"#.into()),
                    3 => m.push(r#""headers": [{"name": "x-a", "equals": "1"}]"#.into()),
                    _ => {}
                }
                match mtls {
                    1 => m.push(r#""mtls": true"#.into()),
                    2 => m.push(r#""mtls": false"#.into()),
                    _ => {}
                }
                let action = [r#""audit""#, r#""drop""#, r#""sample", "sample_rate": 0.5"#][action];
                format!(r#""match": {{{}}}, "action": {action}"#, m.join(","))
            })
    }

    struct Request {
        path: String,
        method: &'static str,
        status: u16,
        header: Option<&'static [u8]>,
        peer: Peer,
    }

    fn grid() -> Vec<Request> {
        let mut paths: Vec<String> = Vec::new();
        for p in PATHS {
            for tail in ["", "x", "/x"] {
                paths.push(format!("{p}{tail}"));
            }
        }
        paths.push("/c".into());
        let mut out = Vec::new();
        for path in &paths {
            for method in ["GET", "POST", "DELETE", "PUT"] {
                for status in GRID_STATUSES {
                    for header in [None, Some(&b"1"[..]), Some(&b"2"[..])] {
                        for mtls in [false, true] {
                            out.push(Request {
                                path: path.clone(),
                                method,
                                status,
                                header,
                                peer: Peer {
                                    mtls: Some(mtls),
                                    ..Peer::default()
                                },
                            });
                        }
                    }
                }
            }
        }
        out
    }

    /// Which of `settings`' rules match the request (not only the first).
    fn matching(settings: &Settings, r: &Request) -> Vec<bool> {
        let headers = [r.header];
        (0..settings.rules.len())
            .map(|i| {
                let only = Settings {
                    rules: settings.rules.get(i..=i).unwrap().to_vec(),
                    ..settings.clone()
                };
                let input = MatchInput {
                    canonical_path: r.path.as_bytes(),
                    method: Some(r.method.as_bytes()),
                    method_overrides: &[],
                    routing_paths: &[],
                    ambiguities: Ambiguities::default(),
                    authority: Some(b"api.example.com"),
                    match_headers: &headers,
                    statuses: Statuses {
                        http: (r.status != 0).then_some(r.status),
                        grpc: None,
                    },
                    grpc_call: GrpcCall::from_path(r.path.as_bytes()),
                    peer: Some(&r.peer),
                };
                first_matching_rule(&only, &input).is_some()
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn warnings_agree_with_every_request_of_the_grid(rules in proptest::collection::vec(rule_json(), 2..5)) {
            let json: Vec<String> = rules.iter().enumerate().map(|(i, r)| format!(r#"{{"name": "r{i}", {r}}}"#)).collect();
            let s = settings(&format!("[{}]", json.join(",")));
            let grid = grid();
            let table: Vec<Vec<bool>> = grid.iter().map(|r| matching(&s, r)).collect();
            let found = warnings(&s);
            for (b, rule) in s.rules.iter().enumerate() {
                let at = format!("rules[{b}]");
                let mine: Vec<&Warning> = found.iter().filter(|w| w.path == at).collect();
                let whole = mine.iter().find(|w| w.message.contains("can never apply"));
                let b_matches: Vec<&Vec<bool>> = table.iter().filter(|m| m[b]).collect();
                // Exact on this vocabulary: flagged as wholly shadowed exactly when one
                // earlier rule matches every request this one matches.
                let covering = (0..b).find(|&a| b_matches.iter().all(|m| m[a]));
                prop_assert_eq!(whole.is_some(), covering.is_some(), "{}: {:?}\n{}", at, mine, json.join("\n"));
                if let (Some(w), Some(a)) = (whole, covering) {
                    // It names the first earlier rule that covers it.
                    prop_assert!(w.message.contains(&format!("rules[{a}] ")), "{:?}", w);
                }
                // Each partly-shadowing rule named has a different action and shares a request.
                for w in mine.iter().filter(|w| w.message.contains("partly shadowed")) {
                    let a = (0..b).find(|a| w.message.contains(&format!("go to rules[{a}] "))).unwrap();
                    prop_assert!(s.rules[a].action != rule.action);
                    prop_assert!(table.iter().any(|m| m[a] && m[b]), "{:?}: no request meets both", w);
                }
                // And every earlier rule that shares a request, with another action and a path
                // condition not inside this one's, is named (unless this one never applies).
                if whole.is_none() {
                    for a in 0..b {
                        let shares = table.iter().any(|m| m[a] && m[b]);
                        let exception = covers_paths(&rule.matcher, &s.rules[a].matcher) == Tri::Yes;
                        let named = mine.iter().any(|w| w.message.contains(&format!("go to rules[{a}] ")));
                        prop_assert_eq!(named, shares && !exception && s.rules[a].action != rule.action,
                            "{} by rules[{}]: {:?}\n{}", at, a, mine, json.join("\n"));
                    }
                }
            }
        }
    }
}
