//! Every `--json` output of the `evident` binary, and the files `evident
//! prove` writes, validated against its schema in `schemas/cli/` (STYLE.md:
//! "`--json` for every command that reports; the JSON shape has a schema
//! under `schemas/`").
//!
//! The outputs are real: the binary runs against a fresh ledger in a temp
//! directory. Each schema must also refuse mutated twins of the real
//! output (a required field removed, an unknown field added), so a schema
//! that accepts anything fails here. `schemas_are_well_formed` checks every
//! file in `schemas/cli/`, including the `evident-verify` ones.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use evident_verify::checkpoint;
use evident_verify::hash::Hash;
use evident_verify::merkle::verify_consistency_heads;
use evident_verify::note::VerifierKey;
use evident_verify::receipt::Receipt;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_evident");
const ORIGIN: &str = "test.example/log";

/// The schema files this directory must hold, no more and no less.
const SCHEMA_FILES: &[&str] = &[
    "evident.append-line.json",
    "evident.checkpoint.json",
    "evident.consistency.json",
    "evident.erase.json",
    "evident.init.json",
    "evident.key-event.json",
    "evident.key-list.json",
    "evident.receipt.json",
    "evident.reveal.json",
    "evident.stats.json",
    "evident.verify-db.json",
    "verify.chain.json",
    "verify.pack.json",
    "verify.simple.json",
    "verify.usage-error.json",
];

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/cli")
}

fn load_schema(name: &str) -> Value {
    let path = schema_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

fn validator(name: &str) -> jsonschema::Validator {
    jsonschema::draft202012::new(&load_schema(name)).unwrap_or_else(|e| panic!("{name}: not a valid schema: {e}"))
}

/// The validation errors of `instance` against schema `name`, one line each.
fn errors(name: &str, instance: &Value) -> Vec<String> {
    let v = validator(name);
    v.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

#[track_caller]
fn assert_valid(name: &str, instance: &Value) {
    let errs = errors(name, instance);
    assert!(errs.is_empty(), "{name} rejects real output:\n{}\ninstance: {instance:#}", errs.join("\n"));
}

#[track_caller]
fn assert_invalid(name: &str, instance: &Value, why: &str) {
    assert!(!errors(name, instance).is_empty(), "{name} accepts an instance with {why}: {instance:#}");
}

/// Mutated twins of a valid object: each top-level field removed (every
/// field `evident` prints is always printed, null included, so each is
/// required in its branch), an unknown field added, and not an object.
#[track_caller]
fn assert_rejects_twins(name: &str, valid: &Value) {
    let Value::Object(map) = valid else { panic!("{name}: expected an object, got {valid}") };
    for key in map.keys() {
        let mut twin = map.clone();
        twin.remove(key);
        assert_invalid(name, &Value::Object(twin), &format!("{key:?} removed"));
    }
    let mut twin = map.clone();
    twin.insert("unexpected_field".into(), json!(1));
    assert_invalid(name, &Value::Object(twin), "an unknown field");
    assert_invalid(name, &json!("not an object"), "a string instead of an object");
}

/// Mutated twins of a valid non-empty array of objects.
#[track_caller]
fn assert_rejects_array_twins(name: &str, valid: &Value) {
    let items = valid.as_array().unwrap_or_else(|| panic!("{name}: expected an array, got {valid}"));
    assert!(!items.is_empty(), "{name}: need a non-empty array to mutate");
    for key in items[0].as_object().expect("object items").keys() {
        let mut twin = items.clone();
        twin[0].as_object_mut().expect("object").remove(key);
        assert_invalid(name, &Value::Array(twin), &format!("{key:?} removed from an item"));
    }
    let mut twin = items.clone();
    twin[0]["unexpected_field"] = json!(1);
    assert_invalid(name, &Value::Array(twin), "an unknown field in an item");
    assert_invalid(name, &json!({}), "an object instead of an array");
}

/// Runs `evident --config D/evident.toml ARGS`, returning (exit code, stdout, stderr).
fn evident(d: &Path, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(d.join("evident.toml"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run evident");
    if let Some(s) = stdin {
        child.stdin.take().expect("stdin").write_all(s.as_bytes()).expect("write stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("wait for evident");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a `--json` command, asserts its exit code, and parses stdout as
/// exactly one JSON document on one line.
#[track_caller]
fn evident_json(d: &Path, args: &[&str], stdin: Option<&str>, code: i32) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let (got, out, err) = evident(d, &full, stdin);
    assert_eq!(got, code, "evident {args:?}: stdout {out} stderr {err}");
    assert_eq!(out.lines().count(), 1, "evident {args:?}: expected one line of JSON, got {out:?}");
    serde_json::from_str(out.trim_end()).unwrap_or_else(|e| panic!("evident {args:?}: not JSON ({e}): {out}"))
}

fn invariant_line(id: &str, run: &str) -> String {
    json!({"id": id, "kind": "invariant_result", "producer": "legacy", "at": "2026-11-21T09:30:12Z",
        "body": {"invariant_id": "INV-014", "severity": "P0", "status": "pass", "verification_command": "make verify",
                 "evidence_hash": format!("sha256:{}", "ab".repeat(32)), "duration_ms": 12, "run_id": run}})
    .to_string()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or_else(|| panic!("{field} is not a string in {v}"))
}

#[test]
fn evident_json_outputs_match_their_schemas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let dir_s = d.to_str().expect("UTF-8 temp dir");

    // init
    let init = evident_json(d, &["init", "--dir", dir_s, "--origin", ORIGIN, "--unsigned-producer", "legacy"], None, 0);
    assert_valid("evident.init.json", &init);
    assert_rejects_twins("evident.init.json", &init);
    let vkey_s = s(&init, "verifier_key").to_string();
    let vkey = VerifierKey::parse(&vkey_s).expect("init prints a parsable verifier key");
    assert_eq!(vkey.name(), ORIGIN);
    let empty = evident_json(d, &["stats"], None, 0);
    assert_valid("evident.stats.json", &empty);
    assert_eq!((&empty["first_ts"], &empty["latest_checkpoint_size"]), (&Value::Null, &Value::Null), "{empty}");

    // append: two stored lines and one refused line, one JSON object each.
    let input = [invariant_line("a", "run-a"), "{not json".to_string(), invariant_line("b", "run-b")].join("\n");
    let (code, out, err) = evident(d, &["--json", "append"], Some(&input));
    assert_eq!(code, 1, "a refused line makes append exit 1: {out}{err}");
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).expect("append prints JSON lines")).collect();
    assert_eq!(lines.len(), 3, "{out}");
    for l in &lines {
        assert_valid("evident.append-line.json", l);
        assert_rejects_twins("evident.append-line.json", l);
    }
    let stored: Vec<&Value> = lines.iter().filter(|l| l["ok"] == true).collect();
    let refused: Vec<&Value> = lines.iter().filter(|l| l["ok"] == false).collect();
    assert_eq!((stored.len(), refused.len()), (2, 1), "{out}");
    assert_eq!(refused[0]["line"], 2);
    let mut both = stored[0].clone();
    both["error"] = json!("also an error");
    assert_invalid("evident.append-line.json", &both, "ok true and an error");
    let mut no_receipt = refused[0].clone();
    no_receipt["receipt"] = stored[0]["receipt"].clone();
    assert_invalid("evident.append-line.json", &no_receipt, "ok false and a receipt");
    let mut hex_ts = stored[0].clone();
    hex_ts["receipt"]["ts"] = json!("2026-11-21T09:30:12Z");
    assert_invalid("evident.append-line.json", &hex_ts, "a ts without six fractional digits");

    // checkpoint, as JSON and as the note text.
    let cp = evident_json(d, &["checkpoint"], None, 0);
    assert_valid("evident.checkpoint.json", &cp);
    assert_rejects_twins("evident.checkpoint.json", &cp);
    assert_eq!(cp["size"], 2);
    assert_eq!(cp["origin"], ORIGIN);
    let (code, note, _) = evident(d, &["checkpoint"], None);
    assert_eq!(code, 0);
    assert_eq!(cp["note"], note.as_str(), "the JSON note is the text `evident checkpoint` prints");
    let mut hex_root = cp.clone();
    hex_root["root"] = json!("ab".repeat(32));
    assert_invalid("evident.checkpoint.json", &hex_root, "a hex root");
    let mut unsigned = cp.clone();
    unsigned["note"] = json!(note.split_once("\n\n").expect("signature block").0.to_string() + "\n");
    assert_invalid("evident.checkpoint.json", &unsigned, "a note without signatures");

    // prove --seq: the receipt file, which the verifier library also accepts.
    let receipt_path = d.join("receipt.json");
    let (code, _, err) = evident(d, &["prove", "--seq", "0", "--out", receipt_path.to_str().expect("utf8")], None);
    assert_eq!(code, 0, "{err}");
    let receipt = read_json(&receipt_path);
    assert_valid("evident.receipt.json", &receipt);
    assert_rejects_twins("evident.receipt.json", &receipt);
    Receipt::parse(&std::fs::read(&receipt_path).expect("read receipt"))
        .expect("receipt parses")
        .verify(std::slice::from_ref(&vkey), Some(ORIGIN))
        .expect("receipt verifies");
    let mut v2 = receipt.clone();
    v2["format"] = json!("evident-receipt/2");
    assert_invalid("evident.receipt.json", &v2, "an unknown format");
    let (code, stdout_receipt, _) = evident(d, &["--json", "prove", "--seq", "1"], None);
    assert_eq!(code, 0);
    assert_valid("evident.receipt.json", &serde_json::from_str(&stdout_receipt).expect("receipt on stdout"));

    // prove --consistency: the proof file, checked with the verifier library too.
    let cons_path = d.join("consistency.json");
    let (code, _, err) =
        evident(d, &["prove", "--consistency", "1", "2", "--out", cons_path.to_str().expect("utf8")], None);
    assert_eq!(code, 0, "{err}");
    let cons = read_json(&cons_path);
    assert_valid("evident.consistency.json", &cons);
    assert_rejects_twins("evident.consistency.json", &cons);
    let open = |field: &str| {
        checkpoint::open(s(&cons, field).as_bytes(), std::slice::from_ref(&vkey), Some(ORIGIN))
            .unwrap_or_else(|e| panic!("{field}: {e}"))
            .checkpoint
    };
    let proof: Vec<Hash> = cons["proof"]
        .as_array()
        .expect("proof")
        .iter()
        .map(|h| Hash::from_base64(h.as_str().expect("string")).expect("base64 hash"))
        .collect();
    verify_consistency_heads(&open("old_checkpoint").head(), &open("new_checkpoint").head(), &proof)
        .expect("consistency proof verifies");
    let mut hex_proof = cons.clone();
    hex_proof["proof"] = json!(["ab".repeat(32)]);
    assert_invalid("evident.consistency.json", &hex_proof, "a hex proof hash");

    // verify-db, clean.
    let vdb = evident_json(d, &["verify-db"], None, 0);
    assert_valid("evident.verify-db.json", &vdb);
    assert_rejects_twins("evident.verify-db.json", &vdb);
    assert_eq!(vdb["report"]["entries"], 2);
    let mut mixed = vdb.clone();
    mixed["seq"] = json!(null);
    assert_invalid("evident.verify-db.json", &mixed, "ok true and a seq");

    // stats
    let stats = evident_json(d, &["stats"], None, 0);
    assert_valid("evident.stats.json", &stats);
    assert_rejects_twins("evident.stats.json", &stats);
    assert_eq!(stats["size"], 2);
    assert_eq!(stats["ledger_key"], vkey_s.as_str());
    let mut b64_root = stats.clone();
    b64_root["root"] = cp["root"].clone();
    assert_invalid("evident.stats.json", &b64_root, "a base64 root");

    // key add, list, rotate, revoke, list again.
    let svc_key = d.join("svc.key");
    let add =
        evident_json(d, &["key", "add", "--producer", "svc", "--generate", svc_key.to_str().expect("utf8")], None, 0);
    assert_valid("evident.key-event.json", &add);
    assert_rejects_twins("evident.key-event.json", &add);
    let list = evident_json(d, &["key", "list"], None, 0);
    assert_valid("evident.key-list.json", &list);
    assert_rejects_array_twins("evident.key-list.json", &list);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["valid_until"], Value::Null);
    assert_eq!(list[0]["introduced_seq"], add["seq"]);
    let old_key = s(&list[0], "key").to_string();
    let svc2_key = d.join("svc2.key");
    let rotate = evident_json(
        d,
        &["key", "rotate", "--producer", "svc", "--old", &old_key, "--generate", svc2_key.to_str().expect("utf8")],
        None,
        0,
    );
    assert_valid("evident.key-event.json", &rotate);
    let list = evident_json(d, &["key", "list"], None, 0);
    let new_key = list
        .as_array()
        .expect("array")
        .iter()
        .find(|k| k["key"] != old_key.as_str())
        .map(|k| s(k, "key").to_string())
        .expect("the rotated-in key is listed");
    let revoke =
        evident_json(d, &["key", "revoke", "--producer", "svc", "--key", &new_key, "--reason", "schema test"], None, 0);
    assert_valid("evident.key-event.json", &revoke);
    let list = evident_json(d, &["key", "list"], None, 0);
    assert_valid("evident.key-list.json", &list);
    assert!(
        list.as_array().expect("array").iter().all(|k| k["valid_until"].is_string()),
        "both keys have ended: {list}"
    );
    let mut bad_key = list.clone();
    bad_key[0]["key"] = json!("svc+0000abcd");
    assert_invalid("evident.key-list.json", &bad_key, "a key id where a verifier key belongs");

    // reveal: nothing (exit 1, []), then a value the ledger committed itself.
    let nothing = evident_json(d, &["reveal", "--subject", "nobody"], None, 1);
    assert_eq!(nothing, json!([]));
    assert_valid("evident.reveal.json", &nothing);
    let hold = json!({"id": "hold-1", "kind": "hold", "producer": "legacy", "at": "2026-11-21T09:30:12Z",
        "body": {"hold_id": "hold-1", "state": "end", "scope": "*", "set_by": "oncall@example.org"}})
    .to_string();
    let (code, out, err) = evident(d, &["--json", "append"], Some(&hold));
    assert_eq!(code, 0, "{out}{err}");
    let line: Value = serde_json::from_str(out.trim_end()).expect("JSON line");
    assert_valid("evident.append-line.json", &line);
    let revealed = evident_json(d, &["reveal", "--subject", "oncall@example.org"], None, 0);
    assert_valid("evident.reveal.json", &revealed);
    assert_rejects_array_twins("evident.reveal.json", &revealed);
    assert_eq!(revealed[0]["field"], "set_by");
    assert_eq!(revealed[0]["value"], "\"oncall@example.org\"");
    let by_commitment = evident_json(d, &["reveal", "--commitment", s(&revealed[0], "commitment")], None, 0);
    assert_valid("evident.reveal.json", &by_commitment);
    assert_eq!(by_commitment, revealed);

    // erase: nothing, then the subject's one row.
    let erased = evident_json(d, &["erase", "--subject", "nobody"], None, 0);
    assert_valid("evident.erase.json", &erased);
    assert_rejects_twins("evident.erase.json", &erased);
    assert_eq!(erased["rows_deleted"], 0);
    let erased = evident_json(d, &["erase", "--subject", "oncall@example.org"], None, 0);
    assert_valid("evident.erase.json", &erased);
    assert_eq!(erased["rows_deleted"], 1);
    let mut negative = erased.clone();
    negative["rows_deleted"] = json!(-1);
    assert_invalid("evident.erase.json", &negative, "a negative count");
    assert_eq!(evident_json(d, &["reveal", "--subject", "oncall@example.org"], None, 1), json!([]));

    // verify-db failures, from a database edited behind the triggers' back.
    let db = PathBuf::from(s(&init, "database"));
    let raw = rusqlite::Connection::open(&db).expect("open the database");
    let note1: String =
        raw.query_row("SELECT note FROM checkpoints WHERE size = 1", [], |r| r.get(0)).expect("checkpoint at size 1");
    raw.execute_batch("DROP TRIGGER checkpoints_no_update; DROP TRIGGER entries_no_update").expect("drop triggers");
    let forged = note1.replacen("\n1\n", "\n7\n", 1);
    raw.execute("UPDATE checkpoints SET note = ?1 WHERE size = 1", [&forged]).expect("forge a checkpoint");
    let failed = evident_json(d, &["verify-db"], None, 1);
    assert_valid("evident.verify-db.json", &failed);
    assert_rejects_twins("evident.verify-db.json", &failed);
    assert_eq!(failed["seq"], Value::Null, "a checkpoint fault names no entry: {failed}");
    raw.execute("UPDATE checkpoints SET note = ?1 WHERE size = 1", [&note1]).expect("restore the checkpoint");
    let leaf: Vec<u8> = raw.query_row("SELECT leaf FROM entries WHERE seq = 1", [], |r| r.get(0)).expect("leaf 1");
    let edited = String::from_utf8(leaf).expect("utf8").replace("run-b", "run-x");
    raw.execute("UPDATE entries SET leaf = ?1 WHERE seq = 1", [edited.as_bytes()]).expect("edit a leaf");
    drop(raw);
    let failed = evident_json(d, &["verify-db"], None, 1);
    assert_valid("evident.verify-db.json", &failed);
    assert_eq!(failed["seq"], 1, "{failed}");
    let mut with_report = failed.clone();
    with_report["report"] = vdb["report"].clone();
    assert_invalid("evident.verify-db.json", &with_report, "ok false and a report");
}

/// Every schema in `schemas/cli/`: compiles as draft 2020-12, names itself,
/// documents every property, is closed wherever it lists properties, shares
/// `$defs` without drift, and is listed in the README.
#[test]
fn schemas_are_well_formed() {
    let mut on_disk: Vec<String> = std::fs::read_dir(schema_dir())
        .expect("schemas/cli")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, SCHEMA_FILES, "schemas/cli/ holds exactly the expected files");
    let readme = std::fs::read_to_string(schema_dir().join("README.md")).expect("schemas/cli/README.md");

    let mut defs: BTreeMap<String, (String, Value)> = BTreeMap::new();
    for name in SCHEMA_FILES {
        let schema = load_schema(name);
        validator(name);
        assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema", "{name}");
        assert_eq!(schema["$id"], format!("https://evident.invalid/schemas/cli/{name}").as_str(), "{name}");
        for key in ["title", "description"] {
            assert!(schema[key].as_str().is_some_and(|t| !t.is_empty()), "{name}: no {key}");
        }
        assert!(readme.contains(&format!("[`{name}`]({name})")), "README.md does not list {name}");
        check_documented_and_closed(name, "#", &schema);
        for (def, body) in schema["$defs"].as_object().into_iter().flatten() {
            match defs.get(def) {
                Some((first, seen)) => {
                    assert_eq!(seen, body, "$defs/{def} differs between {first} and {name}: keep the copies identical")
                }
                None => {
                    defs.insert(def.clone(), (name.to_string(), body.clone()));
                }
            }
        }
    }
}

/// Walks a schema: every object schema (`"type": "object"`) with properties
/// has `additionalProperties: false` and a description on every property.
fn check_documented_and_closed(file: &str, at: &str, node: &Value) {
    match node {
        Value::Object(map) => {
            if map.get("type") == Some(&json!("object")) && map.contains_key("properties") {
                assert_eq!(map.get("additionalProperties"), Some(&json!(false)), "{file} {at}: not closed");
                for (prop, sub) in map["properties"].as_object().expect("properties is an object") {
                    assert!(
                        sub.get("description").and_then(Value::as_str).is_some_and(|d| !d.is_empty()),
                        "{file} {at}/properties/{prop}: no description"
                    );
                }
            }
            for (k, v) in map {
                check_documented_and_closed(file, &format!("{at}/{k}"), v);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                check_documented_and_closed(file, &format!("{at}/{i}"), v);
            }
        }
        _ => {}
    }
}
