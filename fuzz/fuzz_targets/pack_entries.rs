//! `entries.jsonl.zst` inside an otherwise valid pack directory: every other
//! file verifies (the manifest lists the input's real digest and is signed
//! by the trusted key), so the verifier goes on to decompress the input,
//! split it into lines, parse and check each leaf, and re-evaluate the rules.
//!
//! Input byte 0 selects the mode; the rest is the payload:
//! - bit 0 clear: the payload is the `entries.jsonl.zst` file itself (the
//!   zstd frame parser is under test);
//! - bit 0 set: the payload is the decompressed `entries.jsonl`, compressed
//!   here (line splitting, leaf parsing and the checks after it under test);
//! - bit 1 set: verify as part of a chain (`ChainState`), else alone.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use evident_fuzz::SamplePack;
use evident_verify::pack::{ChainState, Trust, verify_pack};
use evident_verify::rules::RuleSet;
use libfuzzer_sys::fuzz_target;

static TRUST: LazyLock<Trust> = LazyLock::new(evident_fuzz::trust);
static PACK: LazyLock<SamplePack> = LazyLock::new(SamplePack::new);
static RULES: LazyLock<RuleSet> = LazyLock::new(|| RuleSet::parse(evident_fuzz::RULES).expect("rules"));
static DIR: LazyLock<PathBuf> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("evident-fuzz-pack-entries-{}", std::process::id()));
    PACK.write_dir(&dir, &PACK.entries_zst).expect("write the sample pack");
    dir
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode, payload)) = data.split_first() else { return };
    let zst = if mode & 1 == 0 { payload.to_vec() } else { evident_fuzz::zstd_compress(payload) };
    let dir = &*DIR;
    let (manifest, sig) = PACK.manifest_for(&zst);
    std::fs::write(dir.join("manifest.json"), manifest).expect("write");
    std::fs::write(dir.join("manifest.json.sig"), sig).expect("write");
    std::fs::write(dir.join("entries.jsonl.zst"), &zst).expect("write");
    let r = if mode & 2 == 0 {
        verify_pack(dir, &TRUST, None, None, &mut |_, _| {})
    } else {
        let mut chain = ChainState::new(&RULES);
        verify_pack(dir, &TRUST, None, Some(&mut chain), &mut |_, _| {})
    };
    assert_eq!(r.ok(), r.failure.is_none());
    if zst == PACK.entries_zst {
        assert!(r.ok(), "the sample entries must verify: {:?}", r.failure);
    }
});
