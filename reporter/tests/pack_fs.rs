//! Packs end to end with the `fs` anchor: real SQLite ledgers whose clock
//! puts records on chosen UTC days, `build --missing` through the library
//! and through the real binary, the chain of packs, anchoring and its
//! receipts, idempotent reruns, byte-identical rebuilds, and the refusals
//! (day not closed, gap, before the first day, another reporter building).

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::time::Duration;

use common::*;
use evident_reporter::anchoring::{anchor_name, status_path};
use evident_reporter::pack::{self, build_day};
use evident_reporter::run::BuildLock;
use evident_reporter::{ReportError, Reporter};
use evident_verify::manifest::files;
use evident_verify::ts::Timestamp;
use serde::Deserialize;

const D1: &str = "2026-03-10";
const D2: &str = "2026-03-11";
const D3: &str = "2026-03-12";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Three busy days on a ledger, and `now` just after the third closed.
fn three_days() -> (Fixture, Timestamp) {
    let fx = Fixture::new(at(day(D1), 60));
    for d in [D1, D2, D3] {
        busy_day(&fx, day(d), 3);
    }
    let now = at(day(D3), 86_400 + 600);
    // The reporter runs after the days: its receipts land then.
    fx.set_time(now);
    (fx, now)
}

#[test]
fn build_missing_builds_links_and_anchors_three_days() {
    let (fx, now) = three_days();
    let reporter = fx.reporter(fx.config());
    let rt = rt();
    let done = rt.block_on(reporter.build_missing(now)).expect("build --missing");
    assert_eq!(done.iter().map(|d| d.day.as_str()).collect::<Vec<_>>(), [D1, D2, D3]);

    let mut previous: Option<std::path::PathBuf> = None;
    let mut end = 0;
    for d in &done {
        assert!(!d.already_built);
        assert!(d.rules_failed.is_empty(), "{}: a compliant day passes every rule: {:?}", d.day, d.rules_failed);
        let (m, leaves) = check_pack(&d.pack_dir, &d.tar, previous.as_deref());
        assert_eq!((m.start, m.end), (d.start, d.end));
        assert_eq!(m.start, end, "days are contiguous");
        assert!(leaves.len() >= 3 * 8 + 2, "{}: {} entries", d.day, leaves.len());
        assert_eq!(sha256_hex(&std::fs::read(d.pack_dir.join(files::MANIFEST)).expect("m")), d.manifest_sha256);
        assert_eq!(m.created_at, now.to_string());
        // Keys introduced before the day travel with it, each with its seq.
        if m.start == 0 {
            assert!(m.producer_keys.is_empty());
            assert_eq!(m.counts.by_kind["key_event"], 5);
        } else {
            assert_eq!(m.producer_keys.len(), 5);
            for k in &m.producer_keys {
                assert!(k.introduced_seq < 5 && k.valid_until.is_none());
                assert_eq!(k.valid_from, "2020-01-01T00:00:00.000000Z");
            }
        }
        // Anchors: one receipt per artifact, WORM files read-only.
        assert_eq!(d.anchors.len(), 2);
        for (a, artifact) in d.anchors.iter().zip(["pack", "checkpoint"]) {
            assert_eq!((a.artifact.as_str(), a.status.as_str(), a.backend.as_str()), (artifact, "recorded", "fs"));
            let worm = fx.worm_dir.join(anchor_name(day(&d.day), artifact));
            let bytes = std::fs::read(&worm).expect("anchored file");
            let local = if artifact == "pack" { d.tar.clone() } else { d.pack_dir.join(files::CHECKPOINT) };
            assert_eq!(bytes, std::fs::read(local).expect("local"), "{artifact} anchored as built");
            assert_eq!(a.sha256, sha256_hex(&bytes));
            let mode = std::fs::metadata(&worm).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode & 0o222, 0, "{} is read-only ({mode:o})", worm.display());
        }
        previous = Some(d.pack_dir.clone());
        end = m.end;
    }

    // The receipts are ledger entries after the last day, valid bodies.
    let receipts = anchor_receipts(&fx.ledger);
    assert_eq!(receipts.len(), 6);
    for d in &done {
        for a in &d.anchors {
            let (seq, body) = receipts.iter().find(|(s, _)| *s == a.seq).expect("receipt in the ledger");
            assert!(*seq >= end);
            assert_eq!(body["day"], d.day.as_str());
            assert_eq!(body["artifact"], a.artifact.as_str());
            assert_eq!(body["manifest_sha256"], d.manifest_sha256.as_str());
            assert_eq!(body["sha256"], a.sha256.as_str());
            assert_eq!(body["tree_size"], d.end);
            assert_eq!(body["backend"], "fs");
        }
    }

    // The regulator's verifier accepts the chain, as directories and as tars.
    assert_eq!(verify_chain_with_verifier(&fx.packs_dir), 3);

    // A rerun is a no-op: nothing built, nothing appended.
    let size = fx.ledger.size().expect("size");
    let again = rt.block_on(reporter.build_missing(now)).expect("rerun");
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(fx.ledger.size().expect("size"), size);
    let st = reporter.status(now).expect("status");
    assert!(st.up_to_date(), "{st:?}");
    assert_eq!(st.days.len(), 3);

    // `build --day` of a built day reports it and changes nothing.
    let one = rt.block_on(reporter.build_day(day(D2), now, std::sync::Arc::new(pack::NoProgress))).expect("build");
    assert!(one.already_built);
    assert!(one.anchors.iter().all(|a| a.status == "cached"));

    // Without the local cache the truth is re-read: the store adopts the
    // identical bytes, the ledger already has the receipts.
    for d in [D1, D2, D3] {
        std::fs::remove_file(status_path(&fx.packs_dir, day(d))).expect("remove cache");
    }
    let st = reporter.status(now).expect("status");
    assert_eq!(st.unanchored, [D1, D2, D3]);
    let redo = rt.block_on(reporter.build_missing(now)).expect("re-anchor");
    assert_eq!(redo.len(), 3);
    assert!(redo.iter().flat_map(|d| &d.anchors).all(|a| a.status == "already-recorded"), "{redo:?}");
    assert_eq!(fx.ledger.size().expect("size"), size, "no receipt twice");
    assert!(reporter.status(now).expect("status").up_to_date());

    // A missing tar (a crash after the rename) is rewritten identically.
    let tar = pack::tar_path(&fx.packs_dir, day(D3));
    let before = std::fs::read(&tar).expect("tar");
    std::fs::remove_file(&tar).expect("rm tar");
    rt.block_on(reporter.build_day(day(D3), now, std::sync::Arc::new(pack::NoProgress))).expect("build");
    assert_eq!(std::fs::read(&tar).expect("tar"), before);
}

#[test]
fn nightly_runs_carry_the_previous_receipts() {
    // The daemon's normal life: each night shortly after midnight it packs
    // yesterday, and its receipts land in today, so today's pack carries
    // the proof of yesterday's anchoring.
    let fx = Fixture::new(at(day(D1), 60));
    let reporter = fx.reporter(fx.config());
    let rt = rt();
    let mut previous = None;
    for d in [D1, D2, D3] {
        busy_day(&fx, day(d), 1);
        let night = at(day(d), 86_400 + 300);
        fx.set_time(night);
        let done = rt.block_on(reporter.build_missing(night)).expect("nightly");
        assert_eq!(done.len(), 1);
        let (m, _) = check_pack(&done[0].pack_dir, &done[0].tar, previous.as_deref());
        let receipts = m.counts.by_kind.get("anchor_receipt").copied().unwrap_or(0);
        assert_eq!(receipts, if d == D1 { 0 } else { 2 }, "{d}");
        previous = Some(done[0].pack_dir.clone());
    }
    assert_eq!(verify_chain_with_verifier(&fx.packs_dir), 3);
}

#[test]
fn three_empty_days_get_packs() {
    // Entries only on the first day; the next three days are empty.
    let fx = Fixture::new(at(day(D1), 60));
    flow(&fx, day(D1), 3600, "only");
    let last = day("2026-03-13");
    let now = at(last, 86_400 + 1);
    fx.set_time(now);
    let mut cfg = fx.config();
    cfg.grace = Duration::ZERO;
    let reporter = fx.reporter(cfg);
    let done = rt().block_on(reporter.build_missing(now)).expect("build --missing");
    assert_eq!(done.iter().map(|d| d.day.as_str()).collect::<Vec<_>>(), [D1, D2, D3, "2026-03-13"]);
    let first_end = done[0].end;
    let mut previous = Some(done[0].pack_dir.clone());
    for d in &done[1..] {
        assert_eq!((d.start, d.end), (first_end, first_end), "{} is empty", d.day);
        let (m, leaves) = check_pack(&d.pack_dir, &d.tar, previous.as_deref());
        assert!(leaves.is_empty());
        assert!(m.counts.by_kind.is_empty());
        let report = read_report(&d.pack_dir);
        assert!(report.rules.iter().all(|r| r.passed && r.applicable == 0 && r.compliant_per_mille.is_none()));
        assert_eq!(d.anchors.len(), 2);
        previous = Some(d.pack_dir.clone());
    }
    assert_eq!(verify_chain_with_verifier(&fx.packs_dir), 4);
}

#[test]
fn rebuilding_a_deleted_pack_is_byte_identical() {
    let (fx, now) = three_days();
    let cfg = fx.config();
    for d in [D1, D2] {
        build_day(&fx.ledger, &cfg, day(d), now).expect("build");
    }
    let dir = pack::pack_dir(&fx.packs_dir, day(D2));
    let read = |name: &str| std::fs::read(dir.join(name)).expect("file");
    let before: Vec<Vec<u8>> = files::ORDER.iter().map(|n| read(n)).collect();
    std::fs::remove_dir_all(&dir).expect("rm pack");
    std::fs::remove_file(pack::tar_path(&fx.packs_dir, day(D2))).expect("rm tar");

    let later = Timestamp(now.0 + 3_600_000_000);
    let again = build_day(&fx.ledger, &cfg, day(D2), later).expect("rebuild");
    assert!(!again.already_built);
    for (name, old) in files::ORDER.iter().zip(&before) {
        let new = read(name);
        match *name {
            files::MANIFEST => {
                let mut a = evident_verify::manifest::Manifest::parse(old).expect("old");
                let b = evident_verify::manifest::Manifest::parse(&new).expect("new");
                assert_ne!(a.created_at, b.created_at);
                assert_eq!(b.created_at, later.to_string());
                a.created_at = b.created_at.clone();
                assert_eq!(a, b, "the manifest differs only in created_at");
            }
            files::MANIFEST_SIG | files::MANIFEST_ASC => assert_ne!(&new, old, "{name} signs the new manifest"),
            _ => assert_eq!(&new, old, "{name} is byte-identical"),
        }
    }
    check_pack(&dir, &again.tar, Some(&pack::pack_dir(&fx.packs_dir, day(D1))));
    assert_eq!(verify_chain_with_verifier(&fx.packs_dir), 2);
}

#[test]
fn refusals_name_the_day_and_the_way_out() {
    let (fx, now) = three_days();
    let cfg = fx.config();

    // Not closed: the day plus the grace period has not passed.
    let early = at(day(D3), 86_400 + 120);
    match build_day(&fx.ledger, &cfg, day(D3), early) {
        Err(e @ ReportError::NotClosed { .. }) => assert!(e.to_string().contains("2026-03-13T00:05:00"), "{e}"),
        other => panic!("expected NotClosed, got {other:?}"),
    }
    // A gap: D2 needs D1's pack first.
    match build_day(&fx.ledger, &cfg, day(D2), now) {
        Err(e @ ReportError::Gap { .. }) => assert!(e.to_string().contains("build --missing"), "{e}"),
        other => panic!("expected Gap, got {other:?}"),
    }
    assert!(!pack::pack_dir(&fx.packs_dir, day(D2)).exists());
    // Before the ledger's first day.
    assert!(matches!(build_day(&fx.ledger, &cfg, day("2026-03-09"), now), Err(ReportError::BeforeFirstDay { .. })));
    // Leftovers of a failed build are removed.
    let leftovers: Vec<_> = std::fs::read_dir(&fx.packs_dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Packing D1 sealed it: a writer whose clock is behind lands after it.
    build_day(&fx.ledger, &cfg, day(D1), now).expect("build D1");
    let seq = fx.append_at_any(at(day(D1), 80_000));
    let e = fx.ledger.leaf(seq).expect("leaf");
    let ts = evident_verify::leaf::Entry::parse_leaf(&e).expect("entry").timestamp().expect("ts");
    assert!(ts >= at(day(D2), 0), "{ts} is not in the sealed day");
}

#[test]
fn one_reporter_at_a_time() {
    let (fx, now) = three_days();
    let mut cfg = fx.config();
    cfg.lock_wait = Duration::from_millis(300);
    let reporter = fx.reporter(cfg);
    let rt = rt();
    let lock = rt.block_on(BuildLock::acquire(&fx.packs_dir, Duration::ZERO)).expect("lock");
    match rt.block_on(reporter.build_missing(now)) {
        Err(e @ ReportError::Busy { .. }) => assert!(e.to_string().contains("another reporter is building"), "{e}"),
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(pack::pack_days(&fx.packs_dir).expect("days").is_empty());
    drop(lock);
    assert_eq!(rt.block_on(reporter.build_missing(now)).expect("after release").len(), 3);
}

/// The binary's `--json` output, as a consumer reads it.
#[derive(Debug, Deserialize)]
struct JsonDay {
    day: String,
    start: u64,
    end: u64,
    pack_dir: std::path::PathBuf,
    tar: std::path::PathBuf,
    manifest_sha256: String,
    anchors: Vec<JsonAnchor>,
    rules_failed: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct JsonAnchor {
    artifact: String,
    location: String,
    sha256: String,
    seq: u64,
}

#[test]
fn the_binary_builds_missing_days_and_reruns_as_a_no_op() {
    // The binary uses the real clock: records on the three days before today.
    let t = today();
    let days: Vec<_> = (1..=3).rev().map(|n| t - chrono::Days::new(n)).collect();
    let fx = Fixture::new(at(days[0], 60));
    for d in &days {
        busy_day(&fx, *d, 2);
    }
    fx.set_time(now());
    let toml = fx.write_reporter_toml("");
    let bin = env!("CARGO_BIN_EXE_evident-reporter");
    let run = |args: &[&str]| {
        let out = Command::new(bin).arg("--config").arg(&toml).args(args).output().expect("run the binary");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, stdout, stderr) = run(&["--json", "build", "--missing"]);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let out: Vec<JsonDay> =
        stdout.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    assert_eq!(
        out.iter().map(|d| d.day.clone()).collect::<Vec<_>>(),
        days.iter().map(|d| d.to_string()).collect::<Vec<_>>()
    );
    let mut previous: Option<std::path::PathBuf> = None;
    for d in &out {
        let (m, _) = check_pack(&d.pack_dir, &d.tar, previous.as_deref());
        assert_eq!((m.start, m.end), (d.start, d.end));
        assert_eq!(d.manifest_sha256, sha256_hex(&std::fs::read(d.pack_dir.join(files::MANIFEST)).expect("m")));
        assert!(d.rules_failed.is_empty());
        assert_eq!(d.anchors.iter().map(|a| a.artifact.as_str()).collect::<Vec<_>>(), ["pack", "checkpoint"]);
        for a in &d.anchors {
            assert_eq!(sha256_hex(&std::fs::read(&a.location).expect("anchored")), a.sha256);
            assert!(a.seq >= out[2].end);
        }
        previous = Some(d.pack_dir.clone());
    }
    assert_eq!(anchor_receipts(&fx.ledger).len(), 6);

    let size = fx.ledger.size().expect("size");
    let (code, stdout, stderr) = run(&["--json", "build", "--missing"]);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(stdout, "", "a rerun builds nothing");
    assert_eq!(fx.ledger.size().expect("size"), size);

    let (code, stdout, _) = run(&["build", "--missing"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("nothing to do"), "{stdout}");

    let (code, stdout, _) = run(&["--json", "status"]);
    assert_eq!(code, Some(0));
    let st: serde_json::Value = serde_json::from_str(stdout.trim()).expect("status JSON");
    assert_eq!(st["missing"], serde_json::json!([]));
    assert_eq!(st["days"].as_array().map(Vec::len), Some(3));

    // Today is not closed: a clear message and exit 2.
    let (code, _, stderr) = run(&["build", "--day", &t.to_string()]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("not closed"), "{stderr}");
    // Usage errors exit 2 too.
    let (code, _, _) = run(&["build", "--day", "2026-13-01"]);
    assert_eq!(code, Some(2));
    let (code, _, _) = run(&["build"]);
    assert_eq!(code, Some(2));
}

#[test]
fn the_library_api_needs_no_runtime_for_building() {
    // pack::build_day is plain blocking code; only anchoring is async.
    let (fx, now) = three_days();
    let p = build_day(&fx.ledger, &fx.config(), day(D1), now).expect("build");
    assert_eq!(p.manifest.start, 0);
    let again = build_day(&fx.ledger, &fx.config(), day(D1), now).expect("again");
    assert!(again.already_built);
    assert_eq!(again.manifest_sha256, p.manifest_sha256);
    let _ = Reporter::with_ledger(fx.config(), fx.ledger.clone()).expect("reporter");
}

#[test]
fn a_failed_anchor_records_nothing_and_a_rerun_completes_it() {
    let (fx, now) = three_days();
    let reporter = fx.reporter(fx.config());
    let rt = rt();
    // Someone left different bytes under D1's checkpoint name in the store:
    // the pack tar anchors, the checkpoint is refused.
    let squatter = fx.worm_dir.join(anchor_name(day(D1), "checkpoint"));
    std::fs::create_dir_all(squatter.parent().expect("parent")).expect("mkdir");
    std::fs::write(&squatter, b"not the checkpoint").expect("squat");

    let e = match rt.block_on(reporter.build_missing(now)) {
        Err(e @ ReportError::Anchor { .. }) => evident_reporter::run::chain(&e),
        other => panic!("expected an anchor failure, got {other:?}"),
    };
    assert!(e.contains(D1) && e.contains("checkpoint") && e.contains(&fx.worm_dir.display().to_string()), "{e}");
    assert!(e.contains("already anchored with different content"), "{e}");
    let receipts = anchor_receipts(&fx.ledger);
    assert_eq!(receipts.len(), 1, "only the tar that was anchored has a receipt");
    assert_eq!(receipts[0].1["artifact"], "pack");
    assert!(!status_path(&fx.packs_dir, day(D1)).exists());
    assert_eq!(pack::pack_days(&fx.packs_dir).expect("days"), [day(D1)], "later days wait for this one");

    // The binary reports the same failure with exit 2.
    let toml = fx.write_reporter_toml("");
    let out = Command::new(env!("CARGO_BIN_EXE_evident-reporter"))
        .arg("--config")
        .arg(&toml)
        .args(["build", "--missing"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("anchoring the checkpoint of {D1} in fs:")), "{stderr}");

    // Once the store is fixed, a rerun completes the missing anchor and
    // every later day, without a second receipt for the tar.
    std::fs::remove_file(&squatter).expect("unsquat");
    let done = rt.block_on(reporter.build_missing(now)).expect("rerun");
    assert_eq!(done.iter().map(|d| d.day.as_str()).collect::<Vec<_>>(), [D1, D2, D3]);
    assert_eq!(done[0].anchors[0].status, "already-recorded");
    assert_eq!(done[0].anchors[1].status, "recorded");
    assert_eq!(anchor_receipts(&fx.ledger).len(), 6);
    assert!(reporter.status(now).expect("status").up_to_date());
}

/// A leaf changed in the database with plain SQL (its trigger dropped), in a
/// way that still parses and breaks no rule: the build stops before signing
/// anything, names the day and both roots, and leaves no pack behind.
#[test]
fn a_leaf_changed_outside_the_ledger_stops_the_build() {
    let (fx, now) = three_days();
    let cfg = fx.config();
    build_day(&fx.ledger, &cfg, day(D1), now).expect("day 1 is intact");
    let seq = fx.ledger.seq_at_time(pack::day_start(day(D2))).expect("start of day 2") + 3;
    let leaf = String::from_utf8(fx.ledger.leaf(seq).expect("leaf")).expect("utf8");
    let edited = leaf.replacen("\"id\":\"", "\"id\":\"x", 1);
    assert_ne!(edited, leaf);
    let raw = rusqlite::Connection::open(fx.dir.path().join("ledger/ledger.db")).expect("open the database");
    raw.execute_batch("DROP TRIGGER entries_no_update").expect("drop trigger");
    raw.execute("UPDATE entries SET leaf = ?1 WHERE seq = ?2", rusqlite::params![edited.as_bytes(), seq as i64])
        .expect("edit");
    drop(raw);
    match build_day(&fx.ledger, &cfg, day(D2), now) {
        Err(e @ ReportError::Integrity { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(D2) && msg.contains("verify-db"), "{msg}");
        }
        other => panic!("a changed leaf was packed: {other:?}"),
    }
    assert!(!pack::pack_dir(&fx.packs_dir, day(D2)).exists(), "no pack for the day");
    assert!(!pack::tar_path(&fx.packs_dir, day(D2)).exists(), "no tar for the day");
    let leftovers: Vec<_> = std::fs::read_dir(&fx.packs_dir)
        .expect("packs dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(D2))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
