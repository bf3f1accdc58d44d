//! RFC 8785 (JCS) known answers: the examples of §3.2.2 and §3.2.3, and the
//! number serialization samples of Appendix B.

use evident_verify::leaf::canonical_json;
use serde_json::Value;

fn canon(s: &str) -> String {
    let v: Value = serde_json::from_str(s).expect("json");
    String::from_utf8(canonical_json(&v).expect("canonical")).expect("utf8")
}

#[test]
fn rfc8785_3_2_2_primitives() {
    let input = r#"{
      "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
      "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
      "literals": [null, true, false]
    }"#;
    assert_eq!(
        canon(input),
        "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\"string\":\"€$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"
    );
}

#[test]
fn rfc8785_3_2_3_sorting_by_utf16() {
    let input = r#"{
      "\u20ac": "Euro Sign",
      "\r": "Carriage Return",
      "\ufb33": "Hebrew Letter Dalet With Dagesh",
      "1": "One",
      "\ud83d\ude00": "Emoji: Grinning Face",
      "\u0080": "Control",
      "\u00f6": "Latin Small Letter O With Diaeresis"
    }"#;
    assert_eq!(
        canon(input),
        "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\"😀\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"
    );
}

#[test]
fn rfc8785_appendix_b_numbers() {
    let cases: &[(u64, &str)] = &[
        (0x0000000000000000, "0"),
        (0x8000000000000000, "0"),
        (0x0000000000000001, "5e-324"),
        (0x8000000000000001, "-5e-324"),
        (0x7fefffffffffffff, "1.7976931348623157e+308"),
        (0xffefffffffffffff, "-1.7976931348623157e+308"),
        (0x4340000000000000, "9007199254740992"),
        (0xc340000000000000, "-9007199254740992"),
        (0x4430000000000000, "295147905179352830000"),
        (0x44b52d02c7e14af5, "9.999999999999997e+22"),
        (0x44b52d02c7e14af6, "1e+23"),
        (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
        (0x444b1ae4d6e2ef4e, "999999999999999700000"),
        (0x444b1ae4d6e2ef4f, "999999999999999900000"),
        (0x444b1ae4d6e2ef50, "1e+21"),
        (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
        (0x3eb0c6f7a0b5ed8d, "0.000001"),
        (0x41b3de4355555553, "333333333.3333332"),
        (0x41b3de4355555554, "333333333.33333325"),
        (0x41b3de4355555555, "333333333.3333333"),
        (0x41b3de4355555556, "333333333.3333334"),
        (0x41b3de4355555557, "333333333.33333343"),
        (0xbecbf647612f3696, "-0.0000033333333333333333"),
        (0x43143ff3c1cb0959, "1424953923781206.2"),
    ];
    for &(bits, want) in cases {
        let f = f64::from_bits(bits);
        let v = serde_json::json!([f]);
        let got = String::from_utf8(canonical_json(&v).expect("canonical")).expect("utf8");
        assert_eq!(got, format!("[{want}]"), "IEEE 754 {bits:#018x}");
    }
}

#[test]
fn integers_beyond_double_precision_are_refused() {
    let v: Value = serde_json::from_str(r#"{"a":9007199254740993}"#).expect("json");
    assert!(canonical_json(&v).is_err());
    let v: Value = serde_json::from_str(r#"{"a":-9007199254740993}"#).expect("json");
    assert!(canonical_json(&v).is_err());
    let v: Value = serde_json::from_str(r#"{"a":9007199254740992}"#).expect("json");
    assert_eq!(canonical_json(&v).expect("fits"), br#"{"a":9007199254740992}"#);
}

fn arb_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    // Strings from a pool that covers the escapes, controls, non-ASCII and
    // characters beyond U+FFFF (where UTF-8 and UTF-16 orders disagree).
    let text = proptest::collection::vec(
        prop_oneof![
            Just('"'),
            Just('\\'),
            Just('\u{0}'),
            Just('\u{1f}'),
            Just('\u{7f}'),
            Just('\n'),
            Just('\u{8}'),
            Just('\u{c}'),
            Just('é'),
            Just('\u{2028}'),
            Just('\u{ffff}'),
            Just('\u{10000}'),
            Just('😀'),
            proptest::char::range('a', 'e'),
        ],
        0..6,
    )
    .prop_map(|v| v.into_iter().collect::<String>());
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        (-(1i64 << 53)..=(1i64 << 53)).prop_map(serde_json::Value::from),
        text.clone().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(text.clone(), inner, 0..5)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// The direct writer used for integer-only values is byte-identical to
    /// the RFC 8785 crate.
    #[test]
    fn direct_writer_equals_the_crate(v in arb_json()) {
        let ours = evident_verify::leaf::canonical_json(&v).expect("integers only");
        let crate_bytes = serde_json_canonicalizer::to_vec(&v).expect("crate");
        proptest::prop_assert_eq!(String::from_utf8(ours).expect("utf8"), String::from_utf8(crate_bytes).expect("utf8"));
    }

    /// Leaves spliced from JCS(rec) and JCS(sig) equal the envelope's JCS.
    #[test]
    fn spliced_leaf_equals_the_envelope(body in arb_json(), seq in 0u64..=(1u64 << 53), signed in proptest::prelude::any::<bool>()) {
        use evident_verify::leaf::{Entry, ProducerSig, Record, leaf_bytes_from_parts};
        let body = serde_json::json!({"x": body});
        let rec = Record { id: "r-1".into(), kind: "approval".into(), producer: "svc".into(), at: "2026-01-01T00:00:00Z".into(), body };
        let sig = signed.then(|| ProducerSig { key: "svc+01020304".into(), ed25519: "QUJD".repeat(21) + "QQ==" });
        let ts = "2026-01-02T03:04:05.123456Z".to_string();
        let e = Entry { v: 1, seq, ts: ts.clone(), rec: rec.clone(), sig: sig.clone() };
        let want = serde_json_canonicalizer::to_vec(&serde_json::to_value(&e).expect("value")).expect("jcs");
        let rec_jcs = rec.signing_bytes().expect("jcs");
        let sig_jcs = sig.as_ref().map(ProducerSig::canonical_bytes);
        proptest::prop_assert_eq!(leaf_bytes_from_parts(seq, &ts, &rec_jcs, sig_jcs.as_deref()), want);
    }

    /// The leaf parser takes back exactly the canonical bytes of an entry,
    /// whatever its body, and refuses the same leaf with one byte of
    /// whitespace or a member moved.
    #[test]
    fn leaves_round_trip_and_near_misses_are_refused(body in arb_json(), seq in 0u64..=(1u64 << 53), signed in proptest::prelude::any::<bool>()) {
        use evident_verify::leaf::{Entry, ProducerSig, Record};
        let body = serde_json::json!({"x": body});
        let rec = Record { id: "r-1".into(), kind: "approval".into(), producer: "svc".into(), at: "2026-01-01T00:00:00Z".into(), body };
        let sig = signed.then(|| ProducerSig { key: "svc+01020304".into(), ed25519: "QUJD".repeat(21) + "QQ==" });
        let e = Entry { v: 1, seq, ts: "2026-01-02T03:04:05.123456Z".into(), rec, sig };
        let leaf = serde_json_canonicalizer::to_vec(&serde_json::to_value(&e).expect("value")).expect("jcs");
        proptest::prop_assert_eq!(Entry::parse_leaf(&leaf).expect("canonical leaf parses"), e.clone());
        let (_, span) = Entry::parse_leaf_with_rec(&leaf).expect("canonical leaf parses");
        let signed_message = e.rec.signing_bytes().expect("jcs");
        proptest::prop_assert_eq!(&leaf[span], signed_message.as_slice());
        let text = String::from_utf8(leaf).expect("utf8");
        let spaced = text.replacen("\":", "\": ", 1);
        proptest::prop_assert!(Entry::parse_leaf(spaced.as_bytes()).is_err(), "accepted {}", spaced);
        let moved = format!("{{\"v\":1,{}", text[1..].replace(",\"v\":1}", "}"));
        proptest::prop_assert!(Entry::parse_leaf(moved.as_bytes()).is_err(), "accepted {}", moved);
    }
}
