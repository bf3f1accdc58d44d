//! The leaf envelope (DESIGN §3), its RFC 8785 (JCS) canonical bytes, the
//! strict leaf parser, and producer signatures over JCS(rec).
//!
//! ```text
//! {"rec":{"at":…,"body":{…},"id":…,"kind":…,"producer":…},"seq":41,
//!  "sig":{"ed25519":…,"key":"<name>+<hex key hash>"},"ts":"…Z","v":1}
//! ```
//!
//! The stored leaf bytes are the truth. They are canonical JCS, so one byte
//! string corresponds to one envelope, and [`Entry::parse_leaf`] refuses
//! anything that would re-serialize differently.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::hash::Hash;
use crate::note::{SignerKey, VerifierKey};
use crate::ts::Timestamp;

/// The only envelope version.
pub const LEAF_VERSION: u64 = 1;
/// Largest leaf accepted anywhere: 64 KiB of canonical JSON.
pub const MAX_LEAF_BYTES: usize = 64 * 1024;
/// Longest `rec.id`, `rec.producer` and `rec.at`, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Deepest JSON nesting accepted in a record body.
pub const MAX_DEPTH: usize = 32;

/// Errors about one leaf or record. Messages name the field at fault.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeafError {
    /// Over [`MAX_LEAF_BYTES`].
    #[error("leaf is {0} bytes, over the {MAX_LEAF_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not UTF-8.
    #[error("leaf is not valid UTF-8")]
    NotUtf8,
    /// Not JSON, or not the envelope shape.
    #[error("leaf is not a valid envelope: {0}")]
    Json(String),
    /// Valid JSON that is not byte-for-byte RFC 8785 canonical.
    #[error("leaf is not RFC 8785 canonical JSON (first difference at byte {0})")]
    NotCanonical(usize),
    /// A number that JCS cannot represent exactly (outside I-JSON).
    #[error("field {0}: integer is not exactly representable as an IEEE 754 double")]
    Number(String),
    /// A field with a bad value.
    #[error("field {field}: {why}")]
    Field {
        /// Dotted path of the field.
        field: String,
        /// What is wrong.
        why: String,
    },
    /// The producer signature does not verify.
    #[error("producer signature by {key} does not verify over JCS(rec)")]
    BadSignature {
        /// Key id named in the signature.
        key: String,
    },
}

fn field_err(field: &str, why: impl Into<String>) -> LeafError {
    LeafError::Field { field: field.to_string(), why: why.into() }
}

/// A producer's record: what a service submits, and what it signs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Unique per producer; retries reuse it.
    pub id: String,
    /// Record kind; its body schema is `schemas/kinds/<kind>.json`.
    pub kind: String,
    /// The producing service's name (also its key name).
    pub producer: String,
    /// The producer's own RFC 3339 time for the event.
    pub at: String,
    /// Kind-specific content.
    pub body: Value,
}

/// A producer's signature over JCS(rec).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerSig {
    /// `name+hexhash` of the producer's verifier key.
    pub key: String,
    /// Base64 Ed25519 signature.
    pub ed25519: String,
}

impl ProducerSig {
    /// JCS of the signature object, as it appears in a leaf.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.key.len() + self.ed25519.len() + 24);
        self.write_canonical(&mut out);
        out
    }

    fn write_canonical(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"ed25519\":");
        write_jcs_str(out, &self.ed25519);
        out.extend_from_slice(b",\"key\":");
        write_jcs_str(out, &self.key);
        out.push(b'}');
    }
}

/// The leaf envelope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Envelope version; always [`LEAF_VERSION`].
    pub v: u64,
    /// Position in the log, from 0.
    pub seq: u64,
    /// Ledger time, canonical microsecond UTC.
    pub ts: String,
    /// The record.
    pub rec: Record,
    /// Producer signature; absent only for producers configured as unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<ProducerSig>,
}

/// RFC 8785 canonical bytes of a JSON value. Refuses integers that an
/// IEEE 754 double cannot hold exactly, since JCS would silently change them.
pub fn canonical_json(value: &Value) -> Result<Vec<u8>, LeafError> {
    // Evidence records hold integers, strings and structure; for those the
    // canonical form is written directly (tested equal to the crate's output
    // on random values in tests/jcs.rs). Anything with a float, or too deep,
    // takes the crate's path, which also reports the exact error.
    if integers_only(value, 0) {
        let mut out = Vec::with_capacity(256);
        write_jcs(&mut out, value);
        return Ok(out);
    }
    check_numbers(value, "$", 0)?;
    serde_json_canonicalizer::to_vec(value).map_err(|e| LeafError::Json(e.to_string()))
}

/// True when every number is an integer that a double holds exactly and the
/// nesting is within [`MAX_DEPTH`].
fn integers_only(v: &Value, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    match v {
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u <= 1 << 53,
            (None, Some(i)) => i >= -(1 << 53),
            _ => false,
        },
        Value::Array(a) => a.iter().all(|x| integers_only(x, depth + 1)),
        Value::Object(o) => o.values().all(|x| integers_only(x, depth + 1)),
        Value::Null | Value::Bool(_) | Value::String(_) => true,
    }
}

/// An RFC 8785 string: `"` and `\` escaped, the five short control escapes,
/// other controls as lower-case `\u00xx`, everything else as UTF-8.
fn write_jcs_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let b = s.as_bytes();
    // Most strings need no escape at all: copy them whole.
    if !needs_escape(b) {
        out.extend_from_slice(b);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let short: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        if short.is_empty() {
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

/// Whether a byte needs an escape in a JCS string: a control character,
/// `"` or `\`.
fn escaped(c: u8) -> bool {
    (c < 0x20) | (c == b'"') | (c == b'\\')
}

/// Whether any byte of `b` is [`escaped`]. Tested 32 bytes at a time
/// without an early exit inside a block, a loop the compiler vectorizes:
/// ~2.5x faster than a byte-wise `any` on strings of ~100 bytes, which are
/// most of a record's bytes.
fn needs_escape(b: &[u8]) -> bool {
    let mut blocks = b.chunks_exact(32);
    for block in &mut blocks {
        if block.iter().fold(false, |any, &c| any | escaped(c)) {
            return true;
        }
    }
    blocks.remainder().iter().any(|&c| escaped(c))
}

/// RFC 8785 for a value that passed [`integers_only`].
fn write_jcs(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_display(out, n),
        Value::String(s) => write_jcs_str(out, s),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_jcs(out, x);
            }
            out.push(b']');
        }
        Value::Object(o) => {
            // Members sort by their names' UTF-16 code units (RFC 8785
            // §3.2.3). serde_json's map iterates in UTF-8 byte order, which
            // agrees except past U+FFFF; sort only when it does not agree.
            let utf16 = |a: &str, b: &str| {
                // Without a character past U+FFFF (a 4-byte UTF-8 sequence),
                // byte order is UTF-16 order.
                if a.bytes().chain(b.bytes()).all(|c| c < 0xf0) {
                    a.as_bytes().cmp(b.as_bytes())
                } else {
                    a.encode_utf16().cmp(b.encode_utf16())
                }
            };
            let write_member = |out: &mut Vec<u8>, i: usize, k: &str, x: &Value| {
                if i > 0 {
                    out.push(b',');
                }
                write_jcs_str(out, k);
                out.push(b':');
                write_jcs(out, x);
            };
            out.push(b'{');
            if o.keys().zip(o.keys().skip(1)).all(|(a, b)| utf16(a, b).is_le()) {
                for (i, (k, x)) in o.iter().enumerate() {
                    write_member(out, i, k, x);
                }
            } else {
                let mut members: Vec<(&String, &Value)> = o.iter().collect();
                members.sort_by(|a, b| utf16(a.0, b.0));
                for (i, (k, x)) in members.into_iter().enumerate() {
                    write_member(out, i, k, x);
                }
            }
            out.push(b'}');
        }
    }
}

/// Appends `v`'s `Display` form without an intermediate `String`.
fn write_display(out: &mut Vec<u8>, v: &impl std::fmt::Display) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{v}");
}

/// The canonical leaf bytes of an entry from its parts: JCS(rec) as signed,
/// and JCS(sig). Equal to [`Entry::to_leaf_bytes`] on the same entry (JCS
/// orders the envelope `rec`, `seq`, `sig`, `ts`, `v`, and a member's
/// canonical form does not depend on where it sits), without serializing
/// the record a second time. `ts` must already be canonical and `seq` at
/// most 2^53 (JCS numbers are doubles; no ledger comes near).
pub fn leaf_bytes_from_parts(seq: u64, ts: &str, rec_jcs: &[u8], sig_jcs: Option<&[u8]>) -> Vec<u8> {
    debug_assert!(seq <= 1 << 53);
    let mut out = Vec::with_capacity(rec_jcs.len() + sig_jcs.map_or(0, <[u8]>::len) + 64);
    write_leaf(&mut out, seq, ts, rec_jcs, sig_jcs);
    out
}

/// Appends the leaf bytes of [`leaf_bytes_from_parts`] to `out`.
fn write_leaf(out: &mut Vec<u8>, seq: u64, ts: &str, rec_jcs: &[u8], sig_jcs: Option<&[u8]>) {
    out.extend_from_slice(LEAF_HEAD);
    out.extend_from_slice(rec_jcs);
    write_after_rec(out, seq, ts, sig_jcs.map(|s| move |o: &mut Vec<u8>| o.extend_from_slice(s)));
}

/// A leaf's RFC 9162 hash, begun before the entry's `seq` and `ts` are
/// known. The leaf bytes start with `{"rec":` and JCS(rec), usually most of
/// the leaf: SHA-256 can consume that part wherever the record is prepared,
/// and [`LeafStart::finish`] hashes only the envelope's tail once the
/// ledger assigns `seq` and `ts`. Equal to [`crate::hash::leaf_hash`] of
/// [`leaf_bytes_from_parts`] on the same parts.
#[derive(Clone)]
pub struct LeafStart {
    hash: sha2::Sha256,
    /// Length of the JCS(rec) hashed, to catch a mismatched `finish`.
    rec_len: usize,
}

impl LeafStart {
    /// Hashes the leaf's head: the RFC 9162 leaf prefix 0x00, `{"rec":`
    /// and `rec_jcs`.
    pub fn new(rec_jcs: &[u8]) -> LeafStart {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update([0x00]);
        h.update(LEAF_HEAD);
        h.update(rec_jcs);
        LeafStart { hash: h, rec_len: rec_jcs.len() }
    }

    /// Writes the leaf bytes into `out` (cleared first; reuse it across
    /// leaves) and returns their hash. `rec_jcs` must be what
    /// [`LeafStart::new`] was given.
    pub fn finish(&self, seq: u64, ts: &str, rec_jcs: &[u8], sig_jcs: Option<&[u8]>, out: &mut Vec<u8>) -> Hash {
        use sha2::Digest as _;
        debug_assert!(seq <= 1 << 53);
        debug_assert_eq!(rec_jcs.len(), self.rec_len, "finish is given the record LeafStart::new hashed");
        out.clear();
        write_leaf(out, seq, ts, rec_jcs, sig_jcs);
        let mut h = self.hash.clone();
        h.update(&out[LEAF_HEAD.len() + rec_jcs.len()..]);
        Hash(h.finalize().into())
    }
}

impl std::fmt::Debug for LeafStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeafStart")
    }
}

/// How every leaf begins.
const LEAF_HEAD: &[u8] = b"{\"rec\":";

/// The envelope members after `rec`, in JCS order (`seq`, `sig`, `ts`,
/// `v`), and the closing brace; `sig` writes JCS(sig).
fn write_after_rec(out: &mut Vec<u8>, seq: u64, ts: &str, sig: Option<impl FnOnce(&mut Vec<u8>)>) {
    out.extend_from_slice(b",\"seq\":");
    write_display(out, &seq);
    if let Some(write_sig) = sig {
        out.extend_from_slice(b",\"sig\":");
        write_sig(out);
    }
    out.extend_from_slice(b",\"ts\":");
    write_jcs_str(out, ts);
    out.extend_from_slice(b",\"v\":");
    write_display(out, &LEAF_VERSION);
    out.push(b'}');
}

fn check_numbers(v: &Value, path: &str, depth: usize) -> Result<(), LeafError> {
    if depth > MAX_DEPTH {
        return Err(field_err(path, format!("nested deeper than {MAX_DEPTH} levels")));
    }
    match v {
        Value::Number(n) => {
            let exact = if let Some(u) = n.as_u64() {
                (u as f64) as u64 == u && u <= (1u64 << 53)
            } else if let Some(i) = n.as_i64() {
                (i as f64) as i64 == i && i >= -(1i64 << 53)
            } else {
                n.as_f64().is_some_and(f64::is_finite)
            };
            if !exact {
                return Err(LeafError::Number(path.to_string()));
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                check_numbers(x, &format!("{path}[{i}]"), depth + 1)?;
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                check_numbers(x, &format!("{path}.{k}"), depth + 1)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn check_text(field: &str, s: &str, max: usize) -> Result<(), LeafError> {
    if s.is_empty() {
        return Err(field_err(field, "must not be empty"));
    }
    if s.len() > max {
        return Err(field_err(field, format!("longer than {max} bytes")));
    }
    if s.chars().any(char::is_control) {
        return Err(field_err(field, "contains a control character"));
    }
    Ok(())
}

/// A kind name: `[a-z][a-z0-9_]{0,63}`.
pub fn check_kind(kind: &str) -> Result<(), LeafError> {
    let ok = (1..=64).contains(&kind.len())
        && kind.as_bytes()[0].is_ascii_lowercase()
        && kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(field_err("rec.kind", format!("{kind:?} is not a kind name ([a-z][a-z0-9_]{{0,63}})")))
    }
}

impl Record {
    /// Checks the envelope fields of the record (not the body's schema).
    pub fn check(&self) -> Result<(), LeafError> {
        check_text("rec.id", &self.id, MAX_ID_BYTES)?;
        check_kind(&self.kind)?;
        check_text("rec.producer", &self.producer, MAX_ID_BYTES)?;
        crate::note::check_name(&self.producer)
            .map_err(|_| field_err("rec.producer", "must be a key name: no spaces or '+'"))?;
        check_text("rec.at", &self.at, 64)?;
        if chrono::DateTime::parse_from_rfc3339(&self.at).is_err() {
            return Err(field_err("rec.at", format!("{:?} is not an RFC 3339 time", self.at)));
        }
        if !self.body.is_object() {
            return Err(field_err("rec.body", "must be a JSON object"));
        }
        Ok(())
    }

    /// JCS(rec): the bytes a producer signs.
    pub fn signing_bytes(&self) -> Result<Vec<u8>, LeafError> {
        // Room for a typical record, so the writes below rarely reallocate.
        let mut out = Vec::with_capacity(1024);
        if self.write_canonical(&mut out) {
            return Ok(out);
        }
        let v = serde_json::to_value(self).map_err(|e| LeafError::Json(e.to_string()))?;
        canonical_json(&v)
    }

    /// Appends JCS(rec) to `out` directly when the body holds no float
    /// (members in RFC 8785 order: `at`, `body`, `id`, `kind`, `producer`).
    /// Returns false, leaving `out` as it was, when the body needs the
    /// general path.
    fn write_canonical(&self, out: &mut Vec<u8>) -> bool {
        if !integers_only(&self.body, 0) {
            return false;
        }
        out.extend_from_slice(b"{\"at\":");
        write_jcs_str(out, &self.at);
        out.extend_from_slice(b",\"body\":");
        write_jcs(out, &self.body);
        out.extend_from_slice(b",\"id\":");
        write_jcs_str(out, &self.id);
        out.extend_from_slice(b",\"kind\":");
        write_jcs_str(out, &self.kind);
        out.extend_from_slice(b",\"producer\":");
        write_jcs_str(out, &self.producer);
        out.push(b'}');
        true
    }

    /// Signs the record with a producer key. The key name must be the producer.
    pub fn sign(&self, key: &SignerKey) -> Result<ProducerSig, LeafError> {
        if key.name() != self.producer {
            return Err(field_err("sig.key", format!("key {} cannot sign for producer {:?}", key.id(), self.producer)));
        }
        let bytes = self.signing_bytes()?;
        Ok(ProducerSig { key: key.id(), ed25519: B64.encode(key.sign(&bytes)) })
    }

    /// Verifies a producer signature with the given key (which the caller
    /// has already found valid for this record's time and producer).
    ///
    /// Success does **not** prove the key was valid when the entry was
    /// appended; check that against the key history.
    pub fn verify(&self, sig: &ProducerSig, key: &VerifierKey) -> Result<(), LeafError> {
        self.check_sig_binding(sig)?;
        if sig.key != key.id() {
            return Err(field_err("sig.key", format!("names {}, not {}", sig.key, key.id())));
        }
        let raw = decode_sig(&sig.ed25519)?;
        if crate::sig::verify(key, &self.signing_bytes()?, &raw) {
            Ok(())
        } else {
            Err(LeafError::BadSignature { key: sig.key.clone() })
        }
    }

    /// Checks that `sig.key` names a key of this record's producer.
    pub fn check_sig_binding(&self, sig: &ProducerSig) -> Result<(), LeafError> {
        let (name, hash) = sig.key.split_once('+').ok_or_else(|| field_err("sig.key", "must be name+hexhash"))?;
        if name != self.producer {
            return Err(field_err(
                "sig.key",
                format!("key {} does not belong to producer {:?}", sig.key, self.producer),
            ));
        }
        // Checked in place: this runs for every signed leaf of a pack.
        if hash.len() != 8 || !hash.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
            return Err(field_err("sig.key", "key hash must be 8 lower-case hex digits"));
        }
        Ok(())
    }
}

/// Decodes a base64 Ed25519 signature of exactly 64 bytes.
pub fn decode_sig(s: &str) -> Result<[u8; 64], LeafError> {
    // Decoded into and re-encoded from stack buffers: this runs for every
    // signed entry of a pack.
    let mut raw = [0u8; 66];
    let n = B64.decode_slice(s, &mut raw).map_err(|e| match e {
        base64::DecodeSliceError::OutputSliceTooSmall => field_err("sig.ed25519", "an Ed25519 signature is 64 bytes"),
        base64::DecodeSliceError::DecodeError(_) => field_err("sig.ed25519", "not base64"),
    })?;
    if n != 64 {
        return Err(field_err("sig.ed25519", "an Ed25519 signature is 64 bytes"));
    }
    let mut sig = [0u8; 64];
    sig.copy_from_slice(&raw[..64]);
    let mut again = [0u8; 88];
    match B64.encode_slice(sig, &mut again) {
        Ok(len) if again[..len] == *s.as_bytes() => Ok(sig),
        _ => Err(field_err("sig.ed25519", "not canonical base64")),
    }
}

impl Entry {
    /// The ledger time.
    pub fn timestamp(&self) -> Result<Timestamp, LeafError> {
        Timestamp::parse(&self.ts)
            .ok_or_else(|| field_err("ts", format!("{:?} is not canonical UTC with microseconds", self.ts)))
    }

    /// Checks every envelope field.
    pub fn check(&self) -> Result<(), LeafError> {
        if self.v != LEAF_VERSION {
            return Err(field_err("v", format!("unsupported envelope version {}", self.v)));
        }
        self.timestamp()?;
        self.rec.check()?;
        if let Some(sig) = &self.sig {
            self.rec.check_sig_binding(sig)?;
            decode_sig(&sig.ed25519)?;
        }
        Ok(())
    }

    /// The canonical leaf bytes.
    pub fn to_leaf_bytes(&self) -> Result<Vec<u8>, LeafError> {
        self.check()?;
        let v = serde_json::to_value(self).map_err(|e| LeafError::Json(e.to_string()))?;
        let bytes = canonical_json(&v)?;
        if bytes.len() > MAX_LEAF_BYTES {
            return Err(LeafError::TooLarge(bytes.len()));
        }
        Ok(bytes)
    }

    /// JCS(rec) as a slice of this entry's canonical leaf bytes (the
    /// message a producer signs), or `None` if `leaf` is not this entry's
    /// canonical form. Avoids serializing the record again.
    pub fn rec_bytes<'a>(&self, leaf: &'a [u8]) -> Option<&'a [u8]> {
        const HEAD: &[u8] = b"{\"rec\":";
        let sig_jcs = self.sig.as_ref().map(ProducerSig::canonical_bytes);
        // The envelope after `rec`, exactly as leaf_bytes_from_parts writes it.
        let tail = leaf_bytes_from_parts(self.seq, &self.ts, b"", sig_jcs.as_deref());
        let tail = &tail[HEAD.len()..];
        let body = leaf.strip_prefix(HEAD)?.strip_suffix(tail)?;
        Some(body)
    }

    /// Parses leaf bytes strictly: within the size cap, UTF-8, the exact
    /// envelope shape, every field valid, and already RFC 8785 canonical.
    pub fn parse_leaf(bytes: &[u8]) -> Result<Entry, LeafError> {
        Entry::parse_leaf_with_rec(bytes).map(|(e, _)| e)
    }

    /// [`Entry::parse_leaf`], also returning where JCS(rec), the message a
    /// producer signs, lies in `bytes` (what [`Entry::rec_bytes`] finds,
    /// without serializing anything again).
    pub fn parse_leaf_with_rec(bytes: &[u8]) -> Result<(Entry, std::ops::Range<usize>), LeafError> {
        const HEAD: &[u8] = b"{\"rec\":";
        if bytes.len() > MAX_LEAF_BYTES {
            return Err(LeafError::TooLarge(bytes.len()));
        }
        // UTF-8 checked once for the whole leaf, so that the parser does
        // not check each string again.
        let text = std::str::from_utf8(bytes).map_err(|_| LeafError::NotUtf8)?;
        // Fast path: the typed parse, written back canonically, gives the
        // same bytes. Accepts exactly what the general path below accepts
        // (equal bytes are canonical by construction); anything else,
        // including every error, goes the general way for its exact message.
        if let Ok(entry) = serde_json::from_str::<Entry>(text)
            && entry.v == LEAF_VERSION
            && entry.seq <= 1 << 53
            && let Some(rec) = CANONICAL.with_borrow_mut(|out| entry.canonical_rec_span(bytes, out))
        {
            entry.check()?;
            return Ok((entry, rec));
        }
        let value: Value = serde_json::from_str(text).map_err(|e| LeafError::Json(e.to_string()))?;
        // An explicit null would be a second byte form of an unsigned entry.
        if value.get("sig").is_some_and(Value::is_null) {
            return Err(field_err("sig", "must be omitted, not null, on an unsigned entry"));
        }
        let canon = canonical_json(&value)?;
        if canon != bytes {
            let at = canon.iter().zip(bytes).position(|(a, b)| a != b).unwrap_or(canon.len().min(bytes.len()));
            return Err(LeafError::NotCanonical(at));
        }
        let entry: Entry = serde_json::from_value(value).map_err(|e| LeafError::Json(e.to_string()))?;
        entry.check()?;
        let rec = entry.rec_bytes(bytes).ok_or(LeafError::NotCanonical(HEAD.len()))?;
        let start = rec.as_ptr() as usize - bytes.as_ptr() as usize;
        Ok((entry, start..start + rec.len()))
    }
}

thread_local! {
    /// Scratch space for [`Entry::canonical_rec_span`], reused across the
    /// leaves a thread parses.
    static CANONICAL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Entry {
    /// Writes this entry canonically into `out` (cleared first) and, if that
    /// gives exactly `bytes`, returns where JCS(rec) lies in them.
    fn canonical_rec_span(&self, bytes: &[u8], out: &mut Vec<u8>) -> Option<std::ops::Range<usize>> {
        const HEAD: &[u8] = b"{\"rec\":";
        out.clear();
        out.extend_from_slice(HEAD);
        if !self.rec.write_canonical(out) {
            return None;
        }
        let rec = HEAD.len()..out.len();
        write_after_rec(out, self.seq, &self.ts, self.sig.as_ref().map(|s| |o: &mut Vec<u8>| s.write_canonical(o)));
        let same = out.as_slice() == bytes;
        // Leaves are capped, but a record written back from a parse can be
        // longer than its input: keep the scratch buffer from growing for good.
        if out.capacity() > 2 * MAX_LEAF_BYTES {
            *out = Vec::new();
        }
        same.then_some(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The block-wise test agrees with a byte-wise one for every byte value
    /// at every position of strings shorter and longer than a block, and
    /// the escaping it guards writes what RFC 8785 says.
    #[test]
    fn needs_escape_agrees_with_the_bytewise_definition() {
        for len in 1..=80usize {
            for pos in 0..len {
                for c in 0..=255u8 {
                    let mut v = vec![b'a'; len];
                    v[pos] = c;
                    let bytewise = v.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
                    assert_eq!(needs_escape(&v), bytewise, "len {len} pos {pos} byte {c:#04x}");
                }
            }
        }
        assert!(!needs_escape(b""));
        let mut out = Vec::new();
        write_jcs_str(&mut out, &format!("{}\u{1f}\"\\\n{}é", "x".repeat(40), "y".repeat(40)));
        let want = format!("\"{}\\u001f\\\"\\\\\\n{}é\"", "x".repeat(40), "y".repeat(40));
        assert_eq!(String::from_utf8(out).expect("UTF-8"), want);
    }

    /// `decode_sig` (stack buffers) judges every input as decoding into a
    /// `Vec` and re-encoding did: valid, truncated, extended, non-canonical
    /// and garbage signatures.
    #[test]
    fn decode_sig_agrees_with_the_allocating_reference() {
        fn reference(s: &str) -> Result<[u8; 64], LeafError> {
            let raw = B64.decode(s).map_err(|_| field_err("sig.ed25519", "not base64"))?;
            if B64.encode(&raw) != s {
                return Err(field_err("sig.ed25519", "not canonical base64"));
            }
            raw.try_into().map_err(|_| field_err("sig.ed25519", "an Ed25519 signature is 64 bytes"))
        }
        let good = B64.encode((0..64u8).map(|i| i.wrapping_mul(37)).collect::<Vec<u8>>());
        let mut cases = vec![good.clone(), String::new(), "====".into(), good.replace('=', ""), format!("{good}AA==")];
        for n in [60usize, 63, 65, 66, 67, 100] {
            cases.push(B64.encode(vec![7u8; n]));
        }
        for i in 0..good.len() {
            for c in ['A', 'B', '/', '+', '=', '-', ' '] {
                let mut m: Vec<char> = good.chars().collect();
                m[i] = c;
                cases.push(m.into_iter().collect());
            }
            cases.push(format!("{}{}", &good[..i], &good[i + 1..]));
        }
        for c in &cases {
            assert_eq!(decode_sig(c), reference(c), "{c:?}");
        }
        assert!(decode_sig(&good).is_ok());
    }

    /// A leaf hash begun on JCS(rec) and finished with the envelope's tail
    /// equals the hash of the whole leaf, and the bytes written equal
    /// `leaf_bytes_from_parts`, for records of every length around SHA-256's
    /// 64-byte blocks, with and without a signature, into a reused buffer.
    #[test]
    fn a_leaf_hash_begun_on_the_record_equals_the_whole_leafs() {
        let sig = br#"{"ed25519":"c2ln","key":"deploy-bot+0a1b2c3d"}"#;
        let mut out = b"left over from the previous leaf".to_vec();
        for len in 0..300usize {
            let rec_jcs = format!(r#"{{"id":"{}"}}"#, "x".repeat(len));
            let start = LeafStart::new(rec_jcs.as_bytes());
            for (seq, sig_jcs) in [(0u64, None), (len as u64 * 977, Some(&sig[..])), (1 << 53, Some(&sig[..]))] {
                let ts = "2026-11-21T09:30:12.000001Z";
                let want = leaf_bytes_from_parts(seq, ts, rec_jcs.as_bytes(), sig_jcs);
                let hash = start.finish(seq, ts, rec_jcs.as_bytes(), sig_jcs, &mut out);
                assert_eq!(out, want, "record of {len} bytes, seq {seq}");
                assert_eq!(hash, crate::hash::leaf_hash(&want), "record of {len} bytes, seq {seq}");
            }
        }
    }

    fn rec() -> Record {
        Record {
            id: "r-1".into(),
            kind: "approval".into(),
            producer: "deploy-bot".into(),
            at: "2026-11-21T09:30:12Z".into(),
            body: serde_json::json!({"b": 1, "a": "x"}),
        }
    }

    #[test]
    fn leaf_round_trip_and_signature() {
        let key = SignerKey::from_seed("deploy-bot", &[3; 32]).expect("name");
        let r = rec();
        let sig = r.sign(&key).expect("sign");
        r.verify(&sig, &key.verifier()).expect("verifies");
        let e =
            Entry { v: 1, seq: 41, ts: "2026-11-21T09:30:12.345678Z".into(), rec: r.clone(), sig: Some(sig.clone()) };
        let bytes = e.to_leaf_bytes().expect("canonical");
        assert!(bytes.starts_with(br#"{"rec":{"at":"2026-11-21T09:30:12Z","body":{"a":"x","b":1}"#));
        assert_eq!(Entry::parse_leaf(&bytes).expect("parses"), e);

        let mut tampered = r;
        tampered.body = serde_json::json!({"b": 2, "a": "x"});
        assert!(matches!(tampered.verify(&sig, &key.verifier()), Err(LeafError::BadSignature { .. })));
        let other = SignerKey::from_seed("other-bot", &[3; 32]).expect("name");
        assert!(rec().sign(&other).is_err(), "a key signs only for its producer");
    }

    #[test]
    fn rec_bytes_is_the_signed_message() {
        let key = SignerKey::from_seed("deploy-bot", &[4; 32]).expect("key");
        let r = rec();
        for sig in [None, Some(r.sign(&key).expect("sign"))] {
            let e = Entry { v: 1, seq: 42, ts: "2026-01-01T00:00:00.000001Z".into(), rec: r.clone(), sig };
            let leaf = e.to_leaf_bytes().expect("leaf");
            assert_eq!(e.rec_bytes(&leaf), Some(r.signing_bytes().expect("jcs").as_slice()));
            let (parsed, span) = Entry::parse_leaf_with_rec(&leaf).expect("parses");
            assert_eq!(parsed, e);
            assert_eq!(&leaf[span], r.signing_bytes().expect("jcs").as_slice());
            let mut other = leaf.clone();
            other.push(b' ');
            assert_eq!(e.rec_bytes(&other), None);
        }
    }

    #[test]
    fn parse_refuses_non_canonical() {
        let e = Entry { v: 1, seq: 0, ts: "2026-11-21T09:30:12.345678Z".into(), rec: rec(), sig: None };
        let good = e.to_leaf_bytes().expect("canonical");
        let s = String::from_utf8(good).expect("utf8");
        for bad in [
            s.replace(r#""seq":0"#, r#""seq":0.0"#),
            s.replace(r#""seq":0"#, r#""seq": 0"#),
            s.replace(r#"{"rec""#, r#"{"v":1,"rec""#),
            s.replace(r#""v":1"#, r#""v":2"#),
            s.replace(r#""x""#, r#""\u0078""#),
            format!("{s}\n"),
            s.replace(r#""b":1"#, r#""b":9007199254740993"#),
        ] {
            assert!(Entry::parse_leaf(bad.as_bytes()).is_err(), "accepted {bad}");
        }
        assert_eq!(Entry::parse_leaf(&[0xff, b'{']), Err(LeafError::NotUtf8));
    }
}
