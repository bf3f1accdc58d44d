//! `manifest.json.asc` against real GnuPG (DESIGN §5): what the ledger signs
//! with sequoia must be what `gpg --verify` accepts, and the regulator's
//! `evident_verify::pgp::verify_detached` must agree with gpg.
//!
//! GnuPG is required. If `gpg` is missing the tests fail: run `scripts/test`,
//! which installs it.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use evident_ledger::pgp::PgpSigner;
use evident_verify::pgp::{PgpVerifyError, verify_detached};

const SEED: [u8; 32] = [0x42; 32];
const OTHER_SEED: [u8; 32] = [0x17; 32];
const USER_ID: &str = "Evident test ledger <ledger@example.invalid>";
const CREATED: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const SIGNED: u64 = CREATED + 86_400;
const MANIFEST: &[u8] = br#"{"created_at":"2026-01-02T00:00:00Z","day":"2026-01-01","end":42,"format":1,"origin":"evident.example/test","start":0}"#;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// Runs gpg non-interactively against its own home directory. No keyserver
/// is configured in a fresh home, and `--batch --no-tty` keeps it off the
/// terminal; stdin is closed so it cannot wait for input.
fn gpg(home: &Path, args: &[&str]) -> Output {
    let out = Command::new("gpg")
        .env("GNUPGHOME", home)
        .args(["--batch", "--no-tty", "--no-auto-key-retrieve", "--no-autostart"])
        .args(args)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`gpg` is not on PATH; these tests need real GnuPG. Run scripts/test, which installs gnupg.")
        }
        Err(e) => panic!("running gpg failed: {e}"),
    }
}

/// A fresh GNUPGHOME (mode 0700, as gpg insists) inside `dir`.
fn gnupg_home(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let home = dir.join("gnupg");
    fs::create_dir(&home).expect("create GNUPGHOME");
    fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).expect("chmod 0700 GNUPGHOME");
    home
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn gpg_and_verify_detached_agree() {
    let signer = PgpSigner::from_seed(&SEED, USER_ID, at(CREATED)).expect("signer");
    let cert = signer.cert_armored().expect("cert");
    let sig = signer.sign_detached_armored(MANIFEST, at(SIGNED)).expect("sign");
    assert!(sig.starts_with("-----BEGIN PGP SIGNATURE-----"), "{sig}");

    let dir = tempfile::tempdir().expect("tempdir");
    let home = gnupg_home(dir.path());
    let (cert_path, data_path, sig_path) =
        (dir.path().join("cert.asc"), dir.path().join("manifest.json"), dir.path().join("manifest.json.asc"));
    fs::write(&cert_path, &cert).expect("write cert");
    fs::write(&data_path, MANIFEST).expect("write data");
    fs::write(&sig_path, &sig).expect("write sig");

    let import = gpg(&home, &["--import", cert_path.to_str().expect("utf-8 path")]);
    assert!(import.status.success(), "gpg --import failed: {}", stderr(&import));

    // gpg lists the imported key under the fingerprint we report.
    let list = gpg(&home, &["--with-colons", "--list-keys"]);
    assert!(list.status.success(), "gpg --list-keys failed: {}", stderr(&list));
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(listing.lines().any(|l| l.starts_with("fpr:") && l.contains(&signer.fingerprint())), "{listing}");

    let verify_args = ["--verify", sig_path.to_str().expect("utf-8 path"), data_path.to_str().expect("utf-8 path")];
    let good = gpg(&home, &verify_args);
    assert!(good.status.success(), "gpg --verify failed: {}", stderr(&good));
    assert!(stderr(&good).contains("Good signature"), "{}", stderr(&good));

    let now = at(SIGNED + 3600);
    let verified = verify_detached(cert.as_bytes(), MANIFEST, sig.as_bytes(), now).expect("verify_detached");
    assert_eq!(verified.fingerprint, signer.fingerprint());
    assert_eq!(verified.signature_time, Some(at(SIGNED)));

    // One changed byte: both must refuse.
    let mut tampered = MANIFEST.to_vec();
    tampered[10] ^= 0x01;
    fs::write(&data_path, &tampered).expect("write tampered data");
    let bad = gpg(&home, &verify_args);
    assert!(!bad.status.success(), "gpg accepted tampered data: {}", stderr(&bad));
    assert!(!stderr(&bad).contains("Good signature"), "{}", stderr(&bad));
    let err = verify_detached(cert.as_bytes(), &tampered, sig.as_bytes(), now).expect_err("tampered data accepted");
    assert!(matches!(err, PgpVerifyError::BadSignature { .. }), "{err:?}");
}

#[test]
fn verify_detached_refuses_other_key() {
    let signer = PgpSigner::from_seed(&SEED, USER_ID, at(CREATED)).expect("signer");
    let other = PgpSigner::from_seed(&OTHER_SEED, USER_ID, at(CREATED)).expect("other signer");
    assert_ne!(signer.fingerprint(), other.fingerprint());
    let cert = signer.cert_armored().expect("cert");
    let sig = other.sign_detached_armored(MANIFEST, at(SIGNED)).expect("sign");
    let err = verify_detached(cert.as_bytes(), MANIFEST, sig.as_bytes(), at(SIGNED + 1)).expect_err("other key");
    assert!(matches!(err, PgpVerifyError::OtherKey { .. }), "{err:?}");
}

#[test]
fn verify_detached_refuses_garbage_and_misuse() {
    let signer = PgpSigner::from_seed(&SEED, USER_ID, at(CREATED)).expect("signer");
    let cert = signer.cert_armored().expect("cert");
    let sig = signer.sign_detached_armored(MANIFEST, at(SIGNED)).expect("sign");
    let now = at(SIGNED + 1);

    let err = verify_detached(cert.as_bytes(), MANIFEST, b"garbage", now).expect_err("garbage sig");
    assert!(matches!(err, PgpVerifyError::SignatureParse(_)), "{err:?}");
    let err = verify_detached(b"garbage", MANIFEST, sig.as_bytes(), now).expect_err("garbage cert");
    assert!(matches!(err, PgpVerifyError::CertParse(_)), "{err:?}");
    // Certificate and signature swapped.
    let err = verify_detached(sig.as_bytes(), MANIFEST, cert.as_bytes(), now).expect_err("swapped");
    assert!(matches!(err, PgpVerifyError::CertParse(_)), "{err:?}");
    // Armor whose base64 was damaged.
    let damaged = sig.replacen("\n", "\n!!", 2);
    let err = verify_detached(cert.as_bytes(), MANIFEST, damaged.as_bytes(), now).expect_err("damaged armor");
    assert!(matches!(err, PgpVerifyError::SignatureParse(_)), "{err:?}");
    // The signature without its armor.
    let unarmored = &sig.as_bytes()[sig.find("\n\n").expect("armor header") + 2..];
    let err = verify_detached(cert.as_bytes(), MANIFEST, unarmored, now).expect_err("unarmored");
    assert!(matches!(err, PgpVerifyError::SignatureParse(_)), "{err:?}");
    // An empty signature block.
    let empty = "-----BEGIN PGP SIGNATURE-----\n\n-----END PGP SIGNATURE-----\n";
    let err = verify_detached(cert.as_bytes(), MANIFEST, empty.as_bytes(), now).expect_err("empty block");
    assert!(matches!(err, PgpVerifyError::NoSignature), "{err:?}");
    // Oversized input is refused before parsing.
    let mut big = sig.clone().into_bytes();
    big.resize(evident_verify::pgp::MAX_SIGNATURE_BYTES + 1, b'\n');
    let err = verify_detached(cert.as_bytes(), MANIFEST, &big, now).expect_err("oversized");
    assert!(matches!(err, PgpVerifyError::SignatureTooLarge { .. }), "{err:?}");
    // Verified at a time before the signature existed.
    let err = verify_detached(cert.as_bytes(), MANIFEST, sig.as_bytes(), at(CREATED)).expect_err("future signature");
    assert!(
        matches!(err, PgpVerifyError::SignatureNotAlive { signature_time: Some(t), .. } if t == at(SIGNED)),
        "{err:?}"
    );
}

#[test]
fn fingerprint_is_deterministic() {
    let a = PgpSigner::from_seed(&SEED, USER_ID, at(CREATED)).expect("signer");
    let b = PgpSigner::from_seed(&SEED, USER_ID, at(CREATED)).expect("signer");
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_eq!(a.fingerprint().len(), 40);
    assert!(a.fingerprint().chars().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
    // The fingerprint covers the creation time and the key, not the user ID.
    let later = PgpSigner::from_seed(&SEED, USER_ID, at(CREATED + 1)).expect("signer");
    assert_ne!(a.fingerprint(), later.fingerprint());
    let renamed = PgpSigner::from_seed(&SEED, "Other <o@example.invalid>", at(CREATED)).expect("signer");
    assert_eq!(a.fingerprint(), renamed.fingerprint());
}
