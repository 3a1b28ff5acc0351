//! `rules`: each rule and its `match`, compiled once (globs prepared, header names
//! interned so each is read once per request), and what the rules read of a request.

use super::budgets::budget;
use super::checks::{
    check_header_name, check_rate, check_rule_name, error, is_token_byte, ConfigError,
    MAX_PATTERN_BYTES,
};
use super::redaction::redact_from_raw;
use crate::core::config::defaults::{CASE_INSENSITIVE, MAX_RULES};
use crate::core::config::raw::{
    RawAction, RawHeaderMatch, RawLevel, RawMatch, RawPathMatch, RawRule, RawStatus,
};
use crate::core::config::settings::{
    Action, HeaderCondition, HeaderMatcher, HostMatcher, Level, Matcher, NameMatcher, PathMatcher,
    RecordedHeader, Rule, RuleReads, StatusMatcher,
};
use crate::core::envoy::grpc::status_code_of;
use crate::core::path::{canonicalize, CanonicalOptions, Glob};
use std::collections::HashSet;

/// Checked before the other sections, so a huge rule list is refused first.
pub(super) fn check_count(raw: &[RawRule]) -> Result<(), ConfigError> {
    if raw.len() > MAX_RULES {
        return Err(error(
            "rules",
            format!("at most {MAX_RULES} rules, got {}", raw.len()),
        ));
    }
    Ok(())
}

/// The rules in order, and what they read of a request.
pub(super) fn rules(
    raw: Vec<RawRule>,
    canonical: CanonicalOptions,
) -> Result<(Vec<Rule>, RuleReads), ConfigError> {
    let mut builder = RuleBuilder {
        canonical,
        match_headers: Vec::new(),
    };
    let mut names = HashSet::new();
    let mut rules = Vec::with_capacity(raw.len());
    for (i, raw_rule) in raw.into_iter().enumerate() {
        let at = format!("rules[{i}]");
        if !names.insert(raw_rule.name.clone()) {
            return Err(error(
                format!("{at}.name"),
                format!(
                    "duplicate rule name {:?}; rule names must be unique",
                    raw_rule.name
                ),
            ));
        }
        rules.push(builder.build_rule(&at, raw_rule)?);
    }
    let reads = RuleReads {
        headers: builder.match_headers,
        peer: rules.iter().any(|r| {
            let m = &r.matcher;
            m.mtls.is_some() || !m.principals.is_empty() || !m.namespaces.is_empty()
        }),
        status: rules.iter().any(|r| !r.matcher.status.is_empty()),
        ambiguity: rules.iter().any(|r| r.matcher.ambiguous.is_some()),
        start: rules.iter().any(|r| r.record_start),
    };
    check_record_start(&rules)?;
    Ok((rules, reads))
}

/// A rule that records a request's start must be the one that decides it at its end: no
/// rule up to it may match on the response status, which a starting request does not have.
fn check_record_start(rules: &[Rule]) -> Result<(), ConfigError> {
    let mut on_status: Option<(usize, &str)> = None;
    for (i, rule) in rules.iter().enumerate() {
        if !rule.matcher.status.is_empty() && on_status.is_none() {
            on_status = Some((i, &rule.name));
        }
        if !rule.record_start {
            continue;
        }
        let reason = match on_status {
            Some((j, _)) if j == i => {
                "the rule matches on the response status, which a request does not have when it starts; remove the status condition or record_start".to_string()
            }
            Some((j, name)) => format!(
                "rules[{j}] ({name:?}), before this rule, matches on the response status, so which rule decides is not known when the request starts; move this rule above it or remove record_start"
            ),
            None => continue,
        };
        return Err(error(format!("rules[{i}].record_start"), reason));
    }
    Ok(())
}

/// What compiling one rule needs from the configuration, and what the rules share.
struct RuleBuilder {
    canonical: CanonicalOptions,
    /// Header names rules match on, interned in order (`RuleReads::headers`).
    match_headers: Vec<String>,
}

impl RuleBuilder {
    fn build_rule(&mut self, at: &str, raw: RawRule) -> Result<Rule, ConfigError> {
        check_rule_name(&format!("{at}.name"), &raw.name)?;
        let action = match (raw.action, raw.sample_rate) {
            (RawAction::Sample, Some(rate)) => {
                Action::Sample(check_rate(&format!("{at}.sample_rate"), rate)?)
            }
            (RawAction::Sample, None) => {
                return Err(error(
                    format!("{at}.sample_rate"),
                    "required with action \"sample\" (a fraction from 0 to 1, e.g. 0.05)",
                ))
            }
            (_, Some(_)) => {
                return Err(error(
                    format!("{at}.sample_rate"),
                    "only allowed with action \"sample\"",
                ))
            }
            (RawAction::Audit, None) => Action::Audit,
            (RawAction::Drop, None) => Action::Drop,
        };
        let level = match raw.level.unwrap_or(RawLevel::DEFAULT) {
            RawLevel::Metadata => Level::Metadata,
            RawLevel::Request => Level::Request,
        };
        if level == Level::Metadata && !raw.request_headers.is_empty() {
            return Err(error(
                format!("{at}.request_headers"),
                "headers are only recorded at level \"request\"; set \"level\": \"request\" or remove the list",
            ));
        }
        if action == Action::Drop && level == Level::Request {
            return Err(error(
                format!("{at}.level"),
                "a \"drop\" rule writes no record, so a level has no effect; remove it",
            ));
        }
        let mut request_headers: Vec<RecordedHeader> =
            Vec::with_capacity(raw.request_headers.len());
        for (j, header) in raw.request_headers.into_iter().enumerate() {
            check_header_name(&format!("{at}.request_headers[{j}]"), &header.name)?;
            if request_headers.iter().any(|h| h.name == header.name) {
                return Err(error(
                    format!("{at}.request_headers[{j}]"),
                    format!("{:?} is listed twice", header.name),
                ));
            }
            request_headers.push(RecordedHeader {
                name: header.name,
                redact: header.redact.map(redact_from_raw),
                url: header.url,
            });
        }
        let matcher = self.build_matcher(&format!("{at}.match"), raw.matcher)?;
        let budget = match &raw.budget {
            Some(_) if action == Action::Drop => {
                return Err(error(
                    format!("{at}.budget"),
                    "a \"drop\" rule writes no record, so a budget has no effect; remove it",
                ));
            }
            Some(raw) => Some(budget(&format!("{at}.budget"), Some(raw), 0.0)?),
            None => None,
        };
        if raw.security_budget.is_some() && action != Action::Audit {
            return Err(error(
                format!("{at}.security_budget"),
                "only an \"audit\" rule chooses its budget class (other rules' records are routine); remove it",
            ));
        }
        if raw.record_start && action != Action::Audit {
            return Err(error(
                format!("{at}.record_start"),
                "only an \"audit\" rule records a request's start (other rules decide at its end, by sampling or outcome); remove it",
            ));
        }
        Ok(Rule {
            budget,
            security_budget: raw.security_budget.unwrap_or(true),
            record_start: raw.record_start,
            name: raw.name,
            matcher,
            action,
            level,
            request_headers,
        })
    }

    fn build_matcher(&mut self, at: &str, raw: RawMatch) -> Result<Matcher, ConfigError> {
        let case_insensitive = raw.case_insensitive.unwrap_or(CASE_INSENSITIVE);
        let mut paths = Vec::with_capacity(raw.paths.len());
        for (j, path) in raw.paths.into_iter().enumerate() {
            paths.push(self.build_path_matcher(
                &format!("{at}.paths[{j}]"),
                path,
                case_insensitive,
            )?);
        }
        let mut methods = Vec::with_capacity(raw.methods.len());
        for (j, method) in raw.methods.iter().enumerate() {
            if method.is_empty() || !method.bytes().all(is_token_byte) {
                return Err(error(
                    format!("{at}.methods[{j}]"),
                    format!(
                        "{:?} is not an HTTP method (a token such as GET or POST)",
                        method
                    ),
                ));
            }
            methods.push(method.to_ascii_uppercase());
        }
        let mut hosts = Vec::with_capacity(raw.hosts.len());
        for (j, host) in raw.hosts.iter().enumerate() {
            hosts.push(build_host_matcher(&format!("{at}.hosts[{j}]"), host)?);
        }
        let mut headers = Vec::with_capacity(raw.headers.len());
        for (j, header) in raw.headers.into_iter().enumerate() {
            headers.push(self.build_header_matcher(&format!("{at}.headers[{j}]"), header)?);
        }
        let mut status = Vec::with_capacity(raw.status.len());
        for (j, s) in raw.status.into_iter().enumerate() {
            status.push(build_status_matcher(&format!("{at}.status[{j}]"), s)?);
        }
        let mut principals = Vec::with_capacity(raw.principals.len());
        for (j, p) in raw.principals.iter().enumerate() {
            if p.is_empty() || p.len() > MAX_PATTERN_BYTES || p.chars().any(char::is_control) {
                return Err(error(
                    format!("{at}.principals[{j}]"),
                    "a principal such as \"spiffe://cluster.local/ns/shop/sa/checkout\", or a prefix ending in '*'",
                ));
            }
            principals.push(match p.strip_suffix('*') {
                Some(prefix) => NameMatcher::Prefix(prefix.as_bytes().to_vec()),
                None => NameMatcher::Exact(p.as_bytes().to_vec()),
            });
        }
        let mut namespaces = Vec::with_capacity(raw.namespaces.len());
        for (j, ns) in raw.namespaces.iter().enumerate() {
            let valid = !ns.is_empty()
                && ns.len() <= 253
                && ns.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !valid {
                return Err(error(
                    format!("{at}.namespaces[{j}]"),
                    format!("{:?} is not a Kubernetes namespace name", ns),
                ));
            }
            namespaces.push(ns.as_bytes().to_vec());
        }
        let mut grpc_services = Vec::with_capacity(raw.grpc_services.len());
        for (j, service) in raw.grpc_services.iter().enumerate() {
            grpc_services.push(build_service_matcher(
                &format!("{at}.grpc_services[{j}]"),
                service,
            )?);
        }
        let mut grpc_methods = Vec::with_capacity(raw.grpc_methods.len());
        for (j, method) in raw.grpc_methods.iter().enumerate() {
            check_grpc_method(&format!("{at}.grpc_methods[{j}]"), method)?;
            grpc_methods.push(method.as_bytes().to_vec());
        }
        Ok(Matcher {
            ambiguous: raw.ambiguous,
            grpc_services,
            grpc_methods,
            mtls: raw.mtls,
            principals,
            namespaces,
            paths,
            case_insensitive,
            methods,
            hosts,
            headers,
            status,
        })
    }

    fn build_path_matcher(
        &self,
        at: &str,
        raw: RawPathMatch,
        case_insensitive: bool,
    ) -> Result<PathMatcher, ConfigError> {
        let (kind, pattern) = match &raw {
            RawPathMatch::Exact(p) => ("exact", p),
            RawPathMatch::Prefix(p) => ("prefix", p),
            RawPathMatch::Glob(p) => ("glob", p),
        };
        let at = format!("{at}.{kind}");
        if !pattern.starts_with('/') {
            return Err(error(at, format!("must start with '/', got {:?}", pattern)));
        }
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(error(at, format!("at most {MAX_PATTERN_BYTES} bytes")));
        }
        if pattern.contains(['?', '#']) && kind != "glob" {
            return Err(error(
                at,
                "rules match the path without its query string; remove '?' and what follows",
            ));
        }
        let fold = |p: &str| {
            if case_insensitive {
                p.to_ascii_lowercase()
            } else {
                p.to_string()
            }
        };
        Ok(match raw {
            RawPathMatch::Exact(p) | RawPathMatch::Prefix(p) => {
                // A pattern the canonical form can never equal would silently never match.
                let canonical = canonicalize(p.as_bytes(), self.canonical);
                if *canonical != *p.as_bytes() {
                    return Err(error(
                        at,
                        format!(
                            "{:?} is not in canonical form (rules match canonical paths); write {:?}",
                            p,
                            String::from_utf8_lossy(&canonical)
                        ),
                    ));
                }
                let bytes = fold(&p).into_bytes();
                if kind == "exact" {
                    PathMatcher::Exact(bytes)
                } else {
                    PathMatcher::Prefix(bytes)
                }
            }
            RawPathMatch::Glob(p) => {
                PathMatcher::Glob(Glob::new(&fold(&p)).map_err(|reason| error(at, reason))?)
            }
        })
    }

    fn build_header_matcher(
        &mut self,
        at: &str,
        raw: RawHeaderMatch,
    ) -> Result<HeaderMatcher, ConfigError> {
        check_header_name(&format!("{at}.name"), &raw.name)?;
        let condition = match (raw.present, raw.equals) {
            (Some(true), None) => HeaderCondition::Present,
            (Some(false), None) => HeaderCondition::Absent,
            (None, Some(value)) => HeaderCondition::Equals(value.into_bytes()),
            _ => {
                return Err(error(
                    at,
                    "give exactly one of \"present\" (true/false) or \"equals\" (a value)",
                ))
            }
        };
        let header = match self.match_headers.iter().position(|h| *h == raw.name) {
            Some(index) => index,
            None => {
                self.match_headers.push(raw.name);
                self.match_headers.len() - 1
            }
        };
        Ok(HeaderMatcher { header, condition })
    }
}

fn build_host_matcher(at: &str, host: &str) -> Result<HostMatcher, ConfigError> {
    let lower = host.to_ascii_lowercase();
    let (suffix, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid {
        return Err(error(
            at,
            format!(
                "{:?} is not a host name; write \"api.example.com\" or \"*.example.com\" (no port, no scheme)",
                host
            ),
        ));
    }
    Ok(if suffix {
        HostMatcher::Suffix(format!(".{name}"))
    } else {
        HostMatcher::Exact(name.to_string())
    })
}

/// A protobuf full name: identifiers joined by `.` (`shop.v1.Admin`).
fn is_full_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PATTERN_BYTES
        && name.split(|&b| b == b'.').all(|part| {
            part.first()
                .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
                && part.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        })
}

fn build_service_matcher(at: &str, service: &str) -> Result<NameMatcher, ConfigError> {
    let bytes = service.as_bytes();
    let matcher = match bytes.strip_suffix(b"*") {
        // `shop.*`, `shop.v1.Ad*`: what precedes the `*` is a full name, or one and a dot.
        Some(prefix) if is_full_name(prefix.strip_suffix(b".").unwrap_or(prefix)) => {
            NameMatcher::Prefix(prefix.to_vec())
        }
        None if is_full_name(bytes) => NameMatcher::Exact(bytes.to_vec()),
        _ => {
            return Err(error(
                at,
                format!(
                    "{:?} is not a gRPC service; write its full name such as \"shop.v1.Admin\", or a prefix ending in '*' such as \"shop.*\"",
                    service
                ),
            ))
        }
    };
    Ok(matcher)
}

fn check_grpc_method(at: &str, method: &str) -> Result<(), ConfigError> {
    let bytes = method.as_bytes();
    let valid = bytes.iter().position(|&b| b == b'/').is_some_and(|slash| {
        let (service, name) = (bytes.get(..slash), bytes.get(slash + 1..));
        service.is_some_and(is_full_name)
            && name.is_some_and(|name| !name.contains(&b'.') && is_full_name(name))
    });
    if valid {
        return Ok(());
    }
    Err(error(
        at,
        format!(
            "{:?} is not a gRPC method; write \"<service>/<method>\" such as \"shop.v1.Admin/DeleteUser\" (no leading '/')",
            method
        ),
    ))
}

fn build_status_matcher(at: &str, raw: RawStatus) -> Result<StatusMatcher, ConfigError> {
    if let RawStatus::Class(text) = &raw {
        if let Some(name) = text.strip_prefix("grpc:") {
            return status_code_of(name).map(StatusMatcher::Grpc).ok_or_else(|| {
                error(
                    at,
                    format!(
                        "{:?} is not a gRPC status; write \"grpc:\" and a canonical name such as \"grpc:PERMISSION_DENIED\" or a code 0 to 16",
                        text
                    ),
                )
            });
        }
    }
    match raw {
        RawStatus::Code(code @ 100..=599) => Ok(StatusMatcher::Code(code as u16)),
        RawStatus::Code(code) => Err(error(at, format!("status code must be 100 to 599, got {code}"))),
        RawStatus::Class(class) => match class.to_ascii_lowercase().as_str() {
            "1xx" => Ok(StatusMatcher::Class(1)),
            "2xx" => Ok(StatusMatcher::Class(2)),
            "3xx" => Ok(StatusMatcher::Class(3)),
            "4xx" => Ok(StatusMatcher::Class(4)),
            "5xx" => Ok(StatusMatcher::Class(5)),
            _ => Err(error(
                at,
                format!("{:?} is not a status class; expected \"1xx\" to \"5xx\", a code such as 404, or a gRPC status such as \"grpc:PERMISSION_DENIED\"", class),
            )),
        },
    }
}
