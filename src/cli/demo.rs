//! `demo`: the README's first command. Writes the demo plan and its data into a
//! fresh folder and runs the whole cutover there, so the repository is never
//! changed and the run can be explored afterwards.

use std::path::PathBuf;

use clap::Args;

use super::{GlobalArgs, Output, cutover};
use crate::render::Format;

const PLAN: &str = include_str!("../../plans/demo.yaml");
const SNAPSHOT: &str = include_str!("../../plans/demo/erp_snapshot.csv");
const TARGET_SQL: &str = include_str!("../../plans/demo/target.sql");
const EVENTS: &str = include_str!("../../plans/demo/events.jsonl");
const EVENTS_BREACH: &str = include_str!("../../plans/demo/events-breach.jsonl");

/// Arguments of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to write the demo (default: a new folder under the system's temp folder).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Deliver an order for an unmapped warehouse during the freeze: the webhook
    /// failure threshold is breached and the cutover rolls itself back.
    #[arg(long)]
    pub breach: bool,
}

/// `demo`.
pub fn run(args: DemoArgs, g: &GlobalArgs, out: &Output) -> anyhow::Result<u8> {
    let dir = match args.dir {
        Some(d) => d,
        None => {
            let stamp = jiff::Timestamp::now().as_millisecond();
            std::env::temp_dir().join(format!("stockshift-demo-{stamp}"))
        }
    };
    if dir.join("demo.yaml").exists() {
        anyhow::bail!("{} already holds a demo; pass another --dir or remove it", dir.display());
    }
    std::fs::create_dir_all(dir.join("demo"))?;
    std::fs::write(dir.join("demo.yaml"), PLAN)?;
    std::fs::write(dir.join("demo/erp_snapshot.csv"), SNAPSHOT)?;
    std::fs::write(dir.join("demo/target.sql"), TARGET_SQL)?;
    let events = dir.join("demo/events.jsonl");
    std::fs::write(&events, if args.breach { EVENTS_BREACH } else { EVENTS })?;
    let db = rusqlite::Connection::open(dir.join("demo/target.db"))?;
    db.execute_batch(TARGET_SQL)?;
    drop(db);
    out.note(&format!(
        "Demo written to {}: an ERP snapshot (CSV) moving into a store's inventory (SQLite),\nwith {} orders arriving during the freeze.\n",
        dir.display(),
        if args.breach { "a recorded batch of" } else { "recorded" }
    ));
    let args = cutover::CutoverArgs {
        plan: dir.join("demo.yaml"),
        auto_approve: true,
        rollback_on_failure: true,
        events: Some(events),
        fulfillment_failure_rate: None,
        allow_large: false,
        format: Format::Human,
    };
    let g = GlobalArgs { state: None, ..g.clone() };
    let code = cutover::run(args, &g, out)?;
    out.note(&format!(
        "\nExplore the run:\n    cd {}\n    stockshift state list demo.yaml\n    stockshift audit demo.yaml\n    stockshift reconcile demo.yaml\n    stockshift freeze status demo.yaml",
        dir.display()
    ));
    Ok(code)
}
