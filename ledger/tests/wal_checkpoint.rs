//! The WAL is checkpointed into the database file as appends go (SQLite's
//! automatic checkpoint, at 1,000 pages of 16 KiB, helped during a
//! pipelined `append_batch` by the preparing thread's checkpoints), and
//! stays bounded under sustained appends. (A checkpoint thread was tried and dropped:
//! docs/perf/README.md, fifth round.)

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use evident_ledger::Submission;
use evident_ledger::verify_db::verify_db;
use evident_verify::leaf::Record;

const MIB: u64 = 1024 * 1024;

/// An unsigned invariant_result of about 4.5 KB.
fn big(n: usize) -> Submission {
    let mut body = example("invariant_result", 0);
    body["run_id"] = format!("ci-run-{n}").into();
    body["verification_command"] = format!("psql -f gate.sql{}", " --strict".repeat(450)).into();
    Submission::unsigned(Record {
        id: format!("big-{n}"),
        kind: "invariant_result".into(),
        producer: "legacy-batch".into(),
        at: "2026-11-21T09:30:12Z".into(),
        body,
    })
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn append(l: &evident_ledger::Ledger, from: usize, n: usize) {
    for r in l.append_batch((from..from + n).map(big).collect()) {
        r.expect("appended");
    }
}

/// One batch of ~22 MiB (past 1,000 pages of 16 KiB): its pages reach the
/// database file.
#[test]
fn a_long_wal_is_checkpointed() {
    let dir = tempfile::tempdir().expect("dir");
    let l = new_ledger(dir.path());
    let db = dir.path().join("ledger.db");
    append(&l, 0, 5_000);
    let deadline = Instant::now() + Duration::from_secs(30);
    while len(&db) < 16 * MIB {
        assert!(Instant::now() < deadline, "not checkpointed: database file {} bytes", len(&db));
        std::thread::sleep(Duration::from_millis(20));
    }
    verify_db(&l, |_, _| {}).expect("verify-db");
}

/// ~90 MiB appended in one call, its commits following each other: the
/// WAL, watched from another thread, stays far below that.
#[test]
fn sustained_appends_keep_the_wal_bounded() {
    let dir = tempfile::tempdir().expect("dir");
    let l = new_ledger(dir.path());
    let db = dir.path().join("ledger.db");
    let wal = dir.path().join("ledger.db-wal");
    let done = std::sync::atomic::AtomicBool::new(false);
    let longest = std::thread::scope(|s| {
        let watch = s.spawn(|| {
            let mut longest = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                longest = longest.max(len(&wal));
                std::thread::sleep(Duration::from_millis(2));
            }
            longest
        });
        append(&l, 0, 20_000);
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        watch.join().expect("watcher")
    });
    assert!(len(&db) > 64 * MIB, "the entries reached the database file ({} bytes)", len(&db));
    assert!(longest <= 48 * MIB, "the WAL grew to {longest} bytes");
    assert_eq!(l.size().expect("size"), 20_001, "every record and the key event are in");
}
