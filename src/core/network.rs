//! The network-filter mode: TLS and mTLS handshake failures never reach an
//! HTTP filter, so the same plugin, loaded as a network filter (root id
//! `network`), records them when the connection closes; with them, TCP services'
//! authorization: the network RBAC filter's denials, and what a mesh AUDIT policy
//! (Istio compiles it into that filter for TCP) marked.

use super::bytes::find;
use super::config::Settings;
use super::envoy::attributes::{ConnectionEndFacts, Decoded, DESTINATION_ADDRESS};
use super::envoy::connection::ConnectionFacts;
use super::envoy::host::Host;
use super::envoy::identity::Peer;
use super::envoy::mesh::direction;
use super::envoy::rbac::denial_in_details;
use super::envoy::source::CallerAddress;
use super::record::connection::ConnectionRecord;
use super::record::{Kind, Reason, RecordKind};
use super::worker::callers::caller_key;
use super::worker::suppress::SuppressedKey;
use super::worker::Worker;

/// A short, stable name for what went wrong, from Envoy's failure reason (BoringSSL text).
pub(crate) fn failure_class(reason: &[u8]) -> &'static str {
    let has = |needle: &[u8]| find(reason, needle).is_some();
    if has(b"PEER_DID_NOT_RETURN_A_CERTIFICATE") {
        "no_client_certificate"
    } else if has(b"certificate has expired") || has(b"CERTIFICATE_EXPIRED") {
        "certificate_expired"
    } else if has(b"certificate is not yet valid") {
        "certificate_not_yet_valid"
    } else if has(b"CERTIFICATE_VERIFY_FAILED") || has(b"unable to get local issuer certificate") {
        "certificate_untrusted"
    } else if has(b"WRONG_VERSION_NUMBER") || has(b"HTTP_REQUEST") {
        "not_tls"
    } else if has(b"NO_SHARED_CIPHER") || has(b"UNSUPPORTED_PROTOCOL") {
        "no_common_parameters"
    } else {
        "tls_error"
    }
}

/// At connection close: a `tls_failure` record for a failed handshake, `denied` for a
/// connection the network RBAC filter refused, a `connection` record for one a mesh AUDIT
/// policy matched or, when configured, for any other; else nothing. One batch read per
/// connection decides.
///
/// `data_seen`: the connection carried data, which a TLS listener passes to its network
/// filters only once the handshake is done. Envoy also gives a transport failure reason
/// to a connection that breaks later (a reset by the peer): that is no handshake failure.
/// A connection that completes its handshake and breaks before any data counts as one.
pub fn on_connection_close(
    settings: &Settings,
    worker: &mut Worker,
    host: &impl Host,
    data_seen: bool,
) -> Option<String> {
    worker.requests_seen += 1;
    worker.tally(None, |c| c.requests += 1);
    let answer = host.properties(ConnectionEndFacts::BATCH);
    let end: ConnectionEndFacts = answer.decode();
    let failure = end.transport_failure.filter(|_| !data_seen);
    let denial = end.termination_details.and_then(denial_in_details);
    let audited = settings.heeds_audit_mark(end.audit_hint);
    if failure.is_none() && denial.is_none() && !audited && !settings.record_connections {
        worker.tally(None, |c| c.dropped += 1);
        return None;
    }
    let source = end.source_address;
    let peer = if failure.is_none() {
        ConnectionFacts::read(host).peer
    } else {
        // The handshake failed: no session, so no certificate facts to read.
        Peer {
            mtls: Some(false),
            ..Peer::default()
        }
    };
    let destination = host.property(DESTINATION_ADDRESS);
    let cap = settings.limits.max_field_bytes;
    let kind = match (failure, denial) {
        (Some(_), _) => Kind::TlsFailure,
        (None, Some(_)) => Kind::Denied,
        (None, None) => Kind::Connection,
    };
    let now = host.now_unix_nanos();
    if !worker.admit(None, kind.is_security_outcome(), now) {
        let address = CallerAddress {
            peer: source,
            forwarded: None,
        };
        let (caller, _) = caller_key(None, address, false, None);
        worker.suppress(
            SuppressedKey {
                kind,
                rule: None,
                caller: caller.into_owned(),
            },
            now,
        );
        return None;
    }
    worker.count_record(None, kind);
    let hop = direction(worker.proxy, end.listener_direction);
    let record = ConnectionRecord {
        envelope: worker.envelope(RecordKind::Event(kind), now),
        reason: if kind.is_security_outcome() {
            Reason::SecurityOutcome
        } else if audited {
            Reason::MeshAuditPolicy
        } else {
            Reason::RecordConnections
        },
        failure: failure.map(|reason| (failure_class(reason), reason)),
        denial,
        audited,
        direction: hop,
        local_address: destination.as_deref(),
        source_address: source,
        peer: &peer,
    };
    Some(record.encode_within(cap, settings.limits.max_record_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::envoy::host::FakeHost;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NO_CERT: &str = "TLS_error:|268435648:SSL routines:OPENSSL_internal:PEER_DID_NOT_RETURN_A_CERTIFICATE:peer did not provide required client certificate:TLS_error_end";

    #[test]
    fn failed_handshakes_are_recorded_with_a_class() {
        let s = Settings::from_json(b"{}").unwrap();
        let host = FakeHost::new()
            .with_property("connection.transport_failure_reason", NO_CERT)
            .with_property("source.address", "127.0.0.1:5000")
            .with_property("destination.address", "127.0.0.1:443");
        let line =
            on_connection_close(&s, &mut Worker::new(&s, "p".into(), 1, 0), &host, false).unwrap();
        let r: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(r["kind"], "tls_failure");
        assert_eq!(r["connection"]["failure"], "no_client_certificate");
        assert_eq!(r["connection"]["failure_reason"], NO_CERT);
        assert_eq!(r["source"]["address"], "127.0.0.1:5000");
        assert_eq!(r["peer"]["mtls"], false);
    }

    #[test]
    fn a_connection_record_of_control_bytes_still_fits_its_cap() {
        let s = Settings::from_json(br#"{"limits": {"max_record_bytes": 4096}}"#).unwrap();
        let junk = "\u{1e}".repeat(2000);
        let host = FakeHost::new()
            .with_property("connection.transport_failure_reason", &junk)
            .with_property("source.address", &junk)
            .with_property("destination.address", &junk)
            .with_property("connection.mtls", [1])
            .with_property("connection.tls_version", &junk)
            .with_property("connection.subject_peer_certificate", &junk);
        let line =
            on_connection_close(&s, &mut Worker::new(&s, "p".into(), 1, 0), &host, false).unwrap();
        assert!(line.len() <= 4096, "{} bytes", line.len());
        let r: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(r["connection"]["failure"], "tls_error");
    }

    #[test]
    fn successful_connections_only_when_configured() {
        let host = FakeHost::new()
            .with_property("connection.mtls", [1])
            .with_property("connection.tls_version", "TLSv1.3")
            .with_property(
                "connection.uri_san_peer_certificate",
                "spiffe://td/ns/a/sa/b",
            );
        let quiet = Settings::from_json(b"{}").unwrap();
        assert!(on_connection_close(
            &quiet,
            &mut Worker::new(&quiet, "p".into(), 1, 0),
            &host,
            true
        )
        .is_none());
        assert_eq!(
            host.calls.get(),
            1,
            "a connection that carried data: how it ended, in one batch"
        );
        host.reset_calls();
        let verbose = Settings::from_json(br#"{"network": {"record_connections": true}}"#).unwrap();
        let line = on_connection_close(
            &verbose,
            &mut Worker::new(&verbose, "p".into(), 1, 0),
            &host,
            true,
        )
        .unwrap();
        let r: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(r["kind"], "connection");
        assert_eq!(r["peer"]["namespace"], "a");
        // Per connection: how it ended and the caller's facts in a batch each, the local
        // address, the time.
        assert_eq!(host.calls.get(), 4);
    }

    #[test]
    fn a_connection_that_breaks_after_its_handshake_is_no_handshake_failure() {
        // What Envoy reports when a client resets a connection that carried requests.
        let host = FakeHost::new()
            .with_property(
                "connection.transport_failure_reason",
                "TLS_error:|33554536:system library:OPENSSL_internal:Connection reset by peer:TLS_error_end",
            )
            .with_property("connection.mtls", [1]);
        let quiet = Settings::from_json(b"{}").unwrap();
        let mut worker = Worker::new(&quiet, "p".into(), 1, 0);
        assert!(on_connection_close(&quiet, &mut worker, &host, true).is_none());
        let line = on_connection_close(&quiet, &mut worker, &host, false)
            .expect("before any data, the same reason is a failed handshake");
        assert!(line.contains(r#""kind":"tls_failure""#));
    }

    #[test]
    fn tcp_authorization_denials_and_audit_policy_matches() {
        let s = Settings::from_json(b"{}").unwrap();
        let mut worker = Worker::new(&s, "p".into(), 1, 0);
        let mut close = |host: &FakeHost| {
            on_connection_close(&s, &mut worker, host, false)
                .map(|line| serde_json::from_str::<serde_json::Value>(&line).unwrap())
        };
        let denied = FakeHost::new()
            .with_property(
                "connection.termination_details",
                "rbac_access_denied_matched_policy[ns[db]-policy[deny-tcp]-rule[0]]",
            )
            .with_int_property("xds.listener_direction", 1);
        let r = close(&denied).expect("a TCP denial is a security outcome");
        assert_eq!(r["kind"], "denied");
        assert_eq!(r["why"]["reason"], "security_outcome");
        assert_eq!(r["direction"], "inbound");
        assert_eq!(
            r["authz"],
            serde_json::json!({"decision": "denied", "by": "rbac", "basis": "deny_policy",
                "policy": "ns[db]-policy[deny-tcp]-rule[0]", "policy_namespace": "db",
                "policy_name": "deny-tcp", "policy_rule": 0})
        );
        let none = FakeHost::new().with_property(
            "connection.termination_details",
            "rbac_access_denied_matched_policy[none]",
        );
        assert_eq!(
            close(&none).unwrap()["authz"]["basis"],
            "no_allow_policy_matched"
        );

        let audited = FakeHost::new()
            .with_property("metadata.filter_metadata.envoy.common.access_log_hint", [1]);
        let r = close(&audited).expect("an AUDIT policy matched the connection");
        assert_eq!(r["kind"], "connection");
        assert_eq!(r["why"]["reason"], "mesh_audit_policy");
        assert_eq!(
            r["authz"],
            serde_json::json!({"decision": "allowed", "by": "rbac", "basis": "not_denied",
                "audit": {"matched": true}})
        );
        let unmarked = FakeHost::new()
            .with_property("metadata.filter_metadata.envoy.common.access_log_hint", [0]);
        assert!(close(&unmarked).is_none());
        let off = Settings::from_json(br#"{"authorization": {"audit_policies": false}}"#).unwrap();
        assert!(on_connection_close(
            &off,
            &mut Worker::new(&off, "p".into(), 1, 0),
            &audited,
            true
        )
        .is_none());
    }

    #[test]
    fn failure_classes() {
        assert_eq!(failure_class(NO_CERT.as_bytes()), "no_client_certificate");
        assert_eq!(failure_class(b"TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end:verify cert failed: X509_verify_cert: certificate verification error at depth 0: certificate has expired"), "certificate_expired");
        assert_eq!(failure_class(b"TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end"), "certificate_untrusted");
        assert_eq!(failure_class(b"something else"), "tls_error");
    }
}
