//! The compliance rules in the pack: a day with one seeded violation per
//! rule reports exactly those seqs under exactly those rules (history from
//! earlier days included), and a clean day passes every default rule.
//! Rule failures are evidence, not errors: the pack is still built and
//! anchored.

mod common;

use std::collections::BTreeMap;

use common::*;
use evident_reporter::ReporterConfig;
use evident_reporter::pack;
use evident_verify::manifest::{Report, files};
use serde_json::{Value, json};

const D1: &str = "2026-05-04";
const D2: &str = "2026-05-05";

fn outcomes(r: &Report) -> BTreeMap<String, (bool, u64, Vec<u64>)> {
    r.rules.iter().map(|o| (o.id.clone(), (o.passed, o.applicable, o.offending_seqs.clone()))).collect()
}

/// The shipped rules, with `approval_id` added to the attestation rule:
/// every field the default rule requires is also required by the
/// ai_attestation schema, so the ledger refuses any attestation the default
/// rule could flag; an operator's stricter rules file can.
fn stricter_rules() -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(evident_reporter::config::DEFAULT_RULES).expect("default rules");
    let rules = v["rules"].as_array_mut().expect("rules");
    let att = rules.iter_mut().find(|r| r["id"] == "attestation-complete").expect("attestation rule");
    att["fields"].as_array_mut().expect("fields").push(Value::from("approval_id"));
    serde_json::to_vec_pretty(&v).expect("json")
}

#[test]
fn seeded_violations_are_named_by_seq_and_a_clean_day_passes() {
    let fx = Fixture::new(at(day(D1), 60));
    // Day 1: compliant, with a production hold that no execution breaks.
    let clean = busy_day(&fx, day(D1), 2);
    let hold = "hold-quiet";
    fx.append_at(at(day(D1), 75_000), DEPLOY, "hq-s", "hold", hold_body(hold, "start", "promotion:prod/*"));
    fx.append_at(at(day(D1), 76_000), DEPLOY, "hq-e", "hold", hold_body(hold, "end", "promotion:prod/*"));

    // Day 2: normal flows around one violation of each rule.
    let d2 = day(D2);
    flow(&fx, d2, 1000, "ok-a");
    // An execution whose authorization never happened.
    let no_authz = fx.append_at(
        at(d2, 2000),
        DEPLOY,
        "x-ghost",
        "execution",
        execution_body("exec-ghost", "authz-ghost", "started", PROD),
    );
    // A token replayed: yesterday's allowed jti allowed again today.
    let replay = fx.append_at(
        at(d2, 3000),
        AUTHZ,
        "authz-replay",
        "authorization",
        authorization_body("authz-replay", &format!("jti-{D1}-0"), "allow", PROD),
    );
    // A denied replay is evidence the block worked, not a violation.
    fx.append_at(
        at(d2, 3001),
        AUTHZ,
        "authz-denied",
        "authorization",
        authorization_body("authz-denied", &format!("jti-{D1}-1"), "deny", PROD),
    );
    // An approval recorded 60 s after the decision.
    let late = fx.append_at(at(d2, 4060), APPROVALS, "appr-late", "approval", approval_body("appr-late", at(d2, 4000)));
    // A failing P0 invariant (a failing P1 is not one).
    let p0 = fx.append_at(at(d2, 5000), CI, "inv-p0", "invariant_result", invariant_body("ci-p0", "P0", "fail"));
    fx.append_at(at(d2, 5001), CI, "inv-p1", "invariant_result", invariant_body("ci-p1", "P1", "fail"));
    // An execution during a production hold (properly authorized).
    fx.append_at(at(d2, 6000), DEPLOY, "h-s", "hold", hold_body("hold-incident", "start", "promotion:prod/*"));
    fx.append_at(
        at(d2, 6001),
        AUTHZ,
        "authz-h",
        "authorization",
        authorization_body("authz-h", "jti-h", "allow", PROD),
    );
    let in_hold =
        fx.append_at(at(d2, 6002), DEPLOY, "x-h", "execution", execution_body("exec-h", "authz-h", "started", PROD));
    fx.append_at(at(d2, 6100), DEPLOY, "h-e", "hold", hold_body("hold-incident", "end", "promotion:prod/*"));
    // After the hold ends, the same action is fine.
    fx.append_at(
        at(d2, 6200),
        AUTHZ,
        "authz-h2",
        "authorization",
        authorization_body("authz-h2", "jti-h2", "allow", PROD),
    );
    fx.append_at(at(d2, 6201), DEPLOY, "x-h2", "execution", execution_body("exec-h2", "authz-h2", "started", PROD));
    // An attestation that does not name its approval.
    let incomplete =
        fx.append_at(at(d2, 7000), AGENT, "att-bare", "ai_attestation", attestation_body(None, at(d2, 6990)));
    flow(&fx, d2, 8000, "ok-b");

    let now = at(d2, 86_400 + 600);
    fx.set_time(now);
    let dir = fx.dir.path();
    std::fs::write(dir.join("strict.rules.json"), stricter_rules()).expect("rules file");
    let toml = format!(
        "ledger = {:?}\npacks_dir = \"strict-packs\"\nrules = \"strict.rules.json\"\n[anchor]\nkind = \"fs\"\ndir = \"worm\"\n",
        fx.ledger_config
    );
    let cfg = ReporterConfig::parse(&toml, None, dir, &|_| None).expect("config");
    let reporter = fx.reporter(cfg);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let done = rt.block_on(reporter.build_missing(now)).expect("rule failures are not errors");
    assert_eq!(done.len(), 2);

    let day1 = read_report(&done[0].pack_dir);
    for (id, (passed, applicable, seqs)) in outcomes(&day1) {
        assert!(passed && seqs.is_empty(), "{D1}: {id} should pass");
        assert!(applicable > 0, "{D1}: {id} applies to something");
    }
    assert!(done[0].rules_failed.is_empty());

    let day2 = read_report(&done[1].pack_dir);
    let got = outcomes(&day2);
    let expected: BTreeMap<&str, Vec<u64>> = [
        ("audit-linkage", vec![no_authz]),
        ("replay-blocked", vec![replay]),
        ("no-execution-during-hold", vec![in_hold]),
        ("attestation-complete", vec![incomplete]),
        ("approval-within-30s", vec![late]),
        ("no-failing-p0-invariants", vec![p0]),
    ]
    .into_iter()
    .collect();
    assert_eq!(got.len(), expected.len());
    for (id, seqs) in &expected {
        let (passed, _, offending) = &got[*id];
        assert!(!passed, "{id} fails");
        assert_eq!(offending, seqs, "{id} names exactly the seeded entry");
    }
    assert_eq!(
        done[1].rules_failed,
        day2.rules.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        "every rule failed once, in rules-file order"
    );
    // Counts and percentages stay honest: e.g. 4 allowed authorizations
    // (2 flows, the replay, 2 around the hold), one violation.
    let replay_rule = day2.rules.iter().find(|r| r.id == "replay-blocked").expect("rule");
    assert_eq!((replay_rule.applicable, replay_rule.violations), (5, 1));
    assert_eq!(replay_rule.compliant_per_mille, Some(800));

    // The human report shows the offending entries.
    let html = std::fs::read_to_string(done[1].pack_dir.join(files::REPORT_HTML)).expect("html");
    for needle in ["exec-ghost", "authz-replay", "inv-p0", "exec-h", "att-bare", "appr-late"] {
        assert!(html.contains(needle), "report.html shows {needle}");
    }
    // The pack carries the stricter rules file verbatim, and anchors fine.
    assert_eq!(std::fs::read(done[1].pack_dir.join(files::RULES)).expect("rules"), stricter_rules());
    assert_eq!(done[1].anchors.len(), 2);
    check_pack(&done[1].pack_dir, &done[1].tar, Some(&done[0].pack_dir));
    // The regulator's verifier recomputes the same outcomes (with the
    // replayed token's history from day 1).
    assert_eq!(verify_chain_with_verifier(&fx.dir.path().join("strict-packs")), 2);
    let _ = clean;

    // The same clean day under the shipped default rules passes them all.
    let default_cfg = ReporterConfig::parse(
        &format!("ledger = {:?}\npacks_dir = \"default-packs\"\n", fx.ledger_config),
        None,
        dir,
        &|_| None,
    )
    .expect("config");
    let p = evident_reporter::build_day(&fx.ledger, &default_cfg, day(D1), now).expect("build");
    assert!(p.rules_failed.is_empty());
    let r = read_report(&p.dir);
    assert_eq!(
        r.rules.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
        [
            "audit-linkage",
            "replay-blocked",
            "no-execution-during-hold",
            "attestation-complete",
            "approval-within-30s",
            "no-failing-p0-invariants"
        ]
    );
    assert!(r.rules.iter().all(|o| o.passed && o.applicable > 0 && o.compliant_per_mille == Some(1000)));
    assert_eq!(
        std::fs::read(p.dir.join(files::RULES)).expect("rules"),
        evident_reporter::config::DEFAULT_RULES,
        "rules.json is the shipped file, byte for byte"
    );
}

/// A day of several times the builder's parse chunk (4,096 leaves): the
/// pack holds every leaf in ledger order, rules name entries deep in later
/// chunks by their exact seqs, and the next day, built on its own, reads
/// that day back as history in chunks (a link and a replay across days).
#[test]
fn a_day_of_many_chunks_and_its_history() {
    let fx = Fixture::new(at(day(D1), 60));
    let d1 = day(D1);
    let tools = |from: usize, n: usize| -> Vec<(String, Value)> {
        (from..from + n)
            .map(|i| {
                let mut t = example("tool_call");
                t["task_id"] = json!(format!("task-{i}"));
                (format!("tool-{i}"), t)
            })
            .collect()
    };
    fx.append_many_at(at(d1, 100), AGENT, "tool_call", tools(0, 4_500));
    fx.append_at(
        at(d1, 200),
        AUTHZ,
        "authz-big",
        "authorization",
        authorization_body("authz-big", "jti-big", "allow", PROD),
    );
    fx.append_many_at(at(d1, 300), AGENT, "tool_call", tools(4_500, 4_000));
    let p0 = fx.append_at(at(d1, 400), CI, "inv-big", "invariant_result", invariant_body("ci-big", "P0", "fail"));
    fx.append_many_at(at(d1, 500), AGENT, "tool_call", tools(8_500, 600));
    let d2 = day(D2);
    // Yesterday's authorization executed today, and its token replayed.
    fx.append_at(at(d2, 100), DEPLOY, "x-big", "execution", execution_body("exec-big", "authz-big", "started", PROD));
    let replay = fx.append_at(
        at(d2, 200),
        AUTHZ,
        "authz-again",
        "authorization",
        authorization_body("authz-again", "jti-big", "allow", PROD),
    );
    let now = at(d2, 86_400 + 600);
    fx.set_time(now);
    let cfg = fx.config();
    // Separate calls: day 2 starts from an empty history and reads day 1.
    let one = pack::build_day(&fx.ledger, &cfg, d1, now).expect("day 1");
    let two = pack::build_day(&fx.ledger, &cfg, d2, now).expect("day 2");
    assert!(one.manifest.end - one.manifest.start > 9_100, "the day spans three chunks");

    let packed =
        zstd::decode_all(std::fs::read(one.dir.join(files::ENTRIES)).expect("entries").as_slice()).expect("zstd");
    let mut leaves = Vec::new();
    fx.ledger
        .for_each_leaf(one.manifest.start, one.manifest.end, |_, _, leaf| {
            leaves.extend_from_slice(leaf);
            leaves.push(b'\n');
            Ok(())
        })
        .expect("leaves");
    assert!(packed == leaves, "entries.jsonl is every leaf of the day, in order, one per line");

    let failing = |r: &Report| -> BTreeMap<String, Vec<u64>> {
        outcomes(r).into_iter().filter(|(_, o)| !o.0).map(|(id, o)| (id, o.2)).collect()
    };
    let want1: BTreeMap<String, Vec<u64>> = [("no-failing-p0-invariants".to_string(), vec![p0])].into();
    assert_eq!(failing(&read_report(&one.dir)), want1);
    // The execution links to day 1's authorization; only the replay fails.
    let want2: BTreeMap<String, Vec<u64>> = [("replay-blocked".to_string(), vec![replay])].into();
    assert_eq!(failing(&read_report(&two.dir)), want2);
    check_pack(&one.dir, &one.tar, None);
    check_pack(&two.dir, &two.tar, Some(&one.dir));
}
