//! Crash and multi-process durability on real SQLite files. Children are
//! this same test binary re-run in "child" mode, appending from several
//! threads and printing each receipt only after `append` returned it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use evident_ledger::Ledger;
use evident_ledger::verify_db::verify_db;
use evident_verify::hash::leaf_hash;

const CHILD: &str = "EVIDENT_TEST_CHILD_DIR";

/// Ledger options for these tests: the smallest `merge_min`, so that the
/// idempotency index merges every few commits and compacts its levels every
/// few hundred entries, in the children being killed and in the two
/// processes alike.
fn compacting_options(dir: &std::path::Path) -> evident_ledger::LedgerOptions {
    let mut o = options(dir);
    o.merge_min = 1;
    o
}

/// Rows in the index's deeper levels (compactions have run).
fn deep_rows(dir: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open(dir.join("ledger.db")).expect("open db");
    c.query_row("SELECT count(*) FROM ids_deep", [], |r| r.get(0)).expect("count")
}

/// Child mode: appends from `THREADS` threads until killed or `COUNT` each.
#[test]
fn child_appender() {
    let Ok(dir) = std::env::var(CHILD) else { return };
    let prefix = std::env::var("EVIDENT_TEST_PREFIX").expect("prefix");
    let threads: usize = std::env::var("EVIDENT_TEST_THREADS").expect("threads").parse().expect("number");
    let count: usize = std::env::var("EVIDENT_TEST_COUNT").expect("count").parse().expect("number");
    let l = Ledger::open(compacting_options(std::path::Path::new(&dir))).expect("open ledger");
    if let Ok(n) = std::env::var("EVIDENT_TEST_BATCH") {
        // One `append_batch` of n records; every receipt printed after it returns.
        let n: usize = n.parse().expect("number");
        let subs = (0..n)
            .map(|i| {
                let id = format!("{prefix}-batch-{i}");
                let mut body = example("invariant_result", 0);
                body["run_id"] = serde_json::json!(id);
                signer().sign(&id, "invariant_result", "2026-11-21T09:30:12Z", body).expect("sign")
            })
            .collect();
        use std::io::Write;
        let mut o = std::io::stdout().lock();
        for (i, r) in l.append_batch(subs).into_iter().enumerate() {
            let r = r.expect("append");
            writeln!(o, "R {} {} {prefix}-batch-{i}", r.seq, r.leaf_hash).expect("write");
        }
        o.flush().expect("flush");
        return;
    }
    let out = Arc::new(Mutex::new(std::io::stdout()));
    std::thread::scope(|s| {
        for t in 0..threads {
            let (l, out, prefix) = (l.clone(), out.clone(), prefix.clone());
            s.spawn(move || {
                let mut i = 0;
                while count == 0 || i < count {
                    let id = format!("{prefix}-{t}-{i}");
                    let mut body = example("invariant_result", 0);
                    body["run_id"] = serde_json::json!(id);
                    let sub = signer().sign(&id, "invariant_result", "2026-11-21T09:30:12Z", body).expect("sign");
                    let r = l.append(sub).expect("append");
                    use std::io::Write;
                    let mut o = out.lock().expect("stdout");
                    writeln!(o, "R {} {} {id}", r.seq, r.leaf_hash).expect("write");
                    o.flush().expect("flush");
                    i += 1;
                }
            });
        }
    });
}

fn spawn_child(dir: &std::path::Path, prefix: &str, threads: usize, count: usize) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_appender", "--nocapture", "--test-threads=1"])
        .env(CHILD, dir)
        .env("EVIDENT_TEST_PREFIX", prefix)
        .env("EVIDENT_TEST_THREADS", threads.to_string())
        .env("EVIDENT_TEST_COUNT", count.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child")
}

/// Receipts a child printed: (seq, leaf hash, id).
fn collect(child: &mut Child) -> std::thread::JoinHandle<Vec<(u64, String, String)>> {
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| {
                // libtest may print "test child_appender ... " before the first line.
                let mut p = l[l.find("R ")? + 2..].split(' ');
                Some((p.next()?.parse().ok()?, p.next()?.to_string(), p.next()?.to_string()))
            })
            .collect()
    })
}

fn check_receipts(l: &Ledger, receipts: &[(u64, String, String)]) {
    for (seq, hash, id) in receipts {
        let leaf = l.leaf(*seq).unwrap_or_else(|e| panic!("receipt for seq {seq} ({id}) lost: {e}"));
        assert_eq!(&leaf_hash(&leaf).to_hex(), hash, "seq {seq} changed");
        assert!(String::from_utf8_lossy(&leaf).contains(&format!("\"id\":\"{id}\"")), "seq {seq} is not {id}");
    }
}

#[test]
fn sigkill_during_appends_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(new_ledger(dir.path()));
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut total = 0;
    for round in 0..20 {
        let mut child = spawn_child(dir.path(), &format!("crash{round}"), 8, 0);
        let reader = collect(&mut child);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(150 + rng % 400));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        let receipts = reader.join().expect("reader");
        total += receipts.len();
        let l = Ledger::open(compacting_options(dir.path())).expect("reopen after kill");
        check_receipts(&l, &receipts);
        // Appending resumes after the crash.
        l.append(record(1_000_000 + round)).expect("append after crash");
    }
    let l = Ledger::open(compacting_options(dir.path())).expect("open");
    let rep = verify_db(&l, |_, _| {}).expect("verify-db after 20 kills");
    println!("20 SIGKILL rounds: {total} acknowledged receipts all present; {} entries verified", rep.entries);
    assert!(total > 20, "children should have appended something before being killed");
    assert!(deep_rows(dir.path()) > 0, "the index compacted levels while children were killed");
}

#[test]
fn two_processes_append_to_one_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(new_ledger(dir.path()));
    let mut a = spawn_child(dir.path(), "proc-a", 4, 100);
    let mut b = spawn_child(dir.path(), "proc-b", 4, 100);
    let (ra, rb) = (collect(&mut a), collect(&mut b));
    assert!(a.wait().expect("a").success(), "process a failed");
    assert!(b.wait().expect("b").success(), "process b failed");
    let (ra, rb) = (ra.join().expect("a"), rb.join().expect("b"));
    assert_eq!((ra.len(), rb.len()), (400, 400));
    let l = Ledger::open(compacting_options(dir.path())).expect("open");
    assert_eq!(l.size().expect("size"), 801, "one key event and 800 records, nothing lost or duplicated");
    let mut seqs: Vec<u64> = ra.iter().chain(&rb).map(|r| r.0).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 800, "every record got its own seq");
    check_receipts(&l, &ra);
    check_receipts(&l, &rb);
    verify_db(&l, |_, _| {}).expect("one consistent tree");
    assert!(deep_rows(dir.path()) > 0, "the two processes compacted the index's levels");
}

/// What one line of `strace -f -y` output says, for the check below.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Call {
    /// A write to the WAL.
    WalWrite,
    /// A successful fsync or fdatasync of the WAL.
    WalSync,
    /// The child printing a receipt (a write of "R …" to stdout).
    Receipt,
}

/// Reads a `strace -f -y -e trace=pwrite64,write,fsync,fdatasync` log into
/// calls with the line numbers they started and ended on (a call another
/// thread interrupts is split into "<unfinished ...>" and "resumed" lines).
fn parse_trace(log: &str) -> Vec<(Call, usize, usize)> {
    let mut calls = Vec::new();
    let mut open: std::collections::HashMap<&str, (Option<Call>, usize)> = std::collections::HashMap::new();
    for (i, line) in log.lines().enumerate() {
        let Some((pid, rest)) = line.trim_start().split_once(' ') else { continue };
        let rest = rest.trim_start();
        let classify = |text: &str| -> Option<Call> {
            let name = text.split('(').next()?;
            let fd = text.split_once('(')?.1.split(',').next()?.split(')').next()?.trim_end();
            match name {
                "pwrite64" | "write" if fd.ends_with("-wal>") => Some(Call::WalWrite),
                "fsync" | "fdatasync" if fd.ends_with("-wal>") => Some(Call::WalSync),
                "write" if fd.starts_with("1<") && text.contains(", \"R ") => Some(Call::Receipt),
                _ => None,
            }
        };
        if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            open.insert(pid, (classify(head), i));
        } else if rest.starts_with("<...") {
            if let Some((Some(call), start)) = open.remove(pid) {
                let ok = rest.rsplit_once("= ").is_some_and(|(_, r)| !r.starts_with('-'));
                if ok || call != Call::WalSync {
                    calls.push((call, start, i));
                }
            }
        } else if let Some(call) = classify(rest) {
            let ok = rest.rsplit_once("= ").is_some_and(|(_, r)| !r.starts_with('-'));
            if ok || call != Call::WalSync {
                calls.push((call, i, i));
            }
        }
    }
    calls
}

/// For each receipt: the last WAL write that ended before it, and whether an
/// fsync of the WAL started after that write and ended before the receipt.
/// Returns the receipts (by line) that no such fsync covers.
fn unsynced_receipts(calls: &[(Call, usize, usize)]) -> Vec<usize> {
    let mut bad = Vec::new();
    for &(_, printed, _) in calls.iter().filter(|c| c.0 == Call::Receipt) {
        let last_write = calls.iter().filter(|c| c.0 == Call::WalWrite && c.2 < printed).map(|c| c.2).max();
        let Some(w) = last_write else {
            bad.push(printed);
            continue;
        };
        if !calls.iter().any(|c| c.0 == Call::WalSync && c.1 > w && c.2 < printed) {
            bad.push(printed);
        }
    }
    bad
}

#[test]
fn the_trace_check_catches_a_receipt_before_its_fsync() {
    let good = "\
10 pwrite64(5</d/ledger.db-wal>, \"x\"..., 16408, 32) = 16408
10 fdatasync(5</d/ledger.db-wal> <unfinished ...>
12 write(2<pipe:[8]>, \"log\"..., 3) = 3
10 <... fdatasync resumed>) = 0
10 write(1<pipe:[7]>, \"R 1 ab id\\n\", 10) = 10
10 pwrite64(5</d/ledger.db-wal>, \"y\"..., 16408, 16440) = 16408
10 fdatasync(5</d/ledger.db-wal>) = 0
10 write(1<pipe:[7]>, \"R 2 cd id\\n\", 10) = 10
";
    let calls = parse_trace(good);
    assert_eq!(calls.iter().filter(|c| c.0 == Call::Receipt).count(), 2);
    assert_eq!(calls.iter().filter(|c| c.0 == Call::WalSync).count(), 2);
    assert_eq!(unsynced_receipts(&calls), Vec::<usize>::new());
    // No fsync before the first receipt; a failed one before the second.
    let unsynced = "\
10 pwrite64(5</d/ledger.db-wal>, \"x\"..., 16408, 32) = 16408
10 write(1<pipe:[7]>, \"R 1 ab id\\n\", 10) = 10
10 fdatasync(5</d/ledger.db-wal>) = -1 EIO (Input/output error)
10 write(1<pipe:[7]>, \"R 2 cd id\\n\", 10) = 10
";
    assert_eq!(unsynced_receipts(&parse_trace(unsynced)), vec![1, 3]);
    // An fsync that started before the last write does not cover it.
    let early = "\
10 pwrite64(5</d/ledger.db-wal>, \"x\"..., 16408, 32) = 16408
11 fdatasync(5</d/ledger.db-wal> <unfinished ...>
10 pwrite64(5</d/ledger.db-wal>, \"y\"..., 16408, 16440) = 16408
11 <... fdatasync resumed>) = 0
10 write(1<pipe:[7]>, \"R 1 ab id\\n\", 10) = 10
";
    assert_eq!(unsynced_receipts(&parse_trace(early)), vec![4]);
}

/// Runs `child_appender` in a fresh ledger under the real strace with the
/// given extra environment; returns the ledger's directory and the child's
/// WAL writes, WAL fsyncs and printed receipts.
fn traced_child(prefix: &str, env: &[(&str, String)]) -> (tempfile::TempDir, Vec<(Call, usize, usize)>) {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(new_ledger(dir.path()));
    let trace = dir.path().join("strace.log");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-y", "-e", "trace=pwrite64,write,fsync,fdatasync", "-o"])
        .arg(&trace)
        .arg(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_appender", "--nocapture", "--test-threads=1"])
        .env(CHILD, dir.path())
        .env("EVIDENT_TEST_PREFIX", prefix)
        .env("EVIDENT_TEST_THREADS", "1")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run strace (scripts/test installs it)");
    assert!(out.status.success(), "traced child failed: {}", String::from_utf8_lossy(&out.stderr));
    let calls = parse_trace(&std::fs::read_to_string(&trace).expect("strace log"));
    (dir, calls)
}

/// Durability at the level of system calls, with the real strace: a child
/// appends one record at a time and prints each receipt as soon as
/// `append` returns it; every receipt must come after an fsync of the WAL
/// that started after the child's last write to it and succeeded.
#[test]
fn every_receipt_follows_an_fsync_of_the_wal_writes_before_it() {
    let (_dir, calls) = traced_child("traced", &[("EVIDENT_TEST_COUNT", "40".into())]);
    let receipts = calls.iter().filter(|c| c.0 == Call::Receipt).count();
    assert_eq!(receipts, 40, "the trace shows every receipt");
    assert!(calls.iter().any(|c| c.0 == Call::WalSync), "no fsync of the WAL in the trace");
    assert_eq!(unsynced_receipts(&calls), Vec::<usize>::new(), "receipts printed before their WAL writes were synced");
    println!(
        "{receipts} receipts, {} WAL writes, {} WAL fsyncs, each receipt after an fsync of the writes before it",
        calls.iter().filter(|c| c.0 == Call::WalWrite).count(),
        calls.iter().filter(|c| c.0 == Call::WalSync).count()
    );
}

/// The same at the level of system calls for one `append_batch` large enough
/// to be pipelined: its chunks are committed without an fsync each, and the
/// batch returns only after one fsync that started after its last write.
#[test]
fn a_pipelined_batch_returns_after_an_fsync_of_all_its_writes() {
    let n = 3 * evident_ledger::ledger::PIPELINE_ABOVE;
    let (dir, calls) =
        traced_child("batch", &[("EVIDENT_TEST_COUNT", "0".into()), ("EVIDENT_TEST_BATCH", n.to_string())]);
    assert_eq!(calls.iter().filter(|c| c.0 == Call::Receipt).count(), n, "the trace shows every receipt");
    assert_eq!(unsynced_receipts(&calls), Vec::<usize>::new(), "receipts printed before their WAL writes were synced");
    let l = Ledger::open(compacting_options(dir.path())).expect("reopen");
    assert_eq!(l.size().expect("size"), n as u64 + 1, "the producer key event and the batch");
    verify_db(&l, |_, _| {}).expect("verify-db after the batch");
}
