//! The JSON files of a pack other than the leaves:
//! - `Manifest::parse` accepts only canonical bytes, so `to_bytes()` gives
//!   the input back;
//! - `Report::parse` (not canonical-strict): when the report can be
//!   re-encoded, the encoding reparses equal;
//! - `RuleSet::parse` (no encoder) never panics.
#![no_main]

use evident_verify::manifest::{Manifest, Report};
use evident_verify::rules::RuleSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        let again = match m.to_bytes() {
            Ok(b) => b,
            Err(e) => panic!("Manifest::parse accepted a manifest that to_bytes refuses: {e}"),
        };
        assert_eq!(
            String::from_utf8_lossy(&again),
            String::from_utf8_lossy(data),
            "accepted manifest does not re-encode to the same bytes"
        );
        assert_eq!(Manifest::parse(&again).as_ref(), Ok(&m));
        let _ = m.compact_range().map(|r| r.root());
    }
    if let Ok(r) = Report::parse(data)
        && let Ok(again) = r.to_bytes()
    {
        assert_eq!(Report::parse(&again).ok().as_ref(), Some(&r), "re-encoded report does not reparse equal");
    }
    if let Ok(rules) = RuleSet::parse(data) {
        let _ = rules.history_independent();
    }
});
