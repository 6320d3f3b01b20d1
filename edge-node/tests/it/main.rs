//! Integration tests of the appliance: one test binary, modules by area.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

mod acceptance;
mod api;
mod charges;
mod corpus;
mod durability;
mod fleet;
mod hl7;
mod inference;
mod model_sets;
mod or;
mod patients;
mod process;
mod store;
mod support;
mod tokens;
mod uplink;
