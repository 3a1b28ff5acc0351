//! The directly connected peer of each open downstream connection, as the network mode
//! saw it when the connection opened, for the HTTP streams on that connection: an HTTP
//! stream's `source.address` can be Envoy's reading of `X-Forwarded-For` (`envoy::source`).
//! One per VM, shared by its roots (the HTTP and the network filter of one module share
//! the VM when their `vm_config` is the same, as Istio's WasmPlugins of one module are).

/// Open connections remembered per VM (one worker's). Beyond it, new connections are not
/// remembered and their records say the peer is unknown (`source.keyed_by: connection`).
pub(crate) const MAX_OPEN_CONNECTIONS: usize = 65_536;

/// Longest address kept (an IPv6 address with scope and port is far shorter).
const MAX_ADDRESS_BYTES: usize = 128;

/// Sorted by connection id. Envoy numbers connections in order, so a new one goes at the
/// end; a lookup is a binary search (a map type would cost the module kilobytes).
#[derive(Debug, Default)]
pub(crate) struct PeerDirectory {
    peers: Vec<(u64, Vec<u8>)>,
}

impl PeerDirectory {
    /// Remembers a new connection's peer; `false` when the directory is full.
    pub(crate) fn opened(&mut self, connection_id: u64, peer: &[u8]) -> bool {
        if self.peers.len() >= MAX_OPEN_CONNECTIONS || peer.len() > MAX_ADDRESS_BYTES {
            return false;
        }
        match self.position(connection_id) {
            Ok(at) => {
                if let Some(entry) = self.peers.get_mut(at) {
                    entry.1 = peer.to_vec();
                }
            }
            Err(at) => self.peers.insert(at, (connection_id, peer.to_vec())),
        }
        true
    }

    pub(crate) fn closed(&mut self, connection_id: u64) {
        if let Ok(at) = self.position(connection_id) {
            self.peers.remove(at);
        }
    }

    pub(crate) fn peer(&self, connection_id: u64) -> Option<&[u8]> {
        let at = self.position(connection_id).ok()?;
        self.peers.get(at).map(|(_, peer)| peer.as_slice())
    }

    fn position(&self, connection_id: u64) -> Result<usize, usize> {
        self.peers
            .binary_search_by_key(&connection_id, |(id, _)| *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn remembers_open_connections_within_bounds() {
        let mut d = PeerDirectory::default();
        assert!(d.opened(1, b"127.0.0.1:5000"));
        assert_eq!(d.peer(1), Some(&b"127.0.0.1:5000"[..]));
        assert_eq!(d.peer(2), None);
        d.closed(1);
        assert_eq!(d.peer(1), None);
        // Out of order, and again.
        assert!(d.opened(9, b"a:1") && d.opened(4, b"b:1") && d.opened(9, b"c:1"));
        assert_eq!(
            (d.peer(4), d.peer(9)),
            (Some(&b"b:1"[..]), Some(&b"c:1"[..]))
        );
        d.closed(4);
        d.closed(9);
        assert!(!d.opened(3, &[b'x'; MAX_ADDRESS_BYTES + 1]));
        for id in 0..MAX_OPEN_CONNECTIONS as u64 {
            assert!(d.opened(id, b"10.0.0.1:1"));
        }
        assert!(!d.opened(u64::MAX, b"10.0.0.2:1"), "full: not remembered");
        d.closed(0);
        assert!(
            d.opened(u64::MAX, b"10.0.0.2:1"),
            "room again once one closed"
        );
    }
}
