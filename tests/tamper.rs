//! The tamper matrix: a generated multi-day chain of real packs, attacked
//! in every way we know, each of which the regulator's verifier must catch
//! with a message naming the first bad thing. Prints the number of cases
//! and the number detected, and requires them to be equal.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use evident_examples::demo::{self, Faults, Producers, SimClock};
use evident_ledger::config::Config;
use evident_ledger::{Ledger, keyfile, pgp::PgpSigner};
use evident_reporter::config::ReporterConfig;
use evident_reporter::run::Reporter;
use evident_verify::hash::Hash;
use evident_verify::manifest::{Manifest, files};
use evident_verify::note::SignerKey;
use evident_verify::pack::{self, Previous, Trust, TrustedKey};
use evident_verify::ts::Timestamp;

const ORIGIN: &str = "tamper.test/ledger";

struct Fixture {
    _dir: tempfile::TempDir,
    packs: PathBuf,
    key: SignerKey,
    cert: Vec<u8>,
    pgp: PgpSigner,
}

/// A ledger with three populated days (seeded with a violation) and its packs.
/// `fork_from`: same key and origin, but diverging from day 2 on.
fn build_chain(seed: [u8; 32], diverge: bool) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut cfg = Config::new(ORIGIN, d);
    let key = SignerKey::from_seed(ORIGIN, &seed).expect("key");
    keyfile::write_signer_key(&cfg.resolve(&cfg.key_file), &key).expect("key file");
    let pgp = PgpSigner::from_seed(key.seed(), "Evident ledger tamper test", evident_ledger::pgp_creation_time())
        .expect("pgp");
    let cert = pgp.cert_armored().expect("cert").into_bytes();
    std::fs::write(cfg.resolve(&cfg.pgp_cert), &cert).expect("cert file");
    cfg.base = PathBuf::new();
    std::fs::write(d.join("evident.toml"), cfg.to_toml()).expect("config");
    cfg.base = d.to_path_buf();
    let first = chrono::NaiveDate::from_ymd_opt(2026, 3, 2).expect("date");
    let clock = SimClock::new(Timestamp::start_of_day(first));
    let mut opts = cfg.options().expect("options");
    opts.clock = clock.clock();
    let ledger = Ledger::create(opts).expect("ledger");
    let producers = Producers::register(&ledger).expect("producers");
    for day_n in 0..3u64 {
        let day = first + chrono::Days::new(day_n);
        clock.set(Timestamp(Timestamp::start_of_day(day).0 + 8 * 3_600_000_000));
        let tag = if diverge && day_n >= 1 { format!("{day}-fork") } else { day.to_string() };
        demo::invariants(&ledger, &clock, &producers, &tag, false).expect("invariants");
        for n in 0..6u64 {
            let f = if day_n == 2 && n == 3 {
                Faults { approval_delay_secs: Some(120.0), ..Faults::default() }
            } else {
                Faults::default()
            };
            demo::agent_action(&ledger, &clock, &producers, &tag, n, f).expect("flow");
            clock.advance(300.0);
        }
    }
    let packs = d.join("packs");
    let rcfg = ReporterConfig::new(d.join("evident.toml"), &packs).expect("reporter config");
    let reporter = Reporter::with_ledger(rcfg, ledger).expect("reporter");
    let now = Timestamp::start_of_day(first + chrono::Days::new(3)).0 + 3_600_000_000;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let built = rt.block_on(reporter.build_missing(Timestamp(now))).expect("build packs");
    assert_eq!(built.len(), 3);
    Fixture { _dir: dir, packs, key, cert, pgp }
}

fn trust(f: &Fixture) -> Trust {
    Trust {
        ledger_keys: vec![TrustedKey::always(f.key.verifier())],
        pgp_cert: Some(f.cert.clone()),
        pgp_time: std::time::SystemTime::now(),
        producer_signatures: true,
    }
}

fn previous_of(dir: &Path) -> Previous {
    let m = pack::read_member(dir, files::MANIFEST).expect("manifest");
    Previous {
        checkpoint: pack::read_member(dir, files::CHECKPOINT).expect("checkpoint"),
        manifest_sha256: Some(Hash::sha256(&m).to_hex()),
        day: Manifest::parse(&m).ok().map(|m| m.day),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read") {
        let e = e.expect("entry");
        let t = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::write(&t, std::fs::read(e.path()).expect("read")).expect("write");
        }
    }
}

/// Re-signs a (modified) pack directory with the genuine keys, as an insider
/// holding the ledger key would, so that only the deeper checks can catch it.
fn resign(f: &Fixture, dir: &Path) {
    let mbytes = std::fs::read(dir.join(files::MANIFEST)).expect("manifest");
    let mut m = Manifest::parse(&mbytes).expect("parse");
    for (name, info) in m.files.iter_mut() {
        let b = std::fs::read(dir.join(name)).expect("file");
        info.sha256 = Hash::sha256(&b).to_hex();
        info.size = b.len() as u64;
    }
    m.rules_sha256 = Hash::sha256(&std::fs::read(dir.join(files::RULES)).expect("rules")).to_hex();
    let bytes = m.to_bytes().expect("bytes");
    std::fs::write(dir.join(files::MANIFEST), &bytes).expect("write");
    let sig = base64::engine::general_purpose::STANDARD.encode(f.key.sign(&bytes));
    std::fs::write(dir.join(files::MANIFEST_SIG), sig).expect("sig");
    let when = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    let asc = f.pgp.sign_detached_armored(&bytes, when).expect("asc");
    std::fs::write(dir.join(files::MANIFEST_ASC), asc).expect("asc");
}

fn read_entries(dir: &Path) -> Vec<Vec<u8>> {
    let raw = zstd::decode_all(&std::fs::read(dir.join(files::ENTRIES)).expect("entries")[..]).expect("zstd");
    raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect()
}

fn write_entries(dir: &Path, lines: &[Vec<u8>]) {
    let mut raw = Vec::new();
    for l in lines {
        raw.extend_from_slice(l);
        raw.push(b'\n');
    }
    std::fs::write(dir.join(files::ENTRIES), zstd::encode_all(&raw[..], 3).expect("zstd")).expect("write");
}

struct Tally {
    cases: usize,
    detected: usize,
    missed: Vec<String>,
}

impl Tally {
    fn check(&mut self, name: &str, failure: Option<pack::Failure>, needle: &str) {
        self.cases += 1;
        match failure {
            Some(f) if f.to_string().contains(needle) => self.detected += 1,
            Some(f) => self
                .missed
                .push(format!("{name}: caught, but the message {:?} does not name {needle:?}", f.to_string())),
            None => self.missed.push(format!("{name}: NOT detected")),
        }
    }
}

fn day_dirs(f: &Fixture) -> Vec<PathBuf> {
    pack::find_packs(&f.packs).expect("packs").into_iter().map(|(_, p)| p).filter(|p| p.is_dir()).collect()
}

#[test]
fn tamper_matrix() {
    let f = build_chain([11; 32], false);
    let t = trust(&f);
    let days = day_dirs(&f);
    assert_eq!(days.len(), 3);
    // The untouched chain and packs verify.
    let chain = pack::verify_chain(&f.packs, &t, &mut |_, _, _| {});
    assert!(chain.failure.is_none(), "clean chain: {:?}", chain.failure);
    let prev = previous_of(&days[0]);
    let target = &days[1];
    let clean = pack::verify_pack(target, &t, Some(&prev), None, &mut |_, _| {});
    assert!(clean.ok(), "clean pack: {:?}", clean.failure);

    let mut tally = Tally { cases: 0, detected: 0, missed: Vec::new() };
    let work = tempfile::tempdir().expect("tempdir");

    // 1. A flipped byte at >= 2,000 deterministic positions over every file.
    let per_file = 2000 / files::ORDER.len() + 1;
    let scratch = work.path().join("flip");
    copy_dir(target, &scratch);
    for name in files::ORDER {
        let original = std::fs::read(target.join(name)).expect("file");
        let n = original.len();
        for i in 0..per_file {
            let pos = (i * n) / per_file + (i * 7919) % (n / per_file).max(1);
            let pos = pos.min(n - 1);
            let mut b = original.clone();
            b[pos] ^= 1 << (i % 8);
            std::fs::write(scratch.join(name), &b).expect("write");
            let r = pack::verify_pack(&scratch, &t, Some(&prev), None, &mut |_, _| {});
            tally.check(&format!("flip {name}@{pos}"), r.failure, name);
        }
        std::fs::write(scratch.join(name), &original).expect("restore");
    }

    // 2. Entries removed, inserted, duplicated, swapped: re-signed by an
    //    insider with the genuine key, so only the leaf checks can catch it.
    let lines = read_entries(target);
    let other_day = read_entries(&days[2]);
    let edits: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("entry removed", [&lines[..5], &lines[6..]].concat()),
        ("entry inserted", [&lines[..5], &other_day[..1], &lines[5..]].concat()),
        ("entry duplicated", [&lines[..5], &lines[5..6], &lines[5..]].concat()),
        ("entries swapped", {
            let mut l = lines.clone();
            l.swap(3, 4);
            l
        }),
        ("last entry dropped", lines[..lines.len() - 1].to_vec()),
        ("body edited", {
            let mut l = lines.clone();
            l[7] = String::from_utf8(l[7].clone()).expect("utf8").replace("promotion", "promotiom").into_bytes();
            l
        }),
    ];
    for (name, edited) in edits {
        let d = work.path().join(name.replace(' ', "-"));
        copy_dir(target, &d);
        write_entries(&d, &edited);
        resign(&f, &d);
        let r = pack::verify_pack(&d, &t, Some(&prev), None, &mut |_, _| {});
        tally.check(name, r.failure.clone(), "entry seq");
        // Without re-signing, the digest catches it first.
        let d2 = work.path().join(format!("{}-unsigned", name.replace(' ', "-")));
        copy_dir(target, &d2);
        write_entries(&d2, &edited);
        let r = pack::verify_pack(&d2, &t, Some(&prev), None, &mut |_, _| {});
        tally.check(&format!("{name} (not re-signed)"), r.failure, files::ENTRIES);
    }

    // 3. Chains: two days swapped, a day missing, a forked history.
    let swapped = work.path().join("swapped");
    copy_dir(&f.packs, &swapped);
    let (a, b) = (swapped.join(days[1].file_name().expect("n")), swapped.join(days[2].file_name().expect("n")));
    std::fs::rename(&a, swapped.join("tmp")).expect("mv");
    std::fs::rename(&b, &a).expect("mv");
    std::fs::rename(swapped.join("tmp"), &b).expect("mv");
    let r = pack::verify_chain(&swapped, &t, &mut |_, _, _| {});
    tally.check("packs of two days swapped", r.failure, "");
    let missing = work.path().join("missing");
    copy_dir(&f.packs, &missing);
    for e in std::fs::read_dir(&missing).expect("ls") {
        let p = e.expect("e").path();
        if p.file_name().is_some_and(|n| {
            n.to_string_lossy().starts_with(&days[1].file_name().expect("n").to_string_lossy().to_string())
        }) {
            if p.is_dir() {
                std::fs::remove_dir_all(&p).expect("rm");
            } else {
                std::fs::remove_file(&p).expect("rm");
            }
        }
    }
    let r = pack::verify_chain(&missing, &t, &mut |_, _, _| {});
    tally.check("a pack missing from the chain", r.failure, "gap");
    let fork = build_chain([11; 32], true);
    let fork_days = day_dirs(&fork);
    let forked = work.path().join("forked");
    std::fs::create_dir_all(&forked).expect("mkdir");
    copy_dir(&days[0], &forked.join(days[0].file_name().expect("n")));
    copy_dir(&fork_days[1], &forked.join(fork_days[1].file_name().expect("n")));
    let r = pack::verify_chain(&forked, &t, &mut |_, _, _| {});
    tally.check("forked history on day 2 (chain)", r.failure, "");
    let r = pack::verify_pack(&fork_days[2], &t, Some(&previous_of(&days[1])), None, &mut |_, _| {});
    tally.check("forked history (single pack vs the checkpoint you hold)", r.failure, "FORK");

    // 4. Keys: wrong, expired, revoked before the day.
    let wrong = Trust {
        ledger_keys: vec![TrustedKey::always(SignerKey::from_seed(ORIGIN, &[99; 32]).expect("k").verifier())],
        ..t.clone()
    };
    tally.check(
        "wrong key",
        pack::verify_pack(target, &wrong, Some(&prev), None, &mut |_, _| {}).failure,
        files::MANIFEST_SIG,
    );
    let day_start = Timestamp::start_of_day(chrono::NaiveDate::from_ymd_opt(2026, 3, 3).expect("d"));
    let expired = Trust {
        ledger_keys: vec![TrustedKey {
            key: f.key.verifier(),
            not_before: None,
            not_after: Some(Timestamp(day_start.0 - 86_400_000_000)),
        }],
        ..t.clone()
    };
    tally.check(
        "expired key",
        pack::verify_pack(target, &expired, Some(&prev), None, &mut |_, _| {}).failure,
        "not valid for day",
    );
    let revoked = Trust {
        ledger_keys: vec![TrustedKey {
            key: f.key.verifier(),
            not_before: None,
            not_after: Some(Timestamp(day_start.0 - 1)),
        }],
        ..t.clone()
    };
    tally.check(
        "key revoked before the day",
        pack::verify_pack(target, &revoked, Some(&prev), None, &mut |_, _| {}).failure,
        "not valid for day",
    );
    let wrong_cert = Trust {
        pgp_cert: Some(
            PgpSigner::from_seed(&[98; 32], "x", evident_ledger::pgp_creation_time())
                .expect("pgp")
                .cert_armored()
                .expect("c")
                .into_bytes(),
        ),
        ..t.clone()
    };
    tally.check(
        "wrong OpenPGP certificate",
        pack::verify_pack(target, &wrong_cert, Some(&prev), None, &mut |_, _| {}).failure,
        files::MANIFEST_ASC,
    );

    // 5. An unlisted extra file; a truncated tar.
    let extra = work.path().join("extra");
    copy_dir(target, &extra);
    std::fs::write(extra.join("notes.txt"), "nothing to see").expect("write");
    tally.check(
        "unlisted extra file",
        pack::verify_pack(&extra, &t, Some(&prev), None, &mut |_, _| {}).failure,
        "notes.txt",
    );
    let tar = target.with_extension("tar");
    let tar_bytes = std::fs::read(&tar).expect("tar");
    for cut in [tar_bytes.len() / 3, tar_bytes.len() - 700, tar_bytes.len() - 1] {
        let p = work.path().join(format!("trunc-{cut}.tar"));
        std::fs::write(&p, &tar_bytes[..cut]).expect("write");
        tally.check(
            &format!("tar truncated at {cut}"),
            pack::verify_pack(&p, &t, Some(&prev), None, &mut |_, _| {}).failure,
            "",
        );
    }
    let tar_ok = pack::verify_pack(&tar, &t, Some(&prev), None, &mut |_, _| {});
    assert!(tar_ok.ok(), "the genuine tar verifies: {:?}", tar_ok.failure);

    // 6. A zstd bomb and a 100 MB line, re-signed so only the limits stop them.
    let bomb = work.path().join("bomb");
    copy_dir(target, &bomb);
    let zeros = vec![0u8; 1 << 20];
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 19).expect("zstd");
    for _ in 0..1024 {
        std::io::Write::write_all(&mut enc, &zeros).expect("write");
    }
    std::fs::write(bomb.join(files::ENTRIES), enc.finish().expect("finish")).expect("write");
    resign(&f, &bomb);
    tally.check(
        "zstd bomb (1 GiB of zeros)",
        pack::verify_pack(&bomb, &t, Some(&prev), None, &mut |_, _| {}).failure,
        "line longer",
    );
    let long = work.path().join("long");
    copy_dir(target, &long);
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd");
    let a = vec![b'a'; 1 << 20];
    for _ in 0..100 {
        std::io::Write::write_all(&mut enc, &a).expect("write");
    }
    std::fs::write(long.join(files::ENTRIES), enc.finish().expect("finish")).expect("write");
    resign(&f, &long);
    tally.check(
        "a 100 MB line",
        pack::verify_pack(&long, &t, Some(&prev), None, &mut |_, _| {}).failure,
        "line longer",
    );

    // 7. report.json edited to hide a violation, re-signed with the genuine key.
    let hidden = work.path().join("hidden");
    copy_dir(&f.packs, &hidden);
    let day3 = hidden.join(days[2].file_name().expect("n"));
    let mut report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(day3.join(files::REPORT_JSON)).expect("r")).expect("json");
    let mut hid = false;
    for r in report["rules"].as_array_mut().expect("rules") {
        if r["passed"] == false {
            r["passed"] = true.into();
            r["violations"] = 0.into();
            r["offending_seqs"] = serde_json::json!([]);
            r["compliant_per_mille"] = 1000.into();
            hid = true;
        }
    }
    assert!(hid, "day 3 has a seeded violation to hide");
    let canon = evident_verify::leaf::canonical_json(&report).expect("jcs");
    std::fs::write(day3.join(files::REPORT_JSON), canon).expect("write");
    std::fs::remove_file(hidden.join(format!("{}.tar", days[2].file_name().expect("n").to_string_lossy()))).ok();
    resign(&f, &day3);
    let r = pack::verify_pack(
        &day3,
        &t,
        Some(&previous_of(&hidden.join(days[1].file_name().expect("n")))),
        None,
        &mut |_, _| {},
    );
    tally.check("report.json hides a violation (single pack)", r.failure, files::REPORT_JSON);
    let r = pack::verify_chain(&hidden, &t, &mut |_, _, _| {});
    tally.check("report.json hides a violation (chain)", r.failure, files::REPORT_JSON);

    // The CLI exits 1 on invalid evidence (one case per kind of check).
    // `cargo test --workspace` builds it (the verifier has integration tests).
    let bin = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("debug/evident-verify");
    assert!(bin.exists(), "{} missing: run the whole suite (scripts/test)", bin.display());
    {
        for p in [&extra, &day3] {
            let out = Command::new(&bin)
                .args(["pack", p.to_str().expect("utf8"), "--key", &f.key.verifier().to_string()])
                .output()
                .expect("run evident-verify");
            assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
        }
    }

    println!("tamper matrix: {} cases, {} detected", tally.cases, tally.detected);
    assert!(tally.missed.is_empty(), "missed:\n{}", tally.missed.join("\n"));
    assert_eq!(tally.cases, tally.detected);
    assert!(tally.cases >= 2000);
}
