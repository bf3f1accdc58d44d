//! Every `--json` output of the `evident-verify` binary validated against its
//! schema in `schemas/cli/` (STYLE.md: "`--json` for every command that
//! reports; the JSON shape has a schema under `schemas/`").
//!
//! `receipt`, `checkpoint` and the usage errors run the real binary. Its
//! inputs are built here with the library that defines the formats, exactly
//! as `evident prove` writes them, and are themselves checked against
//! `evident.receipt.json` and `evident.consistency.json`, which
//! `ledger/tests/cli_schemas.rs` checks against the real `evident prove`.
//! `pack` and `chain` run the real binary on packs that fail early (no valid
//! pack can be built in this crate yet), and the schemas are also checked on
//! hand-built `PackResult`/`ChainResult` values covering every status and
//! both kinds of failure, serialized the way `main.rs` prints them. Each
//! schema must refuse mutated twins of the valid instances.

use std::path::{Path, PathBuf};
use std::process::Command;

use evident_verify::checkpoint::Checkpoint;
use evident_verify::hash::{Hash, TreeHead, leaf_hash};
use evident_verify::leaf::{Entry, LEAF_VERSION, Record};
use evident_verify::merkle::{MemoryTree, prove_consistency, prove_inclusion, root_at};
use evident_verify::note::SignerKey;
use evident_verify::pack::{ChainResult, Check, Failure, PackResult, Status};
use evident_verify::receipt::{RECEIPT_FORMAT, Receipt};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_evident-verify");
const ORIGIN: &str = "test.example/log";

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/cli")
}

fn load_schema(name: &str) -> Value {
    let path = schema_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// The validation errors of `instance` against schema `name`, one line each.
fn errors(name: &str, instance: &Value) -> Vec<String> {
    let v = jsonschema::draft202012::new(&load_schema(name)).unwrap_or_else(|e| panic!("{name}: bad schema: {e}"));
    v.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

#[track_caller]
fn assert_valid(name: &str, instance: &Value) {
    let errs = errors(name, instance);
    assert!(errs.is_empty(), "{name} rejects a valid instance:\n{}\ninstance: {instance:#}", errs.join("\n"));
}

#[track_caller]
fn assert_invalid(name: &str, instance: &Value, why: &str) {
    assert!(!errors(name, instance).is_empty(), "{name} accepts an instance with {why}: {instance:#}");
}

/// Mutated twins of a valid object: each top-level field removed (every
/// field these outputs print is required in its branch), an unknown field
/// added, and not an object at all.
#[track_caller]
fn assert_rejects_twins(name: &str, valid: &Value) {
    let map = valid.as_object().unwrap_or_else(|| panic!("{name}: expected an object, got {valid}"));
    for key in map.keys() {
        let mut twin = map.clone();
        twin.remove(key);
        assert_invalid(name, &Value::Object(twin), &format!("{key:?} removed"));
    }
    let mut twin = map.clone();
    twin.insert("unexpected_field".into(), json!(1));
    assert_invalid(name, &Value::Object(twin), "an unknown field");
    assert_invalid(name, &json!([valid]), "an array instead of an object");
}

/// Runs `evident-verify --json ARGS`, asserts the exit code, and parses
/// stdout as exactly one line of JSON.
#[track_caller]
fn verify_json(args: &[&str], code: i32) -> Value {
    let out = Command::new(BIN).arg("--json").args(args).output().expect("run evident-verify");
    let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "evident-verify {args:?}: stdout {stdout} stderr {stderr}");
    assert_eq!(stdout.lines().count(), 1, "evident-verify {args:?}: expected one line of JSON, got {stdout:?}");
    serde_json::from_str(stdout.trim_end())
        .unwrap_or_else(|e| panic!("evident-verify {args:?}: not JSON ({e}): {stdout}"))
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// A two-entry log written out as `evident prove` would: a receipt for seq 0
/// at size 2, the checkpoints at sizes 1 and 2, and the consistency proof
/// from 1 to 2.
struct Files {
    _dir: tempfile::TempDir,
    vkey: String,
    key_id: String,
    receipt: PathBuf,
    note2: PathBuf,
    note2_cosigned: PathBuf,
    consistency: PathBuf,
    bad_consistency: PathBuf,
}

fn files() -> Files {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = SignerKey::from_seed(ORIGIN, &[7u8; 32]).expect("ledger key");
    let witness = SignerKey::from_seed("witness.example/w1", &[9u8; 32]).expect("witness key");
    let mut tree = MemoryTree::new();
    let mut leaves = Vec::new();
    for (seq, run) in ["run-a", "run-b"].into_iter().enumerate() {
        let rec: Record = serde_json::from_value(json!({
            "id": run, "kind": "invariant_result", "producer": "legacy", "at": "2026-11-21T09:30:12Z",
            "body": {"invariant_id": "INV-014", "severity": "P0", "status": "pass", "verification_command": "make verify",
                     "evidence_hash": format!("sha256:{}", "ab".repeat(32)), "duration_ms": 12, "run_id": run}}))
        .expect("record");
        let entry =
            Entry { v: LEAF_VERSION, seq: seq as u64, ts: format!("2026-11-21T09:30:1{seq}.000000Z"), rec, sig: None };
        let bytes = entry.to_leaf_bytes().expect("leaf bytes");
        tree.append(leaf_hash(&bytes));
        leaves.push(bytes);
    }
    let head = |size| TreeHead { size, root: root_at(&tree, size).expect("root") };
    let note1 = Checkpoint::new(ORIGIN, head(1)).sign(&[&key]).expect("sign 1");
    let note2 = Checkpoint::new(ORIGIN, head(2)).sign(&[&key]).expect("sign 2");
    let note2_cosigned = Checkpoint::new(ORIGIN, head(2)).sign(&[&key, &witness]).expect("cosign 2");
    let b64 = |hs: Vec<Hash>| hs.iter().map(Hash::to_base64).collect::<Vec<_>>();

    let receipt = Receipt {
        format: RECEIPT_FORMAT.into(),
        seq: 0,
        tree_size: 2,
        leaf: String::from_utf8(leaves[0].clone()).expect("utf8 leaf"),
        inclusion: b64(prove_inclusion(&tree, 0, 2).expect("inclusion")),
        checkpoint: note2.clone(),
    };
    let receipt_json = serde_json::to_value(&receipt).expect("receipt JSON");
    assert_valid("evident.receipt.json", &receipt_json);
    let consistency = json!({
        "format": "evident-consistency/1", "old_size": 1, "new_size": 2,
        "proof": b64(prove_consistency(&tree, 1, 2).expect("consistency")),
        "old_checkpoint": note1, "new_checkpoint": note2,
    });
    assert_valid("evident.consistency.json", &consistency);
    let mut bad = consistency.clone();
    bad["proof"] = json!([Hash([0x5a; 32]).to_base64()]);

    let d = dir.path();
    let write = |name: &str, text: String| {
        let path = d.join(name);
        std::fs::write(&path, text).expect("write fixture");
        path
    };
    let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("JSON") + "\n";
    Files {
        vkey: key.verifier().to_string(),
        key_id: key.id(),
        receipt: write("receipt.json", pretty(&receipt_json)),
        note2: write("checkpoint.2", note2.clone()),
        note2_cosigned: write("checkpoint.2.cosigned", note2_cosigned),
        consistency: write("consistency.json", pretty(&consistency)),
        bad_consistency: write("bad-consistency.json", pretty(&bad)),
        _dir: dir,
    }
}

#[test]
fn receipt_and_checkpoint_outputs_match_verify_simple() {
    let f = files();
    let other = SignerKey::from_seed(ORIGIN, &[8u8; 32]).expect("other key").verifier().to_string();
    const SIMPLE: &str = "verify.simple.json";

    let ok = verify_json(&["receipt", p(&f.receipt), "--key", &f.vkey], 0);
    assert_valid(SIMPLE, &ok);
    assert_rejects_twins(SIMPLE, &ok);
    assert_eq!(ok["result"]["seq"], 0);
    assert_eq!(ok["result"]["tree_size"], 2);
    assert_eq!(ok["result"]["signed_by"], json!([f.key_id]));
    let mut both = ok.clone();
    both["error"] = json!("and an error");
    assert_invalid(SIMPLE, &both, "ok true and an error");
    let mut b64_leaf_hash = ok.clone();
    b64_leaf_hash["result"]["leaf_hash"] = json!(Hash([1; 32]).to_base64());
    assert_invalid(SIMPLE, &b64_leaf_hash, "a base64 leaf_hash");
    let mut unsigned = ok.clone();
    unsigned["result"]["signed_by"] = json!([]);
    assert_invalid(SIMPLE, &unsigned, "no trusted signer");

    let wrong = verify_json(&["receipt", p(&f.receipt), "--key", &other], 1);
    assert_valid(SIMPLE, &wrong);
    assert_rejects_twins(SIMPLE, &wrong);
    assert_eq!(wrong["ok"], false);
    let mut with_result = wrong.clone();
    with_result["result"] = ok["result"].clone();
    assert_invalid(SIMPLE, &with_result, "ok false and a result");

    let cons = verify_json(&["checkpoint", p(&f.note2), "--key", &f.vkey, "--consistency", p(&f.consistency)], 0);
    assert_valid(SIMPLE, &cons);
    assert_rejects_twins(SIMPLE, &cons);
    assert_eq!(cons["result"]["size"], 2);
    assert_eq!(cons["result"]["consistent_with_size"], 1);
    let mut hex_root = cons.clone();
    hex_root["result"]["root"] = json!("ab".repeat(32));
    assert_invalid(SIMPLE, &hex_root, "a hex checkpoint root");

    let plain = verify_json(&["checkpoint", p(&f.note2_cosigned), "--key", &f.vkey], 0);
    assert_valid(SIMPLE, &plain);
    assert!(plain["result"].get("consistent_with_size").is_none(), "{plain}");
    assert_eq!(plain["result"]["other_signatures"].as_array().map(Vec::len), Some(1), "{plain}");
    let mut mixed = plain.clone();
    mixed["result"]["seq"] = json!(0);
    assert_invalid(SIMPLE, &mixed, "a checkpoint result with a receipt field");

    let inconsistent =
        verify_json(&["checkpoint", p(&f.note2), "--key", &f.vkey, "--consistency", p(&f.bad_consistency)], 1);
    assert_valid(SIMPLE, &inconsistent);
    assert_eq!(inconsistent["ok"], false);
}

#[test]
fn usage_errors_match_verify_usage_error() {
    let f = files();
    const USAGE: &str = "verify.usage-error.json";
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nonexistent");
    for (args, what) in [
        (vec!["pack", p(&missing), "--key", &f.vkey], "a pack that does not exist"),
        (vec!["chain", p(&missing), "--key", &f.vkey], "a chain directory that does not exist"),
        (vec!["receipt", p(&f.receipt)], "no trusted key"),
        (vec!["receipt", p(&missing), "--key", &f.vkey], "a receipt that does not exist"),
        (vec!["checkpoint", p(&f.note2), "--key", "not a key"], "an unparsable key"),
    ] {
        let v = verify_json(&args, 2);
        assert_valid(USAGE, &v);
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: {v}");
    }
    let v = verify_json(&["pack", p(&missing), "--key", &f.vkey], 2);
    assert_rejects_twins(USAGE, &v);
    let mut not_usage = v.clone();
    not_usage["usage_error"] = json!(false);
    assert_invalid(USAGE, &not_usage, "usage_error false");
    let mut ok = v.clone();
    ok["ok"] = json!(true);
    assert_invalid(USAGE, &ok, "ok true");
}

/// Real `pack` and `chain` output on inputs that fail before any manifest is
/// read (the only packs this crate can make yet).
#[test]
fn failing_pack_and_chain_outputs_match_their_schemas() {
    let f = files();
    let dir = tempfile::tempdir().expect("tempdir");
    let empty_pack = dir.path().join("2026-11-21");
    std::fs::create_dir(&empty_pack).expect("mkdir");

    let pack = verify_json(&["pack", p(&empty_pack), "--key", &f.vkey], 1);
    assert_valid("verify.pack.json", &pack);
    assert_rejects_twins("verify.pack.json", &pack);
    assert_eq!(pack["pack"]["day"], Value::Null, "{pack}");
    assert_eq!(pack["pack"]["checks"].as_array().and_then(|c| c.last()).map(|c| &c["status"]), Some(&json!("failed")));

    let chain = verify_json(&["chain", p(dir.path()), "--key", &f.vkey], 1);
    assert_valid("verify.chain.json", &chain);
    assert_rejects_twins("verify.chain.json", &chain);

    let nothing = tempfile::tempdir().expect("tempdir");
    let chain = verify_json(&["chain", p(nothing.path()), "--key", &f.vkey], 1);
    assert_valid("verify.chain.json", &chain);
    assert_eq!(chain["chain"]["packs"], json!([]));
}

fn check(name: &str, status: Status, detail: &str) -> Check {
    Check { name: name.into(), status, detail: detail.into() }
}

fn verified_pack(day: &str, start: u64, end: u64) -> PackResult {
    PackResult {
        path: format!("packs/{day}"),
        day: Some(day.into()),
        start: Some(start),
        end: Some(end),
        manifest_sha256: Some(Hash::sha256(day.as_bytes()).to_hex()),
        checks: vec![
            check("manifest", Status::Verified, "manifest.json.sig by test.example/log+01234567"),
            check("unsigned records", Status::NotChecked, "2 records carry no producer signature"),
            check("report (history rules)", Status::NotChecked, "R7 links back in time: verify the chain"),
            check("inclusion", Status::Verified, "compact range + 2 leaves hash to the checkpoint root"),
        ],
        failure: None,
    }
}

fn failed_pack(day: &str) -> PackResult {
    let failure = Failure {
        file: "entries.jsonl.zst".into(),
        seq: Some(41),
        message: "producer signature does not verify over JCS(rec)".into(),
    };
    let mut r = verified_pack(day, 40, 50);
    r.checks.truncate(1);
    r.checks.push(check(&failure.file, Status::Failed, &failure.to_string()));
    r.failure = Some(failure);
    r
}

fn unread_pack() -> PackResult {
    let failure = Failure { file: "manifest.json".into(), seq: None, message: "cannot open: No such file".into() };
    PackResult {
        path: "packs/2026-11-23.tar".into(),
        day: None,
        start: None,
        end: None,
        manifest_sha256: None,
        checks: vec![check(&failure.file, Status::Failed, &failure.to_string())],
        failure: Some(failure),
    }
}

/// What `evident-verify --json pack` prints for `r` (see `main.rs`).
fn pack_output(r: &PackResult) -> Value {
    json!({"ok": r.ok(), "pack": serde_json::to_value(r).expect("PackResult serializes")})
}

/// What `evident-verify --json chain` prints for `r` (see `main.rs`).
fn chain_output(r: &ChainResult) -> Value {
    json!({"ok": r.failure.is_none(), "chain": serde_json::to_value(r).expect("ChainResult serializes")})
}

#[test]
fn pack_result_values_match_verify_pack() {
    const PACK: &str = "verify.pack.json";
    for r in [verified_pack("2026-11-21", 0, 2), failed_pack("2026-11-22"), unread_pack()] {
        let v = pack_output(&r);
        assert_valid(PACK, &v);
        assert_rejects_twins(PACK, &v);
        let mut inner = v["pack"].as_object().expect("object").clone();
        for key in inner.clone().keys() {
            let mut twin = v.clone();
            twin["pack"].as_object_mut().expect("object").remove(key);
            assert_invalid(PACK, &twin, &format!("pack.{key} removed"));
        }
        inner.insert("extra".into(), json!(true));
        assert_invalid(PACK, &json!({"ok": v["ok"], "pack": inner}), "an unknown field in pack");
        let mut flipped = v.clone();
        flipped["ok"] = json!(!r.ok());
        assert_invalid(PACK, &flipped, "ok disagreeing with pack.failure");
    }
    let good = pack_output(&verified_pack("2026-11-21", 0, 2));
    let mut status = good.clone();
    status["pack"]["checks"][0]["status"] = json!("Verified");
    assert_invalid(PACK, &status, "a status not in snake_case");
    let mut half_read = good.clone();
    half_read["pack"]["start"] = Value::Null;
    assert_invalid(PACK, &half_read, "a day without a start");
    let mut bad_day = good.clone();
    bad_day["pack"]["day"] = json!("21/11/2026");
    assert_invalid(PACK, &bad_day, "a day not in YYYY-MM-DD");
    let mut check_extra = good.clone();
    check_extra["pack"]["checks"][0]["extra"] = json!(1);
    assert_invalid(PACK, &check_extra, "an unknown field in a check");
    let failed = pack_output(&failed_pack("2026-11-22"));
    let mut seq = failed.clone();
    seq["pack"]["failure"]["seq"] = json!(-1);
    assert_invalid(PACK, &seq, "a negative failure seq");
    let mut no_seq = failed.clone();
    no_seq["pack"]["failure"].as_object_mut().expect("object").remove("seq");
    assert_invalid(PACK, &no_seq, "a failure without seq (null is printed, not omitted)");
}

#[test]
fn chain_result_values_match_verify_chain() {
    const CHAIN: &str = "verify.chain.json";
    let ok = ChainResult {
        path: "packs".into(),
        packs: vec![verified_pack("2026-11-21", 0, 2), verified_pack("2026-11-22", 2, 40)],
        failure: None,
    };
    let broken = ChainResult {
        path: "packs".into(),
        packs: vec![verified_pack("2026-11-21", 0, 40), failed_pack("2026-11-22")],
        failure: Some(Failure {
            file: "packs/2026-11-22/entries.jsonl.zst".into(),
            seq: Some(41),
            message: "producer signature does not verify over JCS(rec)".into(),
        }),
    };
    let gap = ChainResult {
        path: "packs".into(),
        packs: vec![verified_pack("2026-11-21", 0, 40)],
        failure: Some(Failure {
            file: "packs/2026-11-23".into(),
            seq: None,
            message: "gap in the chain: the pack after 2026-11-21 is 2026-11-23 (missing 2026-11-22)".into(),
        }),
    };
    let empty = ChainResult {
        path: "packs".into(),
        packs: vec![],
        failure: Some(Failure {
            file: "packs".into(),
            seq: None,
            message: "no packs (YYYY-MM-DD/ or .tar) found".into(),
        }),
    };
    for r in [&ok, &broken, &gap, &empty] {
        let v = chain_output(r);
        assert_valid(CHAIN, &v);
        assert_rejects_twins(CHAIN, &v);
        for key in ["path", "packs", "failure"] {
            let mut twin = v.clone();
            twin["chain"].as_object_mut().expect("object").remove(key);
            assert_invalid(CHAIN, &twin, &format!("chain.{key} removed"));
        }
        let mut flipped = v.clone();
        flipped["ok"] = json!(r.failure.is_some());
        assert_invalid(CHAIN, &flipped, "ok disagreeing with chain.failure");
    }
    let mut bad_pack = chain_output(&ok);
    bad_pack["chain"]["packs"][1]["checks"][0]["status"] = json!("skipped");
    assert_invalid(CHAIN, &bad_pack, "an unknown check status inside a pack");
}

/// The pack result is defined once in each schema that holds it: the copies
/// must agree (ledger/tests/cli_schemas.rs checks every shared `$defs`).
#[test]
fn pack_result_definitions_agree() {
    let pack = load_schema("verify.pack.json");
    let chain = load_schema("verify.chain.json");
    for def in ["pack_result", "check", "failure", "uint", "hex_hash"] {
        assert_eq!(pack["$defs"][def], chain["$defs"][def], "$defs/{def} differs between verify.pack and verify.chain");
    }
}
