//! Integration tests of the engine: policy, resolution, parameters, limits, snapshots.

mod common;
mod execution;
mod policy;
