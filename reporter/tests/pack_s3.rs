//! Packs anchored in S3 with Object Lock, against LocalStack on loopback
//! (started by `scripts/test`, which exports `EVIDENT_TEST_S3_ENDPOINT`;
//! without it these tests fail, they never skip): the receipts in the
//! ledger carry the version id and COMPLIANCE, HeadObject shows the lock
//! and its date, and a bucket without Object Lock is refused before
//! anything is built or recorded.

mod common;

use std::process::Command;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::types::ObjectLockMode;
use common::*;
use evident_reporter::anchor::S3Config;
use evident_reporter::{AnchorConfig, ReportError};

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

async fn create_bucket(client: &Client, tag: &str, object_lock: bool) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos()
        % 1_000_000_000_000;
    let bucket = format!("evident-rep-{tag}-{}-{nanos}", std::process::id());
    client
        .create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(object_lock)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateBucket {bucket}: {e:?}"));
    bucket
}

fn s3_config(endpoint: &str, bucket: &str) -> S3Config {
    S3Config {
        endpoint: Some(endpoint.to_owned()),
        prefix: "evident/".to_owned(),
        access_key_id: Some("test".to_owned()),
        secret_access_key: Some("test".to_owned()),
        force_path_style: true,
        ..S3Config::new(REGION, bucket)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packs_are_anchored_in_compliance_mode_with_receipts_in_the_ledger() {
    let ep = endpoint();
    let client = raw_client(&ep);
    let bucket = create_bucket(&client, "lock", true).await;

    let (d1, d2) = (day("2026-07-01"), day("2026-07-02"));
    let fx = Fixture::new(at(d1, 60));
    busy_day(&fx, d1, 2);
    busy_day(&fx, d2, 1);
    let now = at(d2, 86_400 + 600);
    fx.set_time(now);
    let mut cfg = fx.config();
    cfg.anchor = AnchorConfig::S3(s3_config(&ep, &bucket));
    let reporter = fx.reporter(cfg);

    let before = chrono::Utc::now();
    let done = reporter.build_missing(now).await.expect("build and anchor");
    assert_eq!(done.len(), 2);
    check_pack(&done[1].pack_dir, &done[1].tar, Some(&done[0].pack_dir));

    let receipts = anchor_receipts(&fx.ledger);
    assert_eq!(receipts.len(), 4);
    for d in &done {
        for a in &d.anchors {
            assert_eq!(a.backend, "s3");
            let (_, body) = receipts.iter().find(|(s, _)| *s == a.seq).expect("receipt entry");
            let name = if a.artifact == "pack" {
                format!("packs/{}.tar", d.day)
            } else {
                format!("checkpoints/{}.checkpoint", d.day)
            };
            let key = format!("evident/{name}");
            assert_eq!(body["backend"], "s3");
            assert_eq!(body["bucket"], bucket.as_str());
            assert_eq!(body["key"], key.as_str());
            assert_eq!(body["location"], format!("s3://{bucket}/{key}"));
            assert_eq!(body["object_lock_mode"], "COMPLIANCE");
            assert_eq!(body["day"], d.day.as_str());
            assert_eq!(body["manifest_sha256"], d.manifest_sha256.as_str());
            let version = body["version_id"].as_str().expect("version_id in the receipt");
            assert_eq!(a.version_id.as_deref(), Some(version));
            let retain = body["retain_until"].as_str().expect("retain_until");

            // What the store shows for that exact version.
            let head =
                client.head_object().bucket(&bucket).key(&key).version_id(version).send().await.expect("HeadObject");
            assert_eq!(head.object_lock_mode(), Some(&ObjectLockMode::Compliance));
            let until = head.object_lock_retain_until_date().expect("retain-until");
            let until = chrono::DateTime::from_timestamp(until.secs(), 0).expect("date");
            let expected = before + chrono::Duration::days(2557);
            assert!(
                until >= expected - chrono::Duration::seconds(5) && until <= expected + chrono::Duration::hours(1),
                "retain-until {until} is now + 2557 days ({expected})"
            );
            assert_eq!(until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), retain);
            let local = if a.artifact == "pack" { d.tar.clone() } else { d.pack_dir.join("checkpoint") };
            let bytes = std::fs::read(local).expect("local artifact");
            assert_eq!(head.content_length(), Some(bytes.len() as i64));
            let got =
                client.get_object().bucket(&bucket).key(&key).version_id(version).send().await.expect("GetObject");
            assert_eq!(got.body.collect().await.expect("body").into_bytes().as_ref(), bytes.as_slice());
            assert_eq!(body["sha256"], sha256_hex(&bytes).as_str());
        }
    }

    // A rerun anchors and records nothing new.
    let size = fx.ledger.size().expect("size");
    assert!(reporter.build_missing(now).await.expect("rerun").is_empty());
    assert_eq!(fx.ledger.size().expect("size"), size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_without_object_lock_is_refused_at_start() {
    let ep = endpoint();
    let client = raw_client(&ep);
    let bucket = create_bucket(&client, "nolock", false).await;

    let d = day("2026-07-10");
    let fx = Fixture::new(at(d, 60));
    busy_day(&fx, d, 1);
    let now = at(d, 86_400 + 600);
    fx.set_time(now);
    let mut cfg = fx.config();
    cfg.anchor = AnchorConfig::S3(s3_config(&ep, &bucket));
    let reporter = fx.reporter(cfg);
    let size = fx.ledger.size().expect("size");

    match reporter.build_missing(now).await {
        Err(e @ ReportError::AnchorCheck { .. }) => {
            let msg = evident_reporter::run::chain(&e);
            assert!(msg.contains(&bucket) && msg.contains("does not have Object Lock enabled"), "{msg}");
        }
        other => panic!("expected the store to be refused, got {other:?}"),
    }
    assert!(anchor_receipts(&fx.ledger).is_empty(), "no anchor_receipt is appended");
    assert_eq!(fx.ledger.size().expect("size"), size);
    assert!(evident_reporter::pack::pack_days(&fx.packs_dir).expect("days").is_empty(), "nothing is built");

    // The binary says so and exits 2, for `build` and for `daemon`.
    let toml = fx.dir.path().join("s3.toml");
    std::fs::write(
        &toml,
        format!(
            "ledger = {:?}\npacks_dir = {:?}\n[anchor]\nkind = \"s3\"\nendpoint = {ep:?}\nbucket = {bucket:?}\n\
             path_style = true\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\n",
            fx.ledger_config, fx.packs_dir
        ),
    )
    .expect("toml");
    for args in [&["build", "--missing"][..], &["daemon"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_evident-reporter"))
            .arg("--config")
            .arg(&toml)
            .args(args)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("Object Lock") && stderr.contains(&bucket), "{args:?}: {stderr}");
    }
    assert!(anchor_receipts(&fx.ledger).is_empty());
}
