//! The scheduler: catch up at start, then on every tick of a 6-field UTC
//! cron schedule (tokio-cron-scheduler), until told to stop.
//!
//! A tick while a catch-up runs is coalesced into one more catch-up. A
//! catch-up that fails (the store is unreachable, another reporter holds the
//! lock) is reported and retried on the next tick. Stopping takes effect
//! between days: a day being built and anchored is finished first.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use evident_verify::ts::Timestamp;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::error::ReportError;
use crate::pack::Progress;
use crate::run::{DayOutcome, Reporter};

/// What the daemon reports as it runs.
#[derive(Debug)]
#[non_exhaustive]
pub enum DaemonEvent<'a> {
    /// Scheduled; the first catch-up begins.
    Started {
        /// The cron schedule.
        schedule: &'a str,
    },
    /// A day was built and/or anchored.
    Day(&'a DayOutcome),
    /// A catch-up failed; the next tick retries.
    Failed(&'a ReportError),
    /// A stop was requested; the daemon finishes the current day and exits.
    Stopping,
}

fn sched_err(e: impl std::fmt::Display) -> ReportError {
    ReportError::Scheduler(e.to_string())
}

/// Runs until `shutdown` completes. Checks the anchor store first and
/// returns its error if the store is unusable; afterwards failures are
/// reported through `on_event` and retried on the next tick.
pub async fn run(
    reporter: &Reporter,
    shutdown: impl Future<Output = ()>,
    progress: Arc<dyn Progress>,
    on_event: &mut (dyn FnMut(DaemonEvent<'_>) + Send),
) -> Result<(), ReportError> {
    reporter.check_store().await?;
    let schedule = reporter.config().schedule.clone();
    let (tx, mut ticks) = tokio::sync::mpsc::channel::<()>(1);
    let mut sched = JobScheduler::new().await.map_err(sched_err)?;
    let job = Job::new_async(schedule.as_str(), move |_id, _sched| {
        let tx = tx.clone();
        Box::pin(async move {
            // A full channel means a catch-up is already due.
            let _ = tx.try_send(());
        })
    })
    .map_err(|e| sched_err(format!("schedule {schedule:?}: {e}")))?;
    sched.add(job).await.map_err(sched_err)?;
    sched.start().await.map_err(sched_err)?;
    on_event(DaemonEvent::Started { schedule: &schedule });

    let stop = AtomicBool::new(false);
    tokio::pin!(shutdown);
    // Catch up now, then after every tick.
    loop {
        let now = Timestamp::from_datetime(chrono::Utc::now());
        let result = {
            let mut on_day = |d: &DayOutcome| on_event(DaemonEvent::Day(d));
            let work = reporter.build_missing_with(now, progress.clone(), &stop, &mut on_day);
            tokio::pin!(work);
            loop {
                tokio::select! {
                    biased;
                    r = &mut work => break r,
                    () = &mut shutdown, if !stop.load(Ordering::SeqCst) => stop.store(true, Ordering::SeqCst),
                }
            }
        };
        if let Err(e) = &result {
            on_event(DaemonEvent::Failed(e));
        }
        if stop.load(Ordering::SeqCst) {
            on_event(DaemonEvent::Stopping);
            break;
        }
        tokio::select! {
            biased;
            () = &mut shutdown => {
                on_event(DaemonEvent::Stopping);
                break;
            }
            t = ticks.recv() => if t.is_none() {
                break;
            },
        }
    }
    // The scheduler holds no work of ours; do not let its shutdown delay exit.
    let _ = tokio::time::timeout(Duration::from_secs(2), sched.shutdown()).await;
    Ok(())
}
