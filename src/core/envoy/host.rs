//! What the core needs from Envoy, as a small read-only trait.
//!
//! The adapter implements it over the Proxy-Wasm ABI; tests use `FakeHost`,
//! which also counts calls: host calls are most of what the routine path costs
//! (measured in bench/, figures in bench/RESULTS.md).

use super::attributes::{Answer, Batch};

/// Read access to the current stream. Every method answers `None` when the
/// value does not exist or the host refused: callers treat all facts as optional.
pub trait Host {
    /// The whole request header map in Envoy's serialised form (see `headers::HeaderMap`):
    /// one host call instead of one per header.
    fn request_header_map(&self) -> Option<Vec<u8>>;
    fn response_header(&self, name: &str) -> Option<Vec<u8>>;
    fn response_trailer(&self, name: &str) -> Option<Vec<u8>>;
    /// An Envoy attribute, such as `["response", "code_details"]`, in its serialized form.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Wall-clock time, Unix nanoseconds.
    fn now_unix_nanos(&self) -> u64;

    /// The directly connected peer of a downstream connection, as the network mode (in
    /// the same VM) saw it: no host call. `None` where the network mode does not run.
    fn connection_peer(&self, _connection_id: u64) -> Option<Vec<u8>> {
        None
    }

    /// A batch of attributes. Envoy answers them in one call (see `attributes`); the
    /// default reads them one by one.
    fn properties(&self, batch: Batch) -> Answer {
        read_one_by_one(self, batch)
    }
}

/// A batch as single reads: what a host without Envoy's CEL functions answers.
pub(crate) fn read_one_by_one(host: &(impl Host + ?Sized), batch: Batch) -> Answer {
    Answer::Single(
        batch
            .attrs()
            .iter()
            .map(|a| host.property(a.path))
            .collect(),
    )
}

#[cfg(test)]
pub(crate) use fake::FakeHost;

#[cfg(test)]
mod fake {
    use super::Host;
    use crate::core::envoy::attributes::{Answer, Batch};
    use std::cell::Cell;
    use std::collections::HashMap;

    /// A scripted stream, with a count of the calls made against it.
    #[derive(Default)]
    pub(crate) struct FakeHost {
        pub request_headers: HashMap<String, Vec<u8>>,
        pub response_headers: HashMap<String, Vec<u8>>,
        pub response_trailers: HashMap<String, Vec<u8>>,
        pub properties: HashMap<String, Vec<u8>>,
        /// What the network mode handed over, by connection id.
        pub connection_peers: HashMap<u64, Vec<u8>>,
        pub now: u64,
        pub calls: Cell<usize>,
    }

    impl FakeHost {
        pub(crate) fn new() -> Self {
            Self {
                now: 1_795_626_239_123_000_000,
                ..Self::default()
            }
        }

        pub(crate) fn with_request_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
            self.request_headers
                .insert(name.to_string(), value.as_ref().to_vec());
            self
        }

        pub(crate) fn with_response_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
            self.response_headers
                .insert(name.to_string(), value.as_ref().to_vec());
            self
        }

        pub(crate) fn with_response_trailer(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
            self.response_trailers
                .insert(name.to_string(), value.as_ref().to_vec());
            self
        }

        pub(crate) fn with_property(mut self, path: &str, value: impl AsRef<[u8]>) -> Self {
            self.properties
                .insert(path.to_string(), value.as_ref().to_vec());
            self
        }

        pub(crate) fn with_int_property(self, path: &str, value: i64) -> Self {
            self.with_property(path, value.to_le_bytes())
        }

        /// A request as the plugin sees it; status as a response header.
        pub(crate) fn request(method: &str, path: &str, status: u16) -> Self {
            Self::new()
                .with_request_header(":method", method)
                .with_request_header(":path", path)
                .with_request_header(":authority", "api.example.com")
                .with_response_header(":status", status.to_string())
        }

        /// An attribute: `response.headers.<name>`, `response.code` and `response.grpc_status`
        /// from the response headers and trailers, as in Envoy.
        fn lookup(&self, path: &[&str]) -> Option<Vec<u8>> {
            match path {
                ["response", "headers", name] => self.response_headers.get(*name).cloned(),
                ["response", "code"] => Some(self.http_status()?.to_le_bytes().to_vec()),
                ["response", "grpc_status"] => Some(self.grpc_status()?.to_le_bytes().to_vec()),
                _ => self.properties.get(&path.join(".")).cloned(),
            }
        }

        fn http_status(&self) -> Option<i64> {
            let status = self.response_headers.get(":status")?;
            std::str::from_utf8(status).ok()?.parse().ok()
        }

        /// Envoy's `Grpc::Common::getGrpcStatus`: the trailer, the header, else the HTTP
        /// status mapped as `Grpc::Utility::httpToGrpcStatus` maps it.
        fn grpc_status(&self) -> Option<i64> {
            let parsed = |value: &Vec<u8>| {
                std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<i64>().ok())
                    .filter(|code| (0..=16).contains(code))
                    .unwrap_or(-1)
            };
            if let Some(value) = self.response_trailers.get("grpc-status") {
                return Some(parsed(value));
            }
            if let Some(value) = self.response_headers.get("grpc-status") {
                return Some(parsed(value));
            }
            Some(match self.http_status()? {
                400 => 13,
                401 => 16,
                403 => 7,
                404 => 12,
                429 | 502 | 503 | 504 => 14,
                _ => 2,
            })
        }

        pub(crate) fn reset_calls(&self) {
            self.calls.set(0);
        }

        fn count(&self) {
            self.calls.set(self.calls.get() + 1);
        }
    }

    /// A map serialised as Envoy would, in a stable order.
    fn serialize_sorted(map: &HashMap<String, Vec<u8>>) -> Vec<u8> {
        let mut pairs: Vec<(&str, &[u8])> = map
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        pairs.sort();
        crate::core::envoy::headers::serialize(&pairs)
    }

    impl Host for FakeHost {
        fn request_header_map(&self) -> Option<Vec<u8>> {
            self.count();
            Some(serialize_sorted(&self.request_headers))
        }
        fn response_header(&self, name: &str) -> Option<Vec<u8>> {
            self.count();
            self.response_headers.get(name).cloned()
        }
        fn response_trailer(&self, name: &str) -> Option<Vec<u8>> {
            self.count();
            self.response_trailers.get(name).cloned()
        }
        fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
            self.count();
            self.lookup(path)
        }
        fn now_unix_nanos(&self) -> u64 {
            self.count();
            self.now
        }
        /// In the VM: not a host call, not counted.
        fn connection_peer(&self, connection_id: u64) -> Option<Vec<u8>> {
            self.connection_peers.get(&connection_id).cloned()
        }
        /// Like Envoy's CEL batch: one call for all.
        fn properties(&self, batch: Batch) -> Answer {
            self.count();
            Answer::Single(batch.attrs().iter().map(|a| self.lookup(a.path)).collect())
        }
    }
}
