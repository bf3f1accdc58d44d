//! The daily compliance pack layout and its manifest (DESIGN §5).
//!
//! A pack is a directory, and the same files as one `.tar` in this order:
//!
//! | file | content |
//! | --- | --- |
//! | `manifest.json` | this module's [`Manifest`], RFC 8785 canonical bytes |
//! | `manifest.json.sig` | base64 Ed25519 signature over the manifest bytes, by the ledger key |
//! | `manifest.json.asc` | OpenPGP detached armored signature over the same bytes |
//! | `checkpoint` | signed C2SP checkpoint at tree size `end` |
//! | `rules.json` | the compliance rules evaluated |
//! | `report.json` | the rule outcomes (schemas/report.schema.json) |
//! | `report.html` | the same for people |
//! | `entries.jsonl.zst` | leaf bytes of seqs `[start, end)`, one per line, zstd |
//!
//! `entries.jsonl.zst` is last in the tar so a verifier can check every
//! signature before it streams the leaves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::hash::Hash;
use crate::leaf::canonical_json;
use crate::merkle::CompactRange;

/// The manifest format identifier.
pub const PACK_FORMAT: &str = "evident-pack/1";
/// Largest manifest accepted: 16 MiB.
pub const MAX_MANIFEST_BYTES: usize = 16 << 20;
/// Largest small file (checkpoint, rules, report, signatures) accepted: 64 MiB.
pub const MAX_SMALL_FILE_BYTES: u64 = 64 << 20;
/// Largest decompressed `entries.jsonl.zst` accepted: 64 GiB.
pub const MAX_ENTRIES_BYTES: u64 = 64 << 30;
/// Most entries in one pack: 100 million.
pub const MAX_ENTRIES: u64 = 100_000_000;
/// Longest line in `entries.jsonl.zst`: one maximal leaf plus its newline.
pub const MAX_LINE_BYTES: usize = crate::leaf::MAX_LEAF_BYTES + 1;

/// File names.
pub mod files {
    /// The manifest.
    pub const MANIFEST: &str = "manifest.json";
    /// Ed25519 signature of the manifest.
    pub const MANIFEST_SIG: &str = "manifest.json.sig";
    /// OpenPGP signature of the manifest.
    pub const MANIFEST_ASC: &str = "manifest.json.asc";
    /// Signed checkpoint at `end`.
    pub const CHECKPOINT: &str = "checkpoint";
    /// Rules evaluated.
    pub const RULES: &str = "rules.json";
    /// Machine-readable report.
    pub const REPORT_JSON: &str = "report.json";
    /// Human report.
    pub const REPORT_HTML: &str = "report.html";
    /// The day's leaves.
    pub const ENTRIES: &str = "entries.jsonl.zst";
    /// Every file in tar order.
    pub const ORDER: [&str; 8] =
        [MANIFEST, MANIFEST_SIG, MANIFEST_ASC, CHECKPOINT, RULES, REPORT_JSON, REPORT_HTML, ENTRIES];
}

/// Digest and size of one file of the pack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileInfo {
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// The link to the previous day's pack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousPack {
    /// The previous pack's day.
    pub day: String,
    /// Hex SHA-256 of its `manifest.json` bytes.
    pub manifest_sha256: String,
    /// Its signed checkpoint (at its `end`, which is this pack's `start`).
    pub checkpoint: String,
}

/// A producer key in force at `start`, as a convenience for checking one
/// pack alone. Never a trust anchor: `introduced_seq` is confirmed against
/// earlier packs by the chain check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestKey {
    /// Producer.
    pub producer: String,
    /// C2SP verifier key string.
    pub key: String,
    /// Start of validity (ledger timestamp form).
    pub valid_from: String,
    /// End of validity, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// Seq of the `key_event` that introduced the key.
    pub introduced_seq: u64,
}

/// Counts of the day's entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    /// Entries per kind.
    pub by_kind: BTreeMap<String, u64>,
    /// Entries per producer.
    pub by_producer: BTreeMap<String, u64>,
}

impl Counts {
    /// Counts one entry of `kind` from `producer` (allocating a name only
    /// the first time it is seen: this runs for every entry of a day).
    pub fn add(&mut self, kind: &str, producer: &str) {
        for (map, name) in [(&mut self.by_kind, kind), (&mut self.by_producer, producer)] {
            match map.get_mut(name) {
                Some(n) => *n += 1,
                None => {
                    map.insert(name.to_string(), 1);
                }
            }
        }
    }
}

/// The pack manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`PACK_FORMAT`].
    pub format: String,
    /// The log's origin.
    pub origin: String,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// First seq of the day.
    pub start: u64,
    /// One past the last seq of the day (the checkpoint's tree size).
    pub end: u64,
    /// The previous day's pack, absent for the first day of a ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousPack>,
    /// Compact range of `[0, start)`: base64 perfect-subtree hashes, left to right.
    pub compact_range: Vec<String>,
    /// Counts per kind and producer.
    pub counts: Counts,
    /// Every other file of the pack.
    pub files: BTreeMap<String, FileInfo>,
    /// Hex SHA-256 of `rules.json`.
    pub rules_sha256: String,
    /// The ledger's verifier key (informational; trust comes from the verifier's own keys).
    pub ledger_key: String,
    /// Fingerprint of the OpenPGP certificate that made `manifest.json.asc`.
    pub pgp_fingerprint: String,
    /// Producer keys in force at `start`.
    pub producer_keys: Vec<ManifestKey>,
    /// Software that built the pack.
    pub generator: String,
    /// When the pack was built. The only build-time field: everything else
    /// is a function of the ledger, the day and the rules.
    pub created_at: String,
}

/// Errors about a manifest.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManifestError {
    /// Over [`MAX_MANIFEST_BYTES`].
    #[error("manifest.json is {0} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not a manifest.
    #[error("manifest.json: {0}")]
    Malformed(String),
    /// A field with a bad value.
    #[error("manifest.json field {field}: {why}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
}

fn field(field: &'static str, why: impl Into<String>) -> ManifestError {
    ManifestError::Field { field, why: why.into() }
}

impl Manifest {
    /// The canonical bytes that are signed and shipped.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ManifestError> {
        let v = serde_json::to_value(self).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        canonical_json(&v).map_err(|e| ManifestError::Malformed(e.to_string()))
    }

    /// Parses manifest bytes strictly: size cap, canonical JSON, known
    /// format, and every field well-formed.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        if v.get("format").and_then(|f| f.as_str()) != Some(PACK_FORMAT) {
            return Err(field("format", format!("unknown pack format {}, expected {PACK_FORMAT}", v["format"])));
        }
        let canon = canonical_json(&v).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        if canon != bytes {
            return Err(ManifestError::Malformed("not RFC 8785 canonical JSON".into()));
        }
        let m: Manifest = serde_json::from_value(v).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        m.check()?;
        // One manifest, one byte form: optional fields are omitted, never null.
        if m.to_bytes()? != bytes {
            return Err(ManifestError::Malformed("optional fields must be omitted, not null".into()));
        }
        Ok(m)
    }

    fn check(&self) -> Result<(), ManifestError> {
        if chrono::NaiveDate::parse_from_str(&self.day, "%Y-%m-%d").map(|d| d.to_string()) != Ok(self.day.clone()) {
            return Err(field("day", format!("{:?} is not a YYYY-MM-DD date", self.day)));
        }
        if self.start > self.end {
            return Err(field("end", format!("end {} is before start {}", self.end, self.start)));
        }
        if self.end - self.start > MAX_ENTRIES {
            return Err(field("end", format!("more than {MAX_ENTRIES} entries")));
        }
        self.compact_range()?;
        let hex = |f: &'static str, s: &str| Hash::from_hex(s).map(|_| ()).ok_or_else(|| field(f, "not hex SHA-256"));
        hex("rules_sha256", &self.rules_sha256)?;
        for name in files::ORDER {
            let listed = self.files.contains_key(name);
            let should = !matches!(name, files::MANIFEST | files::MANIFEST_SIG | files::MANIFEST_ASC);
            if listed != should {
                return Err(field("files", format!("{name} must {}be listed", if should { "" } else { "not " })));
            }
        }
        for (name, info) in &self.files {
            if !files::ORDER.contains(&name.as_str()) {
                return Err(field("files", format!("unknown file {name:?}")));
            }
            hex("files", &info.sha256)?;
        }
        if let Some(p) = &self.previous {
            hex("previous.manifest_sha256", &p.manifest_sha256)?;
            if p.day >= self.day {
                return Err(field("previous.day", format!("{} is not before {}", p.day, self.day)));
            }
        } else if self.start != 0 {
            return Err(field("previous", "only the first pack of a ledger (start 0) may have no previous pack"));
        }
        Ok(())
    }

    /// The compact range of `[0, start)`.
    pub fn compact_range(&self) -> Result<CompactRange, ManifestError> {
        let hashes = self
            .compact_range
            .iter()
            .map(|h| Hash::from_base64(h).ok_or_else(|| field("compact_range", "not base64 of 32 bytes")))
            .collect::<Result<Vec<_>, _>>()?;
        CompactRange::from_parts(self.start, hashes).map_err(|e| field("compact_range", e.to_string()))
    }
}

/// The report format identifier.
pub const REPORT_FORMAT: &str = "evident-report/1";

/// `report.json` (schemas/report.schema.json).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Always [`REPORT_FORMAT`].
    pub format: String,
    /// The log's origin.
    pub origin: String,
    /// The UTC day.
    pub day: String,
    /// First seq of the day.
    pub start: u64,
    /// One past the last seq.
    pub end: u64,
    /// Hex SHA-256 of the rules file.
    pub rules_sha256: String,
    /// First seq the rules saw as history (0: the whole ledger before `start`).
    pub history_from: u64,
    /// Each rule's outcome, in rules-file order.
    pub rules: Vec<crate::rules::RuleOutcome>,
    /// Counts per kind and producer.
    pub counts: Counts,
}

impl Report {
    /// Canonical bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ManifestError> {
        let v = serde_json::to_value(self).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        canonical_json(&v).map_err(|e| ManifestError::Malformed(e.to_string()))
    }

    /// Parses `report.json` (size-capped by the caller).
    pub fn parse(bytes: &[u8]) -> Result<Report, ManifestError> {
        let r: Report =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(format!("report.json: {e}")))?;
        if r.format != REPORT_FORMAT {
            return Err(field("format", format!("report.json format {:?} is not {REPORT_FORMAT}", r.format)));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_per_kind_and_producer() {
        let mut c = Counts::default();
        for (k, p) in [("approval", "a"), ("execution", "b"), ("approval", "b"), ("approval", "a")] {
            c.add(k, p);
        }
        let want = |v: &[(&str, u64)]| v.iter().map(|(n, c)| (n.to_string(), *c)).collect::<BTreeMap<_, _>>();
        assert_eq!(c.by_kind, want(&[("approval", 3), ("execution", 1)]));
        assert_eq!(c.by_producer, want(&[("a", 2), ("b", 2)]));
    }
}
