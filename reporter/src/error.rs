//! The reporter's errors: one variant per stage, each naming the day, the
//! file, the seq or the store concerned. Rule failures are never errors:
//! they are evidence recorded in the report.

use std::path::PathBuf;

use chrono::NaiveDate;
use evident_ledger::{AppendError, LedgerError};
use thiserror::Error;

use crate::anchor::AnchorError;

/// Why building, anchoring or scheduling failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The configuration is unusable (caller misuse, found before any work).
    #[error("reporter configuration{}: {why}", source_suffix(path))]
    Config {
        /// The configuration file, when there is one.
        path: Option<PathBuf>,
        /// What is wrong.
        why: String,
    },

    /// The day has not ended yet (plus the grace period).
    #[error(
        "day {day} is not closed yet: it can be packed from {closes_at} (end of the UTC day plus {grace_seconds} s grace)"
    )]
    NotClosed {
        /// The day asked for.
        day: NaiveDate,
        /// First instant the day may be packed.
        closes_at: String,
        /// The configured grace period.
        grace_seconds: u64,
    },

    /// The ledger has no entries at all, so there is no first day.
    #[error("the ledger has no entries yet; there is no day to pack")]
    EmptyLedger,

    /// The day is before the ledger's first entry.
    #[error("day {day} is before the ledger's first day {first_day}; packs start at the first day")]
    BeforeFirstDay {
        /// The day asked for.
        day: NaiveDate,
        /// The day of the ledger's first entry.
        first_day: NaiveDate,
    },

    /// The previous day's pack is missing, so this day cannot link to it.
    #[error(
        "cannot pack {day}: the previous day's pack {} is missing; run `evident-reporter build --missing` \
         to build every missing day in order",
        missing.display()
    )]
    Gap {
        /// The day asked for.
        day: NaiveDate,
        /// The pack directory that should exist.
        missing: PathBuf,
    },

    /// An existing pack (the previous day's, or the one being reused) is
    /// unreadable or inconsistent with the ledger.
    #[error("pack {}: {why}", path.display())]
    BadPack {
        /// The pack directory or file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },

    /// File-system I/O failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// Reading from or sealing the ledger failed.
    #[error("ledger: {what}")]
    Ledger {
        /// What was being done.
        what: String,
        /// The ledger's error.
        #[source]
        source: Box<LedgerError>,
    },

    /// An entry of the ledger cannot be used (corrupt or not parseable).
    #[error("ledger entry seq {seq}: {why}")]
    Entry {
        /// The entry.
        seq: u64,
        /// What is wrong.
        why: String,
    },

    /// The day's leaves, as read from the database, do not hash to the
    /// checkpoint the pack would carry: the database was changed outside
    /// the ledger. No pack is written.
    #[error(
        "the leaves of {day} (seqs [{start}, {end})) do not hash to the ledger's checkpoint at size {end}: they give root {leaves_root}, the checkpoint says {checkpoint_root}; the database was changed outside the ledger (run `evident verify-db` to find the first bad entry)"
    )]
    Integrity {
        /// The day.
        day: NaiveDate,
        /// First seq of the day.
        start: u64,
        /// One past the last seq of the day.
        end: u64,
        /// Root recomputed from the leaves (base64).
        leaves_root: String,
        /// Root in the ledger's signed checkpoint (base64).
        checkpoint_root: String,
    },

    /// Encoding a pack file (manifest, report) failed.
    #[error("encoding {file} of {day}: {why}")]
    Encode {
        /// The day.
        day: NaiveDate,
        /// The pack file.
        file: &'static str,
        /// What failed.
        why: String,
    },

    /// Making the OpenPGP signature failed.
    #[error("signing manifest.json of {day} with OpenPGP")]
    Pgp {
        /// The day.
        day: NaiveDate,
        /// The cause.
        #[source]
        source: evident_ledger::pgp::PgpError,
    },

    /// The anchor store failed its start-up check; nothing was built or anchored.
    #[error("anchor store {store} is not usable")]
    AnchorCheck {
        /// The store, as configured.
        store: String,
        /// The cause.
        #[source]
        source: Box<AnchorError>,
    },

    /// Anchoring an artifact failed (after the store's own retries); no
    /// receipt was recorded for it.
    #[error("anchoring the {artifact} of {day} in {store} failed")]
    Anchor {
        /// The day.
        day: NaiveDate,
        /// `pack` or `checkpoint`.
        artifact: &'static str,
        /// The store, as configured.
        store: String,
        /// The cause.
        #[source]
        source: Box<AnchorError>,
    },

    /// Appending the `anchor_receipt` record failed.
    #[error("recording the anchor receipt of the {artifact} of {day} in the ledger")]
    Receipt {
        /// The day.
        day: NaiveDate,
        /// `pack` or `checkpoint`.
        artifact: &'static str,
        /// The cause.
        #[source]
        source: Box<AppendError>,
    },

    /// The ledger already holds an `anchor_receipt` for this artifact that
    /// names different bytes: the pack changed after it was anchored.
    #[error(
        "the ledger's anchor_receipt at seq {seq} for the {artifact} of {day} disagrees with the pack on disk: {why}"
    )]
    ReceiptMismatch {
        /// The day.
        day: NaiveDate,
        /// `pack` or `checkpoint`.
        artifact: &'static str,
        /// Seq of the recorded receipt.
        seq: u64,
        /// What differs.
        why: String,
    },

    /// Another reporter holds the build lock.
    #[error("another reporter is building (lock {} is held); waited {waited_seconds} s", lock.display())]
    Busy {
        /// The lock file.
        lock: PathBuf,
        /// How long this process waited.
        waited_seconds: u64,
    },

    /// The scheduler failed.
    #[error("scheduler: {0}")]
    Scheduler(String),

    /// A blocking task panicked or was cancelled.
    #[error("background task of {what} did not complete")]
    Task {
        /// What the task was doing.
        what: String,
        /// Why it ended.
        #[source]
        source: tokio::task::JoinError,
    },
}

fn source_suffix(path: &Option<PathBuf>) -> String {
    path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default()
}

impl ReportError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ReportError {
        let path = path.into();
        move |source| ReportError::Io { what, path, source }
    }

    pub(crate) fn ledger(what: impl Into<String>) -> impl FnOnce(LedgerError) -> ReportError {
        let what = what.into();
        move |source| ReportError::Ledger { what, source: Box::new(source) }
    }
}
