//! In-process tests of the cloud over HTTP(S): sync transport (compression,
//! restore, keep-alive, TLS), DR replication between two clouds, the
//! operator API, and a served cloud stopping with its background tasks.

mod api;
mod cloud;
mod dr;
mod empi_model;
mod service;
mod sync;
