//! Integration tests: one binary, one module per area.

mod util;

mod apply;
mod plan_cli;
mod render;
mod schema;
mod validate;
