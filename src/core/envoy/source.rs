//! Who called, by address: the directly connected peer, which the caller cannot choose,
//! and the client address Envoy derived from `X-Forwarded-For`, which the caller (or any
//! proxy before it) wrote.
//!
//! Envoy gives each HTTP stream its own `source.address`. With `use_remote_address: false`
//! (Istio's sidecar inbound listeners) or `xff_num_trusted_hops` above 0 it is an address
//! from `X-Forwarded-For`, built with port 0 (Envoy's `getLastAddressFromXFF`); otherwise it
//! is the connection's peer, with its port. The peer itself is not an attribute of an HTTP
//! stream: the network mode, in the same VM, hands it over by connection id.

/// A stream's caller addresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CallerAddress<'a> {
    /// The directly connected peer, when known.
    pub peer: Option<&'a [u8]>,
    /// The address Envoy derived from a request header: a claim.
    pub forwarded: Option<&'a [u8]>,
}

impl<'a> CallerAddress<'a> {
    /// `stream_source`: Envoy's `source.address` for the stream; `handed_off`: the
    /// connection's peer as the network mode saw it, if it did.
    pub(crate) fn new(stream_source: Option<&'a [u8]>, handed_off: Option<&'a [u8]>) -> Self {
        let forwarded = stream_source.filter(|address| address.ends_with(b":0"));
        Self {
            peer: handed_off.or(stream_source.filter(|_| forwarded.is_none())),
            forwarded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn an_address_with_port_0_is_envoys_reading_of_a_header() {
        let direct = CallerAddress::new(Some(b"10.0.0.7:51234"), None);
        assert_eq!(direct.peer, Some(&b"10.0.0.7:51234"[..]));
        assert_eq!(direct.forwarded, None);
        for claimed in [&b"203.0.113.9:0"[..], b"[2001:db8::1]:0"] {
            let from_header = CallerAddress::new(Some(claimed), None);
            assert_eq!(from_header.peer, None, "{claimed:?}");
            assert_eq!(from_header.forwarded, Some(claimed));
            let handed = CallerAddress::new(Some(claimed), Some(b"127.0.0.1:40000"));
            assert_eq!(handed.peer, Some(&b"127.0.0.1:40000"[..]));
            assert_eq!(handed.forwarded, Some(claimed));
        }
        // Ports that merely end in 0 are ports.
        for port in [&b"10.0.0.1:10"[..], b"10.0.0.1:100", b"[::1]:8080"] {
            assert_eq!(CallerAddress::new(Some(port), None).forwarded, None);
        }
        assert_eq!(CallerAddress::new(None, None), CallerAddress::default());
    }
}
