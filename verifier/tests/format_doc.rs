//! docs/FORMAT.md is checked against the library that defines the formats.
//!
//! The worked example of FORMAT.md §13 is recomputed here from its fixed
//! seeds and records, and every value the document shows must equal the
//! recomputed one, byte for byte. The proof-length formulas of §6 are
//! checked against the library for every small tree, and the limits table
//! of §11.9 must list every limit constant with its value. Change a hash, a
//! key string or a limit in the document (or a format in the code) and this
//! test fails.
//!
//! # Markers in the document
//!
//! Values live in fenced blocks whose info string starts with
//! `evident-example`:
//!
//! - ```` ```evident-example ```` holds one value per line, `label: value`
//!   (split at the first `": "`); blank lines are ignored.
//! - ```` ```evident-example LABEL ```` holds one multi-line value: every
//!   line up to the closing fence, each ending in `\n`.
//!
//! Every label must appear exactly once, and the document must hold no label
//! the test does not compute. Limits are rows of a Markdown table whose first
//! cell is a backticked `module::CONSTANT` and whose second cell is the
//! decimal value.
//!
//! To regenerate the values after a deliberate format change, run
//! `cargo test -p evident-verify --test format_doc -- --nocapture` and paste
//! the printed blocks into the document.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use evident_verify::checkpoint::{self, Checkpoint};
use evident_verify::hash::{Hash, hex_encode, leaf_hash, node_hash};
use evident_verify::leaf::{Entry, Record, canonical_json};
use evident_verify::merkle::{
    MemoryTree, prove_consistency, prove_inclusion, rs_merkle_root, verify_consistency, verify_inclusion,
};
use evident_verify::note::{self, SignerKey, key_hash};
use evident_verify::receipt::Receipt;
use evident_verify::schema::Schemas;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const LEDGER_NAME: &str = "example.org/ledger";
const LEDGER_SEED: [u8; 32] = [0x01; 32];
const PRODUCER_NAME: &str = "deploy-bot";
const PRODUCER_SEED: [u8; 32] = [0x02; 32];
const COMMIT_SALT: [u8; 32] = [0x03; 32];
const COMMIT_VALUE: &str = "alice@example.org";

fn doc_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/FORMAT.md")
}

/// The three records of the example, in seq order, with their ledger `ts`.
fn records() -> Vec<(Record, &'static str)> {
    let identity = json!({"spiffe_id": "spiffe://prod.example.org/ns/promotion/sa/promotion-adapter"});
    vec![
        (
            Record {
                id: "authz-7f3c2a10".into(),
                kind: "authorization".into(),
                producer: PRODUCER_NAME.into(),
                at: "2026-11-21T09:30:11.912Z".into(),
                body: json!({
                    "authorization_id": "authz-7f3c2a10",
                    "decision_hash": "sha256:efaf3d20e6368a495d8569657996ac774313e8ec42a08ef789fd0df98b13b677",
                    "token_jti": "8d1c6f0e-2b7a-4c55-9e13-5a4f0b6d7e21",
                    "verdict": "allow",
                    "policy_bundle_hash": "sha256:cbc90e38f7ee57c55fd62eca8020109d6c527b7c4283941d25bbde47000d511d",
                    "enforcement_epoch": 42,
                    "action_scope": "promotion:prod/payments-api",
                    "execution_identity": identity,
                }),
            },
            "2026-11-21T09:30:12.000000Z",
        ),
        (
            Record {
                id: "exec-5521-started".into(),
                kind: "execution".into(),
                producer: PRODUCER_NAME.into(),
                at: "2026-11-21T09:30:13.101Z".into(),
                body: json!({
                    "execution_id": "exec-5521",
                    "authorization_id": "authz-7f3c2a10",
                    "phase": "started",
                    "action_scope": "promotion:prod/payments-api",
                    "execution_identity": identity,
                }),
            },
            "2026-11-21T09:30:13.250000Z",
        ),
        (
            Record {
                id: "inv-014-nightly-2026-11-21".into(),
                kind: "invariant_result".into(),
                producer: PRODUCER_NAME.into(),
                at: "2026-11-21T09:30:59.5Z".into(),
                body: json!({
                    "invariant_id": "INV-014",
                    "severity": "P0",
                    "status": "pass",
                    "verification_command": "scripts/audit/verify_ai_attestation.sh",
                    "evidence_hash": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "duration_ms": 1234,
                    "run_id": "nightly-2026-11-21",
                }),
            },
            "2026-11-21T09:31:00.000001Z",
        ),
    ]
}

/// The `key_event` that registers the producer key (signed by the ledger key).
fn key_event(producer_vkey: &str) -> Record {
    Record {
        id: "key-add-deploy-bot-1".into(),
        kind: "key_event".into(),
        producer: LEDGER_NAME.into(),
        at: "2026-11-21T00:00:00Z".into(),
        body: json!({
            "action": "add",
            "producer": PRODUCER_NAME,
            "key": producer_vkey,
            "valid_from": "2026-11-21T00:00:00Z",
        }),
    }
}

/// HMAC-SHA256 (RFC 2104), written out so the commitment example does not
/// depend on the ledger crate.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new().chain_update(&ipad).chain_update(msg).finalize();
    Sha256::new().chain_update(&opad).chain_update(inner).finalize().into()
}

fn hexes(hs: &[Hash]) -> String {
    hs.iter().map(Hash::to_hex).collect::<Vec<_>>().join(" ")
}

fn b64_list(hs: &[Hash]) -> String {
    serde_json::to_string(&hs.iter().map(Hash::to_base64).collect::<Vec<_>>()).expect("json")
}

/// A computed value: a one-line value, or a multi-line block.
enum Val {
    Line(String),
    Block(String),
}

/// Recomputes every value of the worked example, in document order, and
/// checks along the way that the library accepts what it produced.
fn compute() -> Vec<(String, Val)> {
    let mut out: Vec<(String, Val)> = Vec::new();
    let mut line = |label: &str, v: String| out.push((label.to_string(), Val::Line(v)));

    // Keys.
    let ledger = SignerKey::from_seed(LEDGER_NAME, &LEDGER_SEED).expect("ledger key");
    let producer = SignerKey::from_seed(PRODUCER_NAME, &PRODUCER_SEED).expect("producer key");
    line("ledger_seed", hex_encode(&LEDGER_SEED));
    line("ledger_public_key", hex_encode(ledger.verifier().key().as_bytes()));
    line("ledger_key_hash", hex_encode(&key_hash(LEDGER_NAME, ledger.verifier().key())));
    line("ledger_vkey", ledger.verifier().to_string());
    line("ledger_skey", ledger.to_secret_string());
    line("producer_seed", hex_encode(&PRODUCER_SEED));
    line("producer_public_key", hex_encode(producer.verifier().key().as_bytes()));
    let mut preimage = Vec::new();
    preimage.extend_from_slice(PRODUCER_NAME.as_bytes());
    preimage.push(b'\n');
    preimage.push(0x01);
    preimage.extend_from_slice(producer.verifier().key().as_bytes());
    line("producer_key_hash_input", hex_encode(&preimage));
    line("producer_key_hash_sha256", Hash::sha256(&preimage).to_hex());
    let kh = key_hash(PRODUCER_NAME, producer.verifier().key());
    assert_eq!(kh[..], Hash::sha256(&preimage).0[..4]);
    line("producer_key_hash", hex_encode(&kh));
    line("producer_key_id", producer.id());
    line("producer_vkey", producer.verifier().to_string());
    line("producer_skey", producer.to_secret_string());
    assert_eq!(note::VerifierKey::parse(&producer.verifier().to_string()).expect("parses"), producer.verifier());
    assert_eq!(SignerKey::parse(&producer.to_secret_string()).expect("parses").id(), producer.id());

    // Records, signatures and leaves.
    let schemas = Schemas::embedded().expect("schemas");
    let mut tree = MemoryTree::new();
    let mut leaves: Vec<Vec<u8>> = Vec::new();
    let mut hashes: Vec<Hash> = Vec::new();
    for (seq, (rec, ts)) in records().into_iter().enumerate() {
        rec.check().expect("record envelope");
        schemas.validate(&rec.kind, &rec.body).expect("body is valid for its kind");
        let jcs = rec.signing_bytes().expect("jcs");
        let sig = rec.sign(&producer).expect("sign");
        rec.verify(&sig, &producer.verifier()).expect("verifies");
        line(&format!("rec_jcs[{seq}]"), String::from_utf8(jcs).expect("utf8"));
        line(&format!("rec_sig[{seq}]"), sig.ed25519.clone());
        let entry = Entry { v: 1, seq: seq as u64, ts: ts.into(), rec, sig: Some(sig) };
        let bytes = entry.to_leaf_bytes().expect("leaf");
        assert_eq!(Entry::parse_leaf(&bytes).expect("strict parse"), entry);
        let lh = leaf_hash(&bytes);
        line(&format!("leaf[{seq}]"), String::from_utf8(bytes.clone()).expect("utf8"));
        line(&format!("leaf_len[{seq}]"), bytes.len().to_string());
        line(&format!("leaf_hash[{seq}]"), lh.to_hex());
        tree.append(lh);
        leaves.push(bytes);
        hashes.push(lh);
    }

    // The tree.
    let n01 = node_hash(&hashes[0], &hashes[1]);
    let root3 = node_hash(&n01, &hashes[2]);
    line("node[0:2]", n01.to_hex());
    line("root[0]", Hash::empty_root().to_hex());
    line("root[1]", hashes[0].to_hex());
    line("root[2]", n01.to_hex());
    line("root[3]", root3.to_hex());
    line("root_base64[3]", root3.to_base64());
    assert_eq!(tree.root(), root3);
    assert_eq!(rs_merkle_root(&hashes), root3);
    for size in 0..=3u64 {
        let r = evident_verify::merkle::root_at(&tree, size).expect("root");
        assert_eq!(r, rs_merkle_root(&hashes[..size as usize]));
    }
    let mut range2 = MemoryTree::new();
    range2.append(hashes[0]);
    range2.append(hashes[1]);
    line("compact_range[2]", b64_list(range2.compact_range().hashes()));
    line("compact_range[3]", b64_list(tree.compact_range().hashes()));
    assert_eq!(range2.compact_range().hashes(), [n01]);
    assert_eq!(tree.compact_range().hashes(), [n01, hashes[2]]);

    // Proofs.
    let inc0 = prove_inclusion(&tree, 0, 3).expect("proof");
    verify_inclusion(0, 3, &hashes[0], &inc0, &root3).expect("inclusion of 0");
    line("inclusion[0,3]", hexes(&inc0));
    let inc2 = prove_inclusion(&tree, 2, 3).expect("proof");
    verify_inclusion(2, 3, &hashes[2], &inc2, &root3).expect("inclusion of 2");
    line("inclusion[2,3]", hexes(&inc2));
    let cons = prove_consistency(&tree, 2, 3).expect("proof");
    verify_consistency(2, 3, &cons, &n01.0, &root3.0).expect("consistency 2 -> 3");
    line("consistency[2,3]", hexes(&cons));
    let cons13 = prove_consistency(&tree, 1, 3).expect("proof");
    verify_consistency(1, 3, &cons13, &hashes[0].0, &root3.0).expect("consistency 1 -> 3");
    line("consistency[1,3]", hexes(&cons13));

    // The checkpoint.
    let cp = Checkpoint::new(LEDGER_NAME, tree.compact_range().head());
    let body = cp.to_text();
    let signed = cp.sign(&[&ledger]).expect("sign checkpoint");
    let opened = checkpoint::open(signed.as_bytes(), &[ledger.verifier()], Some(LEDGER_NAME)).expect("opens");
    assert_eq!(opened.checkpoint, cp);
    let sig_line = signed.lines().last().expect("signature line");
    let sig_b64 = sig_line.rsplit(' ').next().expect("base64");
    let sig_raw = B64.decode(sig_b64).expect("base64");
    line("checkpoint_signature_hex[3]", hex_encode(&sig_raw));
    out.push(("checkpoint_body[3]".into(), Val::Block(body)));
    out.push(("signed_checkpoint[3]".into(), Val::Block(signed.clone())));

    // The receipt file for seq 0 at size 3, as `evident prove` writes it.
    let receipt = Receipt {
        format: evident_verify::receipt::RECEIPT_FORMAT.into(),
        seq: 0,
        tree_size: 3,
        leaf: String::from_utf8(leaves[0].clone()).expect("utf8"),
        inclusion: inc0.iter().map(Hash::to_base64).collect(),
        checkpoint: signed,
    };
    let text = serde_json::to_string_pretty(&receipt).expect("json") + "\n";
    let parsed = Receipt::parse(text.as_bytes()).expect("parses");
    parsed.verify(&[ledger.verifier()], Some(LEDGER_NAME)).expect("receipt verifies");
    out.push(("receipt[0,3]".into(), Val::Block(text)));

    // The key_event that registers the producer key, signed by the ledger key.
    let mut line = |label: &str, v: String| out.push((label.to_string(), Val::Line(v)));
    let kev = key_event(&producer.verifier().to_string());
    schemas.validate(&kev.kind, &kev.body).expect("key_event body");
    let kev_sig = kev.sign(&ledger).expect("ledger signs");
    kev.verify(&kev_sig, &ledger.verifier()).expect("verifies");
    line("key_event_rec_jcs", String::from_utf8(kev.signing_bytes().expect("jcs")).expect("utf8"));
    line("key_event_sig", serde_json::to_string(&kev_sig).expect("json"));

    // A PII commitment.
    let value = Value::String(COMMIT_VALUE.into());
    let value_jcs = canonical_json(&value).expect("jcs");
    let mac = hmac_sha256(&COMMIT_SALT, &value_jcs);
    line("commit_salt", hex_encode(&COMMIT_SALT));
    line("commit_value_jcs", String::from_utf8(value_jcs).expect("utf8"));
    line("commit_hmac", hex_encode(&mac));
    let commit = json!({"$commit": B64.encode(mac)});
    line("commit_object", String::from_utf8(canonical_json(&commit).expect("jcs")).expect("utf8"));
    line("commit_inline", format!("{{{{commit:{}}}}}", B64.encode(mac)));
    out
}

/// Extracts the labelled values of every `evident-example` block.
fn extract(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(l) = lines.next() {
        let Some(info) = l.strip_prefix("```evident-example") else { continue };
        let label = info.trim();
        let mut body = Vec::new();
        loop {
            let l = lines.next().unwrap_or_else(|| panic!("unclosed evident-example block {label:?}"));
            if l == "```" {
                break;
            }
            body.push(l);
        }
        if label.is_empty() {
            for l in body.into_iter().filter(|l| !l.trim().is_empty()) {
                let (k, v) = l.split_once(": ").unwrap_or_else(|| panic!("not `label: value`: {l:?}"));
                out.push((k.to_string(), v.to_string()));
            }
        } else {
            out.push((label.to_string(), body.iter().map(|l| format!("{l}\n")).collect()));
        }
    }
    out
}

fn print_for_doc(values: &[(String, Val)]) {
    let mut open = false;
    for (label, v) in values {
        match v {
            Val::Line(s) => {
                if !open {
                    println!("```evident-example");
                    open = true;
                }
                println!("{label}: {s}");
            }
            Val::Block(s) => {
                if open {
                    println!("```\n");
                    open = false;
                }
                print!("```evident-example {label}\n{s}```\n\n");
            }
        }
    }
    if open {
        println!("```");
    }
}

#[test]
fn worked_example_matches_the_library() {
    let computed = compute();
    print_for_doc(&computed);
    let doc = std::fs::read_to_string(doc_path()).expect("docs/FORMAT.md is readable");
    let found = extract(&doc);
    let mut in_doc: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in &found {
        assert!(in_doc.insert(k, v).is_none(), "label {k} appears more than once in docs/FORMAT.md");
    }
    let mut failures = Vec::new();
    for (label, v) in &computed {
        let want = match v {
            Val::Line(s) | Val::Block(s) => s.as_str(),
        };
        match in_doc.remove(label.as_str()) {
            None => failures.push(format!("{label}: missing from docs/FORMAT.md")),
            Some(got) if got != want => {
                failures.push(format!("{label}:\n  document:   {got:?}\n  recomputed: {want:?}"))
            }
            Some(_) => {}
        }
    }
    for label in in_doc.keys() {
        failures.push(format!("{label}: in docs/FORMAT.md but not computed by this test"));
    }
    assert!(failures.is_empty(), "docs/FORMAT.md disagrees with the library:\n{}", failures.join("\n"));
    assert!(computed.len() >= 50, "the example shrank: {} values", computed.len());
}

/// Every limit constant, with the value the library has.
fn limits() -> Vec<(&'static str, u64)> {
    use evident_verify::{leaf, manifest, note, pgp, receipt, rules};
    vec![
        ("leaf::LEAF_VERSION", leaf::LEAF_VERSION),
        ("leaf::MAX_LEAF_BYTES", leaf::MAX_LEAF_BYTES as u64),
        ("leaf::MAX_ID_BYTES", leaf::MAX_ID_BYTES as u64),
        ("leaf::MAX_DEPTH", leaf::MAX_DEPTH as u64),
        ("note::MAX_NOTE_BYTES", note::MAX_NOTE_BYTES as u64),
        ("note::MAX_SIGNATURES", note::MAX_SIGNATURES as u64),
        ("receipt::MAX_RECEIPT_BYTES", receipt::MAX_RECEIPT_BYTES as u64),
        ("manifest::MAX_MANIFEST_BYTES", manifest::MAX_MANIFEST_BYTES as u64),
        ("manifest::MAX_SMALL_FILE_BYTES", manifest::MAX_SMALL_FILE_BYTES),
        ("manifest::MAX_ENTRIES_BYTES", manifest::MAX_ENTRIES_BYTES),
        ("manifest::MAX_ENTRIES", manifest::MAX_ENTRIES),
        ("manifest::MAX_LINE_BYTES", manifest::MAX_LINE_BYTES as u64),
        ("pgp::MAX_CERT_BYTES", pgp::MAX_CERT_BYTES as u64),
        ("pgp::MAX_SIGNATURE_BYTES", pgp::MAX_SIGNATURE_BYTES as u64),
        ("rules::MAX_RULES_BYTES", rules::MAX_RULES_BYTES as u64),
        ("rules::MAX_RULES", rules::MAX_RULES as u64),
        ("rules::MAX_OFFENDING", rules::MAX_OFFENDING as u64),
    ]
}

#[test]
fn limits_table_matches_the_library() {
    let doc = std::fs::read_to_string(doc_path()).expect("docs/FORMAT.md is readable");
    let mut table: BTreeMap<String, u64> = BTreeMap::new();
    for l in doc.lines() {
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        // `| `module::NAME` | value | ... |` splits into ["", name, value, ...].
        if cells.len() < 4 || !cells[0].is_empty() {
            continue;
        }
        let Some(name) = cells[1].strip_prefix('`').and_then(|c| c.strip_suffix('`')) else { continue };
        if !name.contains("::") || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
            continue;
        }
        let value: u64 =
            cells[2].replace('_', "").parse().unwrap_or_else(|_| panic!("{name}: bad value {:?}", cells[2]));
        assert!(table.insert(name.to_string(), value).is_none(), "{name} listed twice");
    }
    for (name, value) in limits() {
        assert_eq!(table.remove(name), Some(value), "limits table in docs/FORMAT.md: {name}");
    }
    assert!(table.is_empty(), "limits table lists constants the test does not know: {table:?}");
}

/// The proof lengths for trees too big to build, up to `u64::MAX` leaves,
/// against RFC 9162's recursive definition of the paths (found by fuzzing:
/// `index >> inner` with `inner` = 64 overflowed).
#[test]
fn proof_lengths_hold_up_to_the_largest_tree() {
    use evident_verify::merkle::{consistency_proof_len, inclusion_proof_len};
    // Largest power of two strictly less than n (n >= 2).
    fn k(n: u64) -> u64 {
        1u64 << (63 - (n - 1).leading_zeros())
    }
    // RFC 9162 §2.1.3.1 PATH(m, D[n]) length.
    fn path(m: u64, n: u64) -> usize {
        if n <= 1 {
            0
        } else if m < k(n) {
            1 + path(m, k(n))
        } else {
            1 + path(m - k(n), n - k(n))
        }
    }
    // RFC 9162 §2.1.4.1 SUBPROOF(m, D[n], b) length.
    fn subproof(m: u64, n: u64, b: bool) -> usize {
        if m == n {
            usize::from(!b)
        } else if m <= k(n) {
            1 + subproof(m, k(n), b)
        } else {
            1 + subproof(m - k(n), n - k(n), false)
        }
    }
    let top = 1u64 << 63;
    let sizes = [2, 3, top - 1, top, top + 1, u64::MAX - 1, u64::MAX];
    for &size in &sizes {
        for index in [0, 1, size / 2, top - 1, top, top + 1, size - 2, size - 1] {
            if index < size {
                assert_eq!(inclusion_proof_len(index, size), path(index, size), "inclusion {index} in {size}");
            }
        }
        for old in [1, 2, 3, size / 2, top - 1, top, top + 1, size - 1] {
            if (1..size).contains(&old) {
                assert_eq!(consistency_proof_len(old, size), subproof(old, size, true), "consistency {old} -> {size}");
            }
        }
    }
}

/// The exact proof lengths FORMAT.md §6.2 and §6.3 state, written from the
/// document's formulas, agree with the library for every tree up to 300.
#[test]
fn proof_length_formulas_match_the_library() {
    use evident_verify::merkle::{consistency_proof_len, inclusion_proof_len};
    let bit_len = |x: u64| 64 - x.leading_zeros();
    for size2 in 1..300u64 {
        for index in 0..size2 {
            let inner = bit_len(index ^ (size2 - 1));
            let border = (index >> inner).count_ones();
            assert_eq!(inclusion_proof_len(index, size2), (inner + border) as usize, "inclusion {index} in {size2}");
        }
        for size1 in 1..size2 {
            let shift = size1.trailing_zeros();
            let inner = bit_len((size1 - 1) ^ (size2 - 1));
            let border = ((size1 - 1) >> inner).count_ones();
            let start = u32::from(!size1.is_power_of_two());
            let want = (start + inner - shift + border) as usize;
            assert_eq!(consistency_proof_len(size1, size2), want, "consistency {size1} -> {size2}");
        }
    }
}
