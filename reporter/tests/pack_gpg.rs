//! `manifest.json.asc` of a built pack against real GnuPG (DESIGN §5): a
//! regulator imports the ledger's exported certificate and runs
//! `gpg --verify manifest.json.asc manifest.json`. GnuPG is required: if
//! `gpg` is missing the test fails; run `scripts/test`, which installs it.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;
use evident_ledger::pgp::PgpSigner;
use evident_verify::manifest::files;

fn gpg(home: &Path, args: &[&str]) -> Output {
    match Command::new("gpg")
        .env("GNUPGHOME", home)
        .args(["--batch", "--no-tty", "--no-auto-key-retrieve", "--no-autostart"])
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`gpg` is not on PATH; this test needs real GnuPG: run scripts/test, which installs gnupg")
        }
        Err(e) => panic!("running gpg failed: {e}"),
    }
}

#[test]
fn gpg_verifies_the_pack_manifest_and_rejects_a_changed_byte() {
    let d = day("2026-06-01");
    let fx = Fixture::new(at(d, 60));
    busy_day(&fx, d, 1);
    let now = at(d, 86_400 + 900);
    let pack = evident_reporter::build_day(&fx.ledger, &fx.config(), d, now).expect("build");

    // The certificate the ledger exports at `evident init`.
    let key = ledger_key();
    let signer =
        PgpSigner::from_seed(key.seed(), &format!("Evident ledger {ORIGIN}"), evident_ledger::pgp_creation_time())
            .expect("pgp signer");
    assert_eq!(pack.manifest.pgp_fingerprint, signer.fingerprint());

    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("gnupg");
    std::fs::create_dir(&home).expect("GNUPGHOME");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let cert = tmp.path().join("ledger-cert.asc");
    std::fs::write(&cert, signer.cert_armored().expect("cert")).expect("write cert");
    let import = gpg(&home, &["--import", cert.to_str().expect("path")]);
    assert!(import.status.success(), "gpg --import: {}", String::from_utf8_lossy(&import.stderr));

    let asc = pack.dir.join(files::MANIFEST_ASC);
    let manifest = pack.dir.join(files::MANIFEST);
    let ok = gpg(&home, &["--verify", asc.to_str().expect("path"), manifest.to_str().expect("path")]);
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "gpg --verify failed: {stderr}");
    assert!(stderr.contains("Good signature"), "{stderr}");
    assert!(stderr.contains(&pack.manifest.pgp_fingerprint[24..]), "signed by the ledger key: {stderr}");

    // One changed byte of the manifest: gpg refuses.
    let mut bytes = std::fs::read(&manifest).expect("manifest");
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    let tampered = tmp.path().join("manifest.json");
    std::fs::write(&tampered, &bytes).expect("write");
    let bad = gpg(&home, &["--verify", asc.to_str().expect("path"), tampered.to_str().expect("path")]);
    assert!(!bad.status.success(), "gpg accepted a changed manifest: {}", String::from_utf8_lossy(&bad.stderr));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("BAD signature"));

    // The signature in the tar is the same file.
    check_pack(&pack.dir, &pack.tar, None);
}
