//! Network-mode records: a failed TLS handshake (`tls_failure`), or a connection
//! (`connection`) when configured.

use super::access::{write_audit, write_policy, Basis};
use super::json::JsonWriter;
use super::{write_peer, write_source, Envelope, Reason};
use crate::core::envoy::identity::Peer;
use crate::core::envoy::source::CallerAddress;

#[derive(Debug)]
pub(crate) struct ConnectionRecord<'a> {
    pub envelope: Envelope<'a>,
    pub reason: Reason,
    /// A failed handshake: its short class and Envoy's failure reason.
    pub failure: Option<(&'static str, &'a [u8])>,
    /// The network RBAC filter closed it: the DENY policy that matched, or `None` when no
    /// ALLOW policy did.
    pub denial: Option<Option<&'a [u8]>>,
    /// A mesh AUDIT policy matched it (the network RBAC filter names no policy for that).
    pub audited: bool,
    pub direction: Option<&'static str>,
    pub local_address: Option<&'a [u8]>,
    pub source_address: Option<&'a [u8]>,
    pub peer: &'a Peer,
}

impl ConnectionRecord<'_> {
    /// One JSON line of at most `max_record_bytes`: escaping can make a capped field six times
    /// its bytes, so the field cap halves until the record fits (markers alone always do).
    pub(crate) fn encode_within(&self, cap: usize, max_record_bytes: usize) -> String {
        let mut cap = cap;
        loop {
            let record = self.encode(cap);
            if record.len() <= max_record_bytes || cap == 0 {
                return record;
            }
            cap /= 2;
        }
    }

    fn encode(&self, cap: usize) -> String {
        let mut w = JsonWriter::default();
        self.envelope.begin(&mut w, cap);
        w.object_field("why");
        w.str_field("reason", self.reason.as_str());
        w.end_object();
        w.object_field("connection");
        if let Some((class, reason)) = self.failure {
            w.str_field("failure", class);
            w.bytes_field("failure_reason", reason, cap);
        }
        w.opt_bytes_field("local_address", self.local_address, cap);
        w.end_object();
        // At the connection level the source is the directly connected peer.
        let address = CallerAddress {
            peer: self.source_address,
            forwarded: None,
        };
        write_source(&mut w, address, None, cap);
        write_peer(&mut w, self.peer, cap);
        if self.denial.is_some() || self.audited {
            w.object_field("authz");
            let (decision, basis, policy) = match self.denial {
                Some(Some(policy)) => ("denied", Basis::DenyPolicy, Some(policy)),
                Some(None) => ("denied", Basis::NoAllowPolicyMatched, None),
                None => ("allowed", Basis::NotDenied, None),
            };
            w.str_field("decision", decision);
            w.str_field("by", "rbac");
            w.str_field("basis", basis.as_str());
            if let Some(policy) = policy {
                write_policy(&mut w, policy, cap);
            }
            if self.audited {
                write_audit(&mut w, None, cap);
            }
            w.end_object();
        }
        w.opt_str_field("direction", self.direction);
        w.end_object();
        w.finish()
    }
}
