//! End-to-end support: a small keep-alive HTTP/1.1 client used by the load
//! generator (`hms-load`) and by tests that drive real appliance processes.

pub mod client;
