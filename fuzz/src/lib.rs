//! Fixtures shared by the fuzz targets and the seed generator
//! (`examples/gen_seeds.rs`): fixed, test-only keys and one small pack that
//! verifies, so targets can hold every file of a pack valid but one.
//!
//! Nothing here is secret: the seeds are constants so that seeds and
//! crashes reproduce byte for byte.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use evident_verify::checkpoint::Checkpoint;
use evident_verify::hash::{Hash, leaf_hash};
use evident_verify::leaf::{Entry, Record};
use evident_verify::manifest::{Counts, FileInfo, Manifest, PACK_FORMAT, REPORT_FORMAT, Report, files};
use evident_verify::merkle::CompactRange;
use evident_verify::note::SignerKey;
use evident_verify::pack::{Trust, TrustedKey};
use evident_verify::rules::{Evaluator, RuleSet};
use evident_verify::ts::Timestamp;

/// The log origin, also the ledger key's name.
pub const ORIGIN: &str = "fuzz.example/log";
/// The UTC day of the sample pack.
pub const DAY: &str = "2026-11-21";
/// The producer whose key the sample `key_event` registers.
pub const PRODUCER: &str = "guard-bot";

/// A rules file with one rule of each single-pack kind the sample exercises.
pub const RULES: &[u8] = br#"{"format":"evident-rules/1","rules":[{"id":"guard-reason","title":"Guardrail events give a reason","kpi":"Guardrail reasons","type":"required","kind":"guardrail_event","fields":["reason"]},{"id":"no-egress","title":"No blocked egress","type":"absent","kind":"guardrail_event","where":{"event_type":"egress_blocked"}}]}"#;

/// The trusted ledger key (test-only seed).
pub fn ledger_key() -> SignerKey {
    SignerKey::from_seed(ORIGIN, &[7u8; 32]).expect("valid key name")
}

/// The producer key (test-only seed).
pub fn producer_key() -> SignerKey {
    SignerKey::from_seed(PRODUCER, &[9u8; 32]).expect("valid key name")
}

/// What the verifier trusts in every target: the ledger key, no OpenPGP.
pub fn trust() -> Trust {
    Trust {
        ledger_keys: vec![TrustedKey::always(ledger_key().verifier())],
        pgp_cert: None,
        pgp_time: SystemTime::UNIX_EPOCH,
        producer_signatures: true,
    }
}

fn record(id: &str, kind: &str, producer: &str, body: serde_json::Value) -> Record {
    Record { id: id.into(), kind: kind.into(), producer: producer.into(), at: format!("{DAY}T08:59:59Z"), body }
}

/// The sample day: a `key_event` signed by the ledger key registering the
/// producer key, an entry signed by that key, and an unsigned entry.
pub fn sample_entries() -> Vec<Entry> {
    let ledger = ledger_key();
    let producer = producer_key();
    let key_event = record(
        "ke-1",
        "key_event",
        ORIGIN,
        serde_json::json!({
            "action": "add",
            "producer": PRODUCER,
            "key": producer.verifier().to_string(),
            "valid_from": format!("{DAY}T00:00:00Z"),
        }),
    );
    let signed = record(
        "g-1",
        "guardrail_event",
        PRODUCER,
        serde_json::json!({"agent_id": "agent-7", "event_type": "injection_blocked", "reason": "matched rule 12"}),
    );
    let unsigned = record(
        "g-2",
        "guardrail_event",
        "sidecar",
        serde_json::json!({"agent_id": "agent-7", "event_type": "redaction", "reason": "masked ids", "redaction_count": 2}),
    );
    let sigs = [Some(key_event.sign(&ledger).expect("sign")), Some(signed.sign(&producer).expect("sign")), None];
    [key_event, signed, unsigned]
        .into_iter()
        .zip(sigs)
        .enumerate()
        .map(|(i, (rec, sig))| Entry { v: 1, seq: i as u64, ts: format!("{DAY}T09:00:0{i}.000000Z"), rec, sig })
        .collect()
}

/// Canonical leaf bytes of entries.
pub fn leaves(entries: &[Entry]) -> Vec<Vec<u8>> {
    entries.iter().map(|e| e.to_leaf_bytes().expect("canonical leaf")).collect()
}

/// `entries.jsonl` before compression: one leaf per line.
pub fn jsonl(leaves: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in leaves {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

/// zstd as the reporter writes it (with a content checksum).
pub fn zstd_compress(bytes: &[u8]) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd");
    enc.include_checksum(true).expect("zstd");
    std::io::Write::write_all(&mut enc, bytes).expect("zstd");
    enc.finish().expect("zstd")
}

/// A signed checkpoint note for `size` leaves with root `root`.
pub fn signed_checkpoint(size: u64, root: Hash) -> String {
    let cp = Checkpoint { origin: ORIGIN.into(), size, root, extensions: Vec::new() };
    cp.sign(&[&ledger_key()]).expect("sign checkpoint")
}

fn info(bytes: &[u8]) -> FileInfo {
    FileInfo { sha256: Hash::sha256(bytes).to_hex(), size: bytes.len() as u64 }
}

/// Every file of the sample pack except `entries.jsonl.zst`, and a manifest
/// template that lists them; [`SamplePack::files_for`] fills in the entries
/// file and signs the manifest.
#[derive(Debug)]
pub struct SamplePack {
    /// `checkpoint`, `rules.json`, `report.json`, `report.html`, `manifest.json.asc`.
    pub fixed: Vec<(&'static str, Vec<u8>)>,
    /// The manifest, with `files[entries.jsonl.zst]` still to fill in.
    pub manifest: Manifest,
    /// The valid `entries.jsonl.zst`.
    pub entries_zst: Vec<u8>,
    /// The valid leaves.
    pub leaves: Vec<Vec<u8>>,
}

impl SamplePack {
    /// Builds the sample pack of [`sample_entries`].
    pub fn new() -> SamplePack {
        let entries = sample_entries();
        let leaves = leaves(&entries);
        let mut range = CompactRange::new();
        for l in &leaves {
            range.append(leaf_hash(l));
        }
        let end = leaves.len() as u64;
        let checkpoint = signed_checkpoint(end, range.root()).into_bytes();
        let rules = RuleSet::parse(RULES).expect("sample rules parse");
        let mut eval = Evaluator::new(&rules);
        let mut counts = Counts::default();
        for e in &entries {
            let ts = Timestamp::parse(&e.ts).expect("canonical ts");
            eval.observe(e.seq, ts, &e.rec).expect("rules evaluate");
            *counts.by_kind.entry(e.rec.kind.clone()).or_default() += 1;
            *counts.by_producer.entry(e.rec.producer.clone()).or_default() += 1;
        }
        let report = Report {
            format: REPORT_FORMAT.into(),
            origin: ORIGIN.into(),
            day: DAY.into(),
            start: 0,
            end,
            rules_sha256: rules.sha256().to_hex(),
            history_from: 0,
            rules: eval.finish(),
            counts: counts.clone(),
        };
        let report = report.to_bytes().expect("report bytes");
        let html = b"<!doctype html><title>fuzz sample pack</title>\n".to_vec();
        let asc = b"-----BEGIN PGP SIGNATURE-----\n\n-----END PGP SIGNATURE-----\n".to_vec();
        let entries_zst = zstd_compress(&jsonl(&leaves));
        let mut listed = BTreeMap::new();
        listed.insert(files::CHECKPOINT.to_string(), info(&checkpoint));
        listed.insert(files::RULES.to_string(), info(RULES));
        listed.insert(files::REPORT_JSON.to_string(), info(&report));
        listed.insert(files::REPORT_HTML.to_string(), info(&html));
        listed.insert(files::ENTRIES.to_string(), info(&entries_zst));
        let manifest = Manifest {
            format: PACK_FORMAT.into(),
            origin: ORIGIN.into(),
            day: DAY.into(),
            start: 0,
            end,
            previous: None,
            compact_range: Vec::new(),
            counts,
            files: listed,
            rules_sha256: rules.sha256().to_hex(),
            ledger_key: ledger_key().verifier().to_string(),
            pgp_fingerprint: "0000000000000000000000000000000000000000".into(),
            producer_keys: Vec::new(),
            generator: "evident-fuzz sample".into(),
            created_at: format!("{DAY}T23:59:59Z"),
        };
        let fixed = vec![
            (files::MANIFEST_ASC, asc),
            (files::CHECKPOINT, checkpoint),
            (files::RULES, RULES.to_vec()),
            (files::REPORT_JSON, report),
            (files::REPORT_HTML, html),
        ];
        SamplePack { fixed, manifest, entries_zst, leaves }
    }

    /// `manifest.json` and `manifest.json.sig` for a pack whose entries file
    /// is `entries_zst`: listed with its real digest and signed, so the
    /// verifier goes on to decompress and parse it.
    pub fn manifest_for(&self, entries_zst: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut m = self.manifest.clone();
        m.files.insert(files::ENTRIES.to_string(), info(entries_zst));
        let bytes = m.to_bytes().expect("manifest bytes");
        let mut sig = B64.encode(ledger_key().sign(&bytes)).into_bytes();
        sig.push(b'\n');
        (bytes, sig)
    }

    /// All eight files, in tar order, with `entries_zst` as the entries file.
    pub fn files_for(&self, entries_zst: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
        let (manifest, sig) = self.manifest_for(entries_zst);
        let mut out = vec![(files::MANIFEST, manifest), (files::MANIFEST_SIG, sig)];
        for name in &files::ORDER[2..7] {
            let (_, b) = self.fixed.iter().find(|(n, _)| n == name).expect("fixed file");
            out.push((name, b.clone()));
        }
        out.push((files::ENTRIES, entries_zst.to_vec()));
        out
    }

    /// Writes the pack as a directory.
    pub fn write_dir(&self, dir: &Path, entries_zst: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (name, bytes) in self.files_for(entries_zst) {
            std::fs::write(dir.join(name), bytes)?;
        }
        Ok(())
    }

    /// The pack as a `.tar`, with the reporter's deterministic ustar headers.
    pub fn tar(&self, entries_zst: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, bytes) in self.files_for(entries_zst) {
            let mut h = tar::Header::new_ustar();
            h.set_path(name).expect("tar path");
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append(&h, bytes.as_slice()).expect("tar append");
        }
        b.into_inner().expect("tar finish")
    }
}

impl Default for SamplePack {
    fn default() -> Self {
        SamplePack::new()
    }
}
