//! Producer key history (DESIGN §7): which key may sign for which producer,
//! and when. The history is built only from `key_event` entries signed by
//! the ledger key, so trusting the ledger key is enough to trust it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::note::VerifierKey;
use crate::ts::Timestamp;

/// One producer key and its validity window `[valid_from, valid_until)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// The key.
    pub key: VerifierKey,
    /// First instant the key may sign.
    pub valid_from: Timestamp,
    /// First instant the key may no longer sign, if it has ended.
    pub valid_until: Option<Timestamp>,
    /// Seq of the `key_event` that introduced it.
    pub introduced_seq: u64,
}

impl KeyRecord {
    /// Whether the key may sign at `ts`.
    pub fn valid_at(&self, ts: Timestamp) -> bool {
        ts >= self.valid_from && self.valid_until.is_none_or(|u| ts < u)
    }
}

/// The body of a `key_event` record (schemas/kinds/key_event.json).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEventBody {
    /// `add`, `rotate` or `revoke`.
    pub action: String,
    /// The producer the key signs for.
    pub producer: String,
    /// The key, as a C2SP verifier key string.
    pub key: String,
    /// Start of validity (add, rotate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    /// End of validity (revoke).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// Rotate: the key superseded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// Rotate: end of the old key's validity (defaults to `valid_from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces_valid_until: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Errors applying a key event or looking up a key.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyHistoryError {
    /// A key event that cannot be applied.
    #[error("key_event at seq {seq}: {why}")]
    BadEvent {
        /// Seq of the event.
        seq: u64,
        /// What is wrong.
        why: String,
    },
    /// No key with this id for this producer.
    #[error("unknown key {key} for producer {producer:?}")]
    UnknownKey {
        /// Producer.
        producer: String,
        /// Key id.
        key: String,
    },
    /// The key exists but is not valid at the time.
    #[error("key {key} of producer {producer:?} is not valid at {ts} (valid {window})")]
    NotValid {
        /// Producer.
        producer: String,
        /// Key id.
        key: String,
        /// Time checked.
        ts: String,
        /// The key's window.
        window: String,
    },
}

fn parse_time(seq: u64, field: &str, s: &Option<String>) -> Result<Option<Timestamp>, KeyHistoryError> {
    let Some(s) = s else { return Ok(None) };
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|_| KeyHistoryError::BadEvent { seq, why: format!("{field} {s:?} is not an RFC 3339 time") })?;
    Ok(Some(Timestamp::from_datetime(t.to_utc())))
}

/// The producer key history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyHistory {
    keys: BTreeMap<String, Vec<KeyRecord>>,
}

impl KeyHistory {
    /// An empty history.
    pub fn new() -> KeyHistory {
        KeyHistory::default()
    }

    /// Applies one `key_event` body (already known to be signed by the
    /// ledger key) appended at `seq`, `ts`.
    pub fn apply(&mut self, seq: u64, ts: Timestamp, ev: &KeyEventBody) -> Result<(), KeyHistoryError> {
        let bad = |why: String| KeyHistoryError::BadEvent { seq, why };
        let key = VerifierKey::parse(&ev.key).map_err(|e| bad(format!("key: {e}")))?;
        if key.name() != ev.producer {
            return Err(bad(format!("key {} is not named after producer {:?}", key.id(), ev.producer)));
        }
        let list = self.keys.entry(ev.producer.clone()).or_default();
        match ev.action.as_str() {
            "add" | "rotate" => {
                if !crate::sig::acceptable_key(key.key()) {
                    return Err(bad(format!("key {} is not a canonical point of large order", key.id())));
                }
                if list.iter().any(|k| k.key == key) {
                    return Err(bad(format!("key {} is already registered", key.id())));
                }
                let from = parse_time(seq, "valid_from", &ev.valid_from)?.unwrap_or(ts);
                if ev.action == "rotate" {
                    let old_s = ev.replaces.as_ref().ok_or_else(|| bad("rotate needs replaces".into()))?;
                    let old = VerifierKey::parse(old_s).map_err(|e| bad(format!("replaces: {e}")))?;
                    let until = parse_time(seq, "replaces_valid_until", &ev.replaces_valid_until)?.unwrap_or(from);
                    let rec = list
                        .iter_mut()
                        .find(|k| k.key == old)
                        .ok_or_else(|| bad(format!("rotate replaces unknown key {}", old.id())))?;
                    rec.valid_until = Some(rec.valid_until.map_or(until, |u| u.min(until)));
                }
                list.push(KeyRecord { key, valid_from: from, valid_until: None, introduced_seq: seq });
            }
            "revoke" => {
                let until = parse_time(seq, "valid_until", &ev.valid_until)?.unwrap_or(ts);
                let rec = list
                    .iter_mut()
                    .find(|k| k.key == key)
                    .ok_or_else(|| bad(format!("revoke of unknown key {}", key.id())))?;
                rec.valid_until = Some(rec.valid_until.map_or(until, |u| u.min(until)));
            }
            other => return Err(bad(format!("unknown action {other:?}"))),
        }
        Ok(())
    }

    /// The key `key_id` (`name+hexhash`) of `producer`, if valid at `ts`.
    pub fn key_at(&self, producer: &str, key_id: &str, ts: Timestamp) -> Result<&VerifierKey, KeyHistoryError> {
        let rec = self
            .keys
            .get(producer)
            .and_then(|l| l.iter().find(|k| k.key.has_id(key_id)))
            .ok_or_else(|| KeyHistoryError::UnknownKey { producer: producer.into(), key: key_id.into() })?;
        if rec.valid_at(ts) {
            Ok(&rec.key)
        } else {
            Err(KeyHistoryError::NotValid {
                producer: producer.into(),
                key: key_id.into(),
                ts: ts.to_string(),
                window: format!(
                    "from {} until {}",
                    rec.valid_from,
                    rec.valid_until.map_or("revoked never".into(), |u| u.to_string())
                ),
            })
        }
    }

    /// Adds a key record as given (for example from a pack manifest, where
    /// it is a convenience to be confirmed against earlier packs).
    pub fn insert(&mut self, producer: &str, record: KeyRecord) {
        self.keys.entry(producer.to_string()).or_default().push(record);
    }

    /// Every producer's keys, for display and for the pack manifest.
    pub fn all(&self) -> impl Iterator<Item = (&str, &KeyRecord)> {
        self.keys.iter().flat_map(|(p, l)| l.iter().map(move |k| (p.as_str(), k)))
    }
}
