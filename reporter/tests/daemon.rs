//! The real `evident-reporter daemon`: it tries to catch up at start on a
//! ledger with two closed past days, retries on the ticks of a fast
//! schedule while another reporter holds the lock, builds both packs once
//! it is free, and stops cleanly (exit 0) on SIGTERM.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use evident_reporter::anchoring::status_path;
use evident_reporter::pack;

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let began = Instant::now();
    while !ok() {
        assert!(began.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kills the daemon if the test fails before it stops it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn daemon_catches_up_and_stops_on_sigterm() {
    let t = today();
    let days = [t - chrono::Days::new(2), t - chrono::Days::new(1)];
    let fx = Fixture::new(at(days[0], 60));
    for d in days {
        busy_day(&fx, d, 1);
    }
    fx.set_time(now());
    let toml = fx.write_reporter_toml("schedule = \"*/2 * * * * *\"\nlock_wait_seconds = 0");
    // Another reporter holds the build lock at start: the first catch-up
    // fails, and a later tick does the work.
    std::fs::create_dir_all(&fx.packs_dir).expect("packs dir");
    let lock = std::fs::File::create(fx.packs_dir.join(".reporter.lock")).expect("lock file");
    lock.lock().expect("hold the build lock");
    let log = fx.dir.path().join("daemon.stderr");
    let out = fx.dir.path().join("daemon.stdout");
    let child = Command::new(env!("CARGO_BIN_EXE_evident-reporter"))
        .arg("--config")
        .arg(&toml)
        .arg("--json")
        .arg("daemon")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&log).expect("stderr file"))
        .spawn()
        .expect("start the daemon");
    let mut daemon = Daemon(child);
    let pid = daemon.0.id();

    wait_for("the first catch-up to give up", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("another reporter is building")
    });
    assert!(pack::pack_days(&fx.packs_dir).expect("days").is_empty());
    drop(lock);
    wait_for("both packs built and anchored on a tick", Duration::from_secs(10), || {
        days.iter().all(|d| pack::tar_path(&fx.packs_dir, *d).exists() && status_path(&fx.packs_dir, *d).exists())
    });
    let mut previous = None;
    for d in days {
        let dir = pack::pack_dir(&fx.packs_dir, d);
        check_pack(&dir, &pack::tar_path(&fx.packs_dir, d), previous.as_deref());
        previous = Some(dir);
    }
    // It keeps running across ticks (every 2 s) without redoing anything.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(daemon.0.try_wait().expect("try_wait").is_none(), "the daemon is still running");
    assert_eq!(anchor_receipts(&fx.ledger).len(), 4);

    let kill = Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill -TERM");
    assert!(kill.success());
    let began = Instant::now();
    let status = loop {
        if let Some(s) = daemon.0.try_wait().expect("try_wait") {
            break s;
        }
        assert!(began.elapsed() < Duration::from_secs(5), "the daemon did not stop within 5 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&log).expect("stderr");
    assert_eq!(status.code(), Some(0), "clean exit; stderr: {stderr}");
    assert!(stderr.contains("stopping"), "{stderr}");
    let stdout = std::fs::read_to_string(&out).expect("stdout");
    let built: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(
        built.iter().map(|d| d["day"].as_str().unwrap_or_default().to_string()).collect::<Vec<_>>(),
        days.iter().map(|d| d.to_string()).collect::<Vec<_>>()
    );
}
