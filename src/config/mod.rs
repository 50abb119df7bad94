//! The plan file: its types, its schema, loading it with located diagnostics,
//! and the checks that turn it into a runnable [`check::Plan`].

pub mod check;
pub mod load;
pub mod model;
pub mod schema;
pub mod spans;
