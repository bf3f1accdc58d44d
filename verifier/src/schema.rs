//! The record-kind JSON Schemas (`schemas/kinds/*.json`, draft 2020-12),
//! embedded at build time so nothing is resolved from a network or the file
//! system when evidence is checked.

use std::collections::BTreeMap;

use serde_json::Value;
use thiserror::Error;

/// Every shipped kind and its schema text.
pub const KINDS: &[(&str, &str)] = &[
    ("ai_attestation", include_str!("../../schemas/kinds/ai_attestation.json")),
    ("anchor_receipt", include_str!("../../schemas/kinds/anchor_receipt.json")),
    ("approval", include_str!("../../schemas/kinds/approval.json")),
    ("authorization", include_str!("../../schemas/kinds/authorization.json")),
    ("erasure", include_str!("../../schemas/kinds/erasure.json")),
    ("execution", include_str!("../../schemas/kinds/execution.json")),
    ("guardrail_event", include_str!("../../schemas/kinds/guardrail_event.json")),
    ("hold", include_str!("../../schemas/kinds/hold.json")),
    ("invariant_result", include_str!("../../schemas/kinds/invariant_result.json")),
    ("key_event", include_str!("../../schemas/kinds/key_event.json")),
    ("tool_call", include_str!("../../schemas/kinds/tool_call.json")),
];

/// Errors validating a record body.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemaError {
    /// No schema for this kind.
    #[error("unknown kind {0:?}: no schema under schemas/kinds/")]
    UnknownKind(String),
    /// The body violates its kind's schema.
    #[error("body of kind {kind:?} violates its schema at {path}: {message}")]
    Invalid {
        /// The kind.
        kind: String,
        /// JSON pointer into `rec.body` of the first violation.
        path: String,
        /// What the validator reported.
        message: String,
    },
    /// A shipped schema that does not compile (a build defect).
    #[error("schema for kind {kind:?} does not compile: {message}")]
    BadSchema {
        /// The kind.
        kind: String,
        /// The compiler's message.
        message: String,
    },
}

/// What a kind's schema says about its top-level body fields, beyond
/// validation: which hold personal data and which are exempt from the
/// free-text detectors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KindFields {
    /// Fields marked `"x-pii": true`: committed before hashing (DESIGN §8).
    pub pii: Vec<String>,
    /// Fields marked `"x-detect": false`: machine-made values (storage
    /// locations, version ids) that the detectors would misread as personal
    /// data, such as a bucket name ending in an 11-digit account number.
    pub undetected: Vec<String>,
}

impl KindFields {
    /// Whether the detectors scan the top-level field `name` as free text.
    pub fn is_free_text(&self, name: &str) -> bool {
        !self.pii.iter().any(|f| f == name) && !self.undetected.iter().any(|f| f == name)
    }
}

/// Compiled validators for every kind, and the fields each marks `x-pii` or
/// `x-detect: false`.
pub struct Schemas {
    kinds: BTreeMap<String, (jsonschema::Validator, KindFields)>,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schemas").field("kinds", &self.kinds.keys().collect::<Vec<_>>()).finish()
    }
}

impl Schemas {
    /// Compiles the embedded schemas.
    pub fn embedded() -> Result<Schemas, SchemaError> {
        Schemas::from_texts(KINDS.iter().map(|(k, t)| (k.to_string(), t.to_string())))
    }

    /// The embedded schemas, compiled once per process and shared. Pack and
    /// chain verification call this per pack; compiling eleven draft
    /// 2020-12 schemas each time cost more than checking a small pack.
    pub fn shared() -> Result<&'static Schemas, SchemaError> {
        static SHARED: std::sync::OnceLock<Result<Schemas, SchemaError>> = std::sync::OnceLock::new();
        SHARED.get_or_init(Schemas::embedded).as_ref().map_err(Clone::clone)
    }

    /// Compiles schemas from `(kind, schema text)` pairs.
    pub fn from_texts(texts: impl IntoIterator<Item = (String, String)>) -> Result<Schemas, SchemaError> {
        let mut kinds = BTreeMap::new();
        for (kind, text) in texts {
            let bad = |message: String| SchemaError::BadSchema { kind: kind.clone(), message };
            let value: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
            // The `regex` engine: linear time whatever the input (no
            // backtracking on untrusted strings), and several times faster
            // than the default `fancy-regex`. Every shipped pattern is in
            // the subset it shares with ECMA-262; one outside it fails here.
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .with_pattern_options(jsonschema::PatternOptions::regex())
                .build(&value)
                .map_err(|e| bad(e.to_string()))?;
            let marked = |key: &str, want: bool| -> Vec<String> {
                value
                    .get("properties")
                    .and_then(Value::as_object)
                    .map(|props| {
                        props
                            .iter()
                            .filter(|(_, s)| s.get(key).and_then(Value::as_bool) == Some(want))
                            .map(|(name, _)| name.clone())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let fields = KindFields { pii: marked("x-pii", true), undetected: marked("x-detect", false) };
            kinds.insert(kind.clone(), (validator, fields));
        }
        Ok(Schemas { kinds })
    }

    /// The known kinds.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    /// Top-level body fields of `kind` marked `"x-pii": true`.
    pub fn pii_fields(&self, kind: &str) -> Result<&[String], SchemaError> {
        self.fields(kind).map(|f| f.pii.as_slice())
    }

    /// The field annotations of `kind` (`x-pii`, `x-detect`).
    pub fn fields(&self, kind: &str) -> Result<&KindFields, SchemaError> {
        self.kinds.get(kind).map(|(_, f)| f).ok_or_else(|| SchemaError::UnknownKind(kind.to_string()))
    }

    /// Validates `body` against the schema of `kind`, reporting the first
    /// violation with its JSON pointer.
    pub fn validate(&self, kind: &str, body: &Value) -> Result<(), SchemaError> {
        let (validator, _) = self.kinds.get(kind).ok_or_else(|| SchemaError::UnknownKind(kind.to_string()))?;
        // The boolean check short-circuits and allocates no error; only an
        // invalid body pays for locating its first violation.
        if validator.is_valid(body) {
            return Ok(());
        }
        match validator.iter_errors(body).next() {
            None => Ok(()),
            Some(e) => Err(SchemaError::Invalid {
                kind: kind.to_string(),
                path: {
                    let p = e.instance_path().to_string();
                    if p.is_empty() { "/".to_string() } else { p }
                },
                message: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped example body passes, and every invalid one fails.
    #[test]
    fn shipped_examples() {
        let s = Schemas::embedded().expect("schemas compile");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/examples");
        let mut checked = 0;
        for (kind, _) in KINDS {
            let valid: Vec<Value> =
                serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{kind}.valid.json"))).expect("read"))
                    .expect("json");
            for b in &valid {
                s.validate(kind, b).unwrap_or_else(|e| panic!("{kind}: valid example refused: {e}"));
                checked += 1;
            }
            let invalid: Vec<Value> =
                serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{kind}.invalid.json"))).expect("read"))
                    .expect("json");
            for b in &invalid {
                assert!(s.validate(kind, &b["body"]).is_err(), "{kind}: accepted invalid example: {}", b["why"]);
                checked += 1;
            }
        }
        assert!(checked >= KINDS.len() * 5);
        assert_eq!(s.pii_fields("approval").expect("kind"), ["approver".to_string()]);
        let anchor = s.fields("anchor_receipt").expect("kind");
        assert!(anchor.pii.is_empty());
        let mut undetected = anchor.undetected.clone();
        undetected.sort();
        assert_eq!(undetected, ["bucket", "endpoint", "etag", "key", "location", "version_id"]);
        assert!(!anchor.is_free_text("bucket") && anchor.is_free_text("day"));
        assert!(matches!(s.validate("nope", &serde_json::json!({})), Err(SchemaError::UnknownKind(_))));
    }

    /// The shared copy is compiled once and knows the same kinds.
    #[test]
    fn shared_is_compiled_once() {
        let a = Schemas::shared().expect("schemas compile");
        let b = Schemas::shared().expect("schemas compile");
        assert!(std::ptr::eq(a, b));
        assert_eq!(a.kinds().collect::<Vec<_>>(), KINDS.iter().map(|(k, _)| *k).collect::<Vec<_>>());
    }

    /// Patterns run on the linear-time `regex` engine with ECMA-262 anchors
    /// (`$` is the end of the string, not before a final newline); a
    /// pattern outside that engine's subset is a schema that does not
    /// compile.
    #[test]
    fn patterns_are_anchored_and_lookaround_does_not_compile() {
        let schema = r#"{"type":"object","properties":{"h":{"type":"string","pattern":"^sha256:[0-9a-f]{64}$"}}}"#;
        let s = Schemas::from_texts([("k".to_string(), schema.to_string())]).expect("compiles");
        let hex = "ab".repeat(32);
        assert!(s.validate("k", &serde_json::json!({ "h": format!("sha256:{hex}") })).is_ok());
        for bad in [format!("sha256:{}", hex.to_uppercase()), format!("sha256:{hex}\n"), format!(" sha256:{hex}")] {
            let err = s.validate("k", &serde_json::json!({ "h": bad })).expect_err("pattern refuses it");
            assert!(matches!(&err, SchemaError::Invalid { path, .. } if path == "/h"), "{err}");
        }
        let lookbehind = r#"{"type":"string","pattern":"(?<=a)b"}"#;
        let err = Schemas::from_texts([("k".to_string(), lookbehind.to_string())]).expect_err("lookbehind");
        assert!(matches!(err, SchemaError::BadSchema { .. }), "{err}");
    }
}
