//! The leaf envelope: `Entry::parse_leaf` accepts only RFC 8785 canonical
//! bytes, so an accepted leaf re-encodes (`to_leaf_bytes`) to exactly the
//! input. Also the ledger timestamp (`Timestamp::parse`), which round-trips
//! through `Display`.
#![no_main]

use evident_verify::leaf::Entry;
use evident_verify::ts::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = Entry::parse_leaf(data) {
        let again = match entry.to_leaf_bytes() {
            Ok(b) => b,
            Err(e) => panic!("parse_leaf accepted a leaf that to_leaf_bytes refuses: {e}"),
        };
        assert_eq!(
            String::from_utf8_lossy(&again),
            String::from_utf8_lossy(data),
            "accepted leaf does not re-encode to the same bytes"
        );
        assert_eq!(again, data);
        let _ = entry.timestamp();
        let _ = entry.rec.signing_bytes();
    }
    if let Ok(s) = std::str::from_utf8(data)
        && let Some(t) = Timestamp::parse(s)
    {
        assert_eq!(t.to_string(), s, "timestamp does not round-trip");
        let _ = t.day();
    }
});
