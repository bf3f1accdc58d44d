//! The idempotency index (`evident_ledger::idindex`): retries and conflicts
//! are found whichever level holds the original and whatever phase a merge
//! or a compaction is in, by any handle on the file; v1 files migrate; and
//! `verify-db` catches an index that disagrees with the entries.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{new_ledger, options, record, signer};
use evident_ledger::error::AppendError;
use evident_ledger::ledger::AppendReceipt;
use evident_ledger::verify_db::{VerifyDbError, verify_db};
use evident_ledger::{Ledger, Submission};
use rusqlite::Connection;

/// Record `n`'s id with other content.
fn conflicting(n: usize) -> Submission {
    let mut body = common::example("invariant_result", 0);
    body["run_id"] = serde_json::Value::String(format!("other-run-{n}"));
    signer().sign(&format!("rec-{n}"), "invariant_result", "2026-11-21T09:30:12Z", body).expect("sign")
}

fn db(dir: &Path) -> Connection {
    Connection::open(dir.join("ledger.db")).expect("open db")
}

fn count(c: &Connection, table: &str) -> u64 {
    c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).expect("count")
}

/// The merge phase recorded in the file.
fn phase(c: &Connection) -> &'static str {
    let v: Option<String> = c.query_row("SELECT v FROM meta WHERE k = 'ids_merging'", [], |r| r.get(0)).ok();
    match v.as_deref() {
        None => "idle",
        Some(v) if v.ends_with(" done") => "deleting",
        Some(_) => "copying",
    }
}

/// Appends the next `size` records in one batch; each must be new.
fn append_new(l: &Ledger, receipts: &mut Vec<AppendReceipt>, size: usize) {
    let n = receipts.len();
    for (i, r) in l.append_batch((n..n + size).map(record).collect()).into_iter().enumerate() {
        let r = r.unwrap_or_else(|e| panic!("record {}: {e}", n + i));
        assert!(!r.duplicate, "record {} is new", n + i);
        receipts.push(r);
    }
}

fn assert_retry(l: &Ledger, n: usize, original: &AppendReceipt) {
    let again = l.append(record(n)).expect("a retry is accepted");
    assert!(again.duplicate, "record {n}: a retry is reported as a duplicate");
    assert_eq!((again.seq, &again.leaf_hash, &again.ts), (original.seq, &original.leaf_hash, &original.ts));
    match l.append(conflicting(n)) {
        Err(AppendError::Conflict { seq, .. }) => {
            assert_eq!(seq, original.seq, "record {n}: conflict names the original")
        }
        other => panic!("record {n}: other content under the same id must conflict, got {other:?}"),
    }
}

#[test]
fn retries_and_conflicts_are_found_in_every_level_and_merge_phase() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = new_ledger(dir.path());
    let c = db(dir.path());
    let mut receipts: Vec<AppendReceipt> = Vec::new();
    let mut phases = BTreeSet::new();
    for round in 0..80 {
        append_new(&l, &mut receipts, 1 + (round * 7) % 23);
        phases.insert(phase(&c));
        // An old record (merged long ago), a middling one and the newest.
        for old in [(round * 37) % receipts.len(), receipts.len() / 2, receipts.len() - 1] {
            assert_retry(&l, old, &receipts[old]);
            phases.insert(phase(&c));
        }
    }
    assert_eq!(phases, BTreeSet::from(["copying", "deleting", "idle"]), "the appends ran through every merge phase");
    let (recent, ids) = (count(&c, "recent"), count(&c, "ids"));
    assert!(ids > 0 && recent < receipts.len() as u64, "merged: {ids} rows in ids, {recent} in recent");
    // Every record at once, whichever level it is in now.
    let again = l.append_batch((0..receipts.len()).map(record).collect());
    for (n, (r, original)) in again.into_iter().zip(&receipts).enumerate() {
        let r = r.unwrap_or_else(|e| panic!("record {n}: {e}"));
        assert!(r.duplicate && r.seq == original.seq, "record {n} is a duplicate of seq {}", original.seq);
    }
    let size = l.size().expect("size");
    assert_eq!(size, receipts.len() as u64 + 1, "no retry or conflict added an entry (seq 0 is the key event)");
    verify_db(&l, |_, _| {}).expect("verify-db passes");
}

/// Rows per level of `ids_deep`, deepest last.
fn deep_levels(c: &Connection) -> Vec<(i64, u64)> {
    let mut stmt = c.prepare("SELECT level, count(*) FROM ids_deep GROUP BY level ORDER BY level").expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("query").map(|r| r.expect("row")).collect()
}

/// A new ledger and a second handle on it, with the smallest `merge_min`
/// (merges capped at 16 rows, level 1 at 128, level 2 at 1,024).
fn two_handles_compacting_early(dir: &Path) -> (Ledger, Ledger) {
    let mut o = options(dir);
    o.merge_min = 1;
    let a = Ledger::create(o.clone()).expect("create");
    a.add_key("deploy-bot", &common::producer_key().verifier(), Some("2020-01-01T00:00:00Z")).expect("key");
    let b = Ledger::open(o).expect("second handle");
    (a, b)
}

/// With the smallest `merge_min`, level 1 (`ids`) holds 128 rows before it
/// is compacted into level 2, which holds 1,024 before level 3: a few
/// thousand appends, from two handles taking turns, run through several
/// compactions of each level while merges continue. Retries and conflicts
/// are found in every level, and `verify-db` checks every level.
#[test]
fn retries_and_conflicts_are_found_in_compacted_levels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_handles_compacting_early(dir.path());
    let c = db(dir.path());
    let compacting = |c: &Connection| -> Option<i64> {
        let v: Option<String> = c.query_row("SELECT v FROM meta WHERE k = 'ids_compact'", [], |r| r.get(0)).ok();
        v.and_then(|v| v.split(' ').next().and_then(|f| f.parse().ok()))
    };
    let mut receipts: Vec<AppendReceipt> = Vec::new();
    let mut compacted_from = BTreeSet::new();
    let mut round = 0;
    while receipts.len() < 3000 {
        let l = if round % 3 == 0 { &b } else { &a };
        append_new(l, &mut receipts, 1 + (round * 13) % 41);
        compacted_from.extend(compacting(&c));
        if round % 5 == 0 {
            let old = (round * 97) % receipts.len();
            assert_retry(l, old, &receipts[old]);
        }
        round += 1;
    }
    assert_eq!(compacted_from, BTreeSet::from([1, 2]), "level 1 and level 2 were compacted");
    let deep = deep_levels(&c);
    assert!(deep.len() >= 2 && deep.iter().all(|&(l, _)| l >= 2), "levels 2 and 3 hold rows: {deep:?}");
    let in_ids = count(&c, "ids");
    let in_deep: u64 = deep.iter().map(|&(_, n)| n).sum();
    assert!(in_deep > in_ids, "most rows are below level 1: {in_ids} in ids, {deep:?}");
    // Each handle finds every record, whichever level holds it now.
    for l in [&a, &b] {
        for n in (0..receipts.len()).step_by(53) {
            assert_retry(l, n, &receipts[n]);
        }
    }
    let again = b.append_batch((0..receipts.len()).map(record).collect());
    for (n, (r, original)) in again.into_iter().zip(&receipts).enumerate() {
        let r = r.unwrap_or_else(|e| panic!("record {n}: {e}"));
        assert!(r.duplicate && r.seq == original.seq, "record {n} is a duplicate of seq {}", original.seq);
    }
    assert_eq!(a.size().expect("size"), receipts.len() as u64 + 1, "no retry or conflict added an entry");
    verify_db(&a, |_, _| {}).expect("verify-db passes");
    drop((a, b));

    // verify-db checks the deep levels too.
    let edits = [
        ("a row missing from a deep level", "DELETE FROM ids_deep WHERE seq = (SELECT min(seq) FROM ids_deep)"),
        (
            "a row in two levels",
            "INSERT INTO ids_deep SELECT level + 1, idkey, seq FROM ids_deep WHERE seq = (SELECT max(seq) FROM ids_deep)",
        ),
        (
            "a deep row moved to another seq",
            "UPDATE ids_deep SET seq = seq + 1 WHERE seq = (SELECT max(seq) FROM ids_deep)",
        ),
    ];
    assert_verify_db_catches(dir.path(), 1, &edits);
}

/// Applies each edit to its own copy of the ledger in `dir`, and requires
/// `verify-db` to fail on the idempotency index.
fn assert_verify_db_catches(dir: &Path, merge_min: u64, edits: &[(&str, &str)]) {
    for (what, sql) in edits {
        let copy = tempfile::tempdir().expect("tempdir");
        std::fs::copy(dir.join("ledger.db"), copy.path().join("ledger.db")).expect("copy");
        db(copy.path()).execute_batch(sql).unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut o = options(copy.path());
        o.merge_min = merge_min;
        let l = Ledger::open(o).expect("open");
        match verify_db(&l, |_, _| {}) {
            Err(VerifyDbError::Mismatch { seq: None, what: msg }) => {
                assert!(msg.contains("idempotency index"), "{what}: {msg}")
            }
            other => panic!("{what}: verify-db must fail on the index, got {other:?}"),
        }
    }
}

#[test]
fn handles_on_one_file_continue_each_others_merges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = new_ledger(dir.path());
    let b = Ledger::open(options(dir.path())).expect("second handle");
    const PER: usize = 150;
    let handles = [a.clone(), b.clone(), a.clone(), b.clone()];
    let results: Vec<Vec<(usize, AppendReceipt)>> = std::thread::scope(|s| {
        let threads: Vec<_> = handles
            .iter()
            .enumerate()
            .map(|(t, l)| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    let mut n = t * PER;
                    while n < (t + 1) * PER {
                        let size = 1 + n % 4;
                        let end = (n + size).min((t + 1) * PER);
                        for (i, r) in l.append_batch((n..end).map(record).collect()).into_iter().enumerate() {
                            let r = r.unwrap_or_else(|e| panic!("record {}: {e}", n + i));
                            assert!(!r.duplicate);
                            out.push((n + i, r));
                        }
                        n = end;
                    }
                    out
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("appender")).collect()
    });
    let mut receipts: Vec<(usize, AppendReceipt)> = results.into_iter().flatten().collect();
    receipts.sort_by_key(|(n, _)| *n);
    let c = db(dir.path());
    assert!(count(&c, "ids") > 0, "the handles merged");
    // Each handle finds every record, whichever handle appended it and merged it.
    for l in [&a, &b] {
        for (n, original) in receipts.iter().step_by(7) {
            assert_retry(l, *n, original);
        }
    }
    assert_eq!(a.size().expect("size"), 4 * PER as u64 + 1);
    verify_db(&a, |_, _| {}).expect("verify-db passes");
}

/// A ledger written by a v1 binary (one index on `entries(idkey)`) is
/// migrated when opened: every old record is found, and appends go on.
#[test]
fn a_version_1_ledger_is_migrated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = new_ledger(dir.path());
    let receipts: Vec<AppendReceipt> =
        l.append_batch((0..300).map(record).collect()).into_iter().map(|r| r.expect("append")).collect();
    drop(l);
    // Back to the v1 layout, as a v1 binary left it.
    db(dir.path())
        .execute_batch(
            "DROP TABLE ids; DROP TABLE recent; DROP TABLE ids_deep;
             DELETE FROM meta WHERE k IN ('ids_merge', 'ids_merging', 'ids_upto', 'ids_levels', 'ids_compact');
             CREATE INDEX entries_idkey ON entries(idkey); PRAGMA user_version = 1;",
        )
        .expect("downgrade");
    let l = Ledger::open(options(dir.path())).expect("open migrates");
    let c = db(dir.path());
    let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("version");
    assert_eq!(version, 3);
    assert_eq!((count(&c, "ids"), count(&c, "recent")), (301, 0), "every entry moved to ids");
    let old_index: i64 =
        c.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'entries_idkey'", [], |r| r.get(0)).expect("q");
    assert_eq!(old_index, 0, "the v1 index is dropped");
    for n in [0, 150, 299] {
        assert_retry(&l, n, &receipts[n]);
    }
    let more = l.append(record(300)).expect("append after migration");
    assert_eq!(more.seq, 301);
    verify_db(&l, |_, _| {}).expect("verify-db passes");
    drop(l);
    // A v1 binary still running after the upgrade appends without index
    // rows: here the only row of `recent` is removed. The next v2 commit,
    // from a handle that loads the index afresh, adds it back.
    c.execute("DELETE FROM recent", []).expect("unindex seq 301");
    let l = Ledger::open(options(dir.path())).expect("reopen");
    l.append(record(301)).expect("append");
    assert_retry(&l, 300, &more);
    verify_db(&l, |_, _| {}).expect("verify-db passes");
}

/// Entries another writer appended without index rows (a v1 binary still
/// running after the upgrade) are indexed by the next commit of a writer
/// that has seen the ledger before them.
#[test]
fn entries_appended_without_index_rows_are_indexed_by_the_next_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = new_ledger(dir.path());
    let b = Ledger::open(options(dir.path())).expect("second handle");
    b.append(record(0)).expect("b has committed once");
    let receipts: Vec<AppendReceipt> =
        a.append_batch((1..40).map(record).collect()).into_iter().map(|r| r.expect("append")).collect();
    let c = db(dir.path());
    let removed = c.execute("DELETE FROM recent WHERE seq = ?1", [receipts[0].seq as i64]).expect("unindex a's commit");
    assert_eq!(removed, 1, "a's commit wrote one row");
    b.append(record(40)).expect("b commits");
    for n in [1, 20, 39] {
        assert_retry(&b, n, &receipts[n - 1]);
    }
    verify_db(&b, |_, _| {}).expect("verify-db passes");
}

#[test]
fn verify_db_catches_an_index_that_disagrees_with_the_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = new_ledger(dir.path());
    for chunk in 0..10 {
        l.append_batch((chunk * 20..chunk * 20 + 20).map(record).collect()).into_iter().for_each(|r| {
            r.expect("append");
        });
    }
    drop(l);
    let c = db(dir.path());
    assert!(count(&c, "ids") > 0 && count(&c, "recent") > 0, "both levels hold rows");
    let edits = [
        ("a row missing from ids", "DELETE FROM ids WHERE seq = (SELECT min(seq) FROM ids)"),
        ("a row missing from recent", "DELETE FROM recent WHERE seq = (SELECT max(seq) FROM recent)"),
        ("an extra row", "INSERT INTO ids (idkey, seq) VALUES (42, 7)"),
        ("a row moved to another seq", "UPDATE ids SET seq = seq + 1 WHERE seq = (SELECT max(seq) FROM ids)"),
        (
            "a row with another key",
            "UPDATE recent SET idkeys = zeroblob(length(idkeys)) WHERE seq = (SELECT max(seq) FROM recent)",
        ),
        (
            "a seq held twice",
            "INSERT INTO recent SELECT seq + 1, idkeys FROM recent WHERE seq = (SELECT max(seq) FROM recent)",
        ),
    ];
    assert_verify_db_catches(dir.path(), options(dir.path()).merge_min, &edits);
    let l = Ledger::open(options(dir.path())).expect("open");
    verify_db(&l, |_, _| {}).expect("the untouched file passes");
}

/// A handle that last committed before another merged and deleted the
/// rows it had seen indexes nothing twice and still finds every record.
#[test]
fn a_handle_that_slept_through_merges_catches_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = new_ledger(dir.path());
    let b = Ledger::open(options(dir.path())).expect("second handle");
    let first = b.append(record(0)).expect("b commits once");
    let c = db(dir.path());
    let mut receipts = vec![first];
    let mut n = 1;
    // Until `a` has finished at least two merges past b's view.
    let mut merges = 0;
    let mut last = phase(&c);
    while merges < 2 {
        receipts.push(a.append(record(n)).expect("append"));
        n += 1;
        let now = phase(&c);
        if last == "deleting" && now == "idle" {
            merges += 1;
        }
        last = now;
    }
    b.append(record(n)).expect("b commits again");
    let pairs: u64 =
        c.query_row("SELECT coalesce(sum(length(idkeys) / 8), 0) FROM recent", [], |r| r.get(0)).expect("q");
    assert_eq!(phase(&c), "idle", "no merge is running");
    assert_eq!(pairs + count(&c, "ids"), n as u64 + 2, "each entry is indexed once");
    for k in [0, n / 2, n - 1] {
        assert_retry(&b, k, &receipts[k]);
    }
    verify_db(&b, |_, _| {}).expect("verify-db passes");
}

/// A handle's first commit looks ids up by scanning `recent` rather than
/// loading it (what one `evident append` does): retries and conflicts are
/// found there and in `ids`, alone or in a batch with new records.
#[test]
fn a_new_handle_finds_retries_in_its_first_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = new_ledger(dir.path());
    let mut receipts = Vec::new();
    for chunk in 0..10 {
        for r in l.append_batch((chunk * 10..chunk * 10 + 10).map(record).collect()) {
            receipts.push(r.expect("append"));
        }
    }
    let c = db(dir.path());
    assert!(count(&c, "ids") > 0 && count(&c, "recent") > 0, "both levels hold rows");
    drop(l);
    for n in [5, 50, 99] {
        let again = Ledger::open(options(dir.path())).expect("open").append(record(n)).expect("retry");
        assert!(again.duplicate && again.seq == receipts[n].seq, "record {n}: first commit finds the original");
        match Ledger::open(options(dir.path())).expect("open").append(conflicting(n)) {
            Err(AppendError::Conflict { seq, .. }) => assert_eq!(seq, receipts[n].seq),
            other => panic!("record {n}: expected a conflict in the first commit, got {other:?}"),
        }
    }
    let fresh = Ledger::open(options(dir.path())).expect("open");
    let mixed = fresh.append_batch(vec![record(100), record(7), record(101), record(98)]);
    let mixed: Vec<AppendReceipt> = mixed.into_iter().map(|r| r.expect("append")).collect();
    assert!(!mixed[0].duplicate && !mixed[2].duplicate, "new records are new");
    assert_eq!((mixed[1].duplicate, mixed[1].seq), (true, receipts[7].seq));
    assert_eq!((mixed[3].duplicate, mixed[3].seq), (true, receipts[98].seq));
    // The handle's next commit loads the level and still finds them.
    assert_retry(&fresh, 100, &mixed[0]);
    assert_retry(&fresh, 98, &receipts[98]);
    verify_db(&fresh, |_, _| {}).expect("verify-db passes");
}

/// A handle whose set still holds rows that another handle has since
/// merged and compacted into level 2 must not copy them into `ids` again
/// when it next commits during a merge: each entry stays in one level.
#[test]
fn a_handle_that_slept_through_a_compaction_does_not_merge_its_rows_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_handles_compacting_early(dir.path());
    // b's second commit loads its set: seqs 0 (the key event) to 2.
    let mut receipts = vec![b.append(record(0)).expect("b"), b.append(record(1)).expect("b")];
    let c = db(dir.path());
    let in_level = |c: &Connection, seq: u64| -> (u64, u64) {
        let ids: u64 = c.query_row("SELECT count(*) FROM ids WHERE seq = ?1", [seq], |r| r.get(0)).expect("ids");
        let deep: u64 = c.query_row("SELECT count(*) FROM ids_deep WHERE seq = ?1", [seq], |r| r.get(0)).expect("deep");
        (ids, deep)
    };
    let compacting = |c: &Connection| count_where(c, "meta", "k = 'ids_compact'") > 0;
    // a appends until b's entries are in level 2 and the next merge copies.
    let mut n = 2;
    while !(in_level(&c, 2) == (0, 1) && !compacting(&c) && phase(&c) == "copying") {
        receipts.push(a.append(record(n)).expect("append"));
        n += 1;
        assert!(n < 5000, "no compaction moved b's rows");
    }
    b.append(record(n)).expect("b commits during the merge");
    for seq in [1, 2] {
        assert_eq!(in_level(&c, seq), (0, 1), "seq {seq} stays in level 2 alone");
    }
    for k in [0, 1, n / 2] {
        assert_retry(&b, k, &receipts[k]);
    }
    verify_db(&b, |_, _| {}).expect("verify-db passes");
}

fn count_where(c: &Connection, table: &str, cond: &str) -> u64 {
    c.query_row(&format!("SELECT count(*) FROM {table} WHERE {cond}"), [], |r| r.get(0)).expect("count")
}

/// A ledger written by a v2 binary, in the middle of a merge, migrates to
/// v3: the merge continues under its new key, and the old key holds a
/// value a v2 binary's merge step refuses (its first word is not a seq),
/// so a v2 process still running cannot append without the deep levels.
#[test]
fn a_version_2_ledger_is_migrated_mid_merge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = new_ledger(dir.path());
    let c = db(dir.path());
    let mut receipts = Vec::new();
    while phase(&c) != "copying" || receipts.len() < 100 {
        receipts.push(l.append(record(receipts.len())).expect("append"));
    }
    drop(l);
    let merging: String = c.query_row("SELECT v FROM meta WHERE k = 'ids_merging'", [], |r| r.get(0)).expect("state");
    // Back to the v2 layout, as a v2 binary left it.
    c.execute_batch(
        "DROP TABLE ids_deep; DELETE FROM meta WHERE k IN ('ids_levels', 'ids_compact', 'ids_merge');
         UPDATE meta SET k = 'ids_merge' WHERE k = 'ids_merging'; PRAGMA user_version = 2;",
    )
    .expect("downgrade");
    let l = Ledger::open(options(dir.path())).expect("open migrates");
    let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("version");
    assert_eq!(version, 3);
    let meta = |k: &str| -> String { c.query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| r.get(0)).expect(k) };
    assert_eq!(meta("ids_merging"), merging, "the merge state moved to its new key");
    let poison = meta("ids_merge");
    assert!(poison.split(' ').next().and_then(|b| b.parse::<u64>().ok()).is_none(), "v2 refuses {poison:?}");
    assert!(poison.contains("restart"), "{poison}");
    // The merge goes on from where it stood.
    while phase(&c) != "idle" {
        receipts.push(l.append(record(receipts.len())).expect("append"));
    }
    for n in [0, receipts.len() / 2, receipts.len() - 1] {
        assert_retry(&l, n, &receipts[n]);
    }
    verify_db(&l, |_, _| {}).expect("verify-db passes");
}
