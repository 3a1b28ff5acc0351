//! `meshaudit policy`: Istio authorization policies from the trail.
//!
//! `suggest` proposes an ALLOW `AuthorizationPolicy` that permits what a workload was seen to
//! serve: the (caller principal, method, path) combinations of its allowed inbound requests.
//! Only a trail that holds every request can show that, so it refuses a sampled or lossy one
//! (the `incomplete` reasons). Paths are generalised into Istio's templates (`{*}` one
//! segment, `{**}` the rest) only where the trail shows many values in one segment or a
//! privacy placeholder stands, and never within a sensitive rule's literal prefix.
//!
//! `impact` says, per dry-run policy, who would have been denied, how often and where.

use super::event::{Call, HopRef, Trail};
use super::summary::{would_deny, Evidence};
use crate::core::config::{Action, PathMatcher, Settings};
use std::collections::{BTreeMap, BTreeSet};

/// The literal prefixes of each `audit` rule's paths: what generalisation leaves as written.
pub type Protected = BTreeMap<String, Vec<String>>;

/// Each `audit` rule's path prefixes up to its first wildcard (an exact path whole). A rule
/// without paths protects nothing by path: it is sensitive for another reason (the caller).
pub fn protected_prefixes(settings: &Settings) -> Protected {
    settings
        .rules
        .iter()
        .filter(|r| r.action == Action::Audit)
        .map(|rule| {
            let prefixes = rule
                .matcher
                .paths
                .iter()
                .map(|p| match p {
                    PathMatcher::Exact(p) | PathMatcher::Prefix(p) => {
                        String::from_utf8_lossy(p).into_owned()
                    }
                    PathMatcher::Glob(g) => {
                        String::from_utf8_lossy(&g.literal_prefix()).into_owned()
                    }
                })
                .collect();
            (rule.name.clone(), prefixes)
        })
        .collect()
}

#[derive(Debug, Clone, Default)]
pub struct SuggestOptions {
    /// The workload's own SPIFFE id (`peer.local_principal` of its inbound records).
    pub local_principal: Option<String>,
    /// Its proxies' `instance` begins with this (a pod name's prefix).
    pub instance_prefix: Option<String>,
    /// Distinct values in one segment from which it becomes `{*}`.
    pub threshold: usize,
    /// From the plugin configuration, when given: else a sensitive path stays whole.
    pub protected: Option<Protected>,
}

/// One rule of the suggested policy: a caller and what it was seen to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuggestedRule {
    /// The caller's SPIFFE id as recorded (`spiffe://…`).
    pub principal: String,
    pub evidence: Evidence,
    pub operations: Vec<Operation>,
}

/// Methods and the paths (templates) they were seen on, with each path's evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub methods: Vec<String>,
    pub paths: Vec<(String, Evidence, u64)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Suggestion {
    pub rules: Vec<SuggestedRule>,
    /// The allowed inbound requests the rules are built from.
    pub evidence: Evidence,
    pub instances: BTreeSet<String>,
    /// Why the trail may not hold every request to the workload: refuse unless told.
    pub incomplete: Vec<String>,
    /// Allowed requests with no caller principal (plaintext): no rule can name them.
    pub without_principal: Evidence,
    /// Paths Istio would read as wildcards (a `*` at an end, or braces): left out.
    pub unexpressible: BTreeSet<String>,
}

/// An inbound record of the workload (server side: its sidecar or a waypoint in front of it).
fn of_workload(record: &HopRef<'_>, options: &SuggestOptions) -> bool {
    let principal_ok = options
        .local_principal
        .as_deref()
        .is_none_or(|p| record.text(record.hop.local_principal) == Some(p));
    let instance_ok = options
        .instance_prefix
        .as_deref()
        .is_none_or(|p| record.instance().starts_with(p));
    principal_ok && instance_ok && matches!(record.direction(), Some("inbound" | "waypoint") | None)
}

/// A segment the privacy rules wrote in place of a value (`{digits}`, `{email}`, a
/// configured placeholder): any value stood there.
fn placeholder(segment: &str) -> bool {
    segment.len() > 2 && segment.starts_with('{') && segment.ends_with('}')
}

/// How many leading segments of a sensitive request's path stay as written.
fn protected_depth(record: &HopRef<'_>, protected: Option<&Protected>) -> usize {
    let path = record.path();
    let segments = segments(path).len();
    if !record.hop.sensitive {
        return 0;
    }
    let Some(protected) = protected else {
        return segments;
    };
    let Some(prefixes) = record.rule().and_then(|r| protected.get(r)) else {
        // A mesh AUDIT policy, or a rule the configuration given does not have.
        return segments;
    };
    if prefixes.is_empty() {
        return 0;
    }
    // No prefix of the rule's covers the path: it matched on another reading (a routing
    // header, say), so nothing says how much of this path is the sensitive part.
    prefixes
        .iter()
        .filter(|p| path.starts_with(p.as_str()))
        .map(|p| segments_of_prefix(p))
        .max()
        .unwrap_or(segments)
}

fn segments(path: &str) -> Vec<&str> {
    match path.strip_prefix('/') {
        Some("") | None => Vec::new(),
        Some(rest) => rest.split('/').collect(),
    }
}

/// Segments a prefix fixes: `/admin` and `/admin/` fix one, `/adm` fixes the first's start,
/// which keeps the whole segment.
fn segments_of_prefix(prefix: &str) -> usize {
    let trimmed = prefix.trim_end_matches('/');
    segments(trimmed).len()
}

/// A path trie: where generalisation merges values.
#[derive(Debug, Default, Clone)]
struct Node {
    children: BTreeMap<String, Node>,
    /// A path ends here.
    end: bool,
    /// The deepest protected depth of the paths through this node.
    protect: usize,
}

const ONE: &str = "{*}";
const REST: &str = "{**}";

impl Node {
    fn insert(&mut self, path: &[&str], protect: usize) {
        self.protect = self.protect.max(protect);
        match path.split_first() {
            None => self.end = true,
            Some((first, rest)) => self
                .children
                .entry((*first).to_string())
                .or_default()
                .insert(rest, protect),
        }
    }

    fn absorb(&mut self, other: Node) {
        self.end |= other.end;
        self.protect = self.protect.max(other.protect);
        for (segment, child) in other.children {
            self.children.entry(segment).or_default().absorb(child);
        }
    }

    /// Depths below this node at which paths end.
    fn end_depths(&self, depth: usize, out: &mut BTreeSet<usize>) {
        if self.end {
            out.insert(depth);
        }
        for child in self.children.values() {
            child.end_depths(depth + 1, out);
        }
    }

    /// Generalises the children of a node whose segment index is `depth`.
    fn generalise(&mut self, depth: usize, threshold: usize) {
        // A protected segment stays as written; `{*}` never matches an empty one.
        let mergeable = |segment: &str, child: &Node| {
            child.protect <= depth && !segment.is_empty() && segment != ONE
        };
        // What a placeholder stands for is any value, which no policy can name: even in a
        // sensitive path it can only be `{*}`.
        let placeholders: Vec<String> = self
            .children
            .keys()
            .filter(|s| placeholder(s))
            .cloned()
            .collect();
        let mut merged_by_count = false;
        let mut values: Vec<String> = self
            .children
            .iter()
            .filter(|(s, c)| mergeable(s, c) && !placeholder(s))
            .map(|(s, _)| s.clone())
            .collect();
        if threshold > 0 && values.len() >= threshold {
            merged_by_count = true;
        } else {
            values.clear();
        }
        if !placeholders.is_empty() || merged_by_count {
            let mut any = self.children.remove(ONE).unwrap_or_default();
            for segment in placeholders.iter().chain(&values) {
                if let Some(child) = self.children.remove(segment) {
                    any.absorb(child);
                }
            }
            let mut depths = BTreeSet::new();
            any.end_depths(0, &mut depths);
            // Many values whose paths go on to different depths: the rest of the path varies.
            if merged_by_count && depths.len() > 1 && any.protect <= depth {
                self.children.insert(
                    REST.to_string(),
                    Node {
                        end: true,
                        ..Node::default()
                    },
                );
            } else {
                self.children.insert(ONE.to_string(), any);
            }
        }
        for child in self.children.values_mut() {
            child.generalise(depth + 1, threshold);
        }
    }

    /// The template a concrete path falls under.
    fn template(&self, path: &[&str]) -> Option<String> {
        let Some((first, rest)) = path.split_first() else {
            return self.end.then(String::new);
        };
        if let Some(found) = self.children.get(*first).and_then(|c| c.template(rest)) {
            return Some(format!("/{first}{found}"));
        }
        if let Some(found) = self.children.get(ONE).and_then(|c| c.template(rest)) {
            return Some(format!("/{ONE}{found}"));
        }
        self.children.get(REST).map(|_| format!("/{REST}"))
    }
}

/// A path Istio would not read literally: `*` at an end is a prefix or suffix match, and
/// braces are template syntax.
fn unexpressible(path: &str) -> bool {
    path.starts_with('*')
        || path.ends_with('*')
        || path
            .split('/')
            .any(|s| s.contains(['{', '}']) && !placeholder(s))
}

pub fn suggest(trail: &Trail, options: &SuggestOptions) -> Suggestion {
    let mut suggestion = Suggestion::default();
    let calls = trail.requests();
    let mut selected: Vec<HopRef<'_>> = Vec::new();
    for call in &calls {
        let Some(record) = call.hops.iter().rev().find(|r| of_workload(r, options)) else {
            continue;
        };
        if matches!(record.kind(), "denied" | "auth_failure") {
            continue;
        }
        selected.push(*record);
    }
    let mut sampled = 0u64;
    for record in &selected {
        suggestion.instances.insert(record.instance().to_string());
        sampled += u64::from(record.hop.sampled);
    }
    if sampled > 0 {
        suggestion.incomplete.push(format!(
            "{sampled} of the workload's records were written at a sampling rate below 1: the trail holds only some of its requests"
        ));
    }
    incomplete_by_accounting(trail, &selected, &mut suggestion.incomplete);

    // Per caller: each path with its protected depth; then the caller's trie.
    let mut by_caller: BTreeMap<&str, Vec<HopRef<'_>>> = BTreeMap::new();
    for record in selected {
        match record.principal() {
            Some(principal) => by_caller.entry(principal).or_default().push(record),
            None => suggestion.without_principal.add(record.ts()),
        }
    }
    for (principal, records) in by_caller {
        let mut trie = Node::default();
        let mut usable = Vec::new();
        for record in records {
            let path = record.path();
            if unexpressible(path) {
                suggestion.unexpressible.insert(path.to_string());
                continue;
            }
            trie.insert(
                &segments(path),
                protected_depth(&record, options.protected.as_ref()),
            );
            usable.push(record);
        }
        trie.generalise(0, options.threshold);
        // template → (methods → evidence), and the distinct paths each template covers.
        let mut templates: BTreeMap<String, (BTreeMap<String, Evidence>, BTreeSet<String>)> =
            BTreeMap::new();
        let mut evidence = Evidence::default();
        for record in usable {
            let path = record.path();
            let template = trie
                .template(&segments(path))
                .map(|t| if t.is_empty() { "/".into() } else { t })
                .unwrap_or_else(|| path.to_string());
            let entry = templates.entry(template).or_default();
            entry
                .0
                .entry(record.method().to_string())
                .or_default()
                .add(record.ts());
            entry.1.insert(path.to_string());
            evidence.add(record.ts());
            suggestion.evidence.add(record.ts());
        }
        // Paths with the same methods share an operation.
        let mut operations: BTreeMap<Vec<String>, Vec<(String, Evidence, u64)>> = BTreeMap::new();
        for (template, (methods, concrete)) in templates {
            let mut path_evidence = Evidence::default();
            for e in methods.values() {
                path_evidence.merge(e);
            }
            operations
                .entry(methods.into_keys().collect())
                .or_default()
                .push((template, path_evidence, concrete.len() as u64));
        }
        if evidence.count == 0 {
            continue;
        }
        suggestion.rules.push(SuggestedRule {
            principal: principal.to_string(),
            evidence,
            operations: operations
                .into_iter()
                .map(|(methods, paths)| Operation { methods, paths })
                .collect(),
        });
    }
    suggestion
}

/// What the workload's accounting records say the trail lacks: those of the streams its
/// records came from, and of the other workers running the same configuration on its
/// proxies (one may have written nothing). A network-mode plugin on the same proxy runs
/// another configuration: its connections are not the workload's requests.
fn incomplete_by_accounting(trail: &Trail, selected: &[HopRef<'_>], out: &mut Vec<String>) {
    let streams: BTreeSet<&str> = selected
        .iter()
        .filter_map(|r| r.text(r.hop.stream))
        .collect();
    let instances: BTreeSet<&str> = selected.iter().map(|r| r.instance()).collect();
    let accounting = || trail.records.iter().filter(|r| r.kind == "accounting");
    let configs: BTreeSet<&str> = accounting()
        .filter(|r| r.stream.as_deref().is_some_and(|s| streams.contains(s)))
        .filter_map(|r| r.interval.as_ref()?.config.as_deref())
        .collect();
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    let mut intervals = 0;
    for record in accounting().filter(|r| {
        instances.contains(r.instance.as_str())
            && (r.stream.as_deref().is_some_and(|s| streams.contains(s))
                || r.interval
                    .as_ref()
                    .and_then(|i| i.config.as_deref())
                    .is_some_and(|c| configs.contains(c)))
    }) {
        intervals += 1;
        for (name, n) in &record.totals {
            let total = totals.entry(name).or_default();
            *total = total.saturating_add(*n);
        }
    }
    if intervals == 0 && !selected.is_empty() {
        out.push(
            "no accounting record of the workload's proxies: nothing shows the trail holds every request (capture past a report, or the proxy's shutdown)"
                .into(),
        );
    }
    for name in super::summary::NOT_WRITTEN {
        let n = totals.get(name).copied().unwrap_or(0);
        if n > 0 {
            out.push(format!(
                "the workload's proxies did not write {n} requests ({name})"
            ));
        }
    }
}

/// One dry-run policy's evidence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Impact {
    pub policy: String,
    /// The stat prefix of the shadow engine (`istio_dry_run_deny_`, `istio_dry_run_allow_`).
    pub prefix: String,
    pub would_deny: Evidence,
    /// Requests it was seen to let through (a shadow ALLOW that matched).
    pub would_allow: u64,
    pub callers: BTreeMap<String, u64>,
    pub endpoints: BTreeMap<String, u64>,
    /// The most recent requests it would have denied: time, caller, endpoint, request id.
    pub latest: Vec<(String, String, String, String)>,
}

/// How many of the most recent denials `impact` keeps per policy.
pub const LATEST: usize = 5;

pub fn impact(trail: &Trail) -> Vec<Impact> {
    let mut by_policy: BTreeMap<String, Impact> = BTreeMap::new();
    for call in trail.requests() {
        impact_of(&call, &mut by_policy);
    }
    let mut impacts: Vec<Impact> = by_policy.into_values().collect();
    for impact in &mut impacts {
        impact.latest.sort_by(|a, b| b.0.cmp(&a.0));
        impact.latest.truncate(LATEST);
    }
    impacts.sort_by(|a, b| {
        b.would_deny
            .count
            .cmp(&a.would_deny.count)
            .then_with(|| a.policy.cmp(&b.policy))
    });
    impacts
}

fn impact_of(call: &Call<'_>, by_policy: &mut BTreeMap<String, Impact>) {
    let caller = call.caller();
    let mut denied: BTreeMap<&str, HopRef<'_>> = BTreeMap::new();
    let mut allowed: BTreeSet<&str> = BTreeSet::new();
    for record in &call.hops {
        for policy in would_deny(*record) {
            denied.insert(policy, *record);
        }
        for shadow in record.hop.shadow.iter() {
            let prefix = record.text(shadow.prefix);
            let dry_run = prefix.is_some_and(|p| p.starts_with("istio_dry_run_"));
            if let (true, false, Some(policy)) =
                (dry_run, shadow.denied, record.text(shadow.policy))
            {
                allowed.insert(policy);
            }
            if let (Some(policy), Some(prefix)) = (record.text(shadow.policy), prefix) {
                let entry = by_policy.entry(policy.to_string()).or_default();
                if entry.prefix.is_empty() {
                    entry.prefix = prefix.to_string();
                }
            }
        }
    }
    for policy in allowed {
        let entry = by_policy.entry(policy.to_string()).or_default();
        entry.policy = policy.to_string();
        entry.would_allow += 1;
    }
    for (policy, record) in denied {
        let entry = by_policy.entry(policy.to_string()).or_default();
        entry.policy = policy.to_string();
        entry.would_deny.add(record.ts());
        *entry.callers.entry(caller.to_string()).or_default() += 1;
        let endpoint = format!("{} {}", record.method(), record.path());
        *entry.endpoints.entry(endpoint.clone()).or_default() += 1;
        entry.latest.push((
            record.ts().to_string(),
            caller.to_string(),
            endpoint,
            record.request_id().unwrap_or("-").to_string(),
        ));
        // Bounded: only the most recent are kept.
        if entry.latest.len() > 4 * LATEST {
            entry.latest.sort_by(|a, b| b.0.cmp(&a.0));
            entry.latest.truncate(LATEST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::trail::event::Window;
    use serde_json::json;

    const CALLER: &str = "spiffe://td/ns/shop/sa/web";
    const WORKLOAD: &str = "spiffe://td/ns/pay/sa/api";

    /// A trail of allowed inbound requests to the workload, at rate 1, with its accounting.
    fn trail(requests: &[(&str, &str, &str)], sample_rate: f64, dropped: u64) -> Trail {
        let mut trail = Trail::default();
        let mut seq = 0;
        for (n, (method, path, rule)) in requests.iter().enumerate() {
            let (reason, action) = if rule.is_empty() {
                ("default_sample", "sample")
            } else {
                ("rule", "audit")
            };
            let record = json!({
                "ts": format!("2026-12-01T10:{:02}:00.000Z", n % 60), "kind": "access", "instance": "api-1",
                "stream": "00000000000000aa", "seq": seq, "direction": "inbound",
                "why": {"reason": reason, "rule": rule, "action": action, "sample_rate": sample_rate},
                "request": {"id": format!("r{n}"), "method": method, "path": path}, "response": {"code": 200},
                "peer": {"mtls": true, "principal": CALLER, "local_principal": WORKLOAD},
            });
            trail.line(
                &super::super::event::tests::line(record),
                &Window::default(),
            );
            seq += 1;
        }
        let accounting = json!({
            "ts": "2026-12-01T11:00:00.000Z", "kind": "accounting", "instance": "api-1", "stream": "00000000000000aa",
            "seq": seq, "interval": {"start": "a", "end": "b", "first_seq": 0, "config": "sha256:00"},
            "totals": {"requests": seq + dropped, "records": seq, "dropped": dropped}, "by_rule": {},
        });
        trail.line(
            &super::super::event::tests::line(accounting),
            &Window::default(),
        );
        trail.sort();
        trail
    }

    fn options(threshold: usize) -> SuggestOptions {
        SuggestOptions {
            local_principal: Some(WORKLOAD.into()),
            threshold,
            ..SuggestOptions::default()
        }
    }

    fn paths(s: &Suggestion) -> Vec<(Vec<String>, Vec<String>)> {
        s.rules
            .iter()
            .flat_map(|r| r.operations.iter())
            .map(|o| {
                (
                    o.methods.clone(),
                    o.paths.iter().map(|p| p.0.clone()).collect(),
                )
            })
            .collect()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_segment_with_many_values_becomes_one_template_and_few_stay_literal() {
        let mut requests: Vec<(&str, String, &str)> =
            (0..5).map(|n| ("GET", format!("/items/{n}"), "")).collect();
        requests.extend((0..4).map(|n| ("GET", format!("/carts/{n}"), "")));
        requests.push(("POST", "/orders".into(), ""));
        let requests: Vec<(&str, &str, &str)> = requests
            .iter()
            .map(|(m, p, r)| (*m, p.as_str(), *r))
            .collect();
        let s = suggest(&trail(&requests, 1.0, 0), &options(5));
        assert!(s.incomplete.is_empty(), "{:?}", s.incomplete);
        let mut expected_get = strings(&["/carts/0", "/carts/1", "/carts/2", "/carts/3"]);
        expected_get.push("/items/{*}".into());
        assert_eq!(
            paths(&s),
            [
                (strings(&["GET"]), expected_get),
                (strings(&["POST"]), strings(&["/orders"]))
            ]
        );
        let items = s.rules[0].operations[0]
            .paths
            .iter()
            .find(|p| p.0 == "/items/{*}")
            .unwrap();
        assert_eq!(
            (items.1.count, items.2),
            (5, 5),
            "five requests over five distinct paths"
        );
        assert_eq!(s.evidence.count, 10);
        // Threshold 0: never generalised.
        let never = suggest(&trail(&requests, 1.0, 0), &options(0));
        assert_eq!(never.rules[0].operations[0].paths.len(), 9);
    }

    #[test]
    fn many_values_with_tails_of_several_depths_become_the_rest_of_the_path() {
        let requests = [
            ("GET", "/files/a", ""),
            ("GET", "/files/b/c", ""),
            ("GET", "/files/d/e/f", ""),
            ("GET", "/files/g", ""),
            ("GET", "/files", ""),
        ];
        let s = suggest(&trail(&requests, 1.0, 0), &options(4));
        assert_eq!(
            paths(&s),
            [(strings(&["GET"]), strings(&["/files", "/files/{**}"]))]
        );
    }

    #[test]
    fn placeholders_stand_for_any_value_and_empty_segments_and_wildcards_are_kept_apart() {
        let requests = [
            ("GET", "/users/{digits}/orders", "admin"),
            ("GET", "/users/{email}/orders", "admin"),
            ("GET", "/a/", ""),
            ("GET", "/a/x", ""),
            ("GET", "/files*", ""),
            ("GET", "/odd/{x", ""),
        ];
        let s = suggest(&trail(&requests, 1.0, 0), &options(2));
        assert_eq!(
            paths(&s),
            [(strings(&["GET"]), strings(&["/a/", "/a/x", "/users/{*}/orders"]))],
            "a placeholder is {{*}} even in a sensitive path; `{{*}}` never matches an empty segment"
        );
        assert_eq!(
            s.unexpressible,
            BTreeSet::from(["/files*".to_string(), "/odd/{x".to_string()])
        );
    }

    #[test]
    fn sensitive_paths_stay_as_written_up_to_the_rules_prefix() {
        let requests: Vec<String> = (0..6).map(|n| format!("/admin/users/{n}")).collect();
        let requests: Vec<(&str, &str, &str)> = requests
            .iter()
            .map(|p| ("GET", p.as_str(), "admin"))
            .collect();
        let t = trail(&requests, 1.0, 0);
        let literal = suggest(&t, &options(5));
        assert_eq!(
            literal.rules[0].operations[0].paths.len(),
            6,
            "no configuration: whole paths"
        );
        let mut within = options(5);
        within.protected = Some(Protected::from([(
            "admin".into(),
            vec!["/admin/users/".into()],
        )]));
        assert_eq!(
            paths(&suggest(&t, &within)),
            [(strings(&["GET"]), strings(&["/admin/users/{*}"]))]
        );
        let mut deeper = options(5);
        deeper.protected = Some(Protected::from([(
            "admin".into(),
            vec!["/admin/users/1".into()],
        )]));
        let deeper = suggest(&t, &deeper);
        assert_eq!(
            deeper.rules[0].operations[0].paths.len(),
            6,
            "the prefix fixes the third segment; paths it does not cover stay whole"
        );
    }

    #[test]
    fn a_sampled_or_lossy_trail_is_incomplete() {
        let requests = [("GET", "/a", "")];
        assert!(suggest(&trail(&requests, 1.0, 0), &options(5))
            .incomplete
            .is_empty());
        let sampled = suggest(&trail(&requests, 0.5, 0), &options(5));
        assert!(
            sampled
                .incomplete
                .iter()
                .any(|r| r.contains("sampling rate below 1")),
            "{:?}",
            sampled.incomplete
        );
        let lossy = suggest(&trail(&requests, 1.0, 3), &options(5));
        assert_eq!(
            lossy.incomplete,
            ["the workload's proxies did not write 3 requests (dropped)"]
        );
        let other = SuggestOptions {
            local_principal: Some("spiffe://td/ns/pay/sa/other".into()),
            ..options(5)
        };
        assert_eq!(suggest(&trail(&requests, 1.0, 0), &other).evidence.count, 0);
    }

    #[test]
    fn impact_counts_each_request_once_per_dry_run_policy_and_never_a_custom_selection() {
        let mut trail = Trail::default();
        for (n, (result, prefix, policy)) in [
            ("denied", "istio_dry_run_deny_", "ns[a]-policy[dry]-rule[0]"),
            ("denied", "istio_dry_run_deny_", "ns[a]-policy[dry]-rule[0]"),
            (
                "denied",
                "istio_ext_authz_",
                "istio-ext-authz-ns[a]-policy[ext]-rule[0]",
            ),
            (
                "allowed",
                "istio_dry_run_allow_",
                "ns[a]-policy[dry-allow]-rule[0]",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let kind = if result == "denied" {
                "shadow_denied"
            } else {
                "shadow_allowed"
            };
            for (instance, stream) in [
                ("client", "00000000000000bb"),
                ("server", "00000000000000aa"),
            ] {
                let record = json!({
                    "ts": format!("2026-12-01T10:00:0{n}.000Z"), "kind": kind, "instance": instance, "stream": stream,
                    "seq": n, "direction": if instance == "server" { "inbound" } else { "outbound" },
                    "why": {"reason": "security_outcome", "action": "sample", "sample_rate": 0.0},
                    "request": {"id": format!("r{n}"), "method": "GET", "path": "/reports"}, "response": {"code": 200},
                    "peer": {"mtls": true, "principal": CALLER},
                    "authz": {"decision": "allowed", "by": "rbac", "basis": "allow_policy",
                              "shadow": [{"result": result, "prefix": prefix, "policy": policy}]},
                });
                trail.line(
                    &super::super::event::tests::line(record),
                    &Window::default(),
                );
            }
        }
        trail.sort();
        let impacts = impact(&trail);
        let dry = impacts
            .iter()
            .find(|i| i.policy == "ns[a]-policy[dry]-rule[0]")
            .unwrap();
        assert_eq!(
            dry.would_deny.count, 2,
            "two requests, each seen at two hops"
        );
        assert_eq!(dry.callers, BTreeMap::from([(CALLER.to_string(), 2)]));
        assert_eq!(dry.latest.first().unwrap().3, "r1", "most recent first");
        assert!(impacts
            .iter()
            .all(|i| !i.policy.starts_with("istio-ext-authz")));
        let allow = impacts
            .iter()
            .find(|i| i.policy == "ns[a]-policy[dry-allow]-rule[0]")
            .unwrap();
        assert_eq!((allow.would_deny.count, allow.would_allow), (0, 1));
    }
}
