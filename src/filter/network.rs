//! A downstream connection, in network-filter mode (root id `network`).

use super::active::Active;
use super::emit::emit;
use super::host::{forget_connection_peer, remember_connection_peer};
use crate::core::network;
use std::rc::Rc;

/// A downstream connection, in network-filter mode.
pub(super) struct ConnectionContext {
    active: Option<Rc<Active>>,
    /// Data reached the filter: on a TLS listener, the handshake completed.
    data_seen: bool,
    /// The connection whose peer this context handed over to the VM's HTTP streams.
    remembered: Option<u64>,
}

impl ConnectionContext {
    pub(super) fn new(active: Option<Rc<Active>>) -> Self {
        Self {
            active,
            data_seen: false,
            remembered: None,
        }
    }

    pub(super) fn on_new_connection(&mut self) {
        self.remembered = remember_connection_peer();
    }

    pub(super) fn on_downstream_data(&mut self) {
        // A flag is all a read costs: the data is never looked at.
        self.data_seen = true;
    }

    pub(super) fn on_log(&mut self) {
        Active::run(self.active.as_deref(), |settings, worker, host| {
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
