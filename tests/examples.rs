//! Every example runs in the test suite.

#[path = "../examples/service_append.rs"]
mod service_append;

#[path = "../examples/ai_approval_flow.rs"]
mod ai_approval_flow;

#[test]
fn service_append_runs_and_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n1 = service_append::run(dir.path()).expect("first run");
    let n2 = service_append::run(dir.path()).expect("second run: retries are safe");
    assert_eq!(n1, n2, "running the service again adds nothing");
    assert_eq!(n1, 4, "one key event and three records");
    assert!(dir.path().join("receipt.json").exists());
}

#[test]
fn ai_approval_flow_links_every_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kinds = ai_approval_flow::run(dir.path()).expect("flow");
    assert_eq!(kinds, ["tool_call", "approval", "authorization", "execution", "execution", "ai_attestation"]);
}

#[path = "../examples/quickstart.rs"]
mod quickstart;

fn verifier_bin() -> std::path::PathBuf {
    // `cargo test --workspace` builds it (the verifier has integration tests).
    let bin = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("debug/evident-verify");
    assert!(bin.exists(), "{} missing: run the whole suite (scripts/test)", bin.display());
    bin
}

#[test]
fn quickstart_finds_exactly_the_seeded_violations_and_the_regulator_script_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = dir.path().join("evident-demo");
    let s = quickstart::run(&demo, true).expect("quickstart");
    assert!(s.chain_verified);
    assert_eq!(s.days.len(), 4, "three populated days and yesterday's empty one");
    let failed: Vec<Vec<String>> = s.failed.iter().map(|(_, f)| f.clone()).collect();
    assert_eq!(failed, [vec!["audit-linkage"], vec!["replay-blocked"], vec!["approval-within-30s"], vec![]]);
    assert!(s.report_html.exists());
    let html = std::fs::read_to_string(&s.report_html).expect("html");
    assert!(html.contains("Approval recorded within 30 s"));
    // Running it again starts over cleanly.
    quickstart::run(&demo, true).expect("second run");

    // The regulator's walkthrough, with only evident-verify and gpg.
    let toml = std::fs::read_to_string(demo.join("evident.toml")).expect("config");
    let cfg: evident_ledger::config::Config = {
        let _ = toml;
        evident_ledger::config::Config::load(&demo.join("evident.toml")).expect("load")
    };
    let key = cfg.ledger_key().expect("key").verifier().to_string();
    let out = std::process::Command::new("bash")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/regulator/verify.sh"))
        .arg(demo.join("packs"))
        .arg(&key)
        .arg(demo.join("ledger-cert.asc"))
        .env("EVIDENT_VERIFY", verifier_bin())
        .output()
        .expect("run verify.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.matches("Good signature").count(), 4, "{stdout}");
    assert!(stdout.contains("VERIFIED chain of 4 packs"), "{stdout}");
}

#[test]
fn nightly_reporter_config_is_valid() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nightly/reporter.toml");
    let cfg = evident_reporter::config::ReporterConfig::load(Some(&p)).expect("examples/nightly/reporter.toml loads");
    assert_eq!(cfg.schedule, "0 5 0 * * *");
    assert!(cfg.anchor.describe().contains("acme-evident-worm"), "{}", cfg.anchor.describe());
    let timer = std::fs::read_to_string(p.with_file_name("evident-reporter.timer")).expect("timer");
    assert!(timer.contains("OnCalendar=*-*-* 00:05:00 UTC"));
    let cron = std::fs::read_to_string(p.with_file_name("crontab")).expect("crontab");
    assert!(cron.contains("build --missing"));
}
