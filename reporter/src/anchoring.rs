//! Anchoring a built pack (DESIGN §6): its tar and its checkpoint go to the
//! configured [`AnchorStore`], and each success becomes an `anchor_receipt`
//! ledger entry (`schemas/kinds/anchor_receipt.json`), so the next day's
//! pack carries the proof of this day's anchoring.
//!
//! The truth is the store and the ledger. A rerun puts again (the store
//! adopts identical bytes) and appends again; a receipt that is already in
//! the ledger under the same record id (`anchor-<day>-<artifact>`) counts as
//! recorded once its SHA-256 and manifest digest are checked. The file
//! `<packs_dir>/<day>.anchored.json` is only a cache that spares those calls
//! on later runs; every entry in it is checked against the ledger before it
//! is believed.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use evident_ledger::{AppendError, Ledger};
use evident_verify::leaf::Entry;
use evident_verify::manifest::files;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::anchor::{AnchorReceipt, AnchorStore};
use crate::error::ReportError;
use crate::pack::{BuiltPack, sync_dir};

/// The artifacts anchored per day.
pub const ARTIFACTS: [&str; 2] = ["pack", "checkpoint"];

/// The object name of an artifact in the anchor store.
pub fn anchor_name(day: NaiveDate, artifact: &str) -> String {
    match artifact {
        "pack" => format!("packs/{day}.tar"),
        _ => format!("checkpoints/{day}.checkpoint"),
    }
}

/// The ledger record id of an artifact's receipt.
pub fn record_id(day: NaiveDate, artifact: &str) -> String {
    format!("anchor-{day}-{artifact}")
}

/// `<packs_dir>/<day>.anchored.json`.
pub fn status_path(packs_dir: &Path, day: NaiveDate) -> PathBuf {
    packs_dir.join(format!("{day}.anchored.json"))
}

/// One anchored and recorded artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorRecord {
    /// `pack` or `checkpoint`.
    pub artifact: String,
    /// Object name in the store (`packs/<day>.tar`, `checkpoints/<day>.checkpoint`).
    pub name: String,
    /// `fs` or `s3`.
    pub backend: String,
    /// Where it lies (absolute path, or `s3://bucket/key`).
    pub location: String,
    /// Hex SHA-256 of the anchored bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// S3 version id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// Object Lock mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock_mode: Option<String>,
    /// Object Lock retain-until date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_until: Option<String>,
    /// Seq of the `anchor_receipt` entry.
    pub seq: u64,
    /// What this run did: `recorded` (new receipt appended), `already-recorded`
    /// (the ledger had it) or `cached` (nothing to do).
    pub status: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct StatusFile {
    day: String,
    manifest_sha256: String,
    anchors: Vec<AnchorRecord>,
}

/// The cached anchor records of a pack, each confirmed against the ledger;
/// `None` unless every artifact has a confirmed receipt for this manifest.
pub fn cached_anchors(ledger: &Ledger, pack: &BuiltPack) -> Option<Vec<AnchorRecord>> {
    let path = status_path(pack.dir.parent()?, pack.day);
    let st: StatusFile = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    if st.day != pack.day.to_string() || st.manifest_sha256 != pack.manifest_sha256 {
        return None;
    }
    let mut out = Vec::new();
    for artifact in ARTIFACTS {
        let rec = st.anchors.iter().find(|a| a.artifact == artifact)?;
        let body = recorded_body(ledger, rec.seq, pack.day, artifact).ok()??;
        let same = body.get("sha256").and_then(Value::as_str) == Some(rec.sha256.as_str())
            && body.get("manifest_sha256").and_then(Value::as_str) == Some(pack.manifest_sha256.as_str());
        if !same {
            return None;
        }
        out.push(AnchorRecord { status: "cached".into(), ..rec.clone() });
    }
    Some(out)
}

/// The body of the entry at `seq` if it is this artifact's `anchor_receipt`.
fn recorded_body(ledger: &Ledger, seq: u64, day: NaiveDate, artifact: &str) -> Result<Option<Value>, ReportError> {
    let leaf = ledger.leaf(seq).map_err(ReportError::ledger(format!("reading entry {seq}")))?;
    let e = Entry::parse_leaf(&leaf).map_err(|err| ReportError::Entry { seq, why: err.to_string() })?;
    let ours = e.rec.kind == "anchor_receipt"
        && e.rec.id == record_id(day, artifact)
        && e.rec.producer == ledger.options().key.name();
    Ok(ours.then_some(e.rec.body))
}

/// Anchors the pack's tar and checkpoint in `store` and records a receipt
/// for each in the ledger. `store_desc` names the store in errors.
///
/// A failed or partial upload returns an error and records nothing for that
/// artifact. Returns at once with the cached records if every receipt is
/// already confirmed.
pub async fn anchor_pack(
    ledger: &Ledger,
    store: &AnchorStore,
    store_desc: &str,
    pack: &BuiltPack,
) -> Result<Vec<AnchorRecord>, ReportError> {
    if let Some(cached) = cached_anchors(ledger, pack) {
        return Ok(cached);
    }
    let day = pack.day;
    let mut out = Vec::new();
    for artifact in ARTIFACTS {
        let path = match artifact {
            "pack" => pack.tar.clone(),
            _ => pack.dir.join(files::CHECKPOINT),
        };
        let name = anchor_name(day, artifact);
        let receipt = store.put_file(&name, &path).await.map_err(|source| ReportError::Anchor {
            day,
            artifact,
            store: store_desc.to_string(),
            source: Box::new(source),
        })?;
        out.push(record(ledger, pack, artifact, name, receipt).await?);
    }
    write_status(pack, &out)?;
    Ok(out)
}

async fn record(
    ledger: &Ledger,
    pack: &BuiltPack,
    artifact: &'static str,
    name: String,
    receipt: AnchorReceipt,
) -> Result<AnchorRecord, ReportError> {
    let day = pack.day;
    let mut body = receipt.record_fields();
    body.insert("day".into(), Value::from(day.to_string()));
    body.insert("artifact".into(), Value::from(artifact));
    body.insert("manifest_sha256".into(), Value::from(pack.manifest_sha256.clone()));
    body.insert("tree_size".into(), Value::from(pack.manifest.end));
    let id = record_id(day, artifact);
    let l = ledger.clone();
    let appended = tokio::task::spawn_blocking(move || l.append_as_ledger("anchor_receipt", &id, Value::Object(body)))
        .await
        .map_err(|source| ReportError::Task { what: format!("recording the {artifact} receipt of {day}"), source })?;
    let mut rec = AnchorRecord {
        artifact: artifact.to_string(),
        name,
        backend: receipt.backend.clone(),
        location: receipt.location.clone(),
        sha256: receipt.sha256.clone(),
        size: receipt.size,
        version_id: receipt.version_id.clone(),
        object_lock_mode: receipt.object_lock_mode.clone(),
        retain_until: receipt.retain_until.clone(),
        seq: 0,
        status: "recorded".into(),
    };
    match appended {
        Ok(r) => {
            rec.seq = r.seq;
            if r.duplicate {
                rec.status = "already-recorded".into();
            }
        }
        // The same record id with other content (a later anchored_at, or
        // another store): the ledger already holds this artifact's receipt.
        Err(AppendError::Conflict { seq, .. }) => {
            let body = recorded_body(ledger, seq, day, artifact)?.ok_or_else(|| ReportError::ReceiptMismatch {
                day,
                artifact,
                seq,
                why: "the entry is not this artifact's anchor_receipt".into(),
            })?;
            let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
            if field("sha256").as_deref() != Some(receipt.sha256.as_str()) {
                return Err(ReportError::ReceiptMismatch {
                    day,
                    artifact,
                    seq,
                    why: format!("it names sha256 {:?}, the {artifact} has {}", field("sha256"), receipt.sha256),
                });
            }
            if field("manifest_sha256").as_deref() != Some(pack.manifest_sha256.as_str()) {
                return Err(ReportError::ReceiptMismatch {
                    day,
                    artifact,
                    seq,
                    why: format!(
                        "it names manifest_sha256 {:?}, the pack's manifest.json has {}",
                        field("manifest_sha256"),
                        pack.manifest_sha256
                    ),
                });
            }
            rec = AnchorRecord {
                backend: field("backend").unwrap_or(rec.backend),
                location: field("location").unwrap_or(rec.location),
                version_id: field("version_id"),
                object_lock_mode: field("object_lock_mode"),
                retain_until: field("retain_until"),
                seq,
                status: "already-recorded".into(),
                ..rec
            };
        }
        Err(source) => return Err(ReportError::Receipt { day, artifact, source: Box::new(source) }),
    }
    Ok(rec)
}

fn write_status(pack: &BuiltPack, anchors: &[AnchorRecord]) -> Result<(), ReportError> {
    let Some(dir) = pack.dir.parent() else { return Ok(()) };
    let st = StatusFile {
        day: pack.day.to_string(),
        manifest_sha256: pack.manifest_sha256.clone(),
        anchors: anchors.iter().map(|a| AnchorRecord { status: "recorded".into(), ..a.clone() }).collect(),
    };
    let path = status_path(dir, pack.day);
    let tmp = dir.join(format!(".{}.anchored.json.tmp-{}", pack.day, std::process::id()));
    let bytes = serde_json::to_vec_pretty(&st).map_err(|e| ReportError::Encode {
        day: pack.day,
        file: "anchored.json",
        why: e.to_string(),
    })?;
    fs::write(&tmp, bytes).map_err(ReportError::io("writing", &tmp))?;
    fs::rename(&tmp, &path).map_err(ReportError::io("moving into place", &path))?;
    sync_dir(dir)
}

/// Whether every artifact of a pack has a confirmed receipt, without
/// touching the store: the cache, checked against the ledger.
pub fn is_anchored(ledger: &Ledger, pack: &BuiltPack) -> bool {
    cached_anchors(ledger, pack).is_some()
}
