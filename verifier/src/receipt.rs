//! The receipt file: one entry's leaf bytes, its RFC 9162 inclusion proof
//! and a signed checkpoint, checkable offline with the ledger's verifier
//! key alone. Modelled on C2SP tlog-proof, in JSON:
//!
//! ```json
//! {"format":"evident-receipt/1","seq":41,"tree_size":1000,
//!  "leaf":"{\"rec\":…}","inclusion":["<base64 hash>",…],
//!  "checkpoint":"<signed note text>"}
//! ```

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::checkpoint::{self, CheckpointError, VerifiedCheckpoint};
use crate::hash::{Hash, leaf_hash};
use crate::leaf::{Entry, LeafError};
use crate::merkle::{ProofError, verify_inclusion};
use crate::note::VerifierKey;

/// The receipt format identifier.
pub const RECEIPT_FORMAT: &str = "evident-receipt/1";
/// Largest receipt file accepted: 2 MiB.
pub const MAX_RECEIPT_BYTES: usize = 2 << 20;

/// A receipt file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// Always [`RECEIPT_FORMAT`].
    pub format: String,
    /// The entry's seq (its leaf index).
    pub seq: u64,
    /// Tree size of the checkpoint the proof is against.
    pub tree_size: u64,
    /// The exact stored leaf bytes, as a string.
    pub leaf: String,
    /// Inclusion proof hashes, base64, leaf first.
    pub inclusion: Vec<String>,
    /// The signed checkpoint note at `tree_size`.
    pub checkpoint: String,
}

/// Errors checking a receipt. The first failing stage is reported.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// Not a receipt file.
    #[error("receipt is not valid: {0}")]
    Malformed(String),
    /// The checkpoint does not open with the trusted keys.
    #[error("receipt checkpoint")]
    Checkpoint(#[from] CheckpointError),
    /// The leaf fails the strict parse.
    #[error("receipt leaf (seq {seq})")]
    Leaf {
        /// Claimed seq.
        seq: u64,
        /// Why.
        #[source]
        source: LeafError,
    },
    /// The receipt's fields disagree with each other.
    #[error("receipt inconsistent: {0}")]
    Mismatch(String),
    /// The inclusion proof fails.
    #[error("inclusion of seq {seq} in tree size {size}")]
    Inclusion {
        /// Leaf index.
        seq: u64,
        /// Tree size.
        size: u64,
        /// Why.
        #[source]
        source: ProofError,
    },
}

/// What a verified receipt establishes.
#[derive(Clone, Debug)]
pub struct VerifiedReceipt {
    /// The entry.
    pub entry: Entry,
    /// Its leaf hash.
    pub leaf_hash: Hash,
    /// The checkpoint it is included under.
    pub checkpoint: VerifiedCheckpoint,
}

impl Receipt {
    /// Parses a receipt file strictly.
    pub fn parse(bytes: &[u8]) -> Result<Receipt, ReceiptError> {
        if bytes.len() > MAX_RECEIPT_BYTES {
            return Err(ReceiptError::Malformed(format!(
                "{} bytes, over the {MAX_RECEIPT_BYTES}-byte limit",
                bytes.len()
            )));
        }
        let r: Receipt = serde_json::from_slice(bytes).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
        if r.format != RECEIPT_FORMAT {
            return Err(ReceiptError::Malformed(format!("unknown format {:?}, expected {RECEIPT_FORMAT}", r.format)));
        }
        Ok(r)
    }

    /// Verifies the receipt: the checkpoint against `trusted` (and `origin`
    /// if given), the leaf strictly, and the inclusion proof.
    ///
    /// Success does **not** prove that the producer signature inside the
    /// leaf is valid under the key history, nor that the checkpoint is
    /// consistent with any other checkpoint you hold (use a consistency
    /// proof for that).
    pub fn verify(&self, trusted: &[VerifierKey], origin: Option<&str>) -> Result<VerifiedReceipt, ReceiptError> {
        let cp = checkpoint::open(self.checkpoint.as_bytes(), trusted, origin)?;
        if cp.checkpoint.size != self.tree_size {
            return Err(ReceiptError::Mismatch(format!(
                "tree_size {} but the checkpoint is at size {}",
                self.tree_size, cp.checkpoint.size
            )));
        }
        let entry =
            Entry::parse_leaf(self.leaf.as_bytes()).map_err(|source| ReceiptError::Leaf { seq: self.seq, source })?;
        if entry.seq != self.seq {
            return Err(ReceiptError::Mismatch(format!("seq {} but the leaf says seq {}", self.seq, entry.seq)));
        }
        let proof = self
            .inclusion
            .iter()
            .enumerate()
            .map(|(i, h)| {
                Hash::from_base64(h)
                    .ok_or_else(|| ReceiptError::Malformed(format!("inclusion[{i}] is not base64 of 32 bytes")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let lh = leaf_hash(self.leaf.as_bytes());
        verify_inclusion(self.seq, self.tree_size, &lh, &proof, &cp.checkpoint.root)
            .map_err(|source| ReceiptError::Inclusion { seq: self.seq, size: self.tree_size, source })?;
        Ok(VerifiedReceipt { entry, leaf_hash: lh, checkpoint: cp })
    }
}
