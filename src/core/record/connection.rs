//! Network-mode records: a failed TLS handshake (`tls_failure`), or a connection
//! (`connection`) when configured.

use super::json::JsonWriter;
use super::{write_peer, write_source, Envelope};
use crate::core::envoy::identity::Peer;

#[derive(Debug)]
pub(crate) struct ConnectionRecord<'a> {
    pub envelope: Envelope<'a>,
    /// `why.reason`: `security_outcome` or `record_connections`.
    pub reason: &'static str,
    /// A failed handshake: its short class and Envoy's failure reason.
    pub failure: Option<(&'static str, &'a [u8])>,
    pub local_address: Option<&'a [u8]>,
    pub source_address: Option<&'a [u8]>,
    pub peer: &'a Peer,
}

impl ConnectionRecord<'_> {
    pub(crate) fn encode(&self, cap: usize) -> String {
        let mut w = JsonWriter::default();
        self.envelope.begin(&mut w, cap);
        w.object_field("why");
        w.str_field("reason", self.reason);
        w.end_object();
        w.object_field("connection");
        if let Some((class, reason)) = self.failure {
            w.str_field("failure", class);
            w.bytes_field("failure_reason", reason, cap);
        }
        w.opt_bytes_field("local_address", self.local_address, cap);
        w.end_object();
        if let Some(address) = self.source_address {
            write_source(&mut w, address, cap);
        }
        write_peer(&mut w, self.peer, cap);
        w.end_object();
        w.finish()
    }
}
