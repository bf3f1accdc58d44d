//! Verification of daily packs and of chains of packs (DESIGN §5).
//!
//! This module reads the pack files it is pointed at (a directory or a
//! `.tar`) and nothing else: no network, no database, no clock. It checks,
//! in order, and stops at the first failure, naming the file and the seq:
//!
//! 1. `manifest.json.sig` by a trusted ledger key valid on the pack's day,
//!    and `manifest.json.asc` against the given OpenPGP certificate;
//! 2. the SHA-256 and size of every listed file, and no unlisted file;
//! 3. the checkpoint signature, origin and size;
//! 4. that the compact range hashes to the previous checkpoint's root;
//! 5. every leaf: strict canonical parse, contiguous seq, `ts` inside the
//!    day and never decreasing, its kind's schema, the producer signature
//!    under the key history;
//! 6. that the compact range extended by the leaves gives the checkpoint root;
//! 7. that the rules re-evaluated over the entries give exactly `report.json`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::checkpoint;
use crate::hash::{Hash, leaf_hash};
use crate::keys::{KeyEventBody, KeyHistory, KeyRecord};
use crate::leaf::{Entry, decode_sig};
use crate::manifest::{self, Counts, MAX_LINE_BYTES, MAX_SMALL_FILE_BYTES, Manifest, Report, files};
use crate::note::VerifierKey;
use crate::rules::{Evaluator, RuleSet, compare_outcomes};
use crate::schema::Schemas;
use crate::ts::{DAY_MICROS, Timestamp};

/// Leaves handled per parallel chunk.
const CHUNK: usize = 4096;
/// A chunk also ends once it holds this many bytes, so that two chunks in
/// flight (one checked, the next read) stay small whatever the line sizes.
const CHUNK_BYTES: usize = 8 << 20;

/// A ledger key the verifier trusts, with an optional validity window.
#[derive(Clone, Debug)]
pub struct TrustedKey {
    /// The key.
    pub key: VerifierKey,
    /// First instant the key may sign for.
    pub not_before: Option<Timestamp>,
    /// Last instant the key may sign for.
    pub not_after: Option<Timestamp>,
}

impl TrustedKey {
    /// A key trusted without a window.
    pub fn always(key: VerifierKey) -> TrustedKey {
        TrustedKey { key, not_before: None, not_after: None }
    }

    /// Whether the key may vouch for everything in `[from, to)`.
    pub fn covers(&self, from: Timestamp, to: Timestamp) -> bool {
        self.not_before.is_none_or(|nb| nb <= from) && self.not_after.is_none_or(|na| to.0 - 1 <= na.0)
    }
}

/// What the verifier trusts and how thoroughly it checks.
#[derive(Clone, Debug)]
pub struct Trust {
    /// Trusted ledger keys.
    pub ledger_keys: Vec<TrustedKey>,
    /// The ledger's OpenPGP certificate (armored), if given.
    pub pgp_cert: Option<Vec<u8>>,
    /// The time at which OpenPGP validity is judged.
    pub pgp_time: std::time::SystemTime,
    /// Verify producer signatures (on by default; off only to measure).
    pub producer_signatures: bool,
}

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Checked and holds.
    Verified,
    /// Not checked; the detail says why and how to check it.
    NotChecked,
    /// Checked and fails.
    Failed,
}

/// One line of the verification summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Short name of the check.
    pub name: String,
    /// Outcome.
    pub status: Status,
    /// What exactly was checked, or why not.
    pub detail: String,
}

/// The first failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The pack file at fault.
    pub file: String,
    /// The entry seq at fault, if one.
    pub seq: Option<u64>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(s) => write!(f, "{} (entry seq {s}): {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// The result of verifying one pack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PackResult {
    /// The pack's path.
    pub path: String,
    /// The day, once the manifest was read.
    pub day: Option<String>,
    /// Seq range, once the manifest was read.
    pub start: Option<u64>,
    /// End of the seq range.
    pub end: Option<u64>,
    /// Hex SHA-256 of `manifest.json`, once read.
    pub manifest_sha256: Option<String>,
    /// What was checked, in order.
    pub checks: Vec<Check>,
    /// The first failure, if any.
    pub failure: Option<Failure>,
}

impl PackResult {
    /// True when nothing failed.
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// What the verifier knows about the pack before this one.
#[derive(Clone, Debug)]
pub struct Previous {
    /// Its signed checkpoint (at this pack's `start`).
    pub checkpoint: Vec<u8>,
    /// Hex SHA-256 of its manifest, when the whole pack is at hand.
    pub manifest_sha256: Option<String>,
    /// Its day, when known.
    pub day: Option<String>,
}

/// State carried along a chain: key history and rule history.
#[derive(Debug)]
pub struct ChainState<'r> {
    keys: KeyHistory,
    rules: &'r RuleSet,
    evaluator: Evaluator<'r>,
}

impl<'r> ChainState<'r> {
    /// The state before the first pack.
    pub fn new(rules: &'r RuleSet) -> ChainState<'r> {
        ChainState { keys: KeyHistory::new(), rules, evaluator: Evaluator::new(rules) }
    }
}

/// Failure signal inside the verifier.
struct Fail(Failure);

fn fail<T>(file: &str, seq: Option<u64>, message: impl Into<String>) -> Result<T, Fail> {
    Err(Fail(Failure { file: file.to_string(), seq, message: message.into() }))
}

/// The small files of a pack, loaded.
#[derive(Default)]
struct Small {
    files: BTreeMap<String, Vec<u8>>,
}

impl Small {
    fn get(&self, name: &str) -> Result<&[u8], Fail> {
        match self.files.get(name) {
            Some(b) => Ok(b),
            None => fail(name, None, "missing from the pack"),
        }
    }
}

fn read_capped(r: &mut dyn Read, name: &str, cap: u64) -> Result<Vec<u8>, Fail> {
    let mut buf = Vec::new();
    if let Err(e) = r.take(cap + 1).read_to_end(&mut buf) {
        return fail(name, None, format!("cannot read: {e}"));
    }
    if buf.len() as u64 > cap {
        return fail(name, None, format!("over the {cap}-byte limit"));
    }
    Ok(buf)
}

/// Verifies a pack directory or `.tar`.
pub fn verify_pack(
    path: &Path,
    trust: &Trust,
    previous: Option<&Previous>,
    chain: Option<&mut ChainState<'_>>,
    progress: &mut dyn FnMut(u64, u64),
) -> PackResult {
    let mut res = PackResult {
        path: path.display().to_string(),
        day: None,
        start: None,
        end: None,
        manifest_sha256: None,
        checks: Vec::new(),
        failure: None,
    };
    let r = if path.is_dir() {
        verify_dir(path, trust, previous, chain, progress, &mut res)
    } else {
        verify_tar(path, trust, previous, chain, progress, &mut res)
    };
    if let Err(Fail(f)) = r {
        res.checks.push(Check { name: f.file.clone(), status: Status::Failed, detail: f.to_string() });
        res.failure = Some(f);
    }
    res
}

fn verify_dir(
    dir: &Path,
    trust: &Trust,
    previous: Option<&Previous>,
    chain: Option<&mut ChainState<'_>>,
    progress: &mut dyn FnMut(u64, u64),
    res: &mut PackResult,
) -> Result<(), Fail> {
    let mut small = Small::default();
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) => return fail(&dir.display().to_string(), None, format!("cannot list: {e}")),
    };
    for ent in listing {
        let name = match ent {
            Ok(e) => e.file_name().to_string_lossy().into_owned(),
            Err(e) => return fail(&dir.display().to_string(), None, format!("cannot list: {e}")),
        };
        if !files::ORDER.contains(&name.as_str()) {
            return fail(&name, None, "unlisted file in the pack");
        }
    }
    for name in files::ORDER.iter().filter(|n| **n != files::ENTRIES) {
        let p = dir.join(name);
        let mut f = match std::fs::File::open(&p) {
            Ok(f) => f,
            Err(e) => return fail(name, None, format!("cannot open: {e}")),
        };
        small.files.insert(name.to_string(), read_capped(&mut f, name, MAX_SMALL_FILE_BYTES)?);
    }
    let entries = dir.join(files::ENTRIES);
    let open = || std::fs::File::open(&entries).or_else(|e| fail(files::ENTRIES, None, format!("cannot open: {e}")));
    // Hash the compressed file first, so a tampered file is reported as such.
    let mut h = Sha256::new();
    let mut size = 0u64;
    let mut f = open()?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) => return fail(files::ENTRIES, None, format!("cannot read: {e}")),
        }
    }
    let digest = Hash(h.finalize().into());
    let mut reader = open()?;
    verify_loaded(small, Some((digest, size)), &mut reader, trust, previous, chain, progress, res)
}

fn verify_tar(
    path: &Path,
    trust: &Trust,
    previous: Option<&Previous>,
    chain: Option<&mut ChainState<'_>>,
    progress: &mut dyn FnMut(u64, u64),
    res: &mut PackResult,
) -> Result<(), Fail> {
    let tar_name = path.display().to_string();
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return fail(&tar_name, None, format!("cannot open: {e}")),
    };
    // Our tars end with two zero blocks and are a whole number of blocks:
    // anything else was cut or padded.
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len % 512 != 0 || len < 1024 {
        return fail(
            &tar_name,
            None,
            format!("truncated or padded tar: {len} bytes is not a whole number of 512-byte blocks"),
        );
    }
    let mut tail = [0u8; 1024];
    {
        use std::io::{Seek, SeekFrom};
        let mut f = &file;
        if f.seek(SeekFrom::End(-1024))
            .and_then(|_| f.read_exact(&mut tail))
            .and_then(|_| f.seek(SeekFrom::Start(0)))
            .is_err()
        {
            return fail(&tar_name, None, "cannot read the end of the tar");
        }
    }
    if tail.iter().any(|b| *b != 0) {
        return fail(&tar_name, None, "truncated tar: it does not end with the two zero blocks of a complete archive");
    }
    let mut archive = tar::Archive::new(file);
    let mut small = Small::default();
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => return fail(&tar_name, None, format!("not a tar archive: {e}")),
    };
    let mut done = false;
    let mut chain = chain;
    for (next, item) in entries.enumerate() {
        let mut item = match item {
            Ok(i) => i,
            Err(e) => return fail(&tar_name, None, format!("damaged or truncated tar: {e}")),
        };
        let name = match item.path() {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(e) => return fail(&tar_name, None, format!("bad member name: {e}")),
        };
        if done || !files::ORDER.contains(&name.as_str()) {
            return fail(&name, None, "unlisted file in the pack");
        }
        if files::ORDER.get(next) != Some(&name.as_str()) {
            return fail(
                &name,
                None,
                format!("out of order in the tar: expected {}", files::ORDER.get(next).unwrap_or(&"nothing more")),
            );
        }
        if name == files::ENTRIES {
            let expected = small
                .files
                .get(files::MANIFEST)
                .and_then(|b| Manifest::parse(b).ok())
                .and_then(|m| m.files.get(files::ENTRIES).cloned());
            let mut tee = HashingReader { inner: &mut item, hasher: Sha256::new(), size: 0 };
            let r =
                verify_loaded(std::mem::take(&mut small), None, &mut tee, trust, previous, chain.take(), progress, res);
            // Drain, then compare the digest of the compressed bytes: a
            // changed file is reported as such, before any leaf problem.
            if std::io::copy(&mut tee, &mut std::io::sink()).is_err() {
                return fail(&tar_name, None, "damaged or truncated tar");
            }
            let (digest, size) = (Hash(tee.hasher.finalize().into()), tee.size);
            if let Some(info) = expected
                && (digest.to_hex() != info.sha256 || size != info.size)
            {
                return fail(
                    files::ENTRIES,
                    None,
                    format!(
                        "SHA-256 {digest} / {size} bytes, but the manifest lists {} / {} bytes",
                        info.sha256, info.size
                    ),
                );
            }
            r?;
            done = true;
        } else {
            small.files.insert(name.clone(), read_capped(&mut item, &name, MAX_SMALL_FILE_BYTES)?);
        }
    }
    if !done {
        return fail(files::ENTRIES, None, "missing from the pack (or the tar is truncated)");
    }
    Ok(())
}

/// Wraps a reader, hashing and counting what passes through.
struct HashingReader<'a, R: Read> {
    inner: &'a mut R,
    hasher: Sha256,
    size: u64,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

fn day_bounds(day: &str) -> Option<(Timestamp, Timestamp)> {
    let d = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
    let start = Timestamp::start_of_day(d);
    Some((start, Timestamp(start.0 + DAY_MICROS)))
}

fn verified(res: &mut PackResult, name: &str, detail: impl Into<String>) {
    res.checks.push(Check { name: name.into(), status: Status::Verified, detail: detail.into() });
}

fn not_checked(res: &mut PackResult, name: &str, detail: impl Into<String>) {
    res.checks.push(Check { name: name.into(), status: Status::NotChecked, detail: detail.into() });
}

#[allow(clippy::too_many_arguments)]
fn verify_loaded(
    small: Small,
    entries_digest: Option<(Hash, u64)>,
    entries: &mut dyn Read,
    trust: &Trust,
    previous: Option<&Previous>,
    chain: Option<&mut ChainState<'_>>,
    progress: &mut dyn FnMut(u64, u64),
    res: &mut PackResult,
) -> Result<(), Fail> {
    // 1. The manifest and its signatures.
    let mbytes = small.get(files::MANIFEST)?;
    let m = match Manifest::parse(mbytes) {
        Ok(m) => m,
        Err(e) => return fail(files::MANIFEST, None, e.to_string()),
    };
    res.day = Some(m.day.clone());
    res.start = Some(m.start);
    res.end = Some(m.end);
    res.manifest_sha256 = Some(Hash::sha256(mbytes).to_hex());
    let Some((day_start, day_end)) = day_bounds(&m.day) else {
        return fail(files::MANIFEST, None, "bad day");
    };
    let sig_text = small.get(files::MANIFEST_SIG)?;
    let sig = std::str::from_utf8(sig_text)
        .ok()
        .and_then(|s| B64.decode(s.trim_end_matches('\n')).ok())
        .and_then(|b| <[u8; 64]>::try_from(b).ok());
    let Some(sig) = sig else {
        return fail(files::MANIFEST_SIG, None, "not a base64 Ed25519 signature");
    };
    let signer = trust.ledger_keys.iter().find(|k| k.key.verify(mbytes, &sig));
    let Some(signer) = signer else {
        return fail(files::MANIFEST_SIG, None, "manifest.json is not signed by any trusted ledger key");
    };
    if !signer.covers(day_start, day_end) {
        return fail(
            files::MANIFEST_SIG,
            None,
            format!("ledger key {} is not valid for day {} (outside its trusted window)", signer.key.id(), m.day),
        );
    }
    let ledger_keys: Vec<VerifierKey> =
        trust.ledger_keys.iter().filter(|k| k.covers(day_start, day_end)).map(|k| k.key.clone()).collect();
    verified(res, "manifest signature", format!("Ed25519 by trusted ledger key {}", signer.key.id()));
    match &trust.pgp_cert {
        Some(cert) => {
            match crate::pgp::verify_detached(cert, mbytes, small.get(files::MANIFEST_ASC)?, trust.pgp_time) {
                Ok(v) if v.fingerprint != m.pgp_fingerprint => {
                    return fail(
                        files::MANIFEST_ASC,
                        None,
                        format!("signed by {}, but the manifest names {}", v.fingerprint, m.pgp_fingerprint),
                    );
                }
                Ok(_) if !crate::pgp::is_canonical_signature_armor(small.get(files::MANIFEST_ASC)?) => {
                    return fail(
                        files::MANIFEST_ASC,
                        None,
                        "valid signature, but not in the one armored form packs use (altered bytes)",
                    );
                }
                Ok(v) => verified(res, "OpenPGP signature", format!("by {}", v.fingerprint)),
                Err(e) => return fail(files::MANIFEST_ASC, None, e.to_string()),
            }
        }
        None => not_checked(res, "OpenPGP signature", "no --pgp-cert given; manifest.json.asc was NOT checked"),
    }

    // 2. Every listed file.
    for (name, info) in &m.files {
        let (digest, size) = if name == files::ENTRIES {
            match entries_digest {
                Some(d) => d,
                None => continue, // a tar: hashed while streaming, below
            }
        } else {
            let b = small.get(name)?;
            (Hash::sha256(b), b.len() as u64)
        };
        if digest.to_hex() != info.sha256 || size != info.size {
            return fail(
                name,
                None,
                format!(
                    "SHA-256 {digest} / {size} bytes, but the manifest lists {} / {} bytes",
                    info.sha256, info.size
                ),
            );
        }
    }
    verified(res, "file digests", format!("{} files match the manifest; no unlisted files", m.files.len()));

    // 3. The checkpoint.
    let cp = match checkpoint::open(small.get(files::CHECKPOINT)?, &ledger_keys, Some(&m.origin)) {
        Ok(c) => c,
        Err(e) => return fail(files::CHECKPOINT, None, format!("{e}: {}", source_chain(&e))),
    };
    if cp.checkpoint.size != m.end {
        return fail(
            files::CHECKPOINT,
            None,
            format!("tree size {} but the pack ends at {}", cp.checkpoint.size, m.end),
        );
    }
    verified(res, "checkpoint", format!("signed, origin {}, size {}", m.origin, m.end));

    // 4. Link to the previous pack.
    let range = match m.compact_range() {
        Ok(r) => r,
        Err(e) => return fail(files::MANIFEST, None, e.to_string()),
    };
    match (&m.previous, previous) {
        (None, _) if m.start == 0 => verified(res, "previous pack", "first pack of the ledger: nothing before it"),
        (None, _) => return fail(files::MANIFEST, None, "start is not 0 but no previous pack is named"),
        (Some(link), given) => {
            // Signed on an earlier day: any trusted ledger key may have made it.
            let all_keys: Vec<VerifierKey> = trust.ledger_keys.iter().map(|k| k.key.clone()).collect();
            let embedded = match checkpoint::open(link.checkpoint.as_bytes(), &all_keys, Some(&m.origin)) {
                Ok(c) => c,
                Err(e) => return fail(files::MANIFEST, None, format!("previous.checkpoint: {e}")),
            };
            if embedded.checkpoint.size != m.start || embedded.checkpoint.root != range.root() {
                return fail(
                    files::MANIFEST,
                    None,
                    "compact_range does not hash to the root of previous.checkpoint at size start",
                );
            }
            match given {
                Some(p) => {
                    // Compare tree heads, not bytes: the same head may carry
                    // other (witness) signatures.
                    match checkpoint::open(&p.checkpoint, &all_keys, Some(&m.origin)) {
                        Ok(o) if o.checkpoint.head() == embedded.checkpoint.head() => {}
                        Ok(o) if o.checkpoint.size == m.start => {
                            return fail(
                                files::MANIFEST,
                                None,
                                format!(
                                    "FORK: the previous checkpoint you hold has root {} at size {}, but this pack's history has root {}",
                                    o.checkpoint.root, m.start, embedded.checkpoint.root
                                ),
                            );
                        }
                        Ok(o) => {
                            return fail(
                                files::MANIFEST,
                                None,
                                format!(
                                    "the previous checkpoint you hold is at size {}, but this pack starts at {}",
                                    o.checkpoint.size, m.start
                                ),
                            );
                        }
                        Err(e) => {
                            return fail(
                                files::MANIFEST,
                                None,
                                format!("the previous checkpoint given does not open: {e}"),
                            );
                        }
                    }
                    if let Some(sha) = &p.manifest_sha256
                        && *sha != link.manifest_sha256
                    {
                        return fail(
                            files::MANIFEST,
                            None,
                            "previous.manifest_sha256 does not match the previous pack",
                        );
                    }
                    if let Some(day) = &p.day
                        && *day != link.day
                    {
                        return fail(
                            files::MANIFEST,
                            None,
                            format!("previous.day is {}, the previous pack is {day}", link.day),
                        );
                    }
                    verified(
                        res,
                        "consistency with previous pack",
                        format!("compact range of [0, {}) hashes to the previous checkpoint's root", m.start),
                    );
                }
                None => not_checked(
                    res,
                    "consistency with previous pack",
                    "no --previous or --previous-checkpoint given: consistency with the previous pack was NOT checked (only against the checkpoint the manifest names)",
                ),
            }
        }
    }

    // 5. Leaves, 6. the root, 7. the rules.
    let rules = match RuleSet::parse(small.get(files::RULES)?) {
        Ok(r) => r,
        Err(e) => return fail(files::RULES, None, e.to_string()),
    };
    if rules.sha256().to_hex() != m.rules_sha256 {
        return fail(files::RULES, None, "rules_sha256 in the manifest does not match rules.json");
    }
    let report = match Report::parse(small.get(files::REPORT_JSON)?) {
        Ok(r) => r,
        Err(e) => return fail(files::REPORT_JSON, None, e.to_string()),
    };
    if (report.origin.as_str(), report.day.as_str(), report.start, report.end, report.rules_sha256.as_str())
        != (m.origin.as_str(), m.day.as_str(), m.start, m.end, m.rules_sha256.as_str())
    {
        return fail(files::REPORT_JSON, None, "origin, day, range or rules hash differ from the manifest");
    }
    let (chain_keys, chain_rules, chain_evaluator) = match chain {
        Some(ChainState { keys, rules, evaluator }) => (Some(keys), Some(*rules), Some(evaluator)),
        None => (None, None, None),
    };
    let mut keys = KeyHistory::new();
    for k in &m.producer_keys {
        let key = match VerifierKey::parse(&k.key) {
            Ok(v) => v,
            Err(e) => return fail(files::MANIFEST, None, format!("producer_keys: {e}")),
        };
        let (Some(from), until) = (Timestamp::parse(&k.valid_from), k.valid_until.as_deref().map(Timestamp::parse))
        else {
            return fail(files::MANIFEST, None, "producer_keys: bad valid_from");
        };
        if until == Some(None) {
            return fail(files::MANIFEST, None, "producer_keys: bad valid_until");
        }
        keys.insert(
            &k.producer,
            KeyRecord { key, valid_from: from, valid_until: until.flatten(), introduced_seq: k.introduced_seq },
        );
    }
    match chain_keys.as_deref() {
        Some(ck) if *ck != keys => {
            return fail(files::MANIFEST, None, "producer_keys differ from the key history of the earlier packs");
        }
        Some(_) => verified(res, "producer keys", "manifest keys match the key_event history of the earlier packs"),
        None if m.producer_keys.is_empty() => {}
        None => not_checked(
            res,
            "producer keys",
            "producer keys taken from the manifest; their key_events were NOT confirmed (verify the chain to confirm them)",
        ),
    }
    // The chain's evaluator sees every pack as history. The day is judged by
    // a copy of it when this pack evaluates the same rules, else on its own.
    let same_rules = chain_rules.is_some_and(|cr| cr.sha256() == rules.sha256());
    let mut chain_eval = chain_evaluator;
    let (mut day_eval, mut day_eval_chain) = if same_rules {
        (None, chain_eval.as_ref().map(|e| (*e).clone()))
    } else {
        (Some(Evaluator::new(&rules)), None)
    };
    let schemas = match Schemas::shared() {
        Ok(s) => s,
        Err(e) => return fail(files::ENTRIES, None, e.to_string()),
    };
    let ledger_key_ids: Vec<&VerifierKey> = ledger_keys.iter().collect();
    let total = m.end - m.start;
    let limit = (total + 1).saturating_mul(MAX_LINE_BYTES as u64).min(manifest::MAX_ENTRIES_BYTES);
    let decoder = match zstd::stream::read::Decoder::new(entries) {
        Ok(d) => d,
        Err(e) => return fail(files::ENTRIES, None, format!("not zstd: {e}")),
    };
    let mut lines = BufReader::with_capacity(1 << 16, decoder.take(limit + 1));
    let mut range = range;
    let mut counts = Counts::default();
    let mut expect = m.start;
    let mut last_ts = day_start;
    let mut read_bytes = 0u64;
    let mut unsigned = 0u64;
    // Parse, schema-check, read the time and signature of, and locate the
    // signed message of every leaf of a chunk, in parallel: the loop over
    // the chunk that follows is serial and does only what depends on order.
    let parse = |chunk: Chunk| -> (Chunk, Vec<Result<Parsed, String>>) {
        let parsed = (0..chunk.len())
            .into_par_iter()
            .map(|i| {
                let leaf = chunk.get(i);
                let (entry, rec) = Entry::parse_leaf_with_rec(leaf).map_err(|e| e.to_string())?;
                schemas.validate(&entry.rec.kind, &entry.rec.body).map_err(|e| e.to_string())?;
                let ts = entry.timestamp().map_err(|e| e.to_string())?;
                // The signed message is a slice of the canonical leaf.
                let at = chunk.spans[i].start;
                let sig = match &entry.sig {
                    Some(s) => Some((decode_sig(&s.ed25519).map_err(|e| e.to_string())?, at + rec.start..at + rec.end)),
                    None => None,
                };
                Ok(Parsed { entry, ts, sig })
            })
            .collect();
        (chunk, parsed)
    };
    let mut next = read_chunk(&mut lines, expect, &mut read_bytes, limit, total).map(parse);
    loop {
        let (chunk, parsed) = next?;
        if chunk.is_empty() {
            break;
        }
        if expect + chunk.len() as u64 > m.end {
            return fail(
                files::ENTRIES,
                Some(m.end),
                format!("more entries than the manifest's range [{}, {})", m.start, m.end),
            );
        }
        // Signatures to check: (seq, message range in the chunk, signature,
        // index into `sig_keys`), so no key or message is copied per entry.
        let mut batch: Vec<(u64, std::ops::Range<usize>, [u8; 64], usize)> = Vec::new();
        let mut sig_keys: Vec<VerifierKey> = Vec::new();
        let mut chunk_entries: Vec<(Entry, Timestamp)> = Vec::with_capacity(chunk.len());
        for (i, p) in parsed.into_iter().enumerate() {
            let seq = expect + i as u64;
            let Parsed { entry: e, ts, sig: raw_sig } = match p {
                Ok(x) => x,
                Err(why) => return fail(files::ENTRIES, Some(seq), why),
            };
            if e.seq != seq {
                return fail(
                    files::ENTRIES,
                    Some(seq),
                    format!("leaf says seq {}, expected {seq} (missing, inserted or reordered entry)", e.seq),
                );
            }
            if ts < day_start || ts >= day_end {
                return fail(files::ENTRIES, Some(seq), format!("ts {} is outside day {}", e.ts, m.day));
            }
            if ts < last_ts {
                return fail(files::ENTRIES, Some(seq), format!("ts {} is before the previous entry's", e.ts));
            }
            last_ts = ts;
            if let (Some(sig), Some((raw, msg))) = (&e.sig, raw_sig) {
                let key = match ledger_key_ids.iter().find(|k| k.name() == e.rec.producer && k.has_id(&sig.key)) {
                    Some(k) => *k,
                    None => match keys.key_at(&e.rec.producer, &sig.key, ts) {
                        Ok(k) => k,
                        Err(err) => return fail(files::ENTRIES, Some(seq), err.to_string()),
                    },
                };
                if trust.producer_signatures {
                    let k = match sig_keys.iter().position(|k| k == key) {
                        Some(k) => k,
                        None => {
                            sig_keys.push(key.clone());
                            sig_keys.len() - 1
                        }
                    };
                    batch.push((seq, msg, raw, k));
                }
            } else {
                unsigned += 1;
            }
            if e.rec.kind == "key_event" {
                if !ledger_key_ids.iter().any(|k| e.sig.as_ref().is_some_and(|s| k.has_id(&s.key))) {
                    return fail(files::ENTRIES, Some(seq), "key_event not signed by a trusted ledger key");
                }
                let body: KeyEventBody = match serde_json::from_value(e.rec.body.clone()) {
                    Ok(b) => b,
                    Err(err) => return fail(files::ENTRIES, Some(seq), format!("key_event: {err}")),
                };
                if let Err(err) = keys.apply(seq, ts, &body) {
                    return fail(files::ENTRIES, Some(seq), err.to_string());
                }
            }
            chunk_entries.push((e, ts));
        }
        // The producer signatures (across cores) and the tree and rules pass
        // over this chunk run while the next chunk is decompressed and
        // parsed. A failure in this chunk is reported before anything found
        // in the next one.
        let first = expect;
        let (observed, read) = std::thread::scope(|s| {
            let worker = s.spawn(|| {
                let (bad, observed) = rayon::join(
                    || first_bad_signature(&batch, &sig_keys, &chunk.buf),
                    || -> Result<(), Fail> {
                        // By value: each entry is freed here, beside the
                        // signature checks, not on the serial path.
                        for (i, (e, ts)) in chunk_entries.into_iter().enumerate() {
                            let seq = first + i as u64;
                            range.append(leaf_hash(chunk.get(i)));
                            counts.add(&e.rec.kind, &e.rec.producer);
                            let r = match (&mut day_eval, &mut day_eval_chain) {
                                (Some(d), _) => d.observe(seq, ts, &e.rec),
                                (None, Some(d)) => d.observe(seq, ts, &e.rec),
                                (None, None) => Ok(()),
                            };
                            if let Err(err) = r {
                                return fail(files::ENTRIES, Some(seq), err.to_string());
                            }
                            // Under the same rules the day's copy is carried
                            // into the chain afterwards; otherwise feed it.
                            if !same_rules
                                && let Some(c) = chain_eval.as_deref_mut()
                                && let Err(err) = c.history(seq, ts, &e.rec)
                            {
                                return fail(files::ENTRIES, Some(seq), err.to_string());
                            }
                        }
                        Ok(())
                    },
                );
                match bad {
                    Some(seq) => fail(files::ENTRIES, Some(seq), "producer signature does not verify over JCS(rec)"),
                    None => observed,
                }
            });
            let read = read_chunk(&mut lines, first + chunk.len() as u64, &mut read_bytes, limit, total).map(parse);
            (worker.join(), read)
        });
        match observed {
            Ok(r) => r?,
            Err(panic) => std::panic::resume_unwind(panic),
        }
        expect += chunk.len() as u64;
        progress(expect - m.start, total);
        next = read;
    }
    if expect != m.end {
        return fail(
            files::ENTRIES,
            Some(expect),
            format!("{} entries, but the manifest's range [{}, {}) needs {total}", expect - m.start, m.start, m.end),
        );
    }
    if counts != m.counts || counts != report.counts {
        return fail(files::MANIFEST, None, "counts per kind or producer differ from the entries");
    }
    verified(
        res,
        "entries",
        format!("{total} leaves: canonical, contiguous seq {}..{}, ts inside {}, schemas valid", m.start, m.end, m.day),
    );
    if trust.producer_signatures {
        verified(res, "producer signatures", "every signed record verifies under the producer key valid at its ts");
        if unsigned > 0 {
            not_checked(
                res,
                "unsigned records",
                format!("{unsigned} records carry no producer signature (producers configured as unsigned)"),
            );
        }
    } else {
        not_checked(res, "producer signatures", "producer signature checks were turned off");
    }
    if range.root() != cp.checkpoint.root {
        return fail(
            files::CHECKPOINT,
            None,
            format!(
                "the leaves give root {}, the checkpoint says {} (an entry was changed, removed or inserted)",
                range.root(),
                cp.checkpoint.root
            ),
        );
    }
    verified(
        res,
        "inclusion",
        format!("compact range + {total} leaves hash to the checkpoint root: every entry is in the signed tree"),
    );

    // 7. Rules.
    if let (Some(c), Some(d)) = (&mut chain_eval, day_eval_chain.as_ref()) {
        **c = d.carry();
    }
    let computed = match (day_eval, day_eval_chain) {
        (Some(d), _) => d.finish(),
        (None, Some(d)) => d.finish(),
        (None, None) => Vec::new(),
    };
    if same_rules {
        if let Err(e) = compare_outcomes(&report.rules, &computed) {
            return fail(
                files::REPORT_JSON,
                None,
                format!("report disagrees with the rules re-evaluated over the chain: {e}"),
            );
        }
        verified(res, "report", format!("all {} rule outcomes re-derived over the whole chain", computed.len()));
    } else {
        let independent: BTreeMap<String, bool> = rules.history_independent().into_iter().collect();
        let pick = |v: &[crate::rules::RuleOutcome]| -> Vec<crate::rules::RuleOutcome> {
            v.iter().filter(|o| independent.get(&o.id).copied().unwrap_or(false)).cloned().collect()
        };
        if report.rules.len() != computed.len() {
            return fail(files::REPORT_JSON, None, "the report lists a different number of rules than rules.json");
        }
        if let Err(e) = compare_outcomes(&pick(&report.rules), &pick(&computed)) {
            return fail(
                files::REPORT_JSON,
                None,
                format!("report disagrees with the rules re-evaluated over the entries: {e}"),
            );
        }
        let dependent: Vec<String> = independent.iter().filter(|(_, i)| !**i).map(|(id, _)| id.clone()).collect();
        verified(
            res,
            "report",
            format!("{} rule outcomes re-derived from this pack", computed.len() - dependent.len()),
        );
        if !dependent.is_empty() {
            not_checked(
                res,
                "report (history rules)",
                format!(
                    "{} link back in time and were NOT re-derived from one pack: verify the chain",
                    dependent.join(", ")
                ),
            );
        }
    }
    if let Some(ck) = chain_keys {
        *ck = keys;
    }
    Ok(())
}

/// Reads up to [`CHUNK`] lines of `entries.jsonl` (without their newlines),
/// enforcing the line length and the decompressed-size limit; `first` is the
/// seq of the first line, for messages.
fn read_chunk(
    lines: &mut impl BufRead,
    first: u64,
    read_bytes: &mut u64,
    limit: u64,
    total: u64,
) -> Result<Chunk, Fail> {
    let mut chunk = Chunk { buf: Vec::with_capacity(CHUNK * 1024), spans: Vec::with_capacity(CHUNK) };
    while chunk.len() < CHUNK && chunk.buf.len() < CHUNK_BYTES {
        let seq = first + chunk.len() as u64;
        let start = chunk.buf.len();
        let n = match lines.take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut chunk.buf) {
            Ok(n) => n,
            Err(e) => return fail(files::ENTRIES, Some(seq), format!("cannot decompress: {e}")),
        };
        if n == 0 {
            break;
        }
        let line = &chunk.buf[start..];
        *read_bytes += n as u64;
        if *read_bytes > limit {
            return fail(
                files::ENTRIES,
                Some(seq),
                format!("decompresses to more than {limit} bytes (limit for {total} entries)"),
            );
        }
        if line.last() != Some(&b'\n') {
            if line.len() > MAX_LINE_BYTES - 1 {
                return fail(files::ENTRIES, Some(seq), format!("line longer than {MAX_LINE_BYTES} bytes"));
            }
            return fail(files::ENTRIES, Some(seq), "last line has no newline (truncated)");
        }
        chunk.spans.push(start..chunk.buf.len() - 1);
    }
    Ok(chunk)
}

/// One leaf after the parallel part of its checks.
struct Parsed {
    entry: Entry,
    ts: Timestamp,
    /// The decoded signature and where its message (JCS(rec)) lies in the
    /// chunk's buffer; `None` for an unsigned record.
    sig: Option<([u8; 64], std::ops::Range<usize>)>,
}

/// Lines of `entries.jsonl` in one buffer, without their newlines.
struct Chunk {
    buf: Vec<u8>,
    spans: Vec<std::ops::Range<usize>>,
}

impl Chunk {
    fn len(&self) -> usize {
        self.spans.len()
    }

    fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    fn get(&self, i: usize) -> &[u8] {
        &self.buf[self.spans[i].clone()]
    }
}

/// Verifies signatures in parallel batches; returns the first bad seq.
fn first_bad_signature(
    batch: &[(u64, std::ops::Range<usize>, [u8; 64], usize)],
    keys: &[VerifierKey],
    buf: &[u8],
) -> Option<u64> {
    let items: Vec<(&VerifierKey, &[u8], &[u8; 64])> =
        batch.iter().map(|b| (&keys[b.3], &buf[b.1.clone()], &b.2)).collect();
    crate::sig::verify_many_in(&items, crate::sig::PACK_BATCH)
        .into_iter()
        .zip(batch)
        .find(|(ok, _)| !ok)
        .map(|(_, b)| b.0)
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = String::new();
    let mut c = e.source();
    while let Some(x) = c {
        if !s.is_empty() {
            s.push_str(": ");
        }
        s.push_str(&x.to_string());
        c = x.source();
    }
    s
}

/// The result of verifying a chain of packs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainResult {
    /// The directory.
    pub path: String,
    /// Each pack, in day order, up to the first failure.
    pub packs: Vec<PackResult>,
    /// The first failure.
    pub failure: Option<Failure>,
}

/// Finds the packs in `dir`: `YYYY-MM-DD/` directories, or `YYYY-MM-DD.tar`
/// files where no directory of that day exists, in day order.
pub fn find_packs(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    for ent in std::fs::read_dir(dir)? {
        let ent = ent?;
        let name = ent.file_name().to_string_lossy().into_owned();
        let (day, is_dir) = match name.strip_suffix(".tar") {
            Some(d) => (d.to_string(), false),
            None => (name.clone(), true),
        };
        if chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d").is_err() || day.len() != 10 {
            continue;
        }
        if is_dir != ent.path().is_dir() {
            continue;
        }
        if is_dir || !found.contains_key(&day) {
            found.insert(day, ent.path());
        }
    }
    Ok(found.into_iter().collect())
}

/// Verifies every pack of a ledger in day order, from the first: each pack
/// fully, each link (previous manifest hash, checkpoint consistency), no gap
/// and no fork, with rules that link back in time evaluated over the chain.
pub fn verify_chain(dir: &Path, trust: &Trust, progress: &mut dyn FnMut(&str, u64, u64)) -> ChainResult {
    let mut out = ChainResult { path: dir.display().to_string(), packs: Vec::new(), failure: None };
    let packs = match find_packs(dir) {
        Ok(p) => p,
        Err(e) => {
            out.failure = Some(Failure { file: out.path.clone(), seq: None, message: format!("cannot list: {e}") });
            return out;
        }
    };
    if packs.is_empty() {
        out.failure =
            Some(Failure { file: out.path.clone(), seq: None, message: "no packs (YYYY-MM-DD/ or .tar) found".into() });
        return out;
    }
    // The rules of the first pack drive the chain's history evaluation.
    let first_rules = read_rules(&packs[0].1);
    let rules = match first_rules.as_deref().map(RuleSet::parse) {
        Some(Ok(r)) => r,
        _ => {
            out.failure = Some(Failure {
                file: packs[0].1.display().to_string(),
                seq: None,
                message: "rules.json unreadable".into(),
            });
            return out;
        }
    };
    let mut state = ChainState::new(&rules);
    let mut prev: Option<(String, Previous)> = None;
    for (day, path) in &packs {
        if let Some((pday, _)) = &prev {
            let expected = chrono::NaiveDate::parse_from_str(pday, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.succ_opt())
                .map(|d| d.to_string());
            if expected.as_deref() != Some(day.as_str()) {
                out.failure = Some(Failure {
                    file: path.display().to_string(),
                    seq: None,
                    message: format!(
                        "gap in the chain: the pack after {pday} is {day} (missing {})",
                        expected.unwrap_or_default()
                    ),
                });
                return out;
            }
        }
        let r =
            verify_pack(path, trust, prev.as_ref().map(|p| &p.1), Some(&mut state), &mut |d, t| progress(day, d, t));
        let ok = r.ok();
        let mut r = r;
        if ok && r.day.as_deref() != Some(day.as_str()) {
            r.failure = Some(Failure {
                file: path.display().to_string(),
                seq: None,
                message: format!("named {day} but the manifest says {:?}", r.day),
            });
        }
        if prev.is_none() && r.ok() && r.start != Some(0) {
            r.failure = Some(Failure {
                file: path.display().to_string(),
                seq: None,
                message: "the first pack of the chain does not start at seq 0 (earlier packs missing)".into(),
            });
        }
        let failed = r.failure.clone();
        out.packs.push(r);
        if let Some(f) = failed {
            out.failure = Some(Failure { file: format!("{}/{}", path.display(), f.file), ..f });
            return out;
        }
        let cp = read_member(path, files::CHECKPOINT).unwrap_or_default();
        let sha = out.packs.last().and_then(|p| p.manifest_sha256.clone());
        prev = Some((day.clone(), Previous { checkpoint: cp, manifest_sha256: sha, day: Some(day.clone()) }));
    }
    out
}

fn read_rules(path: &Path) -> Option<Vec<u8>> {
    read_member(path, files::RULES)
}

/// Reads one small member of a pack directory or tar.
pub fn read_member(path: &Path, name: &str) -> Option<Vec<u8>> {
    if path.is_dir() {
        let mut f = std::fs::File::open(path.join(name)).ok()?;
        let mut b = Vec::new();
        (&mut f).take(MAX_SMALL_FILE_BYTES).read_to_end(&mut b).ok()?;
        return Some(b);
    }
    let mut a = tar::Archive::new(std::fs::File::open(path).ok()?);
    for item in a.entries().ok()? {
        let mut item = item.ok()?;
        if item.path().ok()?.to_string_lossy() == name {
            let mut b = Vec::new();
            (&mut item).take(MAX_SMALL_FILE_BYTES).read_to_end(&mut b).ok()?;
            return Some(b);
        }
    }
    None
}
