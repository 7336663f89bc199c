//! # Flotilla controller
//!
//! The control plane behind the `flotilla` binary.
//!
//! # Layout
//! - [`cli`]: the command line; [`commands`]: what its client commands do;
//!   [`client`]: their HTTP client.
//! - [`manifest`]: Kubernetes-style manifests: parsing, warnings, validation.
//! - [`object`]: objects as stored and served (Kubernetes' shape);
//!   [`status`]: their status fields; [`selector`]: label selectors.
//! - [`store`]: the durable store trait and its redb implementation.
//! - [`api`]: the HTTP API; [`server`]: `flotilla server` start-up.
//! - [`reconcile`]: workloads -> replicas -> placements.

pub mod api;
pub mod cli;
pub mod client;
pub mod commands;
pub mod manifest;
pub mod object;
pub mod reconcile;
pub mod selector;
pub mod server;
pub mod status;
pub mod store;
