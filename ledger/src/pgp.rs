//! The ledger's OpenPGP identity: a v4 certificate around the ledger's
//! Ed25519 seed, and the detached signature over each pack's
//! `manifest.json` (`manifest.json.asc`, DESIGN §5 and §7).
//!
//! The certificate wraps the same 32-byte seed that ed25519-dalek uses for
//! `manifest.json.sig`, so the OpenPGP key and the raw Ed25519 key are one key.
//! Keys stay v4 because GnuPG 2.2 cannot read v6 (RFC 9580) keys.
//!
//! Determinism: the fingerprint depends only on the seed and the creation
//! time. The certificate and signature bytes do not: sequoia adds a random
//! `salt@notations.sequoia-pgp.org` notation to every v4 signature it makes
//! (the self-signatures and the detached signatures), so two runs with the
//! same inputs give different but equally valid bytes.
//!
//! Verification lives in `evident_verify::pgp`; this module only signs.

use std::time::SystemTime;

use sequoia_openpgp as openpgp;

use openpgp::armor;
use openpgp::cert::Cert;
use openpgp::packet::key::{Key4, PrimaryRole, SecretParts};
use openpgp::packet::signature::SignatureBuilder;
use openpgp::packet::{Key, Packet, UserID};
use openpgp::serialize::{Serialize as _, SerializeInto as _};
use openpgp::types::{Features, HashAlgorithm, KeyFlags, SignatureType, SymmetricAlgorithm, Timestamp};
use thiserror::Error;

/// Errors creating the OpenPGP certificate or signing with it.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PgpError {
    /// The user ID is empty or contains a control character.
    #[error("invalid OpenPGP user ID {0:?}: must be non-empty and without control characters")]
    InvalidUserId(String),
    /// A time that OpenPGP cannot represent (before 1970 or after 2106).
    #[error("{what} {time:?} cannot be represented in OpenPGP (seconds since 1970 as u32)")]
    Time {
        /// Which time was refused.
        what: &'static str,
        /// The time given.
        time: SystemTime,
    },
    /// A signature time earlier than the key's creation time: the key was
    /// not valid then, so no verifier would accept the signature.
    #[error("signature time {signature_time:?} is before the key creation time {key_creation_time:?}")]
    SignatureBeforeKeyCreation {
        /// The signature time given.
        signature_time: SystemTime,
        /// The key's creation time.
        key_creation_time: SystemTime,
    },
    /// Building the certificate failed inside sequoia.
    #[error("building the OpenPGP certificate failed")]
    Cert(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// Making the detached signature failed inside sequoia.
    #[error("making the OpenPGP signature failed")]
    Sign(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// ASCII-armoring the output failed.
    #[error("ASCII-armoring the OpenPGP {what} failed")]
    Armor {
        /// The certificate or the signature.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// Checks that `t` is representable as an OpenPGP timestamp and returns it
/// truncated to whole seconds, which is what every packet will carry.
fn openpgp_time(what: &'static str, t: SystemTime) -> Result<SystemTime, PgpError> {
    Timestamp::try_from(t).map(SystemTime::from).map_err(|_| PgpError::Time { what, time: t })
}

/// Maps any error from armoring the `what` into [`PgpError::Armor`].
fn armor_err<E>(what: &'static str) -> impl FnOnce(E) -> PgpError
where
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    move |e| PgpError::Armor { what, source: e.into() }
}

/// The ledger's OpenPGP signing identity: a v4 certificate whose primary
/// key is the ledger's Ed25519 key, certification- and signing-capable,
/// with one self-signed user ID.
///
/// `Debug` shows only the fingerprint; the secret never leaves this value
/// except as signatures.
pub struct PgpSigner {
    /// The certificate, including the primary key's secret.
    cert: Cert,
    /// The primary key with its secret, kept to make signers on demand.
    key: Key<SecretParts, PrimaryRole>,
    /// The key creation time, truncated to seconds.
    creation_time: SystemTime,
}

impl std::fmt::Debug for PgpSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgpSigner").field("fingerprint", &self.fingerprint()).finish_non_exhaustive()
    }
}

impl PgpSigner {
    /// Builds the certificate for the Ed25519 key with this 32-byte `seed`
    /// (the same seed ed25519-dalek's `SigningKey::from_bytes` takes).
    ///
    /// `creation_time` becomes the key creation time and the creation time
    /// of both self-signatures (the direct-key signature and the user-ID
    /// binding), so the fingerprint is the same for the same seed and time.
    /// It is truncated to whole seconds. No clock is read.
    pub fn from_seed(seed: &[u8; 32], user_id: &str, creation_time: SystemTime) -> Result<PgpSigner, PgpError> {
        if user_id.is_empty() || user_id.chars().any(char::is_control) {
            return Err(PgpError::InvalidUserId(user_id.to_string()));
        }
        let creation_time = openpgp_time("key creation time", creation_time)?;
        let cert_err = |e: openpgp::anyhow::Error| PgpError::Cert(e.into());

        let key: Key<SecretParts, PrimaryRole> =
            Key::from(Key4::<SecretParts, PrimaryRole>::import_secret_ed25519(seed, creation_time).map_err(cert_err)?);
        let mut keypair = key.clone().into_keypair().map_err(cert_err)?;
        let flags = KeyFlags::empty().set_certification().set_signing();

        // The same metadata on the direct-key signature and the user-ID
        // binding, as sequoia's CertBuilder does: GnuPG reads the binding,
        // sequoia prefers the direct-key signature.
        let template = |typ: SignatureType| -> openpgp::Result<SignatureBuilder> {
            SignatureBuilder::new(typ)
                .set_hash_algo(HashAlgorithm::SHA512)
                .set_signature_creation_time(creation_time)?
                .set_key_flags(flags.clone())?
                .set_features(Features::empty().set_seipdv1())?
                .set_preferred_hash_algorithms(vec![HashAlgorithm::SHA512, HashAlgorithm::SHA256])?
                .set_preferred_symmetric_algorithms(vec![SymmetricAlgorithm::AES256, SymmetricAlgorithm::AES128])
        };

        let direct = template(SignatureType::DirectKey)
            .and_then(|b| b.sign_direct_key(&mut keypair, key.parts_as_public()))
            .map_err(cert_err)?;
        let uid = UserID::from(user_id);
        let binding = template(SignatureType::PositiveCertification)
            .and_then(|b| b.set_primary_userid(true))
            .and_then(|b| b.sign_userid_binding(&mut keypair, key.parts_as_public(), &uid))
            .map_err(cert_err)?;

        let cert = Cert::try_from(vec![Packet::from(key.clone()), direct.into(), uid.into(), binding.into()])
            .map_err(cert_err)?;
        Ok(PgpSigner { cert, key, creation_time })
    }

    /// The public certificate (no secret key material), ASCII-armored as
    /// `-----BEGIN PGP PUBLIC KEY BLOCK-----`, for regulators to import.
    pub fn cert_armored(&self) -> Result<String, PgpError> {
        let bytes = self.cert.armored().to_vec().map_err(armor_err("certificate"))?;
        String::from_utf8(bytes).map_err(armor_err("certificate"))
    }

    /// The v4 fingerprint, 40 upper-case hex digits without spaces, as
    /// `gpg --with-colons` prints it.
    pub fn fingerprint(&self) -> String {
        self.cert.fingerprint().to_hex()
    }

    /// A detached, ASCII-armored binary-document signature (type 0x00) over
    /// `data`, created at `signature_time` (truncated to whole seconds).
    ///
    /// `gpg --verify data.asc data` accepts it once the certificate from
    /// [`PgpSigner::cert_armored`] is imported. No clock is read.
    pub fn sign_detached_armored(&self, data: &[u8], signature_time: SystemTime) -> Result<String, PgpError> {
        let signature_time = openpgp_time("signature time", signature_time)?;
        if signature_time < self.creation_time {
            return Err(PgpError::SignatureBeforeKeyCreation { signature_time, key_creation_time: self.creation_time });
        }
        let sign_err = |e: openpgp::anyhow::Error| PgpError::Sign(e.into());
        let mut keypair = self.key.clone().into_keypair().map_err(sign_err)?;
        let sig = SignatureBuilder::new(SignatureType::Binary)
            .set_hash_algo(HashAlgorithm::SHA512)
            .set_signature_creation_time(signature_time)
            .and_then(|b| b.sign_message(&mut keypair, data))
            .map_err(sign_err)?;

        let mut w = armor::Writer::new(Vec::new(), armor::Kind::Signature).map_err(armor_err("signature"))?;
        Packet::from(sig).serialize(&mut w).map_err(armor_err("signature"))?;
        let bytes = w.finalize().map_err(armor_err("signature"))?;
        String::from_utf8(bytes).map_err(armor_err("signature"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const T0: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn primary_key_is_the_dalek_key_of_the_seed() {
        let seed = [7u8; 32];
        let signer = PgpSigner::from_seed(&seed, "Evident test <test@example.invalid>", at(T0)).expect("signer");
        let dalek = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        let q = match signer.cert.primary_key().key().mpis() {
            openpgp::crypto::mpi::PublicKey::EdDSA { q, .. } => q.clone(),
            other => panic!("unexpected key material {other:?}"),
        };
        // Legacy EdDSA point encoding: 0x40 prefix, then the 32-byte key.
        assert_eq!(q.value()[0], 0x40);
        assert_eq!(&q.value()[1..], dalek.as_bytes());
    }

    #[test]
    fn armored_cert_has_no_secret() {
        let signer = PgpSigner::from_seed(&[1u8; 32], "a <a@example.invalid>", at(T0)).expect("signer");
        let armored = signer.cert_armored().expect("armor");
        assert!(armored.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
        use openpgp::parse::Parse as _;
        let cert = Cert::from_bytes(armored.as_bytes()).expect("parse");
        assert!(!cert.is_tsk());
        assert_eq!(cert.fingerprint().to_hex(), signer.fingerprint());
    }

    #[test]
    fn refuses_bad_inputs() {
        assert!(matches!(PgpSigner::from_seed(&[1u8; 32], "", at(T0)), Err(PgpError::InvalidUserId(_))));
        assert!(matches!(PgpSigner::from_seed(&[1u8; 32], "a\nb", at(T0)), Err(PgpError::InvalidUserId(_))));
        assert!(matches!(PgpSigner::from_seed(&[1u8; 32], "a", at(1 << 33)), Err(PgpError::Time { .. })));
        let signer = PgpSigner::from_seed(&[1u8; 32], "a", at(T0)).expect("signer");
        assert!(matches!(
            signer.sign_detached_armored(b"x", at(T0 - 1)),
            Err(PgpError::SignatureBeforeKeyCreation { .. })
        ));
    }
}
