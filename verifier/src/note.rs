//! C2SP signed-note with Ed25519 (algorithm byte 0x01): key names, key
//! hashes, verifier and signer key strings, signing and strict opening.
//!
//! Spec: <https://c2sp.org/signed-note>. Known answers come from the
//! golang.org/x/mod/sumdb/note test suite (`shared/vectors/signed-note.json`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::hash::{hex_decode, hex_encode};

/// Largest note accepted by [`open`]: 1 MiB.
pub const MAX_NOTE_BYTES: usize = 1 << 20;
/// Most signature lines accepted on one note.
pub const MAX_SIGNATURES: usize = 100;
/// The Ed25519 signature-type byte of the signed-note spec.
pub const ALG_ED25519: u8 = 0x01;

/// Errors about keys and key strings.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// A key name that is empty, has white space or '+', or is not UTF-8.
    #[error("invalid key name {0:?}: must be non-empty, without spaces or '+'")]
    BadName(String),
    /// A key string that does not have the `name+hash+base64` form.
    #[error("malformed key string: {0}")]
    Malformed(&'static str),
    /// The key hash in the string does not match the name and key.
    #[error("key hash {stated} does not match the key (computed {computed})")]
    HashMismatch {
        /// Hash written in the key string.
        stated: String,
        /// Hash computed from name and key.
        computed: String,
    },
    /// An algorithm other than Ed25519.
    #[error("unsupported signature algorithm byte {0:#04x}; only Ed25519 (0x01) is supported")]
    Algorithm(u8),
}

/// Checks a key name against the signed-note rules.
pub fn check_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty() || name.contains('+') || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(KeyError::BadName(name.to_string()));
    }
    Ok(())
}

/// The 4-byte key hash: SHA-256(name || "\n" || 0x01 || public key)[..4].
pub fn key_hash(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public.as_bytes());
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// A public Ed25519 note key with its name and key hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    hash: [u8; 4],
    key: VerifyingKey,
}

impl VerifierKey {
    /// A verifier key for `name`.
    pub fn new(name: &str, key: VerifyingKey) -> Result<VerifierKey, KeyError> {
        check_name(name)?;
        Ok(VerifierKey { name: name.to_string(), hash: key_hash(name, &key), key })
    }

    /// Parses `name+hexhash+base64(0x01 || key)`, checking the hash.
    pub fn parse(s: &str) -> Result<VerifierKey, KeyError> {
        let mut parts = s.splitn(3, '+');
        let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(KeyError::Malformed("expected name+hash+key"));
        };
        check_name(name)?;
        let raw = decode_canonical(key).ok_or(KeyError::Malformed("key is not canonical base64"))?;
        let (&alg, pk) = raw.split_first().ok_or(KeyError::Malformed("empty key"))?;
        if alg != ALG_ED25519 {
            return Err(KeyError::Algorithm(alg));
        }
        let pk: [u8; 32] = pk.try_into().map_err(|_| KeyError::Malformed("Ed25519 key must be 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&pk).map_err(|_| KeyError::Malformed("not an Ed25519 point"))?;
        let vk = VerifierKey::new(name, key)?;
        let stated = parse_key_hash(hash)?;
        if stated != vk.hash {
            return Err(KeyError::HashMismatch { stated: hash.to_string(), computed: hex_encode(&vk.hash) });
        }
        Ok(vk)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key hash.
    pub fn hash(&self) -> [u8; 4] {
        self.hash
    }

    /// `name+hexhash`: how leaves and keyrings refer to this key.
    pub fn id(&self) -> String {
        format!("{}+{}", self.name, hex_encode(&self.hash))
    }

    /// Whether `id` is this key's [`id`](Self::id), without building it.
    pub fn has_id(&self, id: &str) -> bool {
        let Some(hex) = id.strip_prefix(self.name.as_str()).and_then(|r| r.strip_prefix('+')) else {
            return false;
        };
        const HEX: &[u8; 16] = b"0123456789abcdef";
        hex.len() == 8
            && hex
                .as_bytes()
                .chunks(2)
                .zip(self.hash)
                .all(|(h, b)| h[0] == HEX[usize::from(b >> 4)] && h[1] == HEX[usize::from(b & 15)])
    }

    /// The Ed25519 public key.
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Verifies an Ed25519 signature over `msg` (strict: no malleable forms).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
            return false;
        };
        self.key.verify_strict(msg, &sig).is_ok()
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut raw = Vec::with_capacity(33);
        raw.push(ALG_ED25519);
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{}+{}", self.name, hex_encode(&self.hash), B64.encode(raw))
    }
}

fn parse_key_hash(s: &str) -> Result<[u8; 4], KeyError> {
    let bytes = hex_decode(s).ok_or(KeyError::Malformed("key hash must be 8 lower-case hex digits"))?;
    bytes.try_into().map_err(|_| KeyError::Malformed("key hash must be 8 lower-case hex digits"))
}

fn decode_canonical(s: &str) -> Option<Vec<u8>> {
    let raw = B64.decode(s).ok()?;
    (B64.encode(&raw) == s).then_some(raw)
}

/// A private Ed25519 note key. Its `Debug` form never shows the secret.
#[derive(Clone)]
pub struct SignerKey {
    name: String,
    hash: [u8; 4],
    key: SigningKey,
}

impl std::fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignerKey({})", self.id())
    }
}

impl SignerKey {
    /// A signer key from a name and a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<SignerKey, KeyError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(seed);
        Ok(SignerKey { name: name.to_string(), hash: key_hash(name, &key.verifying_key()), key })
    }

    /// Parses `PRIVATE+KEY+name+hexhash+base64(0x01 || seed)`.
    pub fn parse(s: &str) -> Result<SignerKey, KeyError> {
        let rest =
            s.strip_prefix("PRIVATE+KEY+").ok_or(KeyError::Malformed("signer key must start with PRIVATE+KEY+"))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(KeyError::Malformed("expected PRIVATE+KEY+name+hash+key"));
        };
        let raw = decode_canonical(key).ok_or(KeyError::Malformed("key is not canonical base64"))?;
        let (&alg, seed) = raw.split_first().ok_or(KeyError::Malformed("empty key"))?;
        if alg != ALG_ED25519 {
            return Err(KeyError::Algorithm(alg));
        }
        let seed: [u8; 32] = seed.try_into().map_err(|_| KeyError::Malformed("Ed25519 seed must be 32 bytes"))?;
        let sk = SignerKey::from_seed(name, &seed)?;
        if parse_key_hash(hash)? != sk.hash {
            return Err(KeyError::HashMismatch { stated: hash.to_string(), computed: hex_encode(&sk.hash) });
        }
        Ok(sk)
    }

    /// The signer-key string. Treat it as a secret.
    pub fn to_secret_string(&self) -> String {
        let mut raw = Vec::with_capacity(33);
        raw.push(ALG_ED25519);
        raw.extend_from_slice(self.key.as_bytes());
        format!("PRIVATE+KEY+{}+{}+{}", self.name, hex_encode(&self.hash), B64.encode(raw))
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `name+hexhash`.
    pub fn id(&self) -> String {
        format!("{}+{}", self.name, hex_encode(&self.hash))
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey { name: self.name.clone(), hash: self.hash, key: self.key.verifying_key() }
    }

    /// The 32-byte seed. Treat it as a secret.
    pub fn seed(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    /// Ed25519 signature over `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }
}

/// Errors opening or signing a note.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoteError {
    /// More than [`MAX_NOTE_BYTES`].
    #[error("note is {0} bytes, over the {MAX_NOTE_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not UTF-8, a control character, no final newline, or no signature block.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// A signature line that cannot be parsed.
    #[error("malformed signature line {line}: {why}")]
    BadSignatureLine {
        /// 1-based line number within the signature block.
        line: usize,
        /// What is wrong.
        why: &'static str,
    },
    /// A signature by a trusted key that does not verify.
    #[error("signature by trusted key {0} does not verify")]
    InvalidSignature(String),
    /// No signature from any trusted key.
    #[error("no signature from a trusted key (signed by: {0})")]
    Untrusted(String),
    /// Misuse: a signing key whose name is not usable.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// One signature line, verified or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name from the line.
    pub name: String,
    /// 4-byte key hash from the line.
    pub hash: [u8; 4],
    /// The signature bytes after the key hash.
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// `name+hexhash`.
    pub fn id(&self) -> String {
        format!("{}+{}", self.name, hex_encode(&self.hash))
    }
}

/// A note whose signatures were checked against a set of trusted keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedNote {
    /// The signed text, ending in a newline.
    pub text: String,
    /// Ids (`name+hash`) of trusted keys whose signatures verified.
    pub verified: Vec<String>,
    /// Signatures by keys not in the trusted set: kept and reported, never trusted.
    pub unknown: Vec<NoteSignature>,
}

/// Signs `text` (which must end in a newline) with each key, giving the
/// full note bytes.
pub fn sign(text: &str, keys: &[&SignerKey]) -> Result<String, NoteError> {
    check_text(text)?;
    let mut out = String::with_capacity(text.len() + 1 + keys.len() * 120);
    out.push_str(text);
    out.push('\n');
    for k in keys {
        let mut raw = Vec::with_capacity(68);
        raw.extend_from_slice(&k.hash);
        raw.extend_from_slice(&k.sign(text.as_bytes()));
        out.push_str(&format!("— {} {}\n", k.name, B64.encode(raw)));
    }
    Ok(out)
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed("text must end in a newline"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed("text contains a control character"));
    }
    Ok(())
}

/// Splits a note into text and parsed signature lines without checking any
/// signature. Strict: exact newlines, one blank line, at least one signature.
pub fn split(msg: &[u8]) -> Result<(String, Vec<NoteSignature>), NoteError> {
    if msg.len() > MAX_NOTE_BYTES {
        return Err(NoteError::TooLarge(msg.len()));
    }
    let s = std::str::from_utf8(msg).map_err(|_| NoteError::Malformed("not UTF-8"))?;
    if s.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed("contains a control character"));
    }
    if !s.ends_with('\n') {
        return Err(NoteError::Malformed("does not end in a newline"));
    }
    // The text is everything up to and including the newline before the
    // last blank line; signature lines never contain "\n\n".
    let split_at = s.rfind("\n\n").ok_or(NoteError::Malformed("no blank line before the signatures"))?;
    let text = &s[..split_at + 1];
    let block = &s[split_at + 2..];
    if block.is_empty() {
        return Err(NoteError::Malformed("no signature lines"));
    }
    let mut sigs = Vec::new();
    for (i, line) in block.split_terminator('\n').enumerate() {
        let line_no = i + 1;
        if sigs.len() >= MAX_SIGNATURES {
            return Err(NoteError::Malformed("too many signatures"));
        }
        let bad = |why| NoteError::BadSignatureLine { line: line_no, why };
        let rest = line.strip_prefix("— ").ok_or(bad("must start with an em dash and a space"))?;
        let (name, b64) = rest.split_once(' ').ok_or(bad("expected a key name and a signature"))?;
        check_name(name).map_err(|_| bad("invalid key name"))?;
        let raw = decode_canonical(b64).ok_or(bad("signature is not canonical base64"))?;
        if raw.len() < 5 {
            return Err(bad("signature too short"));
        }
        sigs.push(NoteSignature {
            name: name.to_string(),
            hash: [raw[0], raw[1], raw[2], raw[3]],
            signature: raw[4..].to_vec(),
        });
    }
    Ok((text.to_string(), sigs))
}

/// Opens a note: parses it strictly and verifies every signature made by a
/// key in `trusted`. A trusted key's bad signature is an error; signatures
/// by other keys are returned in [`OpenedNote::unknown`] and never trusted.
/// At least one trusted signature must verify.
///
/// Success does **not** prove anything about what the text *says*: parse it
/// (for example as a checkpoint) and check its fields.
pub fn open(msg: &[u8], trusted: &[VerifierKey]) -> Result<OpenedNote, NoteError> {
    let (text, sigs) = split(msg)?;
    let mut verified = Vec::new();
    let mut unknown = Vec::new();
    for sig in sigs {
        match trusted.iter().find(|k| k.name == sig.name && k.hash == sig.hash) {
            Some(k) => {
                if !k.verify(text.as_bytes(), &sig.signature) {
                    return Err(NoteError::InvalidSignature(k.id()));
                }
                if !verified.contains(&k.id()) {
                    verified.push(k.id());
                }
            }
            None => unknown.push(sig),
        }
    }
    if verified.is_empty() {
        let names: Vec<String> = unknown.iter().map(NoteSignature::id).collect();
        return Err(NoteError::Untrusted(names.join(", ")));
    }
    Ok(OpenedNote { text, verified, unknown })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_id_matches_exactly_the_key_id() {
        let k = SignerKey::from_seed("deploy-bot", &[5; 32]).expect("key").verifier();
        let id = k.id();
        assert!(k.has_id(&id));
        let upper = format!("deploy-bot+{}", id["deploy-bot+".len()..].to_uppercase());
        let other = SignerKey::from_seed("deploy-bot", &[6; 32]).expect("key").verifier().id();
        for bad in [
            "".to_string(),
            "deploy-bot".to_string(),
            "deploy-bot+".to_string(),
            format!("{id}0"),
            id[..id.len() - 1].to_string(),
            format!("x{id}"),
            id.replacen("deploy-bot", "deploy-bog", 1),
            id.replacen('+', "-", 1),
            other,
        ] {
            assert!(!k.has_id(&bad), "{bad}");
        }
        if upper != id {
            assert!(!k.has_id(&upper), "{upper}");
        }
    }
}
