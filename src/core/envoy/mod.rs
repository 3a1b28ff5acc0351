//! Envoy's side of the plugin: the `Host` trait the core reads through, every
//! attribute it reads (decoded into typed structs), and what those facts mean
//! (identity, RBAC metadata, response flags). Nothing here decides anything.

pub(crate) mod attributes;
pub(crate) mod connection;
pub(crate) mod flags;
pub(crate) mod grpc;
pub(crate) mod headers;
pub(crate) mod host;
pub(crate) mod identity;
pub(crate) mod mesh;
pub(crate) mod rbac;
pub(crate) mod response;
pub(crate) mod source;
