//! The nightly pipeline at scale: one closed UTC day of N signed ~500-byte
//! records is packed by the release `evident-reporter` and verified by the
//! release `evident-verify`, each under `/usr/bin/time -v` for wall time and
//! peak RSS, next to raw baselines measured in the same run on the same
//! bytes (zstd -3 + SHA-256; zstd decode + SHA-256; ed25519 `verify_batch`
//! of the same signatures on 2 threads).
//!
//! `EVIDENT_BENCH_SCALE=small` packs 100,000 entries, otherwise 1,000,000.
//! The ledger is built once (untimed) and cached under
//! `target/pipeline/ledger-<N>/`; every run packs a fresh copy of it, since
//! a build appends its anchor receipts to the ledger it packs.
//!
//! Writes `target/pipeline/results.json` (read by
//! `scripts/render_benchmarks.py`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ed25519_dalek::{Signature, VerifyingKey};
use evident_ledger::config::Config;
use evident_ledger::{Ledger, Signer, Submission, keyfile, pgp::PgpSigner};
use evident_verify::leaf::{Entry, LEAF_VERSION, decode_sig};
use evident_verify::note::SignerKey;
use evident_verify::ts::Timestamp;
use rayon::prelude::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ORIGIN: &str = "bench.evident/pipeline";
const PRODUCER: &str = "ci-invariants";
const KIND: &str = "invariant_result";
const DAY: &str = "2026-03-02";
/// Size of JCS(rec), the canonical record a producer signs, aimed for. The
/// leaf (record, signature, seq, ts) is about 200 bytes more.
const TARGET_RECORD_BYTES: usize = 500;
const BATCH: usize = 10_000;
/// Simulated time between records: 1M records stay within the day.
const STEP_MICROS: i64 = 80_000;
/// Chunk size for the `verify_batch` baseline.
const VERIFY_CHUNK: usize = 256;
const MARKER: &str = "complete";

fn entries_for_scale() -> usize {
    if std::env::var("EVIDENT_BENCH_SCALE").is_ok_and(|s| s == "small") { 100_000 } else { 1_000_000 }
}

/// The cargo target directory.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn day() -> Result<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(DAY, "%Y-%m-%d").context("day")
}

fn ledger_key() -> Result<SignerKey> {
    Ok(SignerKey::from_seed(ORIGIN, &[7; 32])?)
}

fn producer_key() -> Result<SignerKey> {
    Ok(SignerKey::from_seed(PRODUCER, &[8; 32])?)
}

/// An `invariant_result` body with a unique run id, padded by `pad` bytes of
/// command-line flags.
fn body(n: usize, pad: usize) -> Value {
    let flags: String = " --strict --quiet".chars().cycle().take(pad).collect();
    json!({
        "invariant_id": "INV-014",
        "severity": "P0",
        "status": "pass",
        "verification_command": format!("psql -f scripts/db/ci_invariant_gate.sql{flags}"),
        "evidence_hash": format!("sha256:{:x}", Sha256::digest(format!("evidence {n}").as_bytes())),
        "duration_ms": 400 + (n % 97) as u64,
        "run_id": format!("ci-pipeline-run-{n:08}"),
    })
}

/// The time of record `n`.
fn record_time(n: usize) -> Result<Timestamp> {
    Ok(Timestamp(Timestamp::start_of_day(day()?).0 + 1_000_000 + n as i64 * STEP_MICROS))
}

fn submission(signer: &Signer, n: usize, pad: usize) -> Result<Submission> {
    let at = record_time(n)?.to_string();
    Ok(signer.sign(&format!("inv-{n:08}"), KIND, &at, body(n, pad))?)
}

/// Padding that makes JCS(rec) [`TARGET_RECORD_BYTES`] long.
fn pad_for(signer: &Signer, n: usize) -> Result<usize> {
    let sub = submission(signer, n, 0)?;
    Ok(TARGET_RECORD_BYTES.saturating_sub(sub.rec.signing_bytes()?.len()))
}

/// What the cache marker holds: the size and shape of the cached ledger.
fn marker_text(n: usize) -> String {
    format!("{n} records, JCS(rec) {TARGET_RECORD_BYTES} B, day {DAY}")
}

/// Makes every file under `p` writable (the fs anchor writes 0444 files),
/// then removes it.
fn remove_tree(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if !p.exists() {
        return Ok(());
    }
    fn walk(p: &Path) -> std::io::Result<()> {
        let meta = std::fs::symlink_metadata(p)?;
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        let mode = if meta.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
        if meta.is_dir() {
            for e in std::fs::read_dir(p)? {
                walk(&e?.path())?;
            }
        }
        Ok(())
    }
    walk(p).with_context(|| format!("making {} writable", p.display()))?;
    std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))
}

/// Builds (untimed) the cached ledger of `n` signed records on [`DAY`], or
/// reuses it if its marker says it is complete.
fn setup_ledger(dir: &Path, n: usize) -> Result<()> {
    let marker = dir.join(MARKER);
    if std::fs::read_to_string(&marker).is_ok_and(|s| s.trim() == marker_text(n)) {
        println!("pipeline: reusing the cached ledger {}", dir.display());
        return Ok(());
    }
    remove_tree(dir)?;
    std::fs::create_dir_all(dir)?;
    println!("pipeline: building a ledger of {n} signed records in {} (untimed)", dir.display());
    let began = Instant::now();

    let mut cfg = Config::new(ORIGIN, dir);
    let key = ledger_key()?;
    keyfile::write_signer_key(&cfg.resolve(&cfg.key_file), &key)?;
    let pgp = PgpSigner::from_seed(key.seed(), "Evident pipeline bench", evident_ledger::pgp_creation_time())?;
    std::fs::write(cfg.resolve(&cfg.pgp_cert), pgp.cert_armored()?)?;
    cfg.base = PathBuf::new();
    std::fs::write(dir.join("evident.toml"), cfg.to_toml())?;
    cfg.base = dir.to_path_buf();

    let clock = evident_examples::demo::SimClock::new(record_time(0)?);
    let mut opts = cfg.options()?;
    opts.clock = clock.clock();
    let ledger = Ledger::create(opts)?;
    ledger.add_key(PRODUCER, &producer_key()?.verifier(), Some("2020-01-01T00:00:00Z"))?;
    let signer = Signer::new(producer_key()?)?;
    let pad = pad_for(&signer, n / 2)?;
    let sample = submission(&signer, n / 2, pad)?;
    let leaf =
        Entry { v: LEAF_VERSION, seq: n as u64 / 2, ts: sample.rec.at.clone(), rec: sample.rec, sig: sample.sig }
            .to_leaf_bytes()?;
    println!("pipeline: records padded by {pad} B: leaf {} B", leaf.len());

    for (b, first) in (0..n).step_by(BATCH).enumerate() {
        let last = (first + BATCH).min(n);
        let subs: Vec<Submission> =
            (first..last).into_par_iter().map(|i| submission(&signer, i, pad)).collect::<Result<_>>()?;
        // The batch commits at the time of its last record.
        clock.set(record_time(last - 1)?);
        for (i, r) in ledger.append_batch(subs).into_iter().enumerate() {
            r.with_context(|| format!("appending record {}", first + i))?;
        }
        if (b + 1) % 10 == 0 || last == n {
            println!("pipeline: {last}/{n} appended ({:.0} s)", began.elapsed().as_secs_f64());
        }
    }
    ensure!(ledger.size()? == n as u64 + 1, "ledger size {} (expected {})", ledger.size()?, n + 1);
    drop(ledger);
    std::fs::write(&marker, marker_text(n))?;
    println!("pipeline: ledger built in {:.1} s", began.elapsed().as_secs_f64());
    Ok(())
}

/// A fresh working copy of the cached ledger plus empty packs and worm
/// directories and the reporter's configuration. Returns the reporter TOML.
fn setup_run(cache: &Path, run: &Path) -> Result<PathBuf> {
    remove_tree(run)?;
    let ledger_dir = run.join("ledger");
    std::fs::create_dir_all(&ledger_dir)?;
    for name in ["evident.toml", "ledger.key", "ledger-cert.asc", "ledger.db", "ledger.db-wal"] {
        let from = cache.join(name);
        if from.exists() {
            let to = ledger_dir.join(name);
            std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
            // The copy's ~1 GB must reach the disk now: left to background
            // writeback it competed with the timed build's writes and fsyncs
            // (builds 0.26–0.6 s slower in 3 alternating pairs).
            std::fs::File::open(&to).and_then(|f| f.sync_all()).with_context(|| format!("syncing {}", to.display()))?;
        }
    }
    let packs = run.join("packs");
    let worm = run.join("worm");
    let toml = format!(
        "ledger = {:?}\npacks_dir = {:?}\n\n[anchor]\nkind = \"fs\"\ndir = {:?}\n",
        ledger_dir.join("evident.toml").display().to_string(),
        packs.display().to_string(),
        worm.display().to_string(),
    );
    let path = run.join("reporter.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

/// Wall time and peak RSS of one process, from `/usr/bin/time -v`.
#[derive(Clone, Copy, Debug)]
struct Measured {
    wall_s: f64,
    max_rss_mib: f64,
}

impl Measured {
    fn json(self) -> Value {
        json!({"wall_s": self.wall_s, "max_rss_mib": self.max_rss_mib})
    }
}

fn parse_wall(v: &str) -> Option<f64> {
    // h:mm:ss or m:ss.ss
    let parts: Vec<f64> = v.trim().split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    Some(parts.iter().fold(0.0, |acc, p| acc * 60.0 + p))
}

/// Runs `bin args` under `/usr/bin/time -v`; fails unless it exits 0.
fn timed(what: &str, bin: &Path, args: &[&str]) -> Result<Measured> {
    println!("pipeline: /usr/bin/time -v {} {}", bin.display(), args.join(" "));
    let began = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(bin)
        .args(args)
        .output()
        .with_context(|| format!("running /usr/bin/time -v {}", bin.display()))?;
    let inproc = began.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{what} failed ({}):\n{stdout}\n{stderr}", out.status);
    }
    let field = |name: &str| {
        stderr.lines().find_map(|l| l.trim().strip_prefix(name).and_then(|r| r.rsplit_once(": ")).map(|(_, v)| v))
    };
    let wall_s = field("Elapsed (wall clock) time").and_then(parse_wall).context("no wall time from /usr/bin/time")?;
    let rss_kb: f64 = field("Maximum resident set size")
        .and_then(|v| v.trim().parse().ok())
        .context("no maximum RSS from /usr/bin/time")?;
    let cpu = |name: &str| field(name).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(f64::NAN);
    let (user, sys) = (cpu("User time (seconds)"), cpu("System time (seconds)"));
    let m = Measured { wall_s, max_rss_mib: rss_kb / 1024.0 };
    println!(
        "pipeline: {what}: {:.2} s wall ({:.2} s in-process), {user:.2} s user + {sys:.2} s sys CPU ({}), {:.0} MiB peak RSS",
        m.wall_s,
        inproc.as_secs_f64(),
        field("Percent of CPU this job got").unwrap_or("?").trim(),
        m.max_rss_mib
    );
    for l in stdout.lines().take(20) {
        println!("    {l}");
    }
    Ok(m)
}

/// The release binaries, built if missing (`scripts/bench` builds them first).
fn release_bins() -> Result<(PathBuf, PathBuf)> {
    let rel = target_dir().join("release");
    let (reporter, verify) = (rel.join("evident-reporter"), rel.join("evident-verify"));
    // Always ask cargo: it is a no-op when the binaries are fresh, and a
    // stale binary would measure old code.
    println!("pipeline: building the release binaries");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--locked", "--release", "-p", "evident-reporter", "-p", "evident-verify"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("running cargo build --release")?;
    ensure!(st.success(), "cargo build --release failed");
    ensure!(reporter.exists() && verify.exists(), "no release binaries under {}", rel.display());
    Ok((reporter, verify))
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Baseline (a): zstd level 3 (with checksum, as the reporter writes it) and
/// SHA-256 of the exact jsonl bytes.
fn baseline_compress(raw: &[u8]) -> Result<f64> {
    let began = Instant::now();
    let mut enc = zstd::stream::write::Encoder::new(Vec::with_capacity(raw.len() / 4), 3)?;
    enc.include_checksum(true)?;
    std::io::Write::write_all(&mut enc, raw)?;
    let compressed = enc.finish()?;
    let digest = Sha256::digest(raw);
    let t = secs(began.elapsed());
    std::hint::black_box((compressed.len(), digest));
    Ok(t)
}

/// Baseline (b): streaming zstd decode of entries.jsonl.zst and SHA-256 of
/// the decompressed bytes.
fn baseline_decode(compressed: &[u8]) -> Result<(f64, usize)> {
    let began = Instant::now();
    let mut dec = zstd::stream::read::Decoder::new(compressed)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let k = std::io::Read::read(&mut dec, &mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        total += k;
    }
    let t = secs(began.elapsed());
    std::hint::black_box(h.finalize());
    Ok((t, total))
}

/// Baseline (c): `ed25519_dalek::verify_batch` of every producer signature
/// over JCS(rec), in chunks of [`VERIFY_CHUNK`] across 2 threads.
fn baseline_verify_batch(raw: &[u8]) -> Result<(f64, usize)> {
    let vk: VerifyingKey = *producer_key()?.verifier().key();
    let lines: Vec<&[u8]> = raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    let parsed: Vec<Option<(Vec<u8>, Signature)>> = lines
        .par_iter()
        .map(|l| -> Result<Option<(Vec<u8>, Signature)>> {
            let e = Entry::parse_leaf(l)?;
            if e.rec.producer != PRODUCER {
                return Ok(None);
            }
            let sig = e.sig.as_ref().context("unsigned entry")?;
            Ok(Some((e.rec.signing_bytes()?, Signature::from_bytes(&decode_sig(&sig.ed25519)?))))
        })
        .collect::<Result<_>>()?;
    let (msgs, sigs): (Vec<Vec<u8>>, Vec<Signature>) = parsed.into_iter().flatten().unzip();
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    let keys = vec![vk; VERIFY_CHUNK];
    let chunks: Vec<(&[&[u8]], &[Signature])> = refs.chunks(VERIFY_CHUNK).zip(sigs.chunks(VERIFY_CHUNK)).collect();
    let began = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let (chunks, keys) = (&chunks, &keys);
                s.spawn(move || -> Result<()> {
                    for (m, sg) in chunks.iter().skip(t).step_by(2) {
                        ed25519_dalek::verify_batch(m, sg, &keys[..m.len()])
                            .map_err(|e| anyhow::anyhow!("verify_batch: {e}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("verify thread panicked"))??;
        }
        Ok(())
    })?;
    Ok((secs(began.elapsed()), sigs.len()))
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing to filter.
    let n = entries_for_scale();
    let root = target_dir().join("pipeline");
    std::fs::create_dir_all(&root)?;
    let cache = root.join(format!("ledger-{n}"));
    setup_ledger(&cache, n)?;
    let (reporter_bin, verify_bin) = release_bins()?;
    ensure!(Path::new("/usr/bin/time").exists(), "/usr/bin/time is missing: apt-get install -y time");

    let run = root.join(format!("run-{n}"));
    let began = Instant::now();
    let reporter_toml = setup_run(&cache, &run)?;
    println!("pipeline: fresh copy of the ledger in {:.1} s (untimed)", began.elapsed().as_secs_f64());
    let packs = run.join("packs");
    let pack_dir = packs.join(DAY);

    // 2. Build.
    let cfg_arg = reporter_toml.display().to_string();
    let build = timed("evident-reporter build", &reporter_bin, &["--config", &cfg_arg, "build", "--day", DAY])?;
    ensure!(pack_dir.is_dir(), "no pack at {}", pack_dir.display());

    // 3. Verify, with and without producer signatures.
    let vkey = ledger_key()?.verifier().to_string();
    let pack_arg = pack_dir.display().to_string();
    let verify = timed("evident-verify pack", &verify_bin, &["pack", &pack_arg, "--key", &vkey])?;
    let verify_no_sigs = timed(
        "evident-verify pack --no-producer-signatures",
        &verify_bin,
        &["pack", &pack_arg, "--key", &vkey, "--no-producer-signatures"],
    )?;

    // 4. Baselines on the same bytes.
    let compressed = std::fs::read(pack_dir.join(evident_verify::manifest::files::ENTRIES))?;
    let raw = zstd::decode_all(&compressed[..])?;
    let lines = raw.iter().filter(|b| **b == b'\n').count();
    ensure!(lines == n + 1, "the pack holds {lines} entries, expected {} (key event + records)", n + 1);
    let avg_leaf_bytes = (raw.len() - lines) as f64 / lines as f64;
    let zstd3_plus_sha256_s = baseline_compress(&raw)?;
    let (zstd_decode_plus_sha256_s, decoded) = baseline_decode(&compressed)?;
    ensure!(decoded == raw.len(), "decoded {decoded} bytes, expected {}", raw.len());
    let (verify_batch_s, nsigs) = baseline_verify_batch(&raw)?;
    ensure!(nsigs == n, "{nsigs} producer signatures, expected {n}");
    let verifier_binary_bytes = std::fs::metadata(&verify_bin)?.len();

    let results = json!({
        // The generated records; the pack also holds the key_event that
        // registered their producer, counted in the average leaf size.
        "entries": n,
        "avg_leaf_bytes": avg_leaf_bytes,
        "build": build.json(),
        "verify": verify.json(),
        "verify_no_sigs": verify_no_sigs.json(),
        "baselines": {
            "zstd3_plus_sha256_s": zstd3_plus_sha256_s,
            "zstd_decode_plus_sha256_s": zstd_decode_plus_sha256_s,
            "verify_batch_s": verify_batch_s,
        },
        "verifier_binary_bytes": verifier_binary_bytes,
    });
    let out = root.join("results.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&results)?)?;

    let full = n >= 1_000_000;
    let scope = if full { "" } else { " (targets are for 1M entries)" };
    println!();
    println!(
        "pipeline: {n} signed records ({lines} pack entries), average leaf {avg_leaf_bytes:.0} B, \
         entries.jsonl {} B, entries.jsonl.zst {} B",
        raw.len(),
        compressed.len()
    );
    println!(
        "  build           {:6.2} s {:5.0} MiB | zstd -3 + SHA-256 {:.2} s ({:.1}x) | target <= 5 s, <= 256 MiB: {}{scope}",
        build.wall_s,
        build.max_rss_mib,
        zstd3_plus_sha256_s,
        build.wall_s / zstd3_plus_sha256_s,
        verdict(build.wall_s <= 5.0 && build.max_rss_mib <= 256.0)
    );
    println!(
        "  verify          {:6.2} s {:5.0} MiB | decode + SHA-256 {:.2} s, verify_batch {:.2} s ({:.1}x their sum) | target <= 10 s, <= 256 MiB: {}{scope}",
        verify.wall_s,
        verify.max_rss_mib,
        zstd_decode_plus_sha256_s,
        verify_batch_s,
        verify.wall_s / (zstd_decode_plus_sha256_s + verify_batch_s),
        verdict(verify.wall_s <= 10.0 && verify.max_rss_mib <= 256.0)
    );
    println!(
        "  verify, no sigs {:6.2} s {:5.0} MiB | decode + SHA-256 {:.2} s ({:.1}x)",
        verify_no_sigs.wall_s,
        verify_no_sigs.max_rss_mib,
        zstd_decode_plus_sha256_s,
        verify_no_sigs.wall_s / zstd_decode_plus_sha256_s
    );
    println!("  evident-verify binary {verifier_binary_bytes} B");
    println!("pipeline: wrote {}", out.display());
    Ok(())
}
