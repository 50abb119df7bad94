//! Integration tests: one binary, one module per area.

mod util;

mod apply;
mod cutover;
mod dashboards;
mod events;
mod plan_cli;
mod reconcile;
mod render;
mod replay;
mod schema;
mod simulate;
mod validate;
