//! `stockshift serve PLAN.yaml [--listen ADDR]`: the webhook receiver.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::{GlobalArgs, Output, exit};
use crate::config::model::EventSourceKind;
use crate::events::server::{self, ServeOptions};
use crate::events::source::Source;

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The plan file (YAML); its `events` section lists the sources.
    pub plan: PathBuf,
    /// Address to listen on, e.g. `127.0.0.1:8088` (default: `events.listen`).
    /// Port 0 picks a free port; the address is printed on stderr.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

/// Runs `serve` until SIGINT or SIGTERM.
pub fn run(args: ServeArgs, g: &GlobalArgs, out: &Output) -> anyhow::Result<u8> {
    let Some(plan) = super::checked(&args.plan, out) else { return Ok(exit::ERROR) };
    let listen_text = match (&args.listen, &plan.config.events) {
        (Some(l), _) => l.clone(),
        (None, Some(ev)) => ev.listen.clone(),
        (None, None) => "127.0.0.1:8088".to_owned(),
    };
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        anyhow::anyhow!("invalid listen address `{listen_text}`; use host:port with an IP address, e.g. 127.0.0.1:8088")
    })?;
    let sources = Source::load_all(&plan).map_err(|e| anyhow::anyhow!("cannot start serve:\n{e}"))?;
    if sources.is_empty() {
        out.note("warning: the plan lists no events.sources; only /healthz and /metrics are served");
    }
    let queue_path = crate::events::queue_path(&plan, g.state.as_deref())?;
    out.note(&format!("Event queue: {}", queue_path.display()));
    for s in &sources {
        let kind = match s.kind {
            EventSourceKind::Shopify => "shopify",
            EventSourceKind::Standard => "standard",
        };
        out.note(&format!("Source `{}` ({kind}): POST /webhooks/{}", s.name, s.name));
    }
    server::run(ServeOptions {
        listen,
        queue_path,
        sources,
        freeze: plan.config.freeze.clone(),
        verbose: g.verbose > 0,
    })?;
    Ok(exit::OK)
}
