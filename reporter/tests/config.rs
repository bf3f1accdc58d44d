//! The reporter configuration: TOML parsing and defaults, environment
//! overrides, refusals before any work, and agreement with
//! `schemas/reporter.config.schema.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use evident_reporter::config::{DEFAULT_RULES, DEFAULT_SCHEDULE};
use evident_reporter::{AnchorConfig, ReportError, ReporterConfig};
use serde_json::Value;

const FULL_S3: &str = r#"
ledger = "ledger/evident.toml"
packs_dir = "/var/lib/evident/packs"
grace_seconds = 120
schedule = "0 15 1 * * *"
lock_wait_seconds = 5

[anchor]
kind = "s3"
endpoint = "http://127.0.0.1:4566"
region = "eu-west-1"
bucket = "acme-evident-worm"
prefix = "evident/"
retention_days = 3650
path_style = true
access_key_id = "AKIDEXAMPLE"
secret_access_key = "secret"
"#;

const MINIMAL: &str = "ledger = \"/etc/evident/evident.toml\"\npacks_dir = \"packs\"\n";

fn parse_env(text: &str, env: &[(&str, &str)]) -> Result<ReporterConfig, ReportError> {
    let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    ReporterConfig::parse(text, Some(Path::new("/etc/evident/reporter.toml")), Path::new("/etc/evident"), &|k| {
        env.get(k).cloned()
    })
}

fn parse(text: &str) -> Result<ReporterConfig, ReportError> {
    parse_env(text, &[])
}

fn err(text: &str, env: &[(&str, &str)]) -> String {
    match parse_env(text, env) {
        Ok(c) => panic!("accepted {text:?}: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn full_s3_config_and_relative_paths() {
    let c = parse(FULL_S3).expect("parses");
    assert_eq!(c.ledger, PathBuf::from("/etc/evident/ledger/evident.toml"), "relative to the file");
    assert_eq!(c.packs_dir, PathBuf::from("/var/lib/evident/packs"));
    assert_eq!(c.grace, Duration::from_secs(120));
    assert_eq!(c.schedule, "0 15 1 * * *");
    assert_eq!(c.lock_wait, Duration::from_secs(5));
    let AnchorConfig::S3(s3) = &c.anchor else { panic!("s3 anchor") };
    assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:4566"));
    assert_eq!(
        (s3.region.as_str(), s3.bucket.as_str(), s3.prefix.as_str()),
        ("eu-west-1", "acme-evident-worm", "evident/")
    );
    assert_eq!(s3.retention_days, 3650);
    assert!(s3.force_path_style);
    assert_eq!(s3.access_key_id.as_deref(), Some("AKIDEXAMPLE"));
    assert_eq!(c.anchor.describe(), "s3://acme-evident-worm/evident/ at http://127.0.0.1:4566");
    assert!(!format!("{c:?}").contains("\"secret\""), "the secret key is not printed");
}

#[test]
fn defaults() {
    let c = parse(MINIMAL).expect("parses");
    assert_eq!(c.packs_dir, PathBuf::from("/etc/evident/packs"));
    assert_eq!(c.anchor, AnchorConfig::Fs { dir: PathBuf::from("/etc/evident/worm") }, "<packs_dir>/../worm");
    assert_eq!(c.grace, Duration::from_secs(300));
    assert_eq!(c.schedule, DEFAULT_SCHEDULE);
    assert_eq!(c.rules.bytes, DEFAULT_RULES);
    assert!(c.rules.path.is_none());

    let s3 = parse(&format!(
        "{MINIMAL}[anchor]\nkind = \"s3\"\nbucket = \"b-1\"\naccess_key_id = \"a\"\nsecret_access_key = \"s\"\n"
    ))
    .expect("parses");
    let AnchorConfig::S3(s3) = s3.anchor else { panic!("s3") };
    assert_eq!(
        (s3.region.as_str(), s3.retention_days, s3.prefix.as_str(), s3.force_path_style),
        ("us-east-1", 2557, "", false)
    );
    assert_eq!(s3.endpoint, None);
}

#[test]
fn environment_overrides_the_file() {
    let c = parse_env(
        FULL_S3,
        &[
            ("EVIDENT_REPORTER_LEDGER", "/srv/ledger/evident.toml"),
            ("EVIDENT_REPORTER_PACKS_DIR", "/srv/packs"),
            ("EVIDENT_S3_ENDPOINT", "https://s3.example.net"),
            ("EVIDENT_S3_BUCKET", "other-bucket"),
            ("AWS_ACCESS_KEY_ID", "env-id"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
        ],
    )
    .expect("parses");
    assert_eq!(c.ledger, PathBuf::from("/srv/ledger/evident.toml"));
    assert_eq!(c.packs_dir, PathBuf::from("/srv/packs"));
    let AnchorConfig::S3(s3) = &c.anchor else { panic!("s3") };
    assert_eq!(s3.endpoint.as_deref(), Some("https://s3.example.net"));
    assert_eq!(s3.bucket, "other-bucket");
    assert_eq!(
        (s3.access_key_id.as_deref(), s3.secret_access_key.as_deref()),
        (None, None),
        "the client reads the environment"
    );

    // The environment alone can configure a reporter; empty values are unset.
    let c =
        parse_env("", &[("EVIDENT_REPORTER_LEDGER", "l.toml"), ("EVIDENT_REPORTER_PACKS_DIR", "p")]).expect("env only");
    assert_eq!(c.ledger, PathBuf::from("/etc/evident/l.toml"));
    assert!(
        err("", &[("EVIDENT_REPORTER_LEDGER", ""), ("EVIDENT_REPORTER_PACKS_DIR", "p")])
            .contains("EVIDENT_REPORTER_LEDGER")
    );
}

#[test]
fn refusals_before_any_work() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("packs_dir = \"p\"", &[], "`ledger`"),
        ("ledger = \"l\"", &[], "`packs_dir`"),
        (&format!("{MINIMAL}grace = 3\n"), &[], "unknown field `grace`"),
        (&format!("{MINIMAL}schedule = \"5 0 * * *\"\n"), &[], "6 fields"),
        (&format!("{MINIMAL}schedule = \"0 61 0 * * *\"\n"), &[], "not a valid cron"),
        (&format!("{MINIMAL}grace_seconds = -1\n"), &[], "grace_seconds"),
        (&format!("{MINIMAL}[anchor]\nkind = \"s3\"\n"), &[], "anchor.bucket is required"),
        (&format!("{MINIMAL}[anchor]\nkind = \"s3\"\nbucket = \"Bad_Bucket\"\n"), &[], "bucket name"),
        (&format!("{MINIMAL}[anchor]\nkind = \"s3\"\nbucket = \"b-1\"\nretention_days = 0\n"), &[], "retention_days"),
        (&format!("{MINIMAL}[anchor]\nkind = \"s3\"\nbucket = \"b-1\"\naccess_key_id = \"a\"\n"), &[], "go together"),
        (
            &format!("{MINIMAL}[anchor]\nkind = \"s3\"\nbucket = \"b-1\"\nendpoint = \"localhost:9000\"\n"),
            &[],
            "http://",
        ),
        (&format!("{MINIMAL}[anchor]\nkind = \"ftp\"\n"), &[], "unknown variant `ftp`"),
        (&format!("{MINIMAL}[anchor]\nkind = \"fs\"\nbucket = \"x\"\n"), &[], "unknown field `bucket`"),
        (MINIMAL, &[("EVIDENT_S3_BUCKET", "b-1")], "anchor is kind = \"fs\""),
        (&format!("{MINIMAL}rules = \"/nonexistent/rules.json\"\n"), &[], "cannot read the rules file"),
    ];
    for (text, env, want) in cases {
        let e = err(text, env);
        assert!(e.contains(want), "{text:?}: {e:?} should mention {want:?}");
        assert!(e.contains("/etc/evident/reporter.toml"), "{e:?} names the file");
    }

    // A rules file that does not parse is named with its rule.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("rules.json");
    std::fs::write(
        &bad,
        br#"{"format":"evident-rules/1","rules":[{"id":"x","title":"t","type":"sometimes","kind":"approval"}]}"#,
    )
    .expect("write");
    let e = err(&format!("{MINIMAL}rules = {bad:?}\n"), &[]);
    assert!(e.contains("rules.json") && e.contains("sometimes"), "{e}");
}

fn schema() -> jsonschema::Validator {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/reporter.config.schema.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).expect("schema")).expect("json");
    jsonschema::draft202012::new(&v).expect("valid schema")
}

fn as_json(toml_text: &str) -> Value {
    toml::from_str(toml_text).expect("toml")
}

#[test]
fn the_schema_agrees_with_the_parser() {
    let s = schema();
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("r.json");
    std::fs::write(&rules, DEFAULT_RULES).expect("rules");
    let accepted = [
        FULL_S3.to_string(),
        MINIMAL.to_string(),
        format!("{MINIMAL}[anchor]\nkind = \"fs\"\ndir = \"worm\"\n"),
        format!("{MINIMAL}rules = {rules:?}\ngrace_seconds = 0\nschedule = \"*/2 * * * * *\"\n"),
    ];
    for t in &accepted {
        assert!(s.is_valid(&as_json(t)), "schema refuses {t}");
        parse(t).expect("parser accepts");
    }
    let refused = [
        format!("{MINIMAL}grace = 3\n"),
        format!("{MINIMAL}schedule = \"5 0 * * *\"\n"),
        format!("{MINIMAL}[anchor]\nkind = \"ftp\"\n"),
        format!("{MINIMAL}[anchor]\nkind = \"fs\"\nbucket = \"x\"\n"),
        format!("{MINIMAL}[anchor]\nkind = \"s3\"\nbucket = \"b-1\"\nretention_days = 0\n"),
        format!("{MINIMAL}[anchor]\nkind = \"s3\"\nbucket = \"b-1\"\naccess_key_id = \"a\"\n"),
        format!("{MINIMAL}[anchor]\nkind = \"s3\"\nbucket = \"Bad_Bucket\"\n"),
    ];
    for t in &refused {
        assert!(!s.is_valid(&as_json(t)), "schema accepts {t}");
        assert!(parse(t).is_err(), "parser accepts {t}");
    }
}
