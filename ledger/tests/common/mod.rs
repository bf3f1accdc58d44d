//! Shared test fixtures: a real SQLite ledger in a temp dir, a registered
//! producer, and realistic bodies from schemas/examples.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use evident_ledger::{Ledger, LedgerOptions, Signer, Submission};
use evident_verify::hash::TreeHead;
use evident_verify::note::SignerKey;
use serde_json::Value;

pub const ORIGIN: &str = "test.evident/ledger";

pub fn ledger_key() -> SignerKey {
    SignerKey::from_seed(ORIGIN, &[1; 32]).expect("name")
}

pub fn producer_key() -> SignerKey {
    SignerKey::from_seed("deploy-bot", &[2; 32]).expect("name")
}

pub fn options(dir: &Path) -> LedgerOptions {
    let mut o = LedgerOptions::new(dir.join("ledger.db"), ORIGIN, ledger_key());
    o.unsigned_producers = vec!["legacy-batch".into()];
    // Merge the idempotency index's recent rows every few dozen appends, so
    // that every test (crashes and two processes included) runs through
    // merges, not only ledgers of 65,536 entries and more.
    o.merge_min = 64;
    o
}

/// A new ledger with `deploy-bot`'s key registered from the epoch on.
pub fn new_ledger(dir: &Path) -> Ledger {
    let l = Ledger::create(options(dir)).expect("create ledger");
    l.add_key("deploy-bot", &producer_key().verifier(), Some("2020-01-01T00:00:00Z")).expect("register producer key");
    l
}

pub fn example(kind: &str, i: usize) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../schemas/examples/{kind}.valid.json"));
    let v: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(p).expect("example")).expect("json");
    v[i % v.len()].clone()
}

pub fn signer() -> &'static Signer {
    static S: std::sync::OnceLock<Signer> = std::sync::OnceLock::new();
    S.get_or_init(|| Signer::new(producer_key()).expect("signer"))
}

/// A signed invariant_result with a unique id.
pub fn record(n: usize) -> Submission {
    let mut body = example("invariant_result", 0);
    body["run_id"] = Value::String(format!("ci-run-{n}"));
    signer().sign(&format!("rec-{n}"), "invariant_result", "2026-11-21T09:30:12Z", body).expect("sign")
}

pub fn head(l: &Ledger) -> TreeHead {
    l.head().expect("head")
}
