//! The compliance rules engine (DESIGN §9): every rule type names exactly the
//! offending seqs, history carries state into the range, the shipped default
//! rules encode the KPIs of seeds 000 and 003, and parsing is strict.
//!
//! Every record body built here is validated against its kind schema, except
//! where a test says it feeds a body the ledger would refuse.

use evident_verify::hash::Hash;
use evident_verify::leaf::Record;
use evident_verify::rules::{
    EvalError, Evaluator, FORMAT, MAX_OFFENDING, MAX_RULES_BYTES, OutcomeMismatch, RuleOutcome, RuleSet, RuleType,
    RulesError, compare_outcomes,
};
use evident_verify::schema::Schemas;
use evident_verify::ts::Timestamp;
use serde_json::{Value, json};

const DEFAULT_RULES: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../reporter/rules/default.rules.json"));
const RULES_SCHEMA: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/rules.schema.json"));
const REPORT_SCHEMA: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/report.schema.json"));

const H1: &str = "sha256:efaf3d20e6368a495d8569657996ac774313e8ec42a08ef789fd0df98b13b677";
const H2: &str = "sha256:cbc90e38f7ee57c55fd62eca8020109d6c527b7c4283941d25bbde47000d511d";
const COMMIT: &str = "uZJMwNNFN0o7gwR0sNAp4E6SQy7zjrxvMfLlbdUjhHs=";
const SPIFFE: &str = "spiffe://prod.symphony.zm/ns/promotion/sa/promotion-adapter";

/// 2026-11-21T09:00:00Z in microseconds.
const BASE_MICROS: i64 = 1_795_251_600_000_000;

/// Ledger time `secs` seconds (and `micros`) after 09:00:00.
fn at(secs: i64) -> Timestamp {
    Timestamp(BASE_MICROS + secs * 1_000_000)
}

/// RFC 3339 body time `secs` seconds after 09:00:00, whole seconds.
fn t(secs: i64) -> String {
    let s = at(secs).to_string();
    format!("{}Z", &s[..19])
}

struct Log {
    schemas: Schemas,
    entries: Vec<(u64, Timestamp, Record)>,
}

impl Log {
    fn new() -> Log {
        Log { schemas: Schemas::embedded().expect("schemas"), entries: Vec::new() }
    }

    /// Appends a schema-valid record at ledger time `ts`; returns its seq.
    fn push_at(&mut self, ts: Timestamp, kind: &str, body: Value) -> u64 {
        self.schemas.validate(kind, &body).unwrap_or_else(|e| panic!("test body invalid: {e}"));
        self.push_unchecked(ts, kind, body)
    }

    fn push(&mut self, secs: i64, kind: &str, body: Value) -> u64 {
        self.push_at(at(secs), kind, body)
    }

    /// Appends a record without schema validation (a body the ledger refuses).
    fn push_unchecked(&mut self, ts: Timestamp, kind: &str, body: Value) -> u64 {
        let seq = self.entries.len() as u64;
        let rec = Record {
            id: format!("rec-{seq}"),
            kind: kind.into(),
            producer: format!("{}-svc", kind.replace('_', "-")),
            at: t((ts.0 - BASE_MICROS) / 1_000_000),
            body,
        };
        rec.check().expect("envelope");
        self.entries.push((seq, ts, rec));
        seq
    }

    /// Evaluates with entries before `start` as history.
    fn run(&self, rules: &RuleSet, start: u64) -> Vec<RuleOutcome> {
        let mut ev = Evaluator::new(rules);
        for (seq, ts, rec) in &self.entries {
            if *seq < start {
                ev.history(*seq, *ts, rec).expect("history in order");
            } else {
                ev.observe(*seq, *ts, rec).expect("range in order");
            }
        }
        ev.finish()
    }
}

fn authz(id: &str, jti: &str, verdict: &str, scope: &str) -> Value {
    let mut b = json!({
        "authorization_id": id, "decision_hash": H1, "token_jti": jti, "verdict": verdict,
        "policy_bundle_hash": H2, "enforcement_epoch": 42, "action_scope": scope,
        "execution_identity": {"spiffe_id": SPIFFE},
    });
    if verdict == "deny" {
        b["denial_code"] = json!("TOKEN_REPLAY");
    }
    b
}

fn exec(id: &str, authz: &str, phase: &str, scope: &str) -> Value {
    let mut b = json!({
        "execution_id": id, "authorization_id": authz, "phase": phase, "action_scope": scope,
        "execution_identity": {"spiffe_id": SPIFFE},
    });
    if phase == "failed" {
        b["error"] = json!("rollout did not become ready within 60s; rolled back");
    }
    b
}

fn hold(id: &str, state: &str, scope: &str) -> Value {
    let mut b = json!({"hold_id": id, "state": state, "scope": scope, "set_by": {"$commit": COMMIT}});
    if state == "start" {
        b["reason"] = json!("Incident 88: freeze production promotions");
    }
    b
}

fn approval(id: &str, requested_at: &str, approved_at: &str) -> Value {
    json!({
        "approval_id": id, "agent_id": "codex-cli-v2.1.0", "action": "deploy_production",
        "approver": {"$commit": COMMIT}, "method": "INLINE_APPROVAL", "decision": "approved",
        "requested_at": requested_at, "approved_at": approved_at, "decision_hash": H1,
    })
}

fn attestation() -> Value {
    json!({
        "agent_id": "codex-cli-v2.1.0", "model_version": "claude-sonnet-4-20250514", "prompt_hash": H1,
        "approver": {"$commit": COMMIT}, "approved_at": t(0), "approval_method": "PLANS_MD_REVIEW",
    })
}

fn invariant(id: &str, severity: &str, status: &str) -> Value {
    let mut b = json!({
        "invariant_id": id, "severity": severity, "status": status,
        "verification_command": "scripts/audit/verify_ai_attestation.sh", "duration_ms": 412, "run_id": "ci-0100",
    });
    if status == "skip" {
        b["reason"] = json!("not applicable to this commit");
    } else {
        b["evidence_hash"] = json!(H2);
    }
    b
}

fn tool_call(authz: Option<&str>) -> Value {
    let mut b = json!({
        "agent_id": "worker-7", "tool": "deploy_production", "risk_level": "CRITICAL",
        "prompt_version_hash": H1, "outcome": "success",
    });
    if let Some(a) = authz {
        b["authorization_id"] = json!(a);
    }
    b
}

fn rules(list: Value) -> RuleSet {
    let text = json!({"format": FORMAT, "rules": list}).to_string();
    RuleSet::parse(text.as_bytes()).unwrap_or_else(|e| panic!("rules parse: {e}"))
}

fn parse_err(list: Value) -> RulesError {
    let text = json!({"format": FORMAT, "rules": list}).to_string();
    RuleSet::parse(text.as_bytes()).expect_err("must be refused")
}

fn find<'a>(out: &'a [RuleOutcome], id: &str) -> &'a RuleOutcome {
    out.iter().find(|o| o.id == id).unwrap_or_else(|| panic!("no outcome {id}"))
}

/// The outcome names exactly `offending` out of `applicable` entries.
#[track_caller]
fn assert_outcome(out: &[RuleOutcome], id: &str, applicable: u64, offending: &[u64]) {
    let o = find(out, id);
    assert_eq!(o.offending_seqs, offending, "{id}: offending seqs");
    assert_eq!(o.violations, offending.len() as u64, "{id}: violations");
    assert_eq!(o.applicable, applicable, "{id}: applicable");
    assert_eq!(o.passed, offending.is_empty(), "{id}: passed");
    assert!(!o.offending_truncated, "{id}: truncated");
}

#[test]
fn required_names_entries_with_missing_fields() {
    let set = rules(json!([
        {"id": "req", "title": "approvals name model and prompt", "type": "required", "kind": "approval",
         "fields": ["model_version", "prompt_hash", "approver", "$at"]},
        {"id": "owners", "title": "P0 results name owners", "type": "required", "kind": "invariant_result",
         "where": {"severity": ["P0", "P0-AI"]}, "fields": ["owners"]},
    ]));
    let mut log = Log::new();
    let mut full = approval("ap-1", &t(0), &t(1));
    full["model_version"] = json!("claude-sonnet-4-20250514");
    full["prompt_hash"] = json!(H2);
    log.push(1, "approval", full.clone()); // 0: committed approver counts as present
    let mut plain = full.clone();
    plain["approver"] = json!("engineer@symphony.zm");
    log.push(2, "approval", plain); // 1
    let mut partial = full.clone();
    partial.as_object_mut().expect("object").remove("model_version");
    log.push(3, "approval", partial); // 2: missing
    log.push(4, "execution", exec("e-1", "a-1", "started", "x")); // 3: other kind
    let mut owned = invariant("INV-014", "P0", "pass");
    owned["owners"] = json!(["team-platform"]);
    log.push(5, "invariant_result", owned); // 4
    let mut empty = invariant("INV-015", "P0-AI", "fail");
    empty["owners"] = json!([]);
    log.push(6, "invariant_result", empty); // 5: empty array
    log.push(7, "invariant_result", invariant("INV-016", "P0", "pass")); // 6: absent
    log.push(8, "invariant_result", invariant("INV-017", "P1", "pass")); // 7: where excludes
    // Bodies the ledger would refuse: null, "" and {} still count as missing.
    for v in [Value::Null, json!(""), json!({})] {
        let mut b = full.clone();
        b["prompt_hash"] = v;
        log.push_unchecked(at(9), "approval", b); // 8, 9, 10
    }
    let out = log.run(&set, 0);
    assert_outcome(&out, "req", 6, &[2, 8, 9, 10]);
    assert_outcome(&out, "owners", 3, &[5, 6]);
    assert_eq!(find(&out, "req").compliant_per_mille, Some(333));
    assert_eq!(find(&out, "req").rule_type, RuleType::Required);

    let clean = Log { entries: log.entries[..2].to_vec(), schemas: Schemas::embedded().expect("schemas") };
    let out = clean.run(&set, 0);
    assert_outcome(&out, "req", 2, &[]);
    assert_outcome(&out, "owners", 0, &[]);
    assert_eq!(find(&out, "req").compliant_per_mille, Some(1000));
    assert_eq!(find(&out, "owners").compliant_per_mille, None);
}

#[test]
fn linked_needs_an_earlier_matching_target() {
    let set = rules(json!([
        {"id": "link", "title": "executions link to allows", "type": "linked", "kind": "execution",
         "field": "authorization_id",
         "target": {"kind": "authorization", "field": "authorization_id", "where": {"verdict": "allow"}}},
        {"id": "tool-opt", "title": "tool calls that name an authorization link to it", "type": "linked",
         "kind": "tool_call", "field": "authorization_id", "optional": true,
         "target": {"kind": "authorization", "field": "authorization_id"}},
        {"id": "tool-req", "title": "tool calls link to an authorization", "type": "linked",
         "kind": "tool_call", "field": "authorization_id",
         "target": {"kind": "authorization", "field": "authorization_id"}},
        {"id": "self", "title": "execution ids link to an earlier record of the same execution", "type": "linked",
         "kind": "execution", "field": "execution_id", "target": {"kind": "execution", "field": "execution_id"}},
    ]));
    let scope = "promotion:prod/payments-api";
    let mut log = Log::new();
    log.push(0, "authorization", authz("a-1", "j-1", "allow", scope)); // 0
    log.push(1, "authorization", authz("a-2", "j-2", "deny", scope)); // 1
    log.push(2, "execution", exec("e-1", "a-1", "started", scope)); // 2 ok
    log.push(3, "execution", exec("e-2", "a-2", "started", scope)); // 3 target denied
    log.push(4, "execution", exec("e-3", "a-4", "started", scope)); // 4 target comes later
    log.push(5, "authorization", authz("a-4", "j-4", "allow", scope)); // 5
    log.push(6, "execution", exec("e-3", "a-4", "completed", scope)); // 6 ok
    log.push(7, "tool_call", tool_call(None)); // 7 optional: not counted
    log.push(8, "tool_call", tool_call(Some("a-2"))); // 8 ok (no where on target)
    log.push(9, "tool_call", tool_call(Some("a-9"))); // 9 no such authorization
    let out = log.run(&set, 0);
    assert_outcome(&out, "link", 4, &[3, 4]);
    assert_outcome(&out, "tool-opt", 2, &[9]);
    assert_outcome(&out, "tool-req", 3, &[7, 9]);
    // An entry never links to itself: the first record of each execution fails.
    assert_outcome(&out, "self", 4, &[2, 3, 4]);
}

#[test]
fn within_same_entry_uses_the_absolute_difference() {
    let set = rules(json!([
        {"id": "w30", "title": "approvals recorded within 30 s", "type": "within", "kind": "approval",
         "from": "approved_at", "to": "$ts", "seconds": 30},
        {"id": "run", "title": "executions finish within 60 s", "type": "within", "kind": "execution",
         "where": {"phase": ["completed", "failed"]}, "from": "started_at", "to": "finished_at", "seconds": 60},
    ]));
    let mut log = Log::new();
    log.push(30, "approval", approval("ap-0", &t(0), &t(0))); // 0: exactly 30 s
    log.push(41, "approval", approval("ap-1", &t(0), &t(10))); // 1: 31 s late
    log.push(42, "approval", approval("ap-2", &t(0), &t(80))); // 2: 38 s before the decision
    log.push(42, "approval", approval("ap-3", &t(0), "2026-11-21T09:00:11.999999999Z")); // 3: 30.000000001 s
    log.push_at(Timestamp(at(50).0 + 500_000), "approval", approval("ap-4", &t(0), "2026-11-21T09:00:20.5Z")); // 4: 30 s
    let mut ok = exec("e-1", "a-1", "completed", "s");
    ok["started_at"] = json!(t(0));
    ok["finished_at"] = json!("2026-11-21T09:01:00.000Z");
    log.push(60, "execution", ok.clone()); // 5: 60 s
    let mut slow = exec("e-2", "a-1", "failed", "s");
    slow["started_at"] = json!(t(0));
    slow["finished_at"] = json!(t(84));
    log.push(84, "execution", slow); // 6: 84 s
    let mut missing = ok.clone();
    missing.as_object_mut().expect("object").remove("finished_at");
    log.push(85, "execution", missing); // 7: no finished_at
    let mut started = ok.clone();
    started["phase"] = json!("started");
    started.as_object_mut().expect("object").remove("finished_at");
    log.push(86, "execution", started); // 8: where excludes
    let mut garbled = ok;
    garbled["started_at"] = json!("yesterday");
    log.push_unchecked(at(87), "execution", garbled); // 9: unparsable
    let out = log.run(&set, 0);
    assert_outcome(&out, "w30", 5, &[1, 2, 3]);
    assert_outcome(&out, "run", 4, &[6, 7, 9]);
}

#[test]
fn within_linked_bounds_the_age_of_the_target() {
    let set = rules(json!([
        {"id": "fresh", "title": "executions start within 60 s of their allow", "type": "within",
         "kind": "execution", "where": {"phase": "started"}, "field": "authorization_id", "seconds": 60,
         "target": {"kind": "authorization", "field": "authorization_id", "where": {"verdict": "allow"}}},
    ]));
    let s = "promotion:prod/payments-api";
    let mut log = Log::new();
    log.push(0, "authorization", authz("a-1", "j-1", "allow", s)); // 0
    log.push(60, "execution", exec("e-1", "a-1", "started", s)); // 1: exactly 60 s
    log.push(61, "execution", exec("e-2", "a-1", "started", s)); // 2: 61 s
    log.push(62, "execution", exec("e-2", "a-1", "completed", s)); // 3: where excludes
    log.push(100, "authorization", authz("a-1", "j-5", "allow", s)); // 4: a newer allow for a-1
    log.push(150, "execution", exec("e-3", "a-1", "started", s)); // 5: 50 s after the newer one
    log.push(150, "execution", exec("e-4", "a-9", "started", s)); // 6: no target
    let out = log.run(&set, 0);
    assert_outcome(&out, "fresh", 4, &[2, 6]);
    assert_eq!(find(&out, "fresh").rule_type, RuleType::Within);
}

#[test]
fn unique_flags_second_and_later_occurrences() {
    let set = rules(json!([
        {"id": "jti", "title": "allowed jtis are unique", "type": "unique", "kind": "authorization",
         "where": {"verdict": "allow"}, "field": "token_jti"},
    ]));
    let s = "promotion:prod/payments-api";
    let mut log = Log::new();
    log.push(0, "authorization", authz("a-1", "j-1", "allow", s)); // 0
    log.push(1, "authorization", authz("a-2", "j-1", "deny", s)); // 1: a blocked replay is not counted
    let mut e = exec("e-1", "a-1", "started", s);
    e["token_jti"] = json!("j-2");
    log.push(2, "execution", e); // 2: another kind does not count
    log.push(3, "authorization", authz("a-3", "j-1", "allow", s)); // 3: repeat
    log.push(4, "authorization", authz("a-4", "j-2", "allow", s)); // 4
    log.push(5, "authorization", authz("a-5", "j-1", "allow", s)); // 5: third occurrence
    let out = log.run(&set, 0);
    assert_outcome(&out, "jti", 4, &[3, 5]);
    let clean = Log { entries: log.entries[..3].to_vec(), schemas: Schemas::embedded().expect("schemas") };
    assert_outcome(&clean.run(&set, 0), "jti", 1, &[]);
}

#[test]
fn absent_counts_every_entry_of_the_kind() {
    let set = rules(json!([
        {"id": "p0", "title": "no failing P0", "type": "absent", "kind": "invariant_result",
         "where": {"severity": ["P0", "P0-AI"], "status": "fail"}},
        {"id": "specials", "title": "where reads envelope fields", "type": "absent", "kind": "invariant_result",
         "where": {"$producer": "invariant-result-svc", "$kind": "invariant_result", "$id": ["rec-0", "rec-4"],
                   "$at": [t(0), t(4)], "$ts": at(4).to_string()}},
    ]));
    let mut log = Log::new();
    log.push(0, "invariant_result", invariant("INV-001", "P0", "pass")); // 0
    log.push(1, "invariant_result", invariant("INV-002", "P0", "fail")); // 1
    log.push(2, "invariant_result", invariant("INV-003", "P1", "fail")); // 2
    log.push(3, "invariant_result", invariant("INV-115", "P0-AI", "fail")); // 3
    log.push(4, "invariant_result", invariant("INV-116", "P0-AI", "skip")); // 4
    log.push(5, "ai_attestation", attestation()); // 5: other kind
    let out = log.run(&set, 0);
    assert_outcome(&out, "p0", 5, &[1, 3]);
    assert_outcome(&out, "specials", 5, &[4]);
    assert_eq!(find(&out, "p0").compliant_per_mille, Some(600));
}

#[test]
fn absent_during_hold_windows_and_scopes() {
    let set = RuleSet::parse(DEFAULT_RULES).expect("default rules");
    let mut log = Log::new();
    let pay = "promotion:prod/payments-api";
    let db = "migration:prod/payments-db";
    log.push(0, "hold", hold("h-1", "start", "promotion:prod/*")); // 0
    log.push(1, "execution", exec("e-1", "a", "started", pay)); // 1: inside h-1
    log.push(2, "execution", exec("e-1", "a", "completed", pay)); // 2: not a start
    log.push(3, "execution", exec("e-2", "a", "started", "promotion:staging/x")); // 3: not covered
    log.push(4, "hold", hold("h-2", "start", db)); // 4: exact scope
    log.push(5, "execution", exec("e-3", "a", "started", db)); // 5: inside h-2
    log.push(6, "execution", exec("e-4", "a", "started", "migration:prod/payments-db2")); // 6: exact only
    log.push(7, "hold", hold("h-1", "end", "*")); // 7: closes h-1
    log.push(8, "execution", exec("e-5", "a", "started", pay)); // 8: h-1 closed
    log.push(9, "hold", hold("h-3", "end", "*")); // 9: closes nothing
    log.push(10, "hold", hold("h-2", "end", db)); // 10: closes h-2
    log.push(11, "hold", hold("h-4", "start", "*")); // 11
    log.push(12, "execution", exec("e-6", "a", "started", "anything:x")); // 12: '*' covers all
    log.push(13, "hold", hold("h-5", "end", "*")); // 13: another id does not close h-4
    log.push(14, "execution", exec("e-7", "a", "started", "anything:y")); // 14
    let out = log.run(&set, 0);
    assert_outcome(&out, "no-execution-during-hold", 8, &[1, 5, 12, 14]);
}

#[test]
fn history_carries_state_but_is_never_counted() {
    let set = RuleSet::parse(DEFAULT_RULES).expect("default rules");
    let s = "promotion:prod/payments-api";
    let mut log = Log::new();
    log.push(0, "authorization", authz("a-1", "j-1", "allow", s)); // 0
    log.push(1, "authorization", authz("a-2", "j-1", "allow", s)); // 1: a repeat inside history
    log.push(2, "execution", exec("e-0", "a-0", "started", "other:x")); // 2: unlinked, in history
    log.push(3, "hold", hold("h-1", "start", "promotion:prod/*")); // 3
    // Range from seq 4.
    log.push(4, "execution", exec("e-1", "a-1", "started", "other:y")); // 4: links into history
    log.push(5, "execution", exec("e-2", "a-3", "started", "other:y")); // 5: unlinked
    log.push(6, "authorization", authz("a-4", "j-1", "allow", s)); // 6: jti seen in history
    log.push(7, "authorization", authz("a-5", "j-7", "allow", s)); // 7
    log.push(8, "execution", exec("e-3", "a-5", "started", s)); // 8: hold opened in history
    let out = log.run(&set, 4);
    assert_outcome(&out, "audit-linkage", 3, &[5]);
    assert_outcome(&out, "replay-blocked", 2, &[6]);
    assert_outcome(&out, "no-execution-during-hold", 3, &[8]);

    // Without the history the same range reads differently.
    let range = Log { entries: log.entries[4..].to_vec(), schemas: Schemas::embedded().expect("schemas") };
    let out = range.run(&set, 0);
    assert_outcome(&out, "audit-linkage", 3, &[4, 5]);
    assert_outcome(&out, "replay-blocked", 2, &[]);
    assert_outcome(&out, "no-execution-during-hold", 3, &[]);
}

/// A realistic day under the default rules; with `bad`, one execution without
/// an authorization, one reused token_jti and one late approval. Returns the
/// log, the first seq of the range, and the seqs of the three bad entries.
fn realistic_day(bad: bool) -> (Log, u64, [u64; 3]) {
    let pay = "promotion:prod/payments-api";
    let db = "migration:prod/payments-db";
    let mut log = Log::new();
    // Yesterday, fed as history.
    log.push(-3600, "authorization", authz("a-0", "j-0", "allow", db));
    log.push(-3590, "execution", exec("e-0", "a-0", "started", db));
    log.push(-3500, "hold", hold("h-88", "start", "promotion:prod/*"));
    let start = log.entries.len() as u64;
    let mut bad_seqs = [0; 3];
    log.push(1, "approval", approval("ap-1", &t(0), &t(5)));
    log.push(2, "ai_attestation", attestation());
    log.push(3, "execution", exec("e-0", "a-0", "completed", db));
    log.push(20, "authorization", authz("a-1", "j-1", "allow", db));
    log.push(21, "execution", exec("e-1", "a-1", "started", db)); // the hold covers promotions only
    log.push(22, "authorization", authz("a-2", "j-1", "deny", db)); // a blocked replay
    if bad {
        bad_seqs[0] = log.push(25, "execution", exec("e-x", "a-missing", "started", db));
    }
    log.push(30, "execution", exec("e-1", "a-1", "completed", db));
    log.push(40, "hold", hold("h-88", "end", "promotion:prod/*"));
    log.push(50, "authorization", authz("a-3", "j-3", "allow", pay));
    if bad {
        bad_seqs[1] = log.push(51, "authorization", authz("a-4", "j-1", "allow", pay));
    }
    log.push(52, "execution", exec("e-3", "a-3", "started", pay));
    log.push(60, "execution", exec("e-3", "a-3", "failed", pay));
    log.push(61, "invariant_result", invariant("INV-014", "P0", "pass"));
    log.push(62, "invariant_result", invariant("INV-200", "P1", "fail"));
    log.push(63, "invariant_result", invariant("INV-115", "P0-AI", "skip"));
    let mut rejected = approval("ap-2", &t(40), &t(70));
    rejected["decision"] = json!("rejected");
    rejected["reason"] = json!("Rollback script drops the column before the contract phase.");
    log.push(99, "approval", rejected); // recorded 29 s after the decision
    if bad {
        bad_seqs[2] = log.push(200, "approval", approval("ap-3", &t(100), &t(168))); // 32 s
    }
    (log, start, bad_seqs)
}

/// A day's evaluator carried forward judges the next day exactly as one
/// that was fed the same entries as history.
#[test]
fn carry_equals_feeding_the_same_entries_as_history() {
    let set = RuleSet::parse(DEFAULT_RULES).expect("default rules parse");
    let (log, _, bad) = realistic_day(true);
    for split in 1..log.entries.len() as u64 {
        let mut day = Evaluator::new(&set);
        for (seq, ts, rec) in log.entries.iter().filter(|e| e.0 < split) {
            day.observe(*seq, *ts, rec).expect("in order");
        }
        let mut carried = day.carry();
        for (seq, ts, rec) in log.entries.iter().filter(|e| e.0 >= split) {
            carried.observe(*seq, *ts, rec).expect("in order");
        }
        let out = carried.finish();
        assert_eq!(out, log.run(&set, split), "split at {split}");
        let seen: Vec<u64> = out.iter().flat_map(|o| o.offending_seqs.iter().copied()).collect();
        assert!(bad.iter().filter(|b| **b >= split).all(|b| seen.contains(b)), "split {split}: {seen:?}");
    }
}

#[test]
fn default_rules_pass_a_clean_day() {
    let set = RuleSet::parse(DEFAULT_RULES).expect("default rules parse");
    assert_eq!(set.sha256(), Hash::sha256(DEFAULT_RULES));
    let (log, start, _) = realistic_day(false);
    let out = log.run(&set, start);
    let ids: Vec<&str> = out.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "audit-linkage",
            "replay-blocked",
            "no-execution-during-hold",
            "attestation-complete",
            "approval-within-30s",
            "no-failing-p0-invariants"
        ]
    );
    for o in &out {
        assert!(o.passed, "{} failed on a clean day: {:?}", o.id, o.offending_seqs);
        assert!(o.kpi.is_some(), "{} has no KPI name", o.id);
        assert!(o.applicable > 0, "{} applied to nothing", o.id);
        assert_eq!(o.compliant_per_mille, Some(1000));
    }
    assert_outcome(&out, "audit-linkage", 5, &[]);
    assert_outcome(&out, "replay-blocked", 2, &[]);
    assert_outcome(&out, "no-execution-during-hold", 5, &[]);
    assert_outcome(&out, "attestation-complete", 1, &[]);
    assert_outcome(&out, "approval-within-30s", 2, &[]);
    assert_outcome(&out, "no-failing-p0-invariants", 3, &[]);
    assert_eq!(out, log.run(&set, start), "evaluation is deterministic");
}

#[test]
fn default_rules_fail_exactly_the_seeded_violations() {
    let set = RuleSet::parse(DEFAULT_RULES).expect("default rules parse");
    let (log, start, [unlinked, replay, late]) = realistic_day(true);
    let out = log.run(&set, start);
    assert_outcome(&out, "audit-linkage", 6, &[unlinked]);
    assert_outcome(&out, "replay-blocked", 3, &[replay]);
    assert_outcome(&out, "approval-within-30s", 3, &[late]);
    let failed: Vec<&str> = out.iter().filter(|o| !o.passed).map(|o| o.id.as_str()).collect();
    assert_eq!(failed, ["audit-linkage", "replay-blocked", "approval-within-30s"]);
    assert_eq!(find(&out, "audit-linkage").compliant_per_mille, Some(833));

    // The report's outcomes survive JSON and compare equal to a recomputation.
    let text = serde_json::to_string(&out).expect("serialize");
    let back: Vec<RuleOutcome> = serde_json::from_str(&text).expect("deserialize");
    assert_eq!(back, out);
    compare_outcomes(&back, &log.run(&set, start)).expect("same outcomes");
}

#[test]
fn outcomes_and_rules_match_their_schemas() {
    let rules_schema =
        jsonschema::draft202012::new(&serde_json::from_str(RULES_SCHEMA).expect("json")).expect("compiles");
    let report_schema =
        jsonschema::draft202012::new(&serde_json::from_str(REPORT_SCHEMA).expect("json")).expect("compiles");
    let default: Value = serde_json::from_slice(DEFAULT_RULES).expect("json");
    if let Some(e) = rules_schema.iter_errors(&default).next() {
        panic!("default rules violate rules.schema.json at {}: {e}", e.instance_path());
    }

    let set = RuleSet::parse(DEFAULT_RULES).expect("default rules parse");
    let (log, start, _) = realistic_day(true);
    let mut outcomes = serde_json::to_value(log.run(&set, start)).expect("serialize");
    outcomes[0].as_object_mut().expect("object").remove("kpi");
    let report = json!({
        "format": "evident-report/1", "origin": "evident.example/ledger", "day": "2026-11-21",
        "start": start, "end": log.entries.len(), "rules_sha256": set.sha256().to_hex(), "history_from": 0,
        "rules": outcomes,
        "counts": {"by_kind": {"approval": 3, "execution": 7}, "by_producer": {"gateway": 10}},
    });
    if let Some(e) = report_schema.iter_errors(&report).next() {
        panic!("report violates report.schema.json at {}: {e}", e.instance_path());
    }
    let outcome: RuleOutcome = serde_json::from_value(report["rules"][0].clone()).expect("kpi is optional");
    assert_eq!(outcome.kpi, None);
    let mut extra = report["rules"][0].clone();
    extra["note"] = json!("x");
    assert!(serde_json::from_value::<RuleOutcome>(extra.clone()).is_err(), "unknown outcome field accepted");
    let mut bad = report.clone();
    bad["rules"][0] = extra;
    assert!(!report_schema.is_valid(&bad));

    // Files the parser refuses, the schema refuses too.
    let base = json!({"id": "r", "title": "t", "type": "unique", "kind": "authorization", "field": "token_jti"});
    let mut unknown = base.clone();
    unknown["seconds"] = json!(3);
    let mut bad_type = base.clone();
    bad_type["type"] = json!("forbidden");
    let mut bad_kind = base.clone();
    bad_kind["kind"] = json!("authorisation");
    let mut bad_field = base.clone();
    bad_field["field"] = json!("$seq");
    let half_scope = json!({"id": "r", "title": "t", "type": "absent", "kind": "execution",
        "during": {"kind": "hold", "key": "hold_id", "open": {"where": {"state": "start"}},
                   "close": {"where": {"state": "end"}}, "scope_field": "scope"}});
    for rule in [unknown, bad_type, bad_kind, bad_field, half_scope] {
        let file = json!({"format": FORMAT, "rules": [rule]});
        assert!(RuleSet::parse(file.to_string().as_bytes()).is_err(), "parser accepted {rule}");
        assert!(!rules_schema.is_valid(&file), "schema accepted {rule}");
    }
    assert!(rules_schema.is_valid(&json!({"format": FORMAT, "rules": [base]})));
}

#[test]
fn strict_parsing_names_rule_and_field() {
    let field = |e: RulesError| match e {
        RulesError::Field { rule, field, .. } => (rule, field),
        other => panic!("expected a field error, got {other:?}"),
    };
    let ok = json!({"id": "r", "title": "t", "type": "unique", "kind": "authorization", "field": "token_jti"});
    let with = |k: &str, v: Value| {
        let mut r = ok.clone();
        r[k] = v;
        r
    };

    assert!(matches!(
        RuleSet::parse(br#"{"format":"evident-rules/2","rules":[]}"#),
        Err(RulesError::UnknownFormat(f)) if f == "evident-rules/2"
    ));
    assert!(matches!(
        RuleSet::parse(br#"{"rules":[]}"#),
        Err(RulesError::File { field, .. }) if field == "format"
    ));
    assert!(matches!(
        RuleSet::parse(br#"{"format":"evident-rules/1","rules":[],"extra":1}"#),
        Err(RulesError::File { field, .. }) if field == "extra"
    ));
    assert!(matches!(
        RuleSet::parse(br#"{"format":"evident-rules/1","format":"evident-rules/1","rules":[]}"#),
        Err(RulesError::Json(m)) if m.contains("duplicate key")
    ));
    assert!(matches!(RuleSet::parse(b"{"), Err(RulesError::Json(_))));
    assert!(matches!(RuleSet::parse(b"[]"), Err(RulesError::File { .. })));
    let big = vec![b' '; MAX_RULES_BYTES + 1];
    assert_eq!(RuleSet::parse(&big).err(), Some(RulesError::TooLarge(MAX_RULES_BYTES + 1)));

    let e = parse_err(json!([ok.clone(), with("title", json!("again"))]));
    assert_eq!(e, RulesError::DuplicateId("r".into()));
    let e = parse_err(json!([with("type", json!("forbidden"))]));
    assert_eq!(e, RulesError::UnknownType { rule: "r".into(), rule_type: "forbidden".into() });

    let e = parse_err(json!([with("sec0nds", json!(3))]));
    assert_eq!(e.to_string(), "rule r: field sec0nds: unknown field (not part of a unique rule)");
    assert_eq!(field(parse_err(json!([with("id", json!("Bad_Id"))]))), ("rules[0]".into(), "id".into()));
    assert_eq!(field(parse_err(json!([ok.clone(), 5]))), ("rules[1]".into(), "$".into()));
    assert_eq!(field(parse_err(json!([with("kind", json!("executions"))]))), ("r".into(), "kind".into()));
    assert_eq!(field(parse_err(json!([with("field", json!("$seq"))]))), ("r".into(), "field".into()));
    assert_eq!(field(parse_err(json!([with("field", json!("a..b"))]))), ("r".into(), "field".into()));
    assert_eq!(field(parse_err(json!([with("title", json!(""))]))), ("r".into(), "title".into()));
    assert_eq!(field(parse_err(json!([with("optional", json!(true))]))), ("r".into(), "optional".into()));
    for bad in [json!({"verdict": {"x": 1}}), json!({"verdict": []}), json!({"verdict": null}), json!("allow")] {
        let (rule, f) = field(parse_err(json!([with("where", bad)])));
        assert_eq!(rule, "r");
        assert!(f.starts_with("where"), "{f}");
    }

    let linked = json!({"id": "l", "title": "t", "type": "linked", "kind": "execution", "field": "authorization_id",
        "target": {"kind": "authorization", "field": "authorization_id", "wher": {"verdict": "allow"}}});
    assert_eq!(field(parse_err(json!([linked]))), ("l".into(), "target.wher".into()));
    let linked = json!({"id": "l", "title": "t", "type": "linked", "kind": "execution", "field": "authorization_id"});
    assert_eq!(field(parse_err(json!([linked]))), ("l".into(), "target".into()));

    let within = json!({"id": "w", "title": "t", "type": "within", "kind": "approval", "from": "approved_at",
        "to": "$ts", "seconds": 30});
    let mut mixed = within.clone();
    mixed["target"] = json!({"kind": "approval", "field": "approval_id"});
    mixed["field"] = json!("approval_id");
    assert_eq!(field(parse_err(json!([mixed]))), ("w".into(), "from".into()));
    for s in [json!(-1), json!(1.5), json!("30")] {
        let mut w = within.clone();
        w["seconds"] = s;
        assert_eq!(field(parse_err(json!([w]))), ("w".into(), "seconds".into()));
    }
    let mut w = within.clone();
    w.as_object_mut().expect("object").remove("to");
    assert_eq!(field(parse_err(json!([w]))), ("w".into(), "to".into()));

    let required = json!({"id": "q", "title": "t", "type": "required", "kind": "approval", "fields": []});
    assert_eq!(field(parse_err(json!([required]))), ("q".into(), "fields".into()));

    let during = |d: Value| json!([{"id": "a", "title": "t", "type": "absent", "kind": "execution", "during": d}]);
    let d = json!({"kind": "hold", "key": "hold_id", "open": {"where": {"state": "start"}},
        "close": {"where": {"state": "end"}}, "scope_field": "scope"});
    assert_eq!(field(parse_err(during(d))), ("a".into(), "during.match_field".into()));
    let d = json!({"kind": "hold", "key": "hold_id", "open": {}, "close": {"where": {"state": "end"}}});
    assert_eq!(field(parse_err(during(d))), ("a".into(), "during.open.where".into()));
    let d = json!({"kind": "hold", "key": "hold_id", "open": {"where": {"state": "start"}, "x": 1},
        "close": {"where": {"state": "end"}}});
    assert_eq!(field(parse_err(during(d))), ("a".into(), "during.open.x".into()));

    // An empty rules list is a valid (trivial) file.
    RuleSet::parse(br#"{"format":"evident-rules/1","rules":[]}"#).expect("empty list");
}

#[test]
fn evaluator_refuses_out_of_order_feeding() {
    let set = RuleSet::parse(DEFAULT_RULES).expect("default rules");
    let rec =
        Record { id: "r".into(), kind: "hold".into(), producer: "bot".into(), at: t(0), body: hold("h", "start", "*") };
    let mut ev = Evaluator::new(&set);
    ev.history(5, at(0), &rec).expect("first");
    assert_eq!(ev.history(5, at(0), &rec), Err(EvalError::OutOfOrder { seq: 5, previous: 5 }));
    ev.observe(6, at(1), &rec).expect("range");
    assert_eq!(ev.history(7, at(1), &rec), Err(EvalError::HistoryAfterRange { seq: 7 }));
    assert_eq!(ev.observe(3, at(1), &rec), Err(EvalError::OutOfOrder { seq: 3, previous: 6 }));
    ev.observe(7, at(1), &rec).expect("still usable after refusals");
}

#[test]
fn offending_seqs_are_capped() {
    let set = rules(json!([
        {"id": "none", "title": "no holds at all", "type": "absent", "kind": "hold"},
    ]));
    let rec =
        Record { id: "r".into(), kind: "hold".into(), producer: "bot".into(), at: t(0), body: hold("h", "start", "*") };
    let mut ev = Evaluator::new(&set);
    let n = MAX_OFFENDING as u64 + 1;
    for seq in 0..n {
        ev.observe(seq, at(0), &rec).expect("in order");
    }
    let out = ev.finish();
    let o = &out[0];
    assert_eq!((o.applicable, o.violations, o.passed), (n, n, false));
    assert_eq!(o.offending_seqs.len(), MAX_OFFENDING);
    assert_eq!(o.offending_seqs.last(), Some(&(n - 2)));
    assert!(o.offending_truncated);
    assert_eq!(o.compliant_per_mille, Some(0));
}

#[test]
fn compare_outcomes_names_the_first_difference() {
    let set = RuleSet::parse(DEFAULT_RULES).expect("default rules");
    let (log, start, [unlinked, ..]) = realistic_day(true);
    let computed = log.run(&set, start);
    compare_outcomes(&computed, &computed).expect("equal");

    let mut signed = computed.clone();
    signed[0].offending_seqs = vec![unlinked + 1];
    match compare_outcomes(&signed, &computed) {
        Err(OutcomeMismatch::Field { index: 0, rule, field, .. }) => {
            assert_eq!((rule.as_str(), field.as_str()), ("audit-linkage", "offending_seqs[0]"));
        }
        other => panic!("{other:?}"),
    }
    let mut signed = computed.clone();
    signed[1].passed = true;
    signed[1].violations = 0;
    let e = compare_outcomes(&signed, &computed).expect_err("differs");
    assert_eq!(
        e.to_string(),
        "rule replay-blocked (position 1): passed is true in the report but false when recomputed"
    );
    assert_eq!(compare_outcomes(&computed[1..], &computed), Err(OutcomeMismatch::Count { signed: 5, computed: 6 }));
}
