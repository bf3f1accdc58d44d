//! # evident-reporter
//!
//! Builds each UTC day's signed compliance pack, anchors it to WORM storage
//! and runs on a schedule.
//!
//! - [`config`]: the TOML configuration, validated into [`ReporterConfig`].
//! - [`pack`]: one day's pack, streamed from the ledger
//!   ([`pack::build_day`]), its directory and deterministic tar.
//! - [`anchor`]: the WORM stores (`fs`, `s3` with Object Lock).
//! - [`anchoring`]: putting a pack's tar and checkpoint in the store and
//!   recording `anchor_receipt` entries in the ledger.
//! - [`run`]: the [`Reporter`] jobs (`build --day`, `build --missing`,
//!   `status`) under the build lock.
//! - [`daemon`]: the cron-scheduled catch-up loop.
//! - [`html`]: renders `report.html`.
//!
//! ```no_run
//! # async fn nightly() -> Result<(), evident_reporter::ReportError> {
//! use evident_reporter::{Reporter, ReporterConfig};
//! let cfg = ReporterConfig::load(Some("/etc/evident/reporter.toml".as_ref()))?;
//! let reporter = Reporter::open(cfg)?;
//! let now = evident_verify::ts::Timestamp::from_datetime(chrono::Utc::now());
//! for day in reporter.build_missing(now).await? {
//!     eprintln!("{} packed, rules failed: {:?}", day.day, day.rules_failed);
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod anchor;
pub mod anchoring;
pub mod config;
pub mod daemon;
pub mod error;
pub mod html;
pub mod pack;
pub mod run;

pub use config::{AnchorConfig, ReporterConfig, Rules};
pub use error::ReportError;
pub use pack::{BuiltPack, build_day};
pub use run::{DayOutcome, Reporter, Status};
