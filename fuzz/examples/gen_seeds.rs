//! Writes the committed seed inputs under `fuzz/seeds/<target>/`: small,
//! valid examples of every format, made with the real encoders and the
//! fixed test-only keys of `evident_fuzz`, and checked to verify.
//!
//! Run from anywhere: `cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use evident_fuzz::{ORIGIN, SamplePack, ledger_key, signed_checkpoint, trust};
use evident_verify::checkpoint::{self, Checkpoint};
use evident_verify::hash::{Hash, leaf_hash};
use evident_verify::manifest::{ManifestKey, PreviousPack};
use evident_verify::merkle::{MemoryTree, prove_consistency, prove_inclusion};
use evident_verify::note::SignerKey;
use evident_verify::pack::verify_pack;
use evident_verify::receipt::{RECEIPT_FORMAT, Receipt};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds").join(target);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let pack = SamplePack::new();
    let mut tree = MemoryTree::new();
    for l in &pack.leaves {
        tree.append(leaf_hash(l));
    }
    let size = tree.size();
    let cp_note = signed_checkpoint(size, tree.root());
    let trusted = [ledger_key().verifier()];

    // checkpoint
    checkpoint::open(cp_note.as_bytes(), &trusted, Some(ORIGIN)).expect("sample checkpoint opens");
    write("checkpoint", "signed_note", cp_note.as_bytes());
    let body = Checkpoint { origin: ORIGIN.into(), size, root: tree.root(), extensions: vec!["ext one".into()] };
    write("checkpoint", "body_with_extension", body.to_text().as_bytes());
    let witness = SignerKey::from_seed("witness.example/w1", &[5u8; 32]).expect("name");
    let cosigned = body.sign(&[&ledger_key(), &witness]).expect("sign");
    checkpoint::open(cosigned.as_bytes(), &trusted, Some(ORIGIN)).expect("cosigned checkpoint opens");
    write("checkpoint", "cosigned_note", cosigned.as_bytes());
    write("checkpoint", "verifier_key", ledger_key().verifier().to_string().as_bytes());

    // leaf
    for (i, l) in pack.leaves.iter().enumerate() {
        write("leaf", &format!("leaf_{i}"), l);
    }
    write("leaf", "timestamp", b"2026-11-21T09:30:12.345678Z");

    // manifest (and the other JSON files of a pack)
    let (manifest, _) = pack.manifest_for(&pack.entries_zst);
    write("manifest", "manifest_first_day", &manifest);
    let mut next = pack.manifest.clone();
    next.day = "2026-11-22".into();
    next.start = size;
    next.end = size + 2;
    next.compact_range = tree.compact_range().hashes().iter().map(Hash::to_base64).collect();
    next.previous = Some(PreviousPack {
        day: pack.manifest.day.clone(),
        manifest_sha256: Hash::sha256(&manifest).to_hex(),
        checkpoint: cp_note.clone(),
    });
    next.producer_keys = vec![ManifestKey {
        producer: evident_fuzz::PRODUCER.into(),
        key: evident_fuzz::producer_key().verifier().to_string(),
        valid_from: "2026-11-21T00:00:00.000000Z".into(),
        valid_until: Some("2026-12-21T00:00:00.000000Z".into()),
        introduced_seq: 0,
    }];
    let next_bytes = next.to_bytes().expect("manifest bytes");
    evident_verify::manifest::Manifest::parse(&next_bytes).expect("second manifest parses");
    write("manifest", "manifest_with_previous", &next_bytes);
    for (name, bytes) in &pack.fixed {
        if *name == "report.json" || *name == "rules.json" {
            write("manifest", name, bytes);
        }
    }

    // receipt
    for seq in [0u64, 2] {
        let proof = prove_inclusion(&tree, seq, size).expect("proof");
        let r = Receipt {
            format: RECEIPT_FORMAT.into(),
            seq,
            tree_size: size,
            leaf: String::from_utf8(pack.leaves[seq as usize].clone()).expect("utf8"),
            inclusion: proof.iter().map(Hash::to_base64).collect(),
            checkpoint: cp_note.clone(),
        };
        r.verify(&trusted, Some(ORIGIN)).expect("sample receipt verifies");
        write("receipt", &format!("receipt_seq{seq}"), &serde_json::to_vec_pretty(&r).expect("json"));
    }

    // pack: a complete .tar that verifies
    let tar = pack.tar(&pack.entries_zst);
    let tmp = std::env::temp_dir().join(format!("evident-gen-seeds-{}.tar", std::process::id()));
    std::fs::write(&tmp, &tar).expect("write tar");
    let res = verify_pack(&tmp, &trust(), None, None, &mut |_, _| {});
    std::fs::remove_file(&tmp).ok();
    assert!(res.ok(), "sample tar must verify: {:?}", res.failure);
    write("pack", "sample_pack.tar", &tar);

    // pack_entries: mode byte, then the zstd file or the plain jsonl
    let jsonl = evident_fuzz::jsonl(&pack.leaves);
    write("pack_entries", "zst_alone", &[&[0u8][..], &pack.entries_zst].concat());
    write("pack_entries", "jsonl_alone", &[&[1u8][..], &jsonl].concat());
    write("pack_entries", "jsonl_chain", &[&[3u8][..], &jsonl].concat());

    // merkle: a compact range, a valid inclusion and a valid consistency proof
    let mut range = vec![0u8];
    range.extend_from_slice(&tree.compact_range().to_bytes());
    write("merkle", "compact_range", &range);
    let mut incl = vec![1u8];
    incl.extend_from_slice(&1u64.to_be_bytes());
    incl.extend_from_slice(&size.to_be_bytes());
    incl.extend_from_slice(&leaf_hash(&pack.leaves[1]).0);
    incl.extend_from_slice(&tree.root().0);
    for h in prove_inclusion(&tree, 1, size).expect("proof") {
        incl.extend_from_slice(&h.0);
    }
    write("merkle", "inclusion", &incl);
    let mut small = MemoryTree::new();
    small.append(leaf_hash(&pack.leaves[0]));
    let mut cons = vec![2u8];
    cons.extend_from_slice(&1u64.to_be_bytes());
    cons.extend_from_slice(&size.to_be_bytes());
    cons.extend_from_slice(&small.root().0);
    cons.extend_from_slice(&tree.root().0);
    for h in prove_consistency(&tree, 1, size).expect("proof") {
        cons.extend_from_slice(&h.0);
    }
    write("merkle", "consistency", &cons);
    println!("seeds written under {}/seeds", env!("CARGO_MANIFEST_DIR"));
}
