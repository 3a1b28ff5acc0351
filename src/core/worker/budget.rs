//! Budgets on records written: token buckets, per worker, costing no host call.

/// A token bucket: `rate` tokens per second, at most `burst` stored.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last_ns: Option<u64>,
}

impl TokenBucket {
    pub(crate) fn new(per_second: f64, burst: f64) -> Self {
        Self {
            per_second,
            burst,
            tokens: burst,
            last_ns: None,
        }
    }

    /// Takes one token if there is one. Time going backwards refills nothing.
    pub(crate) fn take(&mut self, now_ns: u64) -> bool {
        if let Some(last) = self.last_ns {
            let elapsed = now_ns.saturating_sub(last) as f64 / 1e9;
            self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        }
        self.last_ns = Some(self.last_ns.map_or(now_ns, |last| last.max(now_ns)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn token_bucket_allows_burst_then_rate() {
        let mut b = TokenBucket::new(10.0, 5.0);
        let t0 = 100 * SECOND;
        assert_eq!((0..8).filter(|_| b.take(t0)).count(), 5, "the burst");
        assert!(!b.take(t0 + SECOND / 20), "half a token after 50 ms");
        assert!(b.take(t0 + SECOND / 10), "one token after 100 ms");
        // One second later: ten more, never more than the burst.
        assert_eq!((0..20).filter(|_| b.take(t0 + 2 * SECOND)).count(), 5);
        // Time going backwards refills nothing.
        assert!(!b.take(t0));
    }
}
