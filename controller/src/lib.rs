//! # Flotilla controller
//!
//! The control plane behind the `flotilla` binary.
//!
//! # Layout
//! - [`cli`]: the command line.
//! - [`manifest`]: Kubernetes-style manifests: parsing, warnings, validation.
//! - [`object`]: objects as stored and served (Kubernetes' shape).
//! - [`store`]: the durable store trait and its redb implementation.

pub mod cli;
pub mod manifest;
pub mod object;
pub mod store;
