//! RFC 9162 proof verification and compact ranges with sizes, indices and
//! hashes all taken from the input (as a receipt, checkpoint or manifest
//! would supply them before any signature is checked).
//!
//! Byte 0 selects the operation:
//! - 0: `CompactRange::from_bytes`; if Ok, `to_bytes()` is the input and
//!   appending a leaf works;
//! - 1: `verify_inclusion(index, size, leaf, proof, root)`;
//! - 2: `verify_consistency(old, new, proof, old_root, new_root)`.
//!
//! For 1 and 2 the layout is: two big-endian u64, then 32-byte hashes
//! (the first one or two are the leaf / roots, the rest the proof).
//! None may panic; a proof that verifies must also recompute to its root.
#![no_main]

use evident_verify::hash::Hash;
use evident_verify::merkle::{CompactRange, root_from_inclusion_proof, verify_consistency, verify_inclusion};
use libfuzzer_sys::fuzz_target;

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

fuzz_target!(|data: &[u8]| {
    let Some((&op, rest)) = data.split_first() else { return };
    match op % 3 {
        0 => {
            if let Ok(mut r) = CompactRange::from_bytes(rest) {
                assert_eq!(r.to_bytes(), rest, "compact range does not re-encode to the same bytes");
                let _ = r.root();
                if r.size() < u64::MAX {
                    r.append(Hash([0xab; 32]));
                    let _ = r.root();
                }
            }
        }
        _ => {
            if rest.len() < 16 {
                return;
            }
            let (a, b) = (u64_at(rest, 0), u64_at(rest, 8));
            let hashes: Vec<Hash> = rest[16..].chunks_exact(32).filter_map(Hash::from_slice).collect();
            if op % 3 == 1 {
                let (Some(leaf), Some(root)) = (hashes.first(), hashes.get(1)) else { return };
                let proof = &hashes[2..];
                if verify_inclusion(a, b, leaf, proof, root).is_ok() {
                    assert_eq!(root_from_inclusion_proof(a, b, leaf, proof), Ok(*root));
                }
            } else {
                let (Some(old_root), Some(new_root)) = (hashes.first(), hashes.get(1)) else { return };
                let _ = verify_consistency(a, b, &hashes[2..], &old_root.0, &new_root.0);
            }
        }
    }
});
