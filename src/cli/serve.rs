//! `stockshift serve PLAN.yaml [--listen ADDR]`: the webhook receiver.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::{GlobalArgs, Output, exit};
use crate::events::kafka::{Consumers, KafkaSource};
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
    let kafka = KafkaSource::from_plan(&plan);
    if sources.is_empty() && kafka.is_empty() {
        out.note("warning: the plan lists no events.sources; only /healthz and /metrics are served");
    }
    let queue_at = plan.queue_at(g.state.as_deref())?;
    out.note(&format!("Event queue: {}", crate::events::describe_queue(&queue_at)));
    let queue = crate::events::queue_opener(&plan, queue_at);
    for s in &sources {
        out.note(&format!("Source `{}` ({}): POST /webhooks/{}", s.name, s.kind.as_str(), s.name));
    }
    for k in &kafka {
        let brokers = k.brokers.join(",");
        out.note(&format!("Source `{}` (kafka): topic {} on {brokers}, group {}", k.name, k.topic, k.group));
    }
    let freeze = plan.config.freeze.clone();
    let state_dir = plan.state_dir(g.state.as_deref());
    let state = plan.state_at(g.state.as_deref())?;
    let admin = crate::admin::mount(plan, state_dir, queue.clone(), listen);
    if let Some(note) = &admin.note {
        out.note(note);
    }
    let consumers = Consumers::start(kafka, queue.clone())?;
    let served = server::run(ServeOptions {
        listen,
        queue,
        sources,
        freeze,
        verbose: g.verbose > 0,
        admin: admin.router,
        state,
    });
    consumers.stop();
    served?;
    Ok(exit::OK)
}
