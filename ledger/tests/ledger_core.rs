//! Ledger core behaviour on real SQLite files: appends, idempotency,
//! proofs checked by the verifier library, receipts, bad input that leaves
//! the ledger unchanged, and tampering caught by verify-db.

mod common;

use common::*;
use evident_ledger::verify_db::{VerifyDbError, verify_db};
use evident_ledger::{AppendError, Ledger, Submission};
use evident_verify::hash::{Hash, leaf_hash};
use evident_verify::leaf::Entry;
use evident_verify::merkle::{MemoryTree, verify_consistency, verify_inclusion};
use evident_verify::receipt::Receipt;
use serde_json::json;

#[test]
fn appends_prove_and_match_an_independent_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = new_ledger(dir.path());
    let subs: Vec<Submission> = (0..300).map(record).collect();
    let receipts: Vec<_> = l.append_batch(subs).into_iter().map(|r| r.expect("append")).collect();
    let n = l.size().expect("size");
    assert_eq!(n, 301, "key event + 300 records");
    // Rebuild the tree independently from the stored leaves.
    let mut mem = MemoryTree::new();
    let mut last_ts = String::new();
    l.for_each_leaf(0, n, |seq, _, leaf| {
        let e = Entry::parse_leaf(leaf).expect("canonical leaf");
        assert_eq!(e.seq, seq);
        assert!(e.ts >= last_ts, "ts never decreases");
        last_ts = e.ts.clone();
        mem.append(leaf_hash(leaf));
        Ok(())
    })
    .expect("stream");
    assert_eq!(l.head().expect("head").root, mem.root());
    assert_eq!(evident_verify::merkle::rs_merkle_root(&leaf_hashes(&l, n)), mem.root());
    for r in &receipts {
        assert_eq!(Hash::from_hex(&r.leaf_hash), Some(leaf_hash(&l.leaf(r.seq).expect("leaf"))));
    }
    // Proofs at every size verify with the verifier library, against roots
    // computed independently (rs_merkle over the stored leaves). Sizes inside
    // the incomplete right-edge tiles exercise the in-memory edge.
    let hashes = leaf_hashes(&l, n);
    for size in 1..=n {
        let root = evident_verify::merkle::rs_merkle_root(&hashes[..size as usize]);
        assert_eq!(l.head_at(size).expect("head").root, root, "head at {size}");
        for seq in [0, size / 2, size - 1] {
            let proof = l.prove_inclusion(seq, size).expect("prove");
            verify_inclusion(seq, size, &leaf_hash(&l.leaf(seq).expect("leaf")), &proof, &root).expect("inclusion");
        }
        for old in [1u64, size / 3 + 1, size] {
            let proof = l.prove_consistency(old, size).expect("prove");
            let old_root = l.head_at(old).expect("head").root;
            verify_consistency(old, size, &proof, &old_root.0, &root.0).expect("consistency");
        }
    }
    // A receipt file checks offline with the ledger's verifier key alone.
    let rf = l.receipt(123, None).expect("receipt");
    let text = serde_json::to_vec(&rf).expect("json");
    let v = Receipt::parse(&text).expect("parse").verify(&[l.verifier_key()], Some(ORIGIN)).expect("receipt verifies");
    assert_eq!(v.entry.seq, 123);
    let mut forged = rf.clone();
    forged.leaf = forged.leaf.replace("ci-run-", "ci-rux-");
    assert!(forged.verify(&[l.verifier_key()], Some(ORIGIN)).is_err());
    let rep = verify_db(&l, |_, _| {}).expect("verify-db passes");
    assert_eq!(rep.entries, 301);
}

fn leaf_hashes(l: &Ledger, n: u64) -> Vec<Hash> {
    let mut v = Vec::new();
    l.for_each_leaf(0, n, |_, _, leaf| {
        v.push(leaf_hash(leaf));
        Ok(())
    })
    .expect("stream");
    v
}

#[test]
fn retries_return_the_first_receipt_and_conflicts_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = new_ledger(dir.path());
    let first = l.append(record(7)).expect("append");
    let again = l.append(record(7)).expect("retry");
    assert!(again.duplicate);
    assert_eq!((again.seq, &again.leaf_hash, &again.ts), (first.seq, &first.leaf_hash, &first.ts));
    // Same (producer, id) inside one batch.
    let rs = l.append_batch(vec![record(8), record(8)]);
    let (a, b) = (rs[0].as_ref().expect("a"), rs[1].as_ref().expect("b"));
    assert_eq!(a.seq, b.seq);
    assert!(b.duplicate);
    let before = head(&l);
    let mut body = example("invariant_result", 0);
    body["run_id"] = json!("something-else");
    let changed = signer().sign("rec-7", "invariant_result", "2026-11-21T09:30:12Z", body).expect("sign");
    match l.append(changed) {
        Err(AppendError::Conflict { seq, .. }) => assert_eq!(seq, first.seq),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(head(&l), before);
}

/// Every bad input is refused with an error naming the problem, and the
/// ledger keeps the same size and root.
#[test]
fn bad_input_leaves_the_ledger_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = new_ledger(dir.path());
    l.append(record(1)).expect("append");
    let before = head(&l);
    let s = signer();
    let at = "2026-11-21T09:30:12Z";
    let mut cases: Vec<(&str, Result<Submission, AppendError>, &str)> = vec![
        ("malformed JSON", Submission::parse(b"{\"rec\": {"), "malformed"),
        ("non-UTF-8", Submission::parse(b"{\"rec\": \"\xff\xfe\"}"), "UTF-8"),
        ("unknown kind", s.sign("u1", "launch_missiles", at, json!({})), "unknown kind"),
        (
            "schema violation",
            s.sign("u2", "invariant_result", at, {
                let mut b = example("invariant_result", 0);
                b["severity"] = json!("P9");
                b
            }),
            "/severity",
        ),
        (
            "missing field",
            s.sign("u3", "execution", at, {
                let mut b = example("execution", 0);
                b.as_object_mut().expect("object").remove("authorization_id");
                b
            }),
            "authorization_id",
        ),
        (
            "oversize record",
            s.sign("u4", "invariant_result", at, {
                let mut b = example("invariant_result", 0);
                b["verification_command"] = json!("x".repeat(60_000));
                b
            }),
            "",
        ),
        (
            "duplicate id, different content",
            s.sign("rec-1", "invariant_result", at, {
                let mut b = example("invariant_result", 0);
                b["run_id"] = json!("other");
                b
            }),
            "already appended at seq",
        ),
        ("bad producer time", s.sign("u5", "invariant_result", "yesterday", example("invariant_result", 0)), "rec.at"),
    ];
    // A missing envelope field, as a service in another language might send.
    cases.push((
        "missing envelope field",
        Submission::parse(br#"{"rec":{"id":"x","kind":"approval","producer":"deploy-bot","body":{}}}"#),
        "missing field `at`",
    ));
    for (what, sub, needle) in cases {
        let err = match sub {
            Err(e) => e,
            Ok(sub) => l.append(sub).expect_err(what),
        };
        let msg = chain(&err);
        assert!(msg.contains(needle), "{what}: error {msg:?} does not mention {needle:?}");
        assert_eq!(head(&l), before, "{what} changed the ledger");
    }
    // Oversize gets a limit error that says so (schema maxLength may fire first).
    let huge = s
        .sign("u6", "guardrail_event", at, {
            let mut b = example("guardrail_event", 1);
            b["details"] = json!({"x": "y".repeat(50_000)});
            b
        })
        .expect("sign");
    let msg = chain(&l.append(huge).expect_err("oversize"));
    assert!(msg.contains("limit") || msg.contains("longer") || msg.contains("schema"), "{msg}");
    assert_eq!(head(&l), before);
}

pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut c = e.source();
    while let Some(x) = c {
        s = format!("{s}: {x}");
        c = x.source();
    }
    s
}

#[test]
fn out_of_band_edits_are_caught_by_verify_db() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = new_ledger(dir.path());
    l.append_batch((0..100).map(record).collect()).into_iter().for_each(|r| {
        r.expect("append");
    });
    l.checkpoint().expect("checkpoint");
    verify_db(&l, |_, _| {}).expect("clean");
    let path = dir.path().join("ledger.db");
    // The triggers refuse edits...
    let raw = rusqlite::Connection::open(&path).expect("open");
    assert!(raw.execute("UPDATE entries SET leaf = leaf WHERE seq = 5", []).is_err());
    assert!(raw.execute("DELETE FROM entries WHERE seq = 99", []).is_err());
    assert!(raw.execute("DELETE FROM checkpoints", []).is_err());
    assert!(raw.execute("UPDATE tiles SET hashes = hashes", []).is_err());
    // ...so an attacker drops them and edits a leaf with plain SQL.
    raw.execute_batch("DROP TRIGGER entries_no_update").expect("drop trigger");
    let leaf = String::from_utf8(l.leaf(42).expect("leaf")).expect("utf8");
    let edited = leaf.replace("ci-run-", "ci-run-x");
    raw.execute("UPDATE entries SET leaf = ?1 WHERE seq = 42", [edited.as_bytes()]).expect("edit");
    drop(raw);
    match verify_db(&l, |_, _| {}) {
        Err(VerifyDbError::Mismatch { seq, what }) => {
            assert_eq!(seq, Some(42), "{what}");
        }
        other => panic!("verify-db missed the edit: {other:?}"),
    }
}

#[test]
fn a_newer_database_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = new_ledger(dir.path());
    drop(l);
    let raw = rusqlite::Connection::open(dir.path().join("ledger.db")).expect("open");
    raw.pragma_update(None, "user_version", 99).expect("bump");
    drop(raw);
    let err = Ledger::open(options(dir.path())).expect_err("newer schema");
    assert!(err.to_string().contains("newer than this binary"), "{err}");
}

/// 16 threads each waiting for its receipt: every append lands once, with
/// its own seq, in a consistent tree, and commits are shared. Run without
/// and with a commit delay (the leader then waits for the others).
#[test]
fn many_threads_share_commits() {
    for delay_ms in [0, 5] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut opts = options(dir.path());
        opts.commit_delay = std::time::Duration::from_millis(delay_ms);
        let l = Ledger::create(opts).expect("create ledger");
        l.add_key("deploy-bot", &producer_key().verifier(), Some("2020-01-01T00:00:00Z")).expect("register key");
        let subs: Vec<Vec<Submission>> = (0..16).map(|t| (0..50).map(|i| record(t * 1000 + i)).collect()).collect();
        let mut seqs: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = subs
                .into_iter()
                .map(|batch| {
                    let l = l.clone();
                    s.spawn(move || batch.into_iter().map(|sub| l.append(sub).expect("append").seq).collect::<Vec<_>>())
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("thread")).collect()
        });
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=800).collect::<Vec<u64>>(), "delay {delay_ms} ms: one seq per append");
        assert_eq!(l.size().expect("size"), 801);
        verify_db(&l, |_, _| {}).expect("consistent");
        // Every commit stamps its entries with one ts.
        let raw = rusqlite::Connection::open(dir.path().join("ledger.db")).expect("open");
        let commits: i64 =
            raw.query_row("SELECT count(DISTINCT ts) FROM entries WHERE seq > 0", [], |r| r.get(0)).expect("count");
        assert!(commits < 800, "delay {delay_ms} ms: {commits} commits for 800 appends: none shared");
        eprintln!("delay {delay_ms} ms: 800 appends in {commits} commits");
    }
}

/// The chunks of a pipelined batch cover it exactly and in order, start
/// small (with signatures, at a quarter of the batch within bounds), grow
/// to the cap on a large batch (with signatures the largest; without, an
/// eighth of the batch within bounds), and end small.
#[test]
fn pipelined_chunks_cover_the_batch_and_start_and_end_small() {
    use evident_ledger::ledger::{
        PIPELINE_ABOVE, PIPELINE_CHUNK, PIPELINE_FIRST, PIPELINE_FIRST_SIGNED, PIPELINE_UNSIGNED_CAP_MIN, chunk_cap,
        chunk_size, first_chunk,
    };
    assert_eq!(first_chunk(10_000, false), PIPELINE_FIRST);
    assert_eq!(first_chunk(10_000, true), PIPELINE_FIRST_SIGNED);
    assert_eq!(first_chunk(3_000, true), 750);
    assert_eq!(first_chunk(PIPELINE_ABOVE + 1, true), PIPELINE_FIRST);
    assert_eq!(chunk_cap(10_000, true), PIPELINE_CHUNK);
    assert_eq!(chunk_cap(10_000, false), 1250);
    assert_eq!(chunk_cap(PIPELINE_ABOVE + 1, false), PIPELINE_UNSIGNED_CAP_MIN);
    assert_eq!(chunk_cap(1_000_000, false), PIPELINE_CHUNK);
    for verifying in [true, false] {
        for n in (PIPELINE_ABOVE + 1..=60_000).step_by(997).chain([PIPELINE_ABOVE + 1, 8 * PIPELINE_CHUNK]) {
            let (cap, first) = (chunk_cap(n, verifying), first_chunk(n, verifying));
            let (mut left, mut ramp, mut sizes) = (n, first, Vec::new());
            while left > 0 {
                let size = chunk_size(ramp, left);
                assert!((1..=cap).contains(&size), "n {n}: chunk of {size}");
                sizes.push(size);
                left -= size;
                ramp = (ramp * 2).min(cap);
            }
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert_eq!(sizes[0], first, "n {n}: {sizes:?}");
            assert!((PIPELINE_FIRST..=PIPELINE_FIRST_SIGNED).contains(&first), "n {n}: first {first}");
            assert!(*sizes.last().expect("a chunk") <= PIPELINE_FIRST, "n {n}: {sizes:?}");
            if n >= 4 * cap {
                assert!(sizes.contains(&cap), "n {n}, signed {verifying}: {sizes:?}");
            }
        }
    }
}

/// A batch larger than one commit is committed in pipelined chunks: the
/// results stay in submission order, seqs follow it, and a repeat of an
/// earlier chunk's record is a duplicate (same content) or a conflict
/// (same id, other content), exactly as within one chunk.
#[test]
fn a_large_batch_is_pipelined_in_order_with_duplicates_across_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = new_ledger(dir.path());
    let n = 2 * evident_ledger::ledger::PIPELINE_CHUNK + 300;
    let mut subs: Vec<Submission> = (0..n).map(record).collect();
    let (same, other) = (n - 200, n - 100);
    subs[same] = record(10);
    let mut changed = record(20);
    changed.rec.body["run_id"] = json!("ci-run-20-changed");
    subs[other] = signer().sign("rec-20", "invariant_result", "2026-11-21T09:30:12Z", changed.rec.body).expect("sign");
    let results = l.append_batch(subs);
    assert_eq!(results.len(), n);
    let first = results[10].as_ref().expect("record 10").clone();
    let mut expect_seq = 1;
    for (i, r) in results.iter().enumerate() {
        match (i, r) {
            (i, Ok(r)) if i == same => {
                assert!(r.duplicate, "repeat of record 10 is a duplicate");
                assert_eq!((r.seq, &r.leaf_hash), (first.seq, &first.leaf_hash));
            }
            (i, Err(AppendError::Conflict { seq, .. })) if i == other => {
                assert_eq!(*seq, results[20].as_ref().expect("record 20").seq);
            }
            (i, Ok(r)) if i != same && i != other => {
                assert!(!r.duplicate);
                assert_eq!(r.seq, expect_seq, "record {i} out of order");
                expect_seq += 1;
            }
            (i, r) => panic!("record {i}: unexpected {r:?}"),
        }
    }
    assert_eq!(l.size().expect("size"), 1 + n as u64 - 2);
    verify_db(&l, |_, _| {}).expect("verify-db passes");
}

/// Signatures are verified in parallel batches: a batch with a few bad
/// signatures among many good ones refuses exactly the bad ones, and stores
/// the rest.
#[test]
fn batched_signature_checks_refuse_exactly_the_bad_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = new_ledger(dir.path());
    let bad = [3usize, 700, 701, 1199];
    let subs: Vec<Submission> = (0..1200)
        .map(|i| {
            let mut s = record(i);
            if bad.contains(&i) {
                s.rec.body["run_id"] = serde_json::Value::String(format!("ci-run-{i}-altered"));
            }
            s
        })
        .collect();
    let results = l.append_batch(subs);
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(_) => assert!(!bad.contains(&i), "record {i} has a bad signature but was stored"),
            Err(e) => {
                assert!(bad.contains(&i), "record {i} refused: {e}");
                assert!(e.to_string().contains("signature"), "{e}");
            }
        }
    }
    assert_eq!(l.size().expect("size"), 1 + 1200 - bad.len() as u64);
    verify_db(&l, |_, _| {}).expect("verify-db passes");
}

/// Small calls leave their signature checks to the leader of their commit,
/// which verifies every waiting caller's as one batch: from 16 threads
/// appending singly and in small batches, exactly the records with a bad
/// signature are refused, each to its own caller, and the others land.
#[test]
fn signatures_checked_by_the_commit_leader_refuse_exactly_the_bad_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = new_ledger(dir.path());
    let is_bad = |n: usize| n % 7 == 3;
    let outcomes: Vec<(usize, Result<String, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16usize)
            .map(|t| {
                let l = l.clone();
                s.spawn(move || {
                    let mut got = Vec::new();
                    for round in 0..20usize {
                        let base = t * 1000 + round * 10;
                        // Even threads append one at a time, odd ones in batches of 5.
                        let ns: Vec<usize> = if t % 2 == 0 { vec![base] } else { (base..base + 5).collect() };
                        let subs = ns
                            .iter()
                            .map(|&n| {
                                let mut s = record(n);
                                if is_bad(n) {
                                    s.rec.body["run_id"] = serde_json::Value::String(format!("ci-run-{n}-altered"));
                                }
                                s
                            })
                            .collect();
                        let results = l.append_batch(subs);
                        assert_eq!(results.len(), ns.len());
                        got.extend(
                            ns.into_iter()
                                .zip(results.into_iter().map(|r| r.map(|r| r.leaf_hash).map_err(|e| e.to_string()))),
                        );
                    }
                    got
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("thread")).collect()
    });
    assert_eq!(outcomes.len(), 8 * 20 + 8 * 100);
    let by_hash: std::collections::HashMap<String, u64> =
        (1..l.size().expect("size")).map(|s| (leaf_hash(&l.leaf(s).expect("leaf")).to_hex(), s)).collect();
    let mut stored = 0;
    for (n, r) in &outcomes {
        match r {
            Ok(hash) => {
                assert!(!is_bad(*n), "record {n} has a bad signature but was stored");
                let seq = by_hash.get(hash).unwrap_or_else(|| panic!("record {n}'s receipt is not in the ledger"));
                let leaf = l.leaf(*seq).expect("leaf");
                assert!(
                    String::from_utf8_lossy(&leaf).contains(&format!("\"ci-run-{n}\"")),
                    "seq {seq} is not record {n}"
                );
                stored += 1;
            }
            Err(e) => {
                assert!(is_bad(*n), "record {n} refused: {e}");
                assert!(e.contains("signature"), "record {n}: {e}");
            }
        }
    }
    assert!(stored < outcomes.len() && stored > 0);
    assert_eq!(l.size().expect("size"), 1 + stored as u64, "exactly the good records are stored");
    verify_db(&l, |_, _| {}).expect("verify-db passes");
}
