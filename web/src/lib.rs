//! What the appliance's (`hms-edge`) and the regional cloud's (`hms-cloud`)
//! HTTP servers share, so that both answer alike and neither depends on the
//! other:
//!
//! - [`assets`]: the pages' style sheet, script and icon, compiled in and
//!   served under content-digest names;
//! - [`chart`]: line, bar and spark charts as server-drawn SVG;
//! - [`cookie`]: the session cookie and the same-origin check of requests
//!   it authenticates;
//! - [`headers`]: Content-Security-Policy and the other security headers;
//! - [`page`]: the frame every web page shares (server-rendered HTML);
//! - [`panic`](mod@panic): the panic hook of both binaries (where and on which thread,
//!   never the message, which may quote input);
//! - [`problem`]: RFC 9457 problem documents (`application/problem+json`),
//!   the one error body every endpoint of both servers uses;
//! - [`server`]: the HTTP/1.1 server loop with header and request timeouts
//!   and connection caps;
//! - [`tls`]: the rustls server configuration from PEM files and a listener
//!   that hands axum only connections whose handshake completed.

pub mod assets;
pub mod chart;
pub mod cookie;
pub mod headers;
pub mod page;
pub mod panic;
pub mod problem;
pub mod server;
pub mod tls;

pub use problem::Problem;
