//! Operations: what each command does, built from config, providers, the diff
//! engine and the state store. The CLI parses arguments and calls these.

pub mod apply;
pub mod cutover;
pub mod metrics;
pub mod plan;
pub mod reconcile;
pub mod replay;
pub mod rollback;
pub mod snapshot;
pub mod validate;
pub mod workers;
