//! The main job on embedded defaults, with no servers:
//!
//! 1. creates a ledger under `./evident-demo/` (key, OpenPGP cert, config),
//! 2. records three simulated UTC days of AI-agent activity through the
//!    library, with three deliberate violations (an execution without
//!    authorization, a reused token_jti, an approval recorded late),
//! 3. builds, signs and anchors every day's compliance pack into a local
//!    write-once directory, exactly as the nightly reporter does,
//! 4. verifies the whole chain as a regulator would, with only the ledger's
//!    public key and OpenPGP certificate,
//! 5. prints the KPIs and where `report.html` is.
//!
//! Run: `cargo run --release --example quickstart [DIR]`

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use evident_examples::demo::{self, Faults, Producers, SimClock};
use evident_ledger::config::Config;
use evident_ledger::{Ledger, keyfile, pgp};
use evident_reporter::config::ReporterConfig;
use evident_reporter::run::Reporter;
use evident_verify::manifest::Report;
use evident_verify::pack::{self, Status, Trust, TrustedKey};
use evident_verify::ts::{DAY_MICROS, Timestamp};

const ORIGIN: &str = "demo.evident/ledger";

/// What the quickstart produced.
#[derive(Debug)]
pub struct Summary {
    /// Days packed, in order.
    pub days: Vec<String>,
    /// Rule ids that failed, per day.
    pub failed: Vec<(String, Vec<String>)>,
    /// The chain verified.
    pub chain_verified: bool,
    /// The last day's report.html.
    pub report_html: PathBuf,
}

/// Runs the whole quickstart in `dir` (which is recreated).
pub fn run(dir: &Path, quiet: bool) -> Result<Summary> {
    let say = |s: String| {
        if !quiet {
            println!("{s}");
        }
    };
    if dir.exists() {
        if !dir.join("evident.toml").exists() {
            bail!("{} exists and is not an Evident demo directory; refusing to remove it", dir.display());
        }
        // WORM files are read-only; the demo directory is ours to replace.
        make_writable(dir)?;
        std::fs::remove_dir_all(dir).with_context(|| format!("removing the previous demo in {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;

    // 1. `evident init`, through the library.
    let mut cfg = Config::new(ORIGIN, dir);
    let key = keyfile::generate(ORIGIN)?;
    keyfile::write_signer_key(&cfg.resolve(&cfg.key_file), &key)?;
    let pgp = pgp::PgpSigner::from_seed(
        key.seed(),
        &format!("Evident ledger {ORIGIN}"),
        evident_ledger::pgp_creation_time(),
    )?;
    std::fs::write(cfg.resolve(&cfg.pgp_cert), pgp.cert_armored()?)?;
    std::fs::write(dir.join("evident.toml"), {
        cfg.base = PathBuf::new();
        cfg.to_toml()
    })?;
    cfg.base = dir.to_path_buf();
    say(format!("ledger {ORIGIN} created in {}", dir.display()));
    say(format!("  ledger verifier key: {}", key.verifier()));

    // 2. Three simulated UTC days, ending the day before yesterday, so that
    //    every day is closed and yesterday gets an (empty) pack too.
    let today = chrono::Utc::now().date_naive();
    let first = today - chrono::Days::new(4);
    let clock = SimClock::new(Timestamp::start_of_day(first));
    let mut opts = cfg.options()?;
    opts.clock = clock.clock();
    let ledger = Ledger::create(opts)?;
    let producers = Producers::register(&ledger)?;
    for d in 0..3u64 {
        let day = first + chrono::Days::new(d);
        let ds = day.to_string();
        clock.set(Timestamp(Timestamp::start_of_day(day).0 + 6 * 3_600_000_000));
        demo::invariants(&ledger, &clock, &producers, &ds, false)?;
        for n in 0..40u64 {
            let faults = match (d, n) {
                (0, 17) => Faults { execute_without_authorization: true, ..Faults::default() },
                (1, 23) => Faults { reuse_jti_of: Some(5), ..Faults::default() },
                (2, 31) => Faults { approval_delay_secs: Some(95.0), ..Faults::default() },
                _ => Faults::default(),
            };
            demo::agent_action(&ledger, &clock, &producers, &ds, n, faults)?;
            if n % 10 == 0 {
                demo::guardrail(&ledger, &clock, &producers, &ds, n)?;
            }
            clock.advance(600.0);
        }
        say(format!("  {ds}: recorded through the library, ledger size {}", ledger.size()?));
    }
    // From here on the ledger keeps real time.
    clock.set(Timestamp::from_datetime(chrono::Utc::now()).max(Timestamp(clock.now().0 + DAY_MICROS / 24)));

    // 3. The nightly job: build, sign and anchor every closed day.
    let packs_dir = dir.join("packs");
    let rcfg = ReporterConfig::new(dir.join("evident.toml"), &packs_dir)?;
    let worm = evident_reporter::config::default_worm_dir(&packs_dir);
    let reporter = Reporter::with_ledger(rcfg, ledger.clone())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let now = Timestamp::from_datetime(chrono::Utc::now());
    let outcomes = rt.block_on(reporter.build_missing(now))?;
    say(format!(
        "nightly job: {} packs built, signed (Ed25519 + OpenPGP) and anchored write-once in {}",
        outcomes.len(),
        worm.display()
    ));

    // 4. The regulator's check: the whole chain, from the public key alone.
    let trust = Trust {
        ledger_keys: vec![TrustedKey::always(key.verifier())],
        pgp_cert: Some(pgp.cert_armored()?.into_bytes()),
        pgp_time: std::time::SystemTime::now(),
        producer_signatures: true,
    };
    let chain = pack::verify_chain(&packs_dir, &trust, &mut |_, _, _| {});
    let chain_verified = chain.failure.is_none();
    match &chain.failure {
        None => say(format!(
            "evident-verify chain: VERIFIED {} packs (signatures, every entry's inclusion, consistency day to day, reports re-derived)",
            chain.packs.len()
        )),
        Some(f) => say(format!("evident-verify chain: INVALID: {f}")),
    }
    for p in &chain.packs {
        if let Some(c) = p.checks.iter().find(|c| c.status == Status::Failed) {
            say(format!("  {}: {}", p.path, c.detail));
        }
    }

    // 5. KPIs.
    say(String::new());
    say("KPIs (default rules from the source documents):".into());
    let mut days = Vec::new();
    let mut failed = Vec::new();
    let mut report_html = PathBuf::new();
    for o in &outcomes {
        let report: Report = Report::parse(&std::fs::read(o.pack_dir.join("report.json"))?)?;
        say(format!("  {} (seqs {}..{}):", o.day, o.start, o.end));
        for r in &report.rules {
            let pct = r.compliant_per_mille.map_or("  n/a ".to_string(), |m| format!("{:5.1}%", f64::from(m) / 10.0));
            let status = if r.passed { "PASS" } else { "FAIL" };
            let seqs = if r.offending_seqs.is_empty() {
                String::new()
            } else {
                format!("  offending seqs {:?}", r.offending_seqs)
            };
            say(format!(
                "    {status} {pct}  {:<28} {}/{} {seqs}",
                r.kpi.as_deref().unwrap_or(&r.id),
                r.applicable - r.violations,
                r.applicable
            ));
        }
        days.push(o.day.clone());
        failed.push((o.day.clone(), o.rules_failed.clone()));
        if o.start != o.end {
            report_html = o.pack_dir.join("report.html");
        }
    }
    say(String::new());
    say(format!("report for people: {}", report_html.display()));
    say("check it yourself, as a regulator would:".into());
    say(format!(
        "  cargo run --release -p evident-verify -- chain {} --key {} --pgp-cert {}",
        packs_dir.display(),
        key.verifier(),
        cfg.resolve(&cfg.pgp_cert).display()
    ));
    Ok(Summary { days, failed, chain_verified, report_html })
}

fn make_writable(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    for ent in std::fs::read_dir(dir)? {
        let p = ent?.path();
        if p.is_dir() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
            make_writable(&p)?;
        } else {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
        }
    }
    Ok(())
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let dir = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("evident-demo"));
    let s = run(&dir, false)?;
    if !s.chain_verified {
        bail!("the chain did not verify");
    }
    Ok(())
}
