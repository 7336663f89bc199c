//! # Flotilla scheduler
//!
//! A pure function from cluster state to placements (issue #5). No I/O, no
//! clock, no tokio: it is tested and benchmarked alone.
