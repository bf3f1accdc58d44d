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

/// Child mode: appends from `THREADS` threads until killed or `COUNT` each.
#[test]
fn child_appender() {
    let Ok(dir) = std::env::var(CHILD) else { return };
    let prefix = std::env::var("EVIDENT_TEST_PREFIX").expect("prefix");
    let threads: usize = std::env::var("EVIDENT_TEST_THREADS").expect("threads").parse().expect("number");
    let count: usize = std::env::var("EVIDENT_TEST_COUNT").expect("count").parse().expect("number");
    let l = Ledger::open(options(std::path::Path::new(&dir))).expect("open ledger");
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
        let l = Ledger::open(options(dir.path())).expect("reopen after kill");
        check_receipts(&l, &receipts);
        // Appending resumes after the crash.
        l.append(record(1_000_000 + round)).expect("append after crash");
    }
    let l = Ledger::open(options(dir.path())).expect("open");
    let rep = verify_db(&l, |_, _| {}).expect("verify-db after 20 kills");
    println!("20 SIGKILL rounds: {total} acknowledged receipts all present; {} entries verified", rep.entries);
    assert!(total > 20, "children should have appended something before being killed");
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
    let l = Ledger::open(options(dir.path())).expect("open");
    assert_eq!(l.size().expect("size"), 801, "one key event and 800 records, nothing lost or duplicated");
    let mut seqs: Vec<u64> = ra.iter().chain(&rb).map(|r| r.0).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 800, "every record got its own seq");
    check_receipts(&l, &ra);
    check_receipts(&l, &rb);
    verify_db(&l, |_, _| {}).expect("one consistent tree");
}
