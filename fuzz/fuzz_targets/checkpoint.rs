//! C2SP checkpoint bodies, signed-note envelopes and note keys.
//!
//! - `Checkpoint::parse` is strict, so an accepted body is the one encoding
//!   of its value: `to_text()` gives the input back, and reparses equal.
//! - `note::split` is strict too: text, blank line and signature lines
//!   re-encoded (`— name base64(hash || sig)`) give the input back.
//! - `checkpoint::open` with a fixed trusted key never panics.
//! - `VerifierKey::parse` / `SignerKey::parse` round-trip through their
//!   string forms.
#![no_main]

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use evident_verify::checkpoint::{self, Checkpoint};
use evident_verify::note::{self, SignerKey, VerifierKey};
use libfuzzer_sys::fuzz_target;

static TRUSTED: LazyLock<[VerifierKey; 1]> = LazyLock::new(|| [evident_fuzz::ledger_key().verifier()]);

fn check_body(text: &str) {
    if let Ok(cp) = Checkpoint::parse(text) {
        let again = cp.to_text();
        assert_eq!(again, text, "to_text() differs from the accepted body");
        assert_eq!(Checkpoint::parse(&again), Ok(cp), "re-encoded body does not reparse equal");
    }
}

fuzz_target!(|data: &[u8]| {
    let text = std::str::from_utf8(data).ok();
    if let Some(s) = text {
        check_body(s);
        if let Ok(k) = VerifierKey::parse(s) {
            assert_eq!(k.to_string(), s, "verifier key string does not round-trip");
        }
        if let Ok(k) = SignerKey::parse(s) {
            assert_eq!(k.to_secret_string(), s, "signer key string does not round-trip");
        }
    }
    if let Ok((body, sigs)) = note::split(data) {
        let mut again = format!("{body}\n");
        for sig in &sigs {
            let mut raw = sig.hash.to_vec();
            raw.extend_from_slice(&sig.signature);
            again.push_str(&format!("— {} {}\n", sig.name, B64.encode(raw)));
        }
        assert_eq!(again.as_bytes(), data, "note::split accepted a note that does not re-encode to itself");
        check_body(&body);
    }
    let _ = checkpoint::open(data, &TRUSTED[..], None);
    let _ = checkpoint::open(data, &TRUSTED[..], Some(evident_fuzz::ORIGIN));
});
