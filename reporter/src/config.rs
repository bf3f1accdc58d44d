//! The reporter's configuration file (TOML, `schemas/reporter.config.schema.json`)
//! and its validation into [`ReporterConfig`] before any work starts.
//!
//! ```toml
//! ledger = "/var/lib/evident/evident.toml"   # the ledger's own configuration
//! packs_dir = "/var/lib/evident/packs"
//! rules = "rules.json"            # omitted: the shipped default rules
//! grace_seconds = 300             # a day is packed from 00:00 UTC + grace
//! schedule = "0 5 0 * * *"        # 6 fields, seconds first, UTC
//! lock_wait_seconds = 60          # how long `build` waits for another reporter
//!
//! [anchor]                        # omitted: kind = "fs", dir = "<packs_dir>/../worm"
//! kind = "s3"
//! endpoint = "https://s3.eu-west-1.amazonaws.com"   # optional
//! region = "eu-west-1"
//! bucket = "acme-evident-worm"    # created with Object Lock enabled
//! prefix = "evident/"
//! retention_days = 2557
//! path_style = false
//! # access_key_id / secret_access_key: optional; prefer the environment
//! ```
//!
//! Relative paths are resolved against the configuration file's directory.
//! The environment overrides the file: `EVIDENT_REPORTER_LEDGER`,
//! `EVIDENT_REPORTER_PACKS_DIR`, and for an `s3` anchor `EVIDENT_S3_ENDPOINT`,
//! `EVIDENT_S3_BUCKET` and `AWS_ACCESS_KEY_ID` with `AWS_SECRET_ACCESS_KEY`
//! (which replace any keys in the file). Setting an `EVIDENT_S3_*` variable
//! with an `fs` anchor is an error rather than silently ignored, so nobody
//! believes packs go to S3 when they do not.

use std::path::{Path, PathBuf};
use std::time::Duration;

use evident_verify::rules::RuleSet;
use serde::Deserialize;

use crate::anchor::{AnchorStore, FsAnchor, S3Anchor, S3Config};
use crate::error::ReportError;

/// The shipped default rules (`reporter/rules/default.rules.json`).
pub const DEFAULT_RULES: &[u8] = include_bytes!("../rules/default.rules.json");
/// Default grace after the end of a UTC day before it is packed.
pub const DEFAULT_GRACE_SECONDS: u64 = 300;
/// Default schedule: 00:05:00 UTC every day.
pub const DEFAULT_SCHEDULE: &str = "0 5 0 * * *";
/// Default wait for the build lock.
pub const DEFAULT_LOCK_WAIT_SECONDS: u64 = 60;
/// Default S3 Object Lock retention: seven years.
pub const DEFAULT_RETENTION_DAYS: u32 = 2557;
/// Default S3 region.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Environment variable overriding `ledger`.
pub const ENV_LEDGER: &str = "EVIDENT_REPORTER_LEDGER";
/// Environment variable overriding `packs_dir`.
pub const ENV_PACKS_DIR: &str = "EVIDENT_REPORTER_PACKS_DIR";
/// Environment variable overriding `anchor.endpoint` (s3 only).
pub const ENV_S3_ENDPOINT: &str = "EVIDENT_S3_ENDPOINT";
/// Environment variable overriding `anchor.bucket` (s3 only).
pub const ENV_S3_BUCKET: &str = "EVIDENT_S3_BUCKET";

/// The rules evaluated for every pack: the exact file bytes (shipped as
/// `rules.json`) and their parsed form.
#[derive(Clone, Debug)]
pub struct Rules {
    /// Where they came from; `None` for the shipped defaults.
    pub path: Option<PathBuf>,
    /// The exact bytes, copied verbatim into each pack.
    pub bytes: Vec<u8>,
    /// The parsed rules.
    pub set: RuleSet,
}

impl Rules {
    /// The shipped default rules.
    pub fn default_rules() -> Result<Rules, ReportError> {
        Rules::from_bytes(None, DEFAULT_RULES.to_vec())
    }

    /// Rules from bytes, parsed strictly.
    pub fn from_bytes(path: Option<PathBuf>, bytes: Vec<u8>) -> Result<Rules, ReportError> {
        let set = RuleSet::parse(&bytes).map_err(|e| ReportError::Config {
            path: path.clone(),
            why: format!("rules file {}: {e}", path.as_deref().map_or("(default)".into(), |p| p.display().to_string())),
        })?;
        Ok(Rules { path, bytes, set })
    }

    /// Rules read from a file.
    pub fn load(path: &Path) -> Result<Rules, ReportError> {
        let bytes = std::fs::read(path).map_err(|e| ReportError::Config {
            path: Some(path.to_path_buf()),
            why: format!("cannot read the rules file {}: {e}", path.display()),
        })?;
        Rules::from_bytes(Some(path.to_path_buf()), bytes)
    }
}

/// Where packs are anchored.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnchorConfig {
    /// Write-once files under a local directory.
    Fs {
        /// The directory.
        dir: PathBuf,
    },
    /// An S3 bucket with Object Lock (COMPLIANCE).
    S3(S3Config),
}

impl AnchorConfig {
    /// The store, ready for its start-up check.
    pub fn store(&self) -> Result<AnchorStore, ReportError> {
        match self {
            AnchorConfig::Fs { dir } => Ok(AnchorStore::from(FsAnchor::new(dir.clone()))),
            AnchorConfig::S3(c) => S3Anchor::new(c.clone())
                .map(AnchorStore::from)
                .map_err(|e| ReportError::Config { path: None, why: format!("anchor: {e}") }),
        }
    }

    /// A short description for messages: `fs:<dir>` or `s3://<bucket>/<prefix>`.
    pub fn describe(&self) -> String {
        match self {
            AnchorConfig::Fs { dir } => format!("fs:{}", dir.display()),
            AnchorConfig::S3(c) => {
                let at = c.endpoint.as_deref().map(|e| format!(" at {e}")).unwrap_or_default();
                format!("s3://{}/{}{at}", c.bucket, c.prefix)
            }
        }
    }
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct ReporterConfig {
    /// The configuration file it was loaded from, if any.
    pub source: Option<PathBuf>,
    /// The ledger's configuration file (`evident.toml`).
    pub ledger: PathBuf,
    /// Where packs are built: `<packs_dir>/<day>/` and `<packs_dir>/<day>.tar`.
    pub packs_dir: PathBuf,
    /// The rules evaluated.
    pub rules: Rules,
    /// Grace after the end of a UTC day before it may be packed.
    pub grace: Duration,
    /// The daemon's schedule: 6-field cron, seconds first, UTC.
    pub schedule: String,
    /// How long a build waits for another reporter's lock.
    pub lock_wait: Duration,
    /// Where packs are anchored.
    pub anchor: AnchorConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    ledger: Option<PathBuf>,
    packs_dir: Option<PathBuf>,
    rules: Option<PathBuf>,
    grace_seconds: Option<u64>,
    schedule: Option<String>,
    lock_wait_seconds: Option<u64>,
    anchor: Option<RawAnchor>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum RawAnchor {
    Fs {
        dir: Option<PathBuf>,
    },
    S3 {
        endpoint: Option<String>,
        region: Option<String>,
        bucket: Option<String>,
        prefix: Option<String>,
        retention_days: Option<u32>,
        path_style: Option<bool>,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
    },
}

/// The fs anchor directory used when none is configured: `<packs_dir>/../worm`.
pub fn default_worm_dir(packs_dir: &Path) -> PathBuf {
    packs_dir.parent().map_or_else(|| PathBuf::from("worm"), |p| p.join("worm"))
}

/// Checks a 6-field cron expression the way the scheduler will parse it.
pub fn check_schedule(schedule: &str) -> Result<(), String> {
    if schedule.split_whitespace().count() != 6 {
        return Err(format!(
            "schedule {schedule:?} must have 6 fields, seconds first (sec min hour day-of-month month day-of-week), in UTC"
        ));
    }
    tokio_cron_scheduler::Job::new_async(schedule, |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|e| format!("schedule {schedule:?} is not a valid cron expression: {e}"))
}

impl ReporterConfig {
    /// Defaults around a ledger configuration file and a packs directory:
    /// default rules, 5 minutes of grace, the nightly schedule, and an `fs`
    /// anchor at `<packs_dir>/../worm`.
    pub fn new(ledger: impl Into<PathBuf>, packs_dir: impl Into<PathBuf>) -> Result<ReporterConfig, ReportError> {
        let packs_dir = packs_dir.into();
        Ok(ReporterConfig {
            source: None,
            ledger: ledger.into(),
            anchor: AnchorConfig::Fs { dir: default_worm_dir(&packs_dir) },
            packs_dir,
            rules: Rules::default_rules()?,
            grace: Duration::from_secs(DEFAULT_GRACE_SECONDS),
            schedule: DEFAULT_SCHEDULE.to_string(),
            lock_wait: Duration::from_secs(DEFAULT_LOCK_WAIT_SECONDS),
        })
    }

    /// Loads and validates a configuration file with the process
    /// environment's overrides; without a file, the environment alone.
    pub fn load(path: Option<&Path>) -> Result<ReporterConfig, ReportError> {
        let env = |k: &str| std::env::var(k).ok();
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ReportError::Config {
                    path: Some(p.to_path_buf()),
                    why: format!("cannot read it: {e}"),
                })?;
                let base = p.parent().map(Path::to_path_buf).unwrap_or_default();
                ReporterConfig::parse(&text, Some(p), &base, &env)
            }
            None => ReporterConfig::parse("", None, Path::new("."), &env),
        }
    }

    /// Parses and validates TOML text. Relative paths are resolved against
    /// `base`; `env` supplies the environment overrides (an empty value
    /// counts as unset).
    pub fn parse(
        text: &str,
        source: Option<&Path>,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ReporterConfig, ReportError> {
        let bad = |why: String| ReportError::Config { path: source.map(Path::to_path_buf), why };
        let env = |k: &str| env(k).filter(|v| !v.is_empty());
        let raw: RawConfig = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };

        let ledger = env(ENV_LEDGER).map(PathBuf::from).or(raw.ledger).map(resolve).ok_or_else(|| {
            bad(format!("`ledger` (the ledger's evident.toml) is required: set it in the file or in {ENV_LEDGER}"))
        })?;
        let packs_dir = env(ENV_PACKS_DIR)
            .map(PathBuf::from)
            .or(raw.packs_dir)
            .map(resolve)
            .ok_or_else(|| bad(format!("`packs_dir` is required: set it in the file or in {ENV_PACKS_DIR}")))?;
        let rules = match raw.rules {
            // The rules file names itself in `why`; the error names the
            // configuration file that pointed at it.
            Some(p) => Rules::load(&resolve(p)).map_err(|e| match e {
                ReportError::Config { why, .. } => bad(why),
                other => other,
            })?,
            None => Rules::default_rules()?,
        };
        let schedule = raw.schedule.unwrap_or_else(|| DEFAULT_SCHEDULE.to_string());
        check_schedule(&schedule).map_err(bad)?;
        let grace_seconds = raw.grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
        if grace_seconds > 86_400 * 7 {
            return Err(bad(format!("grace_seconds {grace_seconds} is more than a week")));
        }

        let s3_env_set = [ENV_S3_ENDPOINT, ENV_S3_BUCKET].into_iter().find(|k| env(k).is_some());
        let anchor = match raw.anchor.unwrap_or(RawAnchor::Fs { dir: None }) {
            RawAnchor::Fs { dir } => {
                if let Some(k) = s3_env_set {
                    return Err(bad(format!(
                        "{k} is set but the anchor is kind = \"fs\"; configure [anchor] kind = \"s3\" or unset {k}"
                    )));
                }
                AnchorConfig::Fs { dir: dir.map(resolve).unwrap_or_else(|| default_worm_dir(&packs_dir)) }
            }
            RawAnchor::S3 {
                endpoint,
                region,
                bucket,
                prefix,
                retention_days,
                path_style,
                access_key_id,
                secret_access_key,
            } => {
                let bucket = env(ENV_S3_BUCKET).or(bucket).ok_or_else(|| {
                    bad(format!("anchor.bucket is required for kind = \"s3\" (or set {ENV_S3_BUCKET})"))
                })?;
                let (mut access_key_id, mut secret_access_key) = (access_key_id, secret_access_key);
                if access_key_id.is_some() != secret_access_key.is_some() {
                    return Err(bad("anchor.access_key_id and anchor.secret_access_key go together".into()));
                }
                if env("AWS_ACCESS_KEY_ID").is_some() && env("AWS_SECRET_ACCESS_KEY").is_some() {
                    // The S3 client reads the environment (with any session
                    // token) when no static keys are given.
                    access_key_id = None;
                    secret_access_key = None;
                }
                let retention_days = retention_days.unwrap_or(DEFAULT_RETENTION_DAYS);
                if retention_days == 0 {
                    return Err(bad("anchor.retention_days must be at least 1".into()));
                }
                AnchorConfig::S3(S3Config {
                    endpoint: env(ENV_S3_ENDPOINT).or(endpoint),
                    prefix: prefix.unwrap_or_default(),
                    retention_days,
                    access_key_id,
                    secret_access_key,
                    force_path_style: path_style.unwrap_or(false),
                    ..S3Config::new(region.unwrap_or_else(|| DEFAULT_REGION.to_string()), bucket)
                })
            }
        };
        let cfg = ReporterConfig {
            source: source.map(Path::to_path_buf),
            ledger,
            packs_dir,
            rules,
            grace: Duration::from_secs(grace_seconds),
            schedule,
            lock_wait: Duration::from_secs(raw.lock_wait_seconds.unwrap_or(DEFAULT_LOCK_WAIT_SECONDS)),
            anchor,
        };
        // Validates the S3 settings (bucket name, retention, prefix,
        // endpoint) without network I/O. Credentials are resolved when the
        // store is built, from the process environment if not static.
        if let AnchorConfig::S3(c) = &cfg.anchor {
            let probe =
                S3Config { access_key_id: Some("probe".into()), secret_access_key: Some("probe".into()), ..c.clone() };
            S3Anchor::new(probe).map_err(|e| bad(format!("anchor: {e}")))?;
        }
        Ok(cfg)
    }

    /// The grace period in whole seconds.
    pub fn grace_seconds(&self) -> u64 {
        self.grace.as_secs()
    }
}
