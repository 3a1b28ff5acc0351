//! The request the native benchmarks (`core_bench`, `trail_bench`) run through the core.

use meshaudit::core::{serialize_header_map as serialize, Host};

/// A request as Envoy would present it, answering from memory: each answer a
/// fresh copy, as the VM allocates one for every host call that returns data.
pub(crate) struct StaticHost {
    /// The request header map, serialised once.
    request: Vec<u8>,
    status: &'static [u8],
    /// The clock, which a caller may move between requests.
    pub(crate) now: u64,
}

impl Host for StaticHost {
    fn request_header_map(&self) -> Option<Vec<u8>> {
        Some(self.request.clone())
    }
    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        (name == ":status").then(|| self.status.to_vec())
    }
    fn response_trailer(&self, _: &str) -> Option<Vec<u8>> {
        None
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        match path {
            ["response", "code_details"] => Some(b"via_upstream".to_vec()),
            // A successful request: no response flags, 1.234567 ms.
            ["response", "flags"] => Some(0i64.to_le_bytes().to_vec()),
            ["request", "duration"] => Some(1_234_567i64.to_le_bytes().to_vec()),
            ["source", "address"] => Some(b"10.1.2.3:45678".to_vec()),
            ["connection", "mtls"] => Some(vec![0]),
            // One keep-alive connection, as wrk drives it.
            ["connection", "id"] => Some(7i64.to_le_bytes().to_vec()),
            ["xds", "route_name"] => Some(b"backend".to_vec()),
            ["xds", "cluster_name"] => Some(b"outbound|8080||api.shop.svc.cluster.local".to_vec()),
            _ => None,
        }
    }
    fn now_unix_nanos(&self) -> u64 {
        self.now
    }
}

/// A GET of `path` with a browser's headers, a bearer token and trace context, answered 200.
pub(crate) fn host(path: &str) -> StaticHost {
    let request: Vec<(&str, Vec<u8>)> = vec![
        (":method", b"GET".to_vec()),
        (":path", path.as_bytes().to_vec()),
        (":authority", b"api.shop.svc.cluster.local:8080".to_vec()),
        (
            "user-agent",
            b"Mozilla/5.0 (X11; Linux x86_64) bench".to_vec(),
        ),
        (
            "authorization",
            b"Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJqYW5lIn0.c2lnbmF0dXJl".to_vec(),
        ),
        (
            "x-request-id",
            b"6b0e9a3e-3f1c-4f7d-9a8e-2c1d5e6f7a8b".to_vec(),
        ),
        (
            "traceparent",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec(),
        ),
    ];
    let pairs: Vec<(&str, &[u8])> = request.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    StaticHost {
        request: serialize(&pairs),
        status: b"200",
        now: 1_795_626_239_123_000_000,
    }
}
