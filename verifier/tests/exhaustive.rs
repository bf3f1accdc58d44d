//! Exhaustive checks of roots, proofs and strict verification for every tree
//! size 1..=64 and every (index, size) and (old, new) pair, against a naive
//! recursive reference of RFC 9162 §2.1 and against rs_merkle. Every valid
//! proof has mutated twins that must fail.

use evident_verify::hash::{Hash, leaf_hash, node_hash};
use evident_verify::merkle::{
    CompactRange, MemoryTree, inclusion_proof_len, prove_consistency, prove_inclusion, root_at, rs_merkle_root,
    verify_consistency, verify_inclusion,
};

const MAX: u64 = 64;

fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(format!("leaf {i}").as_bytes())).collect()
}

/// RFC 9162 §2.1.1 MTH, literally.
fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => Hash::empty_root(),
        1 => d[0],
        n => {
            let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            node_hash(&mth(&d[..k]), &mth(&d[k..]))
        }
    }
}

/// RFC 9162 §2.1.3.1 PATH, literally.
fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    if n == 1 {
        return vec![];
    }
    let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
    if m < k {
        let mut p = path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

/// RFC 9162 §2.1.4.1 SUBPROOF, literally.
fn subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![mth(d)] };
    }
    let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
    if m <= k {
        let mut p = subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut b = h.0;
    b[bit / 8 % 32] ^= 1 << (bit % 8);
    Hash(b)
}

fn tree(n: u64) -> (Vec<Hash>, MemoryTree) {
    let d = leaves(n);
    let mut t = MemoryTree::new();
    for h in &d {
        t.append(*h);
    }
    (d, t)
}

#[test]
fn roots_match_reference_and_rs_merkle() {
    let (d, t) = tree(MAX);
    let mut cr = CompactRange::new();
    assert_eq!(cr.root(), Hash::empty_root());
    for n in 1..=MAX as usize {
        cr.append(d[n - 1]);
        let want = mth(&d[..n]);
        assert_eq!(cr.root(), want, "compact range root at {n}");
        assert_eq!(root_at(&t, n as u64).expect("nodes"), want, "stored-node root at {n}");
        assert_eq!(rs_merkle_root(&d[..n]), want, "rs_merkle root at {n}");
        let parsed = CompactRange::from_bytes(&cr.to_bytes()).expect("round trip");
        assert_eq!(parsed, cr);
    }
}

#[test]
fn inclusion_exhaustive_with_mutations() {
    let (d, t) = tree(MAX);
    let (mut valid, mut mutants) = (0, 0);
    for size in 1..=MAX {
        let root = mth(&d[..size as usize]);
        let rs = rs_merkle::MerkleTree::<evident_verify::merkle::Rfc9162Hasher>::from_leaves(
            &d[..size as usize].iter().map(|h| h.0).collect::<Vec<_>>(),
        );
        for index in 0..size {
            let proof = prove_inclusion(&t, index, size).expect("prove");
            assert_eq!(proof, path(index as usize, &d[..size as usize]), "PATH({index}, {size})");
            let rs_proof: Vec<Hash> = rs.proof(&[index as usize]).proof_hashes().iter().map(|h| Hash(*h)).collect();
            assert_eq!(proof, rs_proof, "rs_merkle proof ({index}, {size})");
            assert_eq!(proof.len(), inclusion_proof_len(index, size));
            let leaf = d[index as usize];
            verify_inclusion(index, size, &leaf, &proof, &root).expect("valid proof verifies");
            valid += 1;

            let mut bad: Vec<(u64, u64, Hash, Vec<Hash>, Hash)> = vec![
                (index + 1, size, leaf, proof.clone(), root),
                (index.wrapping_sub(1), size, leaf, proof.clone(), root),
                (index, size * 2, leaf, proof.clone(), root),
                (index, size / 2, leaf, proof.clone(), root),
                (index, size, flip(&leaf, 3), proof.clone(), root),
                (index, size, leaf, proof.clone(), flip(&root, 200)),
                (index, size, leaf, [proof.clone(), vec![root]].concat(), root),
                (index, size, leaf, [vec![leaf], proof.clone()].concat(), root),
            ];
            if !proof.is_empty() {
                bad.push((index, size, leaf, proof[1..].to_vec(), root));
                bad.push((index, size, leaf, proof[..proof.len() - 1].to_vec(), root));
                for i in 0..proof.len() {
                    let mut p = proof.clone();
                    p[i] = flip(&p[i], i * 7);
                    bad.push((index, size, leaf, p, root));
                }
            }
            for (i, s, l, p, r) in bad {
                assert!(
                    verify_inclusion(i, s, &l, &p, &r).is_err(),
                    "mutant accepted: index {i} size {s} (from {index}/{size})"
                );
                mutants += 1;
            }
        }
    }
    println!("inclusion: {valid} valid proofs, {mutants} mutants rejected");
    assert_eq!(valid, MAX * (MAX + 1) / 2);
}

#[test]
fn consistency_exhaustive_with_mutations() {
    let (d, t) = tree(MAX);
    let (mut valid, mut mutants) = (0, 0);
    for new in 1..=MAX {
        let new_root = mth(&d[..new as usize]);
        for old in 1..=new {
            let old_root = mth(&d[..old as usize]);
            let proof = prove_consistency(&t, old, new).expect("prove");
            assert_eq!(proof, subproof(old as usize, &d[..new as usize], true), "SUBPROOF({old}, {new})");
            verify_consistency(old, new, &proof, &old_root.0, &new_root.0).expect("valid proof verifies");
            valid += 1;

            let mut bad: Vec<(u64, u64, Vec<Hash>, Hash, Hash)> = vec![
                (old, new * 2, proof.clone(), old_root, new_root),
                (old + 1, new, proof.clone(), old_root, new_root),
                (old - 1, new, proof.clone(), old_root, new_root),
                (old, new, proof.clone(), flip(&old_root, 9), new_root),
                (old, new, proof.clone(), old_root, flip(&new_root, 100)),
                (old, new, [proof.clone(), vec![new_root]].concat(), old_root, new_root),
                (old, new, [vec![old_root], proof.clone()].concat(), old_root, new_root),
            ];
            if old / 2 >= 1 && old / 2 != old {
                bad.push((old / 2, new, proof.clone(), old_root, new_root));
            }
            if old != new {
                bad.push((old, new, proof.clone(), new_root, old_root));
            }
            if !proof.is_empty() {
                bad.push((old, new, proof[1..].to_vec(), old_root, new_root));
                bad.push((old, new, proof[..proof.len() - 1].to_vec(), old_root, new_root));
                for i in 0..proof.len() {
                    let mut p = proof.clone();
                    p[i] = flip(&p[i], i * 13 + 1);
                    bad.push((old, new, p, old_root, new_root));
                }
            }
            for (o, n, p, r1, r2) in bad {
                assert!(
                    verify_consistency(o, n, &p, &r1.0, &r2.0).is_err(),
                    "mutant accepted: {o} -> {n} (from {old} -> {new})"
                );
                mutants += 1;
            }
        }
    }
    println!("consistency: {valid} valid proofs, {mutants} mutants rejected");
    assert_eq!(valid, MAX * (MAX + 1) / 2);
}

#[test]
fn impossible_requests_are_refused() {
    let (_, t) = tree(8);
    assert!(prove_inclusion(&t, 8, 8).is_err());
    assert!(prove_consistency(&t, 0, 8).is_err());
    assert!(prove_consistency(&t, 5, 4).is_err());
    assert!(prove_inclusion(&t, 3, 9).is_err(), "a node the store lacks is an error, not a guess");
    let zero = Hash::empty_root();
    assert!(verify_inclusion(0, 0, &zero, &[], &zero).is_err());
    assert!(verify_consistency(0, 0, &[], &zero.0, &zero.0).is_err());
    assert!(verify_inclusion(u64::MAX, u64::MAX, &zero, &[], &zero).is_err());
}
