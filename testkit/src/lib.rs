//! What every Herald test suite needs to run a real `herald serve`: start
//! it on port 0, learn where it listens from its ready line (stdout, see
//! `protocol-spec` §15.7) instead of scraping its logs, keep its output for
//! failure messages, signal it and wait for it with a deadline; and start
//! a real `nats-server` on a port known to be its own.
//!
//! The suites (`broker/tests`, `clients/rust/tests`) keep their own `Node`
//! types on top of [`launch`]: they differ in how they restart a node, not
//! in how they start one.

mod nats;
mod process;
mod ready;

pub use nats::{nats_server_bin, start_nats, NatsStartError, StartedNats};
pub use process::{launch, signal, wait_timeout, LaunchError, Launched, Log};
pub use ready::Ready;
