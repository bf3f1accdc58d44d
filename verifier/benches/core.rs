//! Verification-core benchmarks, each next to a raw SHA-256 baseline from
//! the same run. `scripts/bench` turns the results into BENCHMARKS.md.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use evident_verify::checkpoint::{self, Checkpoint};
use evident_verify::hash::{Hash, TreeHead, leaf_hash, node_hash};
use evident_verify::merkle::{
    CompactRange, NodeId, NodeSource, prove_consistency, prove_inclusion, root_at, verify_consistency, verify_inclusion,
};
use evident_verify::note::{SignerKey, VerifierKey};
use evident_verify::sig;
use sha2::{Digest, Sha256};

/// A tree of any size whose leaves are all equal, so that every perfect
/// node of a level has the same hash: proofs at 10M leaves without storing
/// 10M leaves. Verification does the same work as on any other tree.
struct Uniform(Vec<Hash>);

impl Uniform {
    fn new() -> Uniform {
        let mut levels = vec![leaf_hash(b"uniform leaf")];
        for l in 1..64 {
            let prev = levels[l - 1];
            levels.push(node_hash(&prev, &prev));
        }
        Uniform(levels)
    }
}

impl NodeSource for Uniform {
    type Error = ();
    fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, ()> {
        Ok(ids.iter().map(|id| self.0[id.level as usize]).collect())
    }
}

fn baseline(c: &mut Criterion) {
    let mut g = c.benchmark_group("baseline");
    let inputs: Vec<[u8; 64]> = (0..1_000_000u32)
        .map(|i| {
            let mut b = [0u8; 64];
            b[..4].copy_from_slice(&i.to_le_bytes());
            b
        })
        .collect();
    g.throughput(Throughput::Elements(inputs.len() as u64));
    g.sample_size(10);
    g.bench_function("sha256_64B_x1M", |b| {
        b.iter(|| {
            let mut acc = 0u8;
            for x in &inputs {
                acc ^= Sha256::digest(x)[0];
            }
            black_box(acc)
        })
    });
    g.finish();
}

fn compact_range(c: &mut Criterion) {
    let leaves: Vec<Hash> = (0..1_000_000u32).map(|i| leaf_hash(&i.to_le_bytes())).collect();
    let mut g = c.benchmark_group("merkle");
    g.throughput(Throughput::Elements(leaves.len() as u64));
    g.sample_size(10);
    g.bench_function("compact_range_root_1M", |b| {
        b.iter(|| {
            let mut cr = CompactRange::new();
            for h in &leaves {
                cr.append(*h);
            }
            black_box(cr.root())
        })
    });
    g.finish();
}

fn proofs(c: &mut Criterion) {
    let t = Uniform::new();
    let size = 10_000_000u64;
    let index = 6_543_210u64;
    let root = root_at(&t, size).expect("root");
    let proof = prove_inclusion(&t, index, size).expect("proof");
    let leaf = t.0[0];
    verify_inclusion(index, size, &leaf, &proof, &root).expect("valid");
    let old = 7_654_321u64;
    let old_root = root_at(&t, old).expect("root");
    let cproof = prove_consistency(&t, old, size).expect("proof");
    verify_consistency(old, size, &cproof, &old_root.0, &root.0).expect("valid");

    let mut g = c.benchmark_group("merkle");
    g.bench_function("verify_inclusion_10M", |b| {
        b.iter(|| verify_inclusion(black_box(index), size, &leaf, &proof, &root).is_ok())
    });
    g.bench_function("verify_consistency_10M", |b| {
        b.iter(|| verify_consistency(black_box(old), size, &cproof, &old_root.0, &root.0).is_ok())
    });
    g.finish();
}

fn checkpoints(c: &mut Criterion) {
    let key = SignerKey::from_seed("bench.example/log", &[9; 32]).expect("name");
    let cp = Checkpoint::new("bench.example/log", TreeHead { size: 10_000_000, root: leaf_hash(b"r") });
    let signed = cp.sign(&[&key]).expect("sign");
    let trusted = [key.verifier()];
    let mut g = c.benchmark_group("checkpoint");
    g.bench_function("open_signed_checkpoint", |b| {
        b.iter(|| checkpoint::open(black_box(signed.as_bytes()), &trusted, Some("bench.example/log")).is_ok())
    });
    g.bench_function("sign_checkpoint", |b| {
        b.iter_batched(|| cp.clone(), |cp| cp.sign(&[&key]).is_ok(), BatchSize::SmallInput)
    });
    g.finish();
}

/// Producer signatures: one, and per signature in batches of 5 (the
/// 16-thread leader's typical call) and 64, each next to ed25519-dalek on
/// the same signatures in the same run (`verify_strict` for one,
/// `verify_batch` for a batch). All on the calling thread; every call must
/// accept, so neither side can look faster by failing early.
fn signatures(c: &mut Criterion) {
    let key = SignerKey::from_seed("deploy-bot", &[2; 32]).expect("name");
    let vk = key.verifier();
    let msgs: Vec<Vec<u8>> =
        (0..64).map(|i| format!("{{\"id\":\"rec-{i:08}\",\"x\":\"{}\"}}", "y".repeat(440)).into_bytes()).collect();
    let sigs: Vec<[u8; 64]> = msgs.iter().map(|m| key.sign(m)).collect();
    let dalek_sigs: Vec<ed25519_dalek::Signature> = sigs.iter().map(ed25519_dalek::Signature::from_bytes).collect();
    let mut g = c.benchmark_group("signatures");
    g.bench_function("evident_single", |b| b.iter(|| assert!(sig::verify(&vk, black_box(&msgs[0]), &sigs[0]))));
    g.bench_function("dalek_verify_strict_single", |b| {
        b.iter(|| assert!(vk.key().verify_strict(black_box(&msgs[0]), &dalek_sigs[0]).is_ok()))
    });
    for n in [5usize, 64] {
        let items: Vec<(&VerifierKey, &[u8], &[u8; 64])> =
            msgs[..n].iter().zip(&sigs).map(|(m, s)| (&vk, m.as_slice(), s)).collect();
        let refs: Vec<&[u8]> = msgs[..n].iter().map(Vec::as_slice).collect();
        let keys = vec![*vk.key(); n];
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("evident_batch_{n}"), |b| {
            b.iter(|| assert!(sig::verify_many(black_box(&items)).iter().all(|ok| *ok)))
        });
        g.bench_function(format!("dalek_verify_batch_{n}"), |b| {
            b.iter(|| assert!(ed25519_dalek::verify_batch(black_box(&refs), &dalek_sigs[..n], &keys).is_ok()))
        });
    }
    g.finish();
}

criterion_group!(benches, baseline, compact_range, proofs, checkpoints, signatures);
criterion_main!(benches);
