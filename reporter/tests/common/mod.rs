//! Shared fixtures: a real SQLite ledger (with its `evident.toml` and key
//! file, so the real binary can open it too) whose clock is simulated, so
//! records land on chosen past UTC days; registered producers; realistic
//! record bodies from `schemas/examples`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::NaiveDate;
use evident_ledger::{Clock, Ledger, Signer, keyfile};
use evident_reporter::ReporterConfig;
use evident_verify::manifest::{Manifest, Report, files};
use evident_verify::note::SignerKey;
use evident_verify::ts::Timestamp;
use serde_json::{Value, json};

pub const ORIGIN: &str = "test.evident/reporter";

pub fn ledger_key() -> SignerKey {
    SignerKey::from_seed(ORIGIN, &[7; 32]).expect("ledger key")
}

/// The producers and what they append.
pub const APPROVALS: &str = "approval-svc";
pub const AUTHZ: &str = "authz-gw";
pub const DEPLOY: &str = "deploy-bot";
pub const CI: &str = "ci-runner";
pub const AGENT: &str = "agent-gw";
const PRODUCERS: [(&str, u8); 5] = [(APPROVALS, 11), (AUTHZ, 12), (DEPLOY, 13), (CI, 14), (AGENT, 15)];

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub ledger: Ledger,
    pub clock: Arc<AtomicI64>,
    /// The ledger's `evident.toml`.
    pub ledger_config: PathBuf,
    pub packs_dir: PathBuf,
    pub worm_dir: PathBuf,
    signers: Vec<Signer>,
}

pub fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("day")
}

/// `secs` seconds into `day`.
pub fn at(day: NaiveDate, secs: i64) -> Timestamp {
    Timestamp(Timestamp::start_of_day(day).0 + secs * 1_000_000)
}

pub fn today() -> NaiveDate {
    chrono::Utc::now().date_naive()
}

pub fn now() -> Timestamp {
    Timestamp::from_datetime(chrono::Utc::now())
}

fn rfc3339(t: Timestamp) -> String {
    t.to_string()
}

pub fn example(kind: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../schemas/examples/{kind}.valid.json"));
    let v: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(p).expect("example")).expect("json");
    // Example 0 of each kind carries raw values (no pre-made commitments).
    v[0].clone()
}

impl Fixture {
    /// A new ledger whose clock starts at `start`; the producers' keys are
    /// registered then (so the first day holds the key events).
    pub fn new(start: Timestamp) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("ledger");
        std::fs::create_dir(&base).expect("ledger dir");
        let cfg = evident_ledger::config::Config::new(ORIGIN, &base);
        keyfile::write_signer_key(&base.join("ledger.key"), &ledger_key()).expect("key file");
        let ledger_config = base.join("evident.toml");
        std::fs::write(&ledger_config, cfg.to_toml()).expect("evident.toml");
        let clock = Arc::new(AtomicI64::new(start.0));
        let mut opts = cfg.options().expect("options");
        let c = clock.clone();
        opts.clock = Clock::from_fn(move || Timestamp(c.load(Ordering::SeqCst)));
        let ledger = Ledger::create(opts).expect("create ledger");
        let mut signers = Vec::new();
        for (name, seed) in PRODUCERS {
            let key = SignerKey::from_seed(name, &[seed; 32]).expect("producer key");
            ledger.add_key(name, &key.verifier(), Some("2020-01-01T00:00:00Z")).expect("register key");
            signers.push(Signer::new(key).expect("signer"));
        }
        let packs_dir = dir.path().join("packs");
        let worm_dir = dir.path().join("worm");
        Fixture { dir, ledger, clock, ledger_config, packs_dir, worm_dir, signers }
    }

    pub fn set_time(&self, t: Timestamp) {
        self.clock.store(t.0, Ordering::SeqCst);
    }

    pub fn time(&self) -> Timestamp {
        Timestamp(self.clock.load(Ordering::SeqCst))
    }

    fn signer(&self, producer: &str) -> &Signer {
        self.signers.iter().find(|s| s.producer() == producer).expect("known producer")
    }

    /// Appends a signed record at time `t` and returns its seq.
    pub fn append_at(&self, t: Timestamp, producer: &str, id: &str, kind: &str, body: Value) -> u64 {
        self.set_time(t);
        let sub = self.signer(producer).sign(id, kind, &rfc3339(t), body).expect("sign");
        let r = self.ledger.append(sub).unwrap_or_else(|e| panic!("append {kind} {id}: {e:?}"));
        assert_eq!(r.ts, t.to_string(), "the simulated clock sets ts");
        r.seq
    }

    /// Appends signed records `(id, body)` of one kind in one batch at time
    /// `t`; returns their seqs.
    pub fn append_many_at(&self, t: Timestamp, producer: &str, kind: &str, items: Vec<(String, Value)>) -> Vec<u64> {
        self.set_time(t);
        let signer = self.signer(producer);
        let subs =
            items.into_iter().map(|(id, body)| signer.sign(&id, kind, &rfc3339(t), body).expect("sign")).collect();
        self.ledger
            .append_batch(subs)
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("append {kind}: {e:?}")).seq)
            .collect()
    }

    /// Appends a tool call with the clock at `t` (the ledger may place it
    /// later, for example after a sealed day) and returns its seq.
    pub fn append_at_any(&self, t: Timestamp) -> u64 {
        self.set_time(t);
        let id = format!("late-{}", t.0);
        let sub = self.signer(AGENT).sign(&id, "tool_call", &rfc3339(t), example("tool_call")).expect("sign");
        self.ledger.append(sub).expect("append").seq
    }

    /// The reporter configuration: default rules, fs anchor in `worm/`.
    pub fn config(&self) -> ReporterConfig {
        let mut c = ReporterConfig::new(&self.ledger_config, &self.packs_dir).expect("config");
        c.anchor = evident_reporter::AnchorConfig::Fs { dir: self.worm_dir.clone() };
        c
    }

    pub fn reporter(&self, cfg: ReporterConfig) -> evident_reporter::Reporter {
        evident_reporter::Reporter::with_ledger(cfg, self.ledger.clone()).expect("reporter")
    }

    /// Writes a reporter TOML for the binary and returns its path.
    pub fn write_reporter_toml(&self, extra: &str) -> PathBuf {
        let p = self.dir.path().join("reporter.toml");
        let text = format!(
            "ledger = {:?}\npacks_dir = {:?}\ngrace_seconds = 0\n{extra}\n[anchor]\nkind = \"fs\"\ndir = {:?}\n",
            self.ledger_config, self.packs_dir, self.worm_dir
        );
        std::fs::write(&p, text).expect("reporter.toml");
        p
    }
}

/// Seqs of one normal approval → authorization → execution flow.
#[derive(Debug, Clone)]
pub struct Flow {
    pub approval: u64,
    pub authorization: u64,
    pub started: u64,
    pub completed: u64,
    pub invariant: u64,
    pub attestation: u64,
}

pub fn approval_body(id: &str, approved_at: Timestamp) -> Value {
    let mut b = example("approval");
    b["approval_id"] = json!(id);
    b["requested_at"] = json!(Timestamp(approved_at.0 - 15_000_000).to_string());
    b["approved_at"] = json!(approved_at.to_string());
    b
}

pub fn authorization_body(authz: &str, jti: &str, verdict: &str, scope: &str) -> Value {
    let mut b = example("authorization");
    b["authorization_id"] = json!(authz);
    b["token_jti"] = json!(jti);
    b["verdict"] = json!(verdict);
    b["action_scope"] = json!(scope);
    if verdict == "deny" {
        b["denial_code"] = json!("TOKEN_REPLAY");
    }
    b
}

pub fn execution_body(exec: &str, authz: &str, phase: &str, scope: &str) -> Value {
    let mut b = example("execution");
    b["execution_id"] = json!(exec);
    b["authorization_id"] = json!(authz);
    b["phase"] = json!(phase);
    b["action_scope"] = json!(scope);
    b
}

pub fn invariant_body(run: &str, severity: &str, status: &str) -> Value {
    let mut b = example("invariant_result");
    b["run_id"] = json!(run);
    b["severity"] = json!(severity);
    b["status"] = json!(status);
    b
}

pub fn attestation_body(approval_id: Option<&str>, approved_at: Timestamp) -> Value {
    let mut b = example("ai_attestation");
    b["approved_at"] = json!(approved_at.to_string());
    if let Some(a) = approval_id {
        b["approval_id"] = json!(a);
    }
    b
}

pub fn hold_body(hold: &str, state: &str, scope: &str) -> Value {
    let mut b = example("hold");
    b["hold_id"] = json!(hold);
    b["state"] = json!(state);
    b["scope"] = json!(scope);
    b["reason"] = json!(format!("change freeze {hold}"));
    b["set_by"] = json!("oncall@symphony.zm");
    b
}

pub const PROD: &str = "promotion:prod/payments-api";

/// One compliant flow starting `secs` into `day`, tagged `tag`: approval,
/// authorization, execution started and completed, a passing P0 invariant,
/// a complete attestation, a tool call and a guardrail event.
pub fn flow(fx: &Fixture, d: NaiveDate, secs: i64, tag: &str) -> Flow {
    let t = |s: i64| at(d, secs + s);
    let appr = format!("appr-{tag}");
    let authz = format!("authz-{tag}");
    let exec = format!("exec-{tag}");
    let approval = fx.append_at(t(5), APPROVALS, &appr, "approval", approval_body(&appr, t(0)));
    let authorization = fx.append_at(
        t(6),
        AUTHZ,
        &authz,
        "authorization",
        authorization_body(&authz, &format!("jti-{tag}"), "allow", PROD),
    );
    let started =
        fx.append_at(t(7), DEPLOY, &format!("{exec}-s"), "execution", execution_body(&exec, &authz, "started", PROD));
    let completed = fx.append_at(
        t(40),
        DEPLOY,
        &format!("{exec}-c"),
        "execution",
        execution_body(&exec, &authz, "completed", PROD),
    );
    let invariant = fx.append_at(
        t(50),
        CI,
        &format!("inv-{tag}"),
        "invariant_result",
        invariant_body(&format!("ci-{tag}"), "P0", "pass"),
    );
    let attestation =
        fx.append_at(t(55), AGENT, &format!("att-{tag}"), "ai_attestation", attestation_body(Some(&appr), t(0)));
    let mut tool = example("tool_call");
    tool["task_id"] = json!(format!("task-{tag}"));
    fx.append_at(t(56), AGENT, &format!("tool-{tag}"), "tool_call", tool);
    let mut guard = example("guardrail_event");
    guard["task_id"] = json!(format!("task-{tag}"));
    fx.append_at(t(57), AGENT, &format!("guard-{tag}"), "guardrail_event", guard);
    Flow { approval, authorization, started, completed, invariant, attestation }
}

/// A realistic day: a staging hold opened and closed, and `n` compliant
/// production flows, one per hour from 01:00.
pub fn busy_day(fx: &Fixture, d: NaiveDate, n: usize) -> Vec<Flow> {
    let hold = format!("hold-{d}-staging");
    fx.append_at(
        at(d, 1800),
        DEPLOY,
        &format!("{hold}-start"),
        "hold",
        hold_body(&hold, "start", "promotion:staging/*"),
    );
    let flows = (0..n).map(|i| flow(fx, d, 3600 * (i as i64 + 1), &format!("{d}-{i}"))).collect();
    fx.append_at(
        at(d, 3600 * 20),
        DEPLOY,
        &format!("{hold}-end"),
        "hold",
        hold_body(&hold, "end", "promotion:staging/*"),
    );
    flows
}

pub fn read_manifest(pack_dir: &Path) -> (Vec<u8>, Manifest) {
    let bytes = std::fs::read(pack_dir.join(files::MANIFEST)).expect("manifest.json");
    let m = Manifest::parse(&bytes).expect("manifest parses");
    (bytes, m)
}

pub fn read_report(pack_dir: &Path) -> Report {
    Report::parse(&std::fs::read(pack_dir.join(files::REPORT_JSON)).expect("report.json")).expect("report parses")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Every `anchor_receipt` entry of the ledger: (seq, body).
pub fn anchor_receipts(ledger: &Ledger) -> Vec<(u64, Value)> {
    let mut out = Vec::new();
    let n = ledger.size().expect("size");
    ledger
        .for_each_leaf(0, n, |seq, _, leaf| {
            let e = evident_verify::leaf::Entry::parse_leaf(leaf).expect("leaf");
            if e.rec.kind == "anchor_receipt" {
                out.push((seq, e.rec.body));
            }
            Ok(())
        })
        .expect("scan");
    out
}

/// Checks a pack the way a verifier would, and returns its manifest and
/// its leaves: file digests, the Ed25519 manifest signature, the signed
/// checkpoint, the compact range of `[0, start)` extended by the day's
/// leaves hashing to the checkpoint root, the link to the previous pack (if
/// its directory is given), and the tar holding exactly the files in order
/// with deterministic headers.
pub fn check_pack(pack_dir: &Path, tar: &Path, previous: Option<&Path>) -> (Manifest, Vec<Vec<u8>>) {
    use std::io::{BufRead, Read};

    use base64::Engine as _;
    use evident_verify::hash::leaf_hash;

    let vk = ledger_key().verifier();
    let (bytes, m) = read_manifest(pack_dir);
    assert_eq!(m.origin, ORIGIN);
    assert_eq!(m.ledger_key, vk.to_string());
    assert!(m.generator.starts_with("evident-reporter "), "{}", m.generator);
    for (name, info) in &m.files {
        let b = std::fs::read(pack_dir.join(name)).expect("listed file");
        assert_eq!(info.sha256, sha256_hex(&b), "{name} digest");
        assert_eq!(info.size, b.len() as u64, "{name} size");
    }
    assert_eq!(m.rules_sha256, m.files[files::RULES].sha256);
    let sig = std::fs::read_to_string(pack_dir.join(files::MANIFEST_SIG)).expect("sig");
    assert!(!sig.ends_with('\n'), "manifest.json.sig has no newline");
    let raw = base64::engine::general_purpose::STANDARD.decode(&sig).expect("base64");
    assert!(vk.verify(&bytes, &raw), "manifest.json.sig verifies with the ledger key");
    let asc = std::fs::read_to_string(pack_dir.join(files::MANIFEST_ASC)).expect("asc");
    assert!(asc.starts_with("-----BEGIN PGP SIGNATURE-----"));

    let cp_text = std::fs::read(pack_dir.join(files::CHECKPOINT)).expect("checkpoint");
    let cp = evident_verify::checkpoint::open(&cp_text, &[vk], Some(ORIGIN)).expect("checkpoint verifies");
    assert_eq!(cp.checkpoint.size, m.end);

    let report = read_report(pack_dir);
    assert_eq!((report.day.as_str(), report.start, report.end), (m.day.as_str(), m.start, m.end));
    assert_eq!(report.counts, m.counts);
    assert_eq!(report.rules_sha256, m.rules_sha256);
    assert_eq!(report.history_from, 0);

    let mut range = m.compact_range().expect("compact range");
    assert_eq!(range.size(), m.start);
    let f = std::fs::File::open(pack_dir.join(files::ENTRIES)).expect("entries");
    let mut leaves = Vec::new();
    for line in std::io::BufReader::new(zstd::stream::read::Decoder::new(f).expect("zstd")).split(b'\n') {
        let line = line.expect("line");
        let e = evident_verify::leaf::Entry::parse_leaf(&line).expect("canonical leaf");
        assert_eq!(e.seq, m.start + leaves.len() as u64);
        assert_eq!(e.timestamp().expect("ts").day().map(|d| d.to_string()).as_deref(), Some(m.day.as_str()));
        range.append(leaf_hash(&line));
        leaves.push(line);
    }
    assert_eq!(leaves.len() as u64, m.end - m.start);
    assert_eq!(m.counts.by_kind.values().sum::<u64>(), m.end - m.start);
    assert_eq!(range.root(), cp.checkpoint.root, "compact range + day's leaves = checkpoint root");

    match previous {
        None => assert!(m.previous.is_none() && m.start == 0, "first pack has no previous"),
        Some(prev_dir) => {
            let p = m.previous.as_ref().expect("previous link");
            let (prev_bytes, prev) = read_manifest(prev_dir);
            assert_eq!(p.day, prev.day);
            assert_eq!(p.manifest_sha256, sha256_hex(&prev_bytes));
            assert_eq!(p.checkpoint.as_bytes(), std::fs::read(prev_dir.join(files::CHECKPOINT)).expect("cp"));
            assert_eq!(prev.end, m.start);
            let prev_cp =
                evident_verify::checkpoint::open(p.checkpoint.as_bytes(), &[ledger_key().verifier()], Some(ORIGIN))
                    .expect("previous checkpoint verifies");
            assert_eq!(m.compact_range().expect("range").root(), prev_cp.checkpoint.root);
        }
    }

    let mut ar = tar::Archive::new(std::fs::File::open(tar).expect("tar"));
    let mut names = Vec::new();
    for ent in ar.entries().expect("entries") {
        let mut ent = ent.expect("entry");
        let h = ent.header().clone();
        let name = ent.path().expect("path").to_string_lossy().into_owned();
        assert_eq!(h.mode().expect("mode"), 0o644, "{name}");
        assert_eq!(h.mtime().expect("mtime"), 0, "{name}");
        assert_eq!((h.uid().expect("uid"), h.gid().expect("gid")), (0, 0), "{name}");
        assert!(h.as_ustar().is_some(), "{name} has a ustar header");
        assert_eq!(h.username().expect("user"), Some(""), "{name}");
        let mut content = Vec::new();
        ent.read_to_end(&mut content).expect("read");
        assert_eq!(content, std::fs::read(pack_dir.join(&name)).expect("file"), "{name} in the tar");
        names.push(name);
    }
    assert_eq!(names, files::ORDER.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    (m, leaves)
}

/// Runs the regulator's verifier (`evident_verify::pack::verify_chain`)
/// over every pack in `packs_dir`, as directories and again as tars,
/// trusting only the ledger key and its OpenPGP certificate; panics with
/// the first failure.
pub fn verify_chain_with_verifier(packs_dir: &Path) -> usize {
    use evident_verify::pack::{Trust, TrustedKey, verify_chain};

    let key = ledger_key();
    let pgp = evident_ledger::pgp::PgpSigner::from_seed(
        key.seed(),
        &format!("Evident ledger {ORIGIN}"),
        evident_ledger::pgp_creation_time(),
    )
    .expect("pgp");
    let trust = Trust {
        ledger_keys: vec![TrustedKey::always(key.verifier())],
        pgp_cert: Some(pgp.cert_armored().expect("cert").into_bytes()),
        pgp_time: std::time::SystemTime::now(),
        producer_signatures: true,
    };
    let dirs = verify_chain(packs_dir, &trust, &mut |_, _, _| {});
    assert!(dirs.failure.is_none(), "the verifier refuses the pack directories: {:?}", dirs.failure);
    let tars = tempfile::tempdir().expect("tempdir");
    for ent in std::fs::read_dir(packs_dir).expect("packs dir") {
        let p = ent.expect("entry").path();
        if p.extension().is_some_and(|e| e == "tar") {
            std::fs::copy(&p, tars.path().join(p.file_name().expect("name"))).expect("copy tar");
        }
    }
    let tar_result = verify_chain(tars.path(), &trust, &mut |_, _, _| {});
    assert!(tar_result.failure.is_none(), "the verifier refuses the tars: {:?}", tar_result.failure);
    assert_eq!(tar_result.packs.len(), dirs.packs.len());
    dirs.packs.len()
}
