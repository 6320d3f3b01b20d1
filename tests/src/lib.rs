//! End-to-end support: a small keep-alive HTTP/1.1 client used by the load
//! generator (`hms-load`) and by tests that drive real appliance processes.
//!
//! - [`lossyfs`]: an in-memory FUSE filesystem that loses unsynced writes on a simulated power cut.
//! - [`skip`]: how a test that needs a missing service skips (never under `CI=true`).
//! - [`process`]: `hms-edge` and `hms-cloud` as real processes, waited for on their ready line.
//! - [`bench`](mod@bench): quantiles, medians and resident memory, as every benchmark reports them.
//! - [`or_day`]: a synthetic OR day and its charges with the truth to check an appliance against,
//!   and the evaluation of coding suggestions.

pub mod bench;
pub mod client;
pub mod lossyfs;
pub mod or_day;
pub mod process;
pub mod skip;
