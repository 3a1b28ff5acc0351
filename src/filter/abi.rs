//! The Proxy-Wasm host functions the filter uses, declared here (the plugin has no
//! SDK: the Rust SDK's wrappers `panic!` on any status they do not expect and decode
//! the status into an enum, undefined behaviour for a value outside it). Every status
//! is a plain `u32` and every call answers `Option`/`Result`, so no host answer can
//! crash the VM.
//!
//! Buffers returned by the host are allocated through the exported
//! `proxy_on_memory_allocate` (`allocate_for_host`, a boxed slice forgotten), so taking
//! them back with `Vec::from_raw_parts` frees them.
#![expect(
    unsafe_code,
    reason = "the one place that declares and calls the host ABI"
)]

const OK: u32 = 0;
const CAS_MISMATCH: u32 = 8;

#[derive(Clone, Copy)]
#[repr(u32)]
pub(super) enum MapType {
    RequestHeaders = 0,
    ResponseHeaders = 2,
    ResponseTrailers = 3,
}

#[derive(Clone, Copy)]
#[repr(u32)]
pub(super) enum BufferType {
    PluginConfiguration = 7,
}

pub(super) use crate::core::config::LogLevel;
use crate::core::config::LogThreshold;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        argument_data: *const u8,
        argument_size: usize,
        return_results_data: *mut *mut u8,
        return_results_size: *mut usize,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_metric_id: *mut u32,
    ) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
}

// WASI's, which Envoy's host implements with BoringSSL's `RAND_bytes` (proxy-wasm-cpp-host
// `exports.cc`); std already imports it for its hash keys.
#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn random_get(buf: *mut u8, buf_len: usize) -> u16;
}

#[derive(Clone, Copy)]
#[repr(u32)]
pub(super) enum MetricType {
    Counter = 0,
    Gauge = 1,
}

/// Calls one of Envoy's foreign functions (`expr_create`, `expr_evaluate`…).
pub(super) fn foreign(name: &str, argument: &[u8]) -> Option<Vec<u8>> {
    let (mut data, mut size) = (std::ptr::null_mut(), 0usize);
    // SAFETY: `name` and `argument` outlive the call; out-pointers are valid.
    unsafe {
        let status = proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            argument.as_ptr(),
            argument.len(),
            &mut data,
            &mut size,
        );
        (status == OK).then(|| take_buffer(data, size))
    }
}

pub(super) fn set_tick_period_ms(period: u32) -> bool {
    // SAFETY: no pointers.
    unsafe { proxy_set_tick_period_milliseconds(period) == OK }
}

/// Defines (or finds) a metric; Envoy shows it under the `wasmcustom.` namespace.
pub(super) fn define_metric(metric_type: MetricType, name: &str) -> Option<u32> {
    let mut id = 0u32;
    // SAFETY: `name` outlives the call; the out-pointer is valid.
    let status =
        unsafe { proxy_define_metric(metric_type as u32, name.as_ptr(), name.len(), &mut id) };
    (status == OK).then_some(id)
}

pub(super) fn record_metric(id: u32, value: u64) {
    // SAFETY: no pointers. A failed update has nowhere to be reported.
    unsafe {
        proxy_record_metric(id, value);
    }
}

pub(super) fn increment_metric(id: u32, delta: u64) {
    // SAFETY: no pointers. A failed update has nowhere to be reported.
    unsafe {
        proxy_increment_metric(id, i64::try_from(delta).unwrap_or(i64::MAX));
    }
}

/// This VM's linear memory, in bytes: it only grows, so a leak shows here.
pub(super) fn vm_memory_bytes() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        (core::arch::wasm32::memory_size(0) as u64) * 65_536
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0
    }
}

/// The host allocates the buffers it answers with here (exported by `dispatch`): a boxed
/// slice of exactly `size` bytes, which `take_buffer` takes back as a `Vec`. Left
/// uninitialised: the host writes every byte before the VM reads any.
pub(super) fn allocate_for_host(size: usize) -> *mut u8 {
    let mut buffer: Vec<std::mem::MaybeUninit<u8>> = Vec::with_capacity(size);
    // SAFETY: the capacity is `size`, and `MaybeUninit` needs no initialisation.
    unsafe { buffer.set_len(size) };
    Box::into_raw(buffer.into_boxed_slice()).cast::<u8>()
}

/// Runs the module's static constructors (wasi-libc's among them), as a WASI reactor must
/// before anything else; `_initialize` calls it.
pub(super) fn run_constructors() {
    #[cfg(target_os = "wasi")]
    {
        extern "C" {
            fn __wasm_call_ctors();
        }
        // SAFETY: the linker's constructor list, called once, first, as the reactor ABI says.
        unsafe { __wasm_call_ctors() };
    }
}

/// Takes ownership of a host-allocated buffer.
///
/// # Safety
/// `data` must be null or a buffer of `size` bytes the host allocated through
/// `allocate_for_host` for this call.
unsafe fn take_buffer(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        Vec::from_raw_parts(data, size, size)
    }
}

/// Writes to Envoy's log; `false` when the host refused it.
pub(super) fn log(level: LogLevel, message: &str) -> bool {
    // SAFETY: pointer and length describe `message`, which outlives the call.
    unsafe { proxy_log(level.code(), message.as_ptr(), message.len()) == OK }
}

/// What Envoy's log shows of this plugin's lines; `None` if the host would not say.
pub(super) fn log_threshold() -> Option<LogThreshold> {
    let mut code = u32::MAX;
    // SAFETY: the host writes one u32 through a valid pointer.
    let status = unsafe { proxy_get_log_level(&mut code) };
    (status == OK).then(|| LogThreshold::from_code(code))
}

pub(super) fn now_unix_nanos() -> Option<u64> {
    let mut nanos = 0u64;
    // SAFETY: the host writes one u64 through a valid pointer.
    let status = unsafe { proxy_get_current_time_nanoseconds(&mut nanos) };
    (status == OK).then_some(nanos)
}

/// Eight bytes from the host's random source; `None` if it refused.
pub(super) fn random_u64() -> Option<u64> {
    let mut bytes = [0u8; 8];
    // SAFETY: the host writes at most `bytes.len()` bytes into the array.
    let errno = unsafe { random_get(bytes.as_mut_ptr(), bytes.len()) };
    (errno == 0).then(|| u64::from_le_bytes(bytes))
}

pub(super) fn buffer(buffer_type: BufferType, max_size: usize) -> Option<Vec<u8>> {
    let (mut data, mut size) = (std::ptr::null_mut(), 0usize);
    // SAFETY: out-pointers are valid; the returned buffer is taken back below.
    unsafe {
        if proxy_get_buffer_bytes(buffer_type as u32, 0, max_size, &mut data, &mut size) == OK {
            Some(take_buffer(data, size))
        } else {
            None
        }
    }
}

pub(super) fn header(map: MapType, name: &str) -> Option<Vec<u8>> {
    let (mut data, mut size) = (std::ptr::null_mut(), 0usize);
    // SAFETY: `name` outlives the call; out-pointers are valid.
    unsafe {
        if proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), &mut data, &mut size)
            == OK
        {
            Some(take_buffer(data, size))
        } else {
            None
        }
    }
}

/// The whole map, serialised (see `core::headers::HeaderMap`).
pub(super) fn header_map(map: MapType) -> Option<Vec<u8>> {
    let (mut data, mut size) = (std::ptr::null_mut(), 0usize);
    // SAFETY: out-pointers are valid; the returned buffer is taken back below.
    unsafe {
        if proxy_get_header_map_pairs(map as u32, &mut data, &mut size) == OK {
            Some(take_buffer(data, size))
        } else {
            None
        }
    }
}

/// An attribute by its path segments (joined with NUL, as the ABI expects).
pub(super) fn property(path: &[&str]) -> Option<Vec<u8>> {
    let serialized = path.join("\0");
    let (mut data, mut size) = (std::ptr::null_mut(), 0usize);
    // SAFETY: `serialized` outlives the call; out-pointers are valid.
    unsafe {
        if proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut size) == OK {
            if data.is_null() {
                None
            } else {
                Some(take_buffer(data, size))
            }
        } else {
            None
        }
    }
}

/// Stores a value as the stream's filter state `wasm.<name>` (Envoy's access loggers can read it).
pub(super) fn set_filter_state(name: &str, value: &[u8]) -> bool {
    // SAFETY: `name` and `value` outlive the call.
    unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) == OK }
}

/// A shared-data value and its CAS token (0: the key does not exist yet).
pub(super) fn shared_data(key: &str) -> (Option<Vec<u8>>, u32) {
    let (mut data, mut size, mut cas) = (std::ptr::null_mut(), 0usize, 0u32);
    // SAFETY: `key` outlives the call; out-pointers are valid.
    unsafe {
        if proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) == OK {
            (Some(take_buffer(data, size)), cas)
        } else {
            (None, 0)
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum SetSharedError {
    CasMismatch,
    Other(u32),
}

pub(super) fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), SetSharedError> {
    // SAFETY: `key` and `value` outlive the call.
    let status =
        unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) };
    match status {
        OK => Ok(()),
        CAS_MISMATCH => Err(SetSharedError::CasMismatch),
        other => Err(SetSharedError::Other(other)),
    }
}
