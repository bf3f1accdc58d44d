//! `verify-db`: recompute every leaf hash, tile and checkpoint root from the
//! stored leaves, and report the first mismatch by seq. This catches edits
//! made behind the triggers' back (plain SQL with the triggers dropped).

use evident_verify::checkpoint;
use evident_verify::hash::{Hash, leaf_hash};
use evident_verify::keys::{KeyEventBody, KeyHistory};
use evident_verify::leaf::Entry;
use evident_verify::ts::Timestamp;
use serde::Serialize;

use crate::error::StoreError;
use crate::ledger::Ledger;
use crate::store::{self, Frontier, to_u64};

/// What a clean check covered.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct VerifyDbReport {
    /// Entries checked.
    pub entries: u64,
    /// Tiles recomputed and compared.
    pub tiles: u64,
    /// Checkpoints whose signature and root were checked.
    pub checkpoints: u64,
    /// Root of the whole tree (hex).
    pub root: String,
}

/// The first problem found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyDbError {
    /// Evidence in the database is wrong.
    #[error("{}: {what}", .seq.map_or("ledger".to_string(), |s| format!("entry seq {s}")))]
    Mismatch {
        /// The first seq at fault, when one is.
        seq: Option<u64>,
        /// What is wrong.
        what: String,
    },
    /// The database could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn bad(seq: impl Into<Option<u64>>, what: impl Into<String>) -> VerifyDbError {
    VerifyDbError::Mismatch { seq: seq.into(), what: what.into() }
}

/// Checks the whole database. `progress(done, total)` is called as it goes.
pub fn verify_db(ledger: &Ledger, mut progress: impl FnMut(u64, u64)) -> Result<VerifyDbReport, VerifyDbError> {
    let opts = ledger.options();
    let conn = store::open_connection(&opts.path, opts.synchronous)?;
    let tx = conn.unchecked_transaction().map_err(StoreError::from)?;
    let total = store::size(&tx)?;
    let ledger_key = opts.key.verifier();

    let mut checkpoints: Vec<(u64, String)> = Vec::new();
    {
        let mut stmt = tx.prepare("SELECT size, note FROM checkpoints ORDER BY size").map_err(StoreError::from)?;
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))).map_err(StoreError::from)?;
        for r in rows {
            let (s, n) = r.map_err(StoreError::from)?;
            checkpoints.push((to_u64(s)?, n));
        }
    }
    let key_event_seqs: Vec<u64> = {
        let mut stmt = tx.prepare("SELECT seq FROM key_events ORDER BY seq").map_err(StoreError::from)?;
        let rows = stmt.query_map([], |r| r.get::<_, i64>(0)).map_err(StoreError::from)?;
        rows.map(|r| r.map_err(StoreError::from).and_then(to_u64)).collect::<Result<_, _>>()?
    };
    let stored_tiles: i64 = tx.query_row("SELECT count(*) FROM tiles", [], |r| r.get(0)).map_err(StoreError::from)?;

    let check_cp = |front: &Frontier, cps: &mut std::iter::Peekable<std::vec::IntoIter<(u64, String)>>| {
        while let Some((size, _)) = cps.peek() {
            if *size != front.range.size() {
                break;
            }
            let Some((size, note)) = cps.next() else { break };
            let cp = checkpoint::open(note.as_bytes(), std::slice::from_ref(&ledger_key), Some(&opts.origin))
                .map_err(|e| bad(None, format!("checkpoint at size {size}: {e}")))?;
            if cp.checkpoint.size != size {
                return Err(bad(
                    None,
                    format!("checkpoint row {size} holds a checkpoint for size {}", cp.checkpoint.size),
                ));
            }
            let root = front.range.root();
            if cp.checkpoint.root != root {
                return Err(bad(
                    size.checked_sub(1),
                    format!("checkpoint at size {size} has root {}, leaves give {}", cp.checkpoint.root, root),
                ));
            }
        }
        Ok::<(), VerifyDbError>(())
    };

    let mut cps = checkpoints.clone().into_iter().peekable();
    let mut front = Frontier::default();
    let mut keys = KeyHistory::new();
    let mut tiles = 0u64;
    let mut last_ts = i64::MIN;
    let mut kev = key_event_seqs.iter().peekable();
    check_cp(&front, &mut cps)?;
    let mut stmt = tx.prepare("SELECT seq, ts, idkey, leaf FROM entries ORDER BY seq").map_err(StoreError::from)?;
    let mut rows = stmt.query([]).map_err(StoreError::from)?;
    let mut expect = 0u64;
    let mut ids = crate::idindex::Digest::default();
    while let Some(r) = rows.next().map_err(StoreError::from)? {
        let seq = to_u64(r.get(0).map_err(StoreError::from)?)?;
        if seq != expect {
            return Err(bad(expect, "entry is missing (seqs are not contiguous)"));
        }
        let ts: i64 = r.get(1).map_err(StoreError::from)?;
        let idkey: i64 = r.get(2).map_err(StoreError::from)?;
        let leaf: Vec<u8> = r.get(3).map_err(StoreError::from)?;
        let e = Entry::parse_leaf(&leaf).map_err(|e| bad(seq, format!("leaf: {e}")))?;
        if e.seq != seq {
            return Err(bad(seq, format!("leaf says seq {}", e.seq)));
        }
        let ets = e.timestamp().map_err(|e| bad(seq, e.to_string()))?;
        if ets.0 != ts {
            return Err(bad(seq, format!("ts column {} differs from the leaf's {}", Timestamp(ts), e.ts)));
        }
        if ts < last_ts {
            return Err(bad(seq, "ts decreases"));
        }
        last_ts = ts;
        if idkey != store::idkey(&e.rec.producer, &e.rec.id) {
            return Err(bad(seq, "idkey column does not match (producer, id)"));
        }
        ids.add(idkey, seq);
        if let Some(sig) = &e.sig {
            let key = if e.rec.producer == ledger_key.name() && sig.key == ledger_key.id() {
                ledger_key.clone()
            } else {
                keys.key_at(&e.rec.producer, &sig.key, ets).map_err(|err| bad(seq, err.to_string()))?.clone()
            };
            e.rec.verify(sig, &key).map_err(|err| bad(seq, err.to_string()))?;
        } else if !opts.unsigned_producers.contains(&e.rec.producer) {
            return Err(bad(seq, format!("unsigned record from producer {:?}", e.rec.producer)));
        }
        let is_kev = kev.peek() == Some(&&seq);
        if is_kev {
            kev.next();
        }
        if (e.rec.kind == "key_event") != is_kev {
            return Err(bad(seq, "key_events index disagrees with the entry's kind"));
        }
        if is_kev {
            let body: KeyEventBody =
                serde_json::from_value(e.rec.body.clone()).map_err(|err| bad(seq, format!("key_event: {err}")))?;
            if e.sig.is_none() || e.rec.producer != ledger_key.name() {
                return Err(bad(seq, "key_event not signed by the ledger key"));
            }
            keys.apply(seq, ets, &body).map_err(|err| bad(seq, err.to_string()))?;
        }
        for (level, idx, row) in front.push(leaf_hash(&leaf)) {
            tiles += 1;
            let stored = store::tile(&tx, level, idx)?;
            if stored.as_deref() != Some(&row[..]) {
                let first = (idx * crate::store::TILE_WIDTH) << (u32::from(level) * 4);
                return Err(bad(first, format!("stored tile ({level}, {idx}) does not match the leaves it covers")));
            }
        }
        expect += 1;
        check_cp(&front, &mut cps)?;
        if expect.is_multiple_of(4096) {
            progress(expect, total);
        }
    }
    progress(expect, total);
    if let Some((size, _)) = cps.next() {
        return Err(bad(None, format!("checkpoint for size {size} is beyond the {expect} entries")));
    }
    if let Some(s) = kev.next() {
        return Err(bad(*s, "key_events index names a missing entry"));
    }
    if u64::try_from(stored_tiles).unwrap_or(u64::MAX) != tiles {
        return Err(bad(None, format!("{stored_tiles} tiles stored, but the leaves give {tiles}")));
    }
    if let Some(problem) = crate::idindex::check(&tx, (expect, ids))? {
        return Err(bad(None, problem));
    }
    let root: Hash = front.range.root();
    Ok(VerifyDbReport { entries: expect, tiles, checkpoints: checkpoints.len() as u64, root: root.to_hex() })
}
