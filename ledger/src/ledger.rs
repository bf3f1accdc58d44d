//! The ledger handle: validation, group-committed appends, checkpoints,
//! proofs, receipts and the integrity check.
//!
//! ## Append path
//! 1. *Prepare* (no lock, parallel across callers): envelope checks, size
//!    limit, schema, PII commitments, JCS(rec); producer signatures are
//!    verified in parallel batches (`evident_verify::sig`).
//! 2. *Queue*: the prepared record joins a shared queue.
//! 3. *Commit*: if no commit is running, the caller becomes the leader. When
//!    the last commit served several callers, it first waits (at most
//!    [`LedgerOptions::commit_delay`], and never longer than
//!    [`ARRIVAL_GAP`] after the latest arrival) until as many are queued
//!    again, so that concurrent callers share one fsync. It then
//!    drains the queue into one `BEGIN IMMEDIATE` transaction (the others
//!    sleep on a condition variable and wake with their receipts): it re-reads the tree
//!    size (another process may have appended), resolves `(producer, id)`
//!    duplicates, assigns `seq` and a non-decreasing `ts`, checks the key is
//!    valid at `ts`, writes entries and completed tiles, and commits once.
//!    Every waiter gets its receipt only after that commit is durable (a
//!    pipelined `append_batch` commits its chunks without waiting and
//!    returns after one fsync that covers them all).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use evident_verify::checkpoint::{self, Checkpoint};
use evident_verify::hash::{Hash, TreeHead, leaf_hash};
use evident_verify::keys::{KeyEventBody, KeyHistory};
use evident_verify::leaf::{Entry, LeafStart, ProducerSig, Record};
use evident_verify::merkle::{self, CompactRange};
use evident_verify::note::{SignerKey, VerifierKey};
use evident_verify::receipt::{RECEIPT_FORMAT, Receipt as ReceiptFile};
use evident_verify::schema::Schemas;
use evident_verify::ts::Timestamp;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::error::{AppendError, LedgerError, StoreError};
use crate::idindex::{self, IdIndex};
use crate::privacy::{Privacy, VaultRow};
use crate::store::{self, Frontier, SharedTiles, Synchronous, TileReader, to_i64, to_u64};
use crate::wal_sync::WalSync;

/// Default cap on a record's canonical size: 48 KiB, so that a leaf with
/// its envelope stays under the verifier's 64 KiB leaf limit.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 48 * 1024;
/// Most records one commit takes from the queue.
const MAX_GROUP: usize = 4096;
/// Records of one `append_batch` call that share one commit; a larger call
/// is pipelined (see [`chunk_size`]).
pub const PIPELINE_ABOVE: usize = 1024;
/// Most records of a pipelined `append_batch` per commit.
pub const PIPELINE_CHUNK: usize = 4096;
/// First chunk of a pipelined `append_batch` without signatures, and the
/// fewest records any chunk but the last has (see [`first_chunk`]).
pub const PIPELINE_FIRST: usize = 256;
/// Largest first chunk of a pipelined `append_batch` with signatures.
pub const PIPELINE_FIRST_SIGNED: usize = 2048;
/// Calls with fewer records leave their signatures to the commit's leader,
/// which verifies every waiting caller's as one batch.
const DEFER_BELOW: usize = 64;
/// The next chunk of a pipelined batch, `left` records before it and
/// `ramp` the size the chunks have grown to ([`first_chunk`], doubled
/// after each chunk up to [`chunk_cap`]). Chunks grow, so that fewer
/// commits are made and each chunk spreads its signature batches evenly
/// over the cores (50,000 signed records: median 0.73 s against 0.81 s
/// with chunks of 1,024, 30 runs each); the last ones halve, so that the
/// writer's final chunk, which nothing overlaps, is small.
pub fn chunk_size(ramp: usize, left: usize) -> usize {
    ramp.min(left.div_ceil(2).max(PIPELINE_FIRST)).min(left)
}

/// The first chunk of a pipelined batch of `records` records. Without
/// signatures, [`PIPELINE_FIRST`]: the writer, a stage of its own, starts
/// early (512 was slower in 6 of 8 alternating pairs of 10,000 records).
/// With signatures, a quarter of the batch within
/// [[`PIPELINE_FIRST`], [`PIPELINE_FIRST_SIGNED`]]: verification is the
/// bottleneck and keeps both cores busy from the first chunk on, so small
/// chunks only add batches of a few hundred signatures and a wait for the
/// slower core at the end of each. 10,000 signed records, the first chunk
/// set by hand: 512 against 256 +14.5% (faster in 8 of 8 alternating
/// pairs), 1,024 against 512 +7% (7 of 8), 2,048 against 1,024 +12%
/// (5 of 6), 4,096 against 2,048 even (2 of 6); this rule against 256:
/// +5% and +10% (12 of 16), and +8% on 50,000 records (4 of 5).
pub fn first_chunk(records: usize, verifying: bool) -> usize {
    if verifying { (records / 4).clamp(PIPELINE_FIRST, PIPELINE_FIRST_SIGNED) } else { PIPELINE_FIRST }
}

/// Fewest records the chunks of a pipelined batch without signatures grow
/// to (see [`chunk_cap`]).
pub const PIPELINE_UNSIGNED_CAP_MIN: usize = 1024;

/// What the chunks of a pipelined batch of `records` records grow to. With
/// signatures to verify, [`PIPELINE_CHUNK`]: each chunk's verification
/// ends in a wait for the slower core, and large chunks spread their
/// signature batches evenly (chunks of 1,024: 10,000 signed records 8%
/// slower, faster in 2 of 8 alternating pairs). Without, an eighth of the
/// batch within [[`PIPELINE_UNSIGNED_CAP_MIN`], [`PIPELINE_CHUNK`]]: the
/// writer and the validating threads overlap better on smaller chunks, and
/// the first and last chunks, which nothing overlaps, stay a small part
/// of the batch (10,000 records: chunks of 1,024 against 4,096, +4.7%,
/// faster in 7 of 8 pairs, twice), while a large batch keeps large chunks
/// and few commits (100,000 records: 4,096 faster in 3 of 4 pairs).
pub fn chunk_cap(records: usize, verifying: bool) -> usize {
    if verifying { PIPELINE_CHUNK } else { (records / 8).clamp(PIPELINE_UNSIGNED_CAP_MIN, PIPELINE_CHUNK) }
}

/// Default for [`LedgerOptions::commit_delay`]: off. On the benchmark
/// machine (fsync ~165 µs) 16 signed appenders are CPU-bound and a 1 ms
/// delay cost throughput (13.5k/s against 15.1k/s); it pays where fsync is
/// slow relative to the work of a commit.
pub const DEFAULT_COMMIT_DELAY: Duration = Duration::ZERO;
/// A leader waiting for more callers commits once none has arrived for this
/// long: the callers it expected have gone away.
pub const ARRIVAL_GAP: Duration = Duration::from_micros(200);

/// How a ledger is opened.
#[derive(Clone, Debug)]
pub struct LedgerOptions {
    /// SQLite file.
    pub path: PathBuf,
    /// The log's origin line.
    pub origin: String,
    /// The ledger key: signs checkpoints and the ledger's own records.
    pub key: SignerKey,
    /// Commit durability.
    pub synchronous: Synchronous,
    /// Longest a commit leader waits for other callers' records before it
    /// commits, when the previous commit served more than one caller.
    /// Raises throughput under concurrency (more records per fsync) at the
    /// cost of at most this much latency; zero (the default) commits at
    /// once. A lone caller never waits.
    pub commit_delay: Duration,
    /// Producers allowed to append unsigned records.
    pub unsigned_producers: Vec<String>,
    /// Largest canonical record accepted, in bytes.
    pub max_record_bytes: usize,
    /// PII detector and commitment settings.
    pub privacy: crate::privacy::PrivacyConfig,
    /// Where the ledger reads the time for `ts`. The system clock unless set;
    /// simulations and tests replay other days with it. `ts` never
    /// decreases whatever the clock says.
    pub clock: Clock,
    /// Fewest recent idempotency-index rows that start a merge into the
    /// merged level ([`crate::idindex`]); [`crate::idindex::MERGE_MIN`]
    /// unless set. Tests lower it to exercise merges on small ledgers; a
    /// higher value keeps more in memory (17–34 bytes per entry).
    pub merge_min: u64,
    /// Most bytes of the database file that the handle's writer and reader
    /// connections map into memory (SQLite's memory-mapped I/O):
    /// [`DEFAULT_MMAP_BYTES`] unless set; 0 reads every page with `pread`.
    /// A mapped page is read in place, so lookups no longer pay a copy of a
    /// 16 KiB page each time another connection's commit has emptied the
    /// reader's page cache. Costs address space, not memory: the pages
    /// touched are the kernel's page cache, shared, though they count in
    /// the process's RSS. An I/O error on a mapped page raises SIGBUS
    /// instead of an error (SQLite maps read-only; writes are unchanged).
    pub mmap_bytes: u64,
}

/// Default for [`LedgerOptions::mmap_bytes`]: 1 TiB, i.e. the whole file.
/// (The workspace builds SQLite with this as its limit,
/// `SQLITE_MAX_MMAP_SIZE` in `.cargo/config.toml`; SQLite's own default
/// limit is 2 GB, beyond which a larger value is cut.)
pub const DEFAULT_MMAP_BYTES: u64 = 1 << 40;

/// A source of the current time.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Timestamp + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(Arc::new(|| Timestamp::from_datetime(chrono::Utc::now())))
    }

    /// A clock read from `f`.
    pub fn from_fn(f: impl Fn() -> Timestamp + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(f))
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}

impl LedgerOptions {
    /// Options with defaults for everything but the essentials.
    pub fn new(path: impl Into<PathBuf>, origin: &str, key: SignerKey) -> LedgerOptions {
        LedgerOptions {
            path: path.into(),
            origin: origin.to_string(),
            key,
            synchronous: Synchronous::Full,
            commit_delay: DEFAULT_COMMIT_DELAY,
            unsigned_producers: Vec::new(),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            privacy: Default::default(),
            clock: Clock::system(),
            merge_min: crate::idindex::MERGE_MIN,
            mmap_bytes: DEFAULT_MMAP_BYTES,
        }
    }
}

/// What a producer submits: a record, its signature, and the vault material
/// for any committed PII fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// The record.
    pub rec: Record,
    /// The producer's signature over JCS(rec), unless the producer is unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<ProducerSig>,
    /// Vault material for committed PII fields (see [`crate::privacy`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vault: Vec<crate::privacy::VaultMaterial>,
}

impl Submission {
    /// An unsigned submission.
    pub fn unsigned(rec: Record) -> Submission {
        Submission { rec, sig: None, vault: Vec::new() }
    }

    /// Parses one JSON submission: `{"rec":…,"sig":…}`, or a bare record
    /// (which is then unsigned).
    pub fn parse(bytes: &[u8]) -> Result<Submission, AppendError> {
        let text = std::str::from_utf8(bytes).map_err(|e| AppendError::NotUtf8(e.valid_up_to()))?;
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| AppendError::Malformed(e.to_string()))?;
        let r = if v.get("rec").is_some() {
            serde_json::from_value(v)
        } else {
            serde_json::from_value(v).map(Submission::unsigned)
        };
        r.map_err(|e| AppendError::Malformed(e.to_string()))
    }
}

/// Proof that a record is stored: returned only once the commit is durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendReceipt {
    /// The entry's position.
    pub seq: u64,
    /// RFC 9162 leaf hash of the stored leaf (hex).
    pub leaf_hash: String,
    /// Ledger time.
    pub ts: String,
    /// True when this was a retry of an already stored record.
    pub duplicate: bool,
}

/// A validated record waiting for a commit.
struct Prepared {
    /// The record; its body only for a `key_event` (the rest is in `rec_jcs`).
    rec: Record,
    sig: Option<ProducerSig>,
    /// JCS(rec) as stored and signed.
    rec_jcs: Vec<u8>,
    /// The leaf hash over `rec_jcs`, computed here so that the writer
    /// hashes only the envelope's tail.
    leaf_start: LeafStart,
    /// JCS(sig), spliced into the leaf.
    sig_jcs: Option<Vec<u8>>,
    /// For a record the ledger committed itself: JCS of the record as
    /// submitted, which is what a retry is compared on (salts differ per try).
    dedup_raw: Option<Vec<u8>>,
    /// The key and raw signature still to verify (in a batch, before commit).
    unverified: Option<(VerifierKey, [u8; 64])>,
    idkey: i64,
    vault: Vec<VaultRow>,
    /// The merged idempotency level's rows for this batch, read before
    /// the write lock ([`Ledger::probe`]).
    probe: Option<Arc<idindex::Probe>>,
}

impl Prepared {
    /// What a retry is compared on.
    fn dedup_jcs(&self) -> &[u8] {
        self.dedup_raw.as_deref().unwrap_or(&self.rec_jcs)
    }
}

/// One caller's results, in the order of its records.
type Results = Vec<Result<AppendReceipt, AppendError>>;

/// Records validated for one commit (a chunk of a pipelined batch).
type PreparedChunk = Vec<Result<Prepared, AppendError>>;

/// What a waiting caller is woken for.
enum Turn {
    /// Nothing yet.
    Wait,
    /// The caller leads the next commit (its records are still queued).
    Lead,
    /// Its records' results, durable.
    Done(Results),
}

/// Where one caller sleeps: each is woken only for its own turn, so a
/// commit wakes exactly the callers it serves and the next leader.
struct Slot {
    turn: Mutex<Turn>,
    wake: Condvar,
}

impl Slot {
    fn new() -> Slot {
        Slot { turn: Mutex::new(Turn::Wait), wake: Condvar::new() }
    }

    fn set(&self, turn: Turn) {
        *lock(&self.turn) = turn;
        self.wake.notify_one();
    }

    /// Sleeps until there is a turn, and takes it.
    fn wait(&self) -> Turn {
        let mut t = lock(&self.turn);
        loop {
            match std::mem::replace(&mut *t, Turn::Wait) {
                Turn::Wait => t = self.wake.wait(t).unwrap_or_else(|p| p.into_inner()),
                turn => return turn,
            }
        }
    }
}

struct Pending {
    /// Refused records stay in place, so results come back in order.
    items: Vec<Result<Prepared, AppendError>>,
    slot: Arc<Slot>,
    /// The caller needs its commit durable before it is told (false only
    /// for a pipelined batch's chunks, which are made durable together).
    durable: bool,
}

/// Records waiting for a commit, and whether a caller leads (is committing,
/// or has been handed the next commit).
#[derive(Default)]
struct Queue {
    /// One entry per waiting caller.
    pending: Vec<Pending>,
    leader: bool,
    /// Callers served by the last commit: how many a leader waits for.
    last_callers: usize,
}

/// Ends a leader's turn once its commit is written (before it is durable),
/// also when the commit panics: hands the next commit to the first caller
/// still queued, so that it starts while this one waits for its fsync.
struct Lead<'a> {
    inner: &'a Inner,
    callers: usize,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let mut q = lock(&self.inner.queue);
        q.last_callers = self.callers;
        match q.pending.first() {
            Some(next) => next.slot.set(Turn::Lead),
            None => q.leader = false,
        }
    }
}

/// One commit's callers and results, handed out once the commit is
/// durable. Made before the batch is verified and committed: dropped
/// undelivered (a panic on the way), it fails every caller, so none is left
/// asleep.
struct Delivery<'a> {
    inner: &'a Inner,
    /// Each caller's slot and how many records it queued, in batch order.
    callers: Vec<(Arc<Slot>, usize)>,
    /// Every record's result, in the same order.
    results: Results,
    /// The commit's number in [`WalSync`], when it was written and must be
    /// made durable before anyone is told.
    commit: Option<u64>,
    /// Some caller needs the commit durable before it is told.
    durable: bool,
}

impl Delivery<'_> {
    /// Waits until the commit is durable, then hands out the results (or,
    /// if the fsync failed, an error for every record it stored).
    fn deliver(mut self) {
        let durable = match (self.commit, &self.inner.wal) {
            (Some(n), Some(wal)) if self.durable => wal.wait(n),
            _ => Ok(()),
        };
        let mut results = std::mem::take(&mut self.results).into_iter();
        for (slot, n) in std::mem::take(&mut self.callers) {
            let mut part: Results = results.by_ref().take(n).collect();
            if let Err(failed) = &durable {
                for r in part.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(AppendError::Store(failed.clone().into()));
                }
            }
            slot.set(Turn::Done(part));
        }
    }
}

impl Drop for Delivery<'_> {
    fn drop(&mut self) {
        for (slot, n) in self.callers.drain(..) {
            let failed = (0..n).map(|_| Err(AppendError::Malformed("the commit was interrupted".into())));
            slot.set(Turn::Done(failed.collect()));
        }
    }
}

struct Writer {
    conn: Connection,
    /// Frontier as of the last commit we made or observed; `None` forces a reload.
    frontier: Option<Frontier>,
    keys: KeyHistory,
    /// The idempotency index's recent rows.
    ids: IdIndex,
}

struct Inner {
    opts: LedgerOptions,
    schemas: Schemas,
    privacy: Privacy,
    queue: Mutex<Queue>,
    writer: Mutex<Writer>,
    reader: Mutex<Connection>,
    /// Snapshot of the key history for signature checks before the lock.
    keys: Mutex<Arc<KeyHistory>>,
    /// Wakes a waiting leader when a caller queues records.
    arrived: Condvar,
    /// The right edge as of the last commit this handle made, for proofs.
    edge: Mutex<Option<Arc<Frontier>>>,
    /// Upper tiles, kept across proofs.
    tiles: SharedTiles,
    /// With `synchronous = full`: the WAL, which appends make durable
    /// themselves, outside the write lock (see [`crate::wal_sync`]).
    wal: Option<WalSync>,
}

/// A handle on one ledger file. `Send + Sync`: share it with `Arc` or clone it.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("path", &self.inner.opts.path).field("origin", &self.inner.opts.origin).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock cannot leave SQLite half-written (the
    // transaction rolls back on drop), so the data is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn load_keys(conn: &Connection) -> Result<KeyHistory, StoreError> {
    let mut keys = KeyHistory::new();
    let mut stmt =
        conn.prepare("SELECT e.seq, e.leaf FROM key_events k JOIN entries e ON e.seq = k.seq ORDER BY k.seq")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
    for row in rows {
        let (seq, leaf) = row?;
        let e = Entry::parse_leaf(&leaf).map_err(|e| StoreError::Corrupt(format!("seq {seq}: {e}")))?;
        let ts = e.timestamp().map_err(|e| StoreError::Corrupt(format!("seq {seq}: {e}")))?;
        let body: KeyEventBody = serde_json::from_value(e.rec.body.clone())
            .map_err(|err| StoreError::Corrupt(format!("seq {seq}: key_event body: {err}")))?;
        keys.apply(to_u64(seq)?, ts, &body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    }
    Ok(keys)
}

impl Ledger {
    /// Creates a new ledger file (refusing an existing one) and opens it.
    pub fn create(opts: LedgerOptions) -> Result<Ledger, LedgerError> {
        if opts.path.exists() {
            return Err(LedgerError::Request(format!("{} already exists", opts.path.display())));
        }
        let mut conn = store::open_connection(&opts.path, opts.synchronous)?;
        store::migrate(&mut conn)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StoreError::from)?;
        tx.execute("INSERT INTO meta (k, v) VALUES ('origin', ?1)", [&opts.origin]).map_err(StoreError::from)?;
        tx.execute("INSERT INTO meta (k, v) VALUES ('ledger_key', ?1)", [opts.key.verifier().to_string()])
            .map_err(StoreError::from)?;
        tx.commit().map_err(StoreError::from)?;
        drop(conn);
        Ledger::open(opts)
    }

    /// Opens an existing ledger, checking it belongs to this origin and key.
    pub fn open(opts: LedgerOptions) -> Result<Ledger, LedgerError> {
        if !opts.path.exists() {
            return Err(LedgerError::Request(format!(
                "{} does not exist (create it with `evident init`)",
                opts.path.display()
            )));
        }
        let mut conn = store::open_connection(&opts.path, opts.synchronous)?;
        store::migrate(&mut conn)?;
        let origin = store::meta(&conn, "origin")?.unwrap_or_default();
        if origin != opts.origin {
            return Err(LedgerError::Identity { what: "origin", found: origin, expected: opts.origin.clone() });
        }
        let key = store::meta(&conn, "ledger_key")?.unwrap_or_default();
        let ours = opts.key.verifier().to_string();
        if key != ours {
            return Err(LedgerError::Identity { what: "ledger key", found: key, expected: ours });
        }
        let reader = store::open_connection(&opts.path, opts.synchronous)?;
        for c in [&conn, &reader] {
            let bytes = i64::try_from(opts.mmap_bytes).unwrap_or(i64::MAX);
            c.pragma_update(None, "mmap_size", bytes).map_err(|e| StoreError::open(&opts.path, e))?;
        }
        let keys = load_keys(&conn)?;
        // Appends commit without SQLite's fsync and make the WAL durable
        // themselves, after the write lock is released (crate::wal_sync).
        let wal = match opts.synchronous {
            Synchronous::Full => {
                conn.pragma_update(None, "synchronous", "NORMAL").map_err(|e| StoreError::open(&opts.path, e))?;
                Some(WalSync::open(&opts.path)?)
            }
            Synchronous::Normal => None,
        };
        let schemas = Schemas::embedded().map_err(|e| LedgerError::Format(e.to_string()))?;
        let privacy = Privacy::new(opts.privacy.clone()).map_err(LedgerError::Format)?;
        Ok(Ledger {
            inner: Arc::new(Inner {
                schemas,
                privacy,
                queue: Mutex::new(Queue::default()),
                writer: Mutex::new(Writer {
                    conn,
                    frontier: None,
                    keys: keys.clone(),
                    ids: IdIndex::new(opts.merge_min),
                }),
                reader: Mutex::new(reader),
                keys: Mutex::new(Arc::new(keys)),
                arrived: Condvar::new(),
                edge: Mutex::new(None),
                tiles: SharedTiles::default(),
                wal,
                opts,
            }),
        })
    }

    /// The options it was opened with.
    pub fn options(&self) -> &LedgerOptions {
        &self.inner.opts
    }

    /// The ledger's verifier key (trust anchor for checkpoints and key events).
    pub fn verifier_key(&self) -> VerifierKey {
        self.inner.opts.key.verifier()
    }

    /// The embedded schemas.
    pub fn schemas(&self) -> &Schemas {
        &self.inner.schemas
    }

    /// Validates a submission without storing anything.
    fn prepare(&self, sub: Submission) -> Result<Prepared, AppendError> {
        let opts = &self.inner.opts;
        let Submission { mut rec, sig, vault } = sub;
        rec.check().map_err(AppendError::Record)?;
        let fields = self.inner.schemas.fields(&rec.kind)?;
        // What a retry of a record the ledger commits itself is compared on.
        let raw_jcs = if sig.is_none() && self.inner.privacy.may_commit(fields) {
            Some(rec.signing_bytes().map_err(AppendError::Record)?)
        } else {
            None
        };
        let vault = match &sig {
            // A signed record carries commitments made by the producer.
            Some(_) => self.inner.privacy.check_signed(&rec, fields, vault)?,
            // For unsigned producers the ledger commits itself.
            None => self.inner.privacy.commit_unsigned(&mut rec, fields)?,
        };
        self.inner.privacy.scan(&rec, fields)?;
        self.inner.schemas.validate(&rec.kind, &rec.body)?;
        let rec_jcs = rec.signing_bytes().map_err(AppendError::Record)?;
        if rec_jcs.len() > opts.max_record_bytes {
            return Err(AppendError::TooLarge { size: rec_jcs.len(), limit: opts.max_record_bytes });
        }
        let unverified = match &sig {
            Some(s) => Some(self.signing_key(&rec, s)?),
            None => {
                if !opts.unsigned_producers.contains(&rec.producer) {
                    return Err(AppendError::Unsigned(rec.producer.clone()));
                }
                None
            }
        };
        if rec.kind == "key_event" && rec.producer != opts.key.name() {
            return Err(AppendError::Privacy(format!(
                "key_event records must come from the ledger itself (producer {:?}); use `evident key`",
                opts.key.name()
            )));
        }
        let idkey = store::idkey(&rec.producer, &rec.id);
        if rec.kind != "key_event" {
            // The commit needs only the canonical bytes (and a key event's
            // body): the tree is freed here, in parallel, not by the writer.
            rec.body = serde_json::Value::Null;
        }
        let dedup_raw = raw_jcs.filter(|_| !vault.is_empty());
        let sig_jcs = sig.as_ref().map(ProducerSig::canonical_bytes);
        let leaf_start = LeafStart::new(&rec_jcs);
        Ok(Prepared { rec, sig, rec_jcs, leaf_start, sig_jcs, dedup_raw, unverified, idkey, vault, probe: None })
    }

    /// Finds the key a signature names among the producer's keys (any ever
    /// registered; validity at `ts` is checked at commit, when `ts` is
    /// known) and decodes the signature. The signature itself is verified
    /// in a batch by [`verify_signatures`].
    fn signing_key(&self, rec: &Record, sig: &ProducerSig) -> Result<(VerifierKey, [u8; 64]), AppendError> {
        rec.check_sig_binding(sig).map_err(AppendError::Signature)?;
        let raw = evident_verify::leaf::decode_sig(&sig.ed25519).map_err(AppendError::Signature)?;
        if rec.producer == self.inner.opts.key.name() {
            let ledger_key = self.inner.opts.key.verifier();
            if ledger_key.has_id(&sig.key) {
                return Ok((ledger_key, raw));
            }
        }
        let keys = lock(&self.inner.keys).clone();
        let found = keys.all().find(|(p, k)| *p == rec.producer && k.key.has_id(&sig.key)).map(|(_, k)| k.key.clone());
        match found {
            Some(k) => Ok((k, raw)),
            None => Err(AppendError::Key(evident_verify::keys::KeyHistoryError::UnknownKey {
                producer: rec.producer.clone(),
                key: sig.key.clone(),
            })),
        }
    }

    /// Appends one record; returns once it is durable.
    pub fn append(&self, sub: Submission) -> Result<AppendReceipt, AppendError> {
        self.append_batch(vec![sub]).pop().unwrap_or_else(|| Err(AppendError::Malformed("empty batch".into())))
    }

    /// Appends many records; returns once all are durable. Each gets its
    /// own result: a bad record is refused without blocking the good ones.
    /// Up to [`PIPELINE_ABOVE`] records share one commit; a larger batch is
    /// pipelined: committed in chunks of at most [`PIPELINE_CHUNK`], each
    /// written while the next chunks are validated and their signatures
    /// verified (on a thread of their own, a chunk behind validation), and
    /// while the thread that hands chunks to the writer, when it is ahead,
    /// checkpoints the WAL.
    /// The chunks' commits do not wait for an fsync each (a 10,000-record
    /// batch made ten): the writer flushes the WAL only while it waits for
    /// the next chunk, and once after the last, and no result is returned
    /// before that last fsync has succeeded.
    pub fn append_batch(&self, subs: Vec<Submission>) -> Vec<Result<AppendReceipt, AppendError>> {
        if subs.len() <= PIPELINE_ABOVE {
            return self.commit_prepared(self.prepare_all(subs), true);
        }
        let n = subs.len();
        // With signatures, three stages, each a chunk ahead of the next:
        // validation (and the idempotency probe), signature verification,
        // the writer. The first two share the rayon pool, so the tail of
        // one chunk's verification leaves no core idle while the next chunk
        // is validated. Without signatures, validation feeds the writer.
        let verifying = subs.iter().any(|s| s.sig.is_some());
        let (tx, validated) = std::sync::mpsc::sync_channel::<PreparedChunk>(1);
        let (vtx, rx) = std::sync::mpsc::sync_channel::<PreparedChunk>(1);
        std::thread::scope(|s| {
            let to_writer = vtx.clone();
            s.spawn(move || {
                let mut checkpointer: Option<Option<Connection>> = None;
                let mut subs = subs.into_iter();
                let cap = chunk_cap(n, verifying);
                let mut ramp = first_chunk(n, verifying);
                loop {
                    let size = chunk_size(ramp, subs.len());
                    let chunk: Vec<Submission> = subs.by_ref().take(size).collect();
                    if chunk.is_empty() {
                        break;
                    }
                    let prepared = self.validate_all(chunk);
                    let sent = if verifying {
                        tx.send(prepared).is_ok()
                    } else {
                        self.hand_to_writer(&to_writer, prepared, &mut checkpointer)
                    };
                    if !sent {
                        break;
                    }
                    ramp = (ramp * 2).min(cap);
                }
            });
            if verifying {
                s.spawn(move || {
                    let mut checkpointer: Option<Option<Connection>> = None;
                    for mut prepared in validated {
                        verify_signatures(prepared.iter_mut());
                        if !self.hand_to_writer(&vtx, prepared, &mut checkpointer) {
                            break;
                        }
                    }
                });
            } else {
                drop((validated, vtx));
            }
            let mut results = Vec::with_capacity(n);
            let mut next = rx.recv();
            while let Ok(prepared) = next {
                // Written, not yet durable: the fsync below covers every chunk.
                results.extend(self.commit_prepared(prepared, false));
                next = rx.try_recv().or_else(|_| {
                    // The next chunk is not ready (verification is slower
                    // than writing): flush what is written while it comes,
                    // so the last fsync has less to write. A failure stays
                    // in `WalSync` and reaches every result below.
                    if let Some(wal) = &self.inner.wal {
                        let _ = wal.settle();
                    }
                    rx.recv()
                });
            }
            if let Some(Err(failed)) = self.inner.wal.as_ref().map(WalSync::settle) {
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(AppendError::Store(failed.clone().into()));
                }
            }
            results
        })
    }

    /// Sends a pipelined batch's next chunk to its writer; if the writer is
    /// still committing the chunk before, checkpoints meanwhile. False if
    /// the writer has stopped.
    fn hand_to_writer(
        &self,
        to_writer: &std::sync::mpsc::SyncSender<PreparedChunk>,
        prepared: PreparedChunk,
        checkpointer: &mut Option<Option<Connection>>,
    ) -> bool {
        match to_writer.try_send(prepared) {
            Ok(()) => true,
            Err(std::sync::mpsc::TrySendError::Full(prepared)) => {
                self.checkpoint_meanwhile(checkpointer);
                to_writer.send(prepared).is_ok()
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => false,
        }
    }

    /// Called by the thread that hands a pipelined batch's chunks to the
    /// writer (verifying signatures, or validating when there are none)
    /// when the writer is still committing the chunk before: copies the WAL
    /// frames committed so far into the database file (a PASSIVE checkpoint
    /// through a connection of its own, opened on first use), so that the
    /// writer's automatic checkpoint finds little left to copy and the WAL
    /// still restarts whenever it reaches SQLite's checkpoint threshold. That copy was ~24%
    /// of the writer thread's time on 200,000-record batches (docs/perf,
    /// sixth round). PASSIVE never blocks the writer; if it fails, the
    /// writer's checkpoint copies everything, as it does otherwise. A
    /// thread that is not ahead of the writer (signature-bound batches,
    /// where verification is the bottleneck) finds the writer waiting for
    /// its chunk and does not call this.
    fn checkpoint_meanwhile(&self, conn: &mut Option<Option<Connection>>) {
        let conn =
            conn.get_or_insert_with(|| store::open_connection(&self.inner.opts.path, self.inner.opts.synchronous).ok());
        if let Some(c) = conn {
            let _ = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        }
    }

    /// Validates submissions (in parallel when there are many) and verifies
    /// their signatures, unless the call is small enough to leave them to
    /// its commit's leader (fewer than [`DEFER_BELOW`], and a WAL to fsync
    /// that the leader's verification overlaps).
    fn prepare_all(&self, subs: Vec<Submission>) -> Vec<Result<Prepared, AppendError>> {
        let mut prepared = self.validate_all(subs);
        if prepared.len() >= DEFER_BELOW || self.inner.wal.is_none() {
            verify_signatures(prepared.iter_mut());
        }
        prepared
    }

    /// [`Ledger::prepare`] for each submission (in parallel when there are
    /// many), and the idempotency probe for calls of [`DEFER_BELOW`] or
    /// more; signatures are left unverified.
    fn validate_all(&self, subs: Vec<Submission>) -> Vec<Result<Prepared, AppendError>> {
        use rayon::prelude::*;
        if subs.len() < DEFER_BELOW {
            return subs.into_iter().map(|s| self.prepare(s)).collect();
        }
        let mut prepared: Vec<Result<Prepared, AppendError>> = subs.into_par_iter().map(|s| self.prepare(s)).collect();
        self.probe(&mut prepared);
        prepared
    }

    /// Reads the merged idempotency level for a batch's records through
    /// the reader connection, so the commit, which holds the write lock,
    /// need not (when nothing has left the recent level since: see
    /// [`idindex::Probe`]). If the read fails the commit reads instead.
    fn probe(&self, prepared: &mut [Result<Prepared, AppendError>]) {
        let read = || -> Result<idindex::Probe, StoreError> {
            let conn = lock(&self.inner.reader);
            let tx = conn.unchecked_transaction()?;
            idindex::Probe::read(&tx, prepared.iter().filter_map(|p| p.as_ref().ok()).map(|p| p.idkey))
        };
        if let Ok(probe) = read() {
            let probe = Arc::new(probe);
            for p in prepared.iter_mut().flatten() {
                p.probe = Some(probe.clone());
            }
        }
    }

    /// Commits the prepared records that passed, in one commit shared with
    /// concurrent callers, and returns every record's result in order: once
    /// the commit is durable, or with `durable` false once it is written
    /// (the caller then makes it durable, with [`WalSync::settle`]).
    fn commit_prepared(
        &self,
        prepared: Vec<Result<Prepared, AppendError>>,
        durable: bool,
    ) -> Vec<Result<AppendReceipt, AppendError>> {
        if prepared.iter().all(Result::is_err) {
            return prepared.into_iter().filter_map(Result::err).map(Err).collect();
        }
        self.submit(prepared, durable)
    }

    /// Queues records for the next commit and returns their results once it
    /// is durable (with `durable` false, once it is written). The first
    /// caller to find no leader leads: it commits everything queued, hands
    /// the next commit to whoever queued meanwhile, and only then waits for
    /// its fsync.
    fn submit(&self, items: Vec<Result<Prepared, AppendError>>, durable: bool) -> Results {
        let slot = Arc::new(Slot::new());
        let mut q = lock(&self.inner.queue);
        q.pending.push(Pending { items, slot: slot.clone(), durable });
        if q.leader {
            if !self.inner.opts.commit_delay.is_zero() {
                self.inner.arrived.notify_one();
            }
            drop(q);
            match slot.wait() {
                Turn::Done(r) => return r,
                _ => q = lock(&self.inner.queue),
            }
        } else {
            q.leader = true;
        }
        loop {
            // We lead, and our records are queued.
            q = self.gather(q);
            let mut batch = Vec::new();
            let mut n = 0;
            let take = q
                .pending
                .iter()
                .take_while(|p| {
                    let fits = n == 0 || n + p.items.len() <= MAX_GROUP;
                    n += p.items.len();
                    fits
                })
                .count();
            batch.extend(q.pending.drain(..take));
            drop(q);
            let delivery = {
                let _lead = Lead { inner: &self.inner, callers: batch.len() };
                self.commit(batch)
            };
            // The next leader verifies and commits while this one waits for
            // its fsync.
            delivery.deliver();
            // Our records were in the batch, unless earlier callers filled it.
            match slot.wait() {
                Turn::Done(r) => return r,
                _ => q = lock(&self.inner.queue),
            }
        }
    }

    /// As the new leader, waits for as many callers as the last commit
    /// served to queue their records, within the commit delay and while
    /// they keep arriving.
    fn gather<'q>(&self, mut q: MutexGuard<'q, Queue>) -> MutexGuard<'q, Queue> {
        let delay = self.inner.opts.commit_delay;
        if delay.is_zero() || q.last_callers <= 1 {
            return q;
        }
        let want = q.last_callers;
        let deadline = Instant::now() + delay;
        let mut seen = q.pending.len();
        let mut last_arrival = Instant::now();
        while q.pending.len() < want {
            let now = Instant::now();
            let until = deadline.min(last_arrival + ARRIVAL_GAP);
            if now >= until {
                break;
            }
            q = self.inner.arrived.wait_timeout(q, until - now).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
            if q.pending.len() > seen {
                seen = q.pending.len();
                last_arrival = Instant::now();
            }
        }
        q
    }

    /// Verifies the signatures the batch's callers left to the leader, then
    /// writes one commit of its records; the results are delivered once it
    /// is durable.
    fn commit(&self, batch: Vec<Pending>) -> Delivery<'_> {
        let mut d = Delivery {
            inner: &self.inner,
            callers: Vec::with_capacity(batch.len()),
            results: Vec::new(),
            commit: None,
            durable: batch.iter().any(|p| p.durable),
        };
        let mut items: Vec<Result<Prepared, AppendError>> = Vec::new();
        for p in batch {
            d.callers.push((p.slot, p.items.len()));
            if items.is_empty() {
                items = p.items;
            } else {
                items.extend(p.items);
            }
        }
        // The signatures small calls left to the leader are verified as one
        // batch, before the write lock and while the previous commit's
        // fsync runs.
        verify_signatures(items.iter_mut());
        let good: Vec<&Prepared> = items.iter().filter_map(|item| item.as_ref().ok()).collect();
        let mut w = lock(&self.inner.writer);
        let written = match self.inner.wal.as_ref().map_or(Ok(()), WalSync::check) {
            Err(failed) => Err(failed.into()),
            Ok(()) => self.commit_items(&mut w, &good),
        };
        let mut stored = match written {
            Ok(r) => {
                d.commit = self.inner.wal.as_ref().map(WalSync::written);
                Ok(r.into_iter())
            }
            Err(e) => {
                // Roll back our view too: reload from the database next time.
                w.frontier = None;
                w.ids.reset();
                Err(format!("{e:#}"))
            }
        };
        drop((w, good));
        d.results = items
            .iter_mut()
            .map(|item| match (item, &mut stored) {
                // Taken out without allocating; `items` is only dropped now.
                (Err(e), _) => Err(std::mem::replace(e, AppendError::Malformed(String::new()))),
                (Ok(_), Ok(r)) => {
                    r.next().unwrap_or_else(|| Err(AppendError::Malformed("record lost in commit".into())))
                }
                (Ok(_), Err(msg)) => Err(AppendError::Store(StoreError::Corrupt(msg.clone()))),
            })
            .collect();
        // Freeing a large chunk's records (allocated by the threads that
        // prepared them) is left to the pool, off the writer's path.
        if items.len() >= DEFER_BELOW {
            rayon::spawn(move || drop(items));
        }
        d
    }

    fn commit_items(&self, w: &mut Writer, items: &[&Prepared]) -> Result<Results, StoreError> {
        let opts = &self.inner.opts;
        let Writer { conn, frontier, keys, ids } = w;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let db_size = store::size(&tx)?;
        let stale = frontier.as_ref().is_none_or(|f| f.range.size() != db_size);
        if stale {
            *frontier = Some(Frontier::load(&tx)?);
            *keys = load_keys(&tx)?;
            *lock(&self.inner.keys) = Arc::new(keys.clone());
        }
        ids.sync(&tx, db_size, items.iter().map(|p| p.idkey))?;
        let mut ids_pending = idindex::Pending::default();
        let Some(front) = frontier.as_mut() else {
            return Err(StoreError::Corrupt("no frontier".into()));
        };
        let mut front_work = front.clone();
        let mut keys_work = keys.clone();
        let mut keys_changed = false;
        let now = opts.clock.now().0;
        // A day that has been packed is sealed: nothing may land in it later,
        // even from a writer whose clock is behind.
        let sealed: i64 = tx
            .prepare_cached("SELECT v FROM meta WHERE k = 'sealed_until'")?
            .query_row([], |r| r.get::<_, String>(0))
            .optional()?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let ts_val = now.max(front_work.last_ts).max(sealed);
        let ts = Timestamp(ts_val);
        let ts_s = ts.to_string();
        let ledger_key = opts.key.verifier();
        let mut out = Vec::with_capacity(items.len());
        // Records this commit stores, by idkey: `(position, seq)`; a second
        // record under one idkey (a hash collision) goes to `in_batch_more`.
        let mut in_batch: HashMap<i64, (usize, u64)> = HashMap::with_capacity(items.len());
        let mut in_batch_more: Vec<(i64, usize, u64)> = Vec::new();
        // Probes of the merged level made before the lock, if still current.
        let epoch = if items.iter().any(|p| p.probe.is_some()) { Some(idindex::Epoch::read(&tx)?) } else { None };
        let mut current: Vec<(*const idindex::Probe, bool)> = Vec::new();
        let mut leaf = Vec::new();
        {
            let mut find = tx.prepare_cached("SELECT ts, leaf FROM entries WHERE seq = ?1")?;
            let mut ins = tx.prepare_cached("INSERT INTO entries (seq, ts, idkey, leaf) VALUES (?1, ?2, ?3, ?4)")?;
            let mut ins_tile = tx.prepare_cached("INSERT INTO tiles (level, idx, hashes) VALUES (?1, ?2, ?3)")?;
            let mut ins_vault = tx.prepare_cached(
                "INSERT OR IGNORE INTO vault (commitment, subject, seq, field, value, salt) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for (i, p) in items.iter().enumerate() {
                if p.unverified.is_some() {
                    // Never reached: a guard, so no path stores an unchecked signature.
                    out.push(Err(AppendError::Malformed("internal: producer signature not verified".into())));
                    continue;
                }
                // Idempotency: an earlier record with the same (producer, id)?
                let mut dup: Option<Result<AppendReceipt, AppendError>> = None;
                let probed = match (&p.probe, &epoch) {
                    (Some(probe), Some(now)) => {
                        let ptr = Arc::as_ptr(probe);
                        let ok = match current.iter().find(|(q, _)| *q == ptr) {
                            Some(&(_, ok)) => ok,
                            None => {
                                let ok = probe.current(now);
                                current.push((ptr, ok));
                                ok
                            }
                        };
                        ok.then_some(&**probe)
                    }
                    _ => None,
                };
                for seq in ids.candidates(&tx, p.idkey, probed)? {
                    let (ets, leaf) = find
                        .query_row([to_i64(seq)?], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
                        .optional()?
                        .ok_or_else(|| {
                            StoreError::Corrupt(format!("the idempotency index names seq {seq}, which is missing"))
                        })?;
                    let e = Entry::parse_leaf(&leaf).map_err(|e| StoreError::Corrupt(format!("seq {seq}: {e}")))?;
                    if e.rec.producer == p.rec.producer && e.rec.id == p.rec.id {
                        let stored = dedup_form(&tx, &e)?;
                        dup = Some(same_or_conflict(&stored, p, seq, Timestamp(ets), &leaf));
                        break;
                    }
                }
                if dup.is_none() {
                    let more = in_batch_more.iter().filter(|m| m.0 == p.idkey).map(|&(_, j, seq)| (j, seq));
                    for (j, seq) in in_batch.get(&p.idkey).copied().into_iter().chain(more) {
                        if items[j].rec.producer == p.rec.producer && items[j].rec.id == p.rec.id {
                            dup = Some(match &out[j] {
                                Ok(r) if items[j].dedup_jcs() == p.dedup_jcs() => {
                                    let r: &AppendReceipt = r;
                                    Ok(AppendReceipt { duplicate: true, ..r.clone() })
                                }
                                _ => Err(AppendError::Conflict {
                                    producer: p.rec.producer.clone(),
                                    id: p.rec.id.clone(),
                                    seq,
                                }),
                            });
                            break;
                        }
                    }
                }
                if let Some(d) = dup {
                    out.push(d);
                    continue;
                }
                // The signing key must be valid at the ledger time.
                if let Some(sig) = &p.sig
                    && !(p.rec.producer == ledger_key.name() && sig.key == ledger_key.id())
                    && let Err(e) = keys_work.key_at(&p.rec.producer, &sig.key, ts)
                {
                    out.push(Err(AppendError::Key(e)));
                    continue;
                }
                let seq = front_work.range.size();
                let lh = p.leaf_start.finish(seq, &ts_s, &p.rec_jcs, p.sig_jcs.as_deref(), &mut leaf);
                if leaf.len() > evident_verify::leaf::MAX_LEAF_BYTES {
                    out.push(Err(AppendError::Record(evident_verify::leaf::LeafError::TooLarge(leaf.len()))));
                    continue;
                }
                if p.rec.kind == "key_event" {
                    let body: KeyEventBody = match serde_json::from_value(p.rec.body.clone()) {
                        Ok(b) => b,
                        Err(e) => {
                            out.push(Err(AppendError::Malformed(format!("key_event body: {e}"))));
                            continue;
                        }
                    };
                    if let Err(e) = keys_work.apply(seq, ts, &body) {
                        out.push(Err(AppendError::Key(e)));
                        continue;
                    }
                    tx.execute("INSERT INTO key_events (seq) VALUES (?1)", [to_i64(seq)?])?;
                    keys_changed = true;
                }
                ins.execute(params![to_i64(seq)?, ts_val, p.idkey, &leaf[..]])?;
                ids_pending.push(p.idkey, seq);
                for (level, idx, row) in front_work.push(lh) {
                    let blob: Vec<u8> = row.iter().flat_map(|h| h.0).collect();
                    ins_tile.execute(params![level, to_i64(idx)?, blob])?;
                }
                for v in &p.vault {
                    ins_vault.execute(params![v.commitment, v.subject, to_i64(seq)?, v.field, v.value, v.salt])?;
                }
                match in_batch.entry(p.idkey) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert((i, seq));
                    }
                    std::collections::hash_map::Entry::Occupied(_) => in_batch_more.push((p.idkey, i, seq)),
                }
                out.push(Ok(AppendReceipt { seq, leaf_hash: lh.to_hex(), ts: ts_s.clone(), duplicate: false }));
            }
        }
        front_work.last_ts = ts_val;
        IdIndex::write(&tx, &ids_pending)?;
        ids.maintain(&tx, db_size, items.len(), &mut ids_pending)?;
        tx.commit()?;
        ids.committed(ids_pending, front_work.range.size());
        *front = front_work;
        *lock(&self.inner.edge) = Some(Arc::new(front.clone()));
        if keys_changed {
            *keys = keys_work;
            *lock(&self.inner.keys) = Arc::new(keys.clone());
        }
        Ok(out)
    }

    /// Number of entries.
    pub fn size(&self) -> Result<u64, LedgerError> {
        Ok(store::size(&lock(&self.inner.reader))?)
    }

    /// The current tree head.
    pub fn head(&self) -> Result<TreeHead, LedgerError> {
        self.settle()?;
        let conn = lock(&self.inner.reader);
        let tx = conn.unchecked_transaction().map_err(StoreError::from)?;
        let n = store::size(&tx)?;
        let root = merkle::root_at(&TileReader::new(&tx), n)?;
        Ok(TreeHead { size: n, root })
    }

    /// The tree head at an earlier size.
    pub fn head_at(&self, size: u64) -> Result<TreeHead, LedgerError> {
        self.settle()?;
        let conn = lock(&self.inner.reader);
        if size > store::size(&conn)? {
            return Err(LedgerError::Request(format!("tree size {size} is beyond the ledger")));
        }
        Ok(TreeHead { size, root: merkle::root_at(&TileReader::new(&conn), size)? })
    }

    /// Signs and stores a checkpoint of the current tree (or returns the
    /// stored one if the tree has not grown since).
    pub fn checkpoint(&self) -> Result<String, LedgerError> {
        let head = self.head()?;
        self.checkpoint_head(head)
    }

    /// Signs and stores a checkpoint for an earlier tree size.
    pub fn checkpoint_at(&self, size: u64) -> Result<String, LedgerError> {
        if let Some(n) = self.stored_checkpoint(size)? {
            return Ok(n);
        }
        let head = self.head_at(size)?;
        self.checkpoint_head(head)
    }

    fn checkpoint_head(&self, head: TreeHead) -> Result<String, LedgerError> {
        if let Some(n) = self.stored_checkpoint(head.size)? {
            return Ok(n);
        }
        let cp = Checkpoint::new(&self.inner.opts.origin, head);
        let note = cp.sign(&[&self.inner.opts.key]).map_err(|e| LedgerError::Format(e.to_string()))?;
        let conn = lock(&self.inner.reader);
        let now = Timestamp::from_datetime(chrono::Utc::now()).0;
        conn.execute(
            "INSERT OR IGNORE INTO checkpoints (size, ts, note) VALUES (?1, ?2, ?3)",
            params![to_i64(head.size)?, now, note],
        )
        .map_err(StoreError::from)?;
        drop(conn);
        // A concurrent writer may have stored the same size first; return the stored one.
        Ok(self.stored_checkpoint(head.size)?.unwrap_or(note))
    }

    /// The stored checkpoint at `size`, if any.
    pub fn stored_checkpoint(&self, size: u64) -> Result<Option<String>, LedgerError> {
        let conn = lock(&self.inner.reader);
        Ok(conn
            .query_row("SELECT note FROM checkpoints WHERE size = ?1", [to_i64(size)?], |r| r.get(0))
            .optional()
            .map_err(StoreError::from)?)
    }

    /// Every stored checkpoint: `(size, created ts, note)`, by size.
    pub fn checkpoints(&self) -> Result<Vec<(u64, Timestamp, String)>, LedgerError> {
        let conn = lock(&self.inner.reader);
        let mut stmt =
            conn.prepare("SELECT size, ts, note FROM checkpoints ORDER BY size").map_err(StoreError::from)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))
            .map_err(StoreError::from)?;
        let mut out = Vec::new();
        for row in rows {
            let (s, t, n) = row.map_err(StoreError::from)?;
            out.push((to_u64(s)?, Timestamp(t), n));
        }
        Ok(out)
    }

    /// Inclusion proof of `seq` in the tree of `size` leaves.
    pub fn prove_inclusion(&self, seq: u64, size: u64) -> Result<Vec<Hash>, LedgerError> {
        let conn = lock(&self.inner.reader);
        // One read transaction: one snapshot, one lock, for all the reads.
        let tx = conn.unchecked_transaction().map_err(StoreError::from)?;
        let edge = self.edge(&tx)?;
        if size > store::size(&tx)? {
            return Err(LedgerError::Request(format!("tree size {size} is beyond the ledger")));
        }
        let reader = TileReader::with_caches(&tx, Some(&edge), &self.inner.tiles);
        merkle::prove_inclusion(&reader, seq, size).map_err(|e| match e {
            merkle::ProveError::Store(s) => LedgerError::Store(s),
            other => LedgerError::Request(other.to_string()),
        })
    }

    /// The right edge for proofs: as of this handle's last commit, or loaded
    /// once (O(log n) reads) if it has not committed yet. An edge older than
    /// the database is still right for every tree size it covers.
    fn edge(&self, conn: &Connection) -> Result<Arc<Frontier>, StoreError> {
        if let Some(e) = lock(&self.inner.edge).clone() {
            return Ok(e);
        }
        let e = Arc::new(Frontier::load(conn)?);
        lock(&self.inner.edge).get_or_insert_with(|| e.clone());
        Ok(e)
    }

    /// Consistency proof from `old` to `new` leaves.
    pub fn prove_consistency(&self, old: u64, new: u64) -> Result<Vec<Hash>, LedgerError> {
        let conn = lock(&self.inner.reader);
        let tx = conn.unchecked_transaction().map_err(StoreError::from)?;
        let edge = self.edge(&tx)?;
        if new > store::size(&tx)? {
            return Err(LedgerError::Request(format!("tree size {new} is beyond the ledger")));
        }
        let reader = TileReader::with_caches(&tx, Some(&edge), &self.inner.tiles);
        merkle::prove_consistency(&reader, old, new).map_err(|e| match e {
            merkle::ProveError::Store(s) => LedgerError::Store(s),
            other => LedgerError::Request(other.to_string()),
        })
    }

    /// The compact range of `[0, size)`.
    pub fn compact_range(&self, size: u64) -> Result<CompactRange, LedgerError> {
        let conn = lock(&self.inner.reader);
        let reader = TileReader::new(&conn);
        let hashes = merkle::hash_ranges(
            &reader,
            &merkle::range_nodes(0, size)
                .iter()
                .map(|n| (n.first_leaf(), n.first_leaf() + (1 << n.level)))
                .collect::<Vec<_>>(),
        )?;
        CompactRange::from_parts(size, hashes).map_err(|e| LedgerError::Format(e.to_string()))
    }

    /// The stored leaf bytes of `seq`.
    pub fn leaf(&self, seq: u64) -> Result<Vec<u8>, LedgerError> {
        store::leaf(&lock(&self.inner.reader), seq)?
            .ok_or_else(|| LedgerError::Request(format!("no entry with seq {seq}")))
    }

    /// A receipt file for `seq` against the checkpoint at `size` (default:
    /// a fresh checkpoint of the whole tree).
    pub fn receipt(&self, seq: u64, size: Option<u64>) -> Result<ReceiptFile, LedgerError> {
        let note = match size {
            Some(s) => self.checkpoint_at(s)?,
            None => self.checkpoint()?,
        };
        let cp = checkpoint::open(note.as_bytes(), &[self.verifier_key()], Some(&self.inner.opts.origin))
            .map_err(|e| LedgerError::Format(e.to_string()))?;
        let size = cp.checkpoint.size;
        let leaf = self.leaf(seq)?;
        let proof = self.prove_inclusion(seq, size)?;
        Ok(ReceiptFile {
            format: RECEIPT_FORMAT.to_string(),
            seq,
            tree_size: size,
            leaf: String::from_utf8(leaf).map_err(|_| LedgerError::Format(format!("seq {seq}: leaf is not UTF-8")))?,
            inclusion: proof.iter().map(Hash::to_base64).collect(),
            checkpoint: note,
        })
    }

    /// Calls `f` with `(seq, ts, leaf bytes)` for every entry in `[start, end)`,
    /// streaming from SQLite.
    pub fn for_each_leaf(
        &self,
        start: u64,
        end: u64,
        mut f: impl FnMut(u64, Timestamp, &[u8]) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let conn = store::open_connection(&self.inner.opts.path, self.inner.opts.synchronous)?;
        let tx = conn.unchecked_transaction().map_err(StoreError::from)?;
        let mut stmt = tx
            .prepare("SELECT seq, ts, leaf FROM entries WHERE seq >= ?1 AND seq < ?2 ORDER BY seq")
            .map_err(StoreError::from)?;
        let mut rows = stmt.query(params![to_i64(start)?, to_i64(end)?]).map_err(StoreError::from)?;
        let mut expect = start;
        while let Some(r) = rows.next().map_err(StoreError::from)? {
            let seq = to_u64(r.get(0).map_err(StoreError::from)?)?;
            if seq != expect {
                return Err(StoreError::Corrupt(format!("entry seq {expect} is missing")).into());
            }
            let ts: i64 = r.get(1).map_err(StoreError::from)?;
            let leaf =
                r.get_ref(2).map_err(StoreError::from)?.as_blob().map_err(|e| StoreError::Corrupt(e.to_string()))?;
            f(seq, Timestamp(ts), leaf)?;
            expect += 1;
        }
        Ok(())
    }

    /// The first seq whose `ts` is at or after `t` (the ledger size if none):
    /// a binary search over seq, since `ts` never decreases.
    pub fn seq_at_time(&self, t: Timestamp) -> Result<u64, LedgerError> {
        let conn = lock(&self.inner.reader);
        let n = store::size(&conn)?;
        let (mut lo, mut hi) = (0u64, n);
        let mut stmt = conn.prepare_cached("SELECT ts FROM entries WHERE seq = ?1").map_err(StoreError::from)?;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let ts: i64 = stmt.query_row([to_i64(mid)?], |r| r.get(0)).map_err(StoreError::from)?;
            if ts < t.0 {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// The timestamp of the first entry, if any.
    pub fn first_ts(&self) -> Result<Option<Timestamp>, LedgerError> {
        let conn = lock(&self.inner.reader);
        Ok(conn
            .query_row("SELECT ts FROM entries WHERE seq = 0", [], |r| r.get::<_, i64>(0))
            .optional()
            .map_err(StoreError::from)?
            .map(Timestamp))
    }

    /// The current producer key history.
    pub fn key_history(&self) -> Result<KeyHistory, LedgerError> {
        Ok(load_keys(&lock(&self.inner.reader))?)
    }

    /// Appends a record as the ledger itself (signed with the ledger key).
    pub fn append_as_ledger(
        &self,
        kind: &str,
        id: &str,
        body: serde_json::Value,
    ) -> Result<AppendReceipt, AppendError> {
        let rec = Record {
            id: id.to_string(),
            kind: kind.to_string(),
            producer: self.inner.opts.key.name().to_string(),
            at: self.inner.opts.clock.now().to_string(),
            body,
        };
        let sig = rec.sign(&self.inner.opts.key).map_err(AppendError::Record)?;
        self.append(Submission { rec, sig: Some(sig), vault: Vec::new() })
    }

    /// Seals the ledger before `t`: every later append gets `ts >= t`, so a
    /// UTC day that a pack covers can never gain entries afterwards.
    /// Returns the first seq at or after `t` (the end of the sealed range).
    pub fn seal_before(&self, t: Timestamp) -> Result<u64, LedgerError> {
        self.with_writer(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let cur: i64 = tx
                .query_row("SELECT v FROM meta WHERE k = 'sealed_until'", [], |r| r.get::<_, String>(0))
                .optional()?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if t.0 > cur {
                tx.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('sealed_until', ?1)", [t.0.to_string()])?;
            }
            tx.commit()?;
            Ok(())
        })?;
        self.seq_at_time(t)
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.opts.path
    }

    pub(crate) fn reader(&self) -> MutexGuard<'_, Connection> {
        lock(&self.inner.reader)
    }

    pub(crate) fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut w = lock(&self.inner.writer);
        w.frontier = None;
        let out = f(&mut w.conn)?;
        if let Some(wal) = &self.inner.wal {
            wal.written();
        }
        drop(w);
        self.settle()?;
        Ok(out)
    }

    /// Returns once every commit this handle wrote is durable, so that
    /// nothing it reads back (a tree head) can be lost to a power failure.
    fn settle(&self) -> Result<(), StoreError> {
        Ok(self.inner.wal.as_ref().map_or(Ok(()), WalSync::settle)?)
    }
}

/// The form a stored entry is compared on for retries: JCS(rec), with the
/// ledger's own commitments of an unsigned record opened from the vault.
fn dedup_form(conn: &Connection, e: &Entry) -> Result<Vec<u8>, StoreError> {
    let mut rec = e.rec.clone();
    if e.sig.is_none()
        && let Some(body) = rec.body.as_object_mut()
    {
        let mut stmt = conn.prepare_cached("SELECT value FROM vault WHERE commitment = ?1")?;
        for v in body.values_mut() {
            let Some(c) = crate::privacy::is_commitment(v).map(str::to_string) else { continue };
            let value: Option<Vec<u8>> = stmt.query_row([&c], |r| r.get(0)).optional()?;
            if let Some(bytes) = value
                && let Ok(raw) = serde_json::from_slice(&bytes)
            {
                *v = raw;
            }
        }
    }
    rec.signing_bytes().map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn same_or_conflict(
    stored_jcs: &[u8],
    p: &Prepared,
    seq: u64,
    ts: Timestamp,
    leaf: &[u8],
) -> Result<AppendReceipt, AppendError> {
    if stored_jcs == p.dedup_jcs() {
        Ok(AppendReceipt { seq, leaf_hash: leaf_hash(leaf).to_hex(), ts: ts.to_string(), duplicate: true })
    } else {
        Err(AppendError::Conflict { producer: p.rec.producer.clone(), id: p.rec.id.clone(), seq })
    }
}

/// Verifies the producer signatures of a batch of prepared records in
/// parallel batches (see `evident_verify::sig`), before the write lock.
fn verify_signatures<'a>(prepared: impl Iterator<Item = &'a mut Result<Prepared, AppendError>>) {
    let mut todo: Vec<&mut Result<Prepared, AppendError>> =
        prepared.filter(|p| matches!(p, Ok(p) if p.unverified.is_some())).collect();
    if todo.is_empty() {
        return;
    }
    let verdicts = {
        let items: Vec<(&VerifierKey, &[u8], &[u8; 64])> = todo
            .iter()
            .filter_map(|p| match &**p {
                Ok(Prepared { unverified: Some((key, raw)), rec_jcs, .. }) => Some((key, rec_jcs.as_slice(), raw)),
                _ => None,
            })
            .collect();
        evident_verify::sig::verify_many(&items)
    };
    for (p, ok) in todo.iter_mut().zip(verdicts) {
        let Ok(prep) = &mut **p else { continue };
        if ok {
            prep.unverified = None;
        } else {
            let key = prep.sig.as_ref().map(|s| s.key.clone()).unwrap_or_default();
            **p = Err(AppendError::Signature(evident_verify::leaf::LeafError::BadSignature { key }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path) -> LedgerOptions {
        let origin = "test.evident/ledger";
        let mut o =
            LedgerOptions::new(dir.join("ledger.db"), origin, SignerKey::from_seed(origin, &[1; 32]).expect("key"));
        o.unsigned_producers = vec!["legacy-batch".into()];
        o
    }

    fn ledger(dir: &Path) -> Ledger {
        Ledger::create(options(dir)).expect("create")
    }

    fn sub(n: usize) -> Submission {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/examples/invariant_result.valid.json");
        let examples: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(p).expect("example")).expect("json");
        let mut body = examples[0].clone();
        body["run_id"] = format!("ci-run-{n}").into();
        body["verification_command"] = format!("psql -f gate.sql{}", " --strict".repeat(100)).into();
        Submission::unsigned(Record {
            id: format!("rec-{n}"),
            kind: "invariant_result".into(),
            producer: "legacy-batch".into(),
            at: "2026-11-21T09:30:12Z".into(),
            body,
        })
    }

    /// The writer and the reader map the file as configured, beyond
    /// SQLite's stock 2 GB limit (which would cut the value silently if the
    /// build's `SQLITE_MAX_MMAP_SIZE` were missing), and not at all with 0.
    #[test]
    fn connections_map_the_file_as_configured() {
        let mapped = |bytes: u64| -> (i64, i64) {
            let dir = tempfile::tempdir().expect("dir");
            let mut o = options(dir.path());
            o.mmap_bytes = bytes;
            let l = Ledger::create(o).expect("create");
            let q = |c: &Connection| c.pragma_query_value(None, "mmap_size", |r| r.get::<_, i64>(0)).expect("pragma");
            let w = q(&lock(&l.inner.writer).conn);
            let r = q(&l.reader());
            (w, r)
        };
        assert_eq!(mapped(DEFAULT_MMAP_BYTES), (1 << 40, 1 << 40));
        assert_eq!(mapped(0), (0, 0));
    }

    /// What a pipelined batch's preparing thread runs while the writer is
    /// behind: it copies committed WAL frames into the database file. Its
    /// errors are ignored (the writer's own checkpoint is the fallback), so
    /// only this test notices if it stops doing anything.
    #[test]
    fn checkpoint_meanwhile_copies_committed_frames_into_the_database() {
        let dir = tempfile::tempdir().expect("dir");
        let l = ledger(dir.path());
        let db = dir.path().join("ledger.db");
        // One commit of ~1 MiB: far below SQLite's automatic checkpoint
        // (1,000 pages of 16 KiB), so it stays in the WAL.
        assert!(l.append_batch((0..1000).map(sub).collect()).iter().all(Result::is_ok));
        let before = std::fs::metadata(&db).expect("db").len();
        let mut conn = None;
        l.checkpoint_meanwhile(&mut conn);
        let after = std::fs::metadata(&db).expect("db").len();
        assert!(before < 256 * 1024, "the commit reached the database file already ({before} bytes)");
        assert!(after > before + 1024 * 1024, "database file {before} -> {after} bytes");
        assert!(matches!(conn, Some(Some(_))), "the connection is kept for the next chunk");
        assert_eq!(l.size().expect("size"), 1000);
        crate::verify_db::verify_db(&l, |_, _| {}).expect("verify-db");
    }

    /// Whether `r` is the refusal a failed fsync of the WAL causes: the
    /// failure itself, or (for commits after it) the poisoned handle's.
    fn fsync_refusal(r: &Result<AppendReceipt, AppendError>) -> bool {
        match r {
            Err(AppendError::Store(e @ (StoreError::Sync { .. } | StoreError::Corrupt(_)))) => {
                let m = e.to_string();
                m.contains("ledger.db-wal") && m.contains("durable failed")
            }
            _ => false,
        }
    }

    /// A pipelined batch's chunks are committed without an fsync each, so
    /// the fsyncs the writer makes decide for all of them: when one fails,
    /// no record of the batch is reported appended, and the handle refuses
    /// to acknowledge anything more (the kernel may have dropped the pages).
    /// A new handle then appends the batch again: records that did reach
    /// the file come back as duplicates, nothing is stored twice.
    #[test]
    fn a_failed_fsync_fails_every_record_of_a_pipelined_batch() {
        let dir = tempfile::tempdir().expect("dir");
        let l = ledger(dir.path());
        let wal = l.inner.wal.as_ref().expect("synchronous = full syncs the WAL itself");
        wal.fail_next.store(true, std::sync::atomic::Ordering::SeqCst);
        let n = 3 * PIPELINE_ABOVE;
        let results = l.append_batch((0..n).map(sub).collect());
        assert_eq!(results.len(), n);
        for (i, r) in results.iter().enumerate() {
            assert!(fsync_refusal(r), "record {i}: expected the fsync failure, got {r:?}");
        }
        assert!(!wal.fail_next.load(std::sync::atomic::Ordering::SeqCst), "the injected failure was consumed");
        // Poisoned: later appends are refused although fsync works again.
        assert!(fsync_refusal(&l.append(sub(n))));
        assert!(l.append_batch((n..n + 2000).map(sub).collect()).iter().all(fsync_refusal));
        drop(l);
        let l = Ledger::open(options(dir.path())).expect("a new handle");
        let stored = l.size().expect("size");
        // At least the first chunk was committed before any fsync ran, so
        // the retry below exercises records refused yet in the file.
        assert!(stored >= PIPELINE_FIRST as u64, "{stored} records reached the file");
        let again = l.append_batch((0..n).map(sub).collect());
        let dups = again.iter().filter(|r| matches!(r, Ok(r) if r.duplicate)).count();
        assert!(again.iter().all(Result::is_ok), "the retry is accepted");
        assert_eq!(dups as u64, stored, "records that reached the file return their receipts");
        assert_eq!(l.size().expect("size"), n as u64, "each record stored once");
        crate::verify_db::verify_db(&l, |_, _| {}).expect("verify-db");
    }

    /// The same for a single append, whose commit waits for its own fsync.
    #[test]
    fn a_failed_fsync_fails_a_single_append() {
        let dir = tempfile::tempdir().expect("dir");
        let l = ledger(dir.path());
        let ok = l.append(sub(0)).expect("first append");
        assert_eq!(ok.seq, 0);
        let wal = l.inner.wal.as_ref().expect("synchronous = full syncs the WAL itself");
        wal.fail_next.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(fsync_refusal(&l.append(sub(1))));
        assert!(fsync_refusal(&l.append(sub(2))), "the handle stays poisoned");
    }
}
