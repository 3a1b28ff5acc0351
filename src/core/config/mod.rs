//! The plugin configuration: the operator's JSON (`raw`), its defaults
//! (`defaults`), and the immutable `Settings` the filter runs with (`settings`),
//! built by `validate` one section at a time.

pub(crate) mod defaults;
pub(crate) mod jsonpath;
pub(crate) mod raw;
pub(crate) mod settings;
#[cfg(test)]
mod tests;
mod validate;

pub use settings::*;
pub(crate) use validate::sha256_hex;
pub use validate::ConfigError;
