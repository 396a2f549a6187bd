//! The reserved header names the engine writes on records: all begin with `sluice.`, which
//! producers and plugins should leave to the engine.
//!
//! - [`PRODUCED_BY`] (`sluice.plugin`): on every record a plugin emits, `<group>/<version>`
//!   of the plugin that produced it. The archive records the values it sees in each Parquet
//!   file's metadata as `sluice.produced_by`.
//!
//! Readers of these names (the archive, tools) take them from here, so that a name is
//! spelled once.

/// Header on every record a plugin emits: `<group>/<version>` that produced it.
pub const PRODUCED_BY: &str = "sluice.plugin";
