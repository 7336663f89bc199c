#![no_std]
//! Flotilla wire protocol.

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;
