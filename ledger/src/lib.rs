//! # evident-ledger
//!
//! The append-only evidence ledger: services append records through
//! [`Ledger`]; each becomes a leaf of an RFC 9162 Merkle tree stored in
//! SQLite, with signed checkpoints, inclusion and consistency proofs and
//! offline-checkable receipt files. Formats are defined by `evident-verify`.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use evident_ledger::{Ledger, LedgerOptions, Signer, keyfile};
//! let key = keyfile::read_signer_key("evident/ledger.key".as_ref())?;
//! let origin = key.name().to_string();
//! let ledger = Ledger::open(LedgerOptions::new("evident/ledger.db", &origin, key))?;
//! let producer = Signer::new(keyfile::read_signer_key("deploy-bot.key".as_ref())?)?;
//! let sub = producer.sign("run-42", "invariant_result", "2026-11-21T09:30:12Z", serde_json::json!({}))?;
//! let receipt = ledger.append(sub)?; // durable when it returns
//! println!("seq {} leaf {}", receipt.seq, receipt.leaf_hash);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admin;
pub mod config;
pub mod error;
pub mod idindex;
pub mod keyfile;
pub mod ledger;
pub mod pgp;
pub mod privacy;
pub mod signer;
pub mod store;
pub mod verify_db;
mod wal_sync;

pub use error::{AppendError, LedgerError, StoreError};
pub use ledger::{AppendReceipt, Clock, Ledger, LedgerOptions, Submission};
pub use signer::Signer;

/// Creation time of the ledger's OpenPGP key (2020-01-01T00:00:00Z). Fixed,
/// so the certificate and its fingerprint follow from the ledger key alone
/// and the reporter can re-derive it wherever the key is.
pub fn pgp_creation_time() -> std::time::SystemTime {
    std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_577_836_800)
}
