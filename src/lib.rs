//! stockshift: plan, apply, replay and reconcile inventory migrations between
//! commerce systems without stock glitches.
//!
//! Data flows one way:
//!
//! ```text
//! plan file ─▶ config ─▶ provider (read) ─▶ diff::engine (mapping + diff) ─▶ artifact
//!                                                                           ├─▶ render
//!                                                                           └─▶ apply ─▶ state/audit
//! ```

pub mod admin;
pub mod artifact;
pub mod cli;
pub mod config;
pub mod db;
pub mod diag;
pub mod diff;
pub mod events;
pub mod mapping;
pub mod ops;
pub mod provider;
pub mod render;
pub mod sim;
pub mod state;
