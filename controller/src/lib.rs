//! # Flotilla controller
//!
//! The control plane behind the `flotilla` binary.
//!
//! # Layout
//! - [`cli`]: the command line; [`commands`]: what its client commands do
//!   ([`rollout_cmd`]: `flotilla rollout`; [`node_cmd`]: `flotilla node`);
//!   [`client`]: their HTTP client.
//! - [`manifest`]: Kubernetes-style manifests: parsing, warnings, validation.
//! - [`object`]: objects as stored and served (Kubernetes' shape);
//!   [`status`]: their status fields; [`selector`]: label selectors.
//! - [`store`]: the durable store trait and its redb implementation.
//! - [`api`]: the HTTP API; [`server`]: `flotilla server` start-up.
//! - [`controllers`]: the pure steps, one per concern (workloads ->
//!   replicas -> placements, image pins, garbage), with the table of which
//!   writes what; [`reconcile`]: the loop that runs them over the store;
//!   [`pinning`]: resolving images for the pinning step; [`events`]: what
//!   happened to objects and why.
//! - [`fleet`]: the MQTT control channel to the nodes.

pub mod api;
pub mod cli;
pub mod client;
pub mod commands;
pub mod controllers;
pub mod events;
pub mod fleet;
pub mod image_cmd;
pub mod manifest;
pub mod node_cmd;
pub mod object;
pub mod pinning;
pub mod progress;
pub mod reconcile;
pub mod registry;
pub mod replica_spec;
pub mod rollout_cmd;
pub mod selector;
pub mod server;
pub mod space;
pub mod status;
pub mod store;
pub mod tls;
