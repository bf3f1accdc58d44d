//! An AI agent proposes an action, a human approves it, the gateway
//! authorizes it with a one-time token, the adapter executes it, and the
//! agent attests with provenance: five services, one linked story
//! (decision_hash, token_jti, authorization_id, approval_id), each step
//! a signed, provable ledger entry.
//!
//! Run: `cargo run --example ai_approval_flow [DIR]` (default ./evident-demo/flow).

use std::path::{Path, PathBuf};

use anyhow::Result;
use evident_examples::demo::{self, Faults, Producers, SimClock};
use evident_ledger::Ledger;
use evident_verify::leaf::Entry;
use evident_verify::receipt::Receipt;
use evident_verify::ts::Timestamp;

/// Runs the flow in `dir`; returns the kinds recorded, in order.
pub fn run(dir: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let db = dir.join("flow-ledger.db");
    let _ = std::fs::remove_file(&db);
    let clock = SimClock::new(Timestamp::from_datetime(chrono::Utc::now()));
    let ledger =
        Ledger::create(demo::options(&db, "flow.example/ledger", demo::demo_key("flow.example/ledger"), &clock))?;
    let producers = Producers::register(&ledger)?;
    let receipts = demo::agent_action(&ledger, &clock, &producers, "demo", 1, Faults::default())?;
    let mut kinds = Vec::new();
    for r in &receipts {
        // Every step is provable offline from the ledger key alone.
        let file = serde_json::to_vec(&ledger.receipt(r.seq, None)?)?;
        let v = Receipt::parse(&file)?.verify(&[ledger.verifier_key()], Some("flow.example/ledger"))?;
        let e: Entry = v.entry;
        let b = &e.rec.body;
        let link = |f: &str| {
            b.get(f).and_then(|v| v.as_str()).map(|s| format!(" {f}={}", &s[..s.len().min(20)])).unwrap_or_default()
        };
        println!(
            "seq {:>2} {:<15} by {:<17}{}{}{}{}",
            e.seq,
            e.rec.kind,
            e.rec.producer,
            link("approval_id"),
            link("authorization_id"),
            link("token_jti"),
            link("decision_hash")
        );
        kinds.push(e.rec.kind);
    }
    println!("every receipt verified against checkpoint size {}", ledger.size()?);
    Ok(kinds)
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let dir = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("evident-demo/flow"));
    run(&dir)?;
    Ok(())
}
