//! Group fsync of the WAL, outside SQLite's write lock.
//!
//! With `PRAGMA synchronous = FULL`, SQLite fsyncs the WAL inside every
//! COMMIT, while the committing connection holds the database's write lock:
//! commits and their fsyncs run strictly one after another, and an append
//! waits for up to two whole commit cycles. For appends the ledger instead
//! commits at `synchronous = NORMAL`, which writes the transaction's WAL
//! frames without syncing them, releases the write lock, and then makes the
//! WAL durable itself: one `fdatasync` covers every commit whose frames
//! were written before it started, while the next group commits.
//!
//! No receipt is returned before an fsync that started after its commit's
//! frames were written has completed. That is exactly what FULL adds to
//! NORMAL in WAL mode ("an additional sync operation of the WAL file after
//! each transaction commit", sqlite.org/pragma.html#pragma_synchronous);
//! NORMAL already syncs the WAL before each checkpoint, the database after
//! it, and the WAL header when the WAL is reused, so a commit copied into
//! the database before our fsync runs is durable there.
//!
//! Readers can see a commit before its fsync. A tree head this handle
//! reads waits for its own commits' fsync first (`Ledger::head`), and a
//! signed checkpoint is stored through a connection at FULL before it is
//! returned: that commit's fsync covers every WAL frame written before it,
//! whichever process wrote them, so no checkpoint ever covers a commit that
//! a power loss could undo.
//!
//! A failed fsync leaves the durability of everything since the last good
//! one unknown (the kernel may have dropped the dirty pages), so the handle
//! then refuses to acknowledge anything more.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::error::StoreError;

/// The WAL of one ledger file, and which of this handle's commits are durable.
#[derive(Debug)]
pub(crate) struct WalSync {
    path: PathBuf,
    wal: File,
    /// Commits whose WAL frames are written, numbered from 1.
    written: AtomicU64,
    state: Mutex<State>,
    /// Wakes waiters when an fsync ends.
    synced: Condvar,
    /// Unit tests: the next fsync fails as a real one can (EIO).
    #[cfg(test)]
    pub(crate) fail_next: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// Every commit numbered up to this one is durable.
    durable: u64,
    /// An fsync is in flight.
    running: bool,
    /// The first fsync that failed: nothing is acknowledged after it.
    failed: Option<SyncFailed>,
}

/// A failed fsync of the WAL, kept so that every later caller gets it.
#[derive(Clone, Debug)]
pub(crate) struct SyncFailed {
    path: PathBuf,
    kind: std::io::ErrorKind,
    message: String,
}

impl From<SyncFailed> for StoreError {
    fn from(f: SyncFailed) -> StoreError {
        StoreError::Sync { path: f.path, source: std::io::Error::new(f.kind, f.message) }
    }
}

impl WalSync {
    /// Opens the WAL of `db` (SQLite creates it with the first connection in
    /// WAL mode and deletes it only when the last connection closes, so it
    /// is the same file for as long as this handle has connections open).
    pub(crate) fn open(db: &Path) -> Result<WalSync, StoreError> {
        let mut path = db.as_os_str().to_owned();
        path.push("-wal");
        let path = PathBuf::from(path);
        let wal = File::open(&path).map_err(|source| StoreError::Wal { path: path.clone(), source })?;
        Ok(WalSync {
            path,
            wal,
            written: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            synced: Condvar::new(),
            #[cfg(test)]
            fail_next: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Records that a commit's frames are written; returns its number, to
    /// wait on with [`WalSync::wait`].
    pub(crate) fn written(&self) -> u64 {
        self.written.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The earlier fsync failure, if any: the handle commits nothing more.
    pub(crate) fn check(&self) -> Result<(), SyncFailed> {
        self.lock().failed.clone().map_or(Ok(()), Err)
    }

    /// Returns once every commit written so far is durable.
    pub(crate) fn settle(&self) -> Result<(), SyncFailed> {
        self.wait(self.written.load(Ordering::SeqCst))
    }

    /// Returns once commit `n` is durable: at once if an fsync already
    /// covered it, after the one in flight if that covers it, else after an
    /// fsync this caller runs for every commit written so far.
    pub(crate) fn wait(&self, n: u64) -> Result<(), SyncFailed> {
        let mut s = self.lock();
        loop {
            if let Some(f) = &s.failed {
                return Err(f.clone());
            }
            if s.durable >= n {
                return Ok(());
            }
            if s.running {
                s = self.synced.wait(s).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            s.running = true;
            // Every commit numbered up to `upto` wrote its frames before
            // this load, so before the fsync below starts.
            let upto = self.written.load(Ordering::SeqCst);
            drop(s);
            let r = self.sync_data();
            s = self.lock();
            s.running = false;
            match r {
                Ok(()) => s.durable = s.durable.max(upto),
                Err(e) => {
                    s.failed = Some(SyncFailed { path: self.path.clone(), kind: e.kind(), message: e.to_string() })
                }
            }
            self.synced.notify_all();
        }
    }

    fn sync_data(&self) -> std::io::Result<()> {
        #[cfg(test)]
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(5));
        }
        self.wal.sync_data()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
