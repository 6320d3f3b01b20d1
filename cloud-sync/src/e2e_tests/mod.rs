//! In-process tests of the cloud over HTTP(S): sync transport (compression,
//! restore, keep-alive, TLS), DR replication between two clouds, and the
//! operator API.

mod api;
mod dr;
mod empi_model;
mod sync;
