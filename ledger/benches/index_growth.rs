//! What the idempotency index costs as a ledger grows: bytes written per
//! record appended (WAL frames and checkpoint copies, every merge and
//! compaction included), window by window, from an empty ledger to
//! `EVIDENT_GROWTH_ENTRIES` entries (2M; 400k with
//! `EVIDENT_BENCH_SCALE=small`).
//!
//! The run is scaled down 64-fold so that it reaches the regime a real
//! ledger reaches only past 8M entries: `merge_min` = 1,024 caps merges at
//! 16,384 rows (1M by default) and level 1 at 131,072 (8M), level 2 at
//! 1,048,576 (64M). With a single merged level, each capped merge rewrote
//! the whole of it, so bytes per record grew with the ledger; with levels
//! they stay within a constant factor of the first window, the same-run
//! baseline (a ledger too small to merge much), growing at most with the
//! number of levels.
//!
//! Prints each window and writes `target/criterion/index_growth/index_growth.json`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use evident_ledger::idindex;
use evident_ledger::store::Synchronous;
use evident_ledger::{Ledger, LedgerOptions, Submission};
use evident_verify::leaf::Record;
use evident_verify::note::SignerKey;
use rayon::prelude::*;
use serde_json::json;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `merge_min` for the run: 64 times below the default.
const MERGE_MIN: u64 = 1024;
const BATCH: u64 = 4096;
const WINDOWS: u64 = 16;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// A minimal unsigned record (~300 B leaf), as in the big-ledger build.
fn minimal(i: u64) -> Submission {
    Submission::unsigned(Record {
        id: format!("rec-{i:010}"),
        kind: "invariant_result".into(),
        producer: "legacy-batch".into(),
        at: "2026-11-21T09:30:12Z".into(),
        body: json!({
            "invariant_id": "INV-001", "severity": "P3", "status": "skip",
            "verification_command": "true", "duration_ms": 0, "run_id": "r", "reason": "bench",
        }),
    })
}

/// Bytes this process has written through system calls.
fn io_written() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    io.lines().find_map(|l| l.strip_prefix("wchar:")).and_then(|v| v.trim().parse().ok()).expect("wchar")
}

/// Copies the WAL into the database, so a window's bytes include the
/// checkpoint of what it wrote.
fn checkpoint(db: &Path) {
    let conn = rusqlite::Connection::open(db).expect("open for checkpoint");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).expect("checkpoint");
}

/// Rows per merged level: `ids`, then each level of `ids_deep`.
fn levels(db: &Path) -> Vec<u64> {
    let conn = rusqlite::Connection::open(db).expect("open");
    let ids: u64 = conn.query_row("SELECT count(*) FROM ids", [], |r| r.get(0)).expect("ids");
    let mut out = vec![ids];
    // (No `ids_deep` before schema v3: the same run on an older binary.)
    if let Ok(mut stmt) = conn.prepare("SELECT count(*) FROM ids_deep GROUP BY level ORDER BY level") {
        out.extend(stmt.query_map([], |r| r.get::<_, u64>(0)).expect("deep").map(|r| r.expect("row")));
    }
    out
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let small = std::env::var("EVIDENT_BENCH_SCALE").is_ok_and(|s| s == "small");
    let entries: u64 = std::env::var("EVIDENT_GROWTH_ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(if small {
        400_000
    } else {
        2_000_000
    });
    let dir = tempfile::tempdir_in(target_dir()).expect("tempdir");
    let db = dir.path().join("ledger.db");
    let key = SignerKey::from_seed("bench.evident/ledger", &[1; 32]).expect("key");
    let mut o = LedgerOptions::new(db.clone(), "bench.evident/ledger", key);
    o.synchronous = Synchronous::Normal;
    o.unsigned_producers = vec!["legacy-batch".into()];
    o.merge_min = MERGE_MIN;
    let l = Ledger::create(o).expect("create");
    let window = (entries / WINDOWS).max(BATCH);
    let mut rows = Vec::new();
    let mut next = 0;
    let start = Instant::now();
    while next < entries {
        let end = (next + window).min(entries);
        let before = io_written();
        let t = Instant::now();
        let mut lo = next;
        while lo < end {
            let hi = (lo + BATCH).min(end);
            let subs: Vec<Submission> = (lo..hi).into_par_iter().map(minimal).collect();
            for r in l.append_batch(subs) {
                r.expect("append");
            }
            lo = hi;
        }
        checkpoint(&db);
        let secs = t.elapsed().as_secs_f64();
        let per_record = (io_written() - before) as f64 / (end - next) as f64;
        let lv = levels(&db);
        println!(
            "index_growth: entries {next:>9}..{end:<9} {per_record:>7.0} B written per record, {:>7.0}/s, levels {lv:?}",
            (end - next) as f64 / secs
        );
        rows.push(json!({"from": next, "to": end, "written_per_record": per_record, "per_s": (end - next) as f64 / secs, "levels": lv}));
        next = end;
    }
    println!("index_growth: {entries} entries in {:.0} s", start.elapsed().as_secs_f64());
    let out = target_dir().join("criterion/index_growth");
    std::fs::create_dir_all(&out).expect("dir");
    let report = json!({
        "entries": entries, "merge_min": MERGE_MIN, "batch": BATCH, "windows": rows,
        "merge_cap": idindex::merge_cap(MERGE_MIN),
        "level_capacity": [idindex::level_capacity(MERGE_MIN, 1), idindex::level_capacity(MERGE_MIN, 2)],
    });
    std::fs::write(out.join("index_growth.json"), format!("{report:#}\n")).expect("write index_growth.json");
}
