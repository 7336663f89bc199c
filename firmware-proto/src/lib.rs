#![no_std]
#![doc = include_str!("../README.md")]
//!
//! # Layout
//! - [`msg`]: every message and its bounded fields (capacities are `pub const`s).
//! - [`frame`]: the envelope (version, kind, body, authenticator) and the
//!   only encode and decode functions.
//! - [`bounded`]: identifiers, packed string lists and fixed byte arrays
//!   that cap every field at compile time.
//! - [`samples`]: representative messages for tests, benchmarks and size budgets.
//! - [`mqtt`]: topic names (`nodes/{id}/<leaf>`) and the broker URL.
//! - [`image`]: splitting image references (`registry/repository:tag`).
//! - `mac` (feature `mac`): the per-node MAC that ends node frames.
//! - `enrol` (feature `alloc`): the enrolment request and answer (JSON).
//! - [`wire_format`]: the written-down wire format (`WIRE.md`).

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod bounded;
#[cfg(feature = "alloc")]
pub mod enrol;
pub mod frame;
pub mod image;
#[cfg(feature = "mac")]
pub mod mac;
pub mod mqtt;
pub mod msg;
pub mod samples;

#[doc = include_str!("../WIRE.md")]
pub mod wire_format {}

pub use bounded::{ByteList, Bytes, CapacityError, Name, NameError, TextList};
pub use frame::{
    DecodeError, Decoded, DesiredView, EncodeError, Items, MAC_LEN, MAX_FRAME_LEN, MessageKind, NodeFrame, NodeMessage,
    PROTOCOL_VERSION, SIGNATURE_LEN, decode_desired_frame, decode_log_request_frame, decode_node_frame,
    decode_services_frame, encode_desired_frame, encode_log_request_frame, encode_node_frame, encode_services_frame,
    peek_kind,
};
#[cfg(feature = "alloc")]
pub use frame::{
    encode_desired_frame_to_vec, encode_log_request_frame_to_vec, encode_node_frame_to_vec,
    encode_services_frame_to_vec,
};
pub use msg::*;
