//! Producer signatures: when an Ed25519 signature over JCS(rec) is valid.
//!
//! A pack of a million entries carries a million producer signatures, and the
//! ledger checks every one before it stores it, so both verify in batches.
//! Batches are only safe if they accept exactly what one-at-a-time
//! verification accepts: otherwise a producer could sign a record that one
//! verifier accepts and another refuses. `verify_strict` (cofactorless) does
//! not have that property against a cofactorless *or* a cofactored batch
//! equation: a signer who adds a small-order component to R gets a signature
//! the batch accepts with probability 1/2. So the rule is the cofactored
//! equation of ZIP-215, for which batch and single verification agree, made
//! strict where that costs nothing:
//!
//! - `s` must be canonical (`s < ℓ`);
//! - `R` must be a canonical point encoding (ZIP-215 alone would allow the
//!   19 non-canonical encodings, which makes signatures malleable);
//! - the key must be a canonical encoding of a point that is not of small
//!   order (`KeyHistory` refuses other keys when they are registered);
//! - `[8]([s]B − R − [k]A) = 0` with `k = SHA-512(R ‖ A ‖ JCS(rec)) mod ℓ`.
//!
//! Every signature made by a standard Ed25519 signer satisfies this rule
//! and `verify_strict` alike. The two differ only on signatures crafted by
//! the key's own holder with a small-order component, which carry no forgery
//! risk (the equation still binds the key) and which this rule treats the
//! same way in every verifier.
//!
//! The equation is written here, over curve25519-dalek's point and scalar
//! arithmetic, so that the whole rule reads in one file; the tests check it
//! against the Zcash Foundation's ZIP-215 implementation (`ed25519-zebra`).
//! One signature: `[8](R − ([s]B − [k]A))` is the identity. Many at once:
//! `[8]([−Σ zᵢsᵢ]B + Σ [zᵢ]Rᵢ + Σ [zᵢkᵢ]Aᵢ) = 0` with a random 128-bit `zᵢ`
//! per signature, the `zᵢkᵢ` of one key summed into one coefficient. `A` is
//! the point the key was decoded to when it was loaded, not decoded again
//! per signature (a tenth of a single check's time).

use std::collections::HashMap;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::VerifyingKey;
use rand_core::RngCore;
use rayon::prelude::*;
use sha2::{Digest, Sha512};

use crate::note::VerifierKey;

/// Signatures per batch: large enough that the per-batch cost vanishes,
/// small enough that both cores get work on a few thousand records.
pub const BATCH: usize = 512;

/// True when `bytes` is the canonical encoding of a field element `y < p`
/// (p = 2^255 − 19), ignoring the sign bit.
fn canonical_y(bytes: &[u8; 32]) -> bool {
    // The non-canonical encodings are y = p + i for i in 0..19, i.e. the
    // low 255 bits are 0x7fff…ff(ed..ff).
    !(bytes[31] & 0x7f == 0x7f && bytes[1..31].iter().all(|&b| b == 0xff) && bytes[0] >= 0xed)
}

/// Whether a producer key may be registered: a canonical encoding of a
/// point that is not of small order.
pub fn acceptable_key(key: &VerifyingKey) -> bool {
    canonical_y(key.as_bytes()) && !key.is_weak()
}

/// A signature's part of the equation, decoded: the point `R` and the
/// scalars `s` and `k = SHA-512(R ‖ A ‖ msg) mod ℓ`. Only [`decode`] makes
/// one, after the rule's checks on the encodings.
struct Decoded {
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

/// Applies the rule's checks on the signature's encodings (a canonical `R`
/// that decodes to a point, a canonical `s`) and decodes it; `None` if any
/// fails, which makes the signature invalid. The key must be acceptable.
fn decode(key: &VerifyingKey, msg: &[u8], sig: &[u8; 64]) -> Option<Decoded> {
    let (r_bytes, s_bytes) = sig.split_at(32);
    let r_bytes: [u8; 32] = r_bytes.try_into().ok()?;
    if !canonical_y(&r_bytes) {
        return None;
    }
    let r = CompressedEdwardsY(r_bytes).decompress()?;
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes.try_into().ok()?))?;
    let k = Scalar::from_hash(Sha512::new().chain_update(r_bytes).chain_update(key.as_bytes()).chain_update(msg));
    Some(Decoded { r, s, k })
}

/// Verifies one producer signature under the rule above.
pub fn verify(key: &VerifierKey, msg: &[u8], sig: &[u8; 64]) -> bool {
    acceptable_key(key.key()) && decode(key.key(), msg, sig).is_some_and(|d| equation_holds(key.key(), &d))
}

/// The equation for one signature: `[8](R − ([s]B − [k]A))` is the
/// identity. `A` is the point the key was decoded to when it was loaded.
fn equation_holds(key: &VerifyingKey, d: &Decoded) -> bool {
    let r_prime = EdwardsPoint::vartime_double_scalar_mul_basepoint(&d.k, &-key.to_edwards(), &d.s);
    (d.r - r_prime).mul_by_cofactor().is_identity()
}

/// The equation for many signatures at once (see the module's comment):
/// true if every one satisfies it, false (except with probability 2^-128)
/// if any does not.
fn batch_equation_holds(batch: &[(&VerifyingKey, Decoded)]) -> bool {
    let mut random = vec![0u8; 16 * batch.len()];
    rand_core::OsRng.fill_bytes(&mut random);
    let z = random.chunks_exact(16).map(|c| Scalar::from(u128::from_le_bytes(c.try_into().expect("16 bytes"))));
    let mut b_coeff = Scalar::ZERO;
    let mut r_coeffs = Vec::with_capacity(batch.len());
    let mut a_index: HashMap<&[u8; 32], usize> = HashMap::new();
    let mut a_coeffs: Vec<Scalar> = Vec::new();
    let mut a_points: Vec<EdwardsPoint> = Vec::new();
    for ((key, d), z) in batch.iter().zip(z) {
        b_coeff -= z * d.s;
        r_coeffs.push(z);
        let i = *a_index.entry(key.as_bytes()).or_insert_with(|| {
            a_coeffs.push(Scalar::ZERO);
            a_points.push(key.to_edwards());
            a_points.len() - 1
        });
        a_coeffs[i] += z * d.k;
    }
    let check = EdwardsPoint::vartime_multiscalar_mul(
        std::iter::once(&b_coeff).chain(&a_coeffs).chain(&r_coeffs),
        std::iter::once(&ED25519_BASEPOINT_POINT).chain(&a_points).chain(batch.iter().map(|(_, d)| &d.r)),
    );
    check.mul_by_cofactor().is_identity()
}

/// Verifies many signatures, in parallel batches; element `i` of the result
/// says whether `items[i]` is valid. Equal to calling [`verify`] on each
/// (except with probability 2^-128 per batch), but several times faster when
/// all are valid. A batch that fails is re-checked one signature at a time,
/// so a bad signature is always located.
pub fn verify_many(items: &[(&VerifierKey, &[u8], &[u8; 64])]) -> Vec<bool> {
    verify_many_in(items, BATCH)
}

/// Signatures per batch when verifying a whole pack: larger batches cost
/// less per signature (the multiscalar multiplication is shared by more
/// points; ~4% less time for a 1M-entry pack than [`BATCH`]), and a pack's
/// chunks of 4,096 leaves still give both cores a batch each.
pub const PACK_BATCH: usize = 2048;

/// Fewest signatures worth a batch of their own on another core: below
/// twice this, a call is verified on the calling thread, not handed to the
/// pool and waited for (the ledger's leader verifies ~5 at a time).
pub const MIN_SPLIT: usize = 64;

/// [`verify_many`] with at most `batch` signatures per batch. A call of
/// fewer than `batch` signatures but at least 2 × [`MIN_SPLIT`] is still
/// split across the pool's threads (a 512-signature call took twice as
/// long on one thread).
pub fn verify_many_in(items: &[(&VerifierKey, &[u8], &[u8; 64])], batch: usize) -> Vec<bool> {
    let batch = batch.max(1);
    if items.len() <= batch && items.len() < 2 * MIN_SPLIT {
        return verify_chunk(items);
    }
    let per_thread = items.len().div_ceil(rayon::current_num_threads().max(1)).max(MIN_SPLIT);
    items.par_chunks(batch.min(per_thread)).flat_map_iter(verify_chunk).collect()
}

/// One batch: the batch equation when every signature decodes, and one
/// signature at a time when that fails, to locate the bad ones.
fn verify_chunk(chunk: &[(&VerifierKey, &[u8], &[u8; 64])]) -> Vec<bool> {
    // Each distinct key is checked once per chunk, not once per signature:
    // the small-order test was ~7% of a batch's instructions (callgrind).
    let mut acceptable: HashMap<&[u8; 32], bool> = HashMap::new();
    let decoded: Vec<Option<(&VerifyingKey, Decoded)>> = chunk
        .iter()
        .map(|(k, m, s)| {
            let key = k.key();
            let ok = *acceptable.entry(key.as_bytes()).or_insert_with(|| acceptable_key(key));
            ok.then(|| decode(key, m, s).map(|d| (key, d))).flatten()
        })
        .collect();
    if decoded.iter().all(Option::is_some) {
        let all: Vec<(&VerifyingKey, Decoded)> = decoded.into_iter().flatten().collect();
        // A batch of one costs more than the single check it equals.
        if let [(key, d)] = &all[..] {
            return vec![equation_holds(key, d)];
        }
        if batch_equation_holds(&all) {
            return vec![true; all.len()];
        }
        return all.iter().map(|(key, d)| equation_holds(key, d)).collect();
    }
    decoded.iter().map(|d| d.as_ref().is_some_and(|(key, d)| equation_holds(key, d))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::SignerKey;
    use curve25519_dalek::constants::EIGHT_TORSION;
    use ed25519_dalek::Signer as _;

    fn key(seed: u8) -> SignerKey {
        SignerKey::from_seed("svc", &[seed; 32]).expect("valid name")
    }

    fn dalek(k: &SignerKey) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(k.seed())
    }

    #[test]
    fn honest_signatures_agree_with_verify_strict() {
        let k = key(1);
        for i in 0..64u32 {
            let msg = format!("message {i}");
            let sig = k.sign(msg.as_bytes());
            assert!(verify(&k.verifier(), msg.as_bytes(), &sig));
            assert!(k.verifier().verify(msg.as_bytes(), &sig), "verify_strict agrees");
            assert!(!verify(&k.verifier(), b"other", &sig));
        }
    }

    /// A signature with a small-order component in R, made by the key's
    /// holder: verify_strict refuses it, the cofactored rule accepts it, and
    /// single and batch verification agree every time.
    #[test]
    fn torsion_in_r_is_judged_the_same_by_single_and_batch() {
        let k = key(2);
        let sk = dalek(&k);
        let a = sk.verifying_key();
        let secret = sk.to_scalar();
        let msg = b"crafted";
        let r = Scalar::from(12345u64);
        let big_r = (ED25519_BASEPOINT_POINT * r + EIGHT_TORSION[1]).compress();
        let h = Scalar::from_hash(
            Sha512::new().chain_update(big_r.as_bytes()).chain_update(a.as_bytes()).chain_update(msg),
        );
        let s = r + h * secret;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(big_r.as_bytes());
        sig[32..].copy_from_slice(s.as_bytes());
        assert!(!k.verifier().verify(msg, &sig), "verify_strict refuses it");
        assert!(verify(&k.verifier(), msg, &sig), "the cofactored rule accepts it");
        let vk = k.verifier();
        let honest = sk.sign(b"x").to_bytes();
        for _ in 0..32 {
            let items: Vec<(&VerifierKey, &[u8], &[u8; 64])> =
                vec![(&vk, b"x".as_slice(), &honest), (&vk, msg.as_slice(), &sig)];
            assert_eq!(verify_many(&items), vec![true, true]);
        }
    }

    /// A signature by the holder of secret `a` for the key `key_point`
    /// (`[a]B`, or that plus a small-order component), with nonce `r` and
    /// `torsion` added to R: honest when both components are the identity.
    fn crafted(a: Scalar, key_point: EdwardsPoint, r: u64, torsion: EdwardsPoint, msg: &[u8]) -> [u8; 64] {
        let big_r = (ED25519_BASEPOINT_POINT * Scalar::from(r) + torsion).compress();
        let k = Scalar::from_hash(
            Sha512::new()
                .chain_update(big_r.as_bytes())
                .chain_update(key_point.compress().as_bytes())
                .chain_update(msg),
        );
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(big_r.as_bytes());
        sig[32..].copy_from_slice((Scalar::from(r) + k * a).as_bytes());
        sig
    }

    /// The equation written here judges every signature as ed25519-zebra
    /// (ZIP-215) does, alone and in batches, whenever the encodings pass
    /// this rule's stricter checks: honest signatures, small-order
    /// components in R, keys with a small-order component, wrong messages,
    /// altered R or s, and random bytes.
    #[test]
    fn the_equation_agrees_with_zebras_zip215() {
        let sk = dalek(&key(4));
        let a = sk.to_scalar();
        let mut cases: Vec<(VerifierKey, Vec<u8>, [u8; 64])> = Vec::new();
        for (t, torsion) in EIGHT_TORSION.iter().enumerate() {
            // Keys: [a]B, and [a]B with a small-order component.
            for key_torsion in [EIGHT_TORSION[0], EIGHT_TORSION[(t + 3) % 8]] {
                let point = ED25519_BASEPOINT_POINT * a + key_torsion;
                let vk = VerifierKey::new("svc", VerifyingKey::from_bytes(point.compress().as_bytes()).expect("point"))
                    .expect("name");
                let msg = format!("message {t}").into_bytes();
                let sig = crafted(a, point, 1000 + t as u64, *torsion, &msg);
                cases.push((vk.clone(), msg.clone(), sig));
                cases.push((vk.clone(), b"another message".to_vec(), sig));
                let mut s_changed = sig;
                s_changed[40] ^= 4;
                cases.push((vk.clone(), msg.clone(), s_changed));
                let mut r_changed = sig;
                r_changed[3] ^= 1;
                cases.push((vk.clone(), msg, r_changed));
            }
        }
        let honest = key(5);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..64u8 {
            let mut junk = [0u8; 64];
            for b in junk.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            junk[63] &= 0x0f; // s < 2^252 < ℓ: canonical, so R and the equation decide
            cases.push((honest.verifier(), vec![i], junk));
            cases.push((honest.verifier(), vec![i], honest.sign(&[i])));
        }
        let zebra_item = |(vk, msg, sig): &(VerifierKey, Vec<u8>, [u8; 64])| {
            let bytes = ed25519_zebra::VerificationKeyBytes::from(vk.key().to_bytes());
            ed25519_zebra::batch::Item::from((bytes, ed25519_dalek::Signature::from_bytes(sig), msg.as_slice()))
        };
        let mut accepted = 0;
        for case in &cases {
            let (vk, msg, sig) = case;
            assert!(canonical_y(sig[..32].try_into().expect("32")), "the cases use canonical encodings");
            let zebra = zebra_item(case).verify_single().is_ok();
            assert_eq!(verify(vk, msg, sig), zebra, "single check of {sig:02x?}");
            accepted += usize::from(zebra);
            // In a batch with honest neighbours, before and after it.
            let (m1, m2) = (b"left".as_slice(), b"right".as_slice());
            let (s1, s2) = (honest.sign(m1), honest.sign(m2));
            let hv = honest.verifier();
            let items: Vec<(&VerifierKey, &[u8], &[u8; 64])> =
                vec![(&hv, m1, &s1), (vk, msg.as_slice(), sig), (&hv, m2, &s2)];
            assert_eq!(verify_many(&items), vec![true, zebra, true], "in a batch: {sig:02x?}");
            let mut zebra_batch = ed25519_zebra::batch::Verifier::new();
            zebra_batch.queue(zebra_item(case));
            zebra_batch.queue(zebra_item(case));
            assert_eq!(zebra_batch.verify(rand_core::OsRng).is_ok(), zebra, "zebra's own batch agrees");
            let decoded = || decode(vk.key(), msg, sig).map(|d| (vk.key(), d));
            let two: Option<Vec<(&VerifyingKey, Decoded)>> = [decoded(), decoded()].into_iter().collect();
            assert_eq!(two.is_some_and(|two| batch_equation_holds(&two)), zebra, "a batch of two");
        }
        // Both outcomes occur, torsion cases among the accepted ones.
        assert!(accepted > 64 + 8 && accepted < cases.len() - 64, "{accepted} of {}", cases.len());
    }

    #[test]
    fn batches_locate_every_bad_signature() {
        let keys: Vec<SignerKey> = (0..3).map(|i| key(10 + i)).collect();
        let vks: Vec<VerifierKey> = keys.iter().map(SignerKey::verifier).collect();
        let msgs: Vec<Vec<u8>> = (0..1500).map(|i| format!("m{i}").into_bytes()).collect();
        let mut sigs: Vec<[u8; 64]> = msgs.iter().enumerate().map(|(i, m)| keys[i % 3].sign(m)).collect();
        let bad = [7usize, 600, 601, 1499];
        for &b in &bad {
            sigs[b][40] ^= 1;
        }
        let items: Vec<(&VerifierKey, &[u8], &[u8; 64])> =
            (0..msgs.len()).map(|i| (&vks[i % 3], msgs[i].as_slice(), &sigs[i])).collect();
        // The ledger's batches, a pack's, batches of one and of everything.
        for batch in [BATCH, PACK_BATCH, 1, 7, items.len()] {
            let got = verify_many_in(&items, batch);
            assert_eq!(got.len(), items.len());
            for (i, ok) in got.iter().enumerate() {
                assert_eq!(*ok, !bad.contains(&i), "signature {i} in batches of {batch}");
            }
        }
        // Calls smaller than a batch: on the calling thread below
        // 2 × MIN_SPLIT, split across the pool from there on.
        for len in [2 * MIN_SPLIT - 1, 2 * MIN_SPLIT, 300] {
            let got = verify_many(&items[..len]);
            assert_eq!(got.len(), len);
            for (i, ok) in got.iter().enumerate() {
                assert_eq!(*ok, !bad.contains(&i), "signature {i} of a call of {len}");
            }
        }
        assert_eq!(verify_many(&items), verify_many_in(&items, BATCH));
    }

    /// Under the identity key, `R = [s]B` satisfies the equation for every
    /// message: only the key check refuses such a signature. Batches check
    /// each key once per batch, so mix it with acceptable keys, before and
    /// after, in batches of every shape.
    #[test]
    fn a_small_order_key_is_refused_in_every_batch_whatever_its_neighbours() {
        let mut id = [0u8; 32];
        id[0] = 1;
        let weak = VerifierKey::new("svc", VerifyingKey::from_bytes(&id).expect("decodes")).expect("name");
        let s = Scalar::from(424242u64);
        let mut forged = [0u8; 64];
        forged[..32].copy_from_slice((ED25519_BASEPOINT_POINT * s).compress().as_bytes());
        forged[32..].copy_from_slice(s.as_bytes());
        // [8]([s]B − R − [k]A) = 0 whatever k = SHA-512(R ‖ A ‖ M) is.
        let r = curve25519_dalek::edwards::CompressedEdwardsY(forged[..32].try_into().expect("32"))
            .decompress()
            .expect("point");
        let a = weak.key().to_edwards();
        for k in [Scalar::from(1u64), Scalar::from(987_654_321u64), -Scalar::from(5u64)] {
            let lhs = (ED25519_BASEPOINT_POINT * s - r - a * k).mul_by_cofactor();
            assert!(
                curve25519_dalek::traits::IsIdentity::is_identity(&lhs),
                "the forgery satisfies the equation; only the key check stands in its way"
            );
        }
        assert!(!verify(&weak, b"any message", &forged));
        let good: Vec<SignerKey> = (0..2).map(|i| key(20 + i)).collect();
        let vks: Vec<VerifierKey> = good.iter().map(SignerKey::verifier).collect();
        let msgs: Vec<Vec<u8>> = (0..300).map(|i| format!("m{i}").into_bytes()).collect();
        let sigs: Vec<[u8; 64]> = msgs.iter().enumerate().map(|(i, m)| good[i % 2].sign(m)).collect();
        let is_forged = |i: usize| i % 5 == 3;
        let items: Vec<(&VerifierKey, &[u8], &[u8; 64])> = (0..msgs.len())
            .map(|i| {
                if is_forged(i) {
                    (&weak, msgs[i].as_slice(), &forged)
                } else {
                    (&vks[i % 2], msgs[i].as_slice(), &sigs[i])
                }
            })
            .collect();
        for batch in [1, 2, 4, 7, BATCH, PACK_BATCH] {
            let got = verify_many_in(&items, batch);
            for (i, ok) in got.iter().enumerate() {
                assert_eq!(*ok, !is_forged(i), "signature {i} in batches of {batch}");
            }
        }
    }

    #[test]
    fn non_canonical_r_and_s_and_small_order_keys_are_refused() {
        let k = key(3);
        let msg = b"m";
        let sig = k.sign(msg);
        // s + ℓ: the same equation, a non-canonical scalar.
        let mut high_s = sig;
        let s = Scalar::from_canonical_bytes(sig[32..].try_into().expect("32")).expect("canonical");
        // ℓ = 2^252 + 27742317777372353535851937790883648493, little-endian.
        let l_bytes: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(s.as_bytes()[i]) + u16::from(l_bytes[i]) + carry;
            high_s[32 + i] = v as u8;
            carry = v >> 8;
        }
        assert!(!verify(&k.verifier(), msg, &high_s));
        // A non-canonical R encoding.
        let mut bad_r = sig;
        bad_r[..32].copy_from_slice(&[0xff; 32]);
        bad_r[31] = 0x7f;
        assert!(!canonical_y(bad_r[..32].try_into().expect("32")));
        assert!(!verify(&k.verifier(), msg, &bad_r));
        // The identity (y = 1) is a small-order key.
        let mut id = [0u8; 32];
        id[0] = 1;
        let weak = VerifyingKey::from_bytes(&id).expect("decodes");
        assert!(!acceptable_key(&weak));
        assert!(acceptable_key(k.verifier().key()));
    }
}
