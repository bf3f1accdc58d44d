//! The idempotency index: which entries may hold a given `(producer, id)`.
//!
//! ## Why levels
//! The index is keyed by [`crate::store::idkey`], a hash, so one B-tree over all
//! entries puts every insert on a random page. In a 10M-entry ledger that
//! page is almost never dirty already, and each record cost a 16 KiB page
//! written to the WAL and again at checkpoint: 32.6 KB written per ~600-byte
//! record, a sixth of the speed of appending to a fresh ledger
//! (docs/perf/README.md). So the index has levels, as a log-structured
//! merge tree does:
//!
//! - `recent(seq, idkeys)`: one row per commit, appended in `seq` order:
//!   the idkeys of entries `seq`, `seq + 1`, … packed as 8-byte big-endian
//!   integers. A commit writes one row, on the table's last page, however
//!   large the table is. Each writer keeps the rows in memory as a hash
//!   map from idkey to seq (loaded when it first commits, then extended by
//!   its own and other processes' commits), so a lookup in it costs no I/O.
//! - `ids(idkey, seq)`: merged level 1, a B-tree by `idkey`. Rows of
//!   `recent` move into it in `(idkey, seq)` order, a few hundred per
//!   commit, so a merge writes each page of `ids` about once, not once per
//!   record.
//! - `ids_deep(level, idkey, seq)`: merged levels 2, 3, …, each a key
//!   range of one B-tree, each [`LEVEL_RATIO`] times larger than the one
//!   above it. A level past its size is compacted into the next
//!   (`Compaction`).
//!
//! A lookup takes the candidates of every level (one B-tree search per
//! merged level: 1 up to 9M entries, 3 at 100M) and the caller compares
//! the stored records: the hash only narrows the search. A batch of 64
//! records or more reads the merged levels' before it takes the write lock
//! (`Probe`); the commit reads them again only if a merge may have moved
//! rows out of `recent` since.
//!
//! ## Merging
//! A merge starts when `recent` holds as many rows as an eighth of the
//! entries before it (at least [`MERGE_MIN`] and at most [`MERGE_MAX`]).
//! Its state is the meta row `ids_merging`, written in the same transaction
//! as each step:
//!
//! - `"<bound> start"` or `"<bound> <idkey> <seq>"`: the entries of
//!   `recent` below `seq` `bound` are being copied into `ids` in
//!   `(idkey, seq)` order; all up to the named one are in.
//! - `"<bound> done"`: all are in `ids`; rows of `recent` below `bound` are
//!   being deleted, oldest first.
//!
//! `bound` is a tree size some commit started at, so no row of `recent`
//! straddles it: a row holds one whole commit.
//!
//! Every step is part of an append's commit: a crash loses no progress,
//! and whichever process commits next continues the merge. A writer's set
//! always holds every row of `recent` below its last seen size (and
//! possibly rows already merged, which do no harm), so writers in different
//! processes step through the same rows; rows below the end of the last
//! merge (`ids_upto`) are never copied again. The invariant, checked by
//! `verify-db`: every entry's `(idkey, seq)` is in `recent` or in one
//! merged level (in both `recent` and a merged level while a merge runs),
//! and none holds anything else.
//!
//! ## Compaction, and what the index costs
//! A merge rewrites the pages of `ids`, so with `ids` as the only merged
//! level the index wrote a few hundred bytes per record while merges grew
//! with the ledger (370 B measured at 10M entries), and linearly more once
//! [`MERGE_MAX`] capped them: ~3.7 KB per record at 100M entries, O(n).
//! Levels bound it: level 1 holds at most [`LEVEL_RATIO`] merges (8M rows)
//! before its rows move to level 2, level 2 at most [`LEVEL_RATIO`] times
//! that, and so on, so each merge or compaction rewrites at most
//! [`LEVEL_RATIO`] times the rows it brings, and each row moves once per
//! level: O(log n) bytes per record. A compaction moves rows in
//! `(idkey, seq)` order, a few hundred per commit plus four per record
//! (the meta row `ids_compact` is its cursor); it runs beside merges. The
//! meta row `ids_levels` counts each level's rows. The
//! in-memory set holds at most about 1.3 × [`MERGE_MAX`] rows (the rows
//! that arrive while a merge runs: at least 4 are copied and 16 deleted per
//! record appended), 17–34 bytes each in the hash map (by its fill), plus
//! 16 bytes per row being merged for the copy order while a merge copies:
//! at most ~52 MiB.

use std::collections::{HashMap, HashSet};

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::StoreError;
use crate::store::{to_i64, to_u64};

/// Fewest rows of `recent` that start a merge (unless the ledger is opened
/// with a lower [`crate::LedgerOptions::merge_min`]).
pub const MERGE_MIN: u64 = 1 << 16;
/// Most rows of `recent` before a merge starts, whatever the ledger's size.
pub const MERGE_MAX: u64 = 1 << 20;
/// A merge starts when `recent` holds this fraction of the merged entries.
const MERGE_RATIO: u64 = 8;
/// Rows one commit merges: a base (256 with the default [`MERGE_MIN`],
/// fewer with a lower one) plus a multiple of the commit's records, so a
/// merge finishes before `recent` has grown by half.
const STEP_PER_RECORD: u64 = 4;
/// Rows of `recent` one commit deletes once they are merged: a base (4096
/// by default) plus a multiple of the commit's records.
const DELETE_PER_RECORD: u64 = 16;

/// Each merged level holds this many times the rows of the one above it
/// (level 1: the largest merge) before it is compacted into the next.
pub const LEVEL_RATIO: u64 = 8;
/// Rows one compaction step moves: a base (256 by default) plus a multiple
/// of the commit's records, so that a level is compacted before the level
/// above it has filled again.
const MOVE_PER_RECORD: u64 = 4;

/// Meta row: the merge in progress ([`Merge`]). Until schema v3 it was
/// `ids_merge`, which now holds a value binaries of schema v2 refuse (see
/// the migration in [`crate::store`]).
const STATE_KEY: &str = "ids_merging";
/// Meta row: rows per merged level ([`Levels`]).
const LEVELS_KEY: &str = "ids_levels";
/// Meta row: the compaction in progress ([`Compaction`]).
const COMPACT_KEY: &str = "ids_compact";
/// Meta row: every entry below it is in `ids` (set by the migration to v2
/// and by each merge); what `recent` must cover when it is empty.
const INDEXED_FROM_KEY: &str = "ids_upto";

/// Where a merge stands (the meta row `ids_merge`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Merge {
    Idle,
    /// Copying rows of `recent` below `bound`; those up to `after` are in.
    Copying {
        bound: u64,
        after: Option<(i64, u64)>,
    },
    /// Deleting the rows of `recent` below `bound`.
    Deleting {
        bound: u64,
    },
}

impl Merge {
    fn read(conn: &Connection) -> Result<Merge, StoreError> {
        let Some(v) = meta(conn, STATE_KEY)? else { return Ok(Merge::Idle) };
        let bad = || StoreError::Corrupt(format!("meta {STATE_KEY} = {v:?} is not a merge state"));
        let mut parts = v.split(' ');
        let bound: u64 = parts.next().and_then(|b| b.parse().ok()).ok_or_else(bad)?;
        let state = match (parts.next(), parts.next(), parts.next()) {
            (Some("start"), None, None) => Merge::Copying { bound, after: None },
            (Some("done"), None, None) => Merge::Deleting { bound },
            (Some(k), Some(s), None) => {
                Merge::Copying { bound, after: Some((k.parse().map_err(|_| bad())?, s.parse().map_err(|_| bad())?)) }
            }
            _ => return Err(bad()),
        };
        Ok(state)
    }

    fn write(self, conn: &Connection) -> Result<(), StoreError> {
        let v = match self {
            Merge::Idle => return set_meta(conn, STATE_KEY, None),
            Merge::Copying { bound, after: None } => format!("{bound} start"),
            Merge::Copying { bound, after: Some((k, s)) } => format!("{bound} {k} {s}"),
            Merge::Deleting { bound } => format!("{bound} done"),
        };
        set_meta(conn, STATE_KEY, Some(&v))
    }
}

/// Rows per merged level (the meta row `ids_levels`, space-separated):
/// element 0 is level 1 (`ids`), element `i` level `i + 1` of `ids_deep`.
/// Counted as merges and compactions end (a row merged twice after a crash
/// may count twice: they only decide when to compact). Without the row
/// (a ledger from before v3), level 1 holds every entry below `ids_upto`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Levels(Vec<u64>);

impl Levels {
    fn read(conn: &Connection) -> Result<Levels, StoreError> {
        let Some(v) = meta(conn, LEVELS_KEY)? else {
            return Ok(Levels(vec![merged_upto(conn)?]));
        };
        let counts: Option<Vec<u64>> = v.split(' ').map(|c| c.parse().ok()).collect();
        match counts {
            Some(c) if !c.is_empty() => Ok(Levels(c)),
            _ => Err(StoreError::Corrupt(format!("meta {LEVELS_KEY} = {v:?} is not a list of row counts"))),
        }
    }

    fn write(&self, conn: &Connection) -> Result<(), StoreError> {
        let v: Vec<String> = self.0.iter().map(u64::to_string).collect();
        set_meta(conn, LEVELS_KEY, Some(&v.join(" ")))
    }
}

/// A compaction of one merged level into the next (the meta row
/// `ids_compact`, `"<from> <moved> <idkey> <seq>"`): the rows of level
/// `from` up to `(idkey, seq)` have moved to level `from + 1`, `moved` of
/// them. Each step moves the next rows in `(idkey, seq)` order, inserting
/// them into the deeper level and deleting them from `from` in the same
/// transaction, so a row is always in exactly one level; rows that reach
/// level 1 behind the cursor meanwhile wait for its next compaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Compaction {
    from: i64,
    moved: u64,
    after: (i64, i64),
}

impl Compaction {
    /// Below every row: seqs are not negative.
    const START: (i64, i64) = (i64::MIN, -1);

    fn read(conn: &Connection) -> Result<Option<Compaction>, StoreError> {
        let Some(v) = meta(conn, COMPACT_KEY)? else { return Ok(None) };
        let p: Vec<Option<i64>> = v.split(' ').map(|x| x.parse().ok()).collect();
        match p[..] {
            [Some(from), Some(moved), Some(k), Some(s)] if from >= 1 && moved >= 0 => {
                Ok(Some(Compaction { from, moved: moved as u64, after: (k, s) }))
            }
            _ => Err(StoreError::Corrupt(format!("meta {COMPACT_KEY} = {v:?} is not a compaction state"))),
        }
    }

    fn write(state: Option<Compaction>, conn: &Connection) -> Result<(), StoreError> {
        let v = state.map(|c| format!("{} {} {} {}", c.from, c.moved, c.after.0, c.after.1));
        set_meta(conn, COMPACT_KEY, v.as_deref())
    }
}

/// The merged levels a lookup must search: every level whose count is not
/// zero, and the levels rows are entering before they are counted (counts
/// change when a merge or compaction ends): level 1 while a merge runs, and
/// the level a compaction fills. A count is never below the rows its level
/// holds (a row merged twice after a crash counts twice; a compaction
/// subtracts only the rows it moved), so every other level is empty, and
/// a new ledger's lookups (nothing merged before 65,536 entries) read no
/// B-tree at all.
fn levels_to_search(conn: &Connection, levels: &Levels, merging: bool) -> Result<Vec<i64>, StoreError> {
    let filling = Compaction::read(conn)?.map(|c| c.from + 1);
    Ok((1..=levels.0.len().max(1) as i64)
        .filter(|&l| levels.0.get(l as usize - 1).is_none_or(|&n| n > 0) || (l == 1 && merging) || filling == Some(l))
        .chain(filling.filter(|&l| l > levels.0.len().max(1) as i64))
        .collect())
}

/// The seqs of `idkey` in the merged levels `search`, appended to `out`.
fn merged_seqs(conn: &Connection, search: &[i64], idkey: i64, out: &mut Vec<u64>) -> Result<(), StoreError> {
    for &level in search {
        if level == 1 {
            let mut stmt = conn.prepare_cached("SELECT seq FROM ids WHERE idkey = ?1")?;
            for seq in stmt.query_map([idkey], |r| r.get::<_, i64>(0))? {
                out.push(to_u64(seq?)?);
            }
        } else {
            let mut stmt = conn.prepare_cached("SELECT seq FROM ids_deep WHERE level = ?1 AND idkey = ?2")?;
            for seq in stmt.query_map([level, idkey], |r| r.get::<_, i64>(0))? {
                out.push(to_u64(seq?)?);
            }
        }
    }
    Ok(())
}

/// Where the merged level stands, for a [`Probe`] made outside the write
/// lock: the end of the last merge and the merge state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Epoch {
    upto: Option<String>,
    merge: Option<String>,
}

impl Epoch {
    pub fn read(conn: &Connection) -> Result<Epoch, StoreError> {
        Ok(Epoch { upto: meta(conn, INDEXED_FROM_KEY)?, merge: meta(conn, STATE_KEY)? })
    }

    fn deleting(&self) -> bool {
        self.merge.as_deref().is_some_and(|m| m.ends_with(" done"))
    }
}

/// The merged level's rows for a batch's idkeys, read before the batch
/// takes the write lock, so the commit does not read them itself.
///
/// It stays complete at commit (epoch `now`) if no row left `recent`
/// since, unseen by the writer: rows only leave `recent` once merged, in
/// a merge's delete phase, and a merge ending changes `ids_upto`. So it is
/// used when `ids_upto` is unchanged, and either no delete phase is
/// running or one already was at the probe (then everything it deletes
/// was in `ids` before the probe). Any row `ids` gained since the probe
/// came from `recent`, which the writer's set still holds.
#[derive(Debug)]
pub(crate) struct Probe {
    epoch: Epoch,
    found: HashMap<i64, Vec<u64>>,
}

impl Probe {
    /// Reads `ids` for `idkeys`; the caller holds a read transaction, so
    /// the epoch and the rows are one snapshot.
    pub fn read(conn: &Connection, idkeys: impl Iterator<Item = i64>) -> Result<Probe, StoreError> {
        let epoch = Epoch::read(conn)?;
        let search = levels_to_search(conn, &Levels::read(conn)?, epoch.merge.is_some())?;
        let mut found: HashMap<i64, Vec<u64>> = HashMap::new();
        let mut seqs = Vec::new();
        for idkey in idkeys {
            merged_seqs(conn, &search, idkey, &mut seqs)?;
            if !seqs.is_empty() {
                found.entry(idkey).or_default().append(&mut seqs);
            }
        }
        Ok(Probe { epoch, found })
    }

    /// Whether the probe still holds every row of `ids` for its idkeys at
    /// epoch `now` (see [`Probe`]).
    pub fn current(&self, now: &Epoch) -> bool {
        self.epoch.upto == now.upto && (!now.deleting() || self.epoch.deleting())
    }
}

/// A set of `(idkey, seq)` rows, looked up by idkey. Almost every idkey
/// has one seq: a second (a 64-bit hash collision between two
/// `(producer, id)`) goes to a side map.
#[derive(Debug, Default)]
struct RowSet {
    first: HashMap<i64, u64>,
    more: HashMap<i64, Vec<u64>>,
}

impl RowSet {
    fn insert(&mut self, idkey: i64, seq: u64) {
        match self.first.entry(idkey) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(seq);
            }
            std::collections::hash_map::Entry::Occupied(o) if *o.get() == seq => {}
            std::collections::hash_map::Entry::Occupied(_) => {
                let more = self.more.entry(idkey).or_default();
                if !more.contains(&seq) {
                    more.push(seq);
                }
            }
        }
    }

    /// The seqs held for `idkey`, unordered.
    fn seqs(&self, idkey: i64) -> impl Iterator<Item = u64> + '_ {
        self.first.get(&idkey).copied().into_iter().chain(self.more.get(&idkey).into_iter().flatten().copied())
    }

    /// Every row below seq `bound`, in `(idkey, seq)` order.
    fn sorted_below(&self, bound: u64) -> Vec<(i64, u64)> {
        let first = self.first.iter().map(|(&k, &s)| (k, s));
        let more = self.more.iter().flat_map(|(&k, seqs)| seqs.iter().map(move |&s| (k, s)));
        let mut rows: Vec<(i64, u64)> = first.chain(more).filter(|&(_, s)| s < bound).collect();
        rows.sort_unstable();
        rows
    }

    /// Drops the rows below seq `below`.
    fn retain_from(&mut self, below: u64) {
        // `first` may lose an idkey whose `more` keeps seqs: re-home them.
        let mut orphans = Vec::new();
        self.first.retain(|k, s| {
            let keep = *s >= below;
            if !keep && self.more.contains_key(k) {
                orphans.push(*k);
            }
            keep
        });
        self.more.retain(|_, seqs| {
            seqs.retain(|&s| s >= below);
            !seqs.is_empty()
        });
        for k in orphans {
            if let Some(mut seqs) = self.more.remove(&k) {
                let s = seqs.swap_remove(0);
                self.first.insert(k, s);
                if !seqs.is_empty() {
                    self.more.insert(k, seqs);
                }
            }
        }
    }

    fn clear(&mut self) {
        self.first.clear();
        self.more.clear();
    }
}

/// A writer's view of the index.
#[derive(Debug)]
pub(crate) struct IdIndex {
    /// Rows of `recent` below `upto`.
    rows: RowSet,
    /// While a merge copies: its bound, and the rows below it in the order
    /// they are copied (sorted once per merge).
    order: Option<(u64, Vec<(i64, u64)>)>,
    /// The tree size `rows` is complete up to; `None` until loaded.
    upto: Option<u64>,
    /// No row of `rows` is below this seq.
    floor: u64,
    merge_min: u64,
    /// Commits this handle has made.
    commits: u64,
    /// For a commit that scanned `recent` instead of loading it: the seqs
    /// of the commit's idkeys found there.
    scanned: Option<HashMap<i64, Vec<u64>>>,
    /// The merged levels, as of the commit's [`IdIndex::sync`].
    levels: Levels,
    /// Those of them a lookup searches ([`levels_to_search`]), as of the
    /// same.
    search: Vec<i64>,
}

/// What a commit does to the in-memory set once it is durable.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    rows: Vec<(i64, u64)>,
    prune_below: Option<u64>,
}

impl Pending {
    /// Records an entry the commit writes.
    pub fn push(&mut self, idkey: i64, seq: u64) {
        self.rows.push((idkey, seq));
    }
}

impl IdIndex {
    pub fn new(merge_min: u64) -> IdIndex {
        IdIndex {
            rows: RowSet::default(),
            order: None,
            upto: None,
            floor: 0,
            merge_min: merge_min.max(1),
            commits: 0,
            scanned: None,
            levels: Levels::default(),
            search: Vec::new(),
        }
    }

    /// Forgets the in-memory rows (after a failed commit): the next commit
    /// reloads them.
    pub fn reset(&mut self) {
        self.rows.clear();
        self.order = None;
        self.upto = None;
        self.floor = 0;
        self.scanned = None;
    }

    /// Prepares the lookups of a commit of records with `idkeys` at tree
    /// size `size`: brings the in-memory rows up to `size`, reading the
    /// rows other processes appended since (or all of `recent`, the first
    /// time).
    ///
    /// A handle's first commit, unless a merge is copying, scans `recent`
    /// for the commit's idkeys instead of loading it, so a process that
    /// appends once (`evident append`) does not build the set.
    ///
    /// The rows of `recent` cover every entry from its first row on. Where
    /// they do not (entries appended by a binary of schema v1 still running
    /// after the upgrade), the missing rows are written from the entries'
    /// `idkey` column, in the caller's transaction.
    pub fn sync(&mut self, conn: &Connection, size: u64, idkeys: impl Iterator<Item = i64>) -> Result<(), StoreError> {
        self.scanned = None;
        self.levels = Levels::read(conn)?;
        let merge = Merge::read(conn)?;
        self.search = levels_to_search(conn, &self.levels, merge != Merge::Idle)?;
        let from = match self.upto {
            Some(u) if u <= size => u,
            _ => {
                self.reset();
                0
            }
        };
        if from >= size {
            self.upto = Some(size);
            return Ok(());
        }
        let scan = from == 0 && self.commits == 0 && !matches!(merge, Merge::Copying { .. });
        let want: HashSet<i64> = if scan { idkeys.collect() } else { HashSet::new() };
        let mut found: HashMap<i64, Vec<u64>> = HashMap::new();
        let mut take = |rows: &mut RowSet, idkey: i64, seq: u64| {
            if !scan {
                rows.insert(idkey, seq);
            } else if want.contains(&idkey) {
                found.entry(idkey).or_default().push(seq);
            }
        };
        // Entries below this are in `ids`: a lagging writer's `from` may be
        // below it after another process's merge.
        let start = indexed_from(conn)?;
        if from == 0 {
            self.floor = start;
        }
        let mut covered = from.max(start);
        let mut gaps = Vec::new();
        {
            // From the row holding entry `from` on.
            let mut stmt = conn.prepare_cached(
                "SELECT seq, idkeys FROM recent WHERE seq >= \
                 coalesce((SELECT max(seq) FROM recent WHERE seq <= ?1), 0)",
            )?;
            let mut rows = stmt.query([to_i64(from)?])?;
            while let Some(row) = rows.next()? {
                let pairs = run(row)?;
                if let Some(&(_, first)) = pairs.first()
                    && first > covered
                {
                    gaps.push((covered, first));
                }
                for (idkey, seq) in pairs {
                    if seq >= from {
                        take(&mut self.rows, idkey, seq);
                    }
                    covered = covered.max(seq + 1);
                }
            }
        }
        if covered < size {
            gaps.push((covered, size));
        }
        for (lo, hi) in gaps {
            for (idkey, seq) in fill(conn, lo, hi)? {
                take(&mut self.rows, idkey, seq);
            }
        }
        if scan {
            self.scanned = Some(found);
        } else {
            self.upto = Some(size);
        }
        Ok(())
    }

    /// The seqs of committed entries whose idkey is `idkey`, ascending.
    /// `probed`: the merged level's rows for it, from a [`Probe`] still
    /// current; otherwise they are read here.
    pub fn candidates(&self, conn: &Connection, idkey: i64, probed: Option<&Probe>) -> Result<Vec<u64>, StoreError> {
        let mut out: Vec<u64> = match &self.scanned {
            Some(found) => found.get(&idkey).cloned().unwrap_or_default(),
            None => self.rows.seqs(idkey).collect(),
        };
        match probed {
            Some(p) => out.extend(p.found.get(&idkey).into_iter().flatten()),
            None => merged_seqs(conn, &self.search, idkey, &mut out)?,
        }
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
        Ok(out)
    }

    /// Writes the commit's row of `recent` (in its transaction): the
    /// idkeys of its entries, which [`Pending::push`] collected in seq order.
    pub fn write(conn: &Connection, pending: &Pending) -> Result<(), StoreError> {
        let Some(&(_, first)) = pending.rows.first() else { return Ok(()) };
        let mut blob = Vec::with_capacity(pending.rows.len() * 8);
        for (&(idkey, seq), want) in pending.rows.iter().zip(first..) {
            if seq != want {
                return Err(StoreError::Corrupt(format!("a commit's index rows skip from seq {want} to {seq}")));
            }
            blob.extend_from_slice(&idkey.to_be_bytes());
        }
        conn.prepare_cached("INSERT INTO recent (seq, idkeys) VALUES (?1, ?2)")?
            .execute(params![to_i64(first)?, blob])?;
        Ok(())
    }

    /// Takes one merge step, scaled to a commit of `records` records, in
    /// the commit's transaction. `size` is the tree size before the commit,
    /// which [`IdIndex::sync`] has brought the set up to.
    pub fn maintain(
        &mut self,
        conn: &Connection,
        size: u64,
        records: usize,
        pending: &mut Pending,
    ) -> Result<(), StoreError> {
        match Merge::read(conn)? {
            Merge::Idle => {
                let lo = lowest_recent(conn)?.unwrap_or(size);
                if lo > self.floor {
                    // Another process finished a merge: drop what it moved.
                    pending.prune_below = Some(lo);
                }
                let at = (lo / MERGE_RATIO).clamp(self.merge_min, self.merge_cap());
                if size.saturating_sub(lo) >= at {
                    Merge::Copying { bound: size, after: None }.write(conn)?;
                }
            }
            // A commit that scanned holds no rows to copy (`sync` scans
            // only outside this phase): never let an empty set end a merge.
            Merge::Copying { .. } if self.scanned.is_some() => {}
            Merge::Copying { bound, after } => {
                let step = (self.merge_min / 256).clamp(1, 256) + STEP_PER_RECORD * records as u64;
                if self.order.as_ref().is_none_or(|(b, _)| *b != bound) {
                    // Rows below the end of the last merge are merged (and
                    // may have been compacted deeper since): a set that was
                    // not pruned yet must not copy them into `ids` again.
                    let floor = merged_upto(conn)?;
                    self.order =
                        Some((bound, self.rows.sorted_below(bound).into_iter().filter(|r| r.1 >= floor).collect()));
                }
                let order = self.order.as_ref().map_or(&[][..], |(_, o)| o);
                let start = after.map_or(0, |a| order.partition_point(|&r| r <= a));
                let mut ins = conn.prepare_cached("INSERT OR IGNORE INTO ids (idkey, seq) VALUES (?1, ?2)")?;
                let mut last = None;
                let mut n = 0;
                for &(idkey, seq) in &order[start..] {
                    ins.execute(params![idkey, to_i64(seq)?])?;
                    last = Some((idkey, seq));
                    n += 1;
                    if n == step {
                        break;
                    }
                }
                let next = if n < step { Merge::Deleting { bound } } else { Merge::Copying { bound, after: last } };
                next.write(conn)?;
            }
            Merge::Deleting { bound } => {
                self.order = None;
                let lo = lowest_recent(conn)?.unwrap_or(size);
                if lo >= bound {
                    Merge::Idle.write(conn)?;
                    self.levels.0[0] += bound.saturating_sub(merged_upto(conn)?);
                    self.levels.write(conn)?;
                    set_meta(conn, INDEXED_FROM_KEY, Some(&bound.to_string()))?;
                    pending.prune_below = Some(bound);
                } else {
                    let base = (self.merge_min / 16).clamp(1, 4096);
                    let upto = bound.min(lo + base + DELETE_PER_RECORD * records as u64);
                    conn.prepare_cached("DELETE FROM recent WHERE seq < ?1")?.execute([to_i64(upto)?])?;
                }
            }
        }
        self.compact(conn, records)
    }

    fn merge_cap(&self) -> u64 {
        merge_cap(self.merge_min)
    }

    fn capacity(&self, level: usize) -> u64 {
        level_capacity(self.merge_min, level)
    }

    /// Takes one compaction step, scaled to a commit of `records` records,
    /// in the commit's transaction; starts a compaction of the first level
    /// past its capacity when none runs.
    ///
    /// Levels grow by [`LEVEL_RATIO`], so a compaction into level `l + 1`
    /// rewrites at most that many times the rows it moves, and a row moves
    /// once per level: the index writes O(log n) per entry, where a single
    /// merged level made each merge rewrite it all (O(n) per entry once
    /// merges stop growing with the ledger at [`MERGE_MAX`]).
    fn compact(&mut self, conn: &Connection, records: usize) -> Result<(), StoreError> {
        let cap: Vec<u64> = (1..=self.levels.0.len()).map(|l| self.capacity(l)).collect();
        let levels = &mut self.levels;
        let mut c = match Compaction::read(conn)? {
            Some(c) => c,
            None => {
                let Some(full) = (0..levels.0.len()).find(|&i| levels.0[i] > cap[i]) else {
                    return Ok(());
                };
                if levels.0.len() == full + 1 {
                    levels.0.push(0);
                    levels.write(conn)?;
                }
                Compaction { from: full as i64 + 1, moved: 0, after: Compaction::START }
            }
        };
        let step = (self.merge_min / 256).clamp(1, 256) + MOVE_PER_RECORD * records as u64;
        let rows: Vec<(i64, i64)> = if c.from == 1 {
            let mut stmt = conn.prepare_cached(
                "SELECT idkey, seq FROM ids WHERE (idkey, seq) > (?1, ?2) ORDER BY idkey, seq LIMIT ?3",
            )?;
            stmt.query_map(params![c.after.0, c.after.1, to_i64(step)?], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        } else {
            let mut stmt = conn.prepare_cached(
                "SELECT idkey, seq FROM ids_deep WHERE level = ?4 AND (idkey, seq) > (?1, ?2) \
                 ORDER BY idkey, seq LIMIT ?3",
            )?;
            stmt.query_map(params![c.after.0, c.after.1, to_i64(step)?, c.from], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        if let Some(&last) = rows.last() {
            let mut ins =
                conn.prepare_cached("INSERT OR IGNORE INTO ids_deep (level, idkey, seq) VALUES (?1, ?2, ?3)")?;
            for &(idkey, seq) in &rows {
                ins.execute(params![c.from + 1, idkey, seq])?;
            }
            if c.from == 1 {
                conn.prepare_cached("DELETE FROM ids WHERE (idkey, seq) > (?1, ?2) AND (idkey, seq) <= (?3, ?4)")?
                    .execute(params![c.after.0, c.after.1, last.0, last.1])?;
            } else {
                conn.prepare_cached(
                    "DELETE FROM ids_deep WHERE level = ?5 AND (idkey, seq) > (?1, ?2) AND (idkey, seq) <= (?3, ?4)",
                )?
                .execute(params![c.after.0, c.after.1, last.0, last.1, c.from])?;
            }
            c.moved += rows.len() as u64;
            c.after = last;
        }
        if (rows.len() as u64) < step {
            // Done: the level's rows are one level deeper.
            let from = (c.from - 1) as usize;
            if levels.0.len() <= from + 1 {
                levels.0.resize(from + 2, 0);
            }
            levels.0[from] = levels.0[from].saturating_sub(c.moved);
            levels.0[from + 1] += c.moved;
            levels.write(conn)?;
            Compaction::write(None, conn)
        } else {
            Compaction::write(Some(c), conn)
        }
    }

    /// Applies a commit to the in-memory set once it has committed;
    /// `size` is the tree size after it.
    pub fn committed(&mut self, pending: Pending, size: u64) {
        self.commits += 1;
        if self.scanned.take().is_some() {
            // Nothing loaded: the next commit loads.
            return;
        }
        for (idkey, seq) in pending.rows {
            self.rows.insert(idkey, seq);
        }
        self.upto = Some(size);
        if let Some(below) = pending.prune_below
            && below > self.floor
        {
            self.rows.retain_from(below);
            self.order = None;
            self.floor = below;
        }
    }
}

/// Most rows of `recent` before a merge starts, for a ledger opened with
/// `merge_min`: [`MERGE_MAX`] by default, and as many times a lower
/// `merge_min` as [`MERGE_MAX`] is of [`MERGE_MIN`] (so tests reach capped
/// merges on small ledgers).
pub fn merge_cap(merge_min: u64) -> u64 {
    let merge_min = merge_min.max(1);
    merge_min.saturating_mul(MERGE_MAX / MERGE_MIN).min(MERGE_MAX).max(merge_min)
}

/// Rows merged level `level` (1 is `ids`) holds before it is compacted into
/// the next: [`LEVEL_RATIO`] times the largest merge for level 1 (8M by
/// default), and [`LEVEL_RATIO`] times the level above for the others.
pub fn level_capacity(merge_min: u64, level: usize) -> u64 {
    (0..level).fold(merge_cap(merge_min), |c, _| c.saturating_mul(LEVEL_RATIO))
}

/// Writes the missing row of `recent` for entries `lo..hi` from their
/// `idkey` column, and returns its pairs.
fn fill(conn: &Connection, lo: u64, hi: u64) -> Result<Vec<(i64, u64)>, StoreError> {
    let mut pending = Pending::default();
    let mut stmt = conn.prepare_cached("SELECT seq, idkey FROM entries WHERE seq >= ?1 AND seq < ?2 ORDER BY seq")?;
    for row in stmt.query_map([to_i64(lo)?, to_i64(hi)?], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))? {
        let (seq, idkey) = row?;
        pending.push(idkey, to_u64(seq)?);
    }
    if pending.rows.len() as u64 != hi - lo {
        return Err(StoreError::Corrupt(format!("entries {lo}..{hi} are not all present")));
    }
    IdIndex::write(conn, &pending)?;
    Ok(pending.rows)
}

/// The `(idkey, seq)` pairs of one row of `recent`.
fn run(row: &rusqlite::Row<'_>) -> Result<Vec<(i64, u64)>, StoreError> {
    let first = to_u64(row.get(0)?)?;
    let blob: Vec<u8> = row.get(1)?;
    if !blob.len().is_multiple_of(8) {
        return Err(StoreError::Corrupt(format!("recent index row at seq {first} is {} bytes long", blob.len())));
    }
    Ok(blob
        .chunks_exact(8)
        .zip(first..)
        .map(|(k, seq)| (i64::from_be_bytes([k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]]), seq))
        .collect())
}

/// The first entry `recent` must hold: its lowest seq, or when it is
/// empty, the end of the last merge.
fn indexed_from(conn: &Connection) -> Result<u64, StoreError> {
    if let Some(lo) = lowest_recent(conn)? {
        return Ok(lo);
    }
    merged_upto(conn)
}

/// The end of the last merge: every entry below it is in a merged level.
fn merged_upto(conn: &Connection) -> Result<u64, StoreError> {
    meta(conn, INDEXED_FROM_KEY)?
        .map_or(Ok(0), |v| v.parse().map_err(|_| StoreError::Corrupt(format!("meta {INDEXED_FROM_KEY} = {v:?}"))))
}

/// The lowest seq in `recent`.
fn lowest_recent(conn: &Connection) -> Result<Option<u64>, StoreError> {
    let lo: Option<i64> = conn.prepare_cached("SELECT min(seq) FROM recent")?.query_row([], |r| r.get(0))?;
    lo.map(to_u64).transpose()
}

/// Sets a meta value, or with `None` removes it.
fn set_meta(conn: &Connection, key: &str, value: Option<&str>) -> Result<(), StoreError> {
    match value {
        Some(v) => {
            conn.prepare_cached("INSERT OR REPLACE INTO meta (k, v) VALUES (?1, ?2)")?.execute(params![key, v])?
        }
        None => conn.prepare_cached("DELETE FROM meta WHERE k = ?1")?.execute([key])?,
    };
    Ok(())
}

/// A meta value, through the statement cache (read on every commit).
fn meta(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn.prepare_cached("SELECT v FROM meta WHERE k = ?1")?.query_row([key], |r| r.get(0)).optional()?)
}

/// The check `verify-db` makes: every `(idkey, seq)` of `entries` is in
/// `recent` or `ids`, and neither holds anything else. Compares counts and
/// two sums of mixed rows, streaming `ids` and holding `recent` in memory.
pub fn check(conn: &Connection, entries: (u64, Digest)) -> Result<Option<String>, StoreError> {
    let mut recent = std::collections::HashSet::new();
    let mut digest = Digest::default();
    let mut count = 0u64;
    let mut stmt = conn.prepare("SELECT seq, idkeys FROM recent")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        for (idkey, seq) in run(row)? {
            // Every pair counts, so one held twice (overlapping rows) shows.
            recent.insert((idkey, seq));
            digest.add(idkey, seq);
            count += 1;
        }
    }
    for sql in ["SELECT idkey, seq FROM ids", "SELECT idkey, seq FROM ids_deep"] {
        let mut stmt = conn.prepare(sql)?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))? {
            let (idkey, seq) = row?;
            let seq = to_u64(seq)?;
            // A merged row still in `recent` (a merge is deleting) counts
            // once; one in two merged levels counts twice, and shows.
            if !recent.contains(&(idkey, seq)) {
                digest.add(idkey, seq);
                count += 1;
            }
        }
    }
    let (n, want) = entries;
    Ok(if count != n {
        Some(format!("the idempotency index holds {count} entries, the ledger {n}"))
    } else if digest != want {
        Some("the idempotency index does not match the entries' (producer, id) keys".into())
    } else {
        None
    })
}

/// An order-independent digest of `(idkey, seq)` rows: two wrapping sums of
/// differently mixed rows, so a missing, extra or altered row shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digest(u64, u64);

impl Digest {
    /// Adds a row.
    pub fn add(&mut self, idkey: i64, seq: u64) {
        let k = idkey as u64;
        self.0 = self.0.wrapping_add(mix(k ^ mix(seq)));
        self.1 = self.1.wrapping_add(mix(seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ mix(k ^ 0x5851_f42d_4c95_7f2d)));
    }
}

/// SplitMix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::{Compaction, Epoch, IdIndex, Levels, Merge, Pending, Probe, RowSet, levels_to_search};
    use crate::store::{self, Synchronous};
    use rusqlite::Connection;

    /// One writer's commit of records with these idkeys, as the ledger
    /// makes it (without the entries themselves, which the index does not
    /// read while its rows are complete).
    fn commit(conn: &mut Connection, idx: &mut IdIndex, size: &mut u64, keys: &[i64]) {
        let tx = conn.transaction().expect("tx");
        idx.sync(&tx, *size, keys.iter().copied()).expect("sync");
        let mut p = Pending::default();
        for (&k, seq) in keys.iter().zip(*size..) {
            p.push(k, seq);
        }
        IdIndex::write(&tx, &p).expect("write");
        idx.maintain(&tx, *size, keys.len(), &mut p).expect("maintain");
        tx.commit().expect("commit");
        *size += keys.len() as u64;
        idx.committed(p, *size);
    }

    fn phase(conn: &Connection) -> String {
        store::meta(conn, "ids_merging").expect("meta").unwrap_or_else(|| "idle".into())
    }

    fn in_recent(conn: &Connection, seq: u64) -> bool {
        conn.query_row("SELECT count(*) FROM recent WHERE seq = ?1", [seq as i64], |r| r.get::<_, i64>(0))
            .expect("count")
            > 0
    }

    fn probe(conn: &Connection, idkey: i64) -> Probe {
        let tx = conn.unchecked_transaction().expect("read tx");
        Probe::read(&tx, [idkey].into_iter()).expect("probe")
    }

    /// Candidates for `idkey` as writer `idx` would see them at its next
    /// commit, with the probe if it is still current.
    fn lookup(conn: &mut Connection, idx: &mut IdIndex, size: u64, idkey: i64, probe: &Probe) -> (bool, Vec<u64>) {
        let tx = conn.transaction().expect("tx");
        idx.sync(&tx, size, [idkey].into_iter()).expect("sync");
        let current = probe.current(&Epoch::read(&tx).expect("epoch"));
        let found = idx.candidates(&tx, idkey, current.then_some(probe)).expect("candidates");
        (current, found)
    }

    /// The levels searched as a ledger grows: none while nothing is merged
    /// (a new ledger's lookups read no B-tree), level 1 from the first
    /// merge's start (its rows enter uncounted), and a deeper level from the
    /// start of the compaction that fills it, before its count moves.
    #[test]
    fn lookups_search_exactly_the_levels_that_may_hold_rows() {
        let dir = tempfile::tempdir().expect("dir");
        let mut conn = store::open_connection(&dir.path().join("t.db"), Synchronous::Normal).expect("open");
        store::migrate(&mut conn).expect("migrate");
        let mut idx = IdIndex::new(1);
        let mut size = 0;
        let searched = |c: &Connection| {
            let merging = Merge::read(c).expect("merge") != Merge::Idle;
            levels_to_search(c, &Levels::read(c).expect("levels"), merging).expect("levels to search")
        };
        let mut next = 1;
        while phase(&conn) == "idle" {
            assert_eq!(searched(&conn), Vec::<i64>::new(), "nothing merged yet, at size {size}");
            commit(&mut conn, &mut idx, &mut size, &[next]);
            next += 1;
        }
        assert_eq!(Levels::read(&conn).expect("levels").0, vec![0], "the first merge is not counted yet");
        assert_eq!(searched(&conn), vec![1], "level 1 is searched while its first merge runs");
        while Compaction::read(&conn).expect("compaction").is_none() {
            commit(&mut conn, &mut idx, &mut size, &[next]);
            next += 1;
            assert!(searched(&conn).contains(&1));
        }
        let counts = Levels::read(&conn).expect("levels").0;
        assert_eq!(counts.get(1).copied().unwrap_or(0), 0, "level 2 is not counted yet: {counts:?}");
        assert!(searched(&conn).contains(&2), "but it is searched while a compaction fills it");
        // Each probe and commit lookup uses the same rule.
        let p = probe(&conn, 1);
        assert_eq!(p.found.get(&1), Some(&vec![0]), "idkey 1 (seq 0), wherever it is now");
    }

    /// A probe of the merged level made outside the lock is used only while
    /// it cannot miss a row: writer B merges an entry that writer A never
    /// loaded into `ids` and deletes it from `recent` after A's probe. The
    /// probe must then be refused (A finds the entry by reading `ids`), in
    /// the delete phase and after the merge ends; across copy steps alone
    /// it stays current.
    #[test]
    fn probe_is_refused_once_rows_leave_recent_unseen() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("t.db");
        let mut ca = store::open_connection(&path, Synchronous::Normal).expect("open a");
        store::migrate(&mut ca).expect("migrate");
        let mut cb = store::open_connection(&path, Synchronous::Normal).expect("open b");
        let (mut a, mut b) = (IdIndex::new(4), IdIndex::new(4));
        let mut size = 0;
        let mut next = 1000;
        let mut fresh = || {
            next += 1;
            next
        };
        // A loads its set (its second commit), then B appends X unseen by A.
        commit(&mut ca, &mut a, &mut size, &[fresh()]);
        commit(&mut ca, &mut a, &mut size, &[fresh()]);
        const X: i64 = 77;
        let x_seq = size;
        commit(&mut cb, &mut b, &mut size, &[X]);
        let stale = probe(&ca, X);
        assert!(stale.found.is_empty(), "X is not merged yet");

        // B merges until X has left `recent`; the merge is then deleting.
        while in_recent(&cb, x_seq) {
            commit(&mut cb, &mut b, &mut size, &[fresh()]);
        }
        assert!(phase(&cb).ends_with(" done"), "phase {}", phase(&cb));
        let (current, found) = lookup(&mut ca, &mut a, size, X, &stale);
        assert!(!current, "a probe from before the delete phase is refused during it");
        assert_eq!(found, vec![x_seq]);
        // Had it been used, X would have been missed.
        let tx = ca.transaction().expect("tx");
        assert_eq!(a.candidates(&tx, X, Some(&stale)).expect("candidates"), Vec::<u64>::new());
        drop(tx);

        // A probe made during the delete phase stays current in it.
        let during = probe(&ca, X);
        assert_eq!(lookup(&mut ca, &mut a, size, X, &during), (true, vec![x_seq]));

        // The merge ends: both probes are refused (`ids_upto` moved).
        while phase(&cb) != "idle" {
            commit(&mut cb, &mut b, &mut size, &[fresh()]);
        }
        let (current, found) = lookup(&mut ca, &mut a, size, X, &stale);
        assert!(!current);
        assert_eq!(found, vec![x_seq]);
        assert!(!lookup(&mut ca, &mut a, size, X, &during).0);

        // Copy steps alone keep a probe current: what they add to `ids` is
        // still in `recent`, which A's set holds. Y (the lowest idkey left,
        // so copied first) is appended by A, and a merge starts after it.
        // (A larger ledger first, so that a merge takes several steps.)
        let many: Vec<i64> = (0..200).map(|_| fresh()).collect();
        commit(&mut cb, &mut b, &mut size, &many);
        while phase(&cb) != "idle" {
            commit(&mut cb, &mut b, &mut size, &[fresh()]);
        }
        const Y: i64 = 88;
        let y_seq = size;
        commit(&mut ca, &mut a, &mut size, &[Y]);
        let starts_after_y = |c: &Connection| {
            let p = phase(c);
            p.ends_with(" start") && p.split(' ').next().and_then(|b| b.parse::<u64>().ok()).is_some_and(|b| b > y_seq)
        };
        while !starts_after_y(&cb) {
            commit(&mut cb, &mut b, &mut size, &[fresh()]);
        }
        let before = probe(&ca, Y);
        assert!(before.found.is_empty());
        commit(&mut cb, &mut b, &mut size, &[fresh()]);
        let merged: i64 = cb.query_row("SELECT count(*) FROM ids WHERE idkey = ?1", [Y], |r| r.get(0)).expect("ids");
        assert_eq!((merged, phase(&cb).split(' ').count()), (1, 3), "Y copied, the merge still copying");
        let (current, found) = lookup(&mut ca, &mut a, size, Y, &before);
        assert!(current, "copy steps keep the probe (phase {})", phase(&ca));
        assert_eq!(found, vec![y_seq]);
    }

    fn seqs(set: &RowSet, idkey: i64) -> Vec<u64> {
        let mut v: Vec<u64> = set.seqs(idkey).collect();
        v.sort_unstable();
        v
    }

    /// Two entries whose (producer, id) hash alike both stay findable,
    /// through re-inserts and pruning, and come out in merge order.
    #[test]
    fn row_set_keeps_colliding_idkeys() {
        let mut set = RowSet::default();
        for (k, s) in [(7, 3), (7, 9), (7, 3), (-2, 5), (7, 12), (40, 1)] {
            set.insert(k, s);
        }
        assert_eq!(seqs(&set, 7), vec![3, 9, 12]);
        assert_eq!(seqs(&set, -2), vec![5]);
        assert_eq!(seqs(&set, 8), Vec::<u64>::new());
        assert_eq!(set.sorted_below(10), vec![(-2, 5), (7, 3), (7, 9), (40, 1)]);
        // Pruning drops the first seq of idkey 7; the others stay findable.
        set.retain_from(4);
        assert_eq!(seqs(&set, 7), vec![9, 12]);
        assert_eq!(seqs(&set, 40), Vec::<u64>::new());
        set.retain_from(10);
        assert_eq!(seqs(&set, 7), vec![12]);
        assert_eq!(set.sorted_below(u64::MAX), vec![(7, 12)]);
        assert!(set.more.is_empty());
    }
}
