//! The `evident` CLI as a script in another language would use it: exit
//! codes, JSON Lines in, `--json` out (parsed into test-local types).

use std::io::Write;
use std::process::{Command, Stdio};

use serde::Deserialize;

const BIN: &str = env!("CARGO_BIN_EXE_evident");

#[derive(Deserialize)]
struct Line {
    line: usize,
    ok: bool,
    #[serde(default)]
    receipt: Option<ReceiptOut>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct ReceiptOut {
    seq: u64,
    leaf_hash: String,
}

fn evident(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(dir.join("evident.toml"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run evident");
    if let Some(s) = stdin {
        child.stdin.take().expect("stdin").write_all(s.as_bytes()).expect("write");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn unsigned_line(id: &str, run: &str) -> String {
    serde_json::json!({"id": id, "kind": "invariant_result", "producer": "legacy-batch", "at": "2026-11-21T09:30:12Z",
        "body": {"invariant_id": "INV-014", "severity": "P0", "status": "pass", "verification_command": "make verify",
                 "evidence_hash": format!("sha256:{}", "ab".repeat(32)), "duration_ms": 12, "run_id": run}})
    .to_string()
}

#[test]
fn init_append_prove_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (code, out, err) = evident(
        d,
        &[
            "--json",
            "init",
            "--dir",
            d.to_str().expect("utf8"),
            "--origin",
            "cli.test/ledger",
            "--unsigned-producer",
            "legacy-batch",
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    let init: serde_json::Value = serde_json::from_str(out.trim()).expect("init json");
    assert!(init["verifier_key"].as_str().expect("vkey").starts_with("cli.test/ledger+"));
    assert!(std::fs::read_to_string(d.join("ledger-cert.asc")).expect("cert").contains("BEGIN PGP PUBLIC KEY BLOCK"));

    // JSON Lines: good lines get receipts, bad lines get precise errors and block nothing.
    let input = [
        unsigned_line("a", "run-a"),
        "{not json".to_string(),
        unsigned_line("b", "run-b"),
        unsigned_line("c", "bad id with spaces"),
        String::new(),
        unsigned_line("a", "run-a"),
    ]
    .join("\n");
    let (code, out, _) = evident(d, &["--json", "append"], Some(&input));
    assert_eq!(code, 1, "some lines were refused: exit 1");
    let lines: Vec<Line> = out.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert_eq!(lines.len(), 5);
    let by_line = |n: usize| lines.iter().find(|l| l.line == n).expect("line");
    assert!(by_line(1).ok && by_line(3).ok && by_line(6).ok);
    assert!(!by_line(2).ok && by_line(2).error.as_deref().expect("err").contains("malformed"));
    assert!(by_line(4).error.as_deref().expect("err").contains("run_id"));
    assert_eq!(
        by_line(1).receipt.as_ref().map(|r| r.seq),
        by_line(6).receipt.as_ref().map(|r| r.seq),
        "retry returns the first receipt"
    );
    assert_eq!(by_line(1).receipt.as_ref().expect("r").leaf_hash.len(), 64);

    let (code, out, _) = evident(d, &["--json", "checkpoint"], None);
    assert_eq!(code, 0);
    let cp: serde_json::Value = serde_json::from_str(out.trim()).expect("cp json");
    assert_eq!(cp["size"], 2);

    let receipt = d.join("r.json");
    let (code, _, err) = evident(d, &["prove", "--seq", "1", "--out", receipt.to_str().expect("utf8")], None);
    assert_eq!(code, 0, "{err}");
    let r = evident_verify::receipt::Receipt::parse(&std::fs::read(&receipt).expect("read")).expect("receipt");
    let key = evident_verify::note::VerifierKey::parse(init["verifier_key"].as_str().expect("vkey")).expect("key");
    r.verify(&[key], Some("cli.test/ledger")).expect("receipt verifies offline");

    let (code, out, _) = evident(d, &["--json", "verify-db"], None);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = evident(d, &["--json", "stats"], None);
    assert_eq!(code, 0);
    let st: serde_json::Value = serde_json::from_str(out.trim()).expect("stats");
    assert_eq!(st["size"], 2);

    // Usage errors exit 2.
    let (code, _, _) = evident(d, &["prove"], None);
    assert_eq!(code, 2);
    let (code, _, err) = Command::new(BIN)
        .args(["--config", "/nonexistent/evident.toml", "stats"])
        .output()
        .map(|o| (o.status.code().unwrap_or(-1), (), String::from_utf8_lossy(&o.stderr).into_owned()))
        .expect("run");
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/evident.toml"), "{err}");
}
