//! The caller facts of recent downstream connections, per worker.
//!
//! A mesh keeps connections open for many requests (HTTP/2 between sidecars,
//! pooled HTTP/1.1), and reading a connection's facts is the costliest part of a
//! record: four certificate attributes under mTLS. So each worker keeps the facts
//! of its recent connections, keyed by Envoy's connection id (unique within the
//! process, never reused), and a record of a known connection reads none of them.

use crate::core::envoy::connection::ConnectionFacts;
use crate::core::envoy::host::Host;
use std::rc::Rc;

/// Connections remembered per worker. A miss costs one batch read; beyond this
/// many concurrently active connections, the oldest entries make room.
pub(crate) const CACHE_CAPACITY: usize = 64;

/// The facts of recent connections, by connection id, replaced oldest first.
#[derive(Debug, Default)]
pub(crate) struct ConnectionCache {
    entries: Vec<(u64, Rc<ConnectionFacts>)>,
    /// Where the next new entry goes once the cache is full.
    next: usize,
}

impl ConnectionCache {
    /// The connection's facts: remembered, or read now (and remembered when the id is known).
    pub(crate) fn facts(&mut self, id: Option<u64>, host: &impl Host) -> Rc<ConnectionFacts> {
        let Some(id) = id else {
            return Rc::new(ConnectionFacts::read(host));
        };
        if let Some((_, facts)) = self.entries.iter().find(|(known, _)| *known == id) {
            return Rc::clone(facts);
        }
        let facts = Rc::new(ConnectionFacts::read(host));
        let entry = (id, Rc::clone(&facts));
        if self.entries.len() < CACHE_CAPACITY {
            self.entries.push(entry);
        } else if let Some(slot) = self.entries.get_mut(self.next) {
            *slot = entry;
            self.next = (self.next + 1) % CACHE_CAPACITY;
        }
        facts
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::envoy::host::FakeHost;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn mtls_host(principal: &str) -> FakeHost {
        FakeHost::new()
            .with_property("source.address", "10.0.0.7:5000")
            .with_property("connection.mtls", [1])
            .with_property("connection.tls_version", "TLSv1.3")
            .with_property("connection.uri_san_peer_certificate", principal)
            .with_property("connection.subject_peer_certificate", "CN=x")
            .with_property("connection.sha256_peer_certificate_digest", "ab12")
            .with_property(
                "connection.uri_san_local_certificate",
                "spiffe://td/ns/a/sa/me",
            )
    }

    #[test]
    fn a_known_connection_costs_no_host_call() {
        let mut cache = ConnectionCache::default();
        let host = mtls_host("spiffe://td/ns/shop/sa/checkout");
        let first = cache.facts(Some(7), &host);
        assert_eq!(host.calls.get(), 1, "one batch read on a miss");
        assert_eq!(
            first.peer.principal.as_deref(),
            Some(&b"spiffe://td/ns/shop/sa/checkout"[..])
        );
        assert_eq!(
            first.peer.local_principal.as_deref(),
            Some(&b"spiffe://td/ns/a/sa/me"[..])
        );
        let again = cache.facts(Some(7), &host);
        assert_eq!(host.calls.get(), 1);
        assert_eq!(again, first);
    }

    #[test]
    fn connections_never_share_facts() {
        let mut cache = ConnectionCache::default();
        cache.facts(Some(1), &mtls_host("spiffe://td/ns/a/sa/one"));
        let other = cache.facts(Some(2), &mtls_host("spiffe://td/ns/b/sa/two"));
        assert_eq!(
            other.peer.principal.as_deref(),
            Some(&b"spiffe://td/ns/b/sa/two"[..])
        );
        // Without an id nothing is remembered: the facts are read every time.
        let host = mtls_host("spiffe://td/ns/c/sa/three");
        cache.facts(None, &host);
        cache.facts(None, &host);
        assert_eq!(host.calls.get(), 2);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn plaintext_has_no_certificate_facts_and_the_cache_stays_bounded() {
        let plain = FakeHost::new()
            .with_property("source.address", "10.0.0.8:6000")
            .with_property("connection.mtls", [0])
            // Present on the host, yet not part of a plaintext connection's facts.
            .with_property("connection.uri_san_peer_certificate", "spiffe://forged");
        let mut cache = ConnectionCache::default();
        for id in 0..(CACHE_CAPACITY as u64 * 3) {
            let facts = cache.facts(Some(id), &plain);
            assert_eq!(facts.peer.mtls, Some(false));
            assert_eq!(facts.peer.principal, None);
            assert_eq!(facts.peer.tls_version, None);
        }
        assert_eq!(cache.len(), CACHE_CAPACITY);
        // The newest connections are the ones remembered.
        plain.reset_calls();
        cache.facts(Some(CACHE_CAPACITY as u64 * 3 - 1), &plain);
        assert_eq!(plain.calls.get(), 0);
        cache.facts(Some(0), &plain);
        assert_eq!(plain.calls.get(), 1);
    }
}
