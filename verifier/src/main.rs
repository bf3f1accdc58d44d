//! `evident-verify`: the regulator's offline verifier for Evident packs,
//! chains of packs, receipts and checkpoints. No network, no database.
//!
//! Exit codes: 0 everything verified; 1 the evidence is invalid; 2 usage or
//! I/O error.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use evident_verify::hash::Hash;
use evident_verify::note::VerifierKey;
use evident_verify::pack::{self, Previous, Status, Trust, TrustedKey};
use evident_verify::ts::Timestamp;
use serde_json::json;

/// mimalloc instead of the system allocator: every leaf of a pack becomes
/// many small allocations made on one thread of the pool and freed on
/// another, which glibc's allocator serves slowly (a third of the CPU time
/// of a verification without producer signatures).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "evident-verify",
    version,
    about = "Verify Evident compliance packs, chains, receipts and checkpoints offline",
    after_help = "Trust comes only from --key and --keyring. Keys inside a pack are never trusted on their own.\n\
                  Exit codes: 0 all verified; 1 the evidence is invalid; 2 usage or I/O error."
)]
struct Cli {
    /// Machine-readable output (schemas/cli/verify.*.json).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Keys {
    /// A trusted ledger verifier key (name+hash+base64). Repeatable.
    #[arg(long = "key", value_name = "VKEY")]
    keys: Vec<String>,
    /// A keyring file: one verifier key per line, optionally followed by
    /// not_before=RFC3339 and not_after=RFC3339; '#' starts a comment.
    #[arg(long)]
    keyring: Option<PathBuf>,
    /// Judge key validity at this time (RFC 3339; default now).
    #[arg(long)]
    at: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Verify one pack (a directory or a .tar).
    Pack {
        /// The pack.
        path: PathBuf,
        #[command(flatten)]
        keys: Keys,
        /// The ledger's OpenPGP certificate, to check manifest.json.asc.
        #[arg(long)]
        pgp_cert: Option<PathBuf>,
        /// The previous day's pack, to check consistency with it.
        #[arg(long, conflicts_with = "previous_checkpoint")]
        previous: Option<PathBuf>,
        /// A previous checkpoint you hold, to check consistency with it.
        #[arg(long)]
        previous_checkpoint: Option<PathBuf>,
        /// Skip producer signature checks (for measurement only).
        #[arg(long, hide = true)]
        no_producer_signatures: bool,
    },
    /// Verify every pack of a ledger in a directory, in day order, from the first.
    Chain {
        /// Directory of YYYY-MM-DD/ pack directories or YYYY-MM-DD.tar files.
        dir: PathBuf,
        #[command(flatten)]
        keys: Keys,
        /// The ledger's OpenPGP certificate.
        #[arg(long)]
        pgp_cert: Option<PathBuf>,
    },
    /// Verify a receipt file from `evident prove`.
    Receipt {
        /// The receipt.
        file: PathBuf,
        #[command(flatten)]
        keys: Keys,
        /// Require this origin.
        #[arg(long)]
        origin: Option<String>,
    },
    /// Verify a signed checkpoint, and optionally its consistency with an older one.
    Checkpoint {
        /// The checkpoint note.
        file: PathBuf,
        #[command(flatten)]
        keys: Keys,
        /// A consistency proof file from `evident prove --consistency`.
        #[arg(long)]
        consistency: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    let json = cli.json;
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            if json {
                println!("{}", json!({"ok": false, "error": format!("{e:#}"), "usage_error": true}));
            } else {
                eprintln!("evident-verify: {e:#}");
            }
            ExitCode::from(2)
        }
    }
}

fn parse_time(s: &str, what: &str) -> Result<Timestamp> {
    let t = chrono::DateTime::parse_from_rfc3339(s).with_context(|| format!("{what} {s:?} is not an RFC 3339 time"))?;
    Ok(Timestamp::from_datetime(t.to_utc()))
}

fn trusted_keys(k: &Keys) -> Result<Vec<TrustedKey>> {
    let mut out = Vec::new();
    for s in &k.keys {
        out.push(TrustedKey::always(VerifierKey::parse(s).with_context(|| format!("--key {s:?}"))?));
    }
    if let Some(path) = &k.keyring {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading keyring {}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = || format!("keyring {} line {}", path.display(), i + 1);
            let mut parts = line.split_whitespace();
            let key = VerifierKey::parse(parts.next().unwrap_or("")).with_context(at)?;
            let mut tk = TrustedKey::always(key);
            for p in parts {
                match p.split_once('=') {
                    Some(("not_before", v)) => tk.not_before = Some(parse_time(v, "not_before").with_context(at)?),
                    Some(("not_after", v)) => tk.not_after = Some(parse_time(v, "not_after").with_context(at)?),
                    _ => bail!("{}: unknown field {p:?} (expected not_before= or not_after=)", at()),
                }
            }
            out.push(tk);
        }
    }
    if out.is_empty() {
        bail!("no trusted keys: give --key VKEY or --keyring FILE (keys inside a pack are never trusted)");
    }
    Ok(out)
}

/// Keys valid at `--at` (default now), for receipts and checkpoints.
fn keys_at(k: &Keys) -> Result<Vec<VerifierKey>> {
    let at = match &k.at {
        Some(s) => parse_time(s, "--at")?,
        None => Timestamp::from_datetime(chrono::Utc::now()),
    };
    let all = trusted_keys(k)?;
    let valid: Vec<VerifierKey> = all
        .iter()
        .filter(|t| t.not_before.is_none_or(|nb| nb <= at) && t.not_after.is_none_or(|na| at <= na))
        .map(|t| t.key.clone())
        .collect();
    if valid.is_empty() {
        bail!("none of the {} trusted keys is valid at {at}", all.len());
    }
    Ok(valid)
}

fn trust(k: &Keys, pgp_cert: &Option<PathBuf>, producer_signatures: bool) -> Result<Trust> {
    let pgp_time = match &k.at {
        Some(s) => {
            let t = parse_time(s, "--at")?;
            std::time::UNIX_EPOCH + std::time::Duration::from_micros(u64::try_from(t.0).unwrap_or(0))
        }
        None => std::time::SystemTime::now(),
    };
    Ok(Trust {
        ledger_keys: trusted_keys(k)?,
        pgp_cert: match pgp_cert {
            Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
            None => None,
        },
        pgp_time,
        producer_signatures,
    })
}

fn bar(json: bool) -> indicatif::ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(0);
    if let Ok(s) = indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} entries ({per_sec})") {
        b.set_style(s);
    }
    b
}

fn print_pack(r: &pack::PackResult, out: &mut impl Write) -> Result<()> {
    writeln!(
        out,
        "pack {} (day {}, seqs [{}, {}))",
        r.path,
        r.day.as_deref().unwrap_or("?"),
        r.start.map_or("?".into(), |s| s.to_string()),
        r.end.map_or("?".into(), |s| s.to_string())
    )?;
    for c in &r.checks {
        let mark = match c.status {
            Status::Verified => "  ok     ",
            Status::NotChecked => "  NOT CHECKED",
            Status::Failed => "  FAILED ",
        };
        writeln!(out, "{mark} {}: {}", c.name, c.detail)?;
    }
    Ok(())
}

fn run(cli: Cli) -> Result<bool> {
    let json = cli.json;
    let mut stdout = std::io::stdout();
    match cli.cmd {
        Cmd::Pack { path, keys, pgp_cert, previous, previous_checkpoint, no_producer_signatures } => {
            let t = trust(&keys, &pgp_cert, !no_producer_signatures)?;
            if !path.exists() {
                bail!("{} does not exist", path.display());
            }
            let prev = match (previous, previous_checkpoint) {
                (Some(p), _) => {
                    let cp = pack::read_member(&p, "checkpoint")
                        .with_context(|| format!("reading the checkpoint of {}", p.display()))?;
                    let m = pack::read_member(&p, "manifest.json")
                        .with_context(|| format!("reading the manifest of {}", p.display()))?;
                    let day = evident_verify::manifest::Manifest::parse(&m).ok().map(|m| m.day);
                    Some(Previous { checkpoint: cp, manifest_sha256: Some(Hash::sha256(&m).to_hex()), day })
                }
                (None, Some(f)) => Some(Previous {
                    checkpoint: std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?,
                    manifest_sha256: None,
                    day: None,
                }),
                (None, None) => None,
            };
            let b = bar(json);
            b.set_message("verifying");
            let r = pack::verify_pack(&path, &t, prev.as_ref(), None, &mut |d, total| {
                b.set_length(total);
                b.set_position(d);
            });
            b.finish_and_clear();
            if json {
                writeln!(stdout, "{}", serde_json::to_string(&json!({"ok": r.ok(), "pack": r}))?)?;
            } else {
                print_pack(&r, &mut stdout)?;
                match &r.failure {
                    Some(f) => writeln!(stdout, "INVALID: {f}")?,
                    None => writeln!(stdout, "VERIFIED")?,
                }
            }
            Ok(r.ok())
        }
        Cmd::Chain { dir, keys, pgp_cert } => {
            let t = trust(&keys, &pgp_cert, true)?;
            if !dir.is_dir() {
                bail!("{} is not a directory", dir.display());
            }
            let b = bar(json);
            let r = pack::verify_chain(&dir, &t, &mut |day, d, total| {
                b.set_message(day.to_string());
                b.set_length(total);
                b.set_position(d);
            });
            b.finish_and_clear();
            if json {
                writeln!(stdout, "{}", serde_json::to_string(&json!({"ok": r.failure.is_none(), "chain": r}))?)?;
            } else {
                for p in &r.packs {
                    print_pack(p, &mut stdout)?;
                }
                match &r.failure {
                    Some(f) => writeln!(stdout, "INVALID chain: {f}")?,
                    None => writeln!(stdout, "VERIFIED chain of {} packs: every link, no gap, no fork", r.packs.len())?,
                }
            }
            Ok(r.failure.is_none())
        }
        Cmd::Receipt { file, keys, origin } => {
            let trusted = keys_at(&keys)?;
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let r = evident_verify::receipt::Receipt::parse(&bytes).and_then(|r| r.verify(&trusted, origin.as_deref()));
            report_simple(json, &file, r.map(|v| {
                json!({"seq": v.entry.seq, "leaf_hash": v.leaf_hash.to_hex(), "tree_size": v.checkpoint.checkpoint.size,
                       "origin": v.checkpoint.checkpoint.origin, "signed_by": v.checkpoint.signed_by,
                       "kind": v.entry.rec.kind, "producer": v.entry.rec.producer, "id": v.entry.rec.id})
            }).map_err(anyhow::Error::new))
        }
        Cmd::Checkpoint { file, keys, consistency } => {
            let trusted = keys_at(&keys)?;
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let r = (|| -> Result<serde_json::Value> {
                let cp = evident_verify::checkpoint::open(&bytes, &trusted, None)?;
                let mut v = json!({"origin": cp.checkpoint.origin, "size": cp.checkpoint.size,
                    "root": cp.checkpoint.root.to_base64(), "signed_by": cp.signed_by,
                    "other_signatures": cp.other_signatures.iter().map(|s| s.id()).collect::<Vec<_>>()});
                if let Some(pf) = &consistency {
                    let p: serde_json::Value = serde_json::from_slice(
                        &std::fs::read(pf).with_context(|| format!("reading {}", pf.display()))?,
                    )
                    .with_context(|| format!("{} is not JSON", pf.display()))?;
                    let old_note = p["old_checkpoint"].as_str().context("old_checkpoint missing")?;
                    let old =
                        evident_verify::checkpoint::open(old_note.as_bytes(), &trusted, Some(&cp.checkpoint.origin))?;
                    let proof: Vec<Hash> = p["proof"]
                        .as_array()
                        .context("proof missing")?
                        .iter()
                        .map(|h| h.as_str().and_then(Hash::from_base64).context("proof hash is not base64 of 32 bytes"))
                        .collect::<Result<_>>()?;
                    evident_verify::merkle::verify_consistency_heads(
                        &old.checkpoint.head(),
                        &cp.checkpoint.head(),
                        &proof,
                    )
                    .context("consistency proof")?;
                    v["consistent_with_size"] = json!(old.checkpoint.size);
                }
                Ok(v)
            })();
            report_simple(json, &file, r)
        }
    }
}

fn report_simple(json: bool, file: &Path, r: Result<serde_json::Value>) -> Result<bool> {
    let mut stdout = std::io::stdout();
    match r {
        Ok(v) => {
            if json {
                writeln!(stdout, "{}", json!({"ok": true, "file": file, "result": v}))?;
            } else {
                writeln!(stdout, "VERIFIED {}: {}", file.display(), v)?;
            }
            Ok(true)
        }
        Err(e) => {
            if json {
                writeln!(stdout, "{}", json!({"ok": false, "file": file, "error": format!("{e:#}")}))?;
            } else {
                writeln!(stdout, "INVALID {}: {e:#}", file.display())?;
            }
            Ok(false)
        }
    }
}
