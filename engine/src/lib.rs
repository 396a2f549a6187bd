//! Sluice: a durable partitioned log with WebAssembly consumer plugins.
//!
//! Dependencies point one way: `cli` and `server` use `groups`, which uses `log`; `log` knows
//! nothing of HTTP or consumer groups.

pub mod archive;
pub mod cli;
pub mod config;
pub mod crash_point;
pub mod groups;
pub mod log;
pub mod runtime;
pub mod server;
pub mod txn;
