//! `core::host::Host` over the Proxy-Wasm ABI of the current stream.

use super::abi::{self, MapType};
use crate::core::batch::{self, Attr, RECORD_FACTS, SENSITIVE_RECORD_FACTS};
use crate::core::host::Host;
use std::cell::Cell;

thread_local! {
    /// Envoy's tokens for the compiled batch expressions, per VM.
    static RECORD_FACTS_EXPR: Cell<Option<[u8; 4]>> = const { Cell::new(None) };
    static SENSITIVE_FACTS_EXPR: Cell<Option<[u8; 4]>> = const { Cell::new(None) };
}

/// Compiles the batch expressions once per VM. Without Envoy's CEL foreign
/// functions (another host, or a build without them) attributes are read one by one.
pub fn prepare_batches() {
    for (attrs, token) in [
        (&RECORD_FACTS[..], &RECORD_FACTS_EXPR),
        (&SENSITIVE_RECORD_FACTS[..], &SENSITIVE_FACTS_EXPR),
    ] {
        if token.get().is_none() {
            let expression = batch::cel_expression(attrs);
            token.set(
                abi::foreign("expr_create", expression.as_bytes())
                    .and_then(|t| <[u8; 4]>::try_from(t.as_slice()).ok()),
            );
        }
    }
}

pub struct EnvoyHost;

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

    fn properties(&self, attrs: &[Attr]) -> Vec<Option<Vec<u8>>> {
        let token = if attrs == RECORD_FACTS.as_slice() {
            RECORD_FACTS_EXPR.get()
        } else if attrs == SENSITIVE_RECORD_FACTS.as_slice() {
            SENSITIVE_FACTS_EXPR.get()
        } else {
            None
        };
        let batched = token
            .and_then(|token| abi::foreign("expr_evaluate", &token))
            .and_then(|answer| batch::decode(answer, attrs));
        batched.unwrap_or_else(|| attrs.iter().map(|a| self.property(a.path)).collect())
    }
}
