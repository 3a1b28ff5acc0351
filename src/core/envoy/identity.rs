//! Who called, and what the mesh decided: facts Envoy exposes as attributes,
//! decoded. Everything here comes from Envoy (certificates, filter metadata,
//! response code details), never from request headers a client could forge.

use super::attributes::{JWT_METADATA, RBAC_METADATA};
use super::headers::HeaderMap;
use super::host::Host;

/// A SPIFFE ID, split. Istio workloads are `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spiffe<'a> {
    pub trust_domain: &'a [u8],
    pub namespace: Option<&'a [u8]>,
    pub service_account: Option<&'a [u8]>,
}

pub(crate) fn parse_spiffe(uri: &[u8]) -> Option<Spiffe<'_>> {
    let rest = uri.strip_prefix(b"spiffe://")?;
    let mut parts = rest.split(|&b| b == b'/');
    let trust_domain = parts.next().filter(|d| !d.is_empty())?;
    let path: Vec<&[u8]> = parts.collect();
    let (namespace, service_account) = match path.as_slice() {
        [b"ns", ns, b"sa", sa] if !ns.is_empty() && !sa.is_empty() => (Some(*ns), Some(*sa)),
        _ => (None, None),
    };
    Some(Spiffe {
        trust_domain,
        namespace,
        service_account,
    })
}

/// The peer of a connection, from its TLS session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Peer {
    pub mtls: Option<bool>,
    pub tls_version: Option<Vec<u8>>,
    /// The peer certificate's first URI SAN (the SPIFFE ID in a mesh).
    pub principal: Option<Vec<u8>>,
    pub subject: Option<Vec<u8>>,
    pub cert_sha256: Option<Vec<u8>>,
    /// This workload's own identity (its certificate's URI SAN).
    pub local_principal: Option<Vec<u8>>,
}

impl Peer {
    pub(crate) fn namespace(&self) -> Option<&[u8]> {
        self.principal
            .as_deref()
            .and_then(parse_spiffe)
            .and_then(|s| s.namespace)
    }
}

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

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
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

/// RBAC's dynamic metadata (`enforced_*`, `[<prefix>]shadow_*`), read in one host call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Rbac {
    pub enforced: Option<EngineResult>,
    pub shadows: Vec<EngineResult>,
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
                if rbac.shadows.len() < MAX_SHADOW_ENGINES {
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

    /// A shadow (dry-run) policy matched and would allow.
    pub(crate) fn shadow_allowed_by_policy(&self) -> bool {
        self.shadows
            .iter()
            .any(|s| s.result == b"allowed" && s.policy.is_some())
    }
}

/// An address or authority without its `:port` (`[::1]:8080` keeps its brackets).
pub(crate) fn strip_port(authority: &[u8]) -> &[u8] {
    // `[::1]:8080` keeps its brackets; only a `:digits` suffix after them is a port.
    match authority.iter().rposition(|&b| b == b':') {
        Some(colon)
            if authority
                .get(colon + 1..)
                .is_some_and(|p| p.iter().all(u8::is_ascii_digit))
                && !authority
                    .get(..colon)
                    .is_some_and(|h| h.contains(&b':') && !h.ends_with(b"]")) =>
        {
            authority.get(..colon).unwrap_or(authority)
        }
        _ => authority,
    }
}

/// Verified JWT claims, from jwt_authn's `payload_in_metadata`.
pub(crate) struct JwtClaims {
    pub issuer: Option<Vec<u8>>,
    pub subject: Option<Vec<u8>>,
}

impl JwtClaims {
    /// `None` without a verified payload: an `Authorization` header alone proves nothing.
    pub(crate) fn read(host: &impl Host, key: &str) -> Option<Self> {
        let claim =
            |name: &str| host.property(&["metadata", "filter_metadata", JWT_METADATA, key, name]);
        let issuer = claim("iss");
        let subject = claim("sub");
        (issuer.is_some() || subject.is_some()).then_some(Self { issuer, subject })
    }
}

/// The reason in `jwt_authn_access_denied{Jwt_is_expired}` (Envoy's status name).
pub(crate) fn jwt_failure_reason(code_details: &[u8]) -> Option<&[u8]> {
    let rest = code_details.strip_prefix(b"jwt_authn_access_denied")?;
    let inner = rest.strip_prefix(b"{")?.strip_suffix(b"}")?;
    Some(inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::envoy::headers::serialize;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn spiffe_ids_split_istio_style_and_keep_others() {
        let s = parse_spiffe(b"spiffe://cluster.local/ns/shop/sa/checkout").unwrap();
        assert_eq!(s.trust_domain, b"cluster.local");
        assert_eq!(s.namespace, Some(&b"shop"[..]));
        assert_eq!(s.service_account, Some(&b"checkout"[..]));
        let other = parse_spiffe(b"spiffe://example.org/workload/x").unwrap();
        assert_eq!(
            (other.trust_domain, other.namespace),
            (&b"example.org"[..], None)
        );
        assert_eq!(
            parse_spiffe(b"spiffe://cluster.local/ns//sa/x")
                .unwrap()
                .namespace,
            None
        );
        assert_eq!(parse_spiffe(b"https://example.org"), None);
        assert_eq!(parse_spiffe(b"spiffe:///ns/a/sa/b"), None);
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

    #[test]
    fn jwt_reasons_come_from_code_details() {
        assert_eq!(
            jwt_failure_reason(b"jwt_authn_access_denied{Jwt_is_expired}"),
            Some(&b"Jwt_is_expired"[..])
        );
        assert_eq!(jwt_failure_reason(b"jwt_authn_access_denied"), None);
        assert_eq!(jwt_failure_reason(b"rbac_access_denied"), None);
    }
}
