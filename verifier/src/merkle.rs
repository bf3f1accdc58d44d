//! The RFC 9162 Merkle tree: node addressing, compact ranges, proof
//! generation over a [`NodeSource`], and strict proof verification.
//!
//! Only *perfect* subtrees are ever stored: node `(level, index)` is the root
//! of leaves `[index << level, (index + 1) << level)`. Any other subtree hash
//! (the ragged right edge of a tree) is recomputed from O(log n) perfect ones.
//! Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 literally.

use thiserror::Error;

use crate::hash::{Hash, TreeHead, node_hash, node_hash_bytes};

/// Address of a perfect subtree: the node at `level` (0 = leaves) and
/// position `index` within that level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// Height above the leaves; a level-`l` node covers `2^l` leaves.
    pub level: u8,
    /// Position within the level, counting from 0 at the left.
    pub index: u64,
}

impl NodeId {
    /// The node covering exactly leaf `index`.
    pub fn leaf(index: u64) -> NodeId {
        NodeId { level: 0, index }
    }

    /// First leaf covered by this node.
    pub fn first_leaf(&self) -> u64 {
        self.index << self.level
    }
}

/// Read access to stored perfect-subtree hashes.
///
/// The ledger implements this over SQLite; [`MemoryTree`] implements it in
/// memory. An implementation MUST return exactly one hash per requested id,
/// in request order, and MUST fail rather than return a hash it does not have.
pub trait NodeSource {
    /// Error raised by the backing store.
    type Error;
    /// Fetches the hashes of `ids`, in order.
    fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, Self::Error>;
}

/// Largest power of two strictly less than `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The perfect subtrees that make up leaves `[lo, hi)`, left to right.
///
/// For the ranges that occur in RFC 9162 proofs and compact ranges (those
/// whose `lo` is aligned to the subtree the range belongs to) this is the
/// binary decomposition, and folding the hashes from the right with
/// [`node_hash`] gives `MTH(D[lo:hi])`.
pub fn range_nodes(lo: u64, hi: u64) -> Vec<NodeId> {
    let mut out = Vec::new();
    let mut lo = lo;
    while lo < hi {
        let max_by_align = if lo == 0 { 63 } else { lo.trailing_zeros() };
        let max_by_len = 63 - (hi - lo).leading_zeros();
        let level = max_by_align.min(max_by_len);
        out.push(NodeId { level: level as u8, index: lo >> level });
        lo += 1u64 << level;
    }
    out
}

/// Folds perfect-subtree hashes (left to right, decreasing sizes) into the
/// hash of the range they cover, per the RFC 9162 MTH recursion.
pub fn fold_range(hashes: &[Hash]) -> Option<Hash> {
    let (last, rest) = hashes.split_last()?;
    Some(rest.iter().rev().fold(*last, |acc, h| node_hash(h, &acc)))
}

/// The subtree ranges whose hashes form the inclusion proof for leaf `index`
/// in a tree of `size` leaves (RFC 9162 §2.1.3.1 `PATH`), bottom up.
pub fn inclusion_proof_ranges(index: u64, size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let (mut lo, mut hi) = (0u64, size);
    // Walk down from the root, then reverse: PATH lists siblings leaf-first.
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if index < lo + k {
            out.push((lo + k, hi));
            hi = lo + k;
        } else {
            out.push((lo, lo + k));
            lo += k;
        }
    }
    out.reverse();
    out
}

/// The subtree ranges whose hashes form the consistency proof from `old` to
/// `new` leaves (RFC 9162 §2.1.4.1 `SUBPROOF(m, D[n], true)`), in proof order.
pub fn consistency_proof_ranges(old: u64, new: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    if old == 0 || old >= new {
        return out;
    }
    let (mut lo, mut hi, mut m, mut whole) = (0u64, new, old, true);
    loop {
        let n = hi - lo;
        if m == n {
            if !whole {
                out.push((lo, hi));
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            out.push((lo + k, hi));
            hi = lo + k;
        } else {
            out.push((lo, lo + k));
            lo += k;
            m -= k;
            whole = false;
        }
    }
    out.reverse();
    out
}

/// Resolves subtree ranges to hashes with one batched read from `source`.
pub fn hash_ranges<S: NodeSource>(source: &S, ranges: &[(u64, u64)]) -> Result<Vec<Hash>, S::Error> {
    let plans: Vec<Vec<NodeId>> = ranges.iter().map(|&(lo, hi)| range_nodes(lo, hi)).collect();
    let ids: Vec<NodeId> = plans.iter().flatten().copied().collect();
    let hashes = source.nodes(&ids)?;
    let mut at = 0;
    Ok(plans
        .iter()
        .map(|p| {
            let h = fold_range(&hashes[at..at + p.len()]).unwrap_or_else(Hash::empty_root);
            at += p.len();
            h
        })
        .collect())
}

/// Errors from proof generation.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProveError<E> {
    /// The request itself is impossible (caller misuse, not bad evidence).
    #[error("cannot prove: {0}")]
    Request(String),
    /// The node store failed.
    #[error("reading stored tree nodes")]
    Store(#[source] E),
}

/// Generates the inclusion proof for leaf `index` in a tree of `size` leaves.
pub fn prove_inclusion<S: NodeSource>(source: &S, index: u64, size: u64) -> Result<Vec<Hash>, ProveError<S::Error>> {
    if index >= size {
        return Err(ProveError::Request(format!("leaf index {index} is not below tree size {size}")));
    }
    hash_ranges(source, &inclusion_proof_ranges(index, size)).map_err(ProveError::Store)
}

/// Generates the consistency proof from tree size `old` to `new`.
pub fn prove_consistency<S: NodeSource>(source: &S, old: u64, new: u64) -> Result<Vec<Hash>, ProveError<S::Error>> {
    if old == 0 || old > new {
        return Err(ProveError::Request(format!(
            "no consistency proof from size {old} to size {new}: need 0 < old <= new"
        )));
    }
    hash_ranges(source, &consistency_proof_ranges(old, new)).map_err(ProveError::Store)
}

/// The root of the first `size` leaves.
pub fn root_at<S: NodeSource>(source: &S, size: u64) -> Result<Hash, S::Error> {
    Ok(hash_ranges(source, &[(0, size)])?.pop().unwrap_or_else(Hash::empty_root))
}

/// Errors from strict proof verification.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProofError {
    /// Leaf index at or beyond the tree size.
    #[error("leaf index {index} is out of range for tree size {size}")]
    IndexOutOfRange {
        /// Claimed leaf index.
        index: u64,
        /// Claimed tree size.
        size: u64,
    },
    /// The older tree is larger than the newer one.
    #[error("old tree size {old} is larger than new tree size {new}")]
    SizeOrder {
        /// Older size.
        old: u64,
        /// Newer size.
        new: u64,
    },
    /// A consistency proof from the empty tree proves nothing.
    #[error("a consistency proof from an empty tree is meaningless")]
    EmptyOldTree,
    /// The proof has the wrong number of hashes for the sizes claimed.
    #[error("proof has {got} hashes, but sizes require exactly {expected}")]
    WrongLength {
        /// Required count.
        expected: usize,
        /// Count supplied.
        got: usize,
    },
    /// The recomputed root differs from the one claimed.
    #[error("root mismatch: expected {expected}, computed {computed}")]
    RootMismatch {
        /// The root that was supplied (hex; may have a wrong length).
        expected: String,
        /// The root the proof leads to (hex).
        computed: String,
    },
}

fn mismatch(expected: &[u8], computed: &[u8]) -> ProofError {
    ProofError::RootMismatch {
        expected: crate::hash::hex_encode(expected),
        computed: crate::hash::hex_encode(computed),
    }
}

/// Number of hashes an inclusion proof for `index` in `size` must have.
pub fn inclusion_proof_len(index: u64, size: u64) -> usize {
    if index >= size {
        return 0;
    }
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    // `inner` is 64 when the path splits at the top bit (sizes past 2^63):
    // nothing of `index` is left above it.
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// Number of hashes a consistency proof from `old` to `new` must have.
pub fn consistency_proof_len(old: u64, new: u64) -> usize {
    if old == 0 || old >= new {
        return 0;
    }
    consistency_proof_ranges(old, new).len()
}

/// Recomputes the root from an inclusion proof (RFC 9162 §2.1.3.2, steps 1–5).
pub fn root_from_inclusion_proof(index: u64, size: u64, leaf_hash: &Hash, proof: &[Hash]) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_proof_len(index, size);
    if proof.len() != expected {
        return Err(ProofError::WrongLength { expected, got: proof.len() });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::WrongLength { expected, got: proof.len() });
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength { expected, got: proof.len() });
    }
    Ok(r)
}

/// Verifies that `leaf_hash` is leaf `index` of the tree of `size` leaves
/// whose root is `root` (RFC 9162 §2.1.3.2).
///
/// Success does **not** prove that the tree head is genuine (check the
/// checkpoint signature), nor anything about the leaf's content beyond its
/// hash.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf_hash: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    let computed = root_from_inclusion_proof(index, size, leaf_hash, proof)?;
    if computed == *root { Ok(()) } else { Err(mismatch(&root.0, &computed.0)) }
}

/// Verifies that the tree of `old` leaves with root `old_root` is a prefix
/// of the tree of `new` leaves with root `new_root` (RFC 9162 §2.1.4.2).
///
/// Roots are raw bytes, compared exactly as given, matching the reference
/// implementation's known answers; [`verify_consistency_heads`] is the
/// typed form.
///
/// Both sizes must be non-zero: consistency with the empty tree is
/// meaningless. Equal sizes require an empty proof and equal roots.
///
/// Success does **not** prove that either root is genuine (check both
/// checkpoint signatures); it proves only that they describe one history.
pub fn verify_consistency(
    old: u64,
    new: u64,
    proof: &[Hash],
    old_root: &[u8],
    new_root: &[u8],
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::SizeOrder { old, new });
    }
    if old == 0 {
        return Err(ProofError::EmptyOldTree);
    }
    if old == new {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength { expected: 0, got: proof.len() });
        }
        return if old_root == new_root { Ok(()) } else { Err(mismatch(new_root, old_root)) };
    }
    let expected = consistency_proof_len(old, new);
    if proof.len() != expected {
        return Err(ProofError::WrongLength { expected, got: proof.len() });
    }
    // Step 2: when `old` is a power of two its root is the first path entry.
    let mut path: Vec<&[u8]> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(old_root);
    }
    path.extend(proof.iter().map(|h| &h.0[..]));
    let (mut fnode, mut snode) = (old - 1, new - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr: Vec<u8> = path[0].to_vec();
    let mut sr: Vec<u8> = path[0].to_vec();
    for c in &path[1..] {
        if snode == 0 {
            return Err(ProofError::WrongLength { expected, got: proof.len() });
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash_bytes(c, &fr).0.to_vec();
            sr = node_hash_bytes(c, &sr).0.to_vec();
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash_bytes(&sr, c).0.to_vec();
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength { expected, got: proof.len() });
    }
    if fr != old_root {
        return Err(mismatch(old_root, &fr));
    }
    if sr != new_root {
        return Err(mismatch(new_root, &sr));
    }
    Ok(())
}

/// Typed wrapper of [`verify_consistency`] over two tree heads.
pub fn verify_consistency_heads(old: &TreeHead, new: &TreeHead, proof: &[Hash]) -> Result<(), ProofError> {
    verify_consistency(old.size, new.size, proof, &old.root.0, &new.root.0)
}

/// Errors parsing a serialized compact range.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompactRangeError {
    /// The number of hashes does not match the size.
    #[error("compact range of size {size} needs {expected} hashes, got {got}")]
    WrongHashCount {
        /// Range size.
        size: u64,
        /// Hashes required (the number of one bits in the size).
        expected: usize,
        /// Hashes supplied.
        got: usize,
    },
}

/// A compact range over leaves `[0, size)`: the hashes of the perfect
/// subtrees of the binary decomposition of `size`, left to right.
///
/// Appending a leaf hash costs O(log n) amortized and O(log n) memory; the
/// root is available at every size. This is what a pack manifest carries
/// for `[0, start)`, so one pass over a day's leaves proves both inclusion
/// and consistency with the previous pack.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CompactRange {
    size: u64,
    hashes: Vec<Hash>,
}

impl CompactRange {
    /// The empty range.
    pub fn new() -> CompactRange {
        CompactRange::default()
    }

    /// Builds a range from its parts, checking that the count fits the size.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Result<CompactRange, CompactRangeError> {
        let expected = size.count_ones() as usize;
        if hashes.len() != expected {
            return Err(CompactRangeError::WrongHashCount { size, expected, got: hashes.len() });
        }
        Ok(CompactRange { size, hashes })
    }

    /// Number of leaves covered.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect-subtree hashes, left to right (largest first).
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// The node ids of the hashes, matching [`CompactRange::hashes`].
    pub fn node_ids(&self) -> Vec<NodeId> {
        range_nodes(0, self.size)
    }

    /// Appends one leaf hash.
    pub fn append(&mut self, leaf_hash: Hash) {
        self.append_with(leaf_hash, |_, _| {});
    }

    /// Appends one leaf hash and reports every perfect subtree it completes
    /// (the leaf itself first, then each parent), so a store can persist them.
    pub fn append_with(&mut self, leaf_hash: Hash, mut completed: impl FnMut(NodeId, Hash)) {
        let index = self.size;
        completed(NodeId::leaf(index), leaf_hash);
        let mut h = leaf_hash;
        let mut level = 0u8;
        // Each trailing one bit of the old size is a left sibling to merge.
        let mut s = self.size;
        while s & 1 == 1 {
            let left = self.hashes.pop().unwrap_or_else(Hash::empty_root);
            h = node_hash(&left, &h);
            level += 1;
            completed(NodeId { level, index: index >> level }, h);
            s >>= 1;
        }
        self.hashes.push(h);
        self.size += 1;
    }

    /// The RFC 9162 root of the leaves covered.
    pub fn root(&self) -> Hash {
        fold_range(&self.hashes).unwrap_or_else(Hash::empty_root)
    }

    /// The tree head `{size, root}`.
    pub fn head(&self) -> TreeHead {
        TreeHead { size: self.size, root: self.root() }
    }

    /// Serializes as 8-byte big-endian size then the hashes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 32 * self.hashes.len());
        out.extend_from_slice(&self.size.to_be_bytes());
        for h in &self.hashes {
            out.extend_from_slice(&h.0);
        }
        out
    }

    /// Parses the form written by [`CompactRange::to_bytes`], strictly.
    pub fn from_bytes(bytes: &[u8]) -> Result<CompactRange, CompactRangeError> {
        let (size_bytes, rest) =
            bytes.split_at_checked(8).ok_or(CompactRangeError::WrongHashCount { size: 0, expected: 0, got: 0 })?;
        let mut sb = [0u8; 8];
        sb.copy_from_slice(size_bytes);
        let size = u64::from_be_bytes(sb);
        let expected = size.count_ones() as usize;
        if rest.len() != expected * 32 {
            return Err(CompactRangeError::WrongHashCount { size, expected, got: rest.len() / 32 });
        }
        let hashes = rest.chunks_exact(32).filter_map(Hash::from_slice).collect();
        CompactRange::from_parts(size, hashes)
    }
}

/// An in-memory tree that keeps every perfect subtree: the reference
/// [`NodeSource`] for tests and small tools.
#[derive(Clone, Debug, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
    range: CompactRange,
}

impl MemoryTree {
    /// The empty tree.
    pub fn new() -> MemoryTree {
        MemoryTree::default()
    }

    /// Appends a leaf hash.
    pub fn append(&mut self, leaf_hash: Hash) {
        let levels = &mut self.levels;
        self.range.append_with(leaf_hash, |id, h| {
            let l = id.level as usize;
            if levels.len() <= l {
                levels.push(Vec::new());
            }
            debug_assert_eq!(levels[l].len() as u64, id.index);
            levels[l].push(h);
        });
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.range.size()
    }

    /// Current root.
    pub fn root(&self) -> Hash {
        self.range.root()
    }

    /// The compact range of the whole tree.
    pub fn compact_range(&self) -> &CompactRange {
        &self.range
    }
}

/// A node missing from a [`MemoryTree`].
#[derive(Debug, Error, PartialEq, Eq)]
#[error("node {0:?} is not in the tree")]
pub struct MissingNode(pub NodeId);

impl NodeSource for MemoryTree {
    type Error = MissingNode;
    fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, MissingNode> {
        ids.iter()
            .map(|id| {
                self.levels
                    .get(id.level as usize)
                    .and_then(|l| usize::try_from(id.index).ok().and_then(|i| l.get(i)))
                    .copied()
                    .ok_or(MissingNode(*id))
            })
            .collect()
    }
}

/// Root of `leaf_hashes` computed by building the whole tree with rs_merkle
/// (RFC 9162 hasher: 0x01 node prefix, unpaired nodes promoted). For whole-
/// tree builds and as an independent reference; never used to verify.
pub fn rs_merkle_root(leaf_hashes: &[Hash]) -> Hash {
    if leaf_hashes.is_empty() {
        return Hash::empty_root();
    }
    let leaves: Vec<[u8; 32]> = leaf_hashes.iter().map(|h| h.0).collect();
    let tree = rs_merkle::MerkleTree::<Rfc9162Hasher>::from_leaves(&leaves);
    tree.root().map(Hash).unwrap_or_else(Hash::empty_root)
}

/// rs_merkle hasher producing RFC 9162 interior nodes. Leaves must be passed
/// already hashed with [`crate::hash::leaf_hash`].
#[derive(Clone, Debug)]
pub struct Rfc9162Hasher;

impl rs_merkle::Hasher for Rfc9162Hasher {
    type Hash = [u8; 32];
    fn hash(data: &[u8]) -> [u8; 32] {
        crate::hash::Hash::sha256(data).0
    }
    fn concat_and_hash(left: &[u8; 32], right: Option<&[u8; 32]>) -> [u8; 32] {
        match right {
            Some(r) => node_hash_bytes(left, r).0,
            None => *left,
        }
    }
}
