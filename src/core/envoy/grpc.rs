//! What a gRPC call looks like to Envoy: the request's content type, the service and
//! method in its path, and the status the client was told (gRPC answers HTTP 200 and
//! carries its outcome in `grpc-status`, usually a trailer).

use super::attributes::{decode_i64, GRPC_MESSAGE, GRPC_STATUS};
use super::host::Host;

/// The status codes of the gRPC specification (`doc/statuscodes.md`), in code order.
const STATUS_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

pub(crate) const PERMISSION_DENIED: i64 = 7;
pub(crate) const RESOURCE_EXHAUSTED: i64 = 8;
pub(crate) const UNAUTHENTICATED: i64 = 16;

/// The canonical name of a status code, `None` for a code outside the specification
/// (Envoy reports a `grpc-status` it cannot parse as -1).
pub(crate) fn status_name(code: i64) -> Option<&'static str> {
    usize::try_from(code)
        .ok()
        .and_then(|i| STATUS_NAMES.get(i))
        .copied()
}

/// The code of a canonical name (`PERMISSION_DENIED`, any case) or of a number (`7`).
pub(crate) fn status_code_of(name: &str) -> Option<u8> {
    if let Ok(code) = name.parse::<u8>() {
        return (usize::from(code) < STATUS_NAMES.len()).then_some(code);
    }
    STATUS_NAMES
        .iter()
        .position(|known| known.eq_ignore_ascii_case(name))
        .and_then(|i| u8::try_from(i).ok())
}

/// Whether a request's `content-type` says gRPC: `application/grpc`, `application/grpc+proto`
/// and the like, and gRPC-Web's `application/grpc-web…`. Envoy itself is stricter (exactly
/// `application/grpc` or `application/grpc+…`); reading more requests as gRPC only costs them
/// one read, while reading a real call as plain HTTP would sample its refusals away.
pub(crate) fn is_grpc_content_type(value: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    value
        .get(..GRPC.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(GRPC))
}

/// The service and method a gRPC path names: `/<package>.<Service>/<Method>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GrpcCall<'a> {
    pub service: &'a [u8],
    pub method: &'a [u8],
}

impl<'a> GrpcCall<'a> {
    /// `None` for any other shape: no leading `/`, an empty part, or more than two
    /// segments (a gRPC server answers those UNIMPLEMENTED; the path is still recorded).
    pub(crate) fn from_path(path: &'a [u8]) -> Option<Self> {
        let rest = path.strip_prefix(b"/")?;
        let slash = rest.iter().position(|&b| b == b'/')?;
        let (service, method) = (rest.get(..slash)?, rest.get(slash + 1..)?);
        let valid = !service.is_empty() && !method.is_empty() && !method.contains(&b'/');
        valid.then_some(Self { service, method })
    }

    /// `<service>/<method>`, as method rules name a method.
    pub(crate) fn full_method_is(&self, full: &[u8]) -> bool {
        full.len() == self.service.len() + 1 + self.method.len()
            && full.starts_with(self.service)
            && full.get(self.service.len()) == Some(&b'/')
            && full.ends_with(self.method)
    }
}

/// The gRPC status of the response, as Envoy derives it (see `GRPC_STATUS`): one read.
pub(crate) fn read_status(host: &impl Host) -> Option<i64> {
    host.property(GRPC_STATUS).as_deref().and_then(decode_i64)
}

/// The status message, from the trailers or, in a trailers-only response, the headers.
pub(crate) fn read_message(host: &impl Host) -> Option<Vec<u8>> {
    host.response_trailer(GRPC_MESSAGE)
        .or_else(|| host.response_header(GRPC_MESSAGE))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn status_names_follow_the_specification() {
        assert_eq!(status_name(0), Some("OK"));
        assert_eq!(status_name(PERMISSION_DENIED), Some("PERMISSION_DENIED"));
        assert_eq!(status_name(RESOURCE_EXHAUSTED), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(status_name(UNAUTHENTICATED), Some("UNAUTHENTICATED"));
        assert_eq!(status_name(14), Some("UNAVAILABLE"));
        assert_eq!(status_name(17), None);
        assert_eq!(
            status_name(-1),
            None,
            "Envoy's value for an unparsable status"
        );
        assert_eq!(status_code_of("permission_denied"), Some(7));
        assert_eq!(status_code_of("UNAUTHENTICATED"), Some(16));
        assert_eq!(status_code_of("16"), Some(16));
        assert_eq!(status_code_of("17"), None);
        assert_eq!(status_code_of("DENIED"), None);
        assert_eq!(status_code_of(""), None);
    }

    #[test]
    fn content_types() {
        for grpc in [
            &b"application/grpc"[..],
            b"application/grpc+proto",
            b"application/grpc+json",
            b"Application/GRPC",
            b"application/grpc-web+proto",
            b"application/grpc-web-text",
        ] {
            assert!(is_grpc_content_type(grpc), "{grpc:?}");
        }
        for other in [
            &b"application/json"[..],
            b"application/grp",
            b"",
            b"text/application/grpc",
        ] {
            assert!(!is_grpc_content_type(other), "{other:?}");
        }
    }

    #[test]
    fn paths_split_into_service_and_method() {
        let call = GrpcCall::from_path(b"/shop.Admin/DeleteUser").unwrap();
        assert_eq!(
            (call.service, call.method),
            (&b"shop.Admin"[..], &b"DeleteUser"[..])
        );
        assert!(call.full_method_is(b"shop.Admin/DeleteUser"));
        assert!(!call.full_method_is(b"shop.Admin/Delete"));
        assert!(!call.full_method_is(b"shop.AdminDeleteUser"));
        assert!(!call.full_method_is(b"shop.Admin/DeleteUserX"));
        assert!(!call.full_method_is(b"shop/Admin/DeleteUser"));
        for hostile in [
            &b""[..],
            b"/",
            b"//",
            b"/shop.Admin",
            b"/shop.Admin/",
            b"//DeleteUser",
            b"/a/b/c",
            b"shop.Admin/DeleteUser",
            b"/shop.Admin//DeleteUser",
        ] {
            assert_eq!(GrpcCall::from_path(hostile), None, "{hostile:?}");
        }
        // Bytes are kept as they are: encoding, capping and escaping are the record's.
        let odd = GrpcCall::from_path(b"/s%2Fx.\xff/m\"\n").unwrap();
        assert_eq!(
            (odd.service, odd.method),
            (&b"s%2Fx.\xff"[..], &b"m\"\n"[..])
        );
    }
}
