//! C2SP tlog-checkpoint bodies (<https://c2sp.org/tlog-checkpoint>) and
//! their signed-note envelope.
//!
//! ```text
//! <origin>\n<decimal tree size>\n<base64 root hash>\n[<extension line>\n]*
//! ```

use thiserror::Error;

use crate::hash::{Hash, TreeHead};
use crate::note::{self, NoteError, NoteSignature, SignerKey, VerifierKey};

/// Errors about a checkpoint.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The signed-note envelope is bad or untrusted.
    #[error("checkpoint note")]
    Note(#[from] NoteError),
    /// The body is not a well-formed checkpoint.
    #[error("malformed checkpoint body, line {line}: {why}")]
    Body {
        /// 1-based line of the body.
        line: usize,
        /// What is wrong.
        why: &'static str,
    },
    /// The origin line is not the one expected.
    #[error("checkpoint origin is {found:?}, expected {expected:?}")]
    Origin {
        /// Expected origin.
        expected: String,
        /// Origin found.
        found: String,
    },
}

/// An unsigned checkpoint body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line: a unique name, conventionally a schema-less URL.
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Root hash at `size`.
    pub root: Hash,
    /// Optional extension lines, each non-empty, without newlines.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint for a tree head.
    pub fn new(origin: &str, head: TreeHead) -> Checkpoint {
        Checkpoint { origin: origin.to_string(), size: head.size, root: head.root, extensions: Vec::new() }
    }

    /// The tree head it commits to.
    pub fn head(&self) -> TreeHead {
        TreeHead { size: self.size, root: self.root }
    }

    /// The body text, ending in a newline.
    pub fn to_text(&self) -> String {
        let mut s = format!("{}\n{}\n{}\n", self.origin, self.size, self.root.to_base64());
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Parses a body strictly: canonical decimal size, canonical 32-byte
    /// base64 root, non-empty lines, newline-terminated.
    pub fn parse(text: &str) -> Result<Checkpoint, CheckpointError> {
        let bad = |line, why| CheckpointError::Body { line, why };
        if !text.ends_with('\n') {
            return Err(bad(0, "must end in a newline"));
        }
        let mut lines = text[..text.len() - 1].split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(bad(1, "empty origin"));
        }
        let size_s = lines.next().ok_or(bad(2, "missing tree size"))?;
        let size = parse_decimal(size_s).ok_or(bad(2, "tree size must be a canonical decimal u64"))?;
        let root_s = lines.next().ok_or(bad(3, "missing root hash"))?;
        let root = Hash::from_base64(root_s).ok_or(bad(3, "root must be canonical base64 of 32 bytes"))?;
        let mut extensions = Vec::new();
        for (i, l) in lines.enumerate() {
            if l.is_empty() {
                return Err(bad(4 + i, "empty extension line"));
            }
            extensions.push(l.to_string());
        }
        Ok(Checkpoint { origin: origin.to_string(), size, root, extensions })
    }

    /// Signs the body as a signed note.
    pub fn sign(&self, keys: &[&SignerKey]) -> Result<String, CheckpointError> {
        if self.origin.is_empty() || self.origin.contains('\n') {
            return Err(CheckpointError::Body { line: 1, why: "origin must be one non-empty line" });
        }
        if self.extensions.iter().any(|e| e.is_empty() || e.contains('\n')) {
            return Err(CheckpointError::Body { line: 4, why: "extension lines must be non-empty single lines" });
        }
        Ok(note::sign(&self.to_text(), keys)?)
    }
}

/// Canonical decimal: digits only, no sign, no leading zero (except "0").
pub fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

/// A checkpoint whose note signature by a trusted key has been verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    /// The body.
    pub checkpoint: Checkpoint,
    /// Ids of the trusted keys that signed it.
    pub signed_by: Vec<String>,
    /// Other signatures (for example witness cosignatures), not trusted.
    pub other_signatures: Vec<NoteSignature>,
}

/// Opens a signed checkpoint: verifies the note with `trusted`, parses the
/// body and, if `origin` is given, requires it.
///
/// Success does **not** prove the tree is consistent with any other
/// checkpoint, nor that any entry is in it: use the proof functions.
pub fn open(msg: &[u8], trusted: &[VerifierKey], origin: Option<&str>) -> Result<VerifiedCheckpoint, CheckpointError> {
    let opened = note::open(msg, trusted)?;
    let checkpoint = Checkpoint::parse(&opened.text)?;
    if let Some(o) = origin
        && checkpoint.origin != o
    {
        return Err(CheckpointError::Origin { expected: o.to_string(), found: checkpoint.origin });
    }
    Ok(VerifiedCheckpoint { checkpoint, signed_by: opened.verified, other_signatures: opened.unknown })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SignerKey {
        SignerKey::from_seed("example.com/log", &[7u8; 32]).expect("valid name")
    }

    #[test]
    fn sign_open_round_trip() {
        let cp = Checkpoint {
            origin: "example.com/log".into(),
            size: 42,
            root: crate::hash::leaf_hash(b"a"),
            extensions: vec!["ext one".into()],
        };
        let signed = cp.sign(&[&key()]).expect("signs");
        let v = open(signed.as_bytes(), &[key().verifier()], Some("example.com/log")).expect("opens");
        assert_eq!(v.checkpoint, cp);
        assert_eq!(v.signed_by, vec![key().id()]);
        let err = open(signed.as_bytes(), &[key().verifier()], Some("other")).expect_err("origin");
        assert!(matches!(err, CheckpointError::Origin { .. }));
    }

    #[test]
    fn strict_body() {
        let root = Hash([0; 32]).to_base64();
        assert!(Checkpoint::parse(&format!("o\n5\n{root}\n")).is_ok());
        for bad in [
            format!("o\n05\n{root}\n"),
            format!("o\n+5\n{root}\n"),
            format!("o\n 5\n{root}\n"),
            format!("o\n18446744073709551616\n{root}\n"),
            format!("o\n5\n{root}"),
            format!("o\n5\n{root}\n\n"),
            format!("\n5\n{root}\n"),
            "o\n5\nAAAA\n".to_string(),
            "o\n5\n".to_string(),
        ] {
            assert!(Checkpoint::parse(&bad).is_err(), "accepted {bad:?}");
        }
    }
}
