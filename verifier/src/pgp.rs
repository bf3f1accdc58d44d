//! OpenPGP detached signatures: the regulator's check of
//! `manifest.json.asc` against the ledger's exported certificate
//! (DESIGN §5 and §7; RFC 4880 §5.2 and §11.4, RFC 9580 §5.2).
//!
//! This module owns what counts as a valid `manifest.json.asc`: exactly the
//! given certificate, only binary-document signatures (type 0x00), every
//! signature in the block good, at least one. Sequoia's `StandardPolicy`
//! decides which algorithms are acceptable, evaluated at the caller's time.
//!
//! No I/O and no clock: inputs are byte slices and the time is a parameter.

use std::io::Read as _;
use std::time::{Duration, SystemTime};

use sequoia_openpgp as openpgp;

use openpgp::armor;
use openpgp::cert::Cert;
use openpgp::parse::Parse as _;
use openpgp::parse::stream::{
    DetachedVerifierBuilder, MessageLayer, MessageStructure, VerificationError, VerificationHelper,
};
use openpgp::policy::StandardPolicy;
use openpgp::types::SignatureType;
use openpgp::{Fingerprint, KeyHandle};
use thiserror::Error;

/// Largest armored certificate accepted by [`verify_detached`]: 1 MiB.
pub const MAX_CERT_BYTES: usize = 1 << 20;
/// Largest armored signature block accepted by [`verify_detached`]: 1 MiB.
pub const MAX_SIGNATURE_BYTES: usize = 1 << 20;

/// A boxed lower-level error from sequoia.
type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What [`verify_detached`] established.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgpVerified {
    /// Fingerprint of the certificate that made the signature: 40
    /// upper-case hex digits, as GnuPG prints it.
    pub fingerprint: String,
    /// The signature creation time of the first good signature, as the
    /// signer stated it (whole seconds).
    pub signature_time: Option<SystemTime>,
}

/// Why [`verify_detached`] refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PgpVerifyError {
    /// The certificate input is over [`MAX_CERT_BYTES`].
    #[error("certificate is {len} bytes, more than the {max}-byte limit")]
    CertTooLarge {
        /// Size of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The signature input is over [`MAX_SIGNATURE_BYTES`].
    #[error("signature is {len} bytes, more than the {max}-byte limit")]
    SignatureTooLarge {
        /// Size of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The certificate is not an ASCII-armored `PGP PUBLIC KEY BLOCK`
    /// holding exactly one OpenPGP certificate.
    #[error("certificate is not one ASCII-armored OpenPGP public key")]
    CertParse(#[source] Source),
    /// The certificate carries secret key material. A regulator should
    /// never hold the ledger's secret key; whoever handed it over leaked it.
    #[error("certificate {fingerprint} contains secret key material; export the public certificate only")]
    CertHasSecretKey {
        /// Fingerprint of that certificate.
        fingerprint: String,
    },
    /// The signature is not an ASCII-armored `PGP SIGNATURE` block of
    /// OpenPGP signature packets.
    #[error("signature is not an ASCII-armored OpenPGP signature")]
    SignatureParse(#[source] Source),
    /// The signature block holds no signature.
    #[error("signature block contains no signature")]
    NoSignature,
    /// A signature of a type other than binary document (0x00), for
    /// example a text signature, which would also accept the data with
    /// other line endings.
    #[error("signature type is {found}, expected a binary-document signature")]
    NotBinarySignature {
        /// The signature type found.
        found: String,
    },
    /// A signature from a key that is not the given certificate's.
    #[error("signature was made by {issuers}, not by the given certificate {expected}")]
    OtherKey {
        /// Issuer key IDs or fingerprints the signature names.
        issuers: String,
        /// Fingerprint of the given certificate.
        expected: String,
    },
    /// The signing key was not usable at the signature's creation time
    /// under the policy: not yet created, expired, revoked, not
    /// signing-capable, or bound with a rejected algorithm.
    #[error("key of certificate {fingerprint} is not valid for signing at the signature time")]
    KeyNotValid {
        /// Fingerprint of the given certificate.
        fingerprint: String,
        /// Sequoia's reason.
        #[source]
        source: Source,
    },
    /// The signature is not alive at the verification time: it claims to
    /// have been made after it, or it has expired.
    #[error("signature by certificate {fingerprint} is not valid at the verification time")]
    SignatureNotAlive {
        /// Fingerprint of the given certificate.
        fingerprint: String,
        /// The signature's stated creation time.
        signature_time: Option<SystemTime>,
        /// Sequoia's reason.
        #[source]
        source: Source,
    },
    /// The signature does not verify over the data: the data or the
    /// signature was changed.
    #[error("bad signature by certificate {fingerprint}: the data or the signature was altered")]
    BadSignature {
        /// Fingerprint of the given certificate.
        fingerprint: String,
        /// Sequoia's reason.
        #[source]
        source: Source,
    },
    /// A signature packet that is malformed, lacks a creation time, or
    /// uses an unknown version or algorithm.
    #[error("malformed signature")]
    MalformedSignature(#[source] Source),
    /// The signature block has a structure other than one group of
    /// signatures.
    #[error("unexpected OpenPGP structure: {0}")]
    UnexpectedStructure(String),
    /// Verification failed in sequoia for another reason.
    #[error("OpenPGP verification failed")]
    Verification(#[source] Source),
}

/// Removes the ASCII armor of kind `kind`, refusing unarmored input.
fn dearmor(input: &[u8], kind: armor::Kind) -> Result<Vec<u8>, std::io::Error> {
    let mut r = armor::Reader::from_bytes(input, armor::ReaderMode::Tolerant(Some(kind)));
    let mut out = Vec::new();
    r.read_to_end(&mut out)?;
    Ok(out)
}

/// Verifies a detached, ASCII-armored OpenPGP signature over `data` with
/// exactly the certificate `cert_armored`, at time `at` (signatures over
/// binary documents: RFC 4880 §5.2.1 and §5.2.4; RFC 9580 §5.2.4).
///
/// Succeeds only if the signature block holds at least one signature and
/// every signature in it is a binary-document signature (type 0x00) that
/// verifies over `data` with a key of this certificate, where the key is
/// valid and signing-capable at the signature's creation time and the
/// signature is alive at `at`, all under sequoia's `StandardPolicy` as of
/// `at`. Inputs over 1 MiB (certificate or signature) are refused before
/// parsing; `data` is not capped.
///
/// Success does **not** prove:
/// - that the certificate belongs to the ledger operator: the caller must
///   obtain it, or its fingerprint, through a trusted channel (DESIGN §7);
///   a certificate shipped inside a pack is never a trust anchor;
/// - when the signature was made: the creation time is the signer's claim;
/// - that the key was not compromised or revoked after signing: only the
///   revocations inside the given certificate are considered;
/// - anything about `data` beyond its being signed: the manifest's content,
///   the files it lists, and the log's consistency are checked elsewhere.
pub fn verify_detached(
    cert_armored: &[u8],
    data: &[u8],
    sig_armored: &[u8],
    at: SystemTime,
) -> Result<PgpVerified, PgpVerifyError> {
    if cert_armored.len() > MAX_CERT_BYTES {
        return Err(PgpVerifyError::CertTooLarge { len: cert_armored.len(), max: MAX_CERT_BYTES });
    }
    if sig_armored.len() > MAX_SIGNATURE_BYTES {
        return Err(PgpVerifyError::SignatureTooLarge { len: sig_armored.len(), max: MAX_SIGNATURE_BYTES });
    }

    let cert_bytes = dearmor(cert_armored, armor::Kind::PublicKey).map_err(|e| PgpVerifyError::CertParse(e.into()))?;
    let cert = Cert::from_bytes(&cert_bytes).map_err(|e| PgpVerifyError::CertParse(e.into()))?;
    let fingerprint = cert.fingerprint();
    if cert.is_tsk() {
        return Err(PgpVerifyError::CertHasSecretKey { fingerprint: fingerprint.to_hex() });
    }

    let sig_bytes =
        dearmor(sig_armored, armor::Kind::Signature).map_err(|e| PgpVerifyError::SignatureParse(e.into()))?;
    if sig_bytes.is_empty() {
        return Err(PgpVerifyError::NoSignature);
    }

    // `StandardPolicy::at` so that algorithm cut-off dates are judged at
    // `at` rather than by reading the clock.
    let policy = StandardPolicy::at(at);
    let helper = Helper { cert, fingerprint: fingerprint.clone(), at, outcome: None };
    let mut verifier = DetachedVerifierBuilder::from_bytes(&sig_bytes)
        .and_then(|b| b.with_policy(&policy, Some(at), helper))
        .map_err(|e| PgpVerifyError::SignatureParse(e.into()))?;
    let result = verifier.verify_bytes(data);
    let helper = verifier.into_helper();
    match (result, helper.outcome) {
        (Ok(()), Some(Ok(signature_time))) => Ok(PgpVerified { fingerprint: fingerprint.to_hex(), signature_time }),
        (_, Some(Err(e))) => Err(e),
        (Err(e), _) => Err(PgpVerifyError::Verification(e.into())),
        // `check` is called exactly once for a detached signature; if it
        // was not, nothing was verified.
        (Ok(()), None) => Err(PgpVerifyError::UnexpectedStructure("no signature group was checked".to_string())),
    }
}

/// Hands sequoia exactly one certificate and records why a signature
/// group passed or failed, so the error keeps its kind.
struct Helper {
    cert: Cert,
    fingerprint: Fingerprint,
    /// The verification time.
    at: SystemTime,
    /// Set by `check`: the first good signature's time, or the first failure.
    outcome: Option<Result<Option<SystemTime>, PgpVerifyError>>,
}

impl Helper {
    fn judge(&self, structure: MessageStructure) -> Result<Option<SystemTime>, PgpVerifyError> {
        let mut layers = structure.into_iter();
        let results = match (layers.next(), layers.next()) {
            (Some(MessageLayer::SignatureGroup { results }), None) => results,
            (Some(MessageLayer::Compression { .. }), _) => {
                return Err(PgpVerifyError::UnexpectedStructure("compressed data".to_string()));
            }
            (Some(MessageLayer::Encryption { .. }), _) => {
                return Err(PgpVerifyError::UnexpectedStructure("encrypted data".to_string()));
            }
            (None, _) => return Err(PgpVerifyError::NoSignature),
            _ => return Err(PgpVerifyError::UnexpectedStructure("more than one layer".to_string())),
        };
        if results.is_empty() {
            return Err(PgpVerifyError::NoSignature);
        }
        let expected = self.fingerprint.to_hex();
        let mut first_time = None;
        for (i, result) in results.into_iter().enumerate() {
            match result {
                Ok(good) => {
                    if good.sig.typ() != SignatureType::Binary {
                        return Err(PgpVerifyError::NotBinarySignature { found: good.sig.typ().to_string() });
                    }
                    // Only our certificate was offered, so this holds;
                    // checked anyway because it is the point of the call.
                    if good.ka.cert().fingerprint() != self.fingerprint {
                        return Err(PgpVerifyError::OtherKey {
                            issuers: good.ka.cert().fingerprint().to_hex(),
                            expected,
                        });
                    }
                    if i == 0 {
                        first_time = good.sig.signature_creation_time();
                    }
                }
                Err(VerificationError::MissingKey { sig }) => {
                    let issuers = sig.get_issuers().iter().map(|h| h.to_hex()).collect::<Vec<_>>().join(", ");
                    let issuers = if issuers.is_empty() { "an unnamed key".to_string() } else { issuers };
                    return Err(PgpVerifyError::OtherKey { issuers, expected });
                }
                Err(VerificationError::UnboundKey { error, .. }) | Err(VerificationError::BadKey { error, .. }) => {
                    return Err(PgpVerifyError::KeyNotValid { fingerprint: expected, source: error.into() });
                }
                Err(VerificationError::BadSignature { error, sig, .. }) => {
                    if sig.typ() != SignatureType::Binary {
                        return Err(PgpVerifyError::NotBinarySignature { found: sig.typ().to_string() });
                    }
                    // Sequoia reports liveness as a bad signature; it
                    // checks it before the cryptography, with no clock-skew
                    // tolerance for an explicit time.
                    if sig.signature_alive(Some(self.at), Duration::ZERO).is_err() {
                        return Err(PgpVerifyError::SignatureNotAlive {
                            fingerprint: expected,
                            signature_time: sig.signature_creation_time(),
                            source: error.into(),
                        });
                    }
                    return Err(PgpVerifyError::BadSignature { fingerprint: expected, source: error.into() });
                }
                Err(VerificationError::MalformedSignature { error, .. }) => {
                    return Err(PgpVerifyError::MalformedSignature(error.into()));
                }
                Err(VerificationError::UnknownSignature { sig }) => {
                    return Err(PgpVerifyError::MalformedSignature(sig.error().to_string().into()));
                }
                Err(other) => return Err(PgpVerifyError::Verification(other.to_string().into())),
            }
        }
        Ok(first_time)
    }
}

impl VerificationHelper for Helper {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        // Exactly the given certificate, whatever the signatures name:
        // a signature by any other key then shows up as a missing key.
        Ok(vec![self.cert.clone()])
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        let outcome = self.judge(structure);
        let failed = outcome.is_err();
        self.outcome = Some(outcome);
        if failed { Err(openpgp::anyhow::anyhow!("signature check failed")) } else { Ok(()) }
    }
}

/// Whether `sig_armored` is exactly the armor Evident writes for the
/// signature packets it holds (no headers, standard line length, CRC).
///
/// OpenPGP readers tolerate variations (a damaged checksum line, changed
/// padding bits) that leave the signature valid. A pack's `.asc` cannot be
/// listed in the manifest it signs, so the pack verifier requires this one
/// byte form instead: any changed byte is then detected.
pub fn is_canonical_signature_armor(sig_armored: &[u8]) -> bool {
    let Ok(bytes) = dearmor(sig_armored, armor::Kind::Signature) else { return false };
    let Ok(mut w) = armor::Writer::new(Vec::new(), armor::Kind::Signature) else { return false };
    if std::io::Write::write_all(&mut w, &bytes).is_err() {
        return false;
    }
    w.finalize().is_ok_and(|canonical| canonical == sig_armored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn caps_inputs_before_parsing() {
        let big = vec![b'A'; MAX_CERT_BYTES + 1];
        assert!(matches!(
            verify_detached(&big, b"", b"", at(0)),
            Err(PgpVerifyError::CertTooLarge { len, max: MAX_CERT_BYTES }) if len == MAX_CERT_BYTES + 1
        ));
    }

    const T0: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    /// A test certificate (with secret) created at `T0`, signing-capable.
    fn test_cert() -> Cert {
        let (cert, _) = openpgp::cert::CertBuilder::new()
            .set_creation_time(at(T0))
            .set_primary_key_flags(openpgp::types::KeyFlags::empty().set_certification().set_signing())
            .add_userid("test <t@example.invalid>")
            .generate()
            .expect("generate");
        cert
    }

    fn armored_public(cert: &Cert) -> Vec<u8> {
        use openpgp::serialize::SerializeInto as _;
        cert.armored().to_vec().expect("armor")
    }

    fn armored_sigs(sigs: Vec<openpgp::packet::Signature>) -> Vec<u8> {
        use openpgp::serialize::Serialize as _;
        let mut w = armor::Writer::new(Vec::new(), armor::Kind::Signature).expect("writer");
        for sig in sigs {
            openpgp::Packet::from(sig).serialize(&mut w).expect("serialize");
        }
        w.finalize().expect("finalize")
    }

    fn sign(cert: &Cert, typ: SignatureType, data: &[u8]) -> openpgp::packet::Signature {
        let mut keypair =
            cert.primary_key().key().clone().parts_into_secret().expect("secret").into_keypair().expect("keypair");
        openpgp::packet::signature::SignatureBuilder::new(typ)
            .set_signature_creation_time(at(T0 + 10))
            .expect("time")
            .sign_message(&mut keypair, data)
            .expect("sign")
    }

    #[test]
    fn binary_signature_verifies() {
        let cert = test_cert();
        let sig = armored_sigs(vec![sign(&cert, SignatureType::Binary, b"data")]);
        let ok = verify_detached(&armored_public(&cert), b"data", &sig, at(T0 + 20)).expect("verify");
        assert_eq!(ok.fingerprint, cert.fingerprint().to_hex());
        assert_eq!(ok.signature_time, Some(at(T0 + 10)));
    }

    #[test]
    fn text_signature_is_refused() {
        let cert = test_cert();
        let sig = armored_sigs(vec![sign(&cert, SignatureType::Text, b"data")]);
        let err = verify_detached(&armored_public(&cert), b"data", &sig, at(T0 + 20)).expect_err("text signature");
        assert!(matches!(err, PgpVerifyError::NotBinarySignature { .. }), "{err:?}");
    }

    #[test]
    fn a_second_signature_by_another_key_is_refused() {
        let cert = test_cert();
        let other = test_cert();
        let sigs = vec![sign(&cert, SignatureType::Binary, b"data"), sign(&other, SignatureType::Binary, b"data")];
        let err =
            verify_detached(&armored_public(&cert), b"data", &armored_sigs(sigs), at(T0 + 20)).expect_err("mixed");
        assert!(matches!(err, PgpVerifyError::OtherKey { .. }), "{err:?}");
    }

    #[test]
    fn certificate_with_secret_is_refused() {
        use openpgp::serialize::SerializeInto as _;
        let cert = test_cert();
        let tsk = cert.as_tsk().armored().to_vec().expect("armor");
        let sig = armored_sigs(vec![sign(&cert, SignatureType::Binary, b"data")]);
        let err = verify_detached(&tsk, b"data", &sig, at(T0 + 20)).expect_err("secret");
        // A TSK is armored as a private key block, so it fails the armor
        // kind check; unarmored or relabelled, the secret check catches it.
        assert!(matches!(err, PgpVerifyError::CertParse(_)), "{err:?}");
        let relabelled = String::from_utf8(tsk).expect("ascii").replace("PRIVATE KEY BLOCK", "PUBLIC KEY BLOCK");
        let err = verify_detached(relabelled.as_bytes(), b"data", &sig, at(T0 + 20)).expect_err("secret");
        assert!(matches!(err, PgpVerifyError::CertHasSecretKey { .. }), "{err:?}");
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(verify_detached(b"not a key", b"", b"", at(0)), Err(PgpVerifyError::CertParse(_))));
        assert!(matches!(verify_detached(b"", b"", b"", at(0)), Err(PgpVerifyError::CertParse(_))));
    }
}
