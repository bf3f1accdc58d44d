//! Secret key files: C2SP signer-key strings (`PRIVATE+KEY+name+hash+key`)
//! in files only their owner can read, or in an environment variable.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use evident_verify::note::SignerKey;
use thiserror::Error;

/// Errors reading or writing key files.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file cannot be read or written.
    #[error("key file {path}")]
    Io {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Group or others may read the file.
    #[error(
        "key file {path} has mode {mode:04o}: a secret key must not be readable by group or others; run `chmod 600 {path}`"
    )]
    Permissions {
        /// The file.
        path: String,
        /// Its mode bits.
        mode: u32,
    },
    /// The content is not a signer key.
    #[error("key file {path} does not hold a signer key: {why}")]
    Format {
        /// The file (or environment variable).
        path: String,
        /// Why.
        why: String,
    },
}

/// Reads a signer key from `path`, refusing a file group or others can read.
pub fn read_signer_key(path: &Path) -> Result<SignerKey, KeyFileError> {
    let p = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| KeyFileError::Io { path: p.clone(), source })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Permissions { path: p, mode });
    }
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io { path: p.clone(), source })?;
    SignerKey::parse(text.trim()).map_err(|e| KeyFileError::Format { path: p, why: e.to_string() })
}

/// Reads a signer key from the environment variable `var`, if set.
pub fn signer_key_from_env(var: &str) -> Result<Option<SignerKey>, KeyFileError> {
    match std::env::var(var) {
        Ok(v) => SignerKey::parse(v.trim())
            .map(Some)
            .map_err(|e| KeyFileError::Format { path: format!("${var}"), why: e.to_string() }),
        Err(_) => Ok(None),
    }
}

/// Writes a signer key to a new file with mode 0600 (never overwrites).
pub fn write_signer_key(path: &Path, key: &SignerKey) -> Result<(), KeyFileError> {
    let p = path.display().to_string();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| KeyFileError::Io { path: p.clone(), source })?;
    writeln!(f, "{}", key.to_secret_string()).map_err(|source| KeyFileError::Io { path: p.clone(), source })?;
    f.sync_all().map_err(|source| KeyFileError::Io { path: p, source })
}

/// A new signer key named `name` from the operating system's randomness.
pub fn generate(name: &str) -> Result<SignerKey, KeyFileError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| KeyFileError::Format { path: name.to_string(), why: format!("no randomness: {e}") })?;
    SignerKey::from_seed(name, &seed).map_err(|e| KeyFileError::Format { path: name.to_string(), why: e.to_string() })
}
