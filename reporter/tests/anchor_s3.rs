//! The `s3` anchor store against a real S3-compatible server that enforces
//! Object Lock: LocalStack on loopback, started by `scripts/test`, which
//! exports its URL as `EVIDENT_TEST_S3_ENDPOINT`. Without it these tests
//! fail; they never skip.
//!
//! Each test makes its own bucket, so they run in parallel and can be rerun
//! against the same server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::types::{ObjectLockMode, ObjectLockRetentionMode};
use evident_reporter::anchor::{Anchor, AnchorError, AnchorReceipt, AnchorStore, S3Anchor, S3Config, S3FailureKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const REGION: &str = "us-east-1";

fn endpoint() -> String {
    match std::env::var("EVIDENT_TEST_S3_ENDPOINT") {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "EVIDENT_TEST_S3_ENDPOINT is not set: run scripts/test, which installs and starts \
             LocalStack (S3 with Object Lock) on loopback and sets it"
        ),
    }
}

/// A plain SDK client for setting up buckets and for attacking anchored
/// objects the way an operator could.
fn raw_client(endpoint: &str) -> Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    Client::from_conf(conf)
}

fn config(endpoint: &str, bucket: &str) -> S3Config {
    S3Config {
        endpoint: Some(endpoint.to_owned()),
        prefix: "evident/".to_owned(),
        access_key_id: Some("test".to_owned()),
        secret_access_key: Some("test".to_owned()),
        force_path_style: true,
        ..S3Config::new(REGION, bucket)
    }
}

fn unique_bucket(tag: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos()
        % 1_000_000_000_000;
    format!("evident-{tag}-{}-{nanos}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

async fn create_bucket(client: &Client, tag: &str, object_lock: bool) -> String {
    let bucket = unique_bucket(tag);
    client
        .create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(object_lock)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateBucket {bucket}: {e:?}"));
    bucket
}

/// (versions, delete markers) stored under exactly `key`.
async fn versions(client: &Client, bucket: &str, key: &str) -> (Vec<String>, usize) {
    let out = client.list_object_versions().bucket(bucket).prefix(key).send().await.expect("ListObjectVersions");
    let v = out
        .versions()
        .iter()
        .filter(|v| v.key() == Some(key))
        .filter_map(|v| v.version_id().map(str::to_owned))
        .collect();
    let m = out.delete_markers().iter().filter(|m| m.key() == Some(key)).count();
    (v, m)
}

fn pack(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The error and all its sources, for assertion messages and the log.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn without_adopted(r: &AnchorReceipt) -> AnchorReceipt {
    AnchorReceipt { adopted: false, ..r.clone() }
}

/// Case 1: an anchored pack is locked in COMPLIANCE mode until now + the
/// retention (the default, 2557 days), as HeadObject shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anchored_pack_is_locked_in_compliance_mode() {
    let ep = endpoint();
    let client = raw_client(&ep);
    let bucket = create_bucket(&client, "lock", true).await;
    let store = AnchorStore::from(S3Anchor::new(config(&ep, &bucket)).expect("config"));
    store.check().await.expect("bucket with Object Lock passes check");

    let bytes = pack(300_000, 1);
    let name = "packs/2026-11-21.tar";
    let before = chrono::Utc::now();
    let r = store.put(name, &bytes).await.expect("put");

    let key = format!("evident/{name}");
    assert_eq!(r.backend, "s3");
    assert_eq!(r.location, format!("s3://{bucket}/{key}"));
    assert_eq!(r.bucket.as_deref(), Some(bucket.as_str()));
    assert_eq!(r.key, key);
    assert_eq!(r.endpoint.as_deref(), Some(ep.as_str()));
    assert_eq!(r.region.as_deref(), Some(REGION));
    assert_eq!(r.sha256, sha256_hex(&bytes));
    assert_eq!(r.size, bytes.len() as u64);
    assert_eq!(r.object_lock_mode.as_deref(), Some("COMPLIANCE"));
    assert!(!r.adopted);
    let version = r.version_id.clone().expect("version id");
    assert!(r.etag.as_deref().is_some_and(|e| e.starts_with('"')));

    let head = client.head_object().bucket(&bucket).key(&key).version_id(&version).send().await.expect("HeadObject");
    assert_eq!(head.object_lock_mode(), Some(&ObjectLockMode::Compliance));
    let until = head.object_lock_retain_until_date().expect("retain-until date");
    let expected = before + chrono::Duration::days(2557);
    let diff = (until.secs() - expected.timestamp()).abs();
    assert!(diff <= 60, "retain-until {until} is {diff} s away from {expected}");
    let receipt_until =
        chrono::DateTime::parse_from_rfc3339(r.retain_until.as_deref().expect("receipt date")).expect("RFC 3339");
    assert_eq!(receipt_until.timestamp(), until.secs());
    assert!(r.retain_until.as_deref().is_some_and(|d| d.ends_with('Z') && d.len() == 20));
    assert_eq!(head.e_tag(), r.etag.as_deref());

    // S3 verified and stored our SHA-256 checksum.
    let with_checksum = client
        .head_object()
        .bucket(&bucket)
        .key(&key)
        .version_id(&version)
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .expect("HeadObject with checksum");
    let stored = with_checksum.checksum_sha256().expect("ChecksumSHA256 stored");
    let stored = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, stored).expect("base64");
    assert_eq!(stored.iter().map(|b| format!("{b:02x}")).collect::<String>(), r.sha256);

    let body = client
        .get_object()
        .bucket(&bucket)
        .key(&key)
        .version_id(&version)
        .send()
        .await
        .expect("GetObject")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    assert_eq!(&body[..], &bytes[..]);
    assert_eq!(
        store.get_existing(name).await.expect("get_existing"),
        Some(AnchorReceipt { adopted: true, ..r.clone() })
    );
    let fields = r.record_fields();
    assert!(!fields.contains_key("adopted"));
    eprintln!("case 1 receipt: {}", serde_json::to_string(&r).expect("json"));
}

/// Case 2: the server itself refuses to delete the locked version or to
/// shorten its retention; the object survives both attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_version_cannot_be_deleted_or_shortened() {
    let ep = endpoint();
    let client = raw_client(&ep);
    let bucket = create_bucket(&client, "worm", true).await;
    let store = S3Anchor::new(S3Config { retention_days: 30, ..config(&ep, &bucket) }).expect("config");
    let bytes = pack(10_000, 2);
    let r = store.put("checkpoints/2026-11-21", &bytes).await.expect("put");
    let version = r.version_id.clone().expect("version");

    let del = client.delete_object().bucket(&bucket).key(&r.key).version_id(&version).send().await;
    let del = del.expect_err("DeleteObject of a COMPLIANCE version must be refused");
    eprintln!("case 2 DeleteObject(versionId): {:?} {:?}", del.code(), del.message());

    let del = client
        .delete_object()
        .bucket(&bucket)
        .key(&r.key)
        .version_id(&version)
        .bypass_governance_retention(true)
        .send()
        .await
        .expect_err("bypass does not apply to COMPLIANCE");
    eprintln!("case 2 DeleteObject(versionId, bypass): {:?} {:?}", del.code(), del.message());

    let shorter = chrono::Utc::now() + chrono::Duration::days(1);
    let ret = client
        .put_object_retention()
        .bucket(&bucket)
        .key(&r.key)
        .version_id(&version)
        .retention(
            aws_sdk_s3::types::ObjectLockRetention::builder()
                .mode(ObjectLockRetentionMode::Compliance)
                .retain_until_date(DateTime::from_secs(shorter.timestamp()))
                .build(),
        )
        .send()
        .await
        .expect_err("shortening a COMPLIANCE retention must be refused");
    eprintln!("case 2 PutObjectRetention(shorter): {:?} {:?}", ret.code(), ret.message());

    let ret = client
        .put_object_retention()
        .bucket(&bucket)
        .key(&r.key)
        .version_id(&version)
        .bypass_governance_retention(true)
        .retention(
            aws_sdk_s3::types::ObjectLockRetention::builder()
                .mode(ObjectLockRetentionMode::Governance)
                .retain_until_date(DateTime::from_secs(shorter.timestamp()))
                .build(),
        )
        .send()
        .await
        .expect_err("downgrading COMPLIANCE to GOVERNANCE must be refused");
    eprintln!("case 2 PutObjectRetention(GOVERNANCE): {:?} {:?}", ret.code(), ret.message());

    // Still there, unchanged, still locked until the original date.
    let head = client
        .head_object()
        .bucket(&bucket)
        .key(&r.key)
        .version_id(&version)
        .send()
        .await
        .expect("the version is still there");
    assert_eq!(head.object_lock_mode(), Some(&ObjectLockMode::Compliance));
    let until = head.object_lock_retain_until_date().expect("date");
    assert_eq!(
        Some(until.secs()),
        r.retain_until.as_deref().and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok()).map(|d| d.timestamp())
    );
    assert_eq!(versions(&client, &bucket, &r.key).await, (vec![version], 0));
    assert_eq!(
        store.get_existing("checkpoints/2026-11-21").await.expect("lookup").map(|e| e.sha256),
        Some(sha256_hex(&bytes))
    );
}

/// Case 3: anchoring twice is idempotent (one version), and different
/// bytes under the same name are refused without adding a version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anchoring_twice_is_idempotent_and_different_bytes_are_refused() {
    let ep = endpoint();
    let client = raw_client(&ep);
    let bucket = create_bucket(&client, "idem", true).await;
    let store = S3Anchor::new(S3Config { retention_days: 1, ..config(&ep, &bucket) }).expect("config");
    let name = "packs/2026-11-22.tar";
    let bytes = pack(50_000, 3);

    let first = store.put(name, &bytes).await.expect("first put");
    let second = store.put(name, &bytes).await.expect("second put");
    assert!(!first.adopted);
    assert!(second.adopted);
    assert_eq!(second.version_id, first.version_id);
    assert_eq!(without_adopted(&second), first);

    // A second store instance (a new reporter process) adopts it as well.
    let again = S3Anchor::new(S3Config { retention_days: 1, ..config(&ep, &bucket) })
        .expect("config")
        .put(name, &bytes)
        .await
        .expect("put from a new process");
    assert_eq!(again, second);

    let mut other = bytes.clone();
    other.truncate(49_999);
    let err = store.put(name, &other).await.expect_err("different bytes must be refused");
    assert!(matches!(err, AnchorError::Conflict { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&first.location) && msg.contains(&first.sha256), "{msg}");
    eprintln!("case 3 refusal: {}", chain(&err));

    let v = first.version_id.clone().expect("version");
    assert_eq!(versions(&client, &bucket, &first.key).await, (vec![v], 0));
}

/// A listener on loopback that forwards to `upstream`, but cuts every
/// connection once `cut_after` bytes of the request stream (request line,
/// headers and body) have been forwarded. Returns its address and the
/// number of connections it cut.
async fn cutting_proxy(upstream: SocketAddr, cut_after: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cuts = Arc::new(AtomicUsize::new(0));
    let cuts2 = Arc::clone(&cuts);
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let cuts = Arc::clone(&cuts2);
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let request = async {
                    let mut forwarded = 0usize;
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let allowed = n.min(cut_after - forwarded);
                        if sw.write_all(&buf[..allowed]).await.is_err() {
                            return;
                        }
                        forwarded += allowed;
                        if forwarded == cut_after {
                            cuts.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                };
                let response = tokio::io::copy(&mut sr, &mut cw);
                // Whichever side ends first, both connections are dropped:
                // the server sees a truncated body, the client a reset.
                tokio::select! {
                    _ = request => {}
                    _ = response => {}
                }
            });
        }
    });
    (addr, cuts)
}

/// A store whose every connection to `ep` is cut after 64 KiB of the
/// request, with two SDK attempts per request (the default is 5) to keep
/// the tests short; and the count of cut connections.
async fn cut_store(ep: &str, bucket: &str) -> (S3Anchor, Arc<AtomicUsize>) {
    let (proxy, cuts) = cutting_proxy(socket_addr(ep), 64 * 1024).await;
    let store = S3Anchor::new(S3Config {
        retention_days: 1,
        sdk_max_attempts: 2,
        ..config(&format!("http://{proxy}"), bucket)
    })
    .expect("config");
    (store, cuts)
}

fn socket_addr(endpoint: &str) -> SocketAddr {
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let hostport = hostport.replace("localhost", "127.0.0.1");
    hostport.parse().expect("EVIDENT_TEST_S3_ENDPOINT must be http://<ip>:<port>")
}

/// Case 4: an upload whose connection breaks mid-body yields an error, not
/// a receipt, and leaves no version; the same put over a healthy path then
/// succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_cut_mid_body_is_an_error_and_leaves_nothing() {
    let ep = endpoint();
    let client = raw_client(&ep);
    let bucket = create_bucket(&client, "cut", true).await;
    let (proxied, cuts) = cut_store(&ep, &bucket).await;
    proxied.check().await.expect("small requests pass the proxy");

    let name = "packs/2026-11-23.tar";
    let bytes = pack(1024 * 1024, 4);
    let started = std::time::Instant::now();
    let err = proxied.put(name, &bytes).await.expect_err("a broken upload must not produce a receipt");
    eprintln!(
        "case 4 after {:?} and {} cut connections: {}",
        started.elapsed(),
        cuts.load(Ordering::Relaxed),
        chain(&err)
    );
    // Every PutObject attempt (2 in the SDK × 4 of our own) was cut.
    assert_eq!(cuts.load(Ordering::Relaxed), 8);
    let AnchorError::RetriesExhausted { attempts, last, .. } = &err else {
        panic!("expected RetriesExhausted, got {err:?}");
    };
    assert_eq!(*attempts, 4);
    match last.as_ref() {
        AnchorError::S3Put { source, .. } => {
            assert_eq!(source.kind(), S3FailureKind::Dispatch, "{source:?}");
        }
        other => panic!("expected the last cause to be S3Put, got {other:?}"),
    }
    assert!(err.to_string().contains(&format!("s3://{bucket}/evident/{name}")));

    let key = format!("evident/{name}");
    assert_eq!(versions(&client, &bucket, &key).await, (vec![], 0));
    assert_eq!(proxied.get_existing(name).await.expect("lookup"), None);

    let direct = S3Anchor::new(S3Config { retention_days: 1, ..config(&ep, &bucket) }).expect("config");
    let r = direct.put(name, &bytes).await.expect("put over a healthy path");
    assert!(!r.adopted);
    assert_eq!(r.sha256, sha256_hex(&bytes));
    assert_eq!(versions(&client, &bucket, &key).await.0.len(), 1);
}

/// `put_file` streams the file from disk (a fresh stream per attempt)
/// under the same contract as `put`: the same bytes from memory adopt its
/// version, a cut upload leaves nothing and is retried from the start of
/// the file, different bytes are refused, and a missing file is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_file_streams_from_disk_under_the_same_contract() {
    let ep = endpoint();
    let client = raw_client(&ep);
    let bucket = create_bucket(&client, "file", true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        AnchorStore::from(S3Anchor::new(S3Config { retention_days: 1, ..config(&ep, &bucket) }).expect("config"));
    // Larger than any SDK buffer, and not a round size.
    let bytes = pack(3 * 1024 * 1024 + 7, 5);
    let src = dir.path().join("2026-11-24.tar");
    std::fs::write(&src, &bytes).expect("write source");
    let name = "packs/2026-11-24.tar";

    let first = store.put_file(name, &src).await.expect("put_file");
    assert!(!first.adopted);
    assert_eq!(first.sha256, sha256_hex(&bytes));
    assert_eq!(first.size, bytes.len() as u64);
    let key = format!("evident/{name}");
    let v = first.version_id.clone().expect("version");
    let got = client.get_object().bucket(&bucket).key(&key).send().await.expect("GetObject");
    let stored = got.body.collect().await.expect("body").into_bytes();
    assert!(stored.as_ref() == bytes.as_slice(), "stored object differs from the file");
    let in_memory = store.put(name, &bytes).await.expect("same bytes from memory");
    assert!(in_memory.adopted);
    assert_eq!(without_adopted(&in_memory), first);

    // Every attempt is cut after 64 KiB; each retry reopens the file.
    let (proxied, cuts) = cut_store(&ep, &bucket).await;
    let cut_name = "packs/2026-11-25.tar";
    let err = proxied.put_file(cut_name, &src).await.expect_err("a broken upload must not produce a receipt");
    assert_eq!(cuts.load(Ordering::Relaxed), 8, "{}", chain(&err));
    assert!(matches!(err, AnchorError::RetriesExhausted { attempts: 4, .. }), "{err:?}");
    assert_eq!(versions(&client, &bucket, &format!("evident/{cut_name}")).await, (vec![], 0));

    let mut other = bytes.clone();
    other[2_000_000] ^= 1;
    std::fs::write(&src, &other).expect("rewrite source");
    let err = store.put_file(name, &src).await.expect_err("different bytes must be refused");
    assert!(matches!(err, AnchorError::Conflict { .. }), "{err:?}");
    assert_eq!(versions(&client, &bucket, &key).await, (vec![v], 0));

    let missing = dir.path().join("missing.tar");
    let err = store.put_file("packs/2026-11-26.tar", &missing).await.expect_err("no source file");
    assert!(chain(&err).contains("missing.tar"), "{}", chain(&err));
}

/// Case 5: a bucket without Object Lock is refused by check() and by put(),
/// with a message naming the bucket and COMPLIANCE mode; nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_without_object_lock_is_refused() {
    let ep = endpoint();
    let client = raw_client(&ep);
    let bucket = create_bucket(&client, "nolock", false).await;

    let store = AnchorStore::from(S3Anchor::new(config(&ep, &bucket)).expect("config"));
    let err = store.check().await.expect_err("check must refuse");
    assert!(matches!(err, AnchorError::NoObjectLock { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&bucket) && msg.contains("COMPLIANCE"), "{msg}");
    eprintln!("case 5 check: {}", chain(&err));

    // A fresh store that skipped check() refuses at put().
    let store = S3Anchor::new(config(&ep, &bucket)).expect("config");
    let err = store.put("packs/2026-11-24.tar", b"pack").await.expect_err("put must refuse");
    assert!(matches!(err, AnchorError::NoObjectLock { .. }), "{err:?}");
    assert!(err.to_string().contains(&bucket));
    eprintln!("case 5 put: {}", chain(&err));
    let listed = client.list_object_versions().bucket(&bucket).send().await.expect("list");
    assert!(listed.versions().is_empty() && listed.delete_markers().is_empty());

    // A bucket that does not exist is named as such.
    let missing = unique_bucket("missing");
    let err = S3Anchor::new(config(&ep, &missing)).expect("config").check().await.expect_err("missing bucket");
    assert!(matches!(err, AnchorError::NoSuchBucket { .. }), "{err:?}");
    assert!(err.to_string().contains(&missing));
    eprintln!("case 5 missing bucket: {}", chain(&err));
}

/// A DELETE without a version id only hides the locked version behind a
/// delete marker; anchoring the same bytes again adopts that version
/// instead of uploading a second one, and different bytes are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_marker_does_not_hide_the_anchor() {
    let ep = endpoint();
    let client = raw_client(&ep);
    let bucket = create_bucket(&client, "marker", true).await;
    let store = S3Anchor::new(S3Config { retention_days: 1, ..config(&ep, &bucket) }).expect("config");
    let name = "packs/2026-11-25.tar";
    let bytes = pack(20_000, 5);
    let first = store.put(name, &bytes).await.expect("put");

    client
        .delete_object()
        .bucket(&bucket)
        .key(&first.key)
        .send()
        .await
        .expect("a DELETE without version id adds a delete marker");
    let v = first.version_id.clone().expect("version");
    assert_eq!(versions(&client, &bucket, &first.key).await, (vec![v.clone()], 1));

    let again = store.put(name, &bytes).await.expect("re-put");
    assert!(again.adopted);
    assert_eq!(without_adopted(&again), first);
    let err = store.put(name, &pack(20_000, 6)).await.expect_err("different bytes");
    assert!(matches!(err, AnchorError::Conflict { .. }), "{err:?}");
    assert_eq!(versions(&client, &bucket, &first.key).await, (vec![v], 1));
}

/// Concurrent writers of one name with different bytes: exactly one
/// version is created and every other writer is refused, the race between
/// lookup and upload being closed by a conditional PutObject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_create_one_version() {
    let ep = endpoint();
    let client = raw_client(&ep);
    let bucket = create_bucket(&client, "race", true).await;
    let name = "packs/2026-11-26.tar";
    let mut tasks = Vec::new();
    for seed in 0..6u8 {
        let store = S3Anchor::new(S3Config { retention_days: 1, ..config(&ep, &bucket) }).expect("config");
        tasks.push(tokio::spawn(async move { store.put(name, &pack(200_000, seed)).await }));
    }
    let mut ok = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            Ok(r) => ok.push(r),
            Err(AnchorError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected error: {}", chain(&e)),
        }
    }
    assert_eq!(ok.len(), 1, "exactly one writer wins: {ok:?}");
    let key = format!("evident/{name}");
    assert_eq!(versions(&client, &bucket, &key).await, (vec![ok[0].version_id.clone().expect("version")], 0));
}

/// Bad names and bad configurations are refused before any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misuse_is_refused_up_front() {
    let ep = endpoint();
    let store = S3Anchor::new(config(&ep, "no-such-bucket-needed")).expect("config");
    for name in ["", "/a", "../a", "a//b", ".a"] {
        let err = store.put(name, b"x").await.expect_err("bad name");
        assert!(matches!(err, AnchorError::InvalidName { .. }), "{err:?}");
    }
    for bad in [
        S3Config { bucket: "Bad_Bucket".to_owned(), ..config(&ep, "x") },
        S3Config { retention_days: 0, ..config(&ep, "abc") },
        S3Config { secret_access_key: None, ..config(&ep, "abc") },
    ] {
        let err = S3Anchor::new(bad).expect_err("bad config");
        assert!(matches!(err, AnchorError::Config { .. }), "{err:?}");
    }
}
