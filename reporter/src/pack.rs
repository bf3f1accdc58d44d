//! Building one UTC day's compliance pack (DESIGN §5), in the layout that
//! [`evident_verify::manifest`] defines.
//!
//! A day is packed only once it is closed (its end plus the grace period has
//! passed); packing seals the ledger at the end of the day, so nothing can
//! land in it later. The build streams: one pass over the ledger before the
//! day feeds the rules' history and the producer key history, one pass over
//! the day writes `entries.jsonl.zst` and feeds the rules; memory does not
//! grow with the size of the day (the rules' own value sets aside, see
//! [`evident_verify::rules`]).
//!
//! The pack is written to `<packs_dir>/.<day>.tmp-<pid>/`, every file and the
//! directory are fsynced, and the directory is renamed to
//! `<packs_dir>/<day>/`; then `<packs_dir>/<day>.tar` is written the same
//! way. An existing pack is never rebuilt. Everything but `created_at` in
//! `manifest.json` (and so its two signatures) is a function of the ledger,
//! the day and the rules: rebuilding a deleted pack gives byte-identical
//! `entries.jsonl.zst`, `checkpoint`, `rules.json`, `report.json` and
//! `report.html`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::NaiveDate;
use evident_ledger::Ledger;
use evident_ledger::pgp::PgpSigner;
use evident_verify::hash::{Hash, leaf_hash};
use evident_verify::keys::{KeyEventBody, KeyHistory};
use evident_verify::leaf::Entry;
use evident_verify::manifest::{
    self, Counts, FileInfo, MAX_MANIFEST_BYTES, MAX_SMALL_FILE_BYTES, Manifest, ManifestKey, PACK_FORMAT, PreviousPack,
    REPORT_FORMAT, Report, files,
};
use evident_verify::rules::{Evaluator, RuleSet};
use evident_verify::ts::Timestamp;
use sha2::{Digest as _, Sha256};

use crate::config::ReporterConfig;
use crate::error::ReportError;

/// Most offending entries passed to the HTML report (the lowest seqs; the
/// counts and `report.json` are always complete).
pub const MAX_ENTRIES_OF_INTEREST: usize = 200;
/// zstd level of `entries.jsonl.zst`.
pub const ZSTD_LEVEL: i32 = 3;
/// Leaves parsed in parallel at a time while building a pack.
const PARSE_CHUNK: usize = 4096;
/// Bytes of leaves in one such chunk, at most (plus one leaf).
const PARSE_CHUNK_BYTES: usize = 8 << 20;

/// Which pass of a build is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Reading the ledger before the day (rules history, key history).
    History,
    /// Reading and packing the day's entries.
    Day,
}

/// Receives build progress (for a progress bar). Every method defaults to
/// doing nothing.
pub trait Progress: Send + Sync {
    /// A pass over `total` entries begins.
    fn begin(&self, _day: NaiveDate, _stage: Stage, _total: u64) {}
    /// `n` more entries were processed.
    fn advance(&self, _n: u64) {}
    /// The pass ended.
    fn end(&self) {}
}

/// Progress that goes nowhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// The state the rules and the key history carry from the entries before a
/// day: the evaluator fed `[0, position)` as history and the producer key
/// history at `position`. Building consecutive days with one `History`
/// reads every entry once, instead of re-reading the ledger from seq 0 for
/// each day (see [`build_day_from`]).
#[derive(Clone, Debug)]
pub struct History<'r> {
    rules: &'r RuleSet,
    eval: Evaluator<'r>,
    keys: KeyHistory,
    next: u64,
}

impl<'r> History<'r> {
    /// Nothing read yet.
    pub fn new(rules: &'r RuleSet) -> History<'r> {
        History { rules, eval: Evaluator::new(rules), keys: KeyHistory::new(), next: 0 }
    }

    /// One past the last seq fed.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Feeds one entry as history.
    fn feed(&mut self, seq: u64, ts: Timestamp, e: &Entry) -> Result<(), ReportError> {
        self.eval.history(seq, ts, &e.rec).map_err(|err| entry_err(seq, err))?;
        apply_key_event(&mut self.keys, seq, ts, e)?;
        self.next = seq + 1;
        Ok(())
    }

    /// Reads the ledger from the current position up to `to`, starting over
    /// from seq 0 if the position is already past it.
    fn advance(
        &mut self,
        ledger: &Ledger,
        to: u64,
        day: NaiveDate,
        progress: &dyn Progress,
    ) -> Result<(), ReportError> {
        if self.next > to {
            *self = History::new(self.rules);
        }
        progress.begin(day, Stage::History, to - self.next);
        for_each_parsed(ledger, self.next, to, "reading the history", false, |chunk, parsed, _| {
            for (i, (e, ts)) in parsed.iter().enumerate() {
                self.feed(chunk.first + i as u64, *ts, e)?;
            }
            progress.advance(chunk.len() as u64);
            Ok(())
        })?;
        progress.end();
        Ok(())
    }
}

/// A pack on disk.
#[derive(Clone, Debug)]
pub struct BuiltPack {
    /// The UTC day.
    pub day: NaiveDate,
    /// `<packs_dir>/<day>/`.
    pub dir: PathBuf,
    /// `<packs_dir>/<day>.tar`.
    pub tar: PathBuf,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// Hex SHA-256 of `manifest.json`.
    pub manifest_sha256: String,
    /// Ids of the rules that failed, in rules-file order.
    pub rules_failed: Vec<String>,
    /// True when the pack existed before this call and was not rebuilt.
    pub already_built: bool,
}

/// The first instant of a UTC day.
pub fn day_start(day: NaiveDate) -> Timestamp {
    Timestamp::start_of_day(day)
}

fn next_day(day: NaiveDate) -> Result<NaiveDate, ReportError> {
    day.succ_opt().ok_or_else(|| ReportError::Config { path: None, why: format!("day {day} has no successor") })
}

/// The first instant at which `day` may be packed: the next day's start
/// plus the grace period.
pub fn closes_at(day: NaiveDate, grace: Duration) -> Result<Timestamp, ReportError> {
    let grace = i64::try_from(grace.as_micros()).unwrap_or(i64::MAX);
    Ok(Timestamp(day_start(next_day(day)?).0.saturating_add(grace)))
}

/// The last day that is closed at `now`, if any.
pub fn last_closed_day(now: Timestamp, grace: Duration) -> Option<NaiveDate> {
    let grace = i64::try_from(grace.as_micros()).unwrap_or(i64::MAX);
    // Day D is closed when now >= start(D + 1) + grace.
    let d = Timestamp(now.0.saturating_sub(grace)).day()?;
    d.pred_opt()
}

/// `<packs_dir>/<day>/`.
pub fn pack_dir(packs_dir: &Path, day: NaiveDate) -> PathBuf {
    packs_dir.join(day.to_string())
}

/// `<packs_dir>/<day>.tar`.
pub fn tar_path(packs_dir: &Path, day: NaiveDate) -> PathBuf {
    packs_dir.join(format!("{day}.tar"))
}

/// The days of the packs in `packs_dir` (directories named `YYYY-MM-DD`), ascending.
pub fn pack_days(packs_dir: &Path) -> Result<Vec<NaiveDate>, ReportError> {
    let rd = match fs::read_dir(packs_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ReportError::io("listing the packs directory", packs_dir)(e)),
    };
    let mut days = Vec::new();
    for ent in rd {
        let ent = ent.map_err(ReportError::io("listing the packs directory", packs_dir))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        let Ok(day) = NaiveDate::parse_from_str(name, "%Y-%m-%d") else { continue };
        if day.to_string() == name && ent.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            days.push(day);
        }
    }
    days.sort();
    Ok(days)
}

/// Builds the pack of `day`, or returns the existing one (see [`build_day_with`]).
pub fn build_day(
    ledger: &Ledger,
    cfg: &ReporterConfig,
    day: NaiveDate,
    now: Timestamp,
) -> Result<BuiltPack, ReportError> {
    build_day_with(ledger, cfg, day, now, &NoProgress)
}

/// Builds the pack of `day` at time `now`, reporting progress.
///
/// An existing pack is never rebuilt: it is loaded (and its tar written if
/// a crash left it missing) and returned with `already_built = true`.
/// Otherwise the day must be closed at `now`, must not be before the
/// ledger's first day, and the previous day's pack must exist unless this
/// is the ledger's first day ([`ReportError::Gap`]).
///
/// Seals the ledger at the end of the day, so later appends land after it.
/// Rule failures are recorded in the report, not returned as errors.
pub fn build_day_with(
    ledger: &Ledger,
    cfg: &ReporterConfig,
    day: NaiveDate,
    now: Timestamp,
    progress: &dyn Progress,
) -> Result<BuiltPack, ReportError> {
    build_day_from(ledger, cfg, day, now, &mut History::new(&cfg.rules.set), progress)
}

/// As [`build_day_with`], continuing from `history` (which must have been
/// made from `cfg.rules`): it is advanced to the day's start, and after a
/// build it stands at the day's end, ready for the next day.
pub fn build_day_from(
    ledger: &Ledger,
    cfg: &ReporterConfig,
    day: NaiveDate,
    now: Timestamp,
    history: &mut History<'_>,
    progress: &dyn Progress,
) -> Result<BuiltPack, ReportError> {
    let packs_dir = &cfg.packs_dir;
    let dir = pack_dir(packs_dir, day);
    if dir.exists() {
        return load_pack(packs_dir, day);
    }
    let closes = closes_at(day, cfg.grace)?;
    if now < closes {
        return Err(ReportError::NotClosed { day, closes_at: closes.to_string(), grace_seconds: cfg.grace_seconds() });
    }
    let first_day = ledger
        .first_ts()
        .map_err(ReportError::ledger("reading the first entry"))?
        .and_then(Timestamp::day)
        .ok_or(ReportError::EmptyLedger)?;
    if day < first_day {
        return Err(ReportError::BeforeFirstDay { day, first_day });
    }
    fs::create_dir_all(packs_dir).map_err(ReportError::io("creating the packs directory", packs_dir))?;

    let origin = ledger.options().origin.clone();
    let start =
        ledger.seq_at_time(day_start(day)).map_err(ReportError::ledger(format!("finding the start of {day}")))?;
    let previous = link_previous(packs_dir, day, start, &origin)?;
    // From here on nothing can land in the day, whatever a writer's clock says.
    let end = ledger
        .seal_before(day_start(next_day(day)?))
        .map_err(ReportError::ledger(format!("sealing the ledger at the end of {day}")))?;

    let tmp = TempDir::create(packs_dir.join(format!(".{day}.tmp-{}", std::process::id())))?;
    let built = write_pack(ledger, cfg, day, now, start, end, previous, &tmp.path, history, progress)?;

    fs::rename(&tmp.path, &dir).map_err(ReportError::io("moving the finished pack into place", &dir))?;
    tmp.disarm();
    sync_dir(packs_dir)?;
    let tar = tar_path(packs_dir, day);
    write_tar(&dir, &tar)?;
    Ok(BuiltPack {
        day,
        dir,
        tar,
        manifest: built.manifest,
        manifest_sha256: built.manifest_sha256,
        rules_failed: built.rules_failed,
        already_built: false,
    })
}

/// Loads an existing pack, writing its tar if a crash left it missing.
pub fn load_pack(packs_dir: &Path, day: NaiveDate) -> Result<BuiltPack, ReportError> {
    let pack = load_pack_readonly(packs_dir, day)?;
    if !pack.tar.exists() {
        write_tar(&pack.dir, &pack.tar)?;
    }
    Ok(pack)
}

/// Loads an existing pack's manifest and report without writing anything.
pub fn load_pack_readonly(packs_dir: &Path, day: NaiveDate) -> Result<BuiltPack, ReportError> {
    let dir = pack_dir(packs_dir, day);
    let bytes = read_small(&dir.join(files::MANIFEST), MAX_MANIFEST_BYTES as u64)?;
    let manifest = Manifest::parse(&bytes).map_err(|e| bad_pack(&dir, e.to_string()))?;
    if manifest.day != day.to_string() {
        return Err(bad_pack(&dir, format!("manifest.json is for day {}", manifest.day)));
    }
    let report_bytes = read_small(&dir.join(files::REPORT_JSON), MAX_SMALL_FILE_BYTES)?;
    let report = Report::parse(&report_bytes).map_err(|e| bad_pack(&dir, e.to_string()))?;
    Ok(BuiltPack {
        day,
        dir,
        tar: tar_path(packs_dir, day),
        manifest,
        manifest_sha256: Hash::sha256(&bytes).to_hex(),
        rules_failed: report.rules.iter().filter(|r| !r.passed).map(|r| r.id.clone()).collect(),
        already_built: true,
    })
}

fn bad_pack(path: &Path, why: impl Into<String>) -> ReportError {
    ReportError::BadPack { path: path.to_path_buf(), why: why.into() }
}

fn read_small(path: &Path, limit: u64) -> Result<Vec<u8>, ReportError> {
    let f = File::open(path).map_err(ReportError::io("opening", path))?;
    let mut bytes = Vec::new();
    f.take(limit + 1).read_to_end(&mut bytes).map_err(ReportError::io("reading", path))?;
    if bytes.len() as u64 > limit {
        return Err(bad_pack(path, format!("larger than {limit} bytes")));
    }
    Ok(bytes)
}

/// The link to the previous day's pack, `None` for the ledger's first pack.
fn link_previous(
    packs_dir: &Path,
    day: NaiveDate,
    start: u64,
    origin: &str,
) -> Result<Option<PreviousPack>, ReportError> {
    let Some(prev_day) = day.pred_opt() else { return Ok(None) };
    let prev = pack_dir(packs_dir, prev_day);
    if !prev.exists() {
        let earlier = pack_days(packs_dir)?.into_iter().any(|d| d < day);
        if start == 0 && !earlier {
            return Ok(None);
        }
        return Err(ReportError::Gap { day, missing: prev });
    }
    let bytes = read_small(&prev.join(files::MANIFEST), MAX_MANIFEST_BYTES as u64)?;
    let m = Manifest::parse(&bytes).map_err(|e| bad_pack(&prev, e.to_string()))?;
    if m.day != prev_day.to_string() || m.origin != origin {
        return Err(bad_pack(&prev, format!("manifest.json is for day {} of {:?}", m.day, m.origin)));
    }
    if m.end != start {
        return Err(bad_pack(
            &prev,
            format!(
                "it ends at seq {}, but {day} starts at seq {start} in the ledger; the pack is not of this ledger",
                m.end
            ),
        ));
    }
    let cp_path = prev.join(files::CHECKPOINT);
    let cp = read_small(&cp_path, MAX_SMALL_FILE_BYTES)?;
    let listed = m.files.get(files::CHECKPOINT).map(|f| f.sha256.as_str());
    if listed != Some(Hash::sha256(&cp).to_hex().as_str()) {
        return Err(bad_pack(&cp_path, "its SHA-256 differs from the one in manifest.json"));
    }
    let checkpoint = String::from_utf8(cp).map_err(|_| bad_pack(&cp_path, "not UTF-8"))?;
    Ok(Some(PreviousPack { day: prev_day.to_string(), manifest_sha256: Hash::sha256(&bytes).to_hex(), checkpoint }))
}

struct Written {
    manifest: Manifest,
    manifest_sha256: String,
    rules_failed: Vec<String>,
}

/// Writes every file of the pack into `dir`.
#[allow(clippy::too_many_arguments)]
fn write_pack(
    ledger: &Ledger,
    cfg: &ReporterConfig,
    day: NaiveDate,
    now: Timestamp,
    start: u64,
    end: u64,
    previous: Option<PreviousPack>,
    dir: &Path,
    history: &mut History<'_>,
    progress: &dyn Progress,
) -> Result<Written, ReportError> {
    let origin = ledger.options().origin.clone();
    let rules = &cfg.rules;

    // History: state for rules that look back, and the key history at `start`.
    history.advance(ledger, start, day, progress)?;
    let mut eval = history.eval.clone();
    let mut keys = history.keys.clone();
    let producer_keys = history
        .keys
        .all()
        .map(|(producer, k)| ManifestKey {
            producer: producer.to_string(),
            key: k.key.to_string(),
            valid_from: k.valid_from.to_string(),
            valid_until: k.valid_until.map(|t| t.to_string()),
            introduced_seq: k.introduced_seq,
        })
        .collect();

    // The day: entries.jsonl.zst, rule observations, counts.
    progress.begin(day, Stage::Day, end - start);
    let mut counts = Counts::default();
    let entries_path = dir.join(files::ENTRIES);
    let file = File::create_new(&entries_path).map_err(ReportError::io("creating", &entries_path))?;
    let mut enc = zstd::stream::write::Encoder::new(HashWriter::new(BufWriter::new(file)), ZSTD_LEVEL)
        .map_err(ReportError::io("starting zstd for", &entries_path))?;
    enc.include_checksum(true).map_err(ReportError::io("configuring zstd for", &entries_path))?;
    enc.multithread(1).map_err(ReportError::io("configuring zstd for", &entries_path))?;
    // The pack is signed only if its leaves hash, from the compact range of
    // everything before the day, to the checkpoint it carries: a row changed
    // in the database outside the ledger stops the build here, not at the
    // regulator's verifier.
    let before =
        ledger.compact_range(start).map_err(ReportError::ledger(format!("the compact range of [0, {start})")))?;
    let mut range = before.clone();
    // A reader thread streams the leaves out of SQLite while the previous
    // chunk is parsed and hashed across the cores and observed here in seq
    // order; zstd compresses on its own worker.
    for_each_parsed(ledger, start, end, &format!("reading the entries of {day}"), true, |chunk, parsed, hashes| {
        enc.write_all(&chunk.buf).map_err(ReportError::io("writing", &entries_path))?;
        for (i, (e, ts)) in parsed.iter().enumerate() {
            let seq = chunk.first + i as u64;
            eval.observe(seq, *ts, &e.rec).map_err(|err| entry_err(seq, err))?;
            apply_key_event(&mut keys, seq, *ts, e)?;
            counts.add(&e.rec.kind, &e.rec.producer);
        }
        for h in hashes {
            range.append(*h);
        }
        progress.advance(chunk.len() as u64);
        Ok(())
    })?;
    progress.end();
    let hw = enc.finish().map_err(ReportError::io("finishing", &entries_path))?;
    let (inner, sha, size) = hw.into_parts();
    let file = inner.into_inner().map_err(|e| ReportError::io("flushing", &entries_path)(e.into_error()))?;
    file.sync_all().map_err(ReportError::io("syncing", &entries_path))?;
    let mut listed = BTreeMap::new();
    listed.insert(files::ENTRIES.to_string(), FileInfo { sha256: hex(&sha), size });

    // The day's evaluator, carried, is the history of the next day; the
    // history moves only once the whole day has been read.
    history.eval = eval.carry();
    history.keys = keys;
    history.next = end;
    let outcomes = eval.finish();
    let rules_failed: Vec<String> = outcomes.iter().filter(|o| !o.passed).map(|o| o.id.clone()).collect();

    let checkpoint = ledger.checkpoint_at(end).map_err(ReportError::ledger(format!("the checkpoint at {end}")))?;
    let signed = evident_verify::checkpoint::open(checkpoint.as_bytes(), &[ledger.options().key.verifier()], None)
        .map_err(|e| {
            ReportError::ledger(format!("the checkpoint at {end}"))(evident_ledger::LedgerError::Format(e.to_string()))
        })?;
    if range.size() != end || range.root() != signed.checkpoint.root {
        return Err(ReportError::Integrity {
            day,
            start,
            end,
            leaves_root: range.root().to_base64(),
            checkpoint_root: signed.checkpoint.root.to_base64(),
        });
    }
    listed.insert(files::CHECKPOINT.into(), write_file(dir, files::CHECKPOINT, checkpoint.as_bytes())?);
    listed.insert(files::RULES.into(), write_file(dir, files::RULES, &rules.bytes)?);
    let rules_sha256 = rules.set.sha256().to_hex();
    let report = Report {
        format: REPORT_FORMAT.to_string(),
        origin: origin.clone(),
        day: day.to_string(),
        start,
        end,
        rules_sha256: rules_sha256.clone(),
        history_from: 0,
        rules: outcomes,
        counts: counts.clone(),
    };
    let report_bytes = report.to_bytes().map_err(|e| encode_err(day, files::REPORT_JSON, e))?;
    listed.insert(files::REPORT_JSON.into(), write_file(dir, files::REPORT_JSON, &report_bytes)?);

    let compact_range = before.hashes().iter().map(Hash::to_base64).collect();
    let key = &ledger.options().key;
    let pgp =
        PgpSigner::from_seed(key.seed(), &format!("Evident ledger {origin}"), evident_ledger::pgp_creation_time())
            .map_err(|source| ReportError::Pgp { day, source })?;
    let mut manifest = Manifest {
        format: PACK_FORMAT.to_string(),
        origin,
        day: day.to_string(),
        start,
        end,
        previous,
        compact_range,
        counts,
        files: listed,
        rules_sha256,
        ledger_key: key.verifier().to_string(),
        pgp_fingerprint: pgp.fingerprint(),
        producer_keys,
        generator: format!("evident-reporter {}", env!("CARGO_PKG_VERSION")),
        // The renderer sees the draft: no build time, so report.html stays
        // a function of the ledger, the day and the rules.
        created_at: String::new(),
    };

    let interesting = entries_of_interest(ledger, &report)?;
    let html = crate::html::render(&manifest, &report, &interesting);
    manifest.files.insert(files::REPORT_HTML.into(), write_file(dir, files::REPORT_HTML, html.as_bytes())?);

    manifest.created_at = now.to_string();
    let manifest_bytes = manifest.to_bytes().map_err(|e| encode_err(day, files::MANIFEST, e))?;
    let sig = B64.encode(key.sign(&manifest_bytes));
    let asc = pgp
        .sign_detached_armored(&manifest_bytes, system_time(now))
        .map_err(|source| ReportError::Pgp { day, source })?;
    write_file(dir, files::MANIFEST, &manifest_bytes)?;
    write_file(dir, files::MANIFEST_SIG, sig.as_bytes())?;
    write_file(dir, files::MANIFEST_ASC, asc.as_bytes())?;
    sync_dir(dir)?;
    // Parse what was written, as a verifier will.
    let manifest = Manifest::parse(&manifest_bytes).map_err(|e| encode_err(day, files::MANIFEST, e))?;
    Ok(Written { manifest, manifest_sha256: Hash::sha256(&manifest_bytes).to_hex(), rules_failed })
}

fn encode_err(day: NaiveDate, file: &'static str, e: manifest::ManifestError) -> ReportError {
    ReportError::Encode { day, file, why: e.to_string() }
}

fn entry_err(seq: u64, why: impl std::fmt::Display) -> ReportError {
    ReportError::Entry { seq, why: why.to_string() }
}

/// Applies a `key_event` entry to a key history; other kinds pass.
fn apply_key_event(keys: &mut KeyHistory, seq: u64, ts: Timestamp, e: &Entry) -> Result<(), ReportError> {
    if e.rec.kind == "key_event" {
        let body: KeyEventBody = serde_json::from_value(e.rec.body.clone())
            .map_err(|err| entry_err(seq, format!("key_event body: {err}")))?;
        keys.apply(seq, ts, &body).map_err(|err| entry_err(seq, err))?;
    }
    Ok(())
}

/// A leaf read for the rules, or why it cannot be.
type Parsed = Result<(Entry, Timestamp), ReportError>;

/// Reads a leaf of this ledger for the rules. Not the verifier's strict
/// parse: the ledger wrote every leaf canonically, and the day's leaves are
/// hashed and checked against the signed checkpoint before a pack is
/// signed, which catches any changed byte, canonical or not.
fn parse_entry(seq: u64, leaf: &[u8]) -> Parsed {
    // UTF-8 checked once for the whole leaf, not again for each string.
    let text = std::str::from_utf8(leaf).map_err(|err| entry_err(seq, err))?;
    let e: Entry = serde_json::from_str(text).map_err(|err| entry_err(seq, err))?;
    if e.seq != seq {
        return Err(entry_err(seq, format!("the leaf says seq {}", e.seq)));
    }
    let ts = e.timestamp().map_err(|err| entry_err(seq, err))?;
    Ok((e, ts))
}

/// Leaves handed from the reader thread to the builder: one buffer holding
/// each leaf followed by its newline, exactly as `entries.jsonl` has them.
struct LeafChunk {
    /// Seq of the first leaf.
    first: u64,
    buf: Vec<u8>,
    /// Each leaf's bytes in `buf`, without the newline.
    spans: Vec<std::ops::Range<usize>>,
}

impl LeafChunk {
    fn new(first: u64) -> LeafChunk {
        LeafChunk { first, buf: Vec::with_capacity(PARSE_CHUNK * 768), spans: Vec::with_capacity(PARSE_CHUNK) }
    }

    fn push(&mut self, leaf: &[u8]) {
        let at = self.buf.len();
        self.buf.extend_from_slice(leaf);
        self.spans.push(at..self.buf.len());
        self.buf.push(b'\n');
    }

    fn is_full(&self) -> bool {
        self.spans.len() == PARSE_CHUNK || self.buf.len() >= PARSE_CHUNK_BYTES
    }

    fn len(&self) -> usize {
        self.spans.len()
    }

    fn get(&self, i: usize) -> &[u8] {
        &self.buf[self.spans[i].clone()]
    }
}

/// Streams the leaves of `[start, end)` to `f` in chunks, each with its
/// leaves parsed and timestamped, and with their leaf hashes if `hash` is
/// set. A reader thread fetches the next chunk from SQLite while this one
/// is parsed (across the cores) and consumed, so memory holds at most four
/// chunks whatever the range. The first error, of parsing or of `f`, in
/// seq order, stops the stream; `what` names the read in a ledger error.
fn for_each_parsed(
    ledger: &Ledger,
    start: u64,
    end: u64,
    what: &str,
    hash: bool,
    mut f: impl FnMut(&LeafChunk, &[(Entry, Timestamp)], &[Hash]) -> Result<(), ReportError>,
) -> Result<(), ReportError> {
    use rayon::prelude::*;
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<LeafChunk>(2);
        let stopped = || evident_ledger::LedgerError::Request("pack build stopped".into());
        let reader = s.spawn(move || -> Result<(), evident_ledger::LedgerError> {
            let mut chunk = LeafChunk::new(start);
            ledger.for_each_leaf(start, end, |seq, _ts, leaf| {
                chunk.push(leaf);
                if chunk.is_full() {
                    // A closed channel: the consumer stopped on an error of
                    // its own, which it reports.
                    tx.send(std::mem::replace(&mut chunk, LeafChunk::new(seq + 1))).map_err(|_| stopped())?;
                }
                Ok(())
            })?;
            if chunk.len() > 0 {
                tx.send(chunk).map_err(|_| stopped())?;
            }
            Ok(())
        });
        // The previous chunk's entries are freed on the pool while this one
        // is parsed: freeing thousands of small allocations on this thread,
        // which did not make them, cost as much as all its other work.
        let mut done: Vec<(Entry, Timestamp)> = Vec::new();
        let consumed = rx.iter().try_for_each(|chunk| {
            let old = std::mem::take(&mut done);
            let (parsed, ()) = rayon::join(
                || -> Vec<(Parsed, Option<Hash>)> {
                    (0..chunk.len())
                        .into_par_iter()
                        .map(|i| {
                            let leaf = chunk.get(i);
                            (parse_entry(chunk.first + i as u64, leaf), hash.then(|| leaf_hash(leaf)))
                        })
                        .collect()
                },
                || old.into_par_iter().for_each(drop),
            );
            // The leaves before the first that does not parse are consumed;
            // then that one's error is reported.
            let mut ok = Vec::with_capacity(parsed.len());
            let mut hashes = Vec::with_capacity(if hash { parsed.len() } else { 0 });
            let mut bad = None;
            for (p, h) in parsed {
                match p {
                    Ok(e) => ok.push(e),
                    Err(e) => {
                        bad = Some(e);
                        break;
                    }
                }
                hashes.extend(h);
            }
            let r = f(&chunk, &ok, &hashes);
            done = ok;
            r?;
            bad.map_or(Ok(()), Err)
        });
        // Unblocks a reader waiting to send when the consumer stopped early.
        drop(rx);
        done.into_par_iter().for_each(drop);
        let read = match reader.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        consumed?;
        read.map_err(ReportError::ledger(what.to_string()))
    })
}

/// The offending entries the HTML report shows: the lowest seqs across all
/// rules, at most [`MAX_ENTRIES_OF_INTEREST`], read back from the ledger.
fn entries_of_interest(ledger: &Ledger, report: &Report) -> Result<Vec<(u64, Entry)>, ReportError> {
    let mut seqs = BTreeSet::new();
    for r in &report.rules {
        for &s in &r.offending_seqs {
            seqs.insert(s);
            if seqs.len() > MAX_ENTRIES_OF_INTEREST {
                seqs.pop_last();
            }
        }
    }
    seqs.into_iter()
        .map(|seq| {
            let leaf = ledger.leaf(seq).map_err(ReportError::ledger(format!("reading entry {seq}")))?;
            Ok((seq, parse_entry(seq, &leaf)?.0))
        })
        .collect()
}

fn system_time(t: Timestamp) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(u64::try_from(t.0).unwrap_or(0))
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<(String, u64), ReportError> {
    let mut f = File::open(path).map_err(ReportError::io("opening", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(ReportError::io("reading", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex(&h.finalize()), size))
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<FileInfo, ReportError> {
    let path = dir.join(name);
    let mut f = File::create_new(&path).map_err(ReportError::io("creating", &path))?;
    f.write_all(bytes).map_err(ReportError::io("writing", &path))?;
    f.sync_all().map_err(ReportError::io("syncing", &path))?;
    Ok(FileInfo { sha256: Hash::sha256(bytes).to_hex(), size: bytes.len() as u64 })
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), ReportError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(ReportError::io("syncing directory", dir))
}

/// Writes `<day>.tar` from a pack directory: the files in
/// [`files::ORDER`] under their bare names, with deterministic ustar
/// headers (mode 0644, mtime 0, uid and gid 0, no user or group names), via
/// a temporary file renamed into place.
pub fn write_tar(dir: &Path, tar: &Path) -> Result<(), ReportError> {
    let parent = tar.parent().unwrap_or(Path::new("."));
    let name = tar.file_name().and_then(|n| n.to_str()).unwrap_or("pack.tar");
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let file = File::create_new(&tmp).map_err(ReportError::io("creating", &tmp))?;
        let mut b = tar::Builder::new(BufWriter::new(file));
        for name in files::ORDER {
            let path = dir.join(name);
            let f = File::open(&path).map_err(ReportError::io("opening", &path))?;
            let len = f.metadata().map_err(ReportError::io("reading the size of", &path))?.len();
            let mut h = tar::Header::new_ustar();
            h.set_path(name).map_err(ReportError::io("naming a tar entry", &path))?;
            h.set_size(len);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append(&h, f.take(len)).map_err(ReportError::io("adding to the tar", &path))?;
        }
        let w = b.into_inner().map_err(ReportError::io("finishing", &tmp))?;
        let file = w.into_inner().map_err(|e| ReportError::io("flushing", &tmp)(e.into_error()))?;
        file.sync_all().map_err(ReportError::io("syncing", &tmp))?;
        fs::rename(&tmp, tar).map_err(ReportError::io("moving into place", tar))?;
        sync_dir(parent)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes leftovers of interrupted builds (`.<name>.tmp-<pid>`) in the packs
/// directory. Call only while holding the build lock.
pub fn remove_stale_temporaries(packs_dir: &Path) -> Result<(), ReportError> {
    let rd = match fs::read_dir(packs_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ReportError::io("listing the packs directory", packs_dir)(e)),
    };
    for ent in rd {
        let ent = ent.map_err(ReportError::io("listing the packs directory", packs_dir))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') && name.contains(".tmp-") {
            let path = ent.path();
            let r = if ent.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            r.map_err(ReportError::io("removing the leftover", &path))?;
        }
    }
    Ok(())
}

/// A directory removed on drop unless disarmed.
struct TempDir {
    path: PathBuf,
    armed: bool,
}

impl TempDir {
    fn create(path: PathBuf) -> Result<TempDir, ReportError> {
        if path.exists() {
            fs::remove_dir_all(&path).map_err(ReportError::io("removing the leftover", &path))?;
        }
        fs::create_dir(&path).map_err(ReportError::io("creating", &path))?;
        Ok(TempDir { path, armed: true })
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Counts and hashes the bytes written through it.
struct HashWriter<W> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W> HashWriter<W> {
    fn new(inner: W) -> HashWriter<W> {
        HashWriter { inner, hash: Sha256::new(), size: 0 }
    }

    fn into_parts(self) -> (W, [u8; 32], u64) {
        (self.inner, self.hash.finalize().into(), self.size)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
