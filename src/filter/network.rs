//! A downstream connection, in network-filter mode (root id `network`).

use super::active::Active;
use super::emit::emit;
use super::host::{forget_connection_peer, remember_connection_peer};
use crate::core::network;
use proxy_wasm::traits::{Context, StreamContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

/// A downstream connection, in network-filter mode.
pub(super) struct ConnectionContext {
    pub(super) active: Option<Rc<Active>>,
    /// Data reached the filter: on a TLS listener, the handshake completed.
    pub(super) data_seen: bool,
    /// The connection whose peer this context handed over to the VM's HTTP streams.
    pub(super) remembered: Option<u64>,
}

impl Context for ConnectionContext {}

impl StreamContext for ConnectionContext {
    fn on_new_connection(&mut self) -> Action {
        self.remembered = remember_connection_peer();
        Action::Continue
    }

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
        if let Some(id) = self.remembered.take() {
            forget_connection_peer(id);
        }
    }
}
