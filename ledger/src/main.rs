//! `evident`: the operator's command line for an Evident ledger.
//!
//! Exit codes: 0 success; 1 evidence invalid or a record refused; 2 usage,
//! configuration or I/O error.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use evident_ledger::config::Config;
use evident_ledger::ledger::{Ledger, Submission};
use evident_ledger::{keyfile, pgp, verify_db};
use evident_verify::note::VerifierKey;
use serde_json::json;

/// mimalloc when the `mimalloc` feature is on (the default): appends parse
/// records into many small allocations across threads, which glibc's
/// allocator serves slowly.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Longest input line `append` reads; longer lines are refused without
/// being buffered whole.
const MAX_LINE_BYTES: usize = 1 << 20;
/// Records per commit when appending JSON Lines.
const APPEND_CHUNK: usize = 1024;

#[derive(Parser)]
#[command(
    name = "evident",
    version,
    about = "Operate an Evident evidence ledger",
    after_help = "Exit codes: 0 success; 1 evidence invalid or a record refused; 2 usage, configuration or I/O error."
)]
struct Cli {
    /// Configuration file (default: $EVIDENT_CONFIG or ./evident.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Machine-readable JSON output (schemas/cli/*.json).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a ledger: database, Ed25519 ledger key, OpenPGP cert, config file.
    Init {
        /// Directory to create it in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Origin line of the log (also the ledger key's name).
        #[arg(long)]
        origin: String,
        /// Producers allowed to append unsigned records.
        #[arg(long = "unsigned-producer")]
        unsigned_producers: Vec<String>,
    },
    /// Append one JSON record from FILE, or JSON Lines from stdin ("-" or no FILE).
    Append {
        /// A file holding one JSON record or submission.
        file: Option<PathBuf>,
    },
    /// Sign and store a checkpoint of the current tree; print it.
    Checkpoint,
    /// Write a receipt file for one entry, or a consistency proof.
    Prove {
        /// Entry to prove.
        #[arg(long, conflicts_with = "consistency")]
        seq: Option<u64>,
        /// Tree size to prove against (default: a fresh checkpoint).
        #[arg(long)]
        size: Option<u64>,
        /// Prove consistency from OLD to NEW tree size.
        #[arg(long, num_args = 2, value_names = ["OLD", "NEW"])]
        consistency: Option<Vec<u64>>,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Recompute every leaf hash, tile and checkpoint root; report the first mismatch.
    VerifyDb,
    /// Size, root, checkpoints and storage figures.
    Stats,
    /// Producer keys: add, rotate, revoke, list.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Erase a data subject's vault rows and record the erasure.
    Erase {
        /// The subject id.
        #[arg(long)]
        subject: String,
        /// Who asked.
        #[arg(long, default_value = "operator")]
        requested_by: String,
        /// Why.
        #[arg(long, default_value = "data subject erasure request")]
        reason: String,
    },
    /// Reveal a committed value with its salt, for checking against the commitment.
    Reveal {
        /// The base64 commitment.
        #[arg(long, conflicts_with = "subject")]
        commitment: Option<String>,
        /// Every value of a subject.
        #[arg(long)]
        subject: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Register a producer key (C2SP verifier key string, or a new key written to --out).
    Add {
        /// Producer name.
        #[arg(long)]
        producer: String,
        /// The producer's verifier key; omit with --generate.
        #[arg(long, required_unless_present = "generate")]
        key: Option<String>,
        /// Generate a new key pair and write the secret key to this file (mode 0600).
        #[arg(long, value_name = "SECRET_KEY_FILE")]
        generate: Option<PathBuf>,
        /// Start of validity (RFC 3339; default now).
        #[arg(long)]
        valid_from: Option<String>,
    },
    /// Replace a producer key with a new one.
    Rotate {
        /// Producer name.
        #[arg(long)]
        producer: String,
        /// The key being replaced.
        #[arg(long)]
        old: String,
        /// The new key; omit with --generate.
        #[arg(long, required_unless_present = "generate")]
        key: Option<String>,
        /// Generate the new key pair into this file (mode 0600).
        #[arg(long, value_name = "SECRET_KEY_FILE")]
        generate: Option<PathBuf>,
        /// When the new key starts and the old one ends (default now).
        #[arg(long)]
        valid_from: Option<String>,
    },
    /// End a producer key's validity.
    Revoke {
        /// Producer name.
        #[arg(long)]
        producer: String,
        /// The key.
        #[arg(long)]
        key: String,
        /// End of validity (default now); may be in the past after a compromise.
        #[arg(long)]
        valid_until: Option<String>,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// List every producer key and its window.
    List,
}

/// Outcome of a command that succeeded in running: did the evidence hold?
enum Outcome {
    Ok,
    Invalid,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match run(cli) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Invalid) => ExitCode::from(1),
        Err(e) => {
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("evident: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn config_path(cli: &Option<PathBuf>) -> PathBuf {
    cli.clone()
        .or_else(|| std::env::var_os("EVIDENT_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("evident.toml"))
}

fn open(cfg_path: &Path) -> Result<(Config, Ledger)> {
    let cfg = Config::load(cfg_path)?;
    let ledger = Ledger::open(cfg.options()?)?;
    Ok((cfg, ledger))
}

fn out(line: impl std::fmt::Display) -> Result<()> {
    writeln!(std::io::stdout(), "{line}")?;
    Ok(())
}

fn run(cli: Cli) -> Result<Outcome> {
    let cfg_path = config_path(&cli.config);
    let json = cli.json;
    match cli.cmd {
        Cmd::Init { dir, origin, unsigned_producers } => init(&dir, &origin, unsigned_producers, cli.config, json),
        Cmd::Append { file } => {
            let (_, ledger) = open(&cfg_path)?;
            append(&ledger, file, json)
        }
        Cmd::Checkpoint => {
            let (_, ledger) = open(&cfg_path)?;
            let note = ledger.checkpoint()?;
            print_checkpoint(&note, json)?;
            Ok(Outcome::Ok)
        }
        Cmd::Prove { seq, size, consistency, out: out_file } => {
            let (_, ledger) = open(&cfg_path)?;
            let text = if let Some(c) = consistency {
                let (old, new) = (c[0], c[1]);
                let proof = ledger.prove_consistency(old, new)?;
                let old_cp = ledger.checkpoint_at(old)?;
                let new_cp = ledger.checkpoint_at(new)?;
                serde_json::to_string_pretty(&json!({
                    "format": "evident-consistency/1",
                    "old_size": old, "new_size": new,
                    "proof": proof.iter().map(|h| h.to_base64()).collect::<Vec<_>>(),
                    "old_checkpoint": old_cp, "new_checkpoint": new_cp,
                }))?
            } else {
                let Some(seq) = seq else { bail!("give --seq N or --consistency OLD NEW") };
                serde_json::to_string_pretty(&ledger.receipt(seq, size)?)?
            };
            match out_file {
                Some(p) => std::fs::write(&p, text + "\n").with_context(|| format!("writing {}", p.display()))?,
                None => out(text)?,
            }
            Ok(Outcome::Ok)
        }
        Cmd::VerifyDb => {
            let (_, ledger) = open(&cfg_path)?;
            let total = ledger.size()?;
            let bar = progress_bar(total, json);
            let r = verify_db::verify_db(&ledger, |done, _| bar.set_position(done));
            bar.finish_and_clear();
            match r {
                Ok(rep) => {
                    if json {
                        out(serde_json::to_string(&json!({"ok": true, "report": rep}))?)?;
                    } else {
                        out(format!(
                            "verify-db: OK: {} entries, {} tiles, {} checkpoints; root {}",
                            rep.entries, rep.tiles, rep.checkpoints, rep.root
                        ))?;
                    }
                    Ok(Outcome::Ok)
                }
                Err(verify_db::VerifyDbError::Mismatch { seq, what }) => {
                    if json {
                        out(serde_json::to_string(&json!({"ok": false, "seq": seq, "error": what}))?)?;
                    } else {
                        let at = seq.map_or("ledger".to_string(), |s| format!("entry seq {s}"));
                        out(format!("verify-db: FAILED at {at}: {what}"))?;
                    }
                    Ok(Outcome::Invalid)
                }
                Err(e) => Err(e.into()),
            }
        }
        Cmd::Stats => {
            let (cfg, ledger) = open(&cfg_path)?;
            let head = ledger.head()?;
            let cps = ledger.checkpoints()?;
            let db = cfg.resolve(&cfg.database);
            let file_bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0)
                + std::fs::metadata(db.with_extension("db-wal")).map(|m| m.len()).unwrap_or(0);
            let leaf_bytes = ledger.leaf_bytes_total()?;
            let per_entry =
                if head.size > 0 { (file_bytes.saturating_sub(leaf_bytes)) as f64 / head.size as f64 } else { 0.0 };
            let v = json!({
                "origin": cfg.origin, "size": head.size, "root": head.root.to_hex(),
                "checkpoints": cps.len(), "latest_checkpoint_size": cps.last().map(|c| c.0),
                "first_ts": ledger.first_ts()?.map(|t| t.to_string()),
                "file_bytes": file_bytes, "leaf_bytes": leaf_bytes,
                "overhead_bytes_per_entry": (per_entry * 10.0).round() / 10.0,
                "ledger_key": ledger.verifier_key().to_string(),
            });
            if json {
                out(serde_json::to_string(&v)?)?;
            } else {
                out(format!("origin      {}", cfg.origin))?;
                out(format!("entries     {}", head.size))?;
                out(format!("root        {}", head.root))?;
                out(format!("checkpoints {}", cps.len()))?;
                out(format!("file bytes  {file_bytes} ({leaf_bytes} of leaves, {per_entry:.1} bytes/entry overhead)"))?;
                out(format!("ledger key  {}", ledger.verifier_key()))?;
            }
            Ok(Outcome::Ok)
        }
        Cmd::Key(k) => {
            let (_, ledger) = open(&cfg_path)?;
            key_cmd(&ledger, k, json)
        }
        Cmd::Erase { subject, requested_by, reason } => {
            let (_, ledger) = open(&cfg_path)?;
            let r = ledger.erase(&subject, &requested_by, &reason)?;
            if json {
                out(serde_json::to_string(&r)?)?;
            } else {
                out(format!(
                    "erased {} vault rows of the subject; erasure recorded at seq {}",
                    r.rows_deleted, r.receipt.seq
                ))?;
            }
            Ok(Outcome::Ok)
        }
        Cmd::Reveal { commitment, subject } => {
            let (_, ledger) = open(&cfg_path)?;
            let rows = match (commitment, subject) {
                (Some(c), _) => ledger.reveal_commitment(&c)?.into_iter().collect(),
                (None, Some(s)) => ledger.reveal_subject(&s)?,
                (None, None) => bail!("give --commitment C or --subject S"),
            };
            if json {
                out(serde_json::to_string(&rows)?)?;
            } else if rows.is_empty() {
                out("nothing in the vault (erased, or never committed)")?;
            } else {
                for r in &rows {
                    out(format!(
                        "seq {} field {} commitment {} salt {} value {}",
                        r.seq, r.field, r.commitment, r.salt, r.value
                    ))?;
                }
            }
            Ok(if rows.is_empty() { Outcome::Invalid } else { Outcome::Ok })
        }
    }
}

fn print_checkpoint(note: &str, json: bool) -> Result<()> {
    if json {
        let body = note.split_once("\n\n").map(|(b, _)| format!("{b}\n")).unwrap_or_default();
        let cp = evident_verify::checkpoint::Checkpoint::parse(&body)?;
        out(serde_json::to_string(&json!({
            "origin": cp.origin, "size": cp.size, "root": cp.root.to_base64(), "note": note,
        }))?)?;
    } else {
        write!(std::io::stdout(), "{note}")?;
    }
    Ok(())
}

fn progress_bar(total: u64, json: bool) -> indicatif::ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} ({per_sec}, eta {eta})") {
        bar.set_style(style);
    }
    bar
}

fn init(dir: &Path, origin: &str, unsigned: Vec<String>, cfg_path: Option<PathBuf>, json: bool) -> Result<Outcome> {
    evident_verify::note::check_name(origin).context("--origin must be usable as a key name: no spaces or '+'")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cfg_file = cfg_path.unwrap_or_else(|| dir.join("evident.toml"));
    if cfg_file.exists() {
        bail!("{} already exists; refusing to overwrite a ledger configuration", cfg_file.display());
    }
    let mut cfg = Config::new(origin, dir);
    cfg.unsigned_producers = unsigned;
    let key_path = cfg.resolve(&cfg.key_file);
    let key = keyfile::generate(origin)?;
    keyfile::write_signer_key(&key_path, &key)?;
    let pgp = pgp::PgpSigner::from_seed(key.seed(), &format!("Evident ledger {origin}"), pgp_creation_time())?;
    let cert_path = cfg.resolve(&cfg.pgp_cert);
    std::fs::write(&cert_path, pgp.cert_armored()?).with_context(|| format!("writing {}", cert_path.display()))?;
    Ledger::create(cfg.options()?)?;
    let rel = |p: &Path| p.strip_prefix(dir).map(Path::to_path_buf).unwrap_or_else(|_| p.to_path_buf());
    let mut on_disk = cfg.clone();
    on_disk.database = rel(&cfg.resolve(&cfg.database));
    std::fs::write(&cfg_file, on_disk.to_toml()).with_context(|| format!("writing {}", cfg_file.display()))?;
    if json {
        out(serde_json::to_string(&json!({
            "config": cfg_file, "database": cfg.resolve(&cfg.database), "key_file": key_path,
            "verifier_key": key.verifier().to_string(), "pgp_cert": cert_path, "pgp_fingerprint": pgp.fingerprint(),
        }))?)?;
    } else {
        out(format!("created ledger {origin} in {}", dir.display()))?;
        out(format!("  config        {}", cfg_file.display()))?;
        out(format!("  ledger key    {} (mode 0600; keep it secret)", key_path.display()))?;
        out(format!("  verifier key  {}  <- give this to regulators", key.verifier()))?;
        out(format!("  OpenPGP cert  {} ({})", cert_path.display(), pgp.fingerprint()))?;
    }
    Ok(Outcome::Ok)
}

/// The OpenPGP key's creation time. Fixed, so the certificate (and its
/// fingerprint) depends on the ledger key alone and can be re-derived.
fn pgp_creation_time() -> std::time::SystemTime {
    evident_ledger::pgp_creation_time()
}

fn append(ledger: &Ledger, file: Option<PathBuf>, json: bool) -> Result<Outcome> {
    let mut any_bad = false;
    let mut report = |line: usize, r: Result<evident_ledger::AppendReceipt, String>| -> Result<()> {
        match r {
            Ok(rc) => {
                if json {
                    out(serde_json::to_string(&json!({"line": line, "ok": true, "receipt": rc}))?)?;
                } else {
                    let dup = if rc.duplicate { " (already stored)" } else { "" };
                    out(format!("line {line}: seq {} leaf {} ts {}{dup}", rc.seq, rc.leaf_hash, rc.ts))?;
                }
            }
            Err(e) => {
                any_bad = true;
                if json {
                    out(serde_json::to_string(&json!({"line": line, "ok": false, "error": e}))?)?;
                } else {
                    eprintln!("line {line}: refused: {e}");
                }
            }
        }
        Ok(())
    };
    if let Some(path) = file.filter(|p| p.as_os_str() != "-") {
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .with_context(|| format!("opening {}", path.display()))?
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        let r = if bytes.len() > MAX_LINE_BYTES {
            Err(format!("{}: record is over the {MAX_LINE_BYTES}-byte input limit", path.display()))
        } else {
            Submission::parse(&bytes)
                .and_then(|s| ledger.append(s))
                .map_err(|e| format!("{}: {}", path.display(), chain(&e)))
        };
        report(1, r)?;
        return Ok(if any_bad { Outcome::Invalid } else { Outcome::Ok });
    }
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line_no = 0usize;
    let mut chunk: Vec<(usize, Submission)> = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let (n, too_long) = read_line_capped(&mut input, &mut buf, MAX_LINE_BYTES)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if too_long {
            report(line_no, Err(format!("line is over the {MAX_LINE_BYTES}-byte limit")))?;
            continue;
        }
        let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match Submission::parse(text) {
            Ok(s) => chunk.push((line_no, s)),
            Err(e) => report(line_no, Err(chain(&e)))?,
        }
        if chunk.len() >= APPEND_CHUNK {
            flush(ledger, &mut chunk, &mut report)?;
        }
    }
    flush(ledger, &mut chunk, &mut report)?;
    Ok(if any_bad { Outcome::Invalid } else { Outcome::Ok })
}

fn flush(
    ledger: &Ledger,
    chunk: &mut Vec<(usize, Submission)>,
    report: &mut impl FnMut(usize, Result<evident_ledger::AppendReceipt, String>) -> Result<()>,
) -> Result<()> {
    let (lines, subs): (Vec<usize>, Vec<Submission>) = std::mem::take(chunk).into_iter().unzip();
    for (line, r) in lines.into_iter().zip(ledger.append_batch(subs)) {
        report(line, r.map_err(|e| chain(&e)))?;
    }
    Ok(())
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Reads one line of at most `max` bytes; a longer line is consumed and
/// discarded, and reported as too long.
fn read_line_capped(r: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> Result<(usize, bool)> {
    let mut total = 0;
    let mut too_long = false;
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            return Ok((total, too_long));
        }
        let (take, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        if !too_long && buf.len() + take <= max + 1 {
            buf.extend_from_slice(&avail[..take]);
        } else {
            too_long = true;
            buf.clear();
        }
        total += take;
        r.consume(take);
        if done {
            return Ok((total, too_long));
        }
    }
}

fn key_cmd(ledger: &Ledger, k: KeyCmd, json: bool) -> Result<Outcome> {
    let key_from = |key: Option<String>, generate: Option<PathBuf>, producer: &str| -> Result<VerifierKey> {
        match (key, generate) {
            (Some(k), _) => Ok(VerifierKey::parse(&k).context("--key")?),
            (None, Some(path)) => {
                let sk = keyfile::generate(producer)?;
                keyfile::write_signer_key(&path, &sk)?;
                Ok(sk.verifier())
            }
            (None, None) => bail!("give --key or --generate"),
        }
    };
    let receipt = match k {
        KeyCmd::Add { producer, key, generate, valid_from } => {
            let vk = key_from(key, generate, &producer)?;
            ledger.add_key(&producer, &vk, valid_from.as_deref())?
        }
        KeyCmd::Rotate { producer, old, key, generate, valid_from } => {
            let vk = key_from(key, generate, &producer)?;
            let old = VerifierKey::parse(&old).context("--old")?;
            ledger.rotate_key(&producer, &old, &vk, valid_from.as_deref())?
        }
        KeyCmd::Revoke { producer, key, valid_until, reason } => {
            let vk = VerifierKey::parse(&key).context("--key")?;
            ledger.revoke_key(&producer, &vk, valid_until.as_deref(), reason.as_deref())?
        }
        KeyCmd::List => {
            let h = ledger.key_history()?;
            let list: Vec<_> = h
                .all()
                .map(|(p, k)| {
                    json!({"producer": p, "key": k.key.to_string(), "valid_from": k.valid_from.to_string(),
                           "valid_until": k.valid_until.map(|u| u.to_string()), "introduced_seq": k.introduced_seq})
                })
                .collect();
            if json {
                out(serde_json::to_string(&list)?)?;
            } else {
                for (p, k) in h.all() {
                    let until = k.valid_until.map_or("-".to_string(), |u| u.to_string());
                    out(format!("{p}\t{}\tfrom {}\tuntil {until}\t(seq {})", k.key, k.valid_from, k.introduced_seq))?;
                }
            }
            return Ok(Outcome::Ok);
        }
    };
    if json {
        out(serde_json::to_string(&receipt)?)?;
    } else {
        out(format!("key_event recorded at seq {} (leaf {})", receipt.seq, receipt.leaf_hash))?;
    }
    Ok(Outcome::Ok)
}
