//! Operations: what each command does, built from config, providers, the diff
//! engine and the state store. The CLI parses arguments and calls these.

pub mod plan;
pub mod validate;
