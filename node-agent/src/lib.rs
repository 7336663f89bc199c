//! # Flotilla node agent
//!
//! `flotilla-agent` runs on every device: it applies the node's desired-state
//! document with real containers and reports status.
//!
//! # Layout
//! - [`cli`]: the command line.

pub mod cli;
