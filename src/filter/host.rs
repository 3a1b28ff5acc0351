//! `core::host::Host` over the Proxy-Wasm ABI of the current stream.

use super::abi::{self, MapType};
use crate::core::config::LogLevel;
use crate::core::envoy::attributes::{cel_expression, Answer, Batch};
use crate::core::envoy::attributes::{decode_i64, CONNECTION_ID, SOURCE_ADDRESS};
use crate::core::envoy::host::{read_one_by_one, Host};
use crate::core::worker::peers::PeerDirectory;
use std::cell::{Cell, RefCell};

thread_local! {
    /// Whether this VM has said that a batch could not be compiled or evaluated.
    static FALLBACK_REPORTED: Cell<bool> = const { Cell::new(false) };
    /// The open connections' peers, as the network mode saw them: shared by every root of
    /// the VM (`worker::peers`).
    static PEERS: RefCell<PeerDirectory> = RefCell::new(PeerDirectory::default());
}

/// Network mode, at a new downstream connection: remembers its directly connected peer
/// for the HTTP streams it will carry. Two reads per connection.
pub(super) fn remember_connection_peer() -> Option<u64> {
    let id = abi::property(CONNECTION_ID)
        .as_deref()
        .and_then(decode_i64)
        .and_then(|id| u64::try_from(id).ok())?;
    let peer = abi::property(SOURCE_ADDRESS)?;
    PEERS
        .with(|peers| {
            peers
                .try_borrow_mut()
                .map(|mut peers| peers.opened(id, &peer))
        })
        .ok()
        .filter(|remembered| *remembered)
        .map(|_| id)
}

/// Network mode, at the connection's end.
pub(super) fn forget_connection_peer(id: u64) {
    PEERS.with(|peers| {
        if let Ok(mut peers) = peers.try_borrow_mut() {
            peers.closed(id);
        }
    });
}

/// Said once per VM: the attributes are still read, one by one, at a higher cost.
const BATCH_FALLBACK_WARNING: &str =
    "meshaudit: Envoy could not evaluate an attribute batch; reading attributes one by one (slower)";
/// Said once per VM when Envoy refuses a batch's expression (Envoy itself logs why, at `info`).
const BATCH_COMPILE_WARNING: &str =
    "meshaudit: Envoy could not compile an attribute batch; reading attributes one by one (slower)";

fn warn_once(message: &str) {
    if !FALLBACK_REPORTED.replace(true) {
        abi::log(LogLevel::Warn, message);
    }
}

/// Envoy's tokens for the compiled expressions of every `Batch`. Envoy keeps compiled
/// expressions per root context, and one VM can hold several (the HTTP and the
/// network filter of one module share it): each root compiles its own.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct BatchTokens([Option<[u8; 4]>; Batch::ALL.len()]);

impl BatchTokens {
    /// Compiles the batches for the current root context. Without Envoy's CEL foreign
    /// functions (another host, or a build without them) attributes are read one by one.
    pub(super) fn compile() -> Self {
        let tokens = Batch::ALL.map(|batch| {
            let expression = cel_expression(batch.attrs());
            abi::foreign("expr_create", expression.as_bytes())
                .and_then(|t| <[u8; 4]>::try_from(t.as_slice()).ok())
        });
        if tokens.iter().any(Option::is_none) {
            warn_once(BATCH_COMPILE_WARNING);
        }
        Self(tokens)
    }

    fn token_for(&self, batch: Batch) -> Option<[u8; 4]> {
        self.0.get(batch.index()).copied().flatten()
    }
}

/// The current stream, as seen from the root context that created it.
pub(super) struct EnvoyHost {
    pub batches: BatchTokens,
}

impl Host for EnvoyHost {
    fn request_header_map(&self) -> Option<Vec<u8>> {
        abi::header_map(MapType::RequestHeaders)
    }

    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        abi::header(MapType::ResponseHeaders, name)
    }

    fn response_trailer(&self, name: &str) -> Option<Vec<u8>> {
        abi::header(MapType::ResponseTrailers, name)
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        abi::property(path)
    }

    fn now_unix_nanos(&self) -> u64 {
        abi::now_unix_nanos().unwrap_or(0)
    }

    fn connection_peer(&self, connection_id: u64) -> Option<Vec<u8>> {
        PEERS.with(|peers| {
            peers
                .try_borrow()
                .ok()
                .and_then(|peers| peers.peer(connection_id).map(<[u8]>::to_vec))
        })
    }

    fn properties(&self, batch: Batch) -> Answer {
        let token = self.batches.token_for(batch);
        let batched = token.map(|token| {
            abi::foreign("expr_evaluate", &token)
                .and_then(|answer| Answer::from_batch(answer, batch))
        });
        if let Some(None) = batched {
            // Compiled, yet not answered: an attribute assumed always present was not.
            warn_once(BATCH_FALLBACK_WARNING);
        }
        batched
            .flatten()
            .unwrap_or_else(|| read_one_by_one(self, batch))
    }
}
