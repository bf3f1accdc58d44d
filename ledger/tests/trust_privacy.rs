//! Producer identity, key history, PII commitments with erasure, and
//! detectors, on real SQLite files.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use common::*;
use evident_ledger::verify_db::verify_db;
use evident_ledger::{Clock, Ledger, Signer, Submission, keyfile};
use evident_verify::note::SignerKey;
use evident_verify::receipt::Receipt;
use evident_verify::ts::Timestamp;
use serde_json::json;

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut c = e.source();
    while let Some(x) = c {
        s = format!("{s}: {x}");
        c = x.source();
    }
    s
}

fn ts(s: &str) -> i64 {
    Timestamp::parse(s).expect("ts").0
}

/// A ledger whose clock the test moves.
fn clocked(dir: &std::path::Path, start: &str) -> (Ledger, Arc<AtomicI64>) {
    let now = Arc::new(AtomicI64::new(ts(start)));
    let n = now.clone();
    let mut o = options(dir);
    o.clock = Clock::from_fn(move || Timestamp(n.load(Ordering::SeqCst)));
    (Ledger::create(o).expect("create"), now)
}

fn approval(s: &Signer, id: &str) -> Submission {
    let body = example("approval", 0);
    s.sign(id, "approval", "2026-11-21T09:30:12Z", body).expect("sign")
}

#[test]
fn bad_identity_inputs_leave_the_ledger_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (l, now) = clocked(dir.path(), "2026-11-21T09:00:00.000000Z");
    let bot = producer_key();
    l.add_key("deploy-bot", &bot.verifier(), Some("2026-11-21T09:00:00Z")).expect("add");
    let s = Signer::new(bot.clone()).expect("signer");
    l.append(approval(&s, "ok-1")).expect("good record");
    let before = head(&l);

    // A bad signature: the record changed after signing.
    let mut tampered = approval(&s, "bad-sig");
    tampered.rec.body["action"] = json!("deploy_staging");
    let e = chain(&l.append(tampered).expect_err("bad signature"));
    assert!(e.contains("signature") && e.contains("deploy-bot+"), "{e}");

    // An unknown key: same producer name, key never registered.
    let rogue = Signer::new(SignerKey::from_seed("deploy-bot", &[66; 32]).expect("name")).expect("signer");
    let e = chain(&l.append(approval(&rogue, "rogue")).expect_err("unknown key"));
    assert!(e.contains("unknown key"), "{e}");

    // An unsigned record from a producer that must sign.
    let mut unsigned = approval(&s, "unsigned");
    unsigned.sig = None;
    let e = chain(&l.append(unsigned).expect_err("unsigned"));
    assert!(e.contains("must sign"), "{e}");

    // A key used outside its validity window (not yet valid).
    let later = SignerKey::from_seed("later-bot", &[7; 32]).expect("name");
    l.add_key("later-bot", &later.verifier(), Some("2026-12-01T00:00:00Z")).expect("add later");
    let before2 = head(&l);
    let e = chain(&l.append(approval(&Signer::new(later).expect("s"), "early")).expect_err("not yet valid"));
    assert!(e.contains("not valid at"), "{e}");
    assert_eq!(head(&l), before2);

    // A revoked key.
    now.store(ts("2026-11-21T10:00:00.000000Z"), Ordering::SeqCst);
    l.revoke_key("deploy-bot", &bot.verifier(), Some("2026-11-21T09:59:00Z"), Some("suspected compromise"))
        .expect("revoke");
    let before3 = head(&l);
    let e = chain(&l.append(approval(&s, "after-revoke")).expect_err("revoked"));
    assert!(e.contains("not valid at"), "{e}");
    assert_eq!(head(&l), before3);

    // PII in free text: refused, naming field and detector, never the value.
    let s2 = Signer::new(SignerKey::from_seed("later-bot", &[8; 32]).expect("n")).expect("s");
    let _ = s2;
    let l2dir = tempfile::tempdir().expect("tempdir");
    let l2 = new_ledger(l2dir.path());
    let before_pii = head(&l2);
    let mut body = example("guardrail_event", 0);
    body["reason"] = json!("agent echoed customer NRC 123456789 into the prompt");
    let sub = signer().sign("pii-1", "guardrail_event", "2026-11-21T09:30:12Z", body).expect("sign");
    let e = chain(&l2.append(sub).expect_err("pii"));
    assert!(e.contains("body/reason") && e.contains("nrc"), "{e}");
    assert!(!e.contains("123456789"), "the error must not echo the value: {e}");
    assert_eq!(head(&l2), before_pii);
    assert_eq!(before, before, "first ledger unchanged by refusals");
    assert_eq!(l.size().expect("size"), before3.size);
}

#[test]
fn key_files_readable_by_others_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("producer.key");
    keyfile::write_signer_key(&p, &producer_key()).expect("write");
    assert_eq!(std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777, 0o600);
    keyfile::read_signer_key(&p).expect("0600 is fine");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = keyfile::read_signer_key(&p).expect_err("0644 refused").to_string();
    assert!(e.contains("0644") && e.contains("chmod 600") && e.contains("producer.key"), "{e}");
}

#[test]
fn rotation_old_key_accepted_before_refused_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (l, now) = clocked(dir.path(), "2026-11-21T09:00:00.000000Z");
    let old = producer_key();
    let new = SignerKey::from_seed("deploy-bot", &[9; 32]).expect("name");
    l.add_key("deploy-bot", &old.verifier(), Some("2026-11-21T00:00:00Z")).expect("add");
    let s_old = Signer::new(old.clone()).expect("s");
    let s_new = Signer::new(new.clone()).expect("s");
    let r1 = l.append(approval(&s_old, "before-rotation")).expect("old key before rotation");
    let receipt1 = l.receipt(r1.seq, None).expect("receipt");
    now.store(ts("2026-11-21T12:00:00.000000Z"), Ordering::SeqCst);
    l.rotate_key("deploy-bot", &old.verifier(), &new.verifier(), Some("2026-11-21T12:00:00Z")).expect("rotate");
    let before = head(&l);
    let e = chain(&l.append(approval(&s_old, "after-rotation-old")).expect_err("old key after rotation"));
    assert!(e.contains("not valid at"), "{e}");
    assert_eq!(head(&l), before);
    l.append(approval(&s_new, "after-rotation-new")).expect("new key after rotation");
    // The earlier receipt still verifies, and so does the whole database.
    let bytes = serde_json::to_vec(&receipt1).expect("json");
    Receipt::parse(&bytes).expect("parse").verify(&[l.verifier_key()], Some(ORIGIN)).expect("old receipt");
    verify_db(&l, |_, _| {}).expect("verify-db");
    let keys = l.key_history().expect("keys");
    assert_eq!(keys.all().count(), 2);
}

#[test]
fn erasure_removes_the_bytes_and_keeps_every_proof() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = new_ledger(dir.path());
    let s = signer();
    let alice = "alice.approver@bank.example";
    let bob = "bob.approver@bank.example";
    let mut subs = Vec::new();
    for (i, who) in [alice, bob, alice, bob].iter().enumerate() {
        let mut body = example("approval", 0);
        body["approver"] = json!(who);
        subs.push(s.sign(&format!("appr-{i}"), "approval", "2026-11-21T09:30:12Z", body).expect("sign"));
    }
    // Commitments are in the record; the values travel beside it.
    assert!(subs[0].rec.body["approver"].get("$commit").is_some());
    assert_eq!(subs[0].vault.len(), 1);
    let receipts: Vec<_> = l.append_batch(subs).into_iter().map(|r| r.expect("append")).collect();
    let cp = l.checkpoint().expect("checkpoint");
    let files: Vec<Vec<u8>> =
        receipts.iter().map(|r| serde_json::to_vec(&l.receipt(r.seq, None).expect("receipt")).expect("json")).collect();
    let revealed = l.reveal_subject(alice).expect("reveal");
    assert_eq!(revealed.len(), 2);
    // The commitment checks against the revealed value and salt.
    use base64::Engine as _;
    let salt = base64::engine::general_purpose::STANDARD.decode(&revealed[0].salt).expect("b64");
    let c = evident_ledger::privacy::commitment(&salt, &json!(alice)).expect("commit");
    assert_eq!(c, revealed[0].commitment);

    let db = dir.path().join("ledger.db");
    let raw_contains = |needle: &str| {
        ["ledger.db", "ledger.db-wal", "ledger.db-shm"].iter().any(|f| {
            std::fs::read(dir.path().join(f))
                .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        })
    };
    assert!(raw_contains(alice), "before erasure the vault holds the value");
    let er = l.erase(alice, "dpo@bank.example", "GDPR art. 17 request").expect("erase");
    assert_eq!(er.rows_deleted, 2);
    assert!(!raw_contains(alice), "erased value still in {} or its WAL", db.display());
    assert!(raw_contains(bob), "the other subject is kept");
    assert!(l.reveal_subject(alice).expect("reveal").is_empty());
    assert_eq!(l.reveal_subject(bob).expect("reveal").len(), 2);
    // Every earlier receipt and checkpoint still verifies.
    for f in &files {
        Receipt::parse(f).expect("parse").verify(&[l.verifier_key()], Some(ORIGIN)).expect("receipt after erasure");
    }
    evident_verify::checkpoint::open(cp.as_bytes(), &[l.verifier_key()], Some(ORIGIN)).expect("checkpoint");
    verify_db(&l, |_, _| {}).expect("verify-db after erasure");
}

#[test]
fn signed_records_must_not_carry_raw_pii() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = new_ledger(dir.path());
    let before = head(&l);
    // Sign by hand, skipping the Signer's commitments.
    let rec = evident_verify::leaf::Record {
        id: "raw-1".into(),
        kind: "approval".into(),
        producer: "deploy-bot".into(),
        at: "2026-11-21T09:30:12Z".into(),
        body: example("approval", 0),
    };
    let sig = rec.sign(&producer_key()).expect("sign");
    let e = chain(&l.append(Submission { rec, sig: Some(sig), vault: vec![] }).expect_err("raw pii"));
    assert!(e.contains("x-pii") && e.contains("approver"), "{e}");
    assert!(!e.contains("engineer@"), "no value echoed: {e}");
    assert_eq!(head(&l), before);
}

#[test]
fn unsigned_producers_get_ledger_commitments_and_safe_retries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = new_ledger(dir.path());
    let rec = |id: &str| evident_verify::leaf::Record {
        id: id.into(),
        kind: "approval".into(),
        producer: "legacy-batch".into(),
        at: "2026-11-21T09:30:12Z".into(),
        body: example("approval", 0),
    };
    let first = l.append(Submission::unsigned(rec("u-1"))).expect("append");
    let leaf = String::from_utf8(l.leaf(first.seq).expect("leaf")).expect("utf8");
    assert!(leaf.contains("\"approver\":{\"$commit\":"), "the ledger committed the x-pii field: {leaf}");
    assert!(!leaf.contains("engineer@"), "no raw value in the leaf");
    let again = l.append(Submission::unsigned(rec("u-1"))).expect("retry");
    assert!(again.duplicate && again.seq == first.seq, "a retry of an unsigned record with PII is not a conflict");
    let mut changed = rec("u-1");
    changed.body["action"] = json!("rollback_production");
    assert!(l.append(Submission::unsigned(changed)).is_err(), "different content is still a conflict");
}

/// Machine-made fields marked `"x-detect": false` (bucket names, object
/// keys, version ids) are not free text: an account number in a bucket name
/// is not a national id. The same digits in free text are still refused.
#[test]
fn detectors_skip_machine_fields_and_still_scan_free_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = new_ledger(dir.path());
    let rec = |id: &str, kind: &str, body: serde_json::Value| evident_verify::leaf::Record {
        id: id.into(),
        kind: kind.into(),
        producer: "legacy-batch".into(),
        at: "2026-11-21T09:30:12Z".into(),
        body,
    };
    let mut anchor = example("anchor_receipt", 1);
    // An 11-digit tail (the tpin pattern) and a Luhn-valid digit run that
    // the card pattern once matched (the CI failure of 2026-11-22).
    let bucket = "evident-rep-lock-11588-123456789012";
    anchor["bucket"] = json!(bucket);
    anchor["key"] = json!("evident/12345678901/packs/2026-11-20.tar");
    anchor["location"] = json!(format!("s3://{bucket}/evident/12345678901/packs/2026-11-20.tar"));
    anchor["version_id"] = json!("4111111111111111");
    let r =
        l.append(Submission::unsigned(rec("a-1", "anchor_receipt", anchor))).expect("machine fields are not scanned");
    let leaf = String::from_utf8(l.leaf(r.seq).expect("leaf")).expect("utf8");
    assert!(leaf.contains(bucket) && !leaf.contains("{{commit:"), "stored as given: {leaf}");

    let before = head(&l);
    let mut hold = example("hold", 1);
    hold["reason"] = json!("customer 12345678901 asked for a freeze");
    let e = chain(&l.append(Submission::unsigned(rec("h-1", "hold", hold))).expect_err("tpin in free text"));
    assert!(e.contains("body/reason") && e.contains("tpin") && !e.contains("12345678901"), "{e}");
    assert_eq!(head(&l), before);
}
