//! A simulated workload: AI agents propose actions, humans approve them,
//! the gateway authorizes, adapters execute, and attestations, invariant
//! results, guardrail events and tool calls are recorded, all linked by
//! `decision_hash`, `token_jti`, `authorization_id` and `approval_id`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use anyhow::{Context, Result};
use evident_ledger::{AppendReceipt, Clock, Ledger, LedgerOptions, Signer};
use evident_verify::note::SignerKey;
use evident_verify::ts::Timestamp;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// `sha256:<hex>` of a string, for realistic content hashes.
pub fn h(s: &str) -> String {
    format!("sha256:{:x}", Sha256::digest(s.as_bytes()))
}

/// A 40-hex git commit id derived from a string.
pub fn git_sha(s: &str) -> String {
    format!("{:x}", Sha256::digest(s.as_bytes()))[..40].to_string()
}

/// A UUID-shaped id derived from a string.
pub fn uuid(s: &str) -> String {
    let x = format!("{:x}", Sha256::digest(s.as_bytes()));
    format!("{}-{}-4{}-a{}-{}", &x[0..8], &x[8..12], &x[13..16], &x[17..20], &x[20..32])
}

/// A ledger clock the simulation drives.
#[derive(Clone, Debug)]
pub struct SimClock(Arc<AtomicI64>);

impl SimClock {
    /// A clock set to `t`.
    pub fn new(t: Timestamp) -> SimClock {
        SimClock(Arc::new(AtomicI64::new(t.0)))
    }

    /// The clock for [`LedgerOptions::clock`].
    pub fn clock(&self) -> Clock {
        let c = self.0.clone();
        Clock::from_fn(move || Timestamp(c.load(Ordering::SeqCst)))
    }

    /// Current simulated time.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }

    /// Moves the clock to `t`.
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::SeqCst);
    }

    /// Advances by `secs` seconds.
    pub fn advance(&self, secs: f64) {
        self.0.fetch_add((secs * 1e6) as i64, Ordering::SeqCst);
    }

    /// RFC 3339 with milliseconds, `secs` from now (may be negative).
    pub fn rfc3339(&self, offset_secs: f64) -> String {
        let t = Timestamp(self.now().0 + (offset_secs * 1e6) as i64);
        t.to_datetime().map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()).unwrap_or_default()
    }
}

/// The services that produce records in the simulation, each with its key.
#[derive(Debug)]
pub struct Producers {
    /// The execution gateway (authorizations).
    pub gateway: Signer,
    /// The human approval service (approvals).
    pub approvals: Signer,
    /// The agent runtime (attestations, tool calls, guardrail events).
    pub agents: Signer,
    /// The deployment adapter (executions).
    pub adapter: Signer,
    /// CI (invariant results, holds).
    pub ci: Signer,
}

/// Deterministic demo keys (never use these in production).
pub fn demo_key(name: &str) -> SignerKey {
    let seed: [u8; 32] = Sha256::digest(format!("evident demo key {name}").as_bytes()).into();
    SignerKey::from_seed(name, &seed).unwrap_or_else(|_| unreachable_key())
}

#[allow(clippy::panic)]
fn unreachable_key() -> SignerKey {
    panic!("demo key names are valid")
}

impl Producers {
    /// Creates the producers and registers their keys in the ledger.
    pub fn register(ledger: &Ledger) -> Result<Producers> {
        let make = |name: &str| -> Result<Signer> {
            let k = demo_key(name);
            ledger
                .add_key(name, &k.verifier(), Some("2020-01-01T00:00:00Z"))
                .with_context(|| format!("registering {name}"))?;
            Ok(Signer::new(k)?)
        };
        Ok(Producers {
            gateway: make("exec-gateway")?,
            approvals: make("approval-svc")?,
            agents: make("agent-runtime")?,
            adapter: make("promotion-adapter")?,
            ci: make("ci-invariants")?,
        })
    }
}

/// What to get wrong in one flow (the seeded violations).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Execute without any authorization (out-of-band execution).
    pub execute_without_authorization: bool,
    /// Reuse the token_jti of this earlier flow number.
    pub reuse_jti_of: Option<u64>,
    /// Record the approval this many seconds after the decision.
    pub approval_delay_secs: Option<f64>,
}

/// Appends one signed record, advancing the clock a little first.
pub fn put(ledger: &Ledger, clock: &SimClock, s: &Signer, id: &str, kind: &str, body: Value) -> Result<AppendReceipt> {
    clock.advance(0.35);
    let sub = s.sign(id, kind, &clock.rfc3339(0.0), body).with_context(|| format!("signing {kind} {id}"))?;
    ledger.append(sub).with_context(|| format!("appending {kind} {id}"))
}

/// One agent action from proposal to attestation. Returns the receipts.
pub fn agent_action(
    ledger: &Ledger,
    clock: &SimClock,
    p: &Producers,
    day: &str,
    n: u64,
    f: Faults,
) -> Result<Vec<AppendReceipt>> {
    let mut out = Vec::new();
    let key = format!("{day}-{n}");
    let agent = ["codex-cli-v2.1.0", "release-agent-v0.9.3", "sre-copilot-v1.4.0"][(n % 3) as usize];
    let model = ["claude-sonnet-4-20250514", "gpt-4.1-2025-04-14"][(n % 2) as usize];
    let scope =
        ["promotion:prod/payments-api", "promotion:prod/ledger-api", "migration:prod/payments-db"][(n % 3) as usize];
    let decision_hash = h(&format!("decision {key}"));
    let prompt_hash = h(&format!("prompt {key}"));
    let approval_id = uuid(&format!("approval {key}"));
    let authz = format!("authz-{}", &uuid(&format!("authz {key}"))[..13]);
    let jti = match f.reuse_jti_of {
        Some(m) => uuid(&format!("jti {day}-{m}")),
        None => uuid(&format!("jti {key}")),
    };
    let identity = json!({"spiffe_id": "spiffe://prod.bank.example/ns/promotion/sa/promotion-adapter",
                          "agent_id": agent, "pipeline_id": format!("promote-{n}"), "region": "af-south-1", "env_tier": "prod"});
    let approver =
        ["amara.banda@bank.example", "joseph.phiri@bank.example", "grace.mwale@bank.example"][(n % 3) as usize];

    // The agent proposes: a tool call that needs approval.
    out.push(put(
        ledger,
        clock,
        &p.agents,
        &format!("tool-{key}"),
        "tool_call",
        json!({
            "agent_id": agent, "tool": "deploy_production", "risk_level": "HIGH",
            "prompt_version_hash": prompt_hash, "outcome": "queued", "approval_id": approval_id,
            "task_id": format!("task-{n}")
        }),
    )?);
    // A human approves.
    clock.advance(8.0);
    let delay = f.approval_delay_secs.unwrap_or(2.5);
    let approved_at = clock.rfc3339(-delay);
    let requested_at = clock.rfc3339(-delay - 20.0);
    clock.advance(0.0);
    out.push(put(ledger, clock, &p.approvals, &format!("approval-{key}"), "approval", json!({
        "approval_id": approval_id, "agent_id": agent, "model_version": model, "prompt_hash": prompt_hash,
        "action": "deploy_production", "action_scope": scope, "risk_level": "HIGH", "decision_hash": decision_hash,
        "approver": approver, "approver_role": "release-manager", "method": "INLINE_APPROVAL", "decision": "approved",
        "requested_at": requested_at, "approved_at": approved_at
    }))?);
    // The gateway authorizes with a one-time token.
    if !f.execute_without_authorization {
        out.push(put(
            ledger,
            clock,
            &p.gateway,
            &format!("authorization-{key}"),
            "authorization",
            json!({
                "authorization_id": authz, "decision_hash": decision_hash, "token_jti": jti, "verdict": "allow",
                "policy_bundle_hash": h("policy bundle 2026.11"), "enforcement_epoch": 42, "action_scope": scope,
                "execution_identity": identity, "approval_id": approval_id
            }),
        )?);
    }
    // The adapter executes.
    for phase in ["started", "completed"] {
        out.push(put(
            ledger,
            clock,
            &p.adapter,
            &format!("execution-{key}-{phase}"),
            "execution",
            json!({
                "execution_id": format!("exec-{key}"), "authorization_id": authz, "phase": phase, "action_scope": scope,
                "execution_identity": identity, "decision_hash": decision_hash, "token_jti": jti
            }),
        )?);
        clock.advance(30.0);
    }
    // The agent attests to what it did, with provenance.
    out.push(put(ledger, clock, &p.agents, &format!("attestation-{key}"), "ai_attestation", json!({
        "agent_id": agent, "model_version": model, "prompt_hash": prompt_hash, "approver": approver,
        "approved_at": approved_at, "approval_method": "INLINE_APPROVAL", "approval_id": approval_id,
        "provenance": {"repo": "https://git.bank.example/platform/payments", "repo_commit_sha": git_sha(&key),
                       "branch": "main", "context_files": [{"path": "deploy/payments-api.yaml", "hash": h(&format!("ctx {key}"))}]}
    }))?);
    Ok(out)
}

/// Nightly invariant results from CI; `fail_p0` makes one P0 invariant fail.
pub fn invariants(
    ledger: &Ledger,
    clock: &SimClock,
    p: &Producers,
    day: &str,
    fail_p0: bool,
) -> Result<Vec<AppendReceipt>> {
    let mut out = Vec::new();
    for (i, (inv, sev)) in [("INV-014", "P0"), ("INV-105", "P1"), ("INV-115", "P0-AI")].iter().enumerate() {
        let status = if fail_p0 && i == 0 { "fail" } else { "pass" };
        out.push(put(
            ledger,
            clock,
            &p.ci,
            &format!("inv-{day}-{inv}"),
            "invariant_result",
            json!({
                "invariant_id": inv, "severity": sev, "status": status,
                "verification_command": format!("scripts/audit/verify_{}.sh", inv.to_lowercase().replace('-', "_")),
                "evidence_hash": h(&format!("evidence {day} {inv}")), "duration_ms": 400 + 37 * i as u64,
                "run_id": format!("ci-{day}-0100")
            }),
        )?);
    }
    Ok(out)
}

/// A guardrail redaction event.
pub fn guardrail(ledger: &Ledger, clock: &SimClock, p: &Producers, day: &str, n: u64) -> Result<AppendReceipt> {
    put(
        ledger,
        clock,
        &p.agents,
        &format!("guardrail-{day}-{n}"),
        "guardrail_event",
        json!({
            "agent_id": "sre-copilot-v1.4.0", "event_type": "redaction", "rule": "pii_masking", "action_taken": "masked",
            "reason": "agent output contained national id patterns; masked before logging", "redaction_count": 2
        }),
    )
}

/// Opens options for a demo ledger with a simulated clock.
pub fn options(path: &std::path::Path, origin: &str, key: SignerKey, clock: &SimClock) -> LedgerOptions {
    let mut o = LedgerOptions::new(path, origin, key);
    o.clock = clock.clock();
    o
}
