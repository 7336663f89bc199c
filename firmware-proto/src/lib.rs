#![no_std]
#![doc = include_str!("../README.md")]
//!
//! # Layout
//! - [`msg`]: every message and its bounded fields (capacities are `pub const`s).
//! - [`frame`]: the envelope (version, kind, body, authenticator), the
//!   [`Message`] trait that ties each message type to its kind, and the
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
#[cfg(feature = "alloc")]
pub mod heap;
pub mod image;
#[cfg(feature = "mac")]
pub mod mac;
pub mod mqtt;
pub mod msg;
#[cfg(feature = "alloc")]
pub mod pod;
pub mod samples;
#[cfg(feature = "seal")]
pub mod seal;

#[doc = include_str!("../WIRE.md")]
pub mod wire_format {}

pub use bounded::{ByteList, Bytes, CapacityError, Name, NameError, TextList};
pub use frame::{
    DecodeError, Decoded, DesiredView, EncodeError, Items, MAC_LEN, MAX_ANY_FRAME_LEN, MAX_CONFIG_FRAME_LEN,
    MAX_FRAME_LEN, Message, MessageKind, NodeFrame, NodeMessage, PROTOCOL_VERSION, SIGNATURE_LEN, decode_desired_frame,
    decode_node_frame, decode_signed, encode_node, encode_node_frame, encode_signed, peek_kind,
};
#[cfg(feature = "alloc")]
pub use frame::{encode_node_frame_to_vec, encode_node_to_vec, encode_signed_to_vec};
pub use msg::*;
