//! What happened to the request: the kind of event (classified from Envoy's own
//! facts, never from headers a client could forge), what authorization and
//! authentication concluded, and the outcome read before the record's batch.

use crate::core::config::Settings;
use crate::core::envoy::attributes::CODE_DETAILS;
use crate::core::envoy::grpc;
use crate::core::envoy::host::Host;
use crate::core::envoy::identity::{jwt_failure_reason, JwtClaims};
use crate::core::envoy::rbac::{
    denial_in_details, parse_ext_authz_selection, read_audit_hint, Rbac,
};
use crate::core::envoy::response::read_status;
use crate::core::record::access::{Authn, Authz, Basis, ExtAuthzCheck};
use crate::core::record::Kind;

/// What the client was told: the HTTP status and, for a gRPC call, the gRPC status.
/// Envoy answers a gRPC client's local reply with HTTP 200 and the outcome in `grpc-status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Statuses {
    /// `None` when no response was sent.
    pub http: Option<u16>,
    /// Read only for gRPC requests.
    pub grpc: Option<i64>,
}

impl Statuses {
    /// The status of a gRPC call is read only for a gRPC request: one read.
    pub(super) fn read_grpc(grpc_call: bool, host: &impl Host) -> Option<i64> {
        grpc_call.then(|| grpc::read_status(host)).flatten()
    }
}

/// Classifies the outcome from the statuses, Envoy's `response.code_details`
/// (which say which filter answered, not just how) and RBAC's metadata when read.
pub(super) fn classify(
    statuses: Statuses,
    code_details: Option<&[u8]>,
    rbac: Option<&Rbac>,
) -> Kind {
    let enforced = classify_enforced(statuses, code_details, rbac);
    match rbac {
        Some(rbac) if enforced == Kind::Access && rbac.shadow_denied() => Kind::ShadowDenied,
        Some(rbac) if enforced == Kind::Access && rbac.shadow_allowed_by_policy() => {
            Kind::ShadowAllowed
        }
        _ => enforced,
    }
}

fn classify_enforced(statuses: Statuses, code_details: Option<&[u8]>, rbac: Option<&Rbac>) -> Kind {
    if let Some(details) = code_details {
        if details.starts_with(b"rbac_access_denied") || ext_authz_answer(details).is_some() {
            return Kind::Denied;
        }
        if details.starts_with(b"jwt_authn_access_denied") {
            return Kind::AuthFailure;
        }
    }
    if rbac.is_some_and(Rbac::enforced_denied) {
        return Kind::Denied;
    }
    if code_details.is_some_and(|d| d.starts_with(b"local_rate_limited")) {
        return Kind::RateLimited;
    }
    if let Some(kind) = statuses.grpc.and_then(grpc_security_kind) {
        return kind;
    }
    match statuses.http.unwrap_or(0) {
        401 => Kind::AuthFailure,
        403 => Kind::Denied,
        429 => Kind::RateLimited,
        _ => Kind::Access,
    }
}

/// The gRPC statuses that are what 403, 401 and 429 are to HTTP (gRPC's own HTTP mapping).
fn grpc_security_kind(code: i64) -> Option<Kind> {
    match code {
        grpc::PERMISSION_DENIED => Some(Kind::Denied),
        grpc::UNAUTHENTICATED => Some(Kind::AuthFailure),
        grpc::RESOURCE_EXHAUSTED => Some(Kind::RateLimited),
        _ => None,
    }
}

/// Whether the statuses alone make the request a security outcome candidate,
/// worth reading `response.code_details` for.
pub(super) fn is_security_status(statuses: Statuses) -> bool {
    statuses.http.is_some_and(|s| matches!(s, 401 | 403 | 429))
        || statuses.grpc.and_then(grpc_security_kind).is_some()
}

/// Whether the outcome may be a security one, so the details (which name the filter
/// that answered) and RBAC's decision are worth reading.
pub(super) fn likely_security(replied_before_plugin: bool, statuses: Statuses) -> bool {
    replied_before_plugin || is_security_status(statuses)
}

/// How the request ended, as the routine path reads it: two single reads, and a third
/// for a gRPC call's status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Ending {
    pub statuses: Statuses,
    /// A mesh AUDIT policy matched (RBAC's `access_log_hint`).
    pub audit_hint: bool,
}

impl Ending {
    pub(super) fn read(settings: &Settings, grpc_call: bool, host: &impl Host) -> Self {
        Self {
            statuses: Statuses {
                http: read_status(host),
                grpc: Statuses::read_grpc(grpc_call, host),
            },
            audit_hint: settings.heeds_audit_mark(read_audit_hint(host)),
        }
    }
}

/// Envoy's `response.code`, if it is a status.
pub(super) fn status_code(code: Option<i64>) -> Option<u16> {
    code.and_then(|code| u16::try_from(code).ok())
}

/// The outcome read before the record's batch, where it decides whether there is a
/// record at all (the rules would not record the request, or match on its status).
#[derive(Debug)]
pub(super) struct EarlyOutcome {
    pub statuses: Statuses,
    pub audit_hint: bool,
    /// `likely_security`: the code details were read.
    pub likely_security: bool,
    pub code_details: Option<Vec<u8>>,
    pub rbac: Option<Rbac>,
}

impl EarlyOutcome {
    /// `ending`: already read before matching, if a rule matches on the status.
    pub(super) fn read(
        settings: &Settings,
        replied_before_plugin: bool,
        grpc_call: bool,
        ending: Option<Ending>,
        host: &impl Host,
    ) -> Self {
        let Ending {
            statuses,
            audit_hint,
        } = ending.unwrap_or_else(|| Ending::read(settings, grpc_call, host));
        let likely_security = likely_security(replied_before_plugin, statuses);
        let code_details = likely_security
            .then(|| host.property(CODE_DETAILS))
            .flatten();
        let rbac =
            (settings.shadow_results || likely_security || audit_hint).then(|| Rbac::read(host));
        Self {
            statuses,
            audit_hint,
            likely_security,
            code_details,
            rbac,
        }
    }

    pub(super) fn kind(&self) -> Kind {
        classify(
            self.statuses,
            self.code_details.as_deref(),
            self.rbac.as_ref(),
        )
    }
}

/// What authorization decided, which filter decided it and on what grounds, with what
/// the mesh's AUDIT and CUSTOM machinery did on the way. `audit_hint`: a mesh AUDIT
/// policy matched. See `envoy::rbac` for why the denying policy is taken from the
/// response's details and never from the merged metadata.
pub(super) fn authorization<'a>(
    kind: Kind,
    status: Option<u16>,
    code_details: Option<&'a [u8]>,
    rbac: Option<&'a Rbac>,
    audit_hint: bool,
) -> Option<Authz<'a>> {
    let details = code_details.unwrap_or_default();
    let shadows = rbac.map(|r| r.shadows.as_slice()).unwrap_or_default();
    let enforced = rbac.and_then(|r| r.enforced.as_ref());
    // The id Envoy's merged metadata kept: the last enforcing filter's that matched a policy.
    let kept = enforced.and_then(|e| e.policy.as_deref());
    let ext_authz_answer = ext_authz_answer(details);
    let selection = rbac.and_then(|r| r.ext_authz_selection.as_deref());
    let mut unattributed_policy = None;
    let (decision, by, basis, policy) = if let Some(answer) = ext_authz_answer {
        (answer, "ext_authz", Basis::ExtAuthz, None)
    } else if let Some(denied_by) = denial_in_details(details) {
        match denied_by {
            Some(id) => ("denied", "rbac", Basis::DenyPolicy, Some(id)),
            None => ("denied", "rbac", Basis::NoAllowPolicyMatched, None),
        }
    } else if enforced.is_some_and(|e| e.result == b"denied") {
        // Denied without the details that name the policy (not seen from Envoy 1.40): the
        // kept id is the denying policy's unless an AUDIT policy's may be it.
        let policy = kept.filter(|_| !audit_hint);
        ("denied", "rbac", Basis::DenyPolicy, policy)
    } else if kind == Kind::Denied {
        // The proxy let it through and the application refused it (a 403, or a gRPC
        // PERMISSION_DENIED): the refusal is the decision the client saw.
        ("denied", "upstream", Basis::Upstream, None)
    } else if enforced.is_some() {
        match (kept, audit_hint) {
            (Some(id), false) => ("allowed", "rbac", Basis::AllowPolicy, Some(id)),
            (Some(id), true) => {
                unattributed_policy = Some(id);
                ("allowed", "rbac", Basis::AllowOrAuditPolicy, None)
            }
            (None, _) => ("allowed", "rbac", Basis::NoAllowPolicyApplies, None),
        }
    } else if selection.is_some() {
        ("allowed", "ext_authz", Basis::ExtAuthz, None)
    } else if shadows.is_empty() && !audit_hint {
        return None;
    } else {
        ("allowed", "none", Basis::NotEnforced, None)
    };
    // The AUDIT policy's id survives only where no later filter matched a policy: a
    // request no ALLOW policy matched.
    let audit = audit_hint.then(|| kept.filter(|_| basis == Basis::NoAllowPolicyMatched));
    let ext_authz = selection.map(|id| {
        let (provider, policy) = parse_ext_authz_selection(id);
        ExtAuthzCheck {
            policy,
            provider,
            // Checked and let through, unless it answered otherwise.
            answer: ext_authz_answer.unwrap_or("allowed"),
        }
    });
    Some(Authz {
        decision,
        by,
        basis,
        policy,
        status: (by == "ext_authz").then_some(status).flatten(),
        shadows,
        audit,
        unattributed_policy,
        ext_authz,
    })
}

/// ext_authz's answer when it replied itself (`ext_authz_denied`, `ext_authz_error`, `ext_authz_invalid`).
fn ext_authz_answer(details: &[u8]) -> Option<&'static str> {
    if details.starts_with(b"ext_authz_denied") {
        Some("denied")
    } else if details.starts_with(b"ext_authz_error") || details.starts_with(b"ext_authz_invalid") {
        Some("error")
    } else {
        None
    }
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

    fn http(status: u16) -> Statuses {
        Statuses {
            http: Some(status),
            grpc: None,
        }
    }

    fn grpc(code: i64) -> Statuses {
        Statuses {
            http: Some(200),
            grpc: Some(code),
        }
    }

    #[test]
    fn classification_prefers_code_details() {
        assert_eq!(
            classify(
                http(403),
                Some(b"rbac_access_denied_matched_policy[x]"),
                None
            ),
            Kind::Denied
        );
        assert_eq!(
            classify(
                http(401),
                Some(b"jwt_authn_access_denied{Jwt_is_missing}"),
                None
            ),
            Kind::AuthFailure
        );
        assert_eq!(
            classify(http(403), Some(b"ext_authz_denied"), None),
            Kind::Denied
        );
        assert_eq!(classify(http(403), None, None), Kind::Denied);
        assert_eq!(classify(http(401), None, None), Kind::AuthFailure);
        assert_eq!(
            classify(http(200), Some(b"via_upstream"), None),
            Kind::Access
        );
        assert_eq!(classify(http(500), None, None), Kind::Access);
    }

    #[test]
    fn grpc_statuses_are_security_outcomes_like_their_http_counterparts() {
        let upstream = Some(&b"via_upstream"[..]);
        assert_eq!(classify(grpc(7), upstream, None), Kind::Denied);
        assert_eq!(classify(grpc(16), upstream, None), Kind::AuthFailure);
        assert_eq!(classify(grpc(8), upstream, None), Kind::RateLimited);
        for routine in [0, 2, 5, 13, 14, -1, 99] {
            assert_eq!(
                classify(grpc(routine), upstream, None),
                Kind::Access,
                "{routine}"
            );
            assert!(!is_security_status(grpc(routine)), "{routine}");
        }
        assert!(is_security_status(grpc(7)));
        // A local reply names its filter in the details, whatever gRPC status it carried:
        // local_ratelimit answers a gRPC client UNAVAILABLE unless told RESOURCE_EXHAUSTED.
        assert_eq!(
            classify(grpc(14), Some(b"local_rate_limited"), None),
            Kind::RateLimited
        );
        assert_eq!(
            classify(
                grpc(7),
                Some(b"rbac_access_denied_matched_policy[none]"),
                None
            ),
            Kind::Denied
        );
        assert_eq!(
            classify(
                grpc(16),
                Some(b"jwt_authn_access_denied{Jwt_is_missing}"),
                None
            ),
            Kind::AuthFailure
        );
    }
}
