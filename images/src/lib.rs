//! OCI image layouts for Flotilla's workloads (issue #7, in progress).
