//! Ledger errors. Bad evidence and bad input name the field, record or seq
//! at fault; store failures keep their SQLite cause.

use std::path::{Path, PathBuf};

use evident_verify::keys::KeyHistoryError;
use evident_verify::leaf::LeafError;
use evident_verify::merkle::NodeId;
use evident_verify::schema::SchemaError;
use thiserror::Error;

/// Errors from the SQLite store.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file cannot be opened or configured.
    #[error("opening ledger database {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer Evident.
    #[error(
        "ledger database has schema version {found}, newer than this binary supports ({supported}); upgrade Evident"
    )]
    TooNew {
        /// Version found.
        found: i64,
        /// Newest this binary knows.
        supported: i64,
    },
    /// A SQLite failure.
    #[error("SQLite")]
    Sqlite(#[from] rusqlite::Error),
    /// A tree node that should be derivable is missing.
    #[error("tree node {0:?} is missing from the store")]
    MissingNode(NodeId),
    /// Stored data that violates an invariant.
    #[error("ledger database is inconsistent: {0}")]
    Corrupt(String),
    /// The WAL cannot be opened for the ledger's own fsyncs.
    #[error("opening the WAL {path} for fsync")]
    Wal {
        /// The WAL file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// An fsync of the WAL failed. Commits since the
    /// last good fsync may not survive a power loss, so the handle
    /// acknowledges nothing more; records it refused this way may still be
    /// in the ledger, and a retry on a new handle returns their receipts.
    #[error("making {path} durable failed; this ledger handle acknowledges no more appends (open a new one)")]
    Sync {
        /// The WAL file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    pub(crate) fn open(path: &Path, source: rusqlite::Error) -> StoreError {
        StoreError::Open { path: path.to_path_buf(), source }
    }
}

/// Why a record was refused. Nothing is stored when any of these is returned.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AppendError {
    /// Input that is not a JSON submission.
    #[error("malformed record: {0}")]
    Malformed(String),
    /// Input that is not UTF-8.
    #[error("record is not valid UTF-8 (byte {0})")]
    NotUtf8(usize),
    /// Over the configured record size limit.
    #[error("record is {size} bytes, over the {limit}-byte limit (max_record_bytes)")]
    TooLarge {
        /// Size of the record's canonical form.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// An envelope field is invalid.
    #[error("invalid record")]
    Record(#[source] LeafError),
    /// The body fails its kind's schema, or the kind is unknown.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The same `(producer, id)` was appended before with different content.
    #[error("record id {id:?} of producer {producer:?} was already appended at seq {seq} with different content")]
    Conflict {
        /// Producer.
        producer: String,
        /// Record id.
        id: String,
        /// Seq of the first record.
        seq: u64,
    },
    /// An unsigned record from a producer that must sign.
    #[error("producer {0:?} must sign its records (it is not in unsigned_producers)")]
    Unsigned(String),
    /// The signing key is unknown, revoked or outside its window.
    #[error(transparent)]
    Key(#[from] KeyHistoryError),
    /// The producer signature does not verify.
    #[error("producer signature refused")]
    Signature(#[source] LeafError),
    /// Personal data where it is not allowed, or a bad commitment.
    #[error("{0}")]
    Privacy(String),
    /// The store failed. The record was not stored, except after a failed
    /// fsync ([`StoreError::Sync`]), when it may be: a retry on a new
    /// handle then returns its receipt.
    #[error("storing the record")]
    Store(#[from] StoreError),
}

/// Errors from reading, proving and checking.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request is impossible (caller misuse).
    #[error("{0}")]
    Request(String),
    /// The database was created for another origin or ledger key.
    #[error("ledger database belongs to {what} {found:?}, but the configuration says {expected:?}")]
    Identity {
        /// "origin" or "ledger key".
        what: &'static str,
        /// Value in the database.
        found: String,
        /// Value in the configuration.
        expected: String,
    },
    /// A key or checkpoint failed to sign or parse.
    #[error("{0}")]
    Format(String),
}
