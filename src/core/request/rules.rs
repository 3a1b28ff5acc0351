//! Which rule applies to a request, and what the rules make of its kind of event.

use super::outcome::Statuses;
use super::readings::{Ambiguities, RoutedPath, OVERRIDE_SOURCES};
use crate::core::config::{Action, HeaderCondition, HostMatcher, Level, Matcher, Settings};
use crate::core::envoy::grpc::GrpcCall;
use crate::core::envoy::identity::{dns_name, Peer};
use crate::core::record::{Kind, Reason};
use std::borrow::Cow;

/// The request facts rules match on.
pub(super) struct MatchInput<'a> {
    pub canonical_path: &'a [u8],
    pub method: Option<&'a [u8]>,
    /// The methods override headers and `_method` name: a rule on `DELETE` also catches
    /// `POST` + override `DELETE` (`readings`).
    pub method_overrides: &'a [Option<&'a [u8]>],
    /// Canonical paths the routing headers name: a path rule matches them too.
    pub routing_paths: &'a [RoutedPath<'a>],
    pub ambiguities: Ambiguities,
    pub authority: Option<&'a [u8]>,
    /// Values of `RuleReads::headers`, in that order.
    pub match_headers: &'a [Option<&'a [u8]>],
    pub statuses: Statuses,
    /// The service and method, when the canonical path has a gRPC call's shape.
    pub grpc_call: Option<GrpcCall<'a>>,
    /// The caller, when some rule matches on it.
    pub peer: Option<&'a Peer>,
}

/// Index of the first rule that matches, as in the Kubernetes audit policy.
pub(super) fn first_matching_rule(settings: &Settings, input: &MatchInput<'_>) -> Option<usize> {
    let mut lowercase_path: Option<Vec<u8>> = None;
    settings.rules.iter().position(|rule| {
        let m = &rule.matcher;
        let path = if m.case_insensitive && !m.paths.is_empty() {
            lowercase_path.get_or_insert_with(|| input.canonical_path.to_ascii_lowercase())
        } else {
            input.canonical_path
        };
        matches(m, path, input)
    })
}

fn matches(m: &Matcher, path: &[u8], input: &MatchInput<'_>) -> bool {
    peer_matches(m, input.peer)
        && m.ambiguous
            .is_none_or(|wanted| wanted != input.ambiguities.is_empty())
        && (m.paths.is_empty()
            || m.paths.iter().any(|p| p.matches(path))
            || routed_path_matches(m, input))
        && (m.methods.is_empty()
            || std::iter::once(input.method)
                .chain(input.method_overrides.iter().copied())
                .flatten()
                .any(|method| {
                    m.methods
                        .iter()
                        .any(|x| x.as_bytes().eq_ignore_ascii_case(method))
                }))
        && (m.hosts.is_empty() || input.authority.is_some_and(|a| host_matches(&m.hosts, a)))
        && m.headers.iter().all(|h| {
            let value = input.match_headers.get(h.header).copied().flatten();
            match (&h.condition, value) {
                (HeaderCondition::Present, v) => v.is_some(),
                (HeaderCondition::Absent, v) => v.is_none(),
                (HeaderCondition::Equals(expected), Some(v)) => v == expected.as_slice(),
                (HeaderCondition::Equals(_), None) => false,
            }
        })
        && grpc_matches(m, input.grpc_call)
        && (m.status.is_empty()
            || m.status
                .iter()
                .any(|s| s.matches(input.statuses.http.unwrap_or(0), input.statuses.grpc)))
}

/// The readings beyond the request line a matched rule needed, by where they come from
/// (`why.matched_on`): the routing header its path condition matched, the override its
/// method condition matched.
pub(super) fn matched_on(m: &Matcher, input: &MatchInput<'_>) -> Vec<&'static str> {
    let mut on = Vec::new();
    let path_failed = || {
        let path = if m.case_insensitive {
            Cow::Owned(input.canonical_path.to_ascii_lowercase())
        } else {
            Cow::Borrowed(input.canonical_path)
        };
        !m.paths.iter().any(|p| p.matches(&path))
    };
    if !m.paths.is_empty() && path_failed() {
        if let Some(routed) = input
            .routing_paths
            .iter()
            .find(|routed| path_matches_routed(m, routed))
        {
            on.push(routed.source);
        }
    }
    let named = |method: &[u8]| {
        m.methods
            .iter()
            .any(|x| x.as_bytes().eq_ignore_ascii_case(method))
    };
    if !m.methods.is_empty() && !input.method.is_some_and(named) {
        let by_override = input
            .method_overrides
            .iter()
            .position(|method| method.is_some_and(named));
        if let Some(source) = by_override.and_then(|i| OVERRIDE_SOURCES.get(i)) {
            on.push(*source);
        }
    }
    on
}

/// A path rule on the path a routing header names (rare: only when one was sent).
fn routed_path_matches(m: &Matcher, input: &MatchInput<'_>) -> bool {
    input
        .routing_paths
        .iter()
        .any(|routed| path_matches_routed(m, routed))
}

fn path_matches_routed(m: &Matcher, routed: &RoutedPath) -> bool {
    if m.case_insensitive {
        let lower = routed.canonical.to_ascii_lowercase();
        m.paths.iter().any(|p| p.matches(&lower))
    } else {
        m.paths.iter().any(|p| p.matches(&routed.canonical))
    }
}

/// gRPC conditions read the path's shape whatever the content type: Connect and gRPC-Web
/// serve the same `/<service>/<method>` paths as gRPC.
fn grpc_matches(m: &Matcher, call: Option<GrpcCall<'_>>) -> bool {
    if m.grpc_services.is_empty() && m.grpc_methods.is_empty() {
        return true;
    }
    let Some(call) = call else {
        return false;
    };
    (m.grpc_services.is_empty() || m.grpc_services.iter().any(|s| s.matches(call.service)))
        && (m.grpc_methods.is_empty()
            || m.grpc_methods.iter().any(|full| call.full_method_is(full)))
}

fn peer_matches(m: &Matcher, peer: Option<&Peer>) -> bool {
    let mtls = peer.and_then(|p| p.mtls).unwrap_or(false);
    let principal = peer.and_then(|p| p.principal.as_deref());
    m.mtls.is_none_or(|wanted| wanted == mtls)
        && (m.principals.is_empty()
            || principal.is_some_and(|p| m.principals.iter().any(|x| x.matches(p))))
        && (m.namespaces.is_empty()
            || peer
                .and_then(Peer::namespace)
                .is_some_and(|ns| m.namespaces.iter().any(|x| x.as_slice() == ns)))
}

/// `:authority` as a DNS name (`dns_name`), compared without regard to case.
fn host_matches(hosts: &[HostMatcher], authority: &[u8]) -> bool {
    let (host, _) = dns_name(authority);
    hosts.iter().any(|h| match h {
        HostMatcher::Exact(name) => host.eq_ignore_ascii_case(name.as_bytes()),
        HostMatcher::Suffix(suffix) => {
            host.len() > suffix.len()
                && host
                    .get(host.len() - suffix.len()..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix.as_bytes()))
        }
    })
}

/// The verdict before sampling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Verdict {
    pub reason: Reason,
    /// The first matching rule, also when a security outcome overrode its action.
    pub rule: Option<usize>,
    pub action: Action,
    pub level: Level,
}

/// `mesh_audit`: a mesh AUDIT policy matched the request. Like a security outcome it makes
/// the request recorded whatever the rules say; an `audit` rule or a security outcome
/// still names itself as the reason (the record says which AUDIT policy matched anyway).
pub(super) fn verdict(
    settings: &Settings,
    kind: Kind,
    rule: Option<usize>,
    mesh_audit: bool,
) -> Verdict {
    let matched = rule.and_then(|i| settings.rules.get(i));
    let level = matched.map_or(Level::Metadata, |r| r.level);
    match matched {
        _ if kind.is_security_outcome()
            && settings.always_audit_security_outcomes
            && matched.is_none_or(|r| r.action != Action::Audit) =>
        {
            Verdict {
                reason: Reason::SecurityOutcome,
                rule,
                action: Action::Audit,
                level,
            }
        }
        _ if mesh_audit && matched.is_none_or(|r| r.action != Action::Audit) => Verdict {
            reason: Reason::MeshAuditPolicy,
            rule,
            action: Action::Audit,
            level,
        },
        Some(r) => Verdict {
            reason: Reason::Rule,
            rule,
            action: r.action,
            level,
        },
        None => Verdict {
            reason: Reason::Default,
            rule: None,
            action: Action::Sample(settings.default_sample_rate),
            level,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn settings(json: &str) -> Settings {
        Settings::from_json(json.as_bytes()).unwrap()
    }

    fn input<'a>(
        path: &'a str,
        method: &'a str,
        status: u16,
        headers: &'a [Option<&'a [u8]>],
    ) -> MatchInput<'a> {
        MatchInput {
            canonical_path: path.as_bytes(),
            method: Some(method.as_bytes()),
            method_overrides: &[],
            routing_paths: &[],
            ambiguities: Ambiguities::default(),
            authority: Some(b"API.example.com:8443"),
            match_headers: headers,
            statuses: Statuses {
                http: (status != 0).then_some(status),
                grpc: None,
            },
            grpc_call: GrpcCall::from_path(path.as_bytes()),
            peer: None,
        }
    }

    const RULES: &str = r#"{"rules": [
        {"name": "health", "match": {"paths": [{"exact": "/healthz"}]}, "action": "drop"},
        {"name": "admin", "match": {"paths": [{"prefix": "/admin"}], "case_insensitive": true}, "action": "audit"},
        {"name": "roles", "match": {"paths": [{"glob": "/api/v1/users/*/roles"}], "methods": ["put", "DELETE"]}, "action": "audit", "level": "request", "request_headers": ["user-agent"]},
        {"name": "debug", "match": {"headers": [{"name": "x-debug", "equals": "1"}], "hosts": ["*.example.com"]}, "action": "sample", "sample_rate": 0.5},
        {"name": "errors", "match": {"status": ["5xx", 404]}, "action": "audit"}
    ]}"#;

    #[test]
    fn first_match_wins_in_order() {
        let s = settings(RULES);
        let none = [None];
        let rule = |path: &str, method: &str, status: u16| {
            first_matching_rule(&s, &input(path, method, status, &none))
                .map(|i| s.rules[i].name.as_str())
        };
        assert_eq!(rule("/healthz", "GET", 500), Some("health"));
        assert_eq!(rule("/admin/users", "GET", 200), Some("admin"));
        assert_eq!(rule("/ADMIN", "GET", 200), Some("admin"));
        assert_eq!(rule("/api/v1/users/7/roles", "PUT", 200), Some("roles"));
        assert_eq!(rule("/api/v1/users/7/roles", "GET", 200), None);
        assert_eq!(rule("/other", "GET", 503), Some("errors"));
        assert_eq!(rule("/other", "GET", 404), Some("errors"));
        assert_eq!(rule("/other", "GET", 200), None);
        let debug = [Some(&b"1"[..])];
        assert_eq!(
            first_matching_rule(&s, &input("/x", "GET", 200, &debug))
                .map(|i| s.rules[i].name.as_str()),
            Some("debug")
        );
    }

    #[test]
    fn hosts_ignore_port_and_case() {
        let s = settings(
            r#"{"rules": [{"name": "h", "match": {"hosts": ["api.example.com"]}, "action": "audit"}]}"#,
        );
        for (authority, expected) in [
            (&b"API.example.com:8443"[..], true),
            (b"api.example.com", true),
            (b"api.example.com.", true),
            (b"API.Example.COM.:443", true),
            (b"api.example.com..", false),
            (b"api.example.com.evil", false),
            (b"[::1]:80", false),
        ] {
            let i = MatchInput {
                authority: Some(authority),
                ..input("/", "GET", 200, &[])
            };
            assert_eq!(
                first_matching_rule(&s, &i).is_some(),
                expected,
                "{authority:?}"
            );
        }
        let s = settings(
            r#"{"rules": [{"name": "h", "match": {"hosts": ["*.example.com"]}, "action": "audit"}]}"#,
        );
        let i = MatchInput {
            authority: Some(b"example.com"),
            ..input("/", "GET", 200, &[])
        };
        assert_eq!(
            first_matching_rule(&s, &i),
            None,
            "the wildcard needs a label before the suffix"
        );
        assert_eq!(dns_name(b"[::1]:80"), (&b"[::1]"[..], false));
        assert_eq!(dns_name(b"::1"), (&b"::1"[..], false));
        assert_eq!(dns_name(b"a.example.:80"), (&b"a.example"[..], true));
    }

    #[test]
    fn security_outcomes_override_drop_unless_disabled() {
        let s = settings(RULES);
        let v = verdict(&s, Kind::Denied, Some(0), false);
        assert_eq!(v.reason, Reason::SecurityOutcome);
        assert_eq!(v.action, Action::Audit);
        assert_eq!(v.rule, Some(0));
        let v = verdict(&s, Kind::Access, Some(0), false);
        assert_eq!((v.reason, v.action), (Reason::Rule, Action::Drop));
        let v = verdict(&s, Kind::Denied, Some(1), false);
        assert_eq!(
            v.reason,
            Reason::Rule,
            "an audit rule that matched keeps the credit"
        );
        let v = verdict(&s, Kind::Access, None, false);
        assert_eq!(
            (v.reason, v.action),
            (Reason::Default, Action::Sample(0.01))
        );
        let v = verdict(&s, Kind::Access, Some(2), false);
        assert_eq!(v.level, Level::Request);

        let off = settings(
            r#"{"always_audit_security_outcomes": false, "rules": [{"name": "all", "action": "drop"}]}"#,
        );
        let v = verdict(&off, Kind::AuthFailure, Some(0), false);
        assert_eq!((v.reason, v.action), (Reason::Rule, Action::Drop));
    }
}
