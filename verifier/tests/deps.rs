//! The regulator's binary must stay small and offline: its dependency tree
//! contains no async runtime, database, cloud SDK, HTTP stack or OpenSSL.

use std::process::Command;

const FORBIDDEN: &[&str] = &["tokio", "rusqlite", "aws-", "hyper", "reqwest", "openssl", "libsqlite3"];

fn tree(args: &[&str]) -> String {
    tree_of("evident-verify", args)
}

fn tree_of(package: &str, args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "-p", package, "-e", "normal", "--prefix", "none", "--offline"])
        .args(args)
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8")
}

fn assert_clean(listing: &str, what: &str) {
    let crates: Vec<&str> = listing.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(crates.len() > 10, "{what}: suspiciously short dependency list");
    for c in &crates {
        for f in FORBIDDEN {
            assert!(!c.starts_with(f), "{what} depends on forbidden crate {c}");
        }
    }
}

#[test]
fn library_has_no_forbidden_dependencies() {
    assert_clean(&tree(&["--no-default-features"]), "evident-verify (library)");
}

#[test]
fn binary_has_no_forbidden_dependencies() {
    assert_clean(&tree(&[]), "evident-verify (with cli)");
}

#[test]
fn the_check_can_fail() {
    // The ledger legitimately uses SQLite; the scan must see it there.
    let ledger = tree_of("evident-ledger", &[]);
    assert!(ledger.lines().any(|l| l.starts_with("rusqlite")), "scan missed rusqlite in evident-ledger");
}
