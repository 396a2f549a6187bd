//! Sluice: a durable partitioned log with WebAssembly consumer plugins.
//!
//! Dependencies point one way: `server` and `cli` use `groups`, which uses `log`; `log` knows
//! nothing of HTTP or consumer groups.

pub mod log;
