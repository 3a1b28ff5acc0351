//! Rules that cannot do what they say, found from the rules themselves (`meshaudit check`
//! prints these warnings; `--strict` fails on them). Nothing here samples requests: each
//! condition is compared with the same condition of every earlier rule, as a firewall
//! analyser compares rules, by the semantics `rules::matches` gives them.
//!
//! Decided exactly: exact and prefix paths (with `case_insensitive`), a glob against an
//! exact path, a `**` subtree glob (`/api/**`) against a prefix, methods, hosts, header
//! conditions, statuses, callers, namespaces, mTLS, ambiguity, gRPC names. Not analysed
//! (never warned about): two globs other than a subtree, a rule covered only by several
//! earlier rules together, and overlaps that depend on how conditions on different facts
//! interact (a path condition beside a gRPC condition).

use crate::core::config::{
    Action, HeaderCondition, HostMatcher, Matcher, NameMatcher, PathMatcher, Rule, Settings,
    StatusMatcher,
};
use crate::core::envoy::grpc;
use crate::core::path::canonicalize;
use std::fmt;

/// A rule that may not do what it says: where (`rules[3]`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every warning about the rules, in rule order.
pub fn warnings(settings: &Settings) -> Vec<Warning> {
    let mut out = Vec::new();
    for (i, rule) in settings.rules.iter().enumerate() {
        let at = format!("rules[{i}]");
        let mut warn = |message: String| {
            out.push(Warning {
                path: at.clone(),
                message,
            })
        };
        let earlier = settings.rules.get(..i).unwrap_or_default();
        if let Some(j) = earlier
            .iter()
            .position(|a| covers(&a.matcher, &rule.matcher) == Tri::Yes)
        {
            let by = describe_rule(j, earlier.get(j));
            warn(format!(
                "\"{}\" can never apply: every request it matches is taken first by {by} (first match wins); move it above, or remove it",
                rule.name
            ));
            continue;
        }
        for (j, a) in earlier.iter().enumerate() {
            let exception = covers_paths(&rule.matcher, &a.matcher) == Tri::Yes;
            if a.action != rule.action
                && !exception
                && overlaps(&a.matcher, &rule.matcher) == Tri::Yes
            {
                warn(format!(
                    "\"{}\" is partly shadowed: {} go to {} first ({}); move \"{}\" above it if they should be {}",
                    rule.name,
                    describe_overlap(settings, &a.matcher, &rule.matcher),
                    describe_rule(j, Some(a)),
                    action_name(a.action),
                    rule.name,
                    action_name(rule.action),
                ));
            }
        }
        if rule.action == Action::Sample(0.0) {
            warn(format!(
                "\"{}\" samples at rate 0 and so never records; write \"action\": \"drop\" to say so (its requests are then counted as dropped, not sampled out)",
                rule.name
            ));
        }
        if rule.action == Action::Drop
            && settings.always_audit_security_outcomes
            && !rule.matcher.status.is_empty()
            && rule.matcher.status.iter().all(is_security_status)
        {
            warn(format!(
                "\"{}\" drops only security outcomes (its statuses are 401, 403, 429 or their gRPC counterparts), which are recorded anyway while always_audit_security_outcomes is on: it has no effect",
                rule.name
            ));
        }
        for (k, host) in rule.matcher.hosts.iter().enumerate() {
            if let Some(why) = unmatchable_host(host) {
                out.push(Warning {
                    path: format!("{at}.match.hosts[{k}]"),
                    message: format!("no :authority can match this host: {why}"),
                });
            }
        }
        for (k, path) in rule.matcher.paths.iter().enumerate() {
            if let PathMatcher::Glob(glob) = path {
                if !glob_is_canonical(settings, &glob.pattern(), rule.matcher.case_insensitive) {
                    out.push(Warning {
                        path: format!("{at}.match.paths[{k}].glob"),
                        message: format!(
                            "{:?} has literal parts that are not in canonical form, and rules match canonical paths (no '.' or '..' segments, no escaped unreserved bytes{}): as written it can never match there",
                            glob.pattern(),
                            if settings.canonical.backslash_is_slash { ", no backslashes" } else { "" }
                        ),
                    });
                }
            }
        }
    }
    out
}

/// Does it hold for every request? `Unknown`: not decided here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tri {
    No,
    Unknown,
    Yes,
}

impl Tri {
    fn of(b: bool) -> Tri {
        if b {
            Tri::Yes
        } else {
            Tri::No
        }
    }
}

/// A condition that is a list of alternatives (any one matches; empty matches everything):
/// `a` covers `b` when each of `b`'s alternatives is within one of `a`'s.
fn list_covers<A, B>(a: &[A], b: &[B], within: impl Fn(&A, &B) -> Tri) -> Tri {
    if a.is_empty() {
        return Tri::Yes;
    }
    if b.is_empty() {
        return Tri::No;
    }
    b.iter()
        .map(|y| a.iter().map(|x| within(x, y)).max().unwrap_or(Tri::No))
        .min()
        .unwrap_or(Tri::Yes)
}

/// Some request satisfies both lists.
fn list_overlaps<A, B>(a: &[A], b: &[B], meet: impl Fn(&A, &B) -> Tri) -> Tri {
    if a.is_empty() || b.is_empty() {
        return Tri::Yes;
    }
    a.iter()
        .flat_map(|x| b.iter().map(|y| meet(x, y)))
        .max()
        .unwrap_or(Tri::No)
}

fn option_covers(a: Option<bool>, b: Option<bool>) -> Tri {
    Tri::of(a.is_none() || a == b)
}

fn option_overlaps(a: Option<bool>, b: Option<bool>) -> Tri {
    Tri::of(a.is_none() || b.is_none() || a == b)
}

/// Every request `b` matches, `a` matches: conditions are a conjunction, so dimension by dimension.
fn covers(a: &Matcher, b: &Matcher) -> Tri {
    [
        option_covers(a.mtls, b.mtls),
        option_covers(a.ambiguous, b.ambiguous),
        list_covers(&a.principals, &b.principals, name_within),
        list_covers(&a.namespaces, &b.namespaces, |x, y| Tri::of(x == y)),
        covers_paths(a, b),
        list_covers(&a.methods, &b.methods, |x, y| Tri::of(x == y)),
        list_covers(&a.hosts, &b.hosts, host_within),
        headers_cover(a, b),
        list_covers(&a.status, &b.status, status_within),
        list_covers(&a.grpc_services, &b.grpc_services, name_within),
        list_covers(&a.grpc_methods, &b.grpc_methods, |x, y| Tri::of(x == y)),
    ]
    .into_iter()
    .min()
    .unwrap_or(Tri::Yes)
}

fn overlaps(a: &Matcher, b: &Matcher) -> Tri {
    let has_grpc = |m: &Matcher| !m.grpc_services.is_empty() || !m.grpc_methods.is_empty();
    // Both constrain the path: whether they meet depends on the path's shape.
    let path_and_grpc =
        (!a.paths.is_empty() && has_grpc(b)) || (has_grpc(a) && !b.paths.is_empty());
    [
        if path_and_grpc {
            Tri::Unknown
        } else {
            Tri::Yes
        },
        option_overlaps(a.mtls, b.mtls),
        option_overlaps(a.ambiguous, b.ambiguous),
        list_overlaps(&a.principals, &b.principals, names_meet),
        list_overlaps(&a.namespaces, &b.namespaces, |x, y| Tri::of(x == y)),
        list_overlaps(&a.paths, &b.paths, |x, y| paths_meet(a, x, b, y)),
        list_overlaps(&a.methods, &b.methods, |x, y| Tri::of(x == y)),
        list_overlaps(&a.hosts, &b.hosts, hosts_meet),
        headers_meet(a, b),
        list_overlaps(&a.status, &b.status, statuses_meet),
        list_overlaps(&a.grpc_services, &b.grpc_services, names_meet),
        list_overlaps(&a.grpc_methods, &b.grpc_methods, |x, y| Tri::of(x == y)),
    ]
    .into_iter()
    .min()
    .unwrap_or(Tri::Yes)
}

fn name_within(a: &NameMatcher, b: &NameMatcher) -> Tri {
    Tri::of(match (a, b) {
        (NameMatcher::Exact(x), NameMatcher::Exact(y)) => x == y,
        (NameMatcher::Prefix(x), NameMatcher::Exact(y) | NameMatcher::Prefix(y)) => {
            y.starts_with(x)
        }
        (NameMatcher::Exact(_), NameMatcher::Prefix(_)) => false,
    })
}

fn names_meet(a: &NameMatcher, b: &NameMatcher) -> Tri {
    Tri::of(match (a, b) {
        (NameMatcher::Exact(x), NameMatcher::Exact(y)) => x == y,
        (NameMatcher::Prefix(p), NameMatcher::Exact(n))
        | (NameMatcher::Exact(n), NameMatcher::Prefix(p)) => n.starts_with(p),
        (NameMatcher::Prefix(x), NameMatcher::Prefix(y)) => x.starts_with(y) || y.starts_with(x),
    })
}

/// `b`'s path condition within `a`'s, with each rule's `case_insensitive`: a rule that
/// ignores case compares the lowercased path with its lowercased patterns.
fn covers_paths(a: &Matcher, b: &Matcher) -> Tri {
    list_covers(&a.paths, &b.paths, |x, y| {
        if !a.case_insensitive && b.case_insensitive {
            // `b` also matches every other case of its letters; `a` only the one it names.
            return if has_letters(x) {
                Tri::No
            } else {
                path_within(x, y)
            };
        }
        if a.case_insensitive && !b.case_insensitive {
            return path_within(x, &lowercase(y));
        }
        path_within(x, y)
    })
}

fn paths_meet(a: &Matcher, x: &PathMatcher, b: &Matcher, y: &PathMatcher) -> Tri {
    match (a.case_insensitive, b.case_insensitive) {
        (false, true) => path_meets(&lowercase(x), y),
        (true, false) => path_meets(x, &lowercase(y)),
        _ => path_meets(x, y),
    }
}

fn has_letters(p: &PathMatcher) -> bool {
    match p {
        PathMatcher::Exact(b) | PathMatcher::Prefix(b) => b.iter().any(u8::is_ascii_alphabetic),
        PathMatcher::Glob(g) => g.pattern().bytes().any(|b| b.is_ascii_alphabetic()),
    }
}

fn lowercase(p: &PathMatcher) -> PathMatcher {
    match p {
        PathMatcher::Exact(b) => PathMatcher::Exact(b.to_ascii_lowercase()),
        PathMatcher::Prefix(b) => PathMatcher::Prefix(b.to_ascii_lowercase()),
        // Globs are stored lowercased when their rule ignores case; another's keeps its case.
        PathMatcher::Glob(g) => {
            match crate::core::path::Glob::new(&g.pattern().to_ascii_lowercase()) {
                Ok(lower) => PathMatcher::Glob(lower),
                Err(_) => p.clone(),
            }
        }
    }
}

/// Every canonical path `b` matches, `a` matches.
fn path_within(a: &PathMatcher, b: &PathMatcher) -> Tri {
    use PathMatcher::{Exact, Glob, Prefix};
    match (a, b) {
        (Exact(x), Exact(y)) => Tri::of(x == y),
        (Exact(_), Prefix(_)) => Tri::No,
        (Prefix(x), Exact(y) | Prefix(y)) => Tri::of(y.starts_with(x)),
        (Glob(g), Exact(y)) => Tri::of(g.matches(y)),
        (Glob(g), Prefix(y)) => match g.subtree() {
            Some(base) if base.is_empty() => Tri::Yes,
            Some(base) if y.starts_with(&base) && y.get(base.len()) == Some(&b'/') => Tri::Yes,
            _ => Tri::Unknown,
        },
        (Prefix(x), Glob(g)) if g.literal_prefix().starts_with(x) => Tri::Yes,
        (Glob(g), Glob(h)) if g == h || g.subtree().is_some_and(|base| base.is_empty()) => Tri::Yes,
        _ => Tri::Unknown,
    }
}

/// Some canonical path both match.
fn path_meets(a: &PathMatcher, b: &PathMatcher) -> Tri {
    use PathMatcher::{Exact, Glob, Prefix};
    let prefixes_meet = |x: &[u8], y: &[u8]| x.starts_with(y) || y.starts_with(x);
    match (a, b) {
        (Exact(x), Exact(y)) => Tri::of(x == y),
        (Exact(e), Prefix(p)) | (Prefix(p), Exact(e)) => Tri::of(e.starts_with(p)),
        (Prefix(x), Prefix(y)) => Tri::of(prefixes_meet(x, y)),
        (Glob(g), Exact(e)) | (Exact(e), Glob(g)) => Tri::of(g.matches(e)),
        (Glob(g), Prefix(p)) | (Prefix(p), Glob(g)) => {
            if !prefixes_meet(&g.literal_prefix(), p) {
                Tri::No
            } else if g.subtree().is_some() {
                // A subtree glob contains the paths under its base that begin with `p`.
                Tri::Yes
            } else {
                Tri::Unknown
            }
        }
        (Glob(g), Glob(h)) => {
            if prefixes_meet(&g.literal_prefix(), &h.literal_prefix()) {
                Tri::Unknown
            } else {
                Tri::No
            }
        }
    }
}

/// Hosts are stored lowercase; a suffix (`.example.com`) needs a label before it.
fn host_within(a: &HostMatcher, b: &HostMatcher) -> Tri {
    Tri::of(match (a, b) {
        (HostMatcher::Exact(x), HostMatcher::Exact(y)) => x == y,
        (HostMatcher::Exact(_), HostMatcher::Suffix(_)) => false,
        (HostMatcher::Suffix(s), HostMatcher::Exact(h)) => {
            h.len() > s.len() && h.ends_with(s.as_str())
        }
        (HostMatcher::Suffix(s), HostMatcher::Suffix(t)) => t.ends_with(s.as_str()),
    })
}

fn hosts_meet(a: &HostMatcher, b: &HostMatcher) -> Tri {
    match (a, b) {
        (HostMatcher::Suffix(s), HostMatcher::Suffix(t)) => {
            Tri::of(s.ends_with(t.as_str()) || t.ends_with(s.as_str()))
        }
        (HostMatcher::Exact(_), _) => host_within(b, a),
        _ => host_within(a, b),
    }
}

/// `a`'s header conditions (all must hold) each follow from one of `b`'s.
fn headers_cover(a: &Matcher, b: &Matcher) -> Tri {
    Tri::of(a.headers.iter().all(|x| {
        b.headers.iter().any(|y| {
            y.header == x.header
                && match (&x.condition, &y.condition) {
                    (
                        HeaderCondition::Present,
                        HeaderCondition::Present | HeaderCondition::Equals(_),
                    ) => true,
                    (HeaderCondition::Absent, HeaderCondition::Absent) => true,
                    (HeaderCondition::Equals(v), HeaderCondition::Equals(w)) => v == w,
                    _ => false,
                }
        })
    }))
}

/// No header is required both ways: absent and present, or equal to two values.
fn headers_meet(a: &Matcher, b: &Matcher) -> Tri {
    let contradicts = |x: &HeaderCondition, y: &HeaderCondition| match (x, y) {
        (HeaderCondition::Absent, HeaderCondition::Present | HeaderCondition::Equals(_))
        | (HeaderCondition::Present | HeaderCondition::Equals(_), HeaderCondition::Absent) => true,
        (HeaderCondition::Equals(v), HeaderCondition::Equals(w)) => v != w,
        _ => false,
    };
    let all: Vec<_> = a.headers.iter().chain(&b.headers).collect();
    Tri::of(!all.iter().enumerate().any(|(i, x)| {
        all.get(i + 1..)
            .unwrap_or_default()
            .iter()
            .any(|y| x.header == y.header && contradicts(&x.condition, &y.condition))
    }))
}

fn status_within(a: &StatusMatcher, b: &StatusMatcher) -> Tri {
    Tri::of(match (a, b) {
        (StatusMatcher::Class(k), StatusMatcher::Code(c)) => c / 100 == *k,
        _ => a == b,
    })
}

fn statuses_meet(a: &StatusMatcher, b: &StatusMatcher) -> Tri {
    match (a, b) {
        // A gRPC call carries an HTTP status and a gRPC one: any pair can meet.
        (StatusMatcher::Grpc(x), StatusMatcher::Grpc(y)) => Tri::of(x == y),
        (StatusMatcher::Grpc(_), _) | (_, StatusMatcher::Grpc(_)) => Tri::Yes,
        (StatusMatcher::Code(_), StatusMatcher::Class(_)) => status_within(b, a),
        _ => status_within(a, b),
    }
}

/// Statuses whose requests are security outcomes whatever else they are (`outcome`).
fn is_security_status(s: &StatusMatcher) -> bool {
    match *s {
        StatusMatcher::Code(code) => matches!(code, 401 | 403 | 429),
        StatusMatcher::Class(_) => false,
        StatusMatcher::Grpc(code) => matches!(
            i64::from(code),
            grpc::PERMISSION_DENIED | grpc::UNAUTHENTICATED | grpc::RESOURCE_EXHAUSTED
        ),
    }
}

/// The plugin compares the `:authority`'s host, its port and one final dot removed
/// (`identity::dns_name`), with the pattern.
fn unmatchable_host(host: &HostMatcher) -> Option<&'static str> {
    let name = match host {
        HostMatcher::Exact(name) => name.as_str(),
        HostMatcher::Suffix(suffix) => suffix.get(1..).unwrap_or_default(),
    };
    if name.ends_with('.') {
        Some("a final dot is removed from the :authority before comparing; write the name without it")
    } else if name.starts_with('.') || name.contains("..") {
        Some("it has an empty label")
    } else if name.split('.').any(|label| label.len() > 63) {
        Some("a DNS label is at most 63 bytes")
    } else {
        None
    }
}

/// The glob with each wildcard taken as one ordinary byte is its own canonical form: else
/// its literal parts hold what the canonical path never has.
fn glob_is_canonical(settings: &Settings, pattern: &str, case_insensitive: bool) -> bool {
    let probe = pattern.replace("**", "x").replace(['*', '?'], "x");
    let canonical = canonicalize(probe.as_bytes(), settings.canonical);
    if case_insensitive {
        canonical.to_ascii_lowercase() == probe.as_bytes()
    } else {
        *canonical == *probe.as_bytes()
    }
}

fn action_name(action: Action) -> String {
    match action {
        Action::Audit => "audit".to_string(),
        Action::Drop => "drop".to_string(),
        Action::Sample(rate) => format!("sample at {rate}"),
    }
}

fn describe_rule(index: usize, rule: Option<&Rule>) -> String {
    match rule {
        Some(rule) => format!("rules[{index}] \"{}\"", rule.name),
        None => format!("rules[{index}]"),
    }
}

/// The requests both rules match, in words: for each condition, the narrower of the two.
fn describe_overlap(settings: &Settings, a: &Matcher, b: &Matcher) -> String {
    let narrower = |ab: Tri, ba: Tri, a_empty: bool| match (ab, ba) {
        (_, Tri::Yes) if !a_empty => Side::A,
        _ => Side::B,
    };
    let mut words = Vec::new();
    let methods: Vec<&str> = match (a.methods.is_empty(), b.methods.is_empty()) {
        (true, _) => b.methods.iter().map(String::as_str).collect(),
        (false, true) => a.methods.iter().map(String::as_str).collect(),
        _ => a
            .methods
            .iter()
            .filter(|m| b.methods.contains(m))
            .map(String::as_str)
            .collect(),
    };
    words.push(if methods.is_empty() {
        "requests".to_string()
    } else {
        format!("{} requests", methods.join("/"))
    });
    let paths = match narrower(covers_paths(a, b), covers_paths(b, a), a.paths.is_empty()) {
        Side::A => &a.paths,
        Side::B => &b.paths,
    };
    if !paths.is_empty() {
        let list: Vec<String> = paths
            .iter()
            .map(|p| match p {
                PathMatcher::Exact(e) => format!("to {}", String::from_utf8_lossy(e)),
                PathMatcher::Prefix(p) => format!("under {}", String::from_utf8_lossy(p)),
                PathMatcher::Glob(g) => format!("matching {}", g.pattern()),
            })
            .collect();
        words.push(list.join(" or "));
    }
    let pick = |x: bool, y: bool| {
        if x {
            b
        } else if y {
            a
        } else {
            b
        }
    };
    let hosts = &pick(a.hosts.is_empty(), b.hosts.is_empty()).hosts;
    if !hosts.is_empty() {
        let list: Vec<String> = hosts
            .iter()
            .map(|h| match h {
                HostMatcher::Exact(name) => name.clone(),
                HostMatcher::Suffix(suffix) => format!("*{suffix}"),
            })
            .collect();
        words.push(format!("for {}", list.join(" or ")));
    }
    for h in a.headers.iter().chain(&b.headers) {
        let name = settings
            .reads
            .headers
            .get(h.header)
            .map_or("?", String::as_str);
        let phrase = match &h.condition {
            HeaderCondition::Present => format!("with {name}"),
            HeaderCondition::Absent => format!("without {name}"),
            HeaderCondition::Equals(v) => format!("with {name}: {}", String::from_utf8_lossy(v)),
        };
        if !words.contains(&phrase) {
            words.push(phrase);
        }
    }
    let status = &pick(a.status.is_empty(), b.status.is_empty()).status;
    if !status.is_empty() {
        let list: Vec<String> = status
            .iter()
            .map(|s| match *s {
                StatusMatcher::Code(c) => c.to_string(),
                StatusMatcher::Class(k) => format!("{k}xx"),
                StatusMatcher::Grpc(g) => grpc::status_name(i64::from(g))
                    .map_or_else(|| format!("grpc:{g}"), |n| format!("grpc:{n}")),
            })
            .collect();
        words.push(format!("answered {}", list.join(" or ")));
    }
    let principals = &pick(a.principals.is_empty(), b.principals.is_empty()).principals;
    if !principals.is_empty() {
        let list: Vec<String> = principals
            .iter()
            .map(|p| match p {
                NameMatcher::Exact(e) => String::from_utf8_lossy(e).into_owned(),
                NameMatcher::Prefix(p) => format!("{}*", String::from_utf8_lossy(p)),
            })
            .collect();
        words.push(format!("from {}", list.join(" or ")));
    }
    let namespaces = &pick(a.namespaces.is_empty(), b.namespaces.is_empty()).namespaces;
    if !namespaces.is_empty() {
        let list: Vec<String> = namespaces
            .iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        words.push(format!("from namespace {}", list.join(" or ")));
    }
    match a.mtls.or(b.mtls) {
        Some(true) => words.push("over mTLS".to_string()),
        Some(false) => words.push("without mTLS".to_string()),
        None => {}
    }
    match a.ambiguous.or(b.ambiguous) {
        Some(true) => words.push("that are ambiguous".to_string()),
        Some(false) => words.push("that are unambiguous".to_string()),
        None => {}
    }
    if !a.grpc_services.is_empty()
        || !b.grpc_services.is_empty()
        || !a.grpc_methods.is_empty()
        || !b.grpc_methods.is_empty()
    {
        words.push("of the gRPC services both name".to_string());
    }
    words.join(" ")
}

enum Side {
    A,
    B,
}

#[cfg(test)]
#[path = "analysis_tests.rs"]
mod tests;
