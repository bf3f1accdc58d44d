//! Personal data (DESIGN §8): commitments for `x-pii` fields, the vault
//! material that travels beside a signed record, and detectors for
//! personal data and secrets in free text.
//!
//! A commitment is `{"$commit":"<base64 HMAC-SHA256(salt, JCS(value))>"}`
//! with a fresh 32-byte random salt per value, so an erased low-entropy
//! value (a 9-digit id) cannot be brute-forced from its commitment. The
//! value, salt and subject live in the `vault` table, outside the tree;
//! erasing a subject deletes its rows and every proof still verifies.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use evident_verify::leaf::{Record, canonical_json};
use evident_verify::schema::KindFields;
use hmac::{Hmac, Mac};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use crate::error::AppendError;

/// What to do when a detector finds something in free text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectorAction {
    /// Refuse the record (the default). The error names the field and the
    /// detector, never the matched value.
    Refuse,
    /// Replace the match by an inline commitment `{{commit:<base64>}}` and
    /// keep the value in the vault. Only possible before signing: the
    /// library's [`crate::Signer`] does it for signed records, the ledger for
    /// unsigned ones.
    Commit,
    /// Do not run this detector.
    Off,
}

/// The detectors, by name.
pub const DETECTORS: &[&str] = &["card", "tpin", "nrc", "email", "private_key", "aws_access_key", "token"];

/// Privacy settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Per-detector action; detectors not named here refuse.
    #[serde(default)]
    pub detectors: BTreeMap<String, DetectorAction>,
}

/// Vault material for one committed value: what the producer keeps and
/// sends beside the signed record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultMaterial {
    /// Body field (top-level name for `x-pii`, or a JSON pointer for free text).
    pub field: String,
    /// Data subject the value belongs to (what `erase --subject` names).
    pub subject: String,
    /// The value itself.
    pub value: Value,
    /// Base64 of the 32-byte salt.
    pub salt: String,
}

/// A vault row to store with an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultRow {
    /// Base64 commitment.
    pub commitment: String,
    /// Subject.
    pub subject: String,
    /// Field.
    pub field: String,
    /// JCS of the value.
    pub value: Vec<u8>,
    /// Salt bytes.
    pub salt: Vec<u8>,
}

/// `base64(HMAC-SHA256(salt, JCS(value)))`.
pub fn commitment(salt: &[u8], value: &Value) -> Result<String, String> {
    let jcs = canonical_json(value).map_err(|e| e.to_string())?;
    Ok(commit_bytes(salt, &jcs))
}

fn commit_bytes(salt: &[u8], bytes: &[u8]) -> String {
    // HMAC accepts keys of any length; 32 bytes is what we generate.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(salt).unwrap_or_else(|_| unreachable_hmac());
    mac.update(bytes);
    B64.encode(mac.finalize().into_bytes())
}

#[allow(clippy::panic)]
fn unreachable_hmac() -> Hmac<Sha256> {
    panic!("HMAC-SHA256 accepts every key length")
}

/// A fresh 32-byte salt from the operating system.
pub fn fresh_salt() -> Result<[u8; 32], String> {
    let mut s = [0u8; 32];
    getrandom::fill(&mut s).map_err(|e| format!("no randomness for a PII salt: {e}"))?;
    Ok(s)
}

/// Whether `v` is a commitment object.
pub fn is_commitment(v: &Value) -> Option<&str> {
    let o = v.as_object()?;
    if o.len() != 1 {
        return None;
    }
    o.get("$commit")?.as_str()
}

struct Detector {
    name: &'static str,
    re: Regex,
    luhn: bool,
}

/// Compiled privacy rules.
#[derive(Debug)]
pub struct Privacy {
    config: PrivacyConfig,
    detectors: Vec<Detector>,
    /// All detectors in one automaton: most text has no hit, and one scan
    /// says so instead of one per detector.
    any: regex::RegexSet,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

fn luhn_ok(digits: &str) -> bool {
    let ds: Vec<u32> = digits.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&ds.len()) {
        return false;
    }
    let sum: u32 = ds
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

impl Privacy {
    /// Compiles the detectors.
    pub fn new(config: PrivacyConfig) -> Result<Privacy, String> {
        for name in config.detectors.keys() {
            if !DETECTORS.contains(&name.as_str()) {
                return Err(format!("unknown detector {name:?}; known: {}", DETECTORS.join(", ")));
            }
        }
        let d = |name, re: &str, luhn| -> Result<Detector, String> {
            Ok(Detector { name, re: Regex::new(re).map_err(|e| e.to_string())?, luhn })
        };
        let detectors = vec![
            // Written as cards are: contiguous, in groups of four, or
            // 4-6-5 / 4-6-4 (Amex, Diners). Digit runs split otherwise
            // (UUID segments, `<name>-<pid>-<nanos>`) are not card numbers,
            // and treating them as such refused valid records at random.
            d(
                "card",
                r"\b(?:\d{13,19}|\d{4}(?:[ -]\d{4}){2}[ -]\d{1,4}(?:[ -]\d{1,3})?|\d{4}[ -]\d{6}[ -]\d{4,5})\b",
                true,
            )?,
            d("tpin", r"\b\d{11}\b", false)?,
            d("nrc", r"\b\d{9}\b", false)?,
            d("email", r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b", false)?,
            d("private_key", r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----", false)?,
            d("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", false)?,
            d(
                "token",
                r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|xox[baprs]-[A-Za-z0-9-]{10,}|sk_live_[A-Za-z0-9]{20,}|AIza[0-9A-Za-z_-]{35}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})",
                false,
            )?,
        ];
        let any = regex::RegexSet::new(detectors.iter().map(|d| d.re.as_str())).map_err(|e| e.to_string())?;
        Ok(Privacy { config, detectors, any })
    }

    /// Whether any detector commits its hits rather than refusing them or
    /// being off: only then can a record's free text change on commit.
    pub fn commits_text(&self) -> bool {
        self.config.detectors.values().any(|a| *a == DetectorAction::Commit)
    }

    /// Whether committing a record of this kind can change it: it has
    /// `x-pii` fields, or a detector commits free-text hits.
    pub fn may_commit(&self, fields: &KindFields) -> bool {
        !fields.pii.is_empty() || self.commits_text()
    }

    fn action(&self, name: &str) -> DetectorAction {
        self.config.detectors.get(name).copied().unwrap_or(DetectorAction::Refuse)
    }

    /// Finds the first detector hit in `s`: `(detector, byte range)`.
    fn first_hit(&self, s: &str) -> Option<(&'static str, std::ops::Range<usize>)> {
        if !self.any.is_match(s) {
            return None;
        }
        for d in &self.detectors {
            if self.action(d.name) == DetectorAction::Off {
                continue;
            }
            for m in d.re.find_iter(s) {
                if d.luhn && !luhn_ok(m.as_str()) {
                    continue;
                }
                return Some((d.name, m.range()));
            }
        }
        None
    }

    /// Checks a signed record's commitments against its vault material and
    /// refuses raw values in `x-pii` fields.
    pub fn check_signed(
        &self,
        rec: &Record,
        fields: &KindFields,
        material: Vec<VaultMaterial>,
    ) -> Result<Vec<VaultRow>, AppendError> {
        let mut rows = Vec::new();
        for m in material {
            let salt = B64.decode(&m.salt).map_err(|_| {
                AppendError::Privacy(format!("vault material for field {}: salt is not base64", m.field))
            })?;
            if salt.len() != 32 {
                return Err(AppendError::Privacy(format!(
                    "vault material for field {}: salt must be 32 bytes",
                    m.field
                )));
            }
            let c = commitment(&salt, &m.value).map_err(AppendError::Privacy)?;
            let found = commitment_at(&rec.body, &m.field).is_some_and(|stored| stored.contains(&c));
            if !found {
                return Err(AppendError::Privacy(format!(
                    "vault material for field {} does not match any commitment in that field",
                    m.field
                )));
            }
            let value = canonical_json(&m.value).map_err(AppendError::Record)?;
            rows.push(VaultRow { commitment: c, subject: m.subject, field: m.field, value, salt });
        }
        for f in &fields.pii {
            if let Some(v) = rec.body.get(f)
                && is_commitment(v).is_none()
            {
                return Err(AppendError::Privacy(format!(
                    "field body.{f} is marked x-pii and holds a raw value in a signed record; commit it before signing (evident_ledger::Signer)"
                )));
            }
        }
        Ok(rows)
    }

    /// Commits `x-pii` fields and configured free-text hits of an unsigned
    /// record in place, returning the vault rows.
    pub fn commit_unsigned(&self, rec: &mut Record, fields: &KindFields) -> Result<Vec<VaultRow>, AppendError> {
        let (rows, _) = self.commit_record(rec, fields, subject_of).map_err(AppendError::Privacy)?;
        Ok(rows)
    }

    /// Commits `x-pii` fields and free-text hits whose detector is set to
    /// `commit`; `subject` names the data subject of each x-pii value.
    pub fn commit_record(
        &self,
        rec: &mut Record,
        fields: &KindFields,
        subject: impl Fn(&Value) -> String,
    ) -> Result<(Vec<VaultRow>, Vec<VaultMaterial>), String> {
        let mut rows = Vec::new();
        let mut material = Vec::new();
        let Some(body) = rec.body.as_object_mut() else { return Ok((rows, material)) };
        for f in &fields.pii {
            let Some(v) = body.get_mut(f) else { continue };
            if is_commitment(v).is_some() {
                continue;
            }
            let salt = fresh_salt()?;
            let c = commitment(&salt, v)?;
            let subj = subject(v);
            let value = canonical_json(v).map_err(|e| e.to_string())?;
            material.push(VaultMaterial {
                field: f.clone(),
                subject: subj.clone(),
                value: v.clone(),
                salt: B64.encode(salt),
            });
            rows.push(VaultRow { commitment: c.clone(), subject: subj, field: f.clone(), value, salt: salt.to_vec() });
            *v = serde_json::json!({ "$commit": c });
        }
        // Free text: replace hits whose detector commits. With no detector
        // set to commit there is nothing to replace, and `scan` refuses hits.
        if !self.commits_text() {
            return Ok((rows, material));
        }
        let mut stack: Vec<(String, &mut Value)> =
            body.iter_mut().filter(|(k, _)| fields.is_free_text(k)).map(|(k, v)| (format!("/{k}"), v)).collect();
        while let Some((path, v)) = stack.pop() {
            match v {
                Value::String(s) => {
                    let mut out = String::new();
                    let mut rest: &str = s;
                    let mut changed = false;
                    while let Some((name, range)) = self.first_hit(rest) {
                        if self.action(name) != DetectorAction::Commit {
                            break;
                        }
                        let hit = &rest[range.clone()];
                        let salt = fresh_salt()?;
                        let value = Value::String(hit.to_string());
                        let c = commitment(&salt, &value)?;
                        out.push_str(&rest[..range.start]);
                        out.push_str(&format!("{{{{commit:{c}}}}}"));
                        material.push(VaultMaterial {
                            field: path.clone(),
                            subject: hit.to_string(),
                            value: value.clone(),
                            salt: B64.encode(salt),
                        });
                        rows.push(VaultRow {
                            commitment: c,
                            subject: hit.to_string(),
                            field: path.clone(),
                            value: canonical_json(&value).map_err(|e| e.to_string())?,
                            salt: salt.to_vec(),
                        });
                        rest = &rest[range.end..];
                        changed = true;
                    }
                    if changed {
                        out.push_str(rest);
                        *s = out;
                    }
                }
                Value::Array(a) => {
                    for (i, x) in a.iter_mut().enumerate() {
                        stack.push((format!("{path}/{i}"), x));
                    }
                }
                Value::Object(o) => {
                    if o.len() == 1 && o.contains_key("$commit") {
                        continue;
                    }
                    for (k, x) in o.iter_mut() {
                        stack.push((format!("{path}/{k}"), x));
                    }
                }
                _ => {}
            }
        }
        Ok((rows, material))
    }

    /// Refuses a record whose free text (every string outside `x-pii`
    /// fields, `x-detect: false` fields and commitments) still holds
    /// personal data or a secret.
    pub fn scan(&self, rec: &Record, fields: &KindFields) -> Result<(), AppendError> {
        /// A step of a JSON pointer: an object member or an array index.
        enum Step<'a> {
            Member(&'a str),
            Index(usize),
        }
        /// The path is kept as steps and written out only for an error.
        fn walk<'a>(p: &Privacy, v: &'a Value, path: &mut Vec<Step<'a>>) -> Result<(), AppendError> {
            match v {
                Value::String(s) => {
                    if let Some((name, _)) = p.first_hit(s) {
                        let path: String = path
                            .iter()
                            .map(|s| match s {
                                Step::Member(k) => format!("/{k}"),
                                Step::Index(i) => format!("/{i}"),
                            })
                            .collect();
                        return Err(AppendError::Privacy(format!(
                            "field body{path}: detector {name} found personal data or a secret in free text; \
                             remove it, or set [privacy.detectors] {name} = \"commit\" (value not shown)"
                        )));
                    }
                }
                Value::Array(a) => {
                    for (i, x) in a.iter().enumerate() {
                        path.push(Step::Index(i));
                        walk(p, x, path)?;
                        path.pop();
                    }
                }
                Value::Object(o) => {
                    if is_commitment(v).is_some() {
                        return Ok(());
                    }
                    for (k, x) in o {
                        path.push(Step::Member(k));
                        walk(p, x, path)?;
                        path.pop();
                    }
                }
                _ => {}
            }
            Ok(())
        }
        let Some(body) = rec.body.as_object() else { return Ok(()) };
        let mut path = Vec::new();
        for (k, v) in body {
            if !fields.is_free_text(k) {
                continue;
            }
            path.push(Step::Member(k));
            walk(self, v, &mut path)?;
            path.pop();
        }
        Ok(())
    }
}

fn subject_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The commitments found at `field` of `body`: a top-level x-pii field's
/// `$commit`, or inline `{{commit:…}}` tokens in the string at a JSON pointer.
fn commitment_at(body: &Value, field: &str) -> Option<Vec<String>> {
    if let Some(ptr) = field.strip_prefix('/') {
        let s = body.pointer(&format!("/{ptr}"))?.as_str()?;
        let mut out = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find("{{commit:") {
            let after = &rest[i + 9..];
            let end = after.find("}}")?;
            out.push(after[..end].to_string());
            rest = &after[end + 2..];
        }
        return Some(out);
    }
    is_commitment(body.get(field)?).map(|c| vec![c.to_string()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detectors_hit_and_miss() {
        let p = Privacy::new(PrivacyConfig::default()).expect("compiles");
        for (s, want) in [
            ("card 4111 1111 1111 1111 used", Some("card")),
            ("card 4111-1111-1111-1111 used", Some("card")),
            ("card 4111111111111111 used", Some("card")),
            ("amex 3782 822463 10005 used", Some("card")),
            // Luhn-valid digits, but not grouped as a card is written.
            ("uuid 4111-111111111111 here", None),
            ("bucket evident-rep-lock-11588-123456789012", None),
            ("card 4111 1111 1111 1112 used", None),
            ("tpin 12345678901 here", Some("tpin")),
            ("nrc 123456789 here", Some("nrc")),
            ("mail bob@example.com now", Some("email")),
            ("-----BEGIN OPENSSH PRIVATE KEY-----", Some("private_key")),
            ("AKIAIOSFODNN7EXAMPLE", Some("aws_access_key")),
            ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", Some("token")),
            ("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", None),
            ("run 2026-11-21T09:30:12.345678Z took 1234 ms", None),
            // `\d` takes non-ASCII digits too.
            ("tpin \u{661}\u{662}\u{663}\u{664}\u{665}\u{666}\u{667}\u{668}\u{669}\u{660}\u{661} here", Some("tpin")),
            ("mail bob@example.com now, caf\u{e9}", Some("email")),
            ("xoxb-1234567890-abcdefghij", Some("token")),
            (
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                Some("token"),
            ),
        ] {
            assert_eq!(p.first_hit(s).map(|h| h.0), want, "{s}");
        }
    }
}
