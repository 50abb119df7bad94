//! Integration tests: one binary, one module per area.

mod util;

mod admin;
mod apply;
mod backend;
mod conformance;
mod cutover;
mod dashboards;
mod events;
mod fakes;
mod http_provider;
mod kafka;
mod magento;
mod network_source;
mod pg;
mod plan_cli;
mod postgres;
mod queue_backends;
mod reconcile;
mod render;
mod replay;
mod scale_out;
mod schema;
mod shopify;
mod simulate;
mod state_pg;
mod validate;
