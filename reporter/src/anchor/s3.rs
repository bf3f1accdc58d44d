//! The `s3` anchor store: one object version per name, uploaded with a
//! SHA-256 checksum under Object Lock in COMPLIANCE mode and confirmed by
//! HeadObject before a receipt is issued.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::head_object::{HeadObjectError, HeadObjectOutput};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{ChecksumMode, ChecksumType, ObjectLockEnabled, ObjectLockMode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::sync::OnceCell;

use super::{
    Anchor, AnchorError, AnchorReceipt, BACKEND_S3, COMPLIANCE, hex, rfc3339_secs, sha256, sha256_reader, validate_name,
};

/// User metadata key (`x-amz-meta-sha256`) holding the hex SHA-256, for
/// stores that do not return the checksum on HeadObject.
const META_SHA256: &str = "sha256";
/// The largest object a single PutObject accepts.
const MAX_PUT_SIZE: u64 = 5 * 1024 * 1024 * 1024;
const SECS_PER_DAY: i64 = 86_400;
/// A hundred years; more is almost certainly a unit mistake.
const MAX_RETENTION_DAYS: u32 = 36_500;

/// Settings of an [`S3Anchor`]. Start from [`S3Config::new`] and override
/// fields, so that new fields keep their defaults.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// Endpoint URL of an S3-compatible server; `None` for AWS.
    pub endpoint: Option<String>,
    /// Region, for example `us-east-1`.
    pub region: String,
    /// Bucket; it must have been created with Object Lock enabled.
    pub bucket: String,
    /// Prepended verbatim to every name to form the object key (include a
    /// trailing `/` if you want one).
    pub prefix: String,
    /// COMPLIANCE retention from the time of upload, in days (default 2557,
    /// seven years).
    pub retention_days: u32,
    /// Static access key id; when both keys are `None`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and (optionally) `AWS_SESSION_TOKEN` are read
    /// from the environment.
    pub access_key_id: Option<String>,
    /// Static secret access key.
    pub secret_access_key: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most
    /// S3-compatible servers on an IP address.
    pub force_path_style: bool,
    /// Attempts per request inside the SDK (standard retry mode; default 5).
    pub sdk_max_attempts: u32,
    /// Attempts of a whole [`Anchor::put`] on transient failures (default 4).
    pub put_attempts: u32,
    /// Backoff before the second whole-put attempt, doubled for each
    /// further one (default 200 ms).
    pub put_initial_backoff: Duration,
    /// Upper bound of the whole-put backoff (default 1.6 s).
    pub put_max_backoff: Duration,
    /// TCP/TLS connect timeout (default 5 s).
    pub connect_timeout: Duration,
    /// Time limit of one SDK operation, its retries included (default 120 s).
    pub operation_timeout: Duration,
}

impl S3Config {
    /// Defaults for `bucket` in `region`: AWS endpoint, no prefix, 2557 days
    /// of retention, credentials from the environment, virtual-host style.
    pub fn new(region: impl Into<String>, bucket: impl Into<String>) -> Self {
        S3Config {
            endpoint: None,
            region: region.into(),
            bucket: bucket.into(),
            prefix: String::new(),
            retention_days: 2557,
            access_key_id: None,
            secret_access_key: None,
            force_path_style: false,
            sdk_max_attempts: 5,
            put_attempts: 4,
            put_initial_backoff: Duration::from_millis(200),
            put_max_backoff: Duration::from_millis(1600),
            connect_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(120),
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("retention_days", &self.retention_days)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("force_path_style", &self.force_path_style)
            .field("sdk_max_attempts", &self.sdk_max_attempts)
            .field("put_attempts", &self.put_attempts)
            .field("put_initial_backoff", &self.put_initial_backoff)
            .field("put_max_backoff", &self.put_max_backoff)
            .field("connect_timeout", &self.connect_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .finish()
    }
}

/// Anchors objects in an S3 bucket with Object Lock, each version locked in
/// COMPLIANCE mode for [`S3Config::retention_days`].
#[derive(Debug)]
pub struct S3Anchor {
    client: Client,
    config: S3Config,
    /// Set once the bucket's Object Lock was confirmed; Object Lock cannot
    /// be disabled on a bucket, so one confirmation per process suffices.
    lock_checked: OnceCell<()>,
}

/// An object found under a key, with the SHA-256 the store vouches for.
struct Existing {
    head: HeadObjectOutput,
    sha256: Result<String, String>,
}

impl S3Anchor {
    /// Validates `config` and builds the client. Does no network I/O; call
    /// [`Anchor::check`] at start-up.
    pub fn new(config: S3Config) -> Result<Self, AnchorError> {
        validate_config(&config)?;
        let credentials = credentials(&config)?;
        let mut builder = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(config.force_path_style)
            .retry_config(RetryConfig::standard().with_max_attempts(config.sdk_max_attempts))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(config.connect_timeout)
                    .operation_timeout(config.operation_timeout)
                    .build(),
            );
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(S3Anchor { client: Client::from_conf(builder.build()), config, lock_checked: OnceCell::new() })
    }

    /// The configuration in use.
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// The object key for `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.config.prefix)
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.config.bucket)
    }

    async fn check_lock(&self) -> Result<(), AnchorError> {
        let bucket = &self.config.bucket;
        let out = match self.client.get_object_lock_configuration().bucket(bucket).send().await {
            Ok(out) => out,
            Err(e) => {
                let failure = S3Failure::new("GetObjectLockConfiguration", e);
                return Err(match failure.code() {
                    Some("NoSuchBucket") => AnchorError::NoSuchBucket { bucket: bucket.clone(), source: failure },
                    Some("ObjectLockConfigurationNotFoundError") => AnchorError::NoObjectLock {
                        bucket: bucket.clone(),
                        detail: "the bucket has no Object Lock configuration".to_owned(),
                        source: Some(failure),
                    },
                    _ => AnchorError::S3Check { bucket: bucket.clone(), source: failure },
                });
            }
        };
        let enabled = out.object_lock_configuration().and_then(|c| c.object_lock_enabled());
        if enabled != Some(&ObjectLockEnabled::Enabled) {
            return Err(AnchorError::NoObjectLock {
                bucket: bucket.clone(),
                detail: format!("ObjectLockEnabled is {}", enabled.map_or("absent", |e| e.as_str())),
                source: None,
            });
        }
        Ok(())
    }

    async fn ensure_lock(&self) -> Result<(), AnchorError> {
        self.lock_checked.get_or_try_init(|| self.check_lock()).await.map(|_| ())
    }

    /// HeadObject (with checksums) of `key`, optionally of one version.
    async fn head(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<HeadObjectOutput, SdkError<HeadObjectError, HttpResponse>> {
        self.client
            .head_object()
            .bucket(&self.config.bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_owned))
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
    }

    /// The object stored under `key`, if any. When the current version is
    /// a delete marker, the newest real version underneath is returned:
    /// COMPLIANCE versions survive delete markers, and that version, not a
    /// new upload, is the anchor.
    async fn lookup(&self, key: &str) -> Result<Option<Existing>, AnchorError> {
        let lookup_err = |source| AnchorError::S3Lookup { location: self.location(key), source };
        let head = match self.head(key, None).await {
            Ok(head) => head,
            Err(e) => {
                let not_found = matches!(
                    &e,
                    SdkError::ServiceError(s) if matches!(s.err(), HeadObjectError::NotFound(_))
                );
                if !not_found {
                    return Err(lookup_err(S3Failure::new("HeadObject", e)));
                }
                let delete_marker = e
                    .raw_response()
                    .and_then(|r| r.headers().get("x-amz-delete-marker"))
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                if !delete_marker {
                    return Ok(None);
                }
                let Some(version) = self.newest_version(key).await? else {
                    return Ok(None);
                };
                self.head(key, Some(&version)).await.map_err(|e| lookup_err(S3Failure::new("HeadObject", e)))?
            }
        };
        let sha256 = stored_sha256(&head);
        Ok(Some(Existing { head, sha256 }))
    }

    /// The newest version of exactly `key` that is not a delete marker.
    async fn newest_version(&self, key: &str) -> Result<Option<String>, AnchorError> {
        let out =
            self.client.list_object_versions().bucket(&self.config.bucket).prefix(key).send().await.map_err(|e| {
                AnchorError::S3Lookup { location: self.location(key), source: S3Failure::new("ListObjectVersions", e) }
            })?;
        // Versions of one key are listed newest first.
        Ok(out.versions().iter().find(|v| v.key() == Some(key)).and_then(|v| v.version_id()).map(str::to_owned))
    }

    /// Builds the receipt from what HeadObject showed.
    fn receipt(&self, key: &str, head: &HeadObjectOutput, sha256: String, adopted: bool) -> AnchorReceipt {
        AnchorReceipt {
            backend: BACKEND_S3.to_owned(),
            location: self.location(key),
            endpoint: self.config.endpoint.clone(),
            region: Some(self.config.region.clone()),
            bucket: Some(self.config.bucket.clone()),
            key: key.to_owned(),
            version_id: head.version_id().map(str::to_owned),
            etag: head.e_tag().map(str::to_owned),
            sha256,
            size: head.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or_default(),
            object_lock_mode: head.object_lock_mode().map(|m| m.as_str().to_owned()),
            retain_until: head.object_lock_retain_until_date().and_then(|d| rfc3339_secs(d.secs())),
            legal_hold: head.object_lock_legal_hold_status().map(|s| s.as_str().to_owned()),
            anchored_at: head.last_modified().and_then(|d| rfc3339_secs(d.secs())),
            adopted,
        }
    }

    /// Checks that an existing object holds our bytes and is locked, and
    /// returns its receipt. `requested_retain` is the retain-until (Unix
    /// seconds) that this call asked for when it may have written the
    /// object itself (then the lock must reach it and `adopted` is false);
    /// `None` when the object predates the call.
    fn adopt(
        &self,
        key: &str,
        existing: Existing,
        new_sha256: &str,
        size: u64,
        requested_retain: Option<i64>,
    ) -> Result<AnchorReceipt, AnchorError> {
        let head = &existing.head;
        let location = format!("{}{}", self.location(key), version_suffix(head.version_id()));
        let existing_sha256 =
            existing.sha256.map_err(|reason| AnchorError::Unverifiable { location: location.clone(), reason })?;
        if existing_sha256 != new_sha256 {
            return Err(AnchorError::Conflict { location, existing_sha256, new_sha256: new_sha256.to_owned() });
        }
        let not_confirmed = |reason: String| AnchorError::NotConfirmed {
            location: self.location(key),
            version_id: head.version_id().map(str::to_owned),
            reason,
        };
        if head.version_id().is_none_or(str::is_empty) {
            return Err(not_confirmed("the object has no version id".to_owned()));
        }
        if head.content_length().and_then(|n| u64::try_from(n).ok()) != Some(size) {
            return Err(not_confirmed(format!("size is {:?}, expected {size}", head.content_length())));
        }
        if head.object_lock_mode() != Some(&ObjectLockMode::Compliance) {
            return Err(not_confirmed(format!(
                "Object Lock mode is {}, expected {COMPLIANCE}",
                head.object_lock_mode().map_or("absent", |m| m.as_str())
            )));
        }
        match (head.object_lock_retain_until_date(), requested_retain) {
            (None, _) => return Err(not_confirmed("no Object Lock retain-until date".to_owned())),
            (Some(until), Some(min)) if until.secs() < min => {
                return Err(not_confirmed(format!(
                    "retain-until is {}, expected at least {}",
                    rfc3339_secs(until.secs()).unwrap_or_default(),
                    rfc3339_secs(min).unwrap_or_default()
                )));
            }
            _ => {}
        }
        Ok(self.receipt(key, head, existing_sha256, requested_retain.is_none()))
    }

    /// One attempt of a put. `sent` holds the retain-until requested by the
    /// first PutObject of this call that may have created the object.
    async fn put_once(
        &self,
        key: &str,
        body: Body<'_>,
        size: u64,
        digest: &[u8; 32],
        sent: &mut Option<i64>,
    ) -> Result<AnchorReceipt, AnchorError> {
        let sha_hex = hex(digest);
        if let Some(existing) = self.lookup(key).await? {
            return self.adopt(key, existing, &sha_hex, size, *sent);
        }

        let location = self.location(key);
        let retain_secs = now_secs() + i64::from(self.config.retention_days) * SECS_PER_DAY;
        let was_sent = *sent;
        let stream = body.stream().await?;
        sent.get_or_insert(retain_secs);
        let put = self
            .client
            .put_object()
            .bucket(&self.config.bucket)
            .key(key)
            .body(stream)
            .content_length(i64::try_from(size).unwrap_or(i64::MAX))
            .content_type("application/octet-stream")
            .checksum_sha256(BASE64.encode(digest))
            .metadata(META_SHA256, &sha_hex)
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(DateTime::from_secs(retain_secs))
            // Refuses to add a version on top of one that appeared since
            // the lookup (a concurrent writer); servers that do not know
            // the header ignore it and the lookup is the only guard.
            .if_none_match("*")
            .send()
            .await;
        let out = match put {
            Ok(out) => out,
            Err(e) => {
                let failure = S3Failure::new("PutObject", e);
                if failure.status() == Some(412) || failure.code() == Some("PreconditionFailed") {
                    // Someone else's object won the race; this call wrote nothing.
                    *sent = was_sent;
                    return match self.lookup(key).await? {
                        Some(existing) => self.adopt(key, existing, &sha_hex, size, *sent),
                        None => Err(AnchorError::S3Put { location, source: failure }),
                    };
                }
                if failure.code() == Some("InvalidRequest")
                    && failure.message().is_some_and(|m| m.contains("Object Lock"))
                {
                    return Err(AnchorError::NoObjectLock {
                        bucket: self.config.bucket.clone(),
                        detail: "PutObject with an Object Lock mode was rejected".to_owned(),
                        source: Some(failure),
                    });
                }
                return Err(AnchorError::S3Put { location, source: failure });
            }
        };

        let not_confirmed = |version_id: Option<&str>, reason: String| AnchorError::NotConfirmed {
            location: location.clone(),
            version_id: version_id.map(str::to_owned),
            reason,
        };
        let Some(version_id) = out.version_id().filter(|v| !v.is_empty()) else {
            return Err(not_confirmed(
                None,
                "PutObject returned no version id (is versioning with Object Lock enabled?)".to_owned(),
            ));
        };
        let head = self.head(key, Some(version_id)).await.map_err(|e| AnchorError::S3Confirm {
            location: location.clone(),
            source: S3Failure::new("HeadObject", e),
        })?;
        if head.version_id() != Some(version_id) {
            return Err(not_confirmed(Some(version_id), format!("HeadObject showed version {:?}", head.version_id())));
        }
        let sha256 = stored_sha256(&head);
        self.adopt(key, Existing { head, sha256 }, &sha_hex, size, Some(retain_secs))
    }

    /// Puts `body` of `size` bytes and SHA-256 `digest` under `name`,
    /// retrying transient failures with backoff.
    async fn put_body(
        &self,
        name: &str,
        body: Body<'_>,
        size: u64,
        digest: &[u8; 32],
    ) -> Result<AnchorReceipt, AnchorError> {
        validate_name(name)?;
        let key = self.key(name);
        if size > MAX_PUT_SIZE {
            return Err(AnchorError::TooLarge { location: self.location(&key), size, limit: MAX_PUT_SIZE });
        }
        self.ensure_lock().await?;
        let mut sent = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.put_once(&key, body, size, digest, &mut sent).await {
                Ok(receipt) => return Ok(receipt),
                Err(e) if e.is_transient() && attempt < self.config.put_attempts => {
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                Err(e) if e.is_transient() => {
                    return Err(AnchorError::RetriesExhausted {
                        location: self.location(&key),
                        attempts: attempt,
                        last: Box::new(e),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Like [`Anchor::put`], but streams the file at `path` from disk, so
    /// memory stays flat whatever its size. The file is hashed first and
    /// the upload carries that SHA-256 and size: a store that verifies
    /// checksums (AWS S3 does) refuses a file that changed in between
    /// (`BadDigest`), and one of another size fails the upload.
    pub async fn put_file(&self, name: &str, path: &Path) -> Result<AnchorReceipt, AnchorError> {
        validate_name(name)?;
        let p = path.to_owned();
        let (size, digest) = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&p)?;
            let mut size = 0u64;
            let digest = sha256_reader(file, |piece| {
                size += piece.len() as u64;
                Ok(())
            })?;
            Ok::<_, std::io::Error>((size, digest))
        })
        .await
        .map_err(|source| AnchorError::Task { path: path.to_owned(), source })?
        .map_err(|source| AnchorError::FsRead { path: path.to_owned(), source })?;
        self.put_body(name, Body::File(path), size, &digest).await
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.config.put_initial_backoff.saturating_mul(factor).min(self.config.put_max_backoff)
    }
}

impl Anchor for S3Anchor {
    async fn check(&self) -> Result<(), AnchorError> {
        self.ensure_lock().await
    }

    async fn put(&self, name: &str, bytes: &[u8]) -> Result<AnchorReceipt, AnchorError> {
        self.put_body(name, Body::Bytes(bytes), bytes.len() as u64, &sha256(bytes)).await
    }

    async fn get_existing(&self, name: &str) -> Result<Option<AnchorReceipt>, AnchorError> {
        validate_name(name)?;
        let key = self.key(name);
        let Some(existing) = self.lookup(&key).await? else {
            return Ok(None);
        };
        let sha256 = existing.sha256.map_err(|reason| AnchorError::Unverifiable {
            location: format!("{}{}", self.location(&key), version_suffix(existing.head.version_id())),
            reason,
        })?;
        Ok(Some(self.receipt(&key, &existing.head, sha256, true)))
    }
}

/// What a put uploads: bytes in memory, or a file streamed from disk.
#[derive(Clone, Copy)]
enum Body<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

impl Body<'_> {
    /// A fresh stream of the body, for one PutObject attempt.
    async fn stream(self) -> Result<ByteStream, AnchorError> {
        match self {
            Body::Bytes(b) => Ok(ByteStream::from(b.to_vec())),
            Body::File(p) => ByteStream::from_path(p)
                .await
                .map_err(|e| AnchorError::FsRead { path: p.to_owned(), source: std::io::Error::other(e) }),
        }
    }
}

fn version_suffix(version_id: Option<&str>) -> String {
    version_id.map_or_else(String::new, |v| format!("?versionId={v}"))
}

/// The SHA-256 (hex) that the store vouches for: the full-object
/// `ChecksumSHA256` it verified on upload, else our `x-amz-meta-sha256`.
/// Both present and different is an error.
fn stored_sha256(head: &HeadObjectOutput) -> Result<String, String> {
    let checksum = head
        .checksum_sha256()
        .filter(|_| head.checksum_type() != Some(&ChecksumType::Composite))
        .and_then(|c| BASE64.decode(c).ok())
        .filter(|d| d.len() == 32)
        .map(|d| hex(&d));
    let meta = head.metadata().and_then(|m| m.get(META_SHA256)).map(|s| s.to_ascii_lowercase());
    match (checksum, meta) {
        (Some(c), Some(m)) if c != m => {
            Err(format!("its ChecksumSHA256 ({c}) and its x-amz-meta-sha256 ({m}) disagree"))
        }
        (Some(c), _) => Ok(c),
        (None, Some(m)) if m.len() == 64 && m.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(m),
        (None, Some(m)) => Err(format!("its x-amz-meta-sha256 {m:?} is not a SHA-256")),
        (None, None) => Err("it has neither a full-object ChecksumSHA256 nor x-amz-meta-sha256".to_owned()),
    }
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

fn validate_config(c: &S3Config) -> Result<(), AnchorError> {
    let bad = |reason: String| Err(AnchorError::Config { reason });
    let b = c.bucket.as_bytes();
    let bucket_ok = (3..=63).contains(&b.len())
        && b.iter().all(|&x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == b'.' || x == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric);
    if !bucket_ok {
        return bad(format!(
            "S3 bucket name {:?} is not valid (3-63 characters of a-z, 0-9, `.`, `-`, starting and ending with a letter or digit)",
            c.bucket
        ));
    }
    if c.region.is_empty() {
        return bad("S3 region is empty".to_owned());
    }
    if !(1..=MAX_RETENTION_DAYS).contains(&c.retention_days) {
        return bad(format!(
            "S3 retention_days is {}; it must be between 1 and {MAX_RETENTION_DAYS}",
            c.retention_days
        ));
    }
    if c.prefix.starts_with('/') || c.prefix.len() > 400 {
        return bad(format!("S3 prefix {:?} must not start with `/` and must be at most 400 bytes", c.prefix));
    }
    if c.sdk_max_attempts == 0 || c.put_attempts == 0 {
        return bad("S3 attempt counts must be at least 1".to_owned());
    }
    if let Some(endpoint) = &c.endpoint
        && !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
    {
        return bad(format!("S3 endpoint {endpoint:?} must be an http:// or https:// URL"));
    }
    Ok(())
}

fn credentials(c: &S3Config) -> Result<Credentials, AnchorError> {
    match (&c.access_key_id, &c.secret_access_key) {
        (Some(id), Some(secret)) => Ok(Credentials::new(id, secret, None, None, "evident-config")),
        (None, None) => {
            let id = std::env::var("AWS_ACCESS_KEY_ID").ok().filter(|v| !v.is_empty());
            let secret = std::env::var("AWS_SECRET_ACCESS_KEY").ok().filter(|v| !v.is_empty());
            let token = std::env::var("AWS_SESSION_TOKEN").ok().filter(|v| !v.is_empty());
            match (id, secret) {
                (Some(id), Some(secret)) => Ok(Credentials::new(id, secret, token, None, "environment")),
                _ => Err(AnchorError::Config {
                    reason: "no S3 credentials: set access_key_id and secret_access_key, \
                             or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                        .to_owned(),
                }),
            }
        }
        _ => Err(AnchorError::Config {
            reason: "S3 access_key_id and secret_access_key must be given together".to_owned(),
        }),
    }
}

/// What kind of failure an S3 request met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum S3FailureKind {
    /// The request could not be built (a bug or bad input).
    Construction,
    /// A connect, attempt or operation timeout.
    Timeout,
    /// The request could not be sent or the connection broke.
    Dispatch,
    /// A response arrived but could not be read.
    Response,
    /// The service answered with an error.
    Service,
    /// Anything else.
    Other,
}

/// One failed S3 request, with the service's status, code and message and
/// the SDK error as source.
#[derive(Debug)]
pub struct S3Failure(Box<FailureInner>);

#[derive(Debug)]
struct FailureInner {
    operation: &'static str,
    kind: S3FailureKind,
    status: Option<u16>,
    code: Option<String>,
    message: Option<String>,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl S3Failure {
    fn new<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let kind = match &err {
            SdkError::ConstructionFailure(_) => S3FailureKind::Construction,
            SdkError::TimeoutError(_) => S3FailureKind::Timeout,
            SdkError::DispatchFailure(d) if d.is_timeout() => S3FailureKind::Timeout,
            SdkError::DispatchFailure(d) if d.is_user() => S3FailureKind::Construction,
            SdkError::DispatchFailure(_) => S3FailureKind::Dispatch,
            SdkError::ResponseError(_) => S3FailureKind::Response,
            SdkError::ServiceError(_) => S3FailureKind::Service,
            _ => S3FailureKind::Other,
        };
        S3Failure(Box::new(FailureInner {
            operation,
            kind,
            status: err.raw_response().map(|r| r.status().as_u16()),
            code: err.code().map(str::to_owned),
            message: err.message().map(str::to_owned),
            source: Box::new(err),
        }))
    }

    /// The S3 operation, e.g. `PutObject`.
    pub fn operation(&self) -> &'static str {
        self.0.operation
    }

    /// The kind of failure.
    pub fn kind(&self) -> S3FailureKind {
        self.0.kind
    }

    /// HTTP status, when a response arrived.
    pub fn status(&self) -> Option<u16> {
        self.0.status
    }

    /// S3 error code, e.g. `AccessDenied`.
    pub fn code(&self) -> Option<&str> {
        self.0.code.as_deref()
    }

    /// S3 error message.
    pub fn message(&self) -> Option<&str> {
        self.0.message.as_deref()
    }

    /// True for failures that a later attempt may not meet: timeouts,
    /// broken connections, unreadable responses, throttling and 5xx.
    pub fn is_transient(&self) -> bool {
        match self.0.kind {
            S3FailureKind::Timeout | S3FailureKind::Dispatch | S3FailureKind::Response => true,
            S3FailureKind::Service => {
                self.0.status.is_some_and(|s| s >= 500 || s == 429)
                    || matches!(
                        self.0.code.as_deref(),
                        Some(
                            "Throttling"
                                | "ThrottlingException"
                                | "SlowDown"
                                | "RequestTimeout"
                                | "RequestTimeoutException"
                                | "InternalError"
                                | "ServiceUnavailable"
                                | "ConditionalRequestConflict"
                        )
                    )
            }
            S3FailureKind::Construction | S3FailureKind::Other => false,
        }
    }
}

impl fmt::Display for S3Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.0.operation)?;
        match self.0.kind {
            S3FailureKind::Service => {
                write!(f, "refused")?;
                if let Some(s) = self.0.status {
                    write!(f, ": HTTP {s}")?;
                }
                if let Some(c) = &self.0.code {
                    write!(f, " {c}")?;
                }
                if let Some(m) = &self.0.message {
                    write!(f, ": {m}")?;
                }
                Ok(())
            }
            S3FailureKind::Timeout => write!(f, "timed out"),
            S3FailureKind::Dispatch => write!(f, "could not be sent or its connection broke"),
            S3FailureKind::Response => write!(f, "got an unreadable response"),
            S3FailureKind::Construction => write!(f, "could not be built"),
            S3FailureKind::Other => write!(f, "failed: {}", DisplayErrorContext(&*self.0.source)),
        }
    }
}

impl std::error::Error for S3Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0.source)
    }
}
