//! In-process tests of the cloud over HTTP(S): sync transport (compression,
//! restore, keep-alive, TLS), DR replication between two clouds, the
//! operator API and its tokens (scopes, revocation, expiry, audited
//! re-keying and EMPI reads), a served cloud stopping with its
//! background tasks, and the fleet channel against a real MQTT broker
//! ([`fleet`]).
//!
//! What reaches the hospital logs runs on both store backends: a case
//! `async fn name(backend: Backend)` becomes the tests `name::sqlite` and
//! `name::postgres` ([`on_each_backend`]). The EMPI, the downlink, tokens
//! and enrolments live in SQLite files whatever the backend, so the tests
//! of those alone run once.

/// Runs each async case `$case(backend)` as two tests, `$case::sqlite` and
/// `$case::postgres`, under the test attribute given. A case starts with
/// `if !available(backend) { return; }` (a PostgreSQL server that cannot
/// be reached is a visible skip, and a failure under `CI=true`).
macro_rules! on_each_backend {
    (#[$test:meta] $($case:ident),+ $(,)?) => { $(
        mod $case {
            #[$test]
            async fn sqlite() {
                super::$case(crate::testkit::Backend::Sqlite).await
            }

            #[$test]
            async fn postgres() {
                super::$case(crate::testkit::Backend::Postgres).await
            }
        }
    )+ };
}

mod api;
mod cloud;
mod dr;
mod empi_model;
mod fleet;
mod gate;
mod service;
mod sync;
mod tokens;
