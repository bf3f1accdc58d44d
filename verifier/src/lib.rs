//! # evident-verify
//!
//! The single definition of every Evident format, and the offline
//! verification core a regulator runs:
//!
//! - [`hash`]: RFC 9162 §2.1.1 leaf and node hashing, tree heads.
//! - [`merkle`]: compact ranges, inclusion and consistency proofs
//!   (generation over a [`merkle::NodeSource`], strict verification).
//! - [`note`] and [`checkpoint`]: C2SP signed notes and tlog checkpoints.
//! - [`leaf`]: the entry envelope, RFC 8785 canonical bytes, producer signatures.
//! - [`sig`]: when a producer signature is valid, and batch verification.
//!
//! The core does no I/O: no database, network or clock. Time is always a
//! parameter. The one use of the operating system's randomness is the
//! coefficients of batch signature verification ([`sig::verify_many`]). The command-line tool lives behind the default
//! `cli` feature, so the ledger and reporter depend on the library alone.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod checkpoint;
pub mod hash;
pub mod keys;
pub mod leaf;
pub mod manifest;
pub mod merkle;
pub mod note;
pub mod pack;
pub mod pgp;
pub mod receipt;
pub mod rules;
pub mod schema;
pub mod sig;
pub mod ts;

pub use hash::{Hash, TreeHead, leaf_hash, node_hash};
