//! WORM anchoring: the store that keeps each day's pack and checkpoint
//! beyond the reach of the operator who produced them (DESIGN §6).
//!
//! This module owns the [`Anchor`] contract, the two backends that implement
//! it ([`FsAnchor`], the embedded default, and [`S3Anchor`], S3 Object Lock in
//! COMPLIANCE mode), the [`AnchorStore`] that the reporter configures, and the
//! [`AnchorReceipt`] that becomes an `anchor_receipt` ledger entry.
//!
//! # Contract
//!
//! Every backend MUST honour the following; the tests in
//! `reporter/tests/anchor_*.rs` check each point against the real store.
//!
//! - An anchored object MUST NOT be overwritten, replaced, deleted or
//!   shortened in retention by the anchor layer, and the store MUST refuse
//!   such requests from anyone else for the retention period where it can
//!   (S3 COMPLIANCE mode; a read-only file behind a hard link that is never
//!   replaced for `fs`).
//! - [`Anchor::put`] MUST return a receipt only after the object is durable
//!   (`fs`: file and directory fsynced; `s3`: PutObject acknowledged) and,
//!   for `s3`, after a HeadObject of the exact version confirmed mode
//!   COMPLIANCE, a retain-until date no earlier than the one requested, the
//!   size and the SHA-256.
//! - Putting identical bytes under a name that already holds them MUST be a
//!   no-op that returns the original object's receipt with `adopted = true`.
//! - Putting different bytes under a name that already holds an object MUST
//!   be refused with [`AnchorError::Conflict`]; the existing object stays as
//!   it is.
//! - A failed or partial upload MUST return an error, never a receipt.
//! - Names are relative, `/`-separated paths of `[A-Za-z0-9._-]` components
//!   that do not start with `.` (see [`validate_name`]); anything else is
//!   refused before any I/O.

use std::future::Future;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod fs;
mod s3;

pub use fs::FsAnchor;
pub use s3::{S3Anchor, S3Config, S3Failure, S3FailureKind};

/// Backend name of [`FsAnchor`] in receipts.
pub const BACKEND_FS: &str = "fs";
/// Backend name of [`S3Anchor`] in receipts.
pub const BACKEND_S3: &str = "s3";
/// The Object Lock mode every `s3` anchor is written with.
pub const COMPLIANCE: &str = "COMPLIANCE";

/// What was anchored and where; becomes an `anchor_receipt` ledger entry
/// (`schemas/kinds/anchor_receipt.json`, together with the fields the pack
/// adds: `day`, `artifact`, `manifest_sha256`, `tree_size`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorReceipt {
    /// `"fs"` or `"s3"`.
    pub backend: String,
    /// The absolute file path for `fs`, `s3://<bucket>/<key>` for `s3`.
    pub location: String,
    /// The S3 endpoint URL when one was configured (not the AWS default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The S3 region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The S3 bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// The full S3 object key (prefix + name) for `s3`; the name relative
    /// to the root directory for `fs`.
    pub key: String,
    /// The S3 VersionId of the locked object version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// The ETag as returned by the store, quotes included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// SHA-256 of the object's bytes, 64 lower-case hex digits.
    pub sha256: String,
    /// Size of the object in bytes.
    pub size: u64,
    /// Object Lock mode shown by HeadObject (`"COMPLIANCE"` for `s3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock_mode: Option<String>,
    /// Object Lock retain-until date shown by HeadObject: RFC 3339 UTC,
    /// seconds precision, `Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_until: Option<String>,
    /// Object Lock legal hold status (`"ON"`/`"OFF"`) when the store reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_hold: Option<String>,
    /// When the store acknowledged the write (S3 Last-Modified, file
    /// mtime): RFC 3339 UTC, seconds precision, `Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchored_at: Option<String>,
    /// True when the object already existed with the same SHA-256 and this
    /// call did not write it. Not part of the ledger record
    /// (see [`AnchorReceipt::record_fields`]).
    pub adopted: bool,
}

impl AnchorReceipt {
    /// The receipt's fields as they go into an `anchor_receipt` record body:
    /// everything except `adopted`, which describes this call rather than
    /// the anchored object, and without absent optional fields. The caller
    /// adds `day`, `artifact`, `manifest_sha256` and `tree_size`.
    pub fn record_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut map = serde_json::Map::new();
        let mut put = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                map.insert(k.to_owned(), serde_json::Value::String(v.to_owned()));
            }
        };
        put("backend", Some(&self.backend));
        put("location", Some(&self.location));
        put("endpoint", self.endpoint.as_deref());
        put("region", self.region.as_deref());
        put("bucket", self.bucket.as_deref());
        put("key", Some(&self.key));
        put("version_id", self.version_id.as_deref());
        put("etag", self.etag.as_deref());
        put("sha256", Some(&self.sha256));
        put("object_lock_mode", self.object_lock_mode.as_deref());
        put("retain_until", self.retain_until.as_deref());
        put("legal_hold", self.legal_hold.as_deref());
        put("anchored_at", self.anchored_at.as_deref());
        map.insert("size".to_owned(), serde_json::Value::from(self.size));
        map
    }
}

/// A WORM store for anchored objects. Implementations MUST honour the
/// contract in the [module documentation](self).
pub trait Anchor {
    /// Start-up check: the store exists and is usable as WORM storage
    /// (`fs`: a writable directory; `s3`: the bucket exists and has Object
    /// Lock enabled). MUST fail rather than let a later `put` write to a
    /// store that cannot keep the contract.
    fn check(&self) -> impl Future<Output = Result<(), AnchorError>> + Send;

    /// Anchors `bytes` under `name` (for example `packs/2026-11-21.tar`).
    ///
    /// MUST return only once the object is durable (and, for `s3`, its lock
    /// is confirmed by HeadObject). The same bytes again MUST return the
    /// original receipt with `adopted = true`; different bytes MUST be
    /// refused with [`AnchorError::Conflict`]. Any failure MUST be an error,
    /// never a receipt.
    fn put(&self, name: &str, bytes: &[u8]) -> impl Future<Output = Result<AnchorReceipt, AnchorError>> + Send;

    /// Describes the object stored under `name`, if any, with
    /// `adopted = true`. Reports what the store shows and enforces nothing:
    /// use it for adoption decisions and status output.
    fn get_existing(&self, name: &str) -> impl Future<Output = Result<Option<AnchorReceipt>, AnchorError>> + Send;
}

/// The configured anchor store of the reporter.
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "one store per process; boxing would only add an indirection")]
pub enum AnchorStore {
    /// A local directory (the embedded default).
    Fs(FsAnchor),
    /// An S3 bucket with Object Lock.
    S3(S3Anchor),
}

impl AnchorStore {
    /// `"fs"` or `"s3"`.
    pub fn backend(&self) -> &'static str {
        match self {
            AnchorStore::Fs(_) => BACKEND_FS,
            AnchorStore::S3(_) => BACKEND_S3,
        }
    }

    /// See [`Anchor::check`].
    pub async fn check(&self) -> Result<(), AnchorError> {
        match self {
            AnchorStore::Fs(a) => a.check().await,
            AnchorStore::S3(a) => a.check().await,
        }
    }

    /// See [`Anchor::put`].
    pub async fn put(&self, name: &str, bytes: &[u8]) -> Result<AnchorReceipt, AnchorError> {
        match self {
            AnchorStore::Fs(a) => a.put(name, bytes).await,
            AnchorStore::S3(a) => a.put(name, bytes).await,
        }
    }

    /// Anchors the file at `path` under `name`, with [`Anchor::put`]'s
    /// contract. Both stores stream it from disk, so memory stays flat
    /// whatever the size of the day: `fs` hashes while it copies, `s3`
    /// hashes first and sends the SHA-256 with one PutObject, up to its
    /// size limit.
    pub async fn put_file(&self, name: &str, path: &std::path::Path) -> Result<AnchorReceipt, AnchorError> {
        match self {
            AnchorStore::Fs(a) => {
                validate_name(name)?;
                let (a, name, p) = (a.clone(), name.to_owned(), path.to_owned());
                tokio::task::spawn_blocking(move || a.put_file_blocking(&name, &p))
                    .await
                    .map_err(|source| AnchorError::Task { path: path.to_owned(), source })?
            }
            AnchorStore::S3(a) => a.put_file(name, path).await,
        }
    }

    /// See [`Anchor::get_existing`].
    pub async fn get_existing(&self, name: &str) -> Result<Option<AnchorReceipt>, AnchorError> {
        match self {
            AnchorStore::Fs(a) => a.get_existing(name).await,
            AnchorStore::S3(a) => a.get_existing(name).await,
        }
    }
}

impl Anchor for AnchorStore {
    fn check(&self) -> impl Future<Output = Result<(), AnchorError>> + Send {
        AnchorStore::check(self)
    }

    fn put(&self, name: &str, bytes: &[u8]) -> impl Future<Output = Result<AnchorReceipt, AnchorError>> + Send {
        AnchorStore::put(self, name, bytes)
    }

    fn get_existing(&self, name: &str) -> impl Future<Output = Result<Option<AnchorReceipt>, AnchorError>> + Send {
        AnchorStore::get_existing(self, name)
    }
}

impl From<FsAnchor> for AnchorStore {
    fn from(a: FsAnchor) -> Self {
        AnchorStore::Fs(a)
    }
}

impl From<S3Anchor> for AnchorStore {
    fn from(a: S3Anchor) -> Self {
        AnchorStore::S3(a)
    }
}

/// Why anchoring failed. Each variant is one stage; the cause is kept as
/// the error's source, so print the chain (`{:#}` with anyhow).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnchorError {
    /// Caller misuse: the object name is not acceptable.
    #[error("invalid anchor name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// Caller misuse: the store configuration is not usable.
    #[error("invalid anchor configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },

    /// The object is larger than the store accepts in one write.
    #[error("{location}: {size} bytes is more than the {limit} bytes one anchor write accepts")]
    TooLarge {
        /// Where it was to be written.
        location: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// Different bytes are already anchored under this name; nothing was
    /// written and the existing object is unchanged.
    #[error(
        "{location} is already anchored with different content \
         (existing sha256 {existing_sha256}, new sha256 {new_sha256}); refusing to replace it"
    )]
    Conflict {
        /// The existing object (path, or `s3://bucket/key` with `?versionId=`).
        location: String,
        /// SHA-256 (hex) of the bytes already anchored.
        existing_sha256: String,
        /// SHA-256 (hex) of the bytes that were refused.
        new_sha256: String,
    },

    /// An object exists under the name, but its SHA-256 cannot be
    /// established, so it can be neither adopted nor safely ignored.
    #[error("{location} exists but cannot be compared: {reason}")]
    Unverifiable {
        /// The existing object.
        location: String,
        /// Why.
        reason: String,
    },

    /// `fs`: the root directory is missing, not a directory or not writable.
    #[error("anchor directory {}: {what}", root.display())]
    FsRoot {
        /// The configured root.
        root: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// `fs`: reading an existing anchored file failed.
    #[error("reading anchored file {}", path.display())]
    FsRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// `fs`: writing, syncing or linking failed; no receipt was produced and
    /// the final name was not created (or, if the failure came after the
    /// link, the file may exist and a retry will adopt it).
    #[error("anchoring {}: {what}", path.display())]
    FsWrite {
        /// The path being written.
        path: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// `fs`: the blocking I/O task did not complete.
    #[error("anchor I/O task for {} did not complete", path.display())]
    Task {
        /// The path being worked on.
        path: PathBuf,
        /// Why the task ended.
        #[source]
        source: tokio::task::JoinError,
    },

    /// `s3`: the bucket does not exist.
    #[error("S3 bucket `{bucket}` does not exist (or is not visible with these credentials)")]
    NoSuchBucket {
        /// The bucket.
        bucket: String,
        /// The service's answer.
        #[source]
        source: S3Failure,
    },

    /// `s3`: the bucket has no Object Lock; anchoring there is refused.
    #[error(
        "S3 bucket `{bucket}` does not have Object Lock enabled ({detail}); Evident anchors only \
         to a bucket created with Object Lock enabled, so that every pack is locked in COMPLIANCE \
         mode and cannot be deleted or overwritten before its retention ends"
    )]
    NoObjectLock {
        /// The bucket.
        bucket: String,
        /// What the service reported.
        detail: String,
        /// The service's answer, when it was an error.
        #[source]
        source: Option<S3Failure>,
    },

    /// `s3`: the bucket's Object Lock configuration could not be read.
    #[error("checking Object Lock on S3 bucket `{bucket}`")]
    S3Check {
        /// The bucket.
        bucket: String,
        /// The request failure.
        #[source]
        source: S3Failure,
    },

    /// `s3`: looking up an existing object (HeadObject, ListObjectVersions) failed.
    #[error("looking up {location}")]
    S3Lookup {
        /// `s3://bucket/key`.
        location: String,
        /// The request failure.
        #[source]
        source: S3Failure,
    },

    /// `s3`: PutObject failed; no receipt was produced.
    #[error("uploading {location}")]
    S3Put {
        /// `s3://bucket/key`.
        location: String,
        /// The request failure.
        #[source]
        source: S3Failure,
    },

    /// `s3`: the HeadObject that confirms a fresh upload failed.
    #[error("confirming the upload of {location} with HeadObject")]
    S3Confirm {
        /// `s3://bucket/key`.
        location: String,
        /// The request failure.
        #[source]
        source: S3Failure,
    },

    /// `s3`: the store answered, but what it shows does not meet the
    /// contract (no version id, no COMPLIANCE lock, retain-until too early,
    /// wrong size or checksum). No receipt was produced.
    #[error("{location}{}: not confirmed as anchored: {reason}", version_suffix(version_id))]
    NotConfirmed {
        /// `s3://bucket/key`.
        location: String,
        /// The version concerned, when known.
        version_id: Option<String>,
        /// What is missing or wrong.
        reason: String,
    },

    /// `s3`: transient failures persisted through every retry.
    #[error("anchoring {location} failed after {attempts} attempts")]
    RetriesExhausted {
        /// `s3://bucket/key`.
        location: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        last: Box<AnchorError>,
    },
}

fn version_suffix(version_id: &Option<String>) -> String {
    match version_id {
        Some(v) => format!("?versionId={v}"),
        None => String::new(),
    }
}

impl AnchorError {
    /// True when retrying the same call later may succeed (timeouts,
    /// connection failures, throttling, 5xx answers).
    pub fn is_transient(&self) -> bool {
        match self {
            AnchorError::S3Check { source, .. }
            | AnchorError::S3Lookup { source, .. }
            | AnchorError::S3Put { source, .. }
            | AnchorError::S3Confirm { source, .. } => source.is_transient(),
            AnchorError::RetriesExhausted { .. } => true,
            _ => false,
        }
    }
}

/// Longest name accepted, in bytes (S3 keys are at most 1024 bytes, and the
/// prefix needs room too).
pub const MAX_NAME_LEN: usize = 512;
/// Longest single path component accepted, in bytes.
pub const MAX_COMPONENT_LEN: usize = 200;

/// Checks that `name` is an acceptable object name: a relative,
/// `/`-separated path whose components are non-empty, consist of
/// `[A-Za-z0-9._-]`, and do not start with `.` (which also rules out `.`
/// and `..`, and keeps the `fs` backend's temporary files out of the name
/// space).
pub fn validate_name(name: &str) -> Result<(), AnchorError> {
    let err = |reason| Err(AnchorError::InvalidName { name: name.to_owned(), reason });
    if name.is_empty() {
        return err("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return err("longer than 512 bytes");
    }
    if name.starts_with('/') {
        return err("absolute paths are not allowed");
    }
    for component in name.split('/') {
        if component.is_empty() {
            return err("empty path component");
        }
        if component == "." || component == ".." {
            return err("`.` and `..` components are not allowed");
        }
        if component.starts_with('.') {
            return err("a component must not start with `.`");
        }
        if component.len() > MAX_COMPONENT_LEN {
            return err("a path component is longer than 200 bytes");
        }
        if !component.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
            return err("only A-Z, a-z, 0-9, `.`, `_`, `-` and `/` are allowed");
        }
    }
    Ok(())
}

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// SHA-256 of everything `r` yields, read 64 KiB at a time; each piece
/// also goes to `sink`.
pub(crate) fn sha256_reader(
    mut r: impl std::io::Read,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
        sink(&buf[..n])?;
    }
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// RFC 3339, UTC, seconds precision, `Z`; `None` if out of chrono's range.
pub(crate) fn rfc3339_secs(secs: i64) -> Option<String> {
    chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["packs/2026-11-21.tar", "a", "a/b/c.d", "x_y-z.tar.zst"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in
            ["", "/a", "a/", "a//b", "./a", "a/./b", "..", "a/../b", ".hidden", "a/.b", "a\\b", "a b", "a\0b", "é"]
        {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"a".repeat(201)).is_err());
        assert!(validate_name(&["a"; 300].join("/")).is_err());
    }

    #[test]
    fn hex_and_time() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(hex(&sha256(b"")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(rfc3339_secs(0).as_deref(), Some("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn record_fields_follow_the_schema() {
        let r = AnchorReceipt {
            backend: "fs".into(),
            location: "/x/a".into(),
            endpoint: None,
            region: None,
            bucket: None,
            key: "a".into(),
            version_id: None,
            etag: None,
            sha256: "00".repeat(32),
            size: 3,
            object_lock_mode: None,
            retain_until: None,
            legal_hold: None,
            anchored_at: Some("2026-11-21T01:00:07Z".into()),
            adopted: true,
        };
        let m = r.record_fields();
        assert!(!m.contains_key("adopted"));
        assert!(!m.contains_key("bucket"));
        assert_eq!(m["size"], serde_json::json!(3));
        assert_eq!(m["anchored_at"], serde_json::json!("2026-11-21T01:00:07Z"));
    }
}
