//! # Flotilla controller
//!
//! The control plane behind the `flotilla` binary.
//!
//! # Layout
//! - [`cli`]: the command line (`flotilla server`, and the operator commands
//!   as later issues add them).
//! - [`manifest`]: Kubernetes-style manifests: parsing, warnings, validation.

pub mod cli;
pub mod manifest;
