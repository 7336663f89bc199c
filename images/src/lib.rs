//! OCI images for Flotilla's workloads: build them from a static binary or
//! a rootfs directory, for amd64 and arm64, into an OCI image layout, and
//! read such layouts back with every blob verified.
//!
//! The output is a plain [OCI image layout]: `umoci`, `skopeo` and any OCI
//! registry client take it as is. Builds are reproducible: the same inputs
//! give the same digests.
//!
//! [OCI image layout]: https://github.com/opencontainers/image-spec/blob/main/image-layout.md
//!
//! # Layout
//!
//! - [`platform`]: the architectures images are built for (`linux/amd64`,
//!   `linux/arm64`).
//! - [`build`]: [`build::ImageBuilder`], from inputs per architecture to
//!   layers, configs, manifests and an image index in a layout.
//! - [`layout`]: [`layout::OciLayout`], a layout directory: tags, verified
//!   blob reads, resolving a tag per platform, atomic writes.
//! - [`cli`]: `flotilla image build` (and the `flotilla-image` binary):
//!   [`cli::BuildArgs`] and [`cli::run_build`].
//! - `digest` (internal): SHA-256 addressing and canonical JSON.

pub mod build;
pub mod cli;
mod digest;
pub mod layout;
pub mod platform;
