mod common;
use common::*;
use evident_ledger::Submission;
#[test]
#[ignore]
fn make_big() {
    let n: usize = std::env::var("N").unwrap().parse().unwrap();
    let out = std::path::PathBuf::from(std::env::var("OUT").unwrap());
    let d = day("2026-08-01");
    let fx = Fixture::new(at(d, 60));
    let mut i = 0;
    while i < n {
        let batch: Vec<Submission> = (i..(i + 2000).min(n)).map(|k| {
            let mut b = example("tool_call");
            b["task_id"] = serde_json::json!(format!("task-{k}"));
            let rec = evident_verify::leaf::Record { id: format!("bulk-{k}"), kind: "tool_call".into(), producer: "legacy-batch".into(), at: "2026-08-01T01:00:00Z".into(), body: b };
            Submission::unsigned(rec)
        }).collect();
        fx.set_time(at(d, 3600 + (i as i64) / 100));
        for r in fx.ledger.append_batch(batch) { r.expect("append"); }
        i += 2000;
    }
    fx.set_time(now());
    let _ = std::fs::remove_dir_all(&out);
    std::process::Command::new("cp").args(["-a", fx.dir.path().to_str().unwrap(), out.to_str().unwrap()]).status().unwrap();
}
