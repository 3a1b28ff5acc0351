//! The Proxy-Wasm exports (ABI 0.2.1): the context each callback is for, and its call.
//!
//! The plugin's own, not the Rust SDK's dispatcher: that one `panic!`s on a context id it
//! does not know and on a context it cannot create, and exports every callback of the ABI
//! (gRPC and HTTP-call answers the plugin never asks for), about 30 KB of module. An export
//! left out is a callback the host skips, answering `Continue` (proxy-wasm-cpp-host's
//! `context.cc`). An unknown context id here is a callback that does nothing.
#![expect(
    unsafe_code,
    reason = "`no_mangle` names the exports; no unsafe block here (those are in `abi`)"
)]

use super::abi;
use super::http::RequestContext;
use super::network::ConnectionContext;
use super::root::Root;
use crate::core::config::LogLevel;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// The ABI's `Action::Continue`: the plugin never pauses a request or a connection.
const CONTINUE: u32 = 0;

enum Context {
    Root(Root),
    Http(RequestContext),
    Connection(ConnectionContext),
}

thread_local! {
    /// The VM's live contexts, by the host's id: its roots and their streams.
    static CONTEXTS: RefCell<BTreeMap<u32, Context>> = const { RefCell::new(BTreeMap::new()) };
}

/// Runs `call` on context `id`; nothing if it is unknown (or, which the host never does, a
/// callback arrives while another runs).
fn with_context(id: u32, call: impl FnOnce(&mut Context)) {
    CONTEXTS.with(|contexts| {
        if let Ok(mut contexts) = contexts.try_borrow_mut() {
            if let Some(context) = contexts.get_mut(&id) {
                call(context);
            }
        }
    });
}

#[no_mangle]
extern "C" fn _initialize() {
    abi::run_constructors();
    // Says only that audit stopped: a panic's message may hold request bytes.
    std::panic::set_hook(Box::new(|_| {
        let _ = abi::log(
            LogLevel::Critical,
            "meshaudit: internal error; audit on this worker has stopped",
        );
    }));
}

#[no_mangle]
extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    abi::allocate_for_host(size)
}

#[no_mangle]
extern "C" fn proxy_on_context_create(context_id: u32, root_context_id: u32) {
    CONTEXTS.with(|contexts| {
        let Ok(mut contexts) = contexts.try_borrow_mut() else {
            return;
        };
        let context = match contexts.get(&root_context_id) {
            _ if root_context_id == 0 => Context::Root(Root::new(context_id)),
            Some(Context::Root(root)) if root.network() => {
                Context::Connection(ConnectionContext::new(root.active()))
            }
            Some(Context::Root(root)) => Context::Http(RequestContext::new(root.active())),
            // A stream of a root this VM does not know: one that records nothing.
            _ => Context::Http(RequestContext::new(None)),
        };
        contexts.insert(context_id, context);
    });
}

#[no_mangle]
extern "C" fn proxy_on_vm_start(_context_id: u32, _vm_configuration_size: usize) -> bool {
    true
}

#[no_mangle]
extern "C" fn proxy_on_configure(context_id: u32, plugin_configuration_size: usize) -> bool {
    let mut accepted = false;
    with_context(context_id, |context| {
        if let Context::Root(root) = context {
            accepted = root.on_configure(plugin_configuration_size);
        }
    });
    accepted
}

#[no_mangle]
extern "C" fn proxy_on_tick(context_id: u32) {
    with_context(context_id, |context| {
        if let Context::Root(root) = context {
            root.on_tick();
        }
    });
}

#[no_mangle]
extern "C" fn proxy_on_request_headers(
    context_id: u32,
    _num_headers: usize,
    _end_of_stream: bool,
) -> u32 {
    with_context(context_id, |context| {
        if let Context::Http(request) = context {
            request.on_request_headers();
        }
    });
    CONTINUE
}

#[no_mangle]
extern "C" fn proxy_on_new_connection(context_id: u32) -> u32 {
    with_context(context_id, |context| {
        if let Context::Connection(connection) = context {
            connection.on_new_connection();
        }
    });
    CONTINUE
}

#[no_mangle]
extern "C" fn proxy_on_downstream_data(
    context_id: u32,
    _data_size: usize,
    _end_of_stream: bool,
) -> u32 {
    with_context(context_id, |context| {
        if let Context::Connection(connection) = context {
            connection.on_downstream_data();
        }
    });
    CONTINUE
}

#[no_mangle]
extern "C" fn proxy_on_log(context_id: u32) {
    with_context(context_id, |context| match context {
        Context::Http(request) => request.on_log(),
        Context::Connection(connection) => connection.on_log(),
        Context::Root(_) => {}
    });
}

/// All of a context's work is done when this returns: the host need not wait for it.
#[no_mangle]
extern "C" fn proxy_on_done(context_id: u32) -> bool {
    with_context(context_id, |context| {
        if let Context::Root(root) = context {
            root.on_done();
        }
    });
    true
}

#[no_mangle]
extern "C" fn proxy_on_delete(context_id: u32) {
    CONTEXTS.with(|contexts| {
        if let Ok(mut contexts) = contexts.try_borrow_mut() {
            contexts.remove(&context_id);
        }
    });
}
