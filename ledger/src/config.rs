//! The ledger configuration file (`evident.toml`).
//!
//! ```toml
//! origin = "evident.example/prod"   # checkpoint origin line and ledger key name
//! database = "ledger.db"            # paths are relative to this file
//! key_file = "ledger.key"           # mode 0600; or set key_env
//! key_env = "EVIDENT_LEDGER_KEY"    # environment variable that may hold the key instead
//! pgp_cert = "ledger-cert.asc"      # OpenPGP certificate exported for regulators
//! synchronous = "full"              # or "normal"
//! commit_delay_us = 0               # most a commit waits for concurrent callers; 0 = none
//! unsigned_producers = []           # producers allowed to append unsigned records
//! max_record_bytes = 49152
//! [privacy.detectors]               # card, tpin, nrc, email, private_key, aws_access_key, token
//! email = "commit"                  # refuse (default) | commit | off
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::keyfile::{self, KeyFileError};
use crate::ledger::{DEFAULT_MAX_RECORD_BYTES, LedgerOptions};
use crate::privacy::PrivacyConfig;
use crate::store::Synchronous;

/// Name of the environment variable consulted for the ledger key by default.
pub const DEFAULT_KEY_ENV: &str = "EVIDENT_LEDGER_KEY";

/// The parsed configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The log's origin line, also the ledger key's name.
    pub origin: String,
    /// SQLite file.
    #[serde(default = "default_db")]
    pub database: PathBuf,
    /// Ledger signer key file.
    #[serde(default = "default_key")]
    pub key_file: PathBuf,
    /// Environment variable that may hold the key instead of the file.
    #[serde(default = "default_env")]
    pub key_env: String,
    /// Exported OpenPGP certificate.
    #[serde(default = "default_cert")]
    pub pgp_cert: PathBuf,
    /// Commit durability.
    #[serde(default)]
    pub synchronous: Synchronous,
    /// Most a commit leader waits for concurrent callers, in microseconds.
    #[serde(default = "default_commit_delay_us")]
    pub commit_delay_us: u64,
    /// Producers allowed to append unsigned records.
    #[serde(default)]
    pub unsigned_producers: Vec<String>,
    /// Record size limit.
    #[serde(default = "default_max")]
    pub max_record_bytes: usize,
    /// Privacy detectors.
    #[serde(default)]
    pub privacy: PrivacyConfig,
    /// Directory the relative paths are resolved against (not in the file).
    #[serde(skip)]
    pub base: PathBuf,
}

fn default_db() -> PathBuf {
    "ledger.db".into()
}
fn default_key() -> PathBuf {
    "ledger.key".into()
}
fn default_env() -> String {
    DEFAULT_KEY_ENV.into()
}
fn default_cert() -> PathBuf {
    "ledger-cert.asc".into()
}
fn default_commit_delay_us() -> u64 {
    crate::ledger::DEFAULT_COMMIT_DELAY.as_micros() as u64
}
fn default_max() -> usize {
    DEFAULT_MAX_RECORD_BYTES
}

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Cannot read the file.
    #[error("config file {path}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML for this schema.
    #[error("config file {path}: {why}")]
    Parse {
        /// File.
        path: String,
        /// Why.
        why: String,
    },
    /// The key cannot be loaded.
    #[error(transparent)]
    Key(#[from] KeyFileError),
}

impl Config {
    /// A configuration with defaults, rooted at `base`.
    pub fn new(origin: &str, base: &Path) -> Config {
        Config {
            origin: origin.into(),
            database: default_db(),
            key_file: default_key(),
            key_env: default_env(),
            pgp_cert: default_cert(),
            synchronous: Synchronous::Full,
            commit_delay_us: default_commit_delay_us(),
            unsigned_producers: Vec::new(),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            privacy: PrivacyConfig::default(),
            base: base.to_path_buf(),
        }
    }

    /// Loads a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: p.clone(), source })?;
        let mut c: Config =
            toml::from_str(&text).map_err(|e| ConfigError::Parse { path: p.clone(), why: e.to_string() })?;
        evident_verify::note::check_name(&c.origin)
            .map_err(|e| ConfigError::Parse { path: p, why: format!("origin: {e}") })?;
        c.base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(c)
    }

    /// Resolves a path from the file against its directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_path_buf() } else { self.base.join(p) }
    }

    /// The ledger key: from the environment variable if set, else the file.
    pub fn ledger_key(&self) -> Result<evident_verify::note::SignerKey, ConfigError> {
        if let Some(k) = keyfile::signer_key_from_env(&self.key_env)? {
            return Ok(k);
        }
        Ok(keyfile::read_signer_key(&self.resolve(&self.key_file))?)
    }

    /// Ledger options from this configuration.
    pub fn options(&self) -> Result<LedgerOptions, ConfigError> {
        let key = self.ledger_key()?;
        let mut o = LedgerOptions::new(self.resolve(&self.database), &self.origin, key);
        o.synchronous = self.synchronous;
        o.commit_delay = std::time::Duration::from_micros(self.commit_delay_us);
        o.unsigned_producers = self.unsigned_producers.clone();
        o.max_record_bytes = self.max_record_bytes;
        o.privacy = self.privacy.clone();
        Ok(o)
    }

    /// The TOML text of this configuration.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}
