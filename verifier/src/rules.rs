//! Declarative compliance rules (DESIGN §9): the rules file format
//! `evident-rules/1`, its strict parser, and the streaming evaluator. The
//! reporter evaluates a rules file to write `report.json`; the regulator's
//! verifier evaluates the same file over the same entries and fails when the
//! signed report disagrees ([`compare_outcomes`]). This module is the one
//! definition of what a rule means.
//!
//! # The rules file
//!
//! ```json
//! {"format": "evident-rules/1", "rules": [
//!   {"id": "audit-linkage", "title": "…", "kpi": "Audit linkage", "type": "linked",
//!    "kind": "execution", "field": "authorization_id",
//!    "target": {"kind": "authorization", "field": "authorization_id", "where": {"verdict": "allow"}}}
//! ]}
//! ```
//!
//! Parsing is strict: at most [`MAX_RULES_BYTES`] bytes and [`MAX_RULES`]
//! rules, no duplicate JSON keys, no unknown fields, an unknown `format` or
//! rule `type` is an error, rule ids are unique and match `[a-z0-9-]+`, and
//! every `kind` must have a schema under `schemas/kinds/`. `schemas/rules.schema.json`
//! describes the same shape. Every rule has `id`, `title`, an optional `kpi`
//! (the headline name a report shows first) and `type`.
//!
//! **Field references** are a dotted path into `rec.body`
//! (`execution_identity.spiffe_id`; arrays are not indexed) or one of the
//! specials `$ts` (ledger time), `$at` (`rec.at`), `$producer`, `$kind`, `$id`.
//! A field is *present* when it exists and is not `null`, `""`, `[]` or `{}`.
//! A committed x-pii value `{"$commit": …}` is a non-empty object, so it is
//! present even after its subject is erased.
//!
//! **`where`** maps field references to a string, number or boolean, or to a
//! non-empty array of them (any of). Every key must match. An absent field
//! never matches. Numbers compare by value.
//!
//! # Rule types
//!
//! Each rule applies to the entries of one `kind` that match its `where`.
//!
//! - `required` (`fields`): every field is present.
//! - `linked` (`field`, `target: {kind, field, where?}`, `optional?`): the
//!   entry's `field` equals `target.field` of an *earlier* entry (smaller seq)
//!   of `target.kind` matching `target.where`. An absent `field` is a violation
//!   unless `optional` is true, in which case the entry is not counted.
//! - `within`, same-entry form (`from`, `to`, `seconds`): both fields are
//!   RFC 3339 times and `|to − from| ≤ seconds`. The difference is absolute,
//!   so a time recorded early fails the same way as one recorded late. A
//!   missing or unparsable time is a violation.
//! - `within`, linked form (the `linked` fields plus `seconds`): as `linked`,
//!   and the latest such earlier target has a `$ts` at most `seconds` before
//!   this entry's `$ts`.
//! - `unique` (`field`): the value of `field` is never repeated among matching
//!   entries, over the whole history fed to the evaluator. The second and
//!   later occurrences are violations; entries without the field are not
//!   counted.
//! - `absent` (`during?`): no entry of `kind` matches `where`. Here `where` is
//!   the forbidden predicate, so every entry of `kind` is counted as
//!   applicable. With `during: {kind, key, open: {where}, close: {where},
//!   scope_field?, match_field?}` a match is a violation only inside an open
//!   window: a window opens at an entry of `during.kind` matching `open`, keyed
//!   by the value of its field `key`, and closes at a later entry of that kind
//!   with the same key matching `close` (`close` is tested first). "Inside"
//!   means after the opening entry and before the closing one in seq order,
//!   which the ledger guarantees is `$ts` order. An opening entry for a key
//!   that is already open replaces that window's scope. With
//!   `scope_field`/`match_field` (both or neither) a window covers an entry
//!   only if the opening entry's `scope_field` is `"*"`, equals the entry's
//!   `match_field`, or ends in `*` and the rest is a prefix of it. An opening
//!   entry whose scope is missing or not a string covers every entry.
//!
//! # Evaluation
//!
//! Entries are fed in increasing seq order: first [`Evaluator::history`] for
//! entries before the reporting range (they update state and are never
//! counted), then [`Evaluator::observe`] for the range. Each entry is checked
//! as the subject of a rule before it is recorded as a possible target, so an
//! entry never satisfies a link to itself.
//!
//! Memory does not grow with the number of entries, except for the value
//! sets of `linked`, `within` (linked form) and `unique`, and the open windows
//! of `absent … during`. Set members are not the values but 16-byte
//! truncated SHA-256 digests of `"evident-rules/1\0" || kind || "\0" || field
//! || "\0" || JCS(value)`, scoped by the target's kind and field (see
//! [`crate::leaf::canonical_json`]); a value that RFC 8785 cannot represent
//! exactly counts as absent. Offending seqs are kept up to [`MAX_OFFENDING`]
//! per rule. The same rules and entries always give identical outcomes, in
//! rules-file order.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::hash::Hash;
use crate::leaf::{Record, canonical_json};
use crate::ts::Timestamp;

/// The only rules file format.
pub const FORMAT: &str = "evident-rules/1";
/// Largest rules file accepted: 1 MiB.
pub const MAX_RULES_BYTES: usize = 1 << 20;
/// Most rules in one file.
pub const MAX_RULES: usize = 1024;
/// Most offending seqs listed per rule; the count in
/// [`RuleOutcome::violations`] is always complete.
pub const MAX_OFFENDING: usize = 10_000;

const MAX_ID: usize = 64;
const MAX_TEXT: usize = 512;
const MAX_PATH: usize = 256;

/// Errors parsing a rules file. Messages name the rule id (or `rules[i]`
/// while the id is not yet known) and the dotted field at fault.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RulesError {
    /// Over [`MAX_RULES_BYTES`].
    #[error("rules file is {0} bytes, over the {MAX_RULES_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not JSON (or a duplicate key in an object).
    #[error("rules file is not valid JSON: {0}")]
    Json(String),
    /// A `format` other than [`FORMAT`].
    #[error("rules file format {0:?} is not supported (expected {FORMAT:?})")]
    UnknownFormat(String),
    /// A bad top-level field.
    #[error("rules file field {field}: {why}")]
    File {
        /// The top-level field.
        field: String,
        /// What is wrong.
        why: String,
    },
    /// A bad, missing or unknown field of one rule.
    #[error("rule {rule}: field {field}: {why}")]
    Field {
        /// Rule id, or `rules[i]` when the id itself is bad.
        rule: String,
        /// Dotted field within the rule, e.g. `target.where.verdict`.
        field: String,
        /// What is wrong.
        why: String,
    },
    /// A rule `type` that is not one of [`RuleType`].
    #[error("rule {rule}: unknown type {rule_type:?} (expected required, linked, within, unique or absent)")]
    UnknownType {
        /// Rule id.
        rule: String,
        /// The type given.
        rule_type: String,
    },
    /// Two rules share an id.
    #[error("rule id {0:?} appears more than once")]
    DuplicateId(String),
}

/// Caller misuse of an [`Evaluator`] (not a finding about the evidence).
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EvalError {
    /// Entries must be fed in strictly increasing seq order.
    #[error("entry seq {seq} fed after seq {previous}: entries must be fed in increasing seq order")]
    OutOfOrder {
        /// The seq fed.
        seq: u64,
        /// The seq fed before it.
        previous: u64,
    },
    /// [`Evaluator::history`] after [`Evaluator::observe`].
    #[error("history entry seq {seq} fed after the reporting range began")]
    HistoryAfterRange {
        /// The seq fed.
        seq: u64,
    },
}

/// A signed report's rule outcomes disagree with the recomputed ones.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutcomeMismatch {
    /// Different numbers of rules.
    #[error("the report has {signed} rule outcomes, the rules evaluate to {computed}")]
    Count {
        /// Outcomes in the signed report.
        signed: usize,
        /// Outcomes recomputed.
        computed: usize,
    },
    /// One field of one rule's outcome differs.
    #[error("rule {rule} (position {index}): {field} is {signed} in the report but {computed} when recomputed")]
    Field {
        /// Position in the rules list.
        index: usize,
        /// Rule id as recomputed.
        rule: String,
        /// The outcome field, e.g. `violations` or `offending_seqs[3]`.
        field: String,
        /// The report's value.
        signed: String,
        /// The recomputed value.
        computed: String,
    },
}

/// The rule types of `evident-rules/1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RuleType {
    /// Fields are present.
    Required,
    /// A value links to an earlier entry.
    Linked,
    /// Two times are at most N seconds apart.
    Within,
    /// A value never repeats.
    Unique,
    /// No entry matches (optionally: inside a window).
    Absent,
}

impl RuleType {
    /// The name used in rules files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleType::Required => "required",
            RuleType::Linked => "linked",
            RuleType::Within => "within",
            RuleType::Unique => "unique",
            RuleType::Absent => "absent",
        }
    }
}

/// One rule's result over the reporting range: an element of `rules` in
/// `report.json` (`schemas/report.schema.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleOutcome {
    /// Rule id.
    pub id: String,
    /// Rule title.
    pub title: String,
    /// Headline name, if the rule is a KPI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kpi: Option<String>,
    /// Rule type.
    #[serde(rename = "type")]
    pub rule_type: RuleType,
    /// No violations.
    pub passed: bool,
    /// Entries of the range the rule applied to.
    pub applicable: u64,
    /// Applicable entries that violate the rule (never more than `applicable`).
    pub violations: u64,
    /// `floor(1000 × (applicable − violations) / applicable)`, so only a clean
    /// rule shows 1000; `null` when nothing was applicable.
    pub compliant_per_mille: Option<u32>,
    /// Seqs of the violating entries, ascending, at most [`MAX_OFFENDING`].
    pub offending_seqs: Vec<u64>,
    /// More violations than [`MAX_OFFENDING`] exist than are listed.
    pub offending_truncated: bool,
}

/// A parsed rules file.
#[derive(Clone, Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    sha256: Hash,
}

#[derive(Clone, Debug)]
struct Rule {
    id: String,
    title: String,
    kpi: Option<String>,
    rule_type: RuleType,
    scope: Scope,
    check: Check,
}

#[derive(Clone, Debug)]
enum Check {
    Required(Vec<FieldRef>),
    /// `linked`, and `within` in its linked form (with `seconds`).
    Linked(Link),
    Within {
        from: FieldRef,
        to: FieldRef,
        seconds: u64,
    },
    Unique(FieldRef),
    Absent(Option<During>),
}

/// A `where` clause: each field and its allowed values.
type Filter = Vec<(FieldRef, Vec<Value>)>;

/// A kind and a `where` clause.
#[derive(Clone, Debug)]
struct Scope {
    kind: String,
    filter: Filter,
}

#[derive(Clone, Debug)]
struct Link {
    field: FieldRef,
    optional: bool,
    target: Scope,
    target_field: FieldRef,
    seconds: Option<u64>,
}

#[derive(Clone, Debug)]
struct During {
    window: Scope,
    key: FieldRef,
    open: Filter,
    close: Filter,
    scope_fields: Option<(FieldRef, FieldRef)>,
}

#[derive(Clone, Debug)]
struct FieldRef {
    text: String,
    src: Source,
}

#[derive(Clone, Debug)]
enum Source {
    Ts,
    At,
    Producer,
    Kind,
    Id,
    Body(Vec<String>),
}

impl RuleSet {
    /// Parses a rules file strictly (see the module docs).
    pub fn parse(bytes: &[u8]) -> Result<RuleSet, RulesError> {
        if bytes.len() > MAX_RULES_BYTES {
            return Err(RulesError::TooLarge(bytes.len()));
        }
        let Strict(doc) = serde_json::from_slice(bytes).map_err(|e| RulesError::Json(e.to_string()))?;
        let mut top = Fields::new(None, String::new(), doc)?;
        let format = top.take("format").ok_or_else(|| top.err("format", "missing"))?;
        match format.as_str() {
            Some(FORMAT) => {}
            Some(other) => return Err(RulesError::UnknownFormat(other.to_string())),
            None => return Err(top.err("format", "must be a string")),
        }
        let list = match top.take("rules") {
            Some(Value::Array(a)) => a,
            Some(_) => return Err(top.err("rules", "must be an array")),
            None => return Err(top.err("rules", "missing")),
        };
        if list.len() > MAX_RULES {
            return Err(top.err("rules", &format!("more than {MAX_RULES} rules")));
        }
        top.finish("a rules file")?;
        let mut seen = BTreeSet::new();
        let mut rules = Vec::with_capacity(list.len());
        for (i, v) in list.into_iter().enumerate() {
            let rule = parse_rule(i, v)?;
            if !seen.insert(rule.id.clone()) {
                return Err(RulesError::DuplicateId(rule.id));
            }
            rules.push(rule);
        }
        Ok(RuleSet { rules, sha256: Hash::sha256(bytes) })
    }

    /// For each rule id, whether its outcome over a range depends only on the
    /// range's entries (`required`, same-entry `within`, plain `absent`), so
    /// a single pack can re-derive it without earlier packs.
    pub fn history_independent(&self) -> Vec<(String, bool)> {
        self.rules
            .iter()
            .map(|r| {
                let independent = matches!(r.check, Check::Required(_) | Check::Within { .. } | Check::Absent(None));
                (r.id.clone(), independent)
            })
            .collect()
    }

    /// SHA-256 of the exact file bytes (`rules_sha256` in manifest and report).
    pub fn sha256(&self) -> Hash {
        self.sha256
    }
}

fn parse_rule(index: usize, v: Value) -> Result<Rule, RulesError> {
    let mut f = Fields::new(Some(format!("rules[{index}]")), String::new(), v)?;
    let id = f.string("id", MAX_ID)?;
    if !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(f.err("id", "must match [a-z0-9-]+"));
    }
    f.rule = Some(id.clone());
    let title = f.string("title", MAX_TEXT)?;
    let kpi = f.opt_string("kpi", MAX_TEXT)?;
    let type_name = f.string("type", MAX_ID)?;
    let rule_type = match type_name.as_str() {
        "required" => RuleType::Required,
        "linked" => RuleType::Linked,
        "within" => RuleType::Within,
        "unique" => RuleType::Unique,
        "absent" => RuleType::Absent,
        _ => return Err(RulesError::UnknownType { rule: id, rule_type: type_name }),
    };
    let scope = f.scope()?;
    let check = match rule_type {
        RuleType::Required => {
            let list = match f.take("fields") {
                Some(Value::Array(a)) if !a.is_empty() => a,
                Some(_) => return Err(f.err("fields", "must be a non-empty array of field references")),
                None => return Err(f.err("fields", "missing")),
            };
            let refs = list.iter().enumerate().map(|(i, v)| f.field_ref_value(&format!("fields[{i}]"), v));
            Check::Required(refs.collect::<Result<_, _>>()?)
        }
        RuleType::Linked => Check::Linked(f.link(None)?),
        RuleType::Within => {
            let seconds = f.seconds()?;
            if f.map.contains_key("target") {
                Check::Linked(f.link(Some(seconds))?)
            } else {
                Check::Within { from: f.field_ref("from")?, to: f.field_ref("to")?, seconds }
            }
        }
        RuleType::Unique => Check::Unique(f.field_ref("field")?),
        RuleType::Absent => Check::Absent(f.during()?),
    };
    f.finish(&format!("a {} rule", rule_type.as_str()))?;
    Ok(Rule { id, title, kpi, rule_type, scope, check })
}

fn field_err(rule: &Option<String>, field: &str, why: &str) -> RulesError {
    let (field, why) = (field.to_string(), why.to_string());
    match rule {
        Some(rule) => RulesError::Field { rule: rule.clone(), field, why },
        None => RulesError::File { field, why },
    }
}

/// A JSON object taken apart field by field: every error names the rule and
/// the dotted field, and whatever is left at the end is an unknown field.
struct Fields {
    rule: Option<String>,
    prefix: String,
    map: Map<String, Value>,
}

impl Fields {
    fn new(rule: Option<String>, prefix: String, v: Value) -> Result<Fields, RulesError> {
        match v {
            Value::Object(map) => Ok(Fields { rule, prefix, map }),
            // `$` is the object itself, as in JSONPath.
            _ => Err(field_err(&rule, prefix.strip_suffix('.').unwrap_or("$"), "must be an object")),
        }
    }

    fn err(&self, key: &str, why: &str) -> RulesError {
        field_err(&self.rule, &format!("{}{key}", self.prefix), why)
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key)
    }

    fn sub(&mut self, key: &str) -> Result<Option<Fields>, RulesError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => Fields::new(self.rule.clone(), format!("{}{key}.", self.prefix), v).map(Some),
        }
    }

    fn finish(self, what: &str) -> Result<(), RulesError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(self.err(k, &format!("unknown field (not part of {what})"))),
        }
    }

    fn opt_string(&mut self, key: &str, max: usize) -> Result<Option<String>, RulesError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control) => {
                Ok(Some(s))
            }
            Some(_) => Err(self.err(key, &format!("must be a string of 1 to {max} bytes without control characters"))),
        }
    }

    fn string(&mut self, key: &str, max: usize) -> Result<String, RulesError> {
        self.opt_string(key, max)?.ok_or_else(|| self.err(key, "missing"))
    }

    fn field_ref_value(&self, key: &str, v: &Value) -> Result<FieldRef, RulesError> {
        let s = v.as_str().ok_or_else(|| self.err(key, "must be a field reference string"))?;
        FieldRef::parse(s).map_err(|why| self.err(key, why))
    }

    fn opt_field_ref(&mut self, key: &str) -> Result<Option<FieldRef>, RulesError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => self.field_ref_value(key, &v).map(Some),
        }
    }

    fn field_ref(&mut self, key: &str) -> Result<FieldRef, RulesError> {
        self.opt_field_ref(key)?.ok_or_else(|| self.err(key, "missing"))
    }

    fn kind(&mut self) -> Result<String, RulesError> {
        let kind = self.string("kind", MAX_ID)?;
        if crate::schema::KINDS.iter().any(|(k, _)| *k == kind) {
            Ok(kind)
        } else {
            Err(self.err("kind", &format!("unknown kind {kind:?} (no schema under schemas/kinds/)")))
        }
    }

    /// `kind` and an optional `where`.
    fn scope(&mut self) -> Result<Scope, RulesError> {
        Ok(Scope { kind: self.kind()?, filter: self.filter(false)? })
    }

    fn filter(&mut self, required: bool) -> Result<Filter, RulesError> {
        let Some(mut w) = self.sub("where")? else {
            return if required { Err(self.err("where", "missing")) } else { Ok(Filter::new()) };
        };
        let mut out = Vec::new();
        for (key, v) in std::mem::take(&mut w.map) {
            let field = FieldRef::parse(&key).map_err(|why| w.err(&key, why))?;
            let scalar = |v: &Value| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_));
            let allowed = match v {
                Value::Array(a) if !a.is_empty() && a.iter().all(scalar) => a,
                v if scalar(&v) => vec![v],
                _ => return Err(w.err(&key, "must be a string, number, boolean, or a non-empty array of them")),
            };
            out.push((field, allowed));
        }
        Ok(out)
    }

    fn seconds(&mut self) -> Result<u64, RulesError> {
        match self.take("seconds") {
            Some(v) => v.as_u64().ok_or_else(|| self.err("seconds", "must be a non-negative integer")),
            None => Err(self.err("seconds", "missing")),
        }
    }

    fn link(&mut self, seconds: Option<u64>) -> Result<Link, RulesError> {
        let field = self.field_ref("field")?;
        let optional = match self.take("optional") {
            None => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(self.err("optional", "must be a boolean")),
        };
        let mut t = self.sub("target")?.ok_or_else(|| self.err("target", "missing"))?;
        let target = t.scope()?;
        let target_field = t.field_ref("field")?;
        t.finish("a link target")?;
        Ok(Link { field, optional, target, target_field, seconds })
    }

    fn during(&mut self) -> Result<Option<During>, RulesError> {
        let Some(mut d) = self.sub("during")? else { return Ok(None) };
        let window = Scope { kind: d.kind()?, filter: Vec::new() };
        let key = d.field_ref("key")?;
        let mut edge = |name: &str| -> Result<Filter, RulesError> {
            let mut e = d.sub(name)?.ok_or_else(|| d.err(name, "missing"))?;
            let filter = e.filter(true)?;
            e.finish("a window edge")?;
            Ok(filter)
        };
        let (open, close) = (edge("open")?, edge("close")?);
        let scope_fields = match (d.opt_field_ref("scope_field")?, d.opt_field_ref("match_field")?) {
            (Some(s), Some(m)) => Some((s, m)),
            (None, None) => None,
            (Some(_), None) => return Err(d.err("match_field", "missing (scope_field needs it)")),
            (None, Some(_)) => return Err(d.err("scope_field", "missing (match_field needs it)")),
        };
        d.finish("a during clause")?;
        Ok(Some(During { window, key, open, close, scope_fields }))
    }
}

impl FieldRef {
    fn parse(s: &str) -> Result<FieldRef, &'static str> {
        let src = match s {
            "$ts" => Source::Ts,
            "$at" => Source::At,
            "$producer" => Source::Producer,
            "$kind" => Source::Kind,
            "$id" => Source::Id,
            _ if s.starts_with('$') => {
                return Err("unknown special field (expected $ts, $at, $producer, $kind or $id)");
            }
            _ if s.is_empty()
                || s.len() > MAX_PATH
                || s.split('.').any(str::is_empty)
                || s.chars().any(|c| c.is_whitespace() || c.is_control()) =>
            {
                return Err("must be a dotted path of non-empty body keys (at most 256 bytes, no whitespace)");
            }
            _ => Source::Body(s.split('.').map(str::to_string).collect()),
        };
        Ok(FieldRef { text: s.to_string(), src })
    }
}

/// One entry as the evaluator sees it.
struct Seen<'a> {
    seq: u64,
    ts: Timestamp,
    rec: &'a Record,
}

/// A 16-byte truncated SHA-256 digest of a scoped value (see the module docs).
type Digest = [u8; 16];

/// A field's value where the entry holds it, not copied: an envelope
/// string, or a part of the body. Rules look fields up for every entry and
/// every filter; copying each into a new `Value` was most of their cost.
enum FieldValue<'a> {
    Text(std::borrow::Cow<'a, str>),
    Json(&'a Value),
}

impl FieldValue<'_> {
    /// Present: not null, and not an empty string, array or object.
    fn is_present(&self) -> bool {
        match self {
            FieldValue::Text(s) => !s.is_empty(),
            FieldValue::Json(v) => match v {
                Value::Null => false,
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                Value::Object(o) => !o.is_empty(),
                Value::Bool(_) | Value::Number(_) => true,
            },
        }
    }

    /// Equal to `a` as [`same`] judges.
    fn equals(&self, a: &Value) -> bool {
        match self {
            FieldValue::Text(s) => a.as_str() == Some(s.as_ref()),
            FieldValue::Json(v) => same(v, a),
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::Text(s) => Some(s),
            FieldValue::Json(v) => v.as_str(),
        }
    }

    fn canonical(&self) -> Option<Vec<u8>> {
        match self {
            FieldValue::Text(s) => canonical_json(&Value::String(s.to_string())).ok(),
            FieldValue::Json(v) => canonical_json(v).ok(),
        }
    }
}

impl Seen<'_> {
    fn field(&self, f: &FieldRef) -> Option<FieldValue<'_>> {
        use std::borrow::Cow::Borrowed;
        match &f.src {
            Source::Ts => Some(FieldValue::Text(self.ts.to_string().into())),
            Source::At => Some(FieldValue::Text(Borrowed(&self.rec.at))),
            Source::Producer => Some(FieldValue::Text(Borrowed(&self.rec.producer))),
            Source::Kind => Some(FieldValue::Text(Borrowed(&self.rec.kind))),
            Source::Id => Some(FieldValue::Text(Borrowed(&self.rec.id))),
            Source::Body(path) => path.iter().try_fold(&self.rec.body, |v, k| v.get(k.as_str())).map(FieldValue::Json),
        }
    }

    fn present(&self, f: &FieldRef) -> Option<FieldValue<'_>> {
        self.field(f).filter(FieldValue::is_present)
    }

    /// The digest of a present field, scoped by `kind` and `scope_field`.
    fn digest(&self, f: &FieldRef, kind: &str, scope_field: &FieldRef) -> Option<Digest> {
        let jcs = self.present(f)?.canonical()?;
        let mut h = Sha256::new();
        for part in [b"evident-rules/1".as_slice(), kind.as_bytes(), scope_field.text.as_bytes()] {
            h.update(part);
            h.update([0]);
        }
        h.update(jcs);
        let full: [u8; 32] = h.finalize().into();
        let mut d = [0; 16];
        d.copy_from_slice(&full[..16]);
        Some(d)
    }

    /// A time in nanoseconds since the epoch: the ledger time for `$ts`,
    /// otherwise an RFC 3339 string.
    fn instant(&self, f: &FieldRef) -> Option<i128> {
        if let Source::Ts = f.src {
            return Some(i128::from(self.ts.0) * 1_000);
        }
        let t = chrono::DateTime::parse_from_rfc3339(self.field(f)?.as_str()?).ok()?;
        Some(i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos()))
    }

    fn matches(&self, filter: &Filter) -> bool {
        filter.iter().all(|(f, allowed)| self.field(f).is_some_and(|v| allowed.iter().any(|a| v.equals(a))))
    }

    fn in_scope(&self, scope: &Scope) -> bool {
        self.rec.kind == scope.kind && self.matches(&scope.filter)
    }
}

/// JSON equality, with numbers compared by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    fn int(n: &Number) -> Option<i128> {
        n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from))
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (int(x), int(y)) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

/// Does a window scope (`*`, exact, or `prefix*`) cover a value?
fn covers(scope: &str, value: Option<&str>) -> bool {
    if scope == "*" {
        return true;
    }
    match (scope.strip_suffix('*'), value) {
        (Some(prefix), Some(v)) => v.starts_with(prefix),
        (None, Some(v)) => v == scope,
        (_, None) => false,
    }
}

/// Per-rule streaming state.
#[derive(Clone, Debug, Default)]
struct State {
    applicable: u64,
    violations: u64,
    offending: Vec<u64>,
    truncated: bool,
    /// `linked`/`unique` values: digest → latest `$ts` it was seen at.
    seen: BTreeMap<Digest, Timestamp>,
    /// Open `during` windows: key digest → scope (`None` covers everything).
    windows: BTreeMap<Digest, Option<String>>,
}

impl State {
    fn count(&mut self, seq: u64, ok: bool) {
        self.applicable += 1;
        if !ok {
            self.violations += 1;
            if self.offending.len() < MAX_OFFENDING {
                self.offending.push(seq);
            } else {
                self.truncated = true;
            }
        }
    }

    fn step(&mut self, rule: &Rule, e: &Seen<'_>, report: bool) {
        let subject = report && e.in_scope(&rule.scope);
        match &rule.check {
            Check::Required(fields) => {
                if subject {
                    self.count(e.seq, fields.iter().all(|f| e.present(f).is_some()));
                }
            }
            Check::Linked(l) => {
                if subject {
                    match e.digest(&l.field, &l.target.kind, &l.target_field) {
                        None if l.optional => {}
                        None => self.count(e.seq, false),
                        Some(d) => {
                            let found = self.seen.get(&d).is_some_and(|t| {
                                let age = i128::from(e.ts.0) - i128::from(t.0);
                                l.seconds.is_none_or(|s| (0..=i128::from(s) * 1_000_000).contains(&age))
                            });
                            self.count(e.seq, found);
                        }
                    }
                }
                if e.in_scope(&l.target)
                    && let Some(d) = e.digest(&l.target_field, &l.target.kind, &l.target_field)
                {
                    let t = self.seen.entry(d).or_insert(e.ts);
                    *t = (*t).max(e.ts);
                }
            }
            Check::Within { from, to, seconds } => {
                if subject {
                    let ok = match (e.instant(from), e.instant(to)) {
                        (Some(a), Some(b)) => (b - a).abs() <= i128::from(*seconds) * 1_000_000_000,
                        _ => false,
                    };
                    self.count(e.seq, ok);
                }
            }
            Check::Unique(field) => {
                if e.in_scope(&rule.scope)
                    && let Some(d) = e.digest(field, &rule.scope.kind, field)
                {
                    let first = self.seen.insert(d, e.ts).is_none();
                    if report {
                        self.count(e.seq, first);
                    }
                }
            }
            Check::Absent(during) => {
                if report && e.rec.kind == rule.scope.kind {
                    let hit = e.matches(&rule.scope.filter) && during.as_ref().is_none_or(|d| self.in_window(d, e));
                    self.count(e.seq, !hit);
                }
                if let Some(d) = during
                    && e.in_scope(&d.window)
                    && let Some(key) = e.digest(&d.key, &d.window.kind, &d.key)
                {
                    if e.matches(&d.close) {
                        self.windows.remove(&key);
                    } else if e.matches(&d.open) {
                        let scope = d.scope_fields.as_ref().and_then(|(s, _)| e.field(s)?.as_str().map(str::to_string));
                        self.windows.insert(key, scope);
                    }
                }
            }
        }
    }

    fn in_window(&self, d: &During, e: &Seen<'_>) -> bool {
        let value = d.scope_fields.as_ref().and_then(|(_, m)| e.field(m));
        let value = value.as_ref().and_then(FieldValue::as_str);
        self.windows.values().any(|scope| scope.as_deref().is_none_or(|s| covers(s, value)))
    }
}

/// Streaming evaluation of a [`RuleSet`] over entries fed in seq order.
#[derive(Clone, Debug)]
pub struct Evaluator<'r> {
    rules: &'r RuleSet,
    states: Vec<State>,
    previous: Option<u64>,
    in_range: bool,
}

impl<'r> Evaluator<'r> {
    /// A fresh evaluator with no history.
    pub fn new(rules: &'r RuleSet) -> Evaluator<'r> {
        Evaluator {
            rules,
            states: rules.rules.iter().map(|_| State::default()).collect(),
            previous: None,
            in_range: false,
        }
    }

    /// Feeds an entry from before the reporting range: it updates the state
    /// of `linked`, `within` (linked form), `unique` and `absent … during`
    /// rules and is never counted. The outcome depends on how far back
    /// history goes, so a report records where its history began.
    pub fn history(&mut self, seq: u64, ts: Timestamp, rec: &Record) -> Result<(), EvalError> {
        if self.in_range {
            return Err(EvalError::HistoryAfterRange { seq });
        }
        self.feed(Seen { seq, ts, rec }, false)
    }

    /// Feeds an entry of the reporting range (after all history).
    pub fn observe(&mut self, seq: u64, ts: Timestamp, rec: &Record) -> Result<(), EvalError> {
        self.feed(Seen { seq, ts, rec }, true)
    }

    fn feed(&mut self, e: Seen<'_>, report: bool) -> Result<(), EvalError> {
        if let Some(previous) = self.previous
            && e.seq <= previous
        {
            return Err(EvalError::OutOfOrder { seq: e.seq, previous });
        }
        self.previous = Some(e.seq);
        self.in_range |= report;
        for (rule, state) in self.rules.rules.iter().zip(&mut self.states) {
            state.step(rule, &e, report);
        }
        Ok(())
    }

    /// What this evaluator carries into a later reporting range: the state
    /// of every rule after all it was fed, with nothing counted. Observing
    /// changes the state exactly as feeding history does (only counting
    /// differs), so a day's evaluator, carried, equals one that was fed the
    /// same entries as history: the next day needs no second pass.
    pub fn carry(&self) -> Evaluator<'r> {
        let mut e = self.clone();
        e.in_range = false;
        for s in &mut e.states {
            s.applicable = 0;
            s.violations = 0;
            s.offending.clear();
            s.truncated = false;
        }
        e
    }

    /// The outcome of every rule, in rules-file order.
    pub fn finish(self) -> Vec<RuleOutcome> {
        let outcomes = self.rules.rules.iter().zip(self.states);
        outcomes
            .map(|(r, s)| RuleOutcome {
                id: r.id.clone(),
                title: r.title.clone(),
                kpi: r.kpi.clone(),
                rule_type: r.rule_type,
                passed: s.violations == 0,
                applicable: s.applicable,
                violations: s.violations,
                compliant_per_mille: (s.applicable > 0).then(|| {
                    let ok = u128::from(s.applicable - s.violations) * 1000 / u128::from(s.applicable);
                    u32::try_from(ok).unwrap_or(1000)
                }),
                offending_seqs: s.offending,
                offending_truncated: s.truncated,
            })
            .collect()
    }
}

/// Compares a signed report's outcomes with recomputed ones and names the
/// first difference.
///
/// Success does **not** prove that the recomputation saw the right input:
/// the caller must have evaluated the rules file whose SHA-256 the report
/// names, fed history from the report's `history_from`, and fed exactly the
/// verified entries of the pack's range.
pub fn compare_outcomes(signed: &[RuleOutcome], computed: &[RuleOutcome]) -> Result<(), OutcomeMismatch> {
    if signed.len() != computed.len() {
        return Err(OutcomeMismatch::Count { signed: signed.len(), computed: computed.len() });
    }
    for (index, (s, c)) in signed.iter().zip(computed).enumerate() {
        let diff = |field: String, a: &dyn fmt::Debug, b: &dyn fmt::Debug| OutcomeMismatch::Field {
            index,
            rule: c.id.clone(),
            field,
            signed: format!("{a:?}"),
            computed: format!("{b:?}"),
        };
        macro_rules! check {
            ($($f:ident),*) => {$(
                if s.$f != c.$f {
                    return Err(diff(stringify!($f).to_string(), &s.$f, &c.$f));
                }
            )*};
        }
        check!(id, title, kpi, rule_type, passed, applicable, violations, compliant_per_mille);
        if s.offending_seqs != c.offending_seqs {
            let (a, b) = (&s.offending_seqs, &c.offending_seqs);
            let i = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
            return Err(diff(format!("offending_seqs[{i}]"), &a.get(i), &b.get(i)));
        }
        check!(offending_truncated);
    }
    Ok(())
}

/// A JSON value parsed with duplicate object keys refused, so a rules file
/// means one thing to every reader.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Strict(Value::Array(out)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Strict(Value::Object(out)))
    }
}
