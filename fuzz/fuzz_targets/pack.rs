//! The pack `.tar` reader: the input is the whole `.tar`, written to a
//! per-process temp file (reused across runs) and verified with the fixed
//! trusted ledger key. `verify_pack` must return: no panic, no hang, bounded
//! memory (libFuzzer's -timeout and -rss_limit_mb enforce the last two).
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use evident_verify::pack::{Trust, verify_pack};
use libfuzzer_sys::fuzz_target;

static TRUST: LazyLock<Trust> = LazyLock::new(evident_fuzz::trust);
static PATH: LazyLock<PathBuf> =
    LazyLock::new(|| std::env::temp_dir().join(format!("evident-fuzz-pack-{}.tar", std::process::id())));

fuzz_target!(|data: &[u8]| {
    std::fs::write(&*PATH, data).expect("write the temp .tar");
    let r = verify_pack(&PATH, &TRUST, None, None, &mut |_, _| {});
    // A result is either a success or names its first failure.
    assert_eq!(r.ok(), r.failure.is_none());
});
