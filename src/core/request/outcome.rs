//! What happened to the request: the kind of event (classified from Envoy's own
//! facts, never from headers a client could forge), what authorization and
//! authentication concluded, and the outcome read before the record's batch.

use crate::core::config::Settings;
use crate::core::envoy::attributes::CODE_DETAILS;
use crate::core::envoy::host::Host;
use crate::core::envoy::identity::{jwt_failure_reason, JwtClaims, Rbac};
use crate::core::envoy::response::read_status;
use crate::core::record::access::{Authn, Authz};
use crate::core::record::Kind;

/// Classifies the outcome from the status, Envoy's `response.code_details`
/// (which say which filter answered, not just how) and RBAC's metadata when read.
pub(super) fn classify(status: u16, code_details: Option<&[u8]>, rbac: Option<&Rbac>) -> Kind {
    let enforced = classify_enforced(status, code_details, rbac);
    match rbac {
        Some(rbac) if enforced == Kind::Access && rbac.shadow_denied() => Kind::ShadowDenied,
        Some(rbac) if enforced == Kind::Access && rbac.shadow_allowed_by_policy() => {
            Kind::ShadowAllowed
        }
        _ => enforced,
    }
}

fn classify_enforced(status: u16, code_details: Option<&[u8]>, rbac: Option<&Rbac>) -> Kind {
    const DENIED: [&[u8]; 3] = [
        b"rbac_access_denied",
        b"ext_authz_denied",
        b"ext_authz_error",
    ];
    const AUTH_FAILED: [&[u8]; 1] = [b"jwt_authn_access_denied"];
    if let Some(details) = code_details {
        if DENIED.iter().any(|p| details.starts_with(p)) {
            return Kind::Denied;
        }
        if AUTH_FAILED.iter().any(|p| details.starts_with(p)) {
            return Kind::AuthFailure;
        }
    }
    if rbac.is_some_and(Rbac::enforced_denied) {
        return Kind::Denied;
    }
    if code_details.is_some_and(|d| d.starts_with(b"local_rate_limited")) {
        return Kind::RateLimited;
    }
    match status {
        401 => Kind::AuthFailure,
        403 => Kind::Denied,
        429 => Kind::RateLimited,
        _ => Kind::Access,
    }
}

/// Whether a status alone makes the request a security outcome candidate,
/// worth reading `response.code_details` for.
pub(super) fn is_security_status(status: u16) -> bool {
    matches!(status, 401 | 403 | 429)
}

/// Whether the outcome may be a security one, so the details (which name the filter
/// that answered) and RBAC's decision are worth reading.
pub(super) fn likely_security(replied_before_plugin: bool, status: Option<u16>) -> bool {
    replied_before_plugin || status.is_some_and(is_security_status)
}

/// The outcome read before the record's batch, where it decides whether there is a
/// record at all (the rules would not record the request, or match on its status).
#[derive(Debug)]
pub(super) struct EarlyOutcome {
    pub status: Option<u16>,
    /// `likely_security`: the code details were read.
    pub likely_security: bool,
    pub code_details: Option<Vec<u8>>,
    pub rbac: Option<Rbac>,
}

impl EarlyOutcome {
    /// `status`: already read before matching, if a rule matches on it.
    pub(super) fn read(
        settings: &Settings,
        replied_before_plugin: bool,
        status: Option<Option<u16>>,
        host: &impl Host,
    ) -> Self {
        let status = status.unwrap_or_else(|| read_status(host));
        let likely_security = likely_security(replied_before_plugin, status);
        let code_details = likely_security
            .then(|| host.property(CODE_DETAILS))
            .flatten();
        let rbac = (settings.shadow_results || likely_security).then(|| Rbac::read(host));
        Self {
            status,
            likely_security,
            code_details,
            rbac,
        }
    }

    pub(super) fn kind(&self) -> Kind {
        classify(
            self.status.unwrap_or(0),
            self.code_details.as_deref(),
            self.rbac.as_ref(),
        )
    }
}

/// What authorization decided, and which filter decided it.
pub(super) fn authorization<'a>(
    kind: Kind,
    status: Option<u16>,
    code_details: Option<&'a [u8]>,
    rbac: Option<&'a Rbac>,
) -> Option<Authz<'a>> {
    let details = code_details.unwrap_or_default();
    let shadows = rbac.map(|r| r.shadows.as_slice()).unwrap_or_default();
    let enforced = rbac.and_then(|r| r.enforced.as_ref());
    let (decision, by, policy) = if details.starts_with(b"ext_authz_denied") {
        ("denied", "ext_authz", None)
    } else if details.starts_with(b"ext_authz_error") {
        ("error", "ext_authz", None)
    } else if let Some(engine) = enforced.filter(|e| e.result == b"denied") {
        (
            "denied",
            "rbac",
            engine
                .policy
                .as_deref()
                .or_else(|| rbac_policy_in_details(details)),
        )
    } else if details.starts_with(b"rbac_access_denied") {
        ("denied", "rbac", rbac_policy_in_details(details))
    } else if let Some(engine) = enforced {
        ("allowed", "rbac", engine.policy.as_deref())
    } else if kind == Kind::Denied {
        ("denied", "upstream", None)
    } else if shadows.is_empty() {
        return None;
    } else {
        ("allowed", "none", None)
    };
    Some(Authz {
        decision,
        by,
        policy,
        status: (by == "ext_authz").then_some(status).flatten(),
        shadows,
    })
}

/// The policy in `rbac_access_denied_matched_policy[<id>]` (Envoy writes it from its configuration).
fn rbac_policy_in_details(details: &[u8]) -> Option<&[u8]> {
    details
        .strip_prefix(b"rbac_access_denied_matched_policy[")?
        .strip_suffix(b"]")
        .filter(|id| !id.is_empty() && *id != b"none")
}

pub(super) fn authentication<'a>(
    kind: Kind,
    code_details: Option<&'a [u8]>,
    claims: Option<&'a JwtClaims>,
    subject: Option<&'a [u8]>,
) -> Option<Authn<'a>> {
    if let Some(reason) = code_details.and_then(jwt_failure_reason) {
        return Some(Authn {
            method: "jwt",
            result: "failed",
            reason: Some(reason),
            issuer: None,
            subject: None,
        });
    }
    if kind == Kind::AuthFailure {
        return Some(Authn {
            method: "upstream",
            result: "failed",
            reason: None,
            issuer: None,
            subject: None,
        });
    }
    claims.map(|claims| Authn {
        method: "jwt",
        result: "ok",
        reason: None,
        issuer: claims.issuer.as_deref(),
        subject,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn classification_prefers_code_details() {
        assert_eq!(
            classify(403, Some(b"rbac_access_denied_matched_policy[x]"), None),
            Kind::Denied
        );
        assert_eq!(
            classify(401, Some(b"jwt_authn_access_denied{Jwt_is_missing}"), None),
            Kind::AuthFailure
        );
        assert_eq!(classify(403, Some(b"ext_authz_denied"), None), Kind::Denied);
        assert_eq!(classify(403, None, None), Kind::Denied);
        assert_eq!(classify(401, None, None), Kind::AuthFailure);
        assert_eq!(classify(200, Some(b"via_upstream"), None), Kind::Access);
        assert_eq!(classify(500, None, None), Kind::Access);
    }
}
