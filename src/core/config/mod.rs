//! The plugin configuration: the operator's JSON (`raw`), its defaults
//! (`defaults`), and the immutable `Settings` the filter runs with (`settings`),
//! built by `validate` one section at a time.

pub(crate) mod defaults;
#[cfg(not(target_arch = "wasm32"))]
mod every_error;
pub(crate) mod jsonpath;
pub(crate) mod raw;
pub(crate) mod settings;
#[cfg(test)]
mod tests;
mod validate;

#[cfg(not(target_arch = "wasm32"))]
pub use every_error::config_errors;
pub use settings::*;
pub(crate) use validate::sha256_hex;
pub use validate::ConfigError;
