//! The reporter's jobs: build and anchor one day, catch up on every missing
//! day, and report status. One [`Reporter`] holds the configuration, the
//! ledger and the anchor store; a lock file makes sure two reporters never
//! build at once.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use evident_ledger::Ledger;
use evident_verify::ts::Timestamp;
use serde::Serialize;

use crate::anchor::AnchorStore;
use crate::anchoring::{self, AnchorRecord};
use crate::config::ReporterConfig;
use crate::error::ReportError;
use crate::pack::{self, BuiltPack, NoProgress, Progress};

/// Name of the lock file in the packs directory.
pub const LOCK_FILE: &str = ".reporter.lock";

/// The result of building (or finding) and anchoring one day: the `--json`
/// output of `build`, one object per day.
#[derive(Clone, Debug, Serialize)]
pub struct DayOutcome {
    /// The UTC day.
    pub day: String,
    /// First seq of the day.
    pub start: u64,
    /// One past its last seq.
    pub end: u64,
    /// The pack directory.
    pub pack_dir: PathBuf,
    /// The pack tar.
    pub tar: PathBuf,
    /// Hex SHA-256 of `manifest.json`.
    pub manifest_sha256: String,
    /// True when the pack existed and was not rebuilt.
    pub already_built: bool,
    /// The anchored artifacts and their receipts in the ledger.
    pub anchors: Vec<AnchorRecord>,
    /// Ids of the rules that failed (evidence in the report, not an error).
    pub rules_failed: Vec<String>,
}

impl DayOutcome {
    fn new(pack: &BuiltPack, anchors: Vec<AnchorRecord>) -> DayOutcome {
        DayOutcome {
            day: pack.day.to_string(),
            start: pack.manifest.start,
            end: pack.manifest.end,
            pack_dir: pack.dir.clone(),
            tar: pack.tar.clone(),
            manifest_sha256: pack.manifest_sha256.clone(),
            already_built: pack.already_built,
            anchors,
            rules_failed: pack.rules_failed.clone(),
        }
    }
}

/// One day in [`Status`].
#[derive(Clone, Debug, Serialize)]
pub struct DayStatus {
    /// The UTC day.
    pub day: String,
    /// Its pack directory exists.
    pub built: bool,
    /// Its tar exists.
    pub tar: bool,
    /// Both artifacts have confirmed receipts in the ledger.
    pub anchored: bool,
    /// Hex SHA-256 of `manifest.json`, when built.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// Seq range, when built.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    /// Seq range end, when built.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<u64>,
    /// Failed rules, when built.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules_failed: Vec<String>,
}

/// What `status` reports: every closed day from the ledger's first.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// The packs directory.
    pub packs_dir: PathBuf,
    /// The anchor store.
    pub anchor: String,
    /// The ledger's first day, if it has entries.
    pub first_day: Option<String>,
    /// The last closed day.
    pub last_closed_day: Option<String>,
    /// Every closed day from the first.
    pub days: Vec<DayStatus>,
    /// Closed days without a pack.
    pub missing: Vec<String>,
    /// Built days without confirmed anchors.
    pub unanchored: Vec<String>,
}

impl Status {
    /// True when every closed day is built and anchored.
    pub fn up_to_date(&self) -> bool {
        self.missing.is_empty() && self.unanchored.is_empty()
    }
}

/// Holds `<packs_dir>/.reporter.lock` until dropped.
#[derive(Debug)]
pub struct BuildLock {
    _file: File,
    path: PathBuf,
}

impl BuildLock {
    /// Takes the lock, polling for up to `wait` while another process (or
    /// handle) holds it.
    pub async fn acquire(packs_dir: &Path, wait: Duration) -> Result<BuildLock, ReportError> {
        std::fs::create_dir_all(packs_dir).map_err(ReportError::io("creating the packs directory", packs_dir))?;
        let path = packs_dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(ReportError::io("opening the lock file", &path))?;
        let began = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(BuildLock { _file: file, path }),
                Err(TryLockError::WouldBlock) => {
                    if began.elapsed() >= wait {
                        return Err(ReportError::Busy { lock: path, waited_seconds: began.elapsed().as_secs() });
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(TryLockError::Error(e)) => return Err(ReportError::io("locking", &path)(e)),
            }
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The reporter: configuration, ledger and anchor store.
#[derive(Debug)]
pub struct Reporter {
    cfg: ReporterConfig,
    ledger: Ledger,
    store: AnchorStore,
    store_desc: String,
}

impl Reporter {
    /// Opens the ledger named by the configuration (its `evident.toml`,
    /// with the ledger key from its file or environment variable).
    pub fn open(cfg: ReporterConfig) -> Result<Reporter, ReportError> {
        let path = cfg.ledger.clone();
        let bad = |why: String| ReportError::Config { path: Some(path.clone()), why };
        let lc = evident_ledger::config::Config::load(&path).map_err(|e| bad(chain(&e)))?;
        let mut opts = lc.options().map_err(|e| bad(chain(&e)))?;
        // A pack build reads each entry once: mapping the file gains nothing
        // there, and every page read would count in the process's RSS.
        opts.mmap_bytes = 0;
        let ledger =
            Ledger::open(opts).map_err(ReportError::ledger(format!("opening the ledger of {}", path.display())))?;
        Reporter::with_ledger(cfg, ledger)
    }

    /// A reporter over an already open ledger (its configured clock is used
    /// for the receipts' record times).
    pub fn with_ledger(cfg: ReporterConfig, ledger: Ledger) -> Result<Reporter, ReportError> {
        let store = cfg.anchor.store()?;
        let store_desc = cfg.anchor.describe();
        Ok(Reporter { cfg, ledger, store, store_desc })
    }

    /// The configuration.
    pub fn config(&self) -> &ReporterConfig {
        &self.cfg
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The anchor store.
    pub fn store(&self) -> &AnchorStore {
        &self.store
    }

    /// Start-up check of the anchor store (for `s3`: the bucket exists and
    /// has Object Lock). Every build runs it first, so a store that cannot
    /// keep the WORM contract is refused before anything is built.
    pub async fn check_store(&self) -> Result<(), ReportError> {
        self.store
            .check()
            .await
            .map_err(|source| ReportError::AnchorCheck { store: self.store_desc.clone(), source: Box::new(source) })
    }

    async fn begin(&self) -> Result<BuildLock, ReportError> {
        self.check_store().await?;
        let lock = BuildLock::acquire(&self.cfg.packs_dir, self.cfg.lock_wait).await?;
        pack::remove_stale_temporaries(&self.cfg.packs_dir)?;
        Ok(lock)
    }

    async fn build_pack(
        &self,
        day: NaiveDate,
        now: Timestamp,
        progress: Arc<dyn Progress>,
    ) -> Result<BuiltPack, ReportError> {
        let (ledger, cfg) = (self.ledger.clone(), self.cfg.clone());
        tokio::task::spawn_blocking(move || pack::build_day_with(&ledger, &cfg, day, now, progress.as_ref()))
            .await
            .map_err(|source| ReportError::Task { what: format!("building {day}"), source })?
    }

    /// Builds the pack of `day` (or finds it already built) and anchors it.
    pub async fn build_day(
        &self,
        day: NaiveDate,
        now: Timestamp,
        progress: Arc<dyn Progress>,
    ) -> Result<DayOutcome, ReportError> {
        let _lock = self.begin().await?;
        let pack = self.build_pack(day, now, progress).await?;
        let anchors = anchoring::anchor_pack(&self.ledger, &self.store, &self.store_desc, &pack).await?;
        Ok(DayOutcome::new(&pack, anchors))
    }

    /// Builds every closed day from the ledger's first day that has no pack
    /// yet, in order, and anchors every pack that lacks confirmed anchors.
    /// Returns what was done, one entry per day touched.
    pub async fn build_missing(&self, now: Timestamp) -> Result<Vec<DayOutcome>, ReportError> {
        let mut out = Vec::new();
        let stop = AtomicBool::new(false);
        self.build_missing_with(now, Arc::new(NoProgress), &stop, &mut |d| out.push(d.clone())).await?;
        Ok(out)
    }

    /// As [`Reporter::build_missing`], reporting each day as it is done and
    /// stopping between days once `stop` is set. Returns the number of days
    /// touched. On an error the days before it stay built and anchored.
    ///
    /// Building runs on one blocking thread that carries the rules' and the
    /// key history's state from day to day, so a catch-up over many days
    /// reads each ledger entry once; each pack is anchored (asynchronously)
    /// before the next day is built.
    pub async fn build_missing_with(
        &self,
        now: Timestamp,
        progress: Arc<dyn Progress>,
        stop: &AtomicBool,
        on_day: &mut (dyn FnMut(&DayOutcome) + Send),
    ) -> Result<usize, ReportError> {
        let _lock = self.begin().await?;
        let Some((first, last)) = self.closed_range(now)? else { return Ok(0) };
        let (pack_tx, mut packs) = tokio::sync::mpsc::channel::<Result<BuiltPack, ReportError>>(1);
        let (go_tx, go) = std::sync::mpsc::channel::<bool>();
        let (ledger, cfg) = (self.ledger.clone(), self.cfg.clone());
        let worker = tokio::task::spawn_blocking(move || {
            catch_up(&ledger, &cfg, first, last, now, progress.as_ref(), &pack_tx, &go);
        });
        let mut touched = 0;
        let result = async {
            while let Some(pack) = packs.recv().await {
                let pack = pack?;
                let anchors = anchoring::anchor_pack(&self.ledger, &self.store, &self.store_desc, &pack).await?;
                on_day(&DayOutcome::new(&pack, anchors));
                touched += 1;
                if go_tx.send(!stop.load(Ordering::SeqCst)).is_err() {
                    break;
                }
            }
            Ok(())
        }
        .await;
        // Dropping both channel ends releases a worker waiting on either.
        drop(go_tx);
        drop(packs);
        worker.await.map_err(|source| ReportError::Task { what: "building the missing days".into(), source })?;
        result.map(|()| touched)
    }

    /// The closed days from the ledger's first: `None` if the ledger is
    /// empty or its first day is not closed yet.
    pub fn closed_range(&self, now: Timestamp) -> Result<Option<(NaiveDate, NaiveDate)>, ReportError> {
        let first =
            self.ledger.first_ts().map_err(ReportError::ledger("reading the first entry"))?.and_then(Timestamp::day);
        let last = pack::last_closed_day(now, self.cfg.grace);
        Ok(match (first, last) {
            (Some(f), Some(l)) if f <= l => Some((f, l)),
            _ => None,
        })
    }

    /// Which closed days are built and anchored (from the packs directory
    /// and the anchor cache, each cached receipt confirmed in the ledger;
    /// the store itself is not contacted).
    pub fn status(&self, now: Timestamp) -> Result<Status, ReportError> {
        let first =
            self.ledger.first_ts().map_err(ReportError::ledger("reading the first entry"))?.and_then(Timestamp::day);
        let last = pack::last_closed_day(now, self.cfg.grace);
        let mut st = Status {
            packs_dir: self.cfg.packs_dir.clone(),
            anchor: self.store_desc.clone(),
            first_day: first.map(|d| d.to_string()),
            last_closed_day: last.map(|d| d.to_string()),
            days: Vec::new(),
            missing: Vec::new(),
            unanchored: Vec::new(),
        };
        let Some((mut day, last)) = self.closed_range(now)? else { return Ok(st) };
        while day <= last {
            let mut ds = DayStatus {
                day: day.to_string(),
                built: pack::pack_dir(&self.cfg.packs_dir, day).exists(),
                tar: pack::tar_path(&self.cfg.packs_dir, day).exists(),
                anchored: false,
                manifest_sha256: None,
                start: None,
                end: None,
                rules_failed: Vec::new(),
            };
            if ds.built {
                let pack = pack::load_pack_readonly(&self.cfg.packs_dir, day)?;
                ds.anchored = anchoring::is_anchored(&self.ledger, &pack);
                ds.manifest_sha256 = Some(pack.manifest_sha256.clone());
                ds.start = Some(pack.manifest.start);
                ds.end = Some(pack.manifest.end);
                ds.rules_failed = pack.rules_failed;
                if !ds.anchored {
                    st.unanchored.push(ds.day.clone());
                }
            } else {
                st.missing.push(ds.day.clone());
            }
            st.days.push(ds);
            day = next(day)?;
        }
        Ok(st)
    }
}

/// The blocking half of [`Reporter::build_missing_with`]: walks the days,
/// sends every pack that needs anchoring (built now, or built before without
/// confirmed anchors), and waits for the go-ahead before the next day.
#[allow(clippy::too_many_arguments)]
fn catch_up(
    ledger: &Ledger,
    cfg: &ReporterConfig,
    first: NaiveDate,
    last: NaiveDate,
    now: Timestamp,
    progress: &dyn Progress,
    packs: &tokio::sync::mpsc::Sender<Result<BuiltPack, ReportError>>,
    go: &std::sync::mpsc::Receiver<bool>,
) {
    let mut history = pack::History::new(&cfg.rules.set);
    let mut day = first;
    while day <= last {
        let step = if pack::pack_dir(&cfg.packs_dir, day).exists() {
            pack::load_pack(&cfg.packs_dir, day).map(|p| (!anchoring::is_anchored(ledger, &p)).then_some(p))
        } else {
            pack::build_day_from(ledger, cfg, day, now, &mut history, progress).map(Some)
        };
        match step {
            Ok(None) => {}
            Ok(Some(p)) => {
                if packs.blocking_send(Ok(p)).is_err() || go.recv() != Ok(true) {
                    return;
                }
            }
            Err(e) => {
                let _ = packs.blocking_send(Err(e));
                return;
            }
        }
        match day.succ_opt() {
            Some(d) => day = d,
            None => return,
        }
    }
}

fn next(day: NaiveDate) -> Result<NaiveDate, ReportError> {
    day.succ_opt().ok_or_else(|| ReportError::Config { path: None, why: format!("day {day} has no successor") })
}

/// An error and its sources, `: `-separated.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
