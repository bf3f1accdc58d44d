//! `report.html` rendering: determinism, content, escaping of untrusted
//! records, and that the page references nothing outside itself.
//!
//! Set `EVIDENT_HTML_SAMPLE=/path/report.html` to also write the sample page
//! for a look in a browser.

use std::collections::BTreeMap;

use evident_reporter::html::{MAX_ROWS_PER_RULE, render};
use evident_verify::leaf::{Entry, Record};
use evident_verify::manifest::{Counts, FileInfo, Manifest, PreviousPack, Report};
use evident_verify::rules::RuleOutcome;
use serde_json::{Value, json};

const H1: &str = "3b4f8a1c9d2e7f6051a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7a8";
const H2: &str = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d";

fn counts() -> Counts {
    let by_kind = [
        ("ai_attestation", 31),
        ("approval", 57),
        ("authorization", 412),
        ("execution", 655),
        ("hold", 4),
        ("invariant_result", 240),
        ("tool_call", 1873),
    ];
    let by_producer = [
        ("agent-tooling", 31),
        ("approval-service", 57),
        ("change-bot", 4),
        ("ci-invariants", 240),
        ("execution-adapter", 655),
        ("execution-gateway", 412),
        ("tool-proxy", 1873),
    ];
    let map = |xs: &[(&str, u64)]| xs.iter().map(|(k, n)| (k.to_string(), *n)).collect::<BTreeMap<_, _>>();
    Counts { by_kind: map(&by_kind), by_producer: map(&by_producer) }
}

fn manifest() -> Manifest {
    let files = ["checkpoint", "entries.jsonl.zst", "report.json", "rules.json"]
        .iter()
        .map(|f| (f.to_string(), FileInfo { sha256: if *f == "checkpoint" { H1 } else { H2 }.to_string(), size: 100 }))
        .collect();
    Manifest {
        format: "evident-pack/1".into(),
        origin: "ledger.symphony.zm/evidence".into(),
        day: "2026-11-21".into(),
        start: 118_204,
        end: 121_476,
        previous: Some(PreviousPack {
            day: "2026-11-20".into(),
            manifest_sha256: H2.into(),
            checkpoint: "ledger.symphony.zm/evidence\n118204\nAAAA\n".into(),
        }),
        compact_range: vec!["A".repeat(44); 7],
        counts: counts(),
        files,
        rules_sha256: H1.into(),
        ledger_key: "ledger.symphony.zm+1f2e3d4c+AVbc3sJQmWmK0C5m4LZ2xkqHnG1v5H6QqH8bXbZk2rTq".into(),
        pgp_fingerprint: "7C1E 4B2A 9F03 D5E8 6A71  0B3C 28D9 E4F1 5A6B 7C8D".into(),
        producer_keys: vec![],
        generator: "evident-reporter 0.1.0".into(),
        created_at: "2026-11-22T00:05:12.345678Z".into(),
    }
}

fn outcome(id: &str, kpi: &str, ty: &str, applicable: u64, violations: u64, seqs: &[u64]) -> RuleOutcome {
    let per_mille = (applicable > 0).then(|| (1000 * (applicable - violations) / applicable) as u32);
    serde_json::from_value(json!({
        "id": id,
        "title": format!("Title of {id}"),
        "kpi": kpi,
        "type": ty,
        "passed": violations == 0,
        "applicable": applicable,
        "violations": violations,
        "compliant_per_mille": per_mille,
        "offending_seqs": seqs,
        "offending_truncated": false,
    }))
    .expect("rule outcome")
}

/// The default rules: three KPIs pass, three fail.
fn report() -> Report {
    let mut rules = vec![
        outcome("audit-linkage", "Audit linkage", "linked", 655, 0, &[]),
        outcome("replay-blocked", "Replay blocked", "unique", 412, 2, &[119_877, 120_640]),
        outcome("no-execution-during-hold", "No execution during hold", "absent", 328, 0, &[]),
        outcome("attestation-complete", "Attestation completeness", "required", 31, 0, &[]),
        outcome("approval-within-30s", "Approval recorded within 30 s", "within", 57, 2, &[118_950, 120_433]),
        outcome("no-failing-p0-invariants", "Zero failing P0 invariants", "absent", 240, 1, &[120_012]),
    ];
    rules[0].title = "Every execution links to an earlier authorization that allowed it".into();
    rules[1].title = "No token_jti is allowed twice (denied replays are evidence the block worked)".into();
    rules[2].title = "No execution starts while a hold covering its action_scope is in force".into();
    rules[3].title =
        "Every AI attestation names the agent, model version, prompt hash, approver and approval time".into();
    rules[4].title =
        "Every approval is recorded in the ledger within 30 s of the decision (|ts - approved_at| <= 30 s)".into();
    rules[5].title = "No P0 or P0-AI invariant fails".into();
    let m = manifest();
    Report {
        format: "evident-report/1".into(),
        origin: m.origin,
        day: m.day,
        start: m.start,
        end: m.end,
        rules_sha256: m.rules_sha256,
        history_from: 0,
        rules,
        counts: m.counts,
    }
}

fn entry(seq: u64, ts: &str, kind: &str, producer: &str, id: &str, body: Value) -> (u64, Entry) {
    let rec = Record { id: id.into(), kind: kind.into(), producer: producer.into(), at: ts.into(), body };
    (seq, Entry { v: 1, seq, ts: ts.into(), rec, sig: None })
}

/// Offending entries of [`report`], except 120_433 (left to report.json).
fn entries() -> Vec<(u64, Entry)> {
    vec![
        entry(
            120_640,
            "2026-11-21T17:45:03.020781Z",
            "authorization",
            "execution-gateway",
            "authz-a0b17c55",
            json!({
                "authorization_id": "authz-a0b17c55",
                "decision_hash": "sha256:efaf3d20e6368a495d8569657996ac774313e8ec42a08ef789fd0df98b13b677",
                "token_jti": "8d1c6f0e-2b7a-4c55-9e13-5a4f0b6d7e21",
                "verdict": "allow",
                "action_scope": "promotion:prod/payments-api",
                "enforcement_epoch": 43,
            }),
        ),
        entry(
            119_877,
            "2026-11-21T14:02:11.402113Z",
            "authorization",
            "execution-gateway",
            "authz-9c41e7d2",
            json!({
                "authorization_id": "authz-9c41e7d2",
                "decision_hash": "sha256:efaf3d20e6368a495d8569657996ac774313e8ec42a08ef789fd0df98b13b677",
                "token_jti": "8d1c6f0e-2b7a-4c55-9e13-5a4f0b6d7e21",
                "verdict": "allow",
                "action_scope": "promotion:prod/payments-api",
                "approval_id": "5b0f6a2e-8c1d-4d9e-9f3a-7c2b1e0d4a61",
                "enforcement_epoch": 42,
            }),
        ),
        entry(
            118_950,
            "2026-11-21T10:03:07.118004Z",
            "approval",
            "approval-service",
            "appr-0c9e3f7a",
            json!({
                "approval_id": "0c9e3f7a-1b2d-4e5f-8a6b-9c0d1e2f3a4b",
                "agent_id": "codex-cli-v2.1.0",
                "approver": {"$commit": "uZJMwNNFN0o7gwR0sNAp4E6SQy7zjrxvMfLlbdUjhHs="},
                "decision": "approved",
                "requested_at": "2026-11-21T10:02:00.120Z",
                "approved_at": "2026-11-21T10:02:21.904Z",
                "decision_hash": "sha256:5511016ba262757082e66a8da405c52d52c3bda7675a5da296c9256092975a18",
            }),
        ),
        entry(
            120_012,
            "2026-11-21T16:00:41.907551Z",
            "invariant_result",
            "ci-invariants",
            "ci-2026-11-21-1600/INV-115",
            json!({
                "invariant_id": "INV-115",
                "severity": "P0-AI",
                "status": "fail",
                "run_id": "ci-2026-11-21-1600",
                "duration_ms": 1873,
            }),
        ),
    ]
}

fn all_passing() -> Report {
    let mut r = report();
    for o in &mut r.rules {
        o.passed = true;
        o.violations = 0;
        o.compliant_per_mille = Some(1000);
        o.offending_seqs.clear();
    }
    r
}

#[test]
fn deterministic() {
    let (m, r, e) = (manifest(), report(), entries());
    let a = render(&m, &r, &e);
    assert_eq!(a, render(&m, &r, &e));
    assert!(a.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
    assert!(a.contains("<meta charset=\"utf-8\">"));
    assert!(a.contains("name=\"viewport\""));
    assert!(a.contains("<th scope=\"col\""));
    if let Some(path) = std::env::var_os("EVIDENT_HTML_SAMPLE") {
        std::fs::write(path, &a).expect("write sample");
    }
}

#[test]
fn header_and_failing_banner() {
    let html = render(&manifest(), &report(), &entries());
    assert!(html.contains("Evident compliance report"));
    assert!(html.contains("ledger.symphony.zm/evidence"));
    assert!(html.contains("2026-11-21"));
    assert!(html.contains("3 of 6 rules failed"));
    assert!(!html.contains("compliance rules passed"));
    assert!(!html.contains("disagree"), "consistent inputs give no warning");
}

#[test]
fn all_passing_banner() {
    let html = render(&manifest(), &all_passing(), &[]);
    assert!(html.contains("All 6 compliance rules passed"));
    assert!(!html.contains("failed"));
    assert!(!html.contains("FAIL"));
}

#[test]
fn kpi_cards() {
    let mut r = report();
    r.rules[3].applicable = 0;
    r.rules[3].compliant_per_mille = None;
    let html = render(&manifest(), &r, &entries());
    let kpis = html.find("Headline KPIs").expect("KPI section");
    let rules = html.find("id=\"rules\"").expect("rules section");
    assert!(kpis < rules, "KPIs come first");
    let cards = &html[kpis..rules];
    for (name, pct) in [
        ("Audit linkage", "100.0%"),
        ("Replay blocked", "99.5%"),
        ("No execution during hold", "100.0%"),
        ("Attestation completeness", "n/a"),
        ("Approval recorded within 30 s", "96.4%"),
        ("Zero failing P0 invariants", "99.5%"),
    ] {
        let at = cards.find(name).unwrap_or_else(|| panic!("card {name}"));
        let card = &cards[at..cards[at..].find("</li>").expect("card end") + at];
        assert!(card.contains(pct), "{name}: {card}");
    }
    assert!(cards.contains("1 violation / 240 applicable"));
    assert!(cards.contains("2 violations / 57 applicable"));
    assert_eq!(cards.matches("badge pass\">PASS").count(), 3);
    assert_eq!(cards.matches("badge fail\">FAIL").count(), 3);
}

#[test]
fn offending_entries_and_key_fields() {
    let html = render(&manifest(), &report(), &entries());
    for s in [
        ">119877<",
        ">118950<",
        ">120012<",
        ">120640<",
        "2026-11-21T14:02:11.402113Z",
        "execution-gateway",
        "authz-9c41e7d2",
        "8d1c6f0e-2b7a-4c55-9e13-5a4f0b6d7e21",
        "5b0f6a2e-8c1d-4d9e-9f3a-7c2b1e0d4a61",
        "promotion:prod/payments-api",
        "2026-11-21T10:02:21.904Z",
        "INV-115",
        "P0-AI",
        "approval-within-30s",
        "within",
    ] {
        assert!(html.contains(s), "missing {s}");
    }
    // 120433 is listed in report.json but has no entry here.
    assert!(!html.contains("120433"));
    assert!(html.contains("and 1 more (see report.json)"));
    // A long hash is shortened, with the full value kept in the title.
    assert!(html.contains(
        "title=\"sha256:efaf3d20e6368a495d8569657996ac774313e8ec42a08ef789fd0df98b13b677\">sha256:efaf3d20e6368a495d856\u{2026}f98b13b677</code>"
    ));
    // A committed x-pii value is not shown as data.
    assert!(!html.contains("uZJMwNNFN0o7"));
}

#[test]
fn truncated_and_missing_entries_are_counted() {
    let mut r = report();
    let o = &mut r.rules[1];
    o.offending_seqs = (0..MAX_ROWS_PER_RULE as u64 + 5).map(|i| 118_300 + i).collect();
    o.violations = 20_000;
    o.offending_truncated = true;
    let e: Vec<_> = o
        .offending_seqs
        .iter()
        .map(|s| entry(*s, "2026-11-21T12:00:00Z", "authorization", "gw", &format!("a{s}"), json!({})))
        .collect();
    let html = render(&manifest(), &r, &e);
    assert!(html.contains(&format!("and {} more (see report.json)", 20_000 - MAX_ROWS_PER_RULE)));
    // No entries at all: the count alone.
    let html = render(&manifest(), &report(), &[]);
    assert!(html.contains("1 offending entry (see report.json)"));
    assert_eq!(html.matches("2 offending entries (see report.json)").count(), 2);
}

#[test]
fn untrusted_strings_are_escaped() {
    let evil = "<script>alert(1)</script>";
    let mut m = manifest();
    m.origin = format!("{evil}\"'&");
    m.counts.by_producer.insert(evil.into(), 1);
    let mut r = report();
    r.origin = m.origin.clone();
    r.counts = m.counts.clone();
    r.rules[1].title = evil.into();
    r.rules[1].kpi = Some(format!("<img src=x onerror=alert(1)>{evil}"));
    let mut e = entries();
    e[1].1.rec.id = evil.into();
    e[1].1.rec.producer = "\"><script>alert(2)</script>".into();
    e[1].1.rec.body["token_jti"] = json!(evil);
    e[1].1.rec.body["action_scope"] = json!("prod/\u{202E}ipa-stnemyap");
    let html = render(&m, &r, &e);
    assert!(!html.to_lowercase().contains("<script"), "{html}");
    assert!(!html.contains("<img"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
    assert!(html.contains("&quot;&gt;&lt;script&gt;alert(2)"));
    assert!(!html.contains('\u{202E}'));
    assert!(html.contains("prod/\\u{202E}ipa-stnemyap"));
}

#[test]
fn self_contained() {
    for html in [render(&manifest(), &report(), &entries()), render(&manifest(), &all_passing(), &[])] {
        let lower = html.to_lowercase();
        for bad in ["http://", "https://", "src=", "<script", "<img", "<link", "<iframe", "@import", "url("] {
            assert!(!lower.contains(bad), "found {bad}");
        }
        assert!(lower.contains("content-security-policy"));
    }
}

#[test]
fn counts_and_chain() {
    let html = render(&manifest(), &report(), &entries());
    assert!(html.contains("<code>tool-proxy</code></th><td class=\"num\">1873</td>"));
    assert!(html.contains("<code>invariant_result</code></th><td class=\"num\">240</td>"));
    assert!(html.contains("<td class=\"num\">3272</td>"), "total");
    assert!(html.contains("[118204, 121476)"));
    assert!(html.contains(&format!("tree size 121476, SHA-256 <code>{H1}</code>")));
    assert!(html.contains("7 subtree hashes"));
    assert!(html.contains(&format!("2026-11-20, manifest SHA-256 <code>{H2}</code>")));
    assert!(html.contains("evident-reporter 0.1.0"));
    assert!(html.contains("2026-11-22T00:05:12.345678Z"));
    assert!(html.contains("ledger.symphony.zm+1f2e3d4c+"));
    assert!(html.contains("7C1E 4B2A"));
    assert!(html.contains("evident-verify pack &lt;dir&gt; --key &lt;ledger verifier key&gt; --pgp-cert ledger-cert.asc --previous &lt;previous pack&gt;"));

    let mut first = manifest();
    first.previous = None;
    first.start = 0;
    let mut r = report();
    r.start = 0;
    let html = render(&first, &r, &entries());
    assert!(html.contains("first pack of this ledger"));
}

#[test]
fn inconsistent_inputs_are_flagged() {
    let mut r = report();
    r.day = "2026-11-20".into();
    let html = render(&manifest(), &r, &entries());
    assert!(html.contains("disagree on: day"));
}
