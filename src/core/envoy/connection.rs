//! What the records of one downstream connection share: the caller's TLS identity,
//! which cannot change while a connection lives (`worker::connections` keeps it per
//! connection). Not its address: Envoy gives each stream its own (`envoy::source`).

use super::attributes::{ConnectionAttrs, Decoded};
use super::host::Host;
use super::identity::Peer;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ConnectionFacts {
    pub peer: Peer,
}

impl ConnectionFacts {
    /// One batch read.
    pub(crate) fn read(host: &impl Host) -> Self {
        let answer = host.properties(ConnectionAttrs::BATCH);
        let facts: ConnectionAttrs = answer.decode();
        let take = |value: Option<&[u8]>| value.map(<[u8]>::to_vec);
        let mtls = facts.mtls.unwrap_or(false);
        // Certificate facts only where the session has them: none on plaintext, no peer's without mTLS.
        let (principal, subject, cert_sha256) = if mtls {
            (
                take(facts.peer_uri_san),
                take(facts.peer_subject),
                take(facts.peer_cert_sha256),
            )
        } else {
            (None, None, None)
        };
        let tls_version = take(facts.tls_version);
        let local_principal = tls_version
            .is_some()
            .then(|| take(facts.local_uri_san))
            .flatten();
        Self {
            peer: Peer {
                mtls: Some(mtls),
                tls_version,
                principal,
                subject,
                cert_sha256,
                local_principal,
            },
        }
    }
}
