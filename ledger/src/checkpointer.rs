//! WAL checkpoints on a thread of their own.
//!
//! SQLite checkpoints the WAL (copies its pages into the database file)
//! from inside the COMMIT that takes it past `wal_autocheckpoint` pages.
//! For appends that COMMIT runs under the ledger's write lock, so the copy
//! (14% of the writer thread's time in batched appends, and a 16 MiB copy
//! that one unlucky caller of a small append waits for) held up every
//! commit behind it. The writer connection instead records how many pages
//! its WAL holds after each commit ([`pages_after_commit`]) and, past
//! [`REQUEST_PAGES`], asks this thread to checkpoint (PASSIVE: alongside
//! the writer, on a connection of its own, at `synchronous = normal`,
//! which syncs the WAL before copying and the database after).
//!
//! SQLite restarts the WAL from its start only when a write transaction
//! begins with every frame copied, which a writer committing back to back
//! rarely allows while the thread copies. So that the WAL stays bounded
//! under sustained appends, a commit that leaves it at [`INLINE_PAGES`] or
//! more also checkpoints in the writer itself, as SQLite's automatic
//! checkpoint did (PASSIVE: it never waits for the thread, for readers or
//! for other writers): it copies what the thread has not, and the next
//! commit starts the WAL over. A reader holding an old snapshot keeps the
//! WAL long, as before.

use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;

use crate::error::StoreError;
use crate::store::{self, Synchronous};

/// WAL pages (16 KiB each) after a commit that start a background
/// checkpoint, and pages the WAL grows by before the next one: SQLite's
/// default `wal_autocheckpoint`. (Requesting after every commit past it
/// made the thread copy pages that commits keep changing, such as the
/// idempotency index's, over and over: 28% more bytes written per record
/// appended to a 10M-entry ledger.)
pub const REQUEST_PAGES: i32 = 1000;
/// WAL pages after a commit at which the writer checkpoints itself too
/// (64 MiB).
pub const INLINE_PAGES: i32 = 4096;

thread_local! {
    /// Pages in the WAL after this thread's last commit on a connection
    /// with [`install`]ed hook (SQLite calls it on the committing thread).
    static WAL_PAGES: Cell<i32> = const { Cell::new(0) };
}

/// Replaces SQLite's automatic checkpoint on `conn` with a hook that
/// records the WAL's size after each commit.
pub fn install(conn: &Connection) {
    conn.wal_hook(Some(|_, pages| {
        WAL_PAGES.with(|p| p.set(pages));
        Ok(())
    }));
}

/// The WAL's pages after the calling thread's last commit on a connection
/// with the hook installed (0 if none since the last call).
pub fn pages_after_commit() -> i32 {
    WAL_PAGES.with(Cell::take)
}

#[derive(Debug, Default)]
struct State {
    requested: bool,
    stop: bool,
}

/// The checkpoint thread of one ledger handle; stopped when dropped.
#[derive(Debug)]
pub struct Checkpointer {
    shared: Arc<(Mutex<State>, Condvar)>,
    /// WAL pages at the last request (0 once the WAL has restarted).
    requested_at: AtomicI32,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens the thread's connection to `db` and starts it.
    pub fn start(db: &Path) -> Result<Checkpointer, StoreError> {
        let conn = store::open_connection(db, Synchronous::Normal)?;
        let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("evident-checkpoint".into())
            .spawn(move || run(&conn, &theirs))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer { shared, requested_at: AtomicI32::new(0), thread: Some(thread) })
    }

    /// After a commit that left the WAL at `pages`: wakes the thread once
    /// the WAL has grown by [`REQUEST_PAGES`] since the last time, and from
    /// [`INLINE_PAGES`] on also checkpoints through `writer` (which holds
    /// no transaction), so that the WAL starts over. Called under the write
    /// lock.
    pub fn after_commit(&self, writer: &Connection, pages: i32) {
        let mut last = self.requested_at.load(Ordering::Relaxed);
        if pages < last {
            // The WAL restarted.
            last = 0;
            self.requested_at.store(0, Ordering::Relaxed);
        }
        if pages >= INLINE_PAGES {
            // Busy (the thread is copying) or failed, the WAL only stays
            // long: the next commit tries again.
            let _ = writer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        } else if pages >= last + REQUEST_PAGES {
            self.requested_at.store(pages, Ordering::Relaxed);
            let (state, wake) = &*self.shared;
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            if !s.requested {
                s.requested = true;
                wake.notify_one();
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (state, wake) = &*self.shared;
        state.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(conn: &Connection, shared: &(Mutex<State>, Condvar)) {
    let (state, wake) = shared;
    loop {
        {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            while !s.requested && !s.stop {
                s = wake.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            if s.stop {
                return;
            }
            s.requested = false;
        }
        // PASSIVE never waits for the writer; what it cannot copy now the
        // next request copies.
        let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
    }
}
