//! The producer side: what a service uses to turn a record into a signed
//! submission in one call.

use evident_verify::leaf::Record;
use evident_verify::note::SignerKey;
use evident_verify::schema::Schemas;
use serde_json::Value;

use crate::error::AppendError;
use crate::ledger::Submission;
use crate::privacy::{Privacy, PrivacyConfig};

/// Signs records for one producer: commits `x-pii` fields (and free-text
/// hits whose detector is set to `commit`), then signs JCS(rec).
#[derive(Debug)]
pub struct Signer {
    key: SignerKey,
    schemas: Schemas,
    privacy: Privacy,
}

impl Signer {
    /// A signer for the producer named by `key`.
    pub fn new(key: SignerKey) -> Result<Signer, AppendError> {
        Signer::with_privacy(key, PrivacyConfig::default())
    }

    /// A signer with detector settings.
    pub fn with_privacy(key: SignerKey, privacy: PrivacyConfig) -> Result<Signer, AppendError> {
        Ok(Signer { key, schemas: Schemas::embedded()?, privacy: Privacy::new(privacy).map_err(AppendError::Privacy)? })
    }

    /// The producer name.
    pub fn producer(&self) -> &str {
        self.key.name()
    }

    /// Builds, commits and signs a record. The data subject of each x-pii
    /// value defaults to the value itself; use [`Signer::sign_with_subjects`]
    /// to name subjects explicitly.
    pub fn sign(&self, id: &str, kind: &str, at: &str, body: Value) -> Result<Submission, AppendError> {
        self.sign_with_subjects(id, kind, at, body, |v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    /// As [`Signer::sign`], with `subject` naming the data subject of each
    /// x-pii value.
    pub fn sign_with_subjects(
        &self,
        id: &str,
        kind: &str,
        at: &str,
        body: Value,
        subject: impl Fn(&Value) -> String,
    ) -> Result<Submission, AppendError> {
        let mut rec = Record {
            id: id.to_string(),
            kind: kind.to_string(),
            producer: self.key.name().to_string(),
            at: at.to_string(),
            body,
        };
        rec.check().map_err(AppendError::Record)?;
        let fields = self.schemas.fields(kind)?;
        let (_, vault) = self.privacy.commit_record(&mut rec, fields, subject).map_err(AppendError::Privacy)?;
        let sig = rec.sign(&self.key).map_err(AppendError::Record)?;
        Ok(Submission { rec, sig: Some(sig), vault })
    }
}
