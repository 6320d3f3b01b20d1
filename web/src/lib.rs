//! What the appliance's (`hms-edge`) and the regional cloud's (`hms-cloud`)
//! HTTP servers share, so that both answer alike and neither depends on the
//! other:
//!
//! - [`problem`]: RFC 9457 problem documents (`application/problem+json`),
//!   the one error body every endpoint of both servers uses;
//! - [`tls`]: the rustls server configuration from PEM files and a listener
//!   that hands axum only connections whose handshake completed.

pub mod problem;
pub mod tls;

pub use problem::Problem;
