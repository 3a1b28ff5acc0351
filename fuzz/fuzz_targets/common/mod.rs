//! What the targets share: a host that answers from the fuzzer's bytes, the input split
//! into fields, and the check every record must pass.

#![allow(dead_code, reason = "each target uses part of it")]

use meshaudit::core::{Answer, Batch, Host, Settings};
use std::collections::HashMap;

/// A stream whose every fact comes from the input.
#[derive(Default)]
pub struct FuzzHost {
    /// Envoy's serialised request header map, as the host call returns it.
    pub request_map: Vec<u8>,
    pub response_headers: HashMap<String, Vec<u8>>,
    pub response_trailers: HashMap<String, Vec<u8>>,
    /// By dotted path (`response.code_details`).
    pub properties: HashMap<String, Vec<u8>>,
    /// Envoy's answer to an attribute batch, decoded as it would be.
    pub batch: Option<Vec<u8>>,
}

impl Host for FuzzHost {
    fn request_header_map(&self) -> Option<Vec<u8>> {
        Some(self.request_map.clone())
    }
    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        self.response_headers.get(name).cloned()
    }
    fn response_trailer(&self, name: &str) -> Option<Vec<u8>> {
        self.response_trailers.get(name).cloned()
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.properties.get(&path.join(".")).cloned()
    }
    fn now_unix_nanos(&self) -> u64 {
        1_795_626_239_123_000_000
    }
    fn properties(&self, batch: Batch) -> Answer {
        if let Some(answer) = self
            .batch
            .as_ref()
            .and_then(|raw| Answer::from_batch(raw.clone(), batch))
        {
            return answer;
        }
        Answer::Single(
            batch
                .attrs()
                .iter()
                .map(|a| self.property(a.path))
                .collect(),
        )
    }
}

/// The input cut into `n` fields at each 0xFF 0xFE pair (missing fields are empty).
pub fn fields(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(n);
    let mut rest = data;
    while out.len() + 1 < n {
        match rest.windows(2).position(|w| w == [0xFF, 0xFE]) {
            Some(at) => {
                out.push(&rest[..at]);
                rest = &rest[at + 2..];
            }
            None => break,
        }
    }
    out.push(rest);
    out.resize(n, &[]);
    out
}

/// Every record: one line of valid JSON, an object, within its cap.
pub fn check_record(settings: &Settings, line: &str) {
    assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
    assert!(
        line.len() <= settings.limits.max_record_bytes,
        "{}",
        line.len()
    );
    let value: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
    assert!(value.is_object());
}
