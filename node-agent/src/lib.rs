//! # Flotilla node agent
//!
//! `flotilla-agent` runs on every device: it applies the node's desired-state
//! document with real containers and reports status.
//!
//! # Layout
//! - [`cli`]: the command line; [`run`]: the main loop.
//! - [`runtime`]: the container runtime trait, its libcontainer
//!   implementation (in a helper process) and a fake for tests.
//! - [`persist`]: crash-safe files; [`logs`]: bounded container logs.
//! - [`workload`]: desired replicas -> container configs, volumes.
//! - [`image`]: image pulls, the shared layer store, container root
//!   filesystems, garbage collection under a disk budget.
//! - [`probe`]: startup, readiness and liveness probes.
//! - [`telemetry`]: cgroup and node usage for heartbeats.
//! - [`agent`]: the core: desired documents, reconcile, restart policy,
//!   local state; [`signed`]: the checks every frame the controller signs
//!   gets (signature, addressee).

pub mod agent;
pub mod channel;
pub mod claims;
pub mod cli;
pub mod enrolment;
pub mod grpc;
pub mod image;
pub mod logs;
pub mod persist;
pub mod pod;
pub mod probe;
pub mod rotation;
pub mod run;
pub mod runtime;
pub mod services;
pub mod signed;
pub mod telemetry;
pub mod tls;
pub mod volumes;
pub mod workload;
