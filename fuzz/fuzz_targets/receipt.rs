//! Receipt files: `Receipt::parse`, then `verify` with a fixed trusted key
//! (must return, result ignored); the serde encoding reparses equal.
#![no_main]

use std::sync::LazyLock;

use evident_verify::note::VerifierKey;
use evident_verify::receipt::Receipt;
use libfuzzer_sys::fuzz_target;

static TRUSTED: LazyLock<[VerifierKey; 1]> = LazyLock::new(|| [evident_fuzz::ledger_key().verifier()]);

fuzz_target!(|data: &[u8]| {
    let Ok(r) = Receipt::parse(data) else { return };
    let _ = r.verify(&TRUSTED[..], None);
    let _ = r.verify(&TRUSTED[..], Some(evident_fuzz::ORIGIN));
    let again = serde_json::to_vec(&r).expect("a parsed receipt serializes");
    match Receipt::parse(&again) {
        Ok(back) => assert_eq!(back, r, "re-encoded receipt reparses to a different value"),
        Err(e) => panic!("re-encoded receipt does not reparse: {e}"),
    }
});
