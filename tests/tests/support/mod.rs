//! Helpers of the end-to-end tests (a module of `sync.rs`, not a test
//! target of its own).

pub mod cluster;
pub mod pg;
pub mod proxy;
