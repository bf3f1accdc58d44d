//! Evident's side of the pymerkle comparison (scripts/peer_pymerkle.py):
//! append N entries of ~500 bytes, then 1,000 inclusion proofs and 1,000
//! consistency proofs at the full size. Writes JSON to the path in
//! EVIDENT_PEER_OUT (default target/peer/evident.json). N from EVIDENT_PEER_N.

use std::time::Instant;

use evident_ledger::{Ledger, LedgerOptions, Submission};
use evident_verify::leaf::Record;
use evident_verify::note::SignerKey;
use serde_json::json;

/// mimalloc when the `mimalloc` feature is on (the default): appends parse
/// records into many small allocations across threads, which glibc's
/// allocator serves slowly.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let n: u64 = std::env::var("EVIDENT_PEER_N").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let out = std::env::var("EVIDENT_PEER_OUT").unwrap_or_else(|_| "target/peer/evident.json".into());
    let dir = tempfile::tempdir()?;
    let key = SignerKey::from_seed("peer.example/ledger", &[5; 32])?;
    let mut opts = LedgerOptions::new(dir.path().join("peer.db"), "peer.example/ledger", key);
    opts.unsigned_producers = vec!["legacy-batch".into()];
    let ledger = Ledger::create(opts)?;
    let rec = |i: u64| Record {
        id: format!("rec-{i}"),
        kind: "invariant_result".into(),
        producer: "legacy-batch".into(),
        at: "2026-11-21T09:30:12Z".into(),
        body: json!({"invariant_id": "INV-014", "severity": "P0", "status": "pass",
            "verification_command": format!("scripts/audit/verify_inv_014.sh {}", "x".repeat(260)),
            "evidence_hash": format!("sha256:{}", "ab".repeat(32)), "duration_ms": 412, "run_id": format!("ci-run-{i}")}),
    };
    let t0 = Instant::now();
    let mut i = 0;
    while i < n {
        let batch: Vec<Submission> = (i..(i + 10_000).min(n)).map(|j| Submission::unsigned(rec(j))).collect();
        for r in ledger.append_batch(batch) {
            r?;
        }
        i += 10_000;
    }
    let append = t0.elapsed().as_secs_f64();
    let size = ledger.size()?;
    let mut x = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let t1 = Instant::now();
    for _ in 0..1000 {
        ledger.prove_inclusion(next() % size, size)?;
    }
    let inclusion = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    for _ in 0..1000 {
        ledger.prove_consistency(1 + next() % (size - 1), size)?;
    }
    let consistency = t2.elapsed().as_secs_f64();
    if let Some(p) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(p)?;
    }
    let v = json!({"entries": size, "append_s": append, "inclusion_1000_s": inclusion, "consistency_1000_s": consistency,
                   "avg_entry_bytes": ledger.leaf_bytes_total()? as f64 / size as f64});
    std::fs::write(&out, v.to_string())?;
    println!("{v}");
    Ok(())
}
