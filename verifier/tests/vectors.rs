//! Known-answer vectors from independent implementations (shared/vectors):
//! RFC 9162 proofs from the transparency-dev/merkle Go module (Apache-2.0)
//! and C2SP signed notes from golang.org/x/mod/sumdb/note (BSD-3-Clause).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use evident_verify::hash::Hash;
use evident_verify::merkle::{verify_consistency, verify_inclusion};
use evident_verify::note::{self, NoteError, SignerKey, VerifierKey};
use serde_json::Value;

fn vectors_dir() -> PathBuf {
    let dir = std::env::var_os("EVIDENT_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"));
    assert!(dir.is_dir(), "test vectors not found at {} (set EVIDENT_VECTORS)", dir.display());
    dir
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read dir").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            json_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "json") {
            out.push(p);
        }
    }
}

fn b64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().expect("base64 string")).expect("valid base64")
}

/// Proof hashes as typed values; a proof element that is not 32 bytes is
/// rejected by parsing, before verification.
fn proof(v: &Value) -> Option<Vec<Hash>> {
    v.as_array()
        .map(|a| a.iter().map(|h| Hash::from_slice(&b64(h))).collect::<Option<Vec<_>>>())
        .unwrap_or(Some(Vec::new()))
}

fn run(kind: &str, check: impl Fn(&Value) -> bool) -> (usize, usize) {
    let mut files = Vec::new();
    json_files(&vectors_dir().join("rfc9162").join(kind), &mut files);
    let (mut ran, mut rejected) = (0, 0);
    for f in &files {
        let v: Value = serde_json::from_slice(&std::fs::read(f).expect("read")).expect("json");
        let want_err = v["wantErr"].as_bool().expect("wantErr");
        let ok = check(&v);
        assert_eq!(ok, !want_err, "{}: {} (wantErr={want_err})", f.display(), v["desc"]);
        ran += 1;
        rejected += usize::from(!ok);
    }
    (ran, rejected)
}

#[test]
fn rfc9162_inclusion_vectors() {
    let (ran, rejected) = run("inclusion", |v| {
        // A leaf hash or root that is not 32 bytes is refused by parsing.
        let (Some(p), Some(leaf), Some(root)) =
            (proof(&v["proof"]), Hash::from_slice(&b64(&v["leafHash"])), Hash::from_slice(&b64(&v["root"])))
        else {
            return false;
        };
        verify_inclusion(
            v["leafIdx"].as_u64().expect("leafIdx"),
            v["treeSize"].as_u64().expect("treeSize"),
            &leaf,
            &p,
            &root,
        )
        .is_ok()
    });
    println!("rfc9162 inclusion: ran {ran} cases, {rejected} rejected as wanted");
    assert!(ran >= 90, "expected the full inclusion set, ran {ran}");
}

#[test]
fn rfc9162_consistency_vectors() {
    let (ran, rejected) = run("consistency", |v| {
        let Some(p) = proof(&v["proof"]) else { return false };
        verify_consistency(
            v["size1"].as_u64().expect("size1"),
            v["size2"].as_u64().expect("size2"),
            &p,
            &b64(&v["root1"]),
            &b64(&v["root2"]),
        )
        .is_ok()
    });
    println!("rfc9162 consistency: ran {ran} cases, {rejected} rejected as wanted");
    assert!(ran >= 90, "expected the full consistency set, ran {ran}");
}

#[test]
fn signed_note_vectors() {
    let v: Value =
        serde_json::from_slice(&std::fs::read(vectors_dir().join("signed-note.json")).expect("read")).expect("json");
    let s = |k: &str| v[k].as_str().expect(k).to_string();
    let signer = SignerKey::parse(&s("signer_key")).expect("signer key parses");
    let verifier = VerifierKey::parse(&s("verifier_key")).expect("verifier key parses");
    assert_eq!(signer.verifier(), verifier);
    assert_eq!(signer.verifier().to_string(), s("verifier_key"), "verifier key string round trip");
    assert_eq!(signer.to_secret_string(), s("signer_key"), "signer key string round trip");

    // Sign byte for byte.
    let signed = note::sign(&s("text"), &[&signer]).expect("sign");
    assert_eq!(signed, s("signed"));

    let opened = note::open(signed.as_bytes(), std::slice::from_ref(&verifier)).expect("open");
    assert_eq!(opened.text, s("text"));
    assert_eq!(opened.verified, vec![verifier.id()]);

    // The second signature is kept, reported, and never trusted.
    let both = note::open(s("signed_by_both").as_bytes(), std::slice::from_ref(&verifier)).expect("open both");
    assert_eq!(both.verified, vec![verifier.id()]);
    assert_eq!(both.unknown.len(), 1);
    assert_eq!(both.unknown[0].name, "EnochRoot");
    let second = VerifierKey::parse(&s("second_verifier_key")).expect("second key");
    assert_eq!(both.unknown[0].id(), second.id());
    // With only the unknown key trusted, its signature verifies instead.
    let only_second = note::open(s("signed_by_both").as_bytes(), std::slice::from_ref(&second)).expect("open");
    assert_eq!(only_second.verified, vec![second.id()]);
    // With no trusted key at all, nothing is trusted.
    assert!(matches!(note::open(signed.as_bytes(), &[second]), Err(NoteError::Untrusted(_))));

    let rejects = v["must_reject"].as_array().expect("must_reject");
    for r in rejects {
        let msg = r["note"].as_str().expect("note");
        assert!(
            note::open(msg.as_bytes(), std::slice::from_ref(&verifier)).is_err(),
            "accepted a must_reject note: {}",
            r["why"]
        );
    }
    println!("signed-note: 1 signed byte for byte, {} must_reject notes rejected", rejects.len());
}
