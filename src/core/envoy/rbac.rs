//! What Envoy's RBAC filters decided, from their dynamic metadata, and the policy
//! names Istio's authorization builder gives them.
//!
//! Istio compiles AuthorizationPolicies into RBAC filters, in this order: CUSTOM (an RBAC
//! filter whose shadow rules select the requests `ext_authz` then checks), AUDIT (an RBAC
//! filter with `action: LOG`), DENY, ALLOW. Every one writes the same metadata namespace,
//! `envoy.filters.http.rbac`, and Envoy merges the writes key by key: a later filter that
//! matches no policy leaves an earlier one's `enforced_effective_policy_id` in place. So
//! the metadata alone cannot say which filter decided; `response.code_details` names the
//! denying policy, and the AUDIT filter's mark (`access_log_hint`) says whether the
//! surviving id may be its own.

use super::attributes::{decode_flag, ACCESS_LOG_HINT, RBAC_METADATA};
use super::headers::HeaderMap;
use super::host::Host;
use crate::core::bytes::{find, rfind};

/// An Istio RBAC policy name `ns[<namespace>]-policy[<name>]-rule[<index>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IstioPolicy<'a> {
    pub namespace: &'a [u8],
    pub name: &'a [u8],
    pub rule: u32,
}

pub(crate) fn parse_istio_policy(id: &[u8]) -> Option<IstioPolicy<'_>> {
    let rest = id.strip_prefix(b"ns[")?;
    let ns_end = find(rest, b"]-policy[")?;
    let namespace = rest.get(..ns_end)?;
    let rest = rest.get(ns_end + b"]-policy[".len()..)?;
    // The name may not contain "]-rule[" but the rule index is the last bracket.
    let name_end = rfind(rest, b"]-rule[")?;
    let name = rest.get(..name_end)?;
    let index = rest
        .get(name_end + b"]-rule[".len()..)?
        .strip_suffix(b"]")?;
    let rule = std::str::from_utf8(index).ok()?.parse().ok()?;
    (!namespace.is_empty() && !name.is_empty()).then_some(IstioPolicy {
        namespace,
        name,
        rule,
    })
}

/// One RBAC engine's result, from the RBAC filter's dynamic metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EngineResult {
    /// The shadow stat prefix (`istio_dry_run_allow_`…), empty for the plain shadow engine.
    pub prefix: Vec<u8>,
    /// `allowed` or `denied`.
    pub result: Vec<u8>,
    pub policy: Option<Vec<u8>>,
}

/// The AUDIT filter's mark, read on its own: `Some(true)` when a mesh AUDIT policy matched,
/// `None` without an AUDIT filter. Two single reads (`:status` and this) cost Envoy less than
/// one CEL batch of both (measured in instructions per request: bench/README.md).
pub(crate) fn read_audit_hint(host: &impl Host) -> Option<bool> {
    host.property(ACCESS_LOG_HINT)
        .as_deref()
        .and_then(decode_flag)
}

/// Istio's CUSTOM action: an RBAC filter whose shadow DENY rules select the requests
/// `ext_authz` checks, under this shadow stat prefix (Istio 1.10 and later; none before).
const EXT_AUTHZ_PREFIX: &[u8] = b"istio_ext_authz_";
/// The name every CUSTOM selection policy starts with: `istio-ext-authz-ns[…]…` up to
/// Istio 1.29, `istio-ext-authz-<provider>-ns[…]…` from 1.30.
const EXT_AUTHZ_POLICY_PREFIX: &[u8] = b"istio-ext-authz-";

/// RBAC's dynamic metadata (`enforced_*`, `[<prefix>]shadow_*`), read in one host call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Rbac {
    /// What Envoy's merged metadata holds of the enforcing filters (see the module doc).
    pub enforced: Option<EngineResult>,
    /// Dry-run results: shadow engines other than Istio's CUSTOM selection.
    pub shadows: Vec<EngineResult>,
    /// Istio's CUSTOM action selected the request for the external authorizer: the
    /// selecting policy's id (`istio-ext-authz-…`). Not a dry run, never a shadow result.
    pub ext_authz_selection: Option<Vec<u8>>,
}

const ENGINE_RESULT: &[u8] = b"engine_result";
const EFFECTIVE_POLICY_ID: &[u8] = b"effective_policy_id";
const SHADOW: &[u8] = b"shadow_";
const ENFORCED: &[u8] = b"enforced_";
const MAX_SHADOW_ENGINES: usize = 8;

impl Rbac {
    pub(crate) fn read(host: &impl Host) -> Self {
        host.property(RBAC_METADATA)
            .map(|bytes| Self::from_struct(&HeaderMap::from_serialized(bytes)))
            .unwrap_or_default()
    }

    /// Envoy serialises a Struct of strings as the same pairs as a header map.
    pub(crate) fn from_struct(map: &HeaderMap) -> Self {
        let mut rbac = Rbac::default();
        for (key, value) in map.iter() {
            let Some(engine_key) = key.strip_suffix(ENGINE_RESULT) else {
                continue;
            };
            let policy_key = [engine_key, EFFECTIVE_POLICY_ID].concat();
            let policy = map
                .iter()
                .find(|(k, _)| *k == policy_key.as_slice())
                .map(|(_, v)| v.to_vec());
            if engine_key == ENFORCED {
                rbac.enforced = Some(EngineResult {
                    prefix: Vec::new(),
                    result: value.to_vec(),
                    policy,
                });
            } else if let Some(prefix) = engine_key.strip_suffix(SHADOW) {
                let selects_for_ext_authz = prefix == EXT_AUTHZ_PREFIX
                    || (prefix.is_empty()
                        && policy
                            .as_deref()
                            .is_some_and(|p| p.starts_with(EXT_AUTHZ_POLICY_PREFIX)));
                if selects_for_ext_authz {
                    // A matched selection policy is the shadow DENY result; no match, no check.
                    if value == b"denied" {
                        rbac.ext_authz_selection = policy;
                    }
                } else if rbac.shadows.len() < MAX_SHADOW_ENGINES {
                    rbac.shadows.push(EngineResult {
                        prefix: prefix.to_vec(),
                        result: value.to_vec(),
                        policy,
                    });
                }
            }
        }
        rbac
    }

    pub(crate) fn enforced_denied(&self) -> bool {
        self.enforced
            .as_ref()
            .is_some_and(|e| e.result == b"denied")
    }

    pub(crate) fn shadow_denied(&self) -> bool {
        self.shadows.iter().any(|s| s.result == b"denied")
    }

    /// A dry-run ALLOW policy matched and would allow. An unprefixed shadow engine's match
    /// says nothing of the kind: it is how a dry-run AUDIT policy (shadow rules with
    /// `action: LOG`, which always "allow") shows, and Istio gives its dry-run ALLOW and
    /// DENY policies a prefix.
    pub(crate) fn shadow_allowed_by_policy(&self) -> bool {
        self.shadows
            .iter()
            .any(|s| s.result == b"allowed" && s.policy.is_some() && !s.prefix.is_empty())
    }
}

/// Who RBAC's denial names in `rbac_access_denied_matched_policy[<id>]` (Envoy writes it
/// from its configuration, in `response.code_details` for HTTP and in
/// `connection.termination_details` for the network filter): `Some(None)` for `[none]`,
/// no ALLOW policy matched.
pub(crate) fn denial_in_details(details: &[u8]) -> Option<Option<&[u8]>> {
    let id = details
        .strip_prefix(b"rbac_access_denied_matched_policy[")?
        .strip_suffix(b"]")?;
    Some((!id.is_empty() && id != b"none").then_some(id))
}

/// Istio's CUSTOM selection policy `istio-ext-authz-[<provider>-]ns[…]-policy[…]-rule[…]`:
/// the provider (Istio 1.30 and later name it) and the AuthorizationPolicy's own id.
pub(crate) fn parse_ext_authz_selection(id: &[u8]) -> (Option<&[u8]>, &[u8]) {
    let Some(rest) = id.strip_prefix(EXT_AUTHZ_POLICY_PREFIX) else {
        return (None, id);
    };
    match find(rest, b"ns[") {
        Some(0) => (None, rest),
        Some(at) => {
            let provider = rest.get(..at).and_then(|p| p.strip_suffix(b"-"));
            match (provider, rest.get(at..)) {
                (Some(provider), Some(policy)) if !provider.is_empty() => (Some(provider), policy),
                _ => (None, rest),
            }
        }
        None => (None, rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::envoy::headers::serialize;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn istio_custom_selections_are_not_dry_runs() {
        for (key, id) in [
            // Istio 1.10 and later.
            (
                "istio_ext_authz_shadow",
                &b"istio-ext-authz-opa-ns[shop]-policy[ext]-rule[0]"[..],
            ),
            // Before 1.10: no prefix, recognised by the policy's name.
            ("shadow", b"istio-ext-authz-ns[shop]-policy[ext]-rule[0]"),
        ] {
            let map = HeaderMap::from_serialized(serialize(&[
                (format!("{key}_engine_result").as_str(), &b"denied"[..]),
                (format!("{key}_effective_policy_id").as_str(), id),
            ]));
            let rbac = Rbac::from_struct(&map);
            assert!(rbac.shadows.is_empty(), "{key}");
            assert!(!rbac.shadow_denied());
            assert_eq!(rbac.ext_authz_selection.as_deref(), Some(id));
        }
        // Not selected: nothing to say.
        let map = HeaderMap::from_serialized(serialize(&[(
            "istio_ext_authz_shadow_engine_result",
            b"allowed",
        )]));
        assert_eq!(Rbac::from_struct(&map), Rbac::default());
        assert_eq!(
            parse_ext_authz_selection(b"istio-ext-authz-opa-ns[shop]-policy[ext]-rule[0]"),
            (Some(&b"opa"[..]), &b"ns[shop]-policy[ext]-rule[0]"[..])
        );
        assert_eq!(
            parse_ext_authz_selection(b"istio-ext-authz-ns[shop]-policy[ext]-rule[0]"),
            (None, &b"ns[shop]-policy[ext]-rule[0]"[..])
        );
        assert_eq!(
            parse_ext_authz_selection(b"istio-ext-authz-my-opa-ns[a]-policy[b]-rule[1]").0,
            Some(&b"my-opa"[..])
        );
        assert_eq!(parse_ext_authz_selection(b"other").1, b"other");
    }

    #[test]
    fn a_dry_run_audit_match_is_no_shadow_allow() {
        // Shadow rules with `action: LOG` (no prefix): "allowed", with the policy that matched.
        let map = HeaderMap::from_serialized(serialize(&[
            ("shadow_engine_result", &b"allowed"[..]),
            (
                "shadow_effective_policy_id",
                b"ns[shop]-policy[dry-audit]-rule[0]",
            ),
        ]));
        let rbac = Rbac::from_struct(&map);
        assert!(!rbac.shadow_allowed_by_policy());
        assert!(!rbac.shadow_denied());
        // A dry-run ALLOW policy that matched does.
        let map = HeaderMap::from_serialized(serialize(&[
            ("istio_dry_run_allow_shadow_engine_result", &b"allowed"[..]),
            (
                "istio_dry_run_allow_shadow_effective_policy_id",
                b"ns[shop]-policy[dry-allow]-rule[0]",
            ),
        ]));
        assert!(Rbac::from_struct(&map).shadow_allowed_by_policy());
    }

    #[test]
    fn istio_policy_names_parse_and_malformed_ones_do_not() {
        let p = parse_istio_policy(b"ns[shop]-policy[deny-admin]-rule[2]").unwrap();
        assert_eq!(
            (p.namespace, p.name, p.rule),
            (&b"shop"[..], &b"deny-admin"[..], 2)
        );
        // A name holding the separator: the rule index is the last bracket.
        let p = parse_istio_policy(b"ns[a]-policy[x]-rule[1]-y]-rule[7]").unwrap();
        assert_eq!((p.name, p.rule), (&b"x]-rule[1]-y"[..], 7));
        for bad in [
            &b"ns[a]-policy[b]-rule[x]"[..],
            b"ns[]-policy[b]-rule[0]",
            b"ns[a]-policy[]-rule[0]",
            b"policy[b]-rule[0]",
            b"ns[a]-policy[b]-rule[0",
            b"ns[a]-policy[b]-rule[99999999999]",
            b"",
        ] {
            assert_eq!(
                parse_istio_policy(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn rbac_metadata_with_istio_dry_run_prefixes() {
        let map = HeaderMap::from_serialized(serialize(&[
            (
                "istio_dry_run_allow_shadow_effective_policy_id",
                b"ns[demo]-policy[dry]-rule[0]",
            ),
            ("enforced_engine_result", b"allowed"),
            ("istio_dry_run_allow_shadow_engine_result", b"denied"),
            ("shadow_engine_result", b"allowed"),
        ]));
        let rbac = Rbac::from_struct(&map);
        assert_eq!(rbac.enforced.as_ref().unwrap().result, b"allowed");
        assert!(!rbac.enforced_denied());
        assert!(rbac.shadow_denied());
        assert!(!rbac.shadow_allowed_by_policy());
        let dry = rbac
            .shadows
            .iter()
            .find(|s| s.prefix == b"istio_dry_run_allow_")
            .unwrap();
        assert_eq!(
            dry.policy.as_deref(),
            Some(&b"ns[demo]-policy[dry]-rule[0]"[..])
        );
        let plain = rbac.shadows.iter().find(|s| s.prefix.is_empty()).unwrap();
        assert_eq!(
            (plain.result.as_slice(), plain.policy.as_deref()),
            (&b"allowed"[..], None)
        );
    }
}
