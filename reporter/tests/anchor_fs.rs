//! The `fs` anchor store against a real directory: write once, adopt
//! identical bytes, refuse different bytes, never leave temporary files.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use evident_reporter::anchor::{Anchor, AnchorError, AnchorStore, FsAnchor};

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Every file and directory under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            out.push(path.strip_prefix(dir).expect("under dir").display().to_string());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

fn assert_no_temp_files(dir: &Path) {
    let hidden: Vec<_> = tree(dir).into_iter().filter(|p| p.split('/').any(|c| c.starts_with('.'))).collect();
    assert!(hidden.is_empty(), "temporary files left behind: {hidden:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_adopt_refuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("anchors");
    let store = AnchorStore::from(FsAnchor::new(&root));
    store.check().await.expect("check creates the root");
    assert!(root.is_dir());
    assert_eq!(store.backend(), "fs");

    let name = "packs/2026-11-21.tar";
    assert_eq!(store.get_existing(name).await.expect("lookup"), None);

    let pack = b"pack bytes of 2026-11-21".repeat(1000);
    let first = store.put(name, &pack).await.expect("first put");
    let path = std::fs::canonicalize(root.join(name)).expect("file exists");
    assert_eq!(first.backend, "fs");
    assert_eq!(first.location, path.display().to_string());
    assert!(Path::new(&first.location).is_absolute());
    assert_eq!(first.key, name);
    assert_eq!(first.bucket, None);
    assert_eq!(first.version_id, None);
    assert_eq!(first.sha256, sha256_hex(&pack));
    assert_eq!(first.size, pack.len() as u64);
    assert!(first.anchored_at.is_some());
    assert!(!first.adopted);
    assert_eq!(std::fs::read(&path).expect("read back"), pack);

    // Read-only for everyone.
    let mode = std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode, 0o444, "anchored file mode is {mode:o}");

    // The same bytes again: a no-op returning the original receipt.
    let second = store.put(name, &pack).await.expect("re-put");
    assert!(second.adopted);
    assert_eq!(without_adopted(&second), without_adopted(&first));
    assert_eq!(store.get_existing(name).await.expect("lookup"), Some(second.clone()));

    // Different bytes: refused, naming the path; the original is untouched.
    let mut other = pack.clone();
    other[0] ^= 1;
    let err = store.put(name, &other).await.expect_err("different bytes must be refused");
    assert!(matches!(err, AnchorError::Conflict { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&first.location), "{msg}");
    assert!(msg.contains(&first.sha256), "{msg}");
    assert_eq!(std::fs::read(&path).expect("read back"), pack);
    // A shorter or empty body is refused the same way.
    let err = store.put(name, b"").await.expect_err("empty body must be refused");
    assert!(matches!(err, AnchorError::Conflict { .. }), "{err:?}");
    assert_eq!(std::fs::read(&path).expect("read back"), pack);

    assert_eq!(tree(&root), vec!["packs", "packs/2026-11-21.tar"]);
    assert_no_temp_files(&root);
}

fn without_adopted(r: &evident_reporter::anchor::AnchorReceipt) -> evident_reporter::anchor::AnchorReceipt {
    let mut r = r.clone();
    r.adopted = false;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_are_refused_before_any_io() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsAnchor::new(dir.path().join("root"));
    for name in [
        "",
        "/etc/passwd",
        "../escape",
        "packs/../../escape",
        "packs//a.tar",
        "packs/",
        "./a.tar",
        ".hidden",
        "packs/.a.tar.tmp-1",
        "a\\b",
        "with space",
    ] {
        let err = store.put(name, b"x").await.expect_err("bad name must be refused");
        assert!(matches!(err, AnchorError::InvalidName { .. }), "{name:?}: {err:?}");
        let err = store.get_existing(name).await.expect_err("bad name must be refused");
        assert!(matches!(err, AnchorError::InvalidName { .. }), "{name:?}: {err:?}");
    }
    assert!(!dir.path().join("root").exists(), "nothing may be created for a bad name");
    assert!(!dir.path().join("escape").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_a_root_that_is_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let err = FsAnchor::new(&file).check().await.expect_err("a file is not a root");
    assert!(matches!(err, AnchorError::FsRoot { .. }), "{err:?}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_of_one_name_never_replace_each_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_owned();
    let name = "checkpoints/2026-11-21";
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let store = FsAnchor::new(&root);
        // Writers 0..4 share one content, 4..8 another.
        let bytes = vec![i / 4; 100_000];
        tasks.push(tokio::spawn(async move { (bytes.clone(), store.put(name, &bytes).await) }));
    }
    let mut winners = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let (bytes, result) = t.await.expect("task");
        match result {
            Ok(r) => winners.push((bytes, r)),
            Err(AnchorError::Conflict { .. }) => refused += 1,
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(winners.len(), 4, "exactly one content wins");
    assert_eq!(refused, 4);
    let stored = std::fs::read(root.join(name)).expect("read");
    assert!(winners.iter().all(|(b, _)| *b == stored));
    assert_eq!(winners.iter().filter(|(_, r)| !r.adopted).count(), 1);
    assert_no_temp_files(&root);
}

#[test]
fn blocking_api_matches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsAnchor::new(dir.path());
    store.check_blocking().expect("check");
    let r = store.put_blocking("a/b/c.tar", b"abc").expect("put");
    assert_eq!(r.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert!(store.put_blocking("a/b/c.tar", b"abc").expect("again").adopted);
    // A directory where a file is expected is not adopted.
    let err = store.put_blocking("a/b", b"abc").expect_err("a directory is not an anchor");
    assert!(matches!(err, AnchorError::Unverifiable { .. }), "{err:?}");
    assert_no_temp_files(dir.path());
}

/// `put_file` (what the reporter uses) streams a file under the same
/// contract: written once read-only, the same bytes adopted whether given
/// as a file or in memory, different bytes refused, no temporary left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_file_streams_under_the_same_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("anchors");
    let store = AnchorStore::from(FsAnchor::new(&root));
    let name = "packs/2026-11-22.tar";
    // Larger than the copy buffer, and not a multiple of it.
    let pack: Vec<u8> = (0..1_000_003u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let src = dir.path().join("2026-11-22.tar");
    std::fs::write(&src, &pack).expect("write source");

    let first = store.put_file(name, &src).await.expect("put_file");
    assert!(!first.adopted);
    assert_eq!(first.sha256, sha256_hex(&pack));
    assert_eq!(first.size, pack.len() as u64);
    let path = std::fs::canonicalize(root.join(name)).expect("file exists");
    assert_eq!(std::fs::read(&path).expect("read back"), pack);
    let mode = std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode, 0o444, "anchored file mode is {mode:o}");

    let again = store.put_file(name, &src).await.expect("same file again");
    assert!(again.adopted);
    assert_eq!(without_adopted(&again), without_adopted(&first));
    let in_memory = store.put(name, &pack).await.expect("same bytes in memory");
    assert_eq!(without_adopted(&in_memory), without_adopted(&first));

    let mut other = pack.clone();
    other[999_999] ^= 1;
    std::fs::write(&src, &other).expect("rewrite source");
    let err = store.put_file(name, &src).await.expect_err("different bytes must be refused");
    assert!(matches!(err, AnchorError::Conflict { .. }), "{err:?}");
    assert_eq!(std::fs::read(&path).expect("read back"), pack);

    let missing = dir.path().join("missing.tar");
    let err = store.put_file("packs/2026-11-23.tar", &missing).await.expect_err("no source file");
    assert!(err.to_string().contains("missing.tar"), "{err}");
    assert_no_temp_files(&root);
}
