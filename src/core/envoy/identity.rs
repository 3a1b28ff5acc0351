//! Who called, and what the mesh decided: facts Envoy exposes as attributes,
//! decoded. Everything here comes from Envoy (certificates, filter metadata,
//! response code details), never from request headers a client could forge.

use super::attributes::JWT_METADATA;
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

/// An address or authority without its `:port` (`[::1]:8080` keeps its brackets).
/// `:authority` as a DNS name: without its port and one trailing dot (the same fully
/// qualified name), and whether it had that dot.
pub(crate) fn dns_name(authority: &[u8]) -> (&[u8], bool) {
    let host = strip_port(authority);
    match host.strip_suffix(b".") {
        Some(name) => (name, true),
        None => (host, false),
    }
}

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
    fn jwt_reasons_come_from_code_details() {
        assert_eq!(
            jwt_failure_reason(b"jwt_authn_access_denied{Jwt_is_expired}"),
            Some(&b"Jwt_is_expired"[..])
        );
        assert_eq!(jwt_failure_reason(b"jwt_authn_access_denied"), None);
        assert_eq!(jwt_failure_reason(b"rbac_access_denied"), None);
    }
}
