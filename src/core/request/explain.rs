//! `meshaudit explain`: what the plugin does with one request, found by running the plugin's
//! own `on_log` natively over a request described on the command line. Once with the
//! configuration as it is (the verdict and the record), then once per rule and per condition
//! of it with that condition alone, recording everything, to say which condition of each
//! rule failed: the same matching code, never a second implementation of it.

use crate::core::config::{Action, Level, Matcher, Rule, Settings};
use crate::core::envoy::attributes::{CODE_DETAILS, CONNECTION_MTLS, PEER_URI_SAN};
use crate::core::envoy::headers::serialize;
use crate::core::envoy::host::Host;
use crate::core::path::{canonicalize, split_query};
use crate::core::request::{on_log, on_request_start, Seen};
use crate::core::worker::Worker;

/// The request to explain, as an operator writes it.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub method: String,
    /// With its query string, as in `:path`.
    pub path: String,
    pub authority: Option<String>,
    /// Further request headers, lowercase names.
    pub headers: Vec<(String, String)>,
    /// The response status; none: no response was sent.
    pub status: Option<u16>,
    /// `response.code_details` (`rbac_access_denied_matched_policy[...]`, `via_upstream`).
    pub details: Option<String>,
    /// The caller's certificate URI SAN: the request arrived over mTLS.
    pub principal: Option<String>,
}

/// A rule, and whether it matched the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTrace {
    pub name: String,
    /// `None`: it matched. Else the first of its conditions (in the order the plugin tests
    /// them) that the request fails.
    pub failed: Option<&'static str>,
}

#[derive(Debug, Clone)]
pub struct Explanation {
    pub canonical_path: String,
    pub rules: Vec<RuleTrace>,
    /// The record the plugin writes, or `None`.
    pub record: Option<String>,
    /// The `started` record it writes when the request headers pass (`record_start`).
    pub started: Option<String>,
}

impl Explanation {
    /// The index of the rule that decides: the first that matches.
    pub fn first_match(&self) -> Option<usize> {
        self.rules.iter().position(|r| r.failed.is_none())
    }
}

/// Each condition of a matcher alone, named as in the configuration, in `rules::matches`' order.
fn conditions(m: &Matcher) -> Vec<(&'static str, Matcher)> {
    let base = Matcher {
        case_insensitive: m.case_insensitive,
        ..Matcher::default()
    };
    let mut out: Vec<(&'static str, Matcher)> = Vec::new();
    let mut add = |name, set: &dyn Fn(&mut Matcher)| {
        let mut one = base.clone();
        set(&mut one);
        out.push((name, one));
    };
    if m.mtls.is_some() {
        add("mtls", &|x| x.mtls = m.mtls);
    }
    if !m.principals.is_empty() {
        add("principals", &|x| x.principals = m.principals.clone());
    }
    if !m.namespaces.is_empty() {
        add("namespaces", &|x| x.namespaces = m.namespaces.clone());
    }
    if m.ambiguous.is_some() {
        add("ambiguous", &|x| x.ambiguous = m.ambiguous);
    }
    if !m.paths.is_empty() {
        add("paths", &|x| x.paths = m.paths.clone());
    }
    if !m.methods.is_empty() {
        add("methods", &|x| x.methods = m.methods.clone());
    }
    if !m.hosts.is_empty() {
        add("hosts", &|x| x.hosts = m.hosts.clone());
    }
    if !m.headers.is_empty() {
        add("headers", &|x| x.headers = m.headers.clone());
    }
    if !m.grpc_services.is_empty() {
        add("grpc_services", &|x| {
            x.grpc_services = m.grpc_services.clone()
        });
    }
    if !m.grpc_methods.is_empty() {
        add("grpc_methods", &|x| x.grpc_methods = m.grpc_methods.clone());
    }
    if !m.status.is_empty() {
        add("status", &|x| x.status = m.status.clone());
    }
    out
}

pub fn explain(settings: &Settings, probe: &Probe) -> Explanation {
    let host = ProbeHost::new(probe);
    let (path, _) = split_query(probe.path.as_bytes());
    let canonical_path =
        String::from_utf8_lossy(&canonicalize(path, settings.canonical)).into_owned();
    let (started, record) = run(settings, &host);
    let rules = settings
        .rules
        .iter()
        .map(|rule| RuleTrace {
            name: rule.name.clone(),
            failed: conditions(&rule.matcher)
                .into_iter()
                .find(|(_, alone)| !matches_alone(settings, rule, alone, &host))
                .map(|(name, _)| name),
        })
        .collect();
    Explanation {
        canonical_path,
        rules,
        record,
        started,
    }
}

/// The records of the request's start and of its end, as the filter writes them.
fn run(settings: &Settings, host: &ProbeHost) -> (Option<String>, Option<String>) {
    let mut worker = Worker::new(settings, "explain".to_string(), 1, host.now);
    let started = on_request_start(settings, &mut worker, host);
    let seen = if started.is_some() {
        Seen::Started
    } else {
        Seen::Headers
    };
    (started, on_log(settings, &mut worker, seen, host))
}

/// Does the plugin, given only this condition as its one rule, credit that rule?
fn matches_alone(settings: &Settings, rule: &Rule, alone: &Matcher, host: &ProbeHost) -> bool {
    let probe_rule = Rule {
        matcher: alone.clone(),
        action: Action::Audit,
        level: Level::Metadata,
        request_headers: Vec::new(),
        budget: None,
        ..rule.clone()
    };
    let only = Settings {
        rules: vec![probe_rule],
        // Every request recorded, so the record says whether the rule matched.
        default_sample_rate: 1.0,
        // What the rules read stays the whole configuration's: header indices stay valid.
        ..settings.clone()
    };
    run(&only, host)
        .1
        .and_then(|record| serde_json::from_str::<serde_json::Value>(&record).ok())
        .is_some_and(|record| {
            record.pointer("/why/rule").and_then(|r| r.as_str()) == Some(rule.name.as_str())
        })
}

/// The request as Envoy would present it.
struct ProbeHost {
    request: Vec<u8>,
    status: Option<Vec<u8>>,
    details: Vec<u8>,
    principal: Option<Vec<u8>>,
    now: u64,
}

impl ProbeHost {
    fn new(probe: &Probe) -> Self {
        let mut headers: Vec<(&str, &[u8])> = vec![
            (":method", probe.method.as_bytes()),
            (":path", probe.path.as_bytes()),
            (
                ":authority",
                probe
                    .authority
                    .as_deref()
                    .unwrap_or("api.example.com")
                    .as_bytes(),
            ),
        ];
        headers.extend(
            probe
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes())),
        );
        Self {
            request: serialize(&headers),
            status: probe.status.map(|s| s.to_string().into_bytes()),
            details: probe
                .details
                .clone()
                .unwrap_or_else(|| "via_upstream".to_string())
                .into_bytes(),
            principal: probe.principal.as_ref().map(|p| p.as_bytes().to_vec()),
            now: 1_795_626_239_123_000_000,
        }
    }
}

impl Host for ProbeHost {
    fn request_header_map(&self) -> Option<Vec<u8>> {
        Some(self.request.clone())
    }
    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        (name == ":status").then(|| self.status.clone()).flatten()
    }
    fn response_trailer(&self, _: &str) -> Option<Vec<u8>> {
        None
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        match path {
            p if p == CODE_DETAILS => Some(self.details.clone()),
            p if p == CONNECTION_MTLS => Some(vec![u8::from(self.principal.is_some())]),
            p if p == PEER_URI_SAN => self.principal.clone(),
            ["response", "code"] => {
                let status: i64 = std::str::from_utf8(self.status.as_deref()?)
                    .ok()?
                    .parse()
                    .ok()?;
                Some(status.to_le_bytes().to_vec())
            }
            ["response", "flags"] => Some(0i64.to_le_bytes().to_vec()),
            ["connection", "id"] => Some(1i64.to_le_bytes().to_vec()),
            ["source", "address"] => Some(b"10.1.2.3:45678".to_vec()),
            _ => None,
        }
    }
    fn now_unix_nanos(&self) -> u64 {
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"default_sample_rate": 0, "rules": [
        {"name": "health", "match": {"paths": [{"exact": "/healthz"}]}, "action": "drop"},
        {"name": "admin", "match": {"paths": [{"prefix": "/admin"}], "methods": ["DELETE"]}, "action": "audit"},
        {"name": "users", "match": {"paths": [{"glob": "/api/v1/users/*"}], "headers": [{"name": "x-debug", "present": true}]}, "action": "audit"}
    ]}"#;

    fn probe(method: &str, path: &str, status: u16) -> Probe {
        Probe {
            method: method.into(),
            path: path.into(),
            status: Some(status),
            ..Probe::default()
        }
    }

    fn failed(e: &Explanation) -> Vec<Option<&'static str>> {
        e.rules.iter().map(|r| r.failed).collect()
    }

    #[test]
    fn each_rule_says_which_condition_failed_and_the_verdict_is_the_plugins() {
        let s = Settings::from_json(CONFIG.as_bytes()).unwrap();
        let e = explain(&s, &probe("DELETE", "/api/v1/users/7?x=1", 200));
        assert_eq!(e.canonical_path, "/api/v1/users/7");
        assert_eq!(failed(&e), [Some("paths"), Some("paths"), Some("headers")]);
        assert_eq!(e.record, None, "sampled at the default rate 0");

        let e = explain(&s, &probe("GET", "/admin//users", 200));
        assert_eq!(e.canonical_path, "/admin/users");
        assert_eq!(failed(&e), [Some("paths"), Some("methods"), Some("paths")]);

        let e = explain(&s, &probe("DELETE", "/admin/users", 204));
        assert_eq!(failed(&e)[1], None);
        let record: serde_json::Value = serde_json::from_str(e.record.as_deref().unwrap()).unwrap();
        assert_eq!(record["why"]["rule"], "admin");
        assert_eq!(record["kind"], "access");

        // A drop rule's request, denied: a security outcome, recorded anyway.
        let mut denied = probe("GET", "/healthz", 403);
        denied.details = Some("rbac_access_denied_matched_policy[none]".into());
        let e = explain(&s, &denied);
        assert_eq!(failed(&e)[0], None);
        let record: serde_json::Value = serde_json::from_str(e.record.as_deref().unwrap()).unwrap();
        assert_eq!(record["why"]["reason"], "security_outcome");
        assert_eq!(record["kind"], "denied");
        assert_eq!(explain(&s, &probe("GET", "/healthz", 200)).record, None);

        let mut debug = probe("GET", "/api/v1/users/7", 200);
        debug.headers.push(("x-debug".into(), "1".into()));
        assert_eq!(failed(&explain(&s, &debug))[2], None);
    }
}
