//! `core::host::Host` over the Proxy-Wasm ABI of the current stream.

use super::abi::{self, MapType};
use crate::core::batch::{
    self, Attr, Facts, CONNECTION_FACTS, RECORD_FACTS, RECORD_FACTS_WITH_OUTCOME,
    SENSITIVE_RECORD_FACTS,
};
use crate::core::host::Host;
use crate::core::settings::LogLevel;
use std::cell::Cell;

/// The attribute lists read in one call each.
const BATCHES: [&[Attr]; 4] = [
    &RECORD_FACTS,
    &SENSITIVE_RECORD_FACTS,
    &RECORD_FACTS_WITH_OUTCOME,
    &CONNECTION_FACTS,
];

thread_local! {
    /// Whether this VM has said that a batch could not be evaluated.
    static FALLBACK_REPORTED: Cell<bool> = const { Cell::new(false) };
}

/// Said once per VM: the attributes are still read, one by one, at a higher cost.
pub const BATCH_FALLBACK_WARNING: &str =
    "meshaudit: Envoy could not evaluate an attribute batch; reading attributes one by one (slower)";

/// Envoy's tokens for the compiled expressions of `BATCHES`. Envoy keeps compiled
/// expressions per root context, and one VM can hold several (the HTTP and the
/// network filter of one module share it): each root compiles its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchTokens([Option<[u8; 4]>; BATCHES.len()]);

impl BatchTokens {
    /// Compiles the batches for the current root context. Without Envoy's CEL foreign
    /// functions (another host, or a build without them) attributes are read one by one.
    pub fn compile() -> Self {
        Self(BATCHES.map(|attrs| {
            let expression = batch::cel_expression(attrs);
            abi::foreign("expr_create", expression.as_bytes())
                .and_then(|t| <[u8; 4]>::try_from(t.as_slice()).ok())
        }))
    }

    fn token_for(&self, attrs: &[Attr]) -> Option<[u8; 4]> {
        BATCHES
            .iter()
            .zip(self.0)
            // The lists are statics: the address decides, the contents only for another copy.
            .find(|(batch, _)| std::ptr::eq(**batch, attrs) || **batch == attrs)
            .and_then(|(_, token)| token)
    }
}

/// The current stream, as seen from the root context that created it.
pub struct EnvoyHost {
    pub batches: BatchTokens,
}

impl Host for EnvoyHost {
    fn request_header_map(&self) -> Option<Vec<u8>> {
        abi::header_map(MapType::RequestHeaders)
    }

    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        abi::header(MapType::ResponseHeaders, name)
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        abi::property(path)
    }

    fn now_unix_nanos(&self) -> u64 {
        abi::now_unix_nanos().unwrap_or(0)
    }

    fn properties(&self, attrs: &[Attr]) -> Facts {
        let token = self.batches.token_for(attrs);
        let batched = token.map(|token| {
            abi::foreign("expr_evaluate", &token)
                .and_then(|answer| Facts::from_answer(answer, attrs))
        });
        if let Some(None) = batched {
            // Compiled, yet not answered: an attribute assumed always present was not.
            if !FALLBACK_REPORTED.replace(true) {
                abi::log(LogLevel::Warn, BATCH_FALLBACK_WARNING);
            }
        }
        batched
            .flatten()
            .unwrap_or_else(|| Facts::Single(attrs.iter().map(|a| self.property(a.path)).collect()))
    }
}
