//! Administrative operations on a ledger: producer keys, erasure, reveal,
//! storage figures.

use evident_verify::note::VerifierKey;
use evident_verify::ts::Timestamp;
use rusqlite::params;
use serde::Serialize;
use serde_json::json;

use crate::error::{AppendError, LedgerError, StoreError};
use crate::ledger::{AppendReceipt, Ledger};
use crate::store::to_u64;

/// A value revealed from the vault.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Revealed {
    /// The base64 commitment.
    pub commitment: String,
    /// Seq of the entry holding it.
    pub seq: u64,
    /// Field.
    pub field: String,
    /// Subject.
    pub subject: String,
    /// The value, as canonical JSON.
    pub value: String,
    /// The salt, base64.
    pub salt: String,
}

/// The outcome of an erasure.
#[derive(Clone, Debug, Serialize)]
pub struct Erasure {
    /// Vault rows deleted.
    pub rows_deleted: u64,
    /// Receipt of the `erasure` entry.
    pub receipt: AppendReceipt,
}

fn normalize_time(t: Option<&str>, now: Timestamp) -> Result<String, AppendError> {
    match t {
        None => Ok(now.to_string()),
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|d| Timestamp::from_datetime(d.to_utc()).to_string())
            .map_err(|_| AppendError::Malformed(format!("time {s:?} is not RFC 3339"))),
    }
}

fn event_id(action: &str, key: &VerifierKey) -> String {
    format!("key-{action}-{}-{}", key.id(), Timestamp::from_datetime(chrono::Utc::now()).0)
}

impl Ledger {
    /// Registers a producer key, valid from `valid_from` (default now).
    pub fn add_key(
        &self,
        producer: &str,
        key: &VerifierKey,
        valid_from: Option<&str>,
    ) -> Result<AppendReceipt, AppendError> {
        let body = json!({"action": "add", "producer": producer, "key": key.to_string(), "valid_from": normalize_time(valid_from, self.options().clock.now())?});
        self.append_as_ledger("key_event", &event_id("add", key), body)
    }

    /// Rotates `old` to `new`: `new` starts and `old` ends at `valid_from` (default now).
    pub fn rotate_key(
        &self,
        producer: &str,
        old: &VerifierKey,
        new: &VerifierKey,
        valid_from: Option<&str>,
    ) -> Result<AppendReceipt, AppendError> {
        let body = json!({"action": "rotate", "producer": producer, "key": new.to_string(),
                          "replaces": old.to_string(), "valid_from": normalize_time(valid_from, self.options().clock.now())?});
        self.append_as_ledger("key_event", &event_id("rotate", new), body)
    }

    /// Ends a key's validity at `valid_until` (default now).
    pub fn revoke_key(
        &self,
        producer: &str,
        key: &VerifierKey,
        valid_until: Option<&str>,
        reason: Option<&str>,
    ) -> Result<AppendReceipt, AppendError> {
        let mut body = json!({"action": "revoke", "producer": producer, "key": key.to_string(),
                              "valid_until": normalize_time(valid_until, self.options().clock.now())?});
        if let Some(r) = reason {
            body["reason"] = json!(r);
        }
        self.append_as_ledger("key_event", &event_id("revoke", key), body)
    }

    /// Total bytes of stored leaves.
    pub fn leaf_bytes_total(&self) -> Result<u64, LedgerError> {
        let conn = self.reader();
        let n: i64 = conn
            .query_row("SELECT coalesce(sum(length(leaf)), 0) FROM entries", [], |r| r.get(0))
            .map_err(StoreError::from)?;
        Ok(to_u64(n)?)
    }

    fn reveal_where(&self, clause: &str, arg: &str) -> Result<Vec<Revealed>, LedgerError> {
        use base64::Engine as _;
        let conn = self.reader();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT commitment, seq, field, subject, value, salt FROM vault WHERE {clause} ORDER BY seq"
            ))
            .map_err(StoreError::from)?;
        let rows = stmt
            .query_map([arg], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                ))
            })
            .map_err(StoreError::from)?;
        let mut out = Vec::new();
        for r in rows {
            let (commitment, seq, field, subject, value, salt) = r.map_err(StoreError::from)?;
            out.push(Revealed {
                commitment,
                seq: to_u64(seq)?,
                field,
                subject,
                value: String::from_utf8_lossy(&value).into_owned(),
                salt: base64::engine::general_purpose::STANDARD.encode(salt),
            });
        }
        Ok(out)
    }

    /// The vault row behind a commitment, if not erased.
    pub fn reveal_commitment(&self, commitment: &str) -> Result<Option<Revealed>, LedgerError> {
        Ok(self.reveal_where("commitment = ?1", commitment)?.pop())
    }

    /// Every vault row of a subject.
    pub fn reveal_subject(&self, subject: &str) -> Result<Vec<Revealed>, LedgerError> {
        self.reveal_where("subject = ?1", subject)
    }

    /// Erases a subject: deletes its vault rows with `secure_delete`, appends
    /// an `erasure` entry, then truncates the WAL and VACUUMs so the bytes
    /// leave the database files. Tree, checkpoints and packs are untouched
    /// and still verify.
    pub fn erase(&self, subject: &str, requested_by: &str, reason: &str) -> Result<Erasure, LedgerError> {
        let deleted = self.with_writer(|conn| {
            conn.pragma_update(None, "secure_delete", "ON")?;
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.execute("DELETE FROM vault WHERE subject = ?1", params![subject])?;
            tx.commit()?;
            Ok(n as u64)
        })?;
        // The erasure entry names the subject only by a commitment whose salt
        // is thrown away: it proves an erasure happened without keeping the id.
        let salt = crate::privacy::fresh_salt().map_err(LedgerError::Format)?;
        let subject_commit = crate::privacy::commitment(&salt, &json!(subject)).map_err(LedgerError::Format)?;
        let requester_salt = crate::privacy::fresh_salt().map_err(LedgerError::Format)?;
        let requester =
            crate::privacy::commitment(&requester_salt, &json!(requested_by)).map_err(LedgerError::Format)?;
        let body = json!({
            "subject": {"$commit": subject_commit},
            "vault_rows_deleted": deleted,
            "requested_by": {"$commit": requester},
            "reason": reason,
        });
        let receipt = self
            .append_as_ledger("erasure", &format!("erasure-{}", Timestamp::from_datetime(chrono::Utc::now()).0), body)
            .map_err(|e| LedgerError::Format(format!("recording the erasure: {e}")))?;
        self.compact()?;
        Ok(Erasure { rows_deleted: deleted, receipt })
    }

    /// Checkpoints and truncates the WAL and VACUUMs the database, so that
    /// deleted bytes do not survive in free pages or old WAL frames.
    pub fn compact(&self) -> Result<(), LedgerError> {
        let reader = self.reader();
        self.with_writer(|conn| {
            conn.pragma_update(None, "secure_delete", "ON")?;
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            conn.execute_batch("VACUUM")?;
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })?;
        drop(reader);
        Ok(())
    }
}
