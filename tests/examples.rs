//! Every example runs in the test suite.

#[path = "../examples/service_append.rs"]
mod service_append;

#[path = "../examples/ai_approval_flow.rs"]
mod ai_approval_flow;

#[test]
fn service_append_runs_and_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n1 = service_append::run(dir.path()).expect("first run");
    let n2 = service_append::run(dir.path()).expect("second run: retries are safe");
    assert_eq!(n1, n2, "running the service again adds nothing");
    assert_eq!(n1, 4, "one key event and three records");
    assert!(dir.path().join("receipt.json").exists());
}

#[test]
fn ai_approval_flow_links_every_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kinds = ai_approval_flow::run(dir.path()).expect("flow");
    assert_eq!(kinds, ["tool_call", "approval", "authorization", "execution", "execution", "ai_attestation"]);
}
