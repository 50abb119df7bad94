//! Integration tests: one binary, one module per area.

mod util;

mod plan_cli;
mod render;
mod schema;
mod validate;
