//! Append, concurrency and proof benchmarks for the ledger, each next to a
//! raw baseline measured in the same process, so that ratios stay
//! meaningful on a small, noisy machine.
//!
//! Groups (parsed by scripts from `target/criterion/<group>/<name>/new/estimates.json`):
//! - `ledger_append`: `raw_sqlite_insert_batch`, `batched_unsigned`,
//!   `batched_signed`, `ed25519_verify_batch`.
//! - `ledger_concurrent`: `unsigned_16_threads` (issue 3's records),
//!   `signed_16_threads` (issue 4's), `raw_sqlite_autocommit_fsync`; p50/p99
//!   latency from a dedicated run of each goes to `latency_unsigned.json`
//!   and `latency.json` (signed).
//! - `ledger_proof`: `prove_inclusion`, `sha256_64B`; storage overhead goes
//!   to `storage.json`. The big ledger is built once and cached under
//!   `target/`.
//!
//! `EVIDENT_BENCH_SCALE=small` shrinks every size for a quick run;
//! `EVIDENT_BENCH_BUILD_BUDGET=<seconds>` changes the ~6 minute budget for
//! building the cached 10M-entry ledger (past it, the cache holds 1M).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signature, VerifyingKey};
use evident_ledger::store::Synchronous;
use evident_ledger::{Ledger, LedgerOptions, Signer, Submission};
use evident_verify::hash::leaf_hash;
use evident_verify::leaf::{Entry, LEAF_VERSION, Record};
use evident_verify::note::SignerKey;
use evident_verify::ts::Timestamp;
use rayon::prelude::*;
use serde_json::{Value, json};

/// mimalloc when the `mimalloc` feature is on (the default): appends parse
/// records into many small allocations across threads, which glibc's
/// allocator serves slowly.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ORIGIN: &str = "bench.evident/ledger";
const PRODUCER: &str = "deploy-bot";
const UNSIGNED_PRODUCER: &str = "legacy-batch";
const AT: &str = "2026-11-21T09:30:12Z";
/// Canonical leaf size the append benchmarks aim for.
const TARGET_LEAF_BYTES: usize = 500;
const THREADS: usize = 16;

/// Sizes for a full run or a quick (`EVIDENT_BENCH_SCALE=small`) one.
struct Scale {
    batch: usize,
    per_thread: usize,
    latency_per_thread: usize,
    proof_entries: u64,
    fallback_entries: u64,
    measure: Duration,
}

fn scale() -> Scale {
    if std::env::var("EVIDENT_BENCH_SCALE").is_ok_and(|s| s == "small") {
        Scale {
            batch: 1_000,
            per_thread: 50,
            latency_per_thread: 100,
            proof_entries: 100_000,
            fallback_entries: 100_000,
            measure: Duration::from_secs(2),
        }
    } else {
        Scale {
            batch: 10_000,
            per_thread: 500,
            latency_per_thread: 1_000,
            proof_entries: 10_000_000,
            fallback_entries: 1_000_000,
            measure: Duration::from_secs(8),
        }
    }
}

/// The cargo target directory, where criterion writes its results.
fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    // <target>/release/deps/append-<hash>
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// A temp dir on the same disk as `target/` (never a tmpfs), so fsync is real.
fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("evident-bench-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir")
}

fn ledger_key() -> SignerKey {
    SignerKey::from_seed(ORIGIN, &[1; 32]).expect("ledger key name")
}

fn producer_key() -> SignerKey {
    SignerKey::from_seed(PRODUCER, &[2; 32]).expect("producer key name")
}

fn options(path: PathBuf, sync: Synchronous) -> LedgerOptions {
    let mut o = LedgerOptions::new(path, ORIGIN, ledger_key());
    o.synchronous = sync;
    o.unsigned_producers = vec![UNSIGNED_PRODUCER.into()];
    o
}

/// A new ledger; with `signed`, the producer key is registered first.
fn new_ledger(dir: &Path, signed: bool) -> Ledger {
    let l = Ledger::create(options(dir.join("ledger.db"), Synchronous::Full)).expect("create ledger");
    if signed {
        l.add_key(PRODUCER, &producer_key().verifier(), Some("2020-01-01T00:00:00Z")).expect("register producer key");
    }
    l
}

fn signer() -> &'static Signer {
    static S: std::sync::OnceLock<Signer> = std::sync::OnceLock::new();
    S.get_or_init(|| Signer::new(producer_key()).expect("signer"))
}

/// An `invariant_result` body (schemas/examples/invariant_result.valid.json,
/// first example) with a unique run id and `pad` extra bytes of command line.
fn body(n: usize, pad: usize) -> Value {
    let flags: String = " --strict --quiet".chars().cycle().take(pad).collect();
    json!({
        "invariant_id": "INV-014",
        "severity": "P0",
        "status": "pass",
        "verification_command": format!("psql -f scripts/db/ci_invariant_gate.sql{flags}"),
        "evidence_hash": "sha256:f32499b0fb083d15376dcc00f79979bbcd5619df9b7ee9da163943324975c3fc",
        "duration_ms": 412,
        "run_id": format!("ci-bench-run-{n:08}"),
    })
}

fn submission(n: usize, pad: usize, signed: bool) -> Submission {
    let id = format!("rec-{n:08}");
    if signed {
        signer().sign(&id, "invariant_result", AT, body(n, pad)).expect("sign")
    } else {
        Submission::unsigned(Record {
            id,
            kind: "invariant_result".into(),
            producer: UNSIGNED_PRODUCER.into(),
            at: AT.into(),
            body: body(n, pad),
        })
    }
}

/// The canonical leaf a submission becomes at `seq` (same as the ledger writes).
fn leaf_of(sub: &Submission, seq: u64) -> Vec<u8> {
    let ts = Timestamp::from_datetime(chrono::Utc::now()).to_string();
    Entry { v: LEAF_VERSION, seq, ts, rec: sub.rec.clone(), sig: sub.sig.clone() }.to_leaf_bytes().expect("leaf")
}

/// Padding that makes a typical leaf of this kind [`TARGET_LEAF_BYTES`] long.
fn pad_for(signed: bool, n: usize) -> usize {
    let base = leaf_of(&submission(n / 2, 0, signed), n as u64 / 2).len();
    TARGET_LEAF_BYTES.saturating_sub(base)
}

/// `n` distinct ~500-byte submissions (signed in parallel when `signed`).
fn submissions(n: usize, signed: bool) -> Vec<Submission> {
    let pad = pad_for(signed, n);
    (0..n).into_par_iter().map(|i| submission(i, pad, signed)).collect()
}

fn assert_all_ok(results: &[Result<evident_ledger::AppendReceipt, evident_ledger::AppendError>]) {
    for (i, r) in results.iter().enumerate() {
        if let Err(e) = r {
            panic!("append {i} failed: {e}");
        }
    }
}

/// File bytes (db + WAL after a TRUNCATE checkpoint) of a SQLite database.
fn file_bytes(db: &Path) -> u64 {
    let conn = rusqlite::Connection::open(db).expect("open for checkpoint");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).expect("wal checkpoint");
    drop(conn);
    let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    size(db.to_path_buf()) + size(PathBuf::from(wal))
}

fn raw_sqlite(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("open raw sqlite");
    conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
    conn.pragma_update(None, "synchronous", "FULL").expect("synchronous");
    conn.execute_batch("CREATE TABLE IF NOT EXISTS t (seq INTEGER PRIMARY KEY, leaf BLOB NOT NULL)").expect("table");
    conn
}

// ---------------------------------------------------------------- ledger_append

/// One untimed batch: checks every record is accepted and reports the real
/// leaf size and storage per entry.
fn check_batch(name: &str, subs: &[Submission], signed: bool) {
    let dir = tempdir();
    let l = new_ledger(dir.path(), signed);
    assert_all_ok(&l.append_batch(subs.to_vec()));
    let size = l.size().expect("size");
    let leaf_total = l.leaf_bytes_total().expect("leaf bytes");
    drop(l);
    let file = file_bytes(&dir.path().join("ledger.db"));
    println!(
        "ledger_append/{name}: {size} entries, average leaf {} B, file {file} B, overhead {:.1} B/entry",
        leaf_total / size,
        (file as f64 - leaf_total as f64) / size as f64
    );
}

fn bench_append(c: &mut Criterion) {
    let sc = scale();
    let n = sc.batch;
    let unsigned = submissions(n, false);
    let signed = submissions(n, true);
    let leaves: Vec<Vec<u8>> = unsigned.iter().enumerate().map(|(i, s)| leaf_of(s, i as u64)).collect();

    let mut g = c.benchmark_group("ledger_append");
    g.sample_size(10).sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_secs(1));
    g.measurement_time(sc.measure);
    g.throughput(Throughput::Elements(n as u64));

    g.bench_function("raw_sqlite_insert_batch", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempdir();
                let mut conn = raw_sqlite(&dir.path().join("raw.db"));
                let start = Instant::now();
                let tx = conn.transaction().expect("begin");
                {
                    let mut ins = tx.prepare_cached("INSERT INTO t (seq, leaf) VALUES (?1, ?2)").expect("prepare");
                    for (i, leaf) in leaves.iter().enumerate() {
                        ins.execute(rusqlite::params![i as i64, leaf]).expect("insert");
                    }
                }
                tx.commit().expect("commit");
                total += start.elapsed();
            }
            total
        })
    });

    for (name, subs, is_signed) in [("batched_unsigned", &unsigned, false), ("batched_signed", &signed, true)] {
        let mut checked = false;
        g.bench_function(name, |b| {
            if !std::mem::replace(&mut checked, true) {
                check_batch(name, subs, is_signed);
            }
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempdir();
                    let l = new_ledger(dir.path(), is_signed);
                    let batch = subs.clone();
                    let start = Instant::now();
                    let results = l.append_batch(batch);
                    total += start.elapsed();
                    assert_all_ok(&results);
                }
                total
            })
        });
    }

    // What batch verification of the same signatures costs on 2 threads.
    let messages: Vec<Vec<u8>> = signed.iter().map(|s| s.rec.signing_bytes().expect("jcs")).collect();
    let message_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let sigs: Vec<Signature> = signed
        .iter()
        .map(|s| {
            let sig = s.sig.as_ref().expect("signed");
            Signature::from_bytes(&evident_verify::leaf::decode_sig(&sig.ed25519).expect("sig"))
        })
        .collect();
    let vk: VerifyingKey = *producer_key().verifier().key();
    let keys = vec![vk; n];
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("rayon pool");
    g.bench_function("ed25519_verify_batch", |b| {
        b.iter(|| {
            pool.install(|| {
                message_refs.par_chunks(1024).zip(sigs.par_chunks(1024)).zip(keys.par_chunks(1024)).for_each(
                    |((m, s), k)| {
                        ed25519_dalek::verify_batch(m, s, k).expect("batch verifies");
                    },
                )
            })
        })
    });
    g.finish();
}

// ------------------------------------------------------------ ledger_concurrent

/// `THREADS` threads each append their records one at a time, waiting for
/// each durable receipt. Returns the wall time and every append's latency.
fn run_concurrent(ledger: &Ledger, work: Vec<Vec<Submission>>) -> (Duration, Vec<Duration>) {
    let barrier = Barrier::new(work.len() + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = work
            .into_iter()
            .map(|subs| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(subs.len());
                    barrier.wait();
                    for sub in subs {
                        let t = Instant::now();
                        let r = ledger.append(sub);
                        lat.push(t.elapsed());
                        if let Err(e) = r {
                            panic!("append failed: {e}");
                        }
                    }
                    lat
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let lat: Vec<Duration> = handles.into_iter().flat_map(|h| h.join().expect("append thread")).collect();
        (start.elapsed(), lat)
    })
}

fn split(subs: &[Submission], per_thread: usize) -> Vec<Vec<Submission>> {
    subs.chunks(per_thread).map(<[Submission]>::to_vec).collect()
}

/// Commits that stored entries from `from` on (a signed ledger's seq 0 is
/// the key registration): every commit stamps all its entries with one `ts`.
fn commits(db: &Path, from: u64) -> u64 {
    let conn = rusqlite::Connection::open(db).expect("open");
    let n: i64 = conn
        .query_row("SELECT count(DISTINCT ts) FROM entries WHERE seq >= ?1", [from as i64], |r| r.get(0))
        .expect("count");
    n as u64
}

/// A dedicated run for percentiles, which criterion does not give:
/// prints them and writes `ledger_concurrent/<file>`.
fn latency_run(subs: &[Submission], per_thread: usize, signed: bool, file: &str) {
    let dir = tempdir();
    let l = new_ledger(dir.path(), signed);
    let appends = THREADS * per_thread;
    let (wall, mut lat) = run_concurrent(&l, split(&subs[..appends], per_thread));
    drop(l);
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).saturating_sub(1).min(lat.len() - 1)];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (p50, p99, max) = (us(pct(0.50)), us(pct(0.99)), us(pct(1.0)));
    let throughput = appends as f64 / wall.as_secs_f64();
    let commits = commits(&dir.path().join("ledger.db"), u64::from(signed));
    println!(
        "ledger_concurrent/latency (signed: {signed}): {THREADS} threads, {appends} appends in {:.3} s: \
         {throughput:.0} appends/s, p50 {p50:.0} µs, p99 {p99:.0} µs, max {max:.0} µs, {commits} commits \
         ({:.1} appends/commit)",
        wall.as_secs_f64(),
        appends as f64 / commits.max(1) as f64
    );
    let out = target_dir().join("criterion/ledger_concurrent");
    std::fs::create_dir_all(&out).expect("criterion dir");
    let report = json!({
        "p50_us": p50, "p99_us": p99, "max_us": max, "throughput_per_s": throughput,
        "threads": THREADS, "appends": appends, "commits": commits, "signed": signed,
    });
    std::fs::write(out.join(file), format!("{report:#}\n")).expect("write latency report");
}

fn bench_concurrent(c: &mut Criterion) {
    let sc = scale();
    let total = THREADS * sc.per_thread;
    let n = THREADS * sc.latency_per_thread.max(sc.per_thread);

    let mut g = c.benchmark_group("ledger_concurrent");
    g.sample_size(10).sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_secs(1));
    g.measurement_time(sc.measure);
    g.throughput(Throughput::Elements(total as u64));
    let mut first = None;
    for (name, file, signed) in
        [("unsigned_16_threads", "latency_unsigned.json", false), ("signed_16_threads", "latency.json", true)]
    {
        let subs = submissions(n, signed);
        let mut latency_done = false;
        g.bench_function(name, |b| {
            if !std::mem::replace(&mut latency_done, true) {
                latency_run(&subs, sc.latency_per_thread, signed, file);
            }
            b.iter_custom(|iters| {
                let mut sum = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempdir();
                    let l = new_ledger(dir.path(), signed);
                    let (wall, _) = run_concurrent(&l, split(&subs[..total], sc.per_thread));
                    sum += wall;
                }
                sum
            })
        });
        first.get_or_insert(subs[0].clone());
    }

    let dir = tempdir();
    let conn = raw_sqlite(&dir.path().join("raw.db"));
    let leaf = leaf_of(first.as_ref().expect("a submission"), 0);
    let mut seq = 0i64;
    g.throughput(Throughput::Elements(1));
    g.measurement_time(sc.measure / 2);
    g.bench_function("raw_sqlite_autocommit_fsync", |b| {
        let mut ins = conn.prepare_cached("INSERT INTO t (seq, leaf) VALUES (?1, ?2)").expect("prepare");
        b.iter(|| {
            seq += 1;
            ins.execute(rusqlite::params![seq, leaf]).expect("insert")
        })
    });
    g.finish();
}

// ----------------------------------------------------------------- ledger_proof

/// A tiny valid unsigned record: bulk filler for the big ledger.
fn minimal(i: u64) -> Submission {
    Submission::unsigned(Record {
        id: i.to_string(),
        kind: "invariant_result".into(),
        producer: UNSIGNED_PRODUCER.into(),
        at: AT.into(),
        body: json!({
            "invariant_id": "INV-001", "severity": "P3", "status": "skip",
            "verification_command": "true", "duration_ms": 0, "run_id": "r", "reason": "bench",
        }),
    })
}

fn cache_path(entries: u64) -> PathBuf {
    let label = match entries {
        n if n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    };
    target_dir().join(format!("bench-ledger-{label}.db"))
}

/// Opens the cached big ledger, building it first if needed: unsigned
/// minimal records in large batches, synchronous NORMAL. If the full size
/// is projected to take more than ~6 minutes, stops at the fallback size.
fn big_ledger(sc: &Scale) -> (Ledger, PathBuf) {
    for entries in [sc.proof_entries, sc.fallback_entries] {
        let path = cache_path(entries);
        if path.exists() {
            let l = Ledger::open(options(path.clone(), Synchronous::Normal)).expect("open cached ledger");
            if l.size().expect("size") == entries {
                println!("ledger_proof: reusing {} ({entries} entries)", path.display());
                return (l, path);
            }
        }
    }
    const BATCH: u64 = 50_000;
    // EVIDENT_BENCH_BUILD_BUDGET (seconds) lets a one-off cache build on a
    // busy machine take longer than the default ~6 minutes.
    let budget = std::env::var("EVIDENT_BENCH_BUILD_BUDGET")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(360), Duration::from_secs);
    let building = target_dir().join("bench-ledger-building.db");
    for suffix in ["", "-wal", "-shm"] {
        let mut p = building.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    let l = Ledger::create(options(building.clone(), Synchronous::Normal)).expect("create big ledger");
    let start = Instant::now();
    let written_before = io_written();
    let target = AtomicU64::new(sc.proof_entries);
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let decided = AtomicBool::new(sc.fallback_entries >= sc.proof_entries);
    // Two submitters: one prepares its batch (on the rayon pool) while the
    // other's batch is being committed, so both cores stay busy.
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let lo = next.fetch_add(BATCH, Ordering::SeqCst);
                    // Nothing past the fallback size is appended before the
                    // decision, so a fallback ledger has exactly that size.
                    while lo >= sc.fallback_entries && !decided.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    let hi = (lo + BATCH).min(target.load(Ordering::SeqCst));
                    if lo >= hi {
                        break;
                    }
                    let subs: Vec<Submission> = (lo..hi).into_par_iter().map(minimal).collect();
                    assert_all_ok(&l.append_batch(subs));
                    let d = done.fetch_add(hi - lo, Ordering::SeqCst) + (hi - lo);
                    if d % 1_000_000 < BATCH {
                        let secs = start.elapsed().as_secs_f64();
                        println!("ledger_proof: built {d} entries in {secs:.0} s ({:.0}/s)", d as f64 / secs);
                    }
                    // Decide on the fallback once, when the fallback size is reached.
                    if d == sc.fallback_entries {
                        let t = target.load(Ordering::SeqCst);
                        let projected = start.elapsed().as_secs_f64() * t as f64 / d as f64;
                        if projected > budget.as_secs_f64() {
                            println!(
                                "ledger_proof: {t} entries would take ~{projected:.0} s, over the {} s budget: \
                                 falling back to {}",
                                budget.as_secs(),
                                sc.fallback_entries
                            );
                            target.store(sc.fallback_entries, Ordering::SeqCst);
                        }
                        decided.store(true, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let target = target.into_inner();
    assert_eq!(l.size().expect("size"), target, "big ledger size");
    let secs = start.elapsed().as_secs_f64();
    drop(l);
    file_bytes(&building); // checkpoint so the cache is one file
    // Every byte the build wrote, every idempotency-index merge included.
    let written = (io_written() - written_before) as f64 / target as f64;
    println!("ledger_proof: built {target} entries in {secs:.0} s, {written:.0} B written per entry");
    let path = cache_path(target);
    std::fs::rename(&building, &path).expect("rename cached ledger");
    let build = json!({"entries": target, "secs": secs, "written_per_entry": written});
    std::fs::write(build_path(&path), format!("{build:#}\n")).expect("write build figures");
    let l = Ledger::open(options(path.clone(), Synchronous::Normal)).expect("open big ledger");
    (l, path)
}

/// Where the figures of the cached ledger's build are kept.
fn build_path(cache: &Path) -> PathBuf {
    cache.with_extension("build.json")
}

/// Bytes this process has written through system calls (WAL frames and
/// checkpoint copies alike).
fn io_written() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    io.lines().find_map(|l| l.strip_prefix("wchar:")).and_then(|v| v.trim().parse().ok()).expect("wchar")
}

/// The same batches of ~500 B unsigned records appended into a fresh
/// ledger and into a copy of the big one (`synchronous = full`): what a
/// large ledger costs per record (until schema v2, an index whose random
/// inserts dirtied one page per record). Median of three batches each;
/// printed and written to `ledger_proof/big_append.json`. The batches are
/// too few to start an idempotency-index merge in the big ledger; the
/// build's bytes written per entry, merges included, are in
/// `storage.json`.
fn big_append_run(path: &Path, size: u64) {
    const N: usize = 10_000;
    const ROUNDS: usize = 3;
    let pad = pad_for(false, N);
    let mut report = serde_json::Map::new();
    report.insert("entries".into(), json!(size));
    report.insert("batch".into(), json!(N));
    let fresh_dir = tempdir();
    let big_dir = tempdir();
    for label in ["fresh", "big"] {
        let l = if label == "fresh" {
            new_ledger(fresh_dir.path(), false)
        } else {
            // Copied and flushed before timing, so the copy's writeback
            // does not run during the appends.
            let copy = big_dir.path().join("ledger.db");
            std::fs::copy(path, &copy).expect("copy the big ledger");
            std::fs::File::open(&copy).and_then(|f| f.sync_all()).expect("flush the copy");
            Ledger::open(options(copy, Synchronous::Full)).expect("open the copy")
        };
        let mut rates = Vec::new();
        let db = l.options().path.clone();
        let before = io_written();
        for round in 0..ROUNDS {
            let subs: Vec<Submission> = (0..N).into_par_iter().map(|i| submission(round * N + i, pad, false)).collect();
            let t = Instant::now();
            assert_all_ok(&l.append_batch(subs));
            rates.push(N as f64 / t.elapsed().as_secs_f64());
        }
        // Every byte the appends cause, WAL and database file: the rounds'
        // writes, and a final checkpoint of what is left in the WAL (which
        // a round may leave to the next, or to this).
        let conn = rusqlite::Connection::open(&db).expect("open for checkpoint");
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).expect("checkpoint");
        let written = (io_written() - before) as f64 / (ROUNDS * N) as f64;
        rates.sort_by(f64::total_cmp);
        let rate = rates[ROUNDS / 2];
        println!("ledger_proof/big_append: {label} ledger: {rate:.0} records/s, {written:.0} B written per record");
        report.insert(label.into(), json!({"per_s": rate, "written_per_record": written}));
    }
    let out = target_dir().join("criterion/ledger_proof");
    std::fs::create_dir_all(&out).expect("criterion dir");
    std::fs::write(out.join("big_append.json"), format!("{:#}\n", Value::Object(report)))
        .expect("write big_append.json");
}

/// The big ledger, its size, and its storage figures (printed and written
/// to `ledger_proof/storage.json`).
fn proof_setup(sc: &Scale) -> (Ledger, u64) {
    let (ledger, path) = big_ledger(sc);
    let size = ledger.size().expect("size");
    let leaf_bytes = ledger.leaf_bytes_total().expect("leaf bytes");
    let file = file_bytes(&path);
    let overhead = (file as f64 - leaf_bytes as f64) / size as f64;
    println!(
        "ledger_proof/storage: {size} entries, file {file} B, leaves {leaf_bytes} B (avg {} B), \
         overhead {overhead:.1} B/entry",
        leaf_bytes / size
    );
    let out = target_dir().join("criterion/ledger_proof");
    std::fs::create_dir_all(&out).expect("criterion dir");
    let build: Option<Value> =
        std::fs::read_to_string(build_path(&path)).ok().and_then(|s| serde_json::from_str(&s).ok());
    let report = json!({"entries": size, "file_bytes": file, "leaf_bytes": leaf_bytes, "overhead_per_entry": overhead,
        "build": build});
    std::fs::write(out.join("storage.json"), format!("{report:#}\n")).expect("write storage.json");
    big_append_run(&path, size);
    (ledger, size)
}

/// xorshift64 with a fixed seed: the same seqs on every run.
fn seqs(size: u64) -> impl FnMut() -> u64 {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % size
    }
}

fn bench_proof(c: &mut Criterion) {
    let sc = scale();
    let mut big: Option<(Ledger, u64)> = None;
    let mut g = c.benchmark_group("ledger_proof");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(sc.measure / 2);
    g.throughput(Throughput::Elements(1));
    g.bench_function("prove_inclusion", |b| {
        let (ledger, size) = big.get_or_insert_with(|| {
            let (ledger, size) = proof_setup(&sc);
            // The proofs must be right, not only fast.
            let head = ledger.head().expect("head");
            let mut next = seqs(size);
            for _ in 0..100 {
                let seq = next();
                let proof = ledger.prove_inclusion(seq, size).expect("prove");
                let lh = leaf_hash(&ledger.leaf(seq).expect("leaf"));
                evident_verify::merkle::verify_inclusion(seq, size, &lh, &proof, &head.root).expect("proof verifies");
            }
            (ledger, size)
        });
        let size = *size;
        let mut next = seqs(size);
        b.iter(|| ledger.prove_inclusion(black_box(next()), size).expect("prove"))
    });
    let block = [0x5au8; 64];
    g.bench_function("sha256_64B", |b| {
        use sha2::Digest as _;
        b.iter(|| sha2::Sha256::digest(black_box(&block)))
    });
    g.finish();
}

criterion_group!(benches, bench_append, bench_concurrent, bench_proof);
criterion_main!(benches);
