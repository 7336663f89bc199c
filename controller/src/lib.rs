//! # Flotilla controller
//!
//! The control plane behind the `flotilla` binary.
//!
//! # Layout
//! - [`cli`]: the command line (`flotilla server`, and the operator commands
//!   as later issues add them).

pub mod cli;
