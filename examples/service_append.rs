//! A service appending evidence through the library, with retries that are
//! safe: the same record sent again returns the first receipt.
//!
//! Run: `cargo run --example service_append [DIR]` (default ./evident-demo/service).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use evident_examples::demo::{self, h};
use evident_ledger::{AppendError, Ledger, LedgerOptions, Signer, Submission};
use serde_json::json;

/// Appends with bounded retries. A retry after a timeout or crash is safe:
/// the ledger recognises the same (producer, id) and returns the first
/// receipt instead of storing a second copy.
fn append_with_retry(ledger: &Ledger, sub: &Submission) -> Result<evident_ledger::AppendReceipt> {
    let mut delay = std::time::Duration::from_millis(50);
    for attempt in 1..=5 {
        match ledger.append(sub.clone()) {
            Ok(r) => return Ok(r),
            // Refusals are final: the record itself is wrong.
            Err(e @ (AppendError::Schema(_) | AppendError::Conflict { .. } | AppendError::Signature(_))) => {
                return Err(e).context("record refused");
            }
            Err(e) if attempt < 5 => {
                eprintln!("attempt {attempt} failed ({e}); retrying in {delay:?}");
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(e) => return Err(e).context("giving up after 5 attempts"),
        }
    }
    unreachable!("the loop returns")
}

/// Runs the example in `dir` and returns the number of entries.
pub fn run(dir: &Path) -> Result<u64> {
    std::fs::create_dir_all(dir)?;
    let db = dir.join("service-ledger.db");
    let ledger_key = demo::demo_key("service.example/ledger");
    let opts = LedgerOptions::new(&db, "service.example/ledger", ledger_key);
    let ledger = if db.exists() { Ledger::open(opts)? } else { Ledger::create(opts)? };

    // The operator registers the service's key once (`evident key add`).
    let key = demo::demo_key("ci-invariants");
    if ledger.key_history()?.all().all(|(_, k)| k.key != key.verifier()) {
        ledger.add_key("ci-invariants", &key.verifier(), Some("2020-01-01T00:00:00Z"))?;
    }
    let signer = Signer::new(key)?;

    let mut last = None;
    for inv in ["INV-014", "INV-105", "INV-115"] {
        let sub = signer.sign(
            &format!("nightly-{inv}"),
            "invariant_result",
            "2026-11-21T01:00:04Z",
            json!({
                "invariant_id": inv, "severity": "P0", "status": "pass",
                "verification_command": "scripts/audit/run_invariants.sh", "evidence_hash": h(inv),
                "duration_ms": 412, "run_id": "ci-2026-11-21-0100"
            }),
        )?;
        let first = append_with_retry(&ledger, &sub)?;
        // Simulate a lost response: the service sends the same record again.
        let again = append_with_retry(&ledger, &sub)?;
        assert_eq!((first.seq, &first.leaf_hash), (again.seq, &again.leaf_hash));
        println!(
            "{inv}: seq {} leaf {} (retry returned the same receipt: {})",
            first.seq, first.leaf_hash, again.duplicate
        );
        last = Some(first);
    }
    // A receipt file anyone can check offline with the ledger's public key.
    if let Some(r) = last {
        let receipt = ledger.receipt(r.seq, None)?;
        let path = dir.join("receipt.json");
        std::fs::write(&path, serde_json::to_string_pretty(&receipt)?)?;
        println!("receipt for seq {} written to {}", r.seq, path.display());
        println!("check it: evident-verify receipt {} --key {}", path.display(), ledger.verifier_key());
    }
    Ok(ledger.size()?)
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let dir = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("evident-demo/service"));
    let n = run(&dir)?;
    println!("ledger at {} holds {n} entries", dir.display());
    Ok(())
}
