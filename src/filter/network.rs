//! A downstream connection, in network-filter mode (root id `network`).

use super::active::Active;
use super::emit::emit;
use crate::core::network;
use proxy_wasm::traits::{Context, StreamContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

/// A downstream connection, in network-filter mode.
pub(super) struct ConnectionContext {
    pub(super) active: Option<Rc<Active>>,
    /// Data reached the filter: on a TLS listener, the handshake completed.
    pub(super) data_seen: bool,
}

impl Context for ConnectionContext {}

impl StreamContext for ConnectionContext {
    fn on_downstream_data(&mut self, _data_size: usize, _end_of_stream: bool) -> Action {
        // Envoy calls this for every read whether or not the plugin looks: a flag costs nothing more.
        self.data_seen = true;
        Action::Continue
    }

    fn on_log(&mut self) {
        Active::at_end(self.active.as_deref(), |settings, worker, host| {
            if let Some(json) = network::on_connection_close(settings, worker, host, self.data_seen)
            {
                emit(settings.log_level, &json, worker);
            }
        });
    }
}
