//! `core::host::Host` over the Proxy-Wasm ABI of the current stream.

use super::abi::{self, MapType};
use crate::core::host::Host;

pub struct EnvoyHost;

impl Host for EnvoyHost {
    fn request_header_map(&self) -> Option<Vec<u8>> {
        abi::header_map(MapType::RequestHeaders)
    }

    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        abi::header(MapType::ResponseHeaders, name)
    }

    fn response_header_map(&self) -> Option<Vec<u8>> {
        abi::header_map(MapType::ResponseHeaders)
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        abi::property(path)
    }

    fn now_unix_nanos(&self) -> u64 {
        abi::now_unix_nanos().unwrap_or(0)
    }
}
