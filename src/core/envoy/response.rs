//! What the plugin reads of the response's headers: its status, and a rate limiter's.

use super::attributes::{
    RATE_LIMIT_LIMIT_HEADER, RATE_LIMIT_REMAINING_HEADER, RATE_LIMIT_RESET_HEADER, STATUS_HEADER,
};
use super::host::Host;

/// `:status` from the response headers (`None` when no response was sent): a header read,
/// the cheapest way to the status (bench/README.md).
pub(crate) fn read_status(host: &impl Host) -> Option<u16> {
    host.response_header(STATUS_HEADER)
        .as_deref()
        .and_then(|bytes| std::str::from_utf8(bytes).ok()?.parse().ok())
}

/// A rate limiter's `x-ratelimit-*` response headers, which limiters send together.
#[derive(Debug, Default)]
pub(crate) struct LimiterHeaders {
    pub limit: Option<Vec<u8>>,
    pub remaining: Option<Vec<u8>>,
    pub reset: Option<Vec<u8>>,
}

impl LimiterHeaders {
    /// One read when no limiter answered, the usual case: a header that is absent
    /// costs Envoy no copy into the VM, unlike the whole response header map.
    pub(crate) fn read(host: &impl Host) -> Self {
        let Some(limit) = host.response_header(RATE_LIMIT_LIMIT_HEADER) else {
            return Self::default();
        };
        Self {
            limit: Some(limit),
            remaining: host.response_header(RATE_LIMIT_REMAINING_HEADER),
            reset: host.response_header(RATE_LIMIT_RESET_HEADER),
        }
    }
}
