//! Sampling: a deterministic function of the trace id where there is one, so
//! every sidecar on a request's path keeps or drops the same request and a
//! sampled trace is complete across hops.

/// Which identifier a sampling decision was keyed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SampleKey {
    /// W3C `traceparent` trace-id.
    TraceId,
    /// B3 trace id (`x-b3-traceid` or the single `b3` header).
    B3TraceId,
    /// Envoy's `x-request-id`.
    RequestId,
    /// No identifier: a per-worker random draw, not consistent across hops.
    Random,
}

impl SampleKey {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SampleKey::TraceId => "trace_id",
            SampleKey::B3TraceId => "b3_trace_id",
            SampleKey::RequestId => "request_id",
            SampleKey::Random => "random",
        }
    }
}

/// Keep with probability `rate`, given a uniformly distributed 64-bit draw.
pub(crate) fn keep(rate: f64, draw: u64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    if rate <= 0.0 || rate.is_nan() {
        return false;
    }
    // The top 53 bits as a fraction in [0, 1): exact in a double.
    let fraction = (draw >> 11) as f64 / (1u64 << 53) as f64;
    fraction < rate
}

/// A well-mixed 64-bit hash of an identifier. Case-insensitive, since trace
/// ids are hex and hops may differ in case. The algorithm is part of the
/// sampling contract between sidecars: changing it breaks cross-hop consistency.
pub(crate) fn hash_id(id: &[u8]) -> u64 {
    // FNV-1a, then the splitmix64 finaliser so nearby ids spread over the range.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in id {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The per-worker fallback generator (splitmix64): no host call, no allocation.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }
}

/// The ids of a W3C `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceParent<'a> {
    pub trace_id: &'a [u8],
    /// The caller's span: the parent of this hop's.
    pub span_id: &'a [u8],
}

/// A W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if well formed.
pub(crate) fn traceparent(value: &[u8]) -> Option<TraceParent<'_>> {
    let mut parts = value.split(|&b| b == b'-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let span_id = parts.next()?;
    let flags = parts.next()?;
    let well_formed = version.len() == 2
        && version != b"ff"
        && is_hex_id(trace_id, 32)
        && is_hex_id(span_id, 16)
        && flags.len() == 2
        && flags.iter().all(u8::is_ascii_hexdigit);
    well_formed.then_some(TraceParent { trace_id, span_id })
}

/// A B3 trace id: 16 or 32 hex digits, from `x-b3-traceid` or the first field of `b3`.
pub(crate) fn b3_trace_id(value: &[u8]) -> Option<&[u8]> {
    let id = value.split(|&b| b == b'-').next()?;
    (is_hex_id(id, 16) || is_hex_id(id, 32)).then_some(id)
}

/// Hex of exactly `len` digits and not all zero (all-zero ids are invalid in both W3C and B3).
fn is_hex_id(id: &[u8], len: usize) -> bool {
    id.len() == len && id.iter().all(u8::is_ascii_hexdigit) && id.iter().any(|&b| b != b'0')
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn same_id_same_decision_regardless_of_case() {
        let a = hash_id(b"4bf92f3577b34da6a3ce929d0e0e4736");
        let b = hash_id(b"4BF92F3577B34DA6A3CE929D0E0E4736");
        assert_eq!(a, b);
        assert_ne!(a, hash_id(b"4bf92f3577b34da6a3ce929d0e0e4737"));
    }

    #[test]
    fn hash_is_stable_across_platforms() {
        // Pinned: sidecars built for any target must agree on this value.
        assert_eq!(
            hash_id(b"4bf92f3577b34da6a3ce929d0e0e4736"),
            9_253_134_483_141_100_514
        );
    }

    #[test]
    fn kept_fraction_is_close_to_the_rate() {
        // 100k sequential request ids at 1%: binomial sd ~ 31, allow 5 sd.
        let kept = (0..100_000u32)
            .filter(|i| keep(0.01, hash_id(format!("req-{i}").as_bytes())))
            .count();
        assert!(
            (1000usize.abs_diff(kept)) < 160,
            "kept {kept} of 100000 at 1%"
        );
        assert!(keep(1.0, u64::MAX));
        assert!(!keep(0.0, 0));
    }

    #[test]
    fn random_fallback_is_uniform_enough() {
        let mut rng = Rng::new(7);
        let kept = (0..100_000).filter(|_| keep(0.25, rng.next_u64())).count();
        assert!((25_000usize.abs_diff(kept)) < 700, "kept {kept}");
    }

    #[test]
    fn parses_trace_headers() {
        let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            traceparent(tp),
            Some(TraceParent {
                trace_id: b"4bf92f3577b34da6a3ce929d0e0e4736",
                span_id: b"00f067aa0ba902b7"
            })
        );
        assert_eq!(
            traceparent(b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(traceparent(b"00-4bf92f35-00f067aa0ba902b7-01"), None);
        assert_eq!(
            traceparent(b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(traceparent(b"garbage"), None);
        assert_eq!(
            b3_trace_id(b"80f198ee56343ba864fe8b2a57d3eff7"),
            Some(&b"80f198ee56343ba864fe8b2a57d3eff7"[..])
        );
        assert_eq!(
            b3_trace_id(b"80f198ee56343ba8-e457b5a2e4d86bd1-1"),
            Some(&b"80f198ee56343ba8"[..])
        );
        assert_eq!(b3_trace_id(b"xyz"), None);
    }
}
