//! The SQLite store: schema and migrations, append-only triggers, hash
//! tiles, and reads of entries, nodes and checkpoints.
//!
//! ## Node storage
//! Perfect-subtree hashes are stored in *tiles* of height 4, after C2SP
//! tlog-tiles: tile `(t, i)` holds the 16 node hashes of tree level `4t`
//! with indices `[16i, 16i + 16)`, one 512-byte blob. Only full tiles are
//! stored, so a tile is written once and never changed. Any node of levels
//! `4t..4t+3` is hashed from at most 8 hashes of one tile; nodes in the
//! incomplete right-hand tiles come from the leaves (at most 15) or the
//! tiles below. Appends insert at most one tile per 16^t entries, and a
//! proof reads O(log n) tiles. Leaf hashes live only in the level-0 tiles:
//! about 34 bytes of tree per entry.

use std::collections::HashMap;

use evident_verify::hash::{Hash, leaf_hash, node_hash};
use evident_verify::merkle::{CompactRange, NodeId, NodeSource};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::error::StoreError;

/// Tree levels per tile.
pub const TILE_HEIGHT: u8 = 4;
/// Hashes per tile.
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;
/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = 3;

const MIGRATIONS: &[&str] = &[
    // v1
    r"
CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL) STRICT;
CREATE TABLE entries (
    seq INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    idkey INTEGER NOT NULL,
    leaf BLOB NOT NULL
) STRICT;
CREATE INDEX entries_idkey ON entries(idkey);
CREATE TABLE tiles (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hashes BLOB NOT NULL CHECK (length(hashes) = 512),
    PRIMARY KEY (level, idx)
) STRICT, WITHOUT ROWID;
CREATE TABLE checkpoints (
    size INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    note TEXT NOT NULL
) STRICT;
CREATE TABLE vault (
    commitment TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    seq INTEGER NOT NULL,
    field TEXT NOT NULL,
    value BLOB NOT NULL,
    salt BLOB NOT NULL
) STRICT;
CREATE INDEX vault_subject ON vault(subject);
CREATE TABLE key_events (seq INTEGER PRIMARY KEY) STRICT;
CREATE TRIGGER key_events_no_update BEFORE UPDATE ON key_events BEGIN SELECT RAISE(ABORT, 'evident: key events are append-only'); END;
CREATE TRIGGER key_events_no_delete BEFORE DELETE ON key_events BEGIN SELECT RAISE(ABORT, 'evident: key events are append-only'); END;
CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries BEGIN SELECT RAISE(ABORT, 'evident: entries are append-only'); END;
CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries BEGIN SELECT RAISE(ABORT, 'evident: entries are append-only'); END;
CREATE TRIGGER tiles_no_update BEFORE UPDATE ON tiles BEGIN SELECT RAISE(ABORT, 'evident: tree nodes are append-only'); END;
CREATE TRIGGER tiles_no_delete BEFORE DELETE ON tiles BEGIN SELECT RAISE(ABORT, 'evident: tree nodes are append-only'); END;
CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints BEGIN SELECT RAISE(ABORT, 'evident: checkpoints are append-only'); END;
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints BEGIN SELECT RAISE(ABORT, 'evident: checkpoints are append-only'); END;
",
    // v2: the idempotency index in two levels (crate::idindex) instead of
    // an index on entries(idkey), whose inserts each dirtied a random page.
    r"
CREATE TABLE ids (
    idkey INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (idkey, seq)
) STRICT, WITHOUT ROWID;
CREATE TABLE recent (
    seq INTEGER PRIMARY KEY,
    idkeys BLOB NOT NULL CHECK (length(idkeys) > 0 AND length(idkeys) % 8 = 0)
) STRICT;
INSERT INTO ids (idkey, seq) SELECT idkey, seq FROM entries ORDER BY idkey, seq;
INSERT INTO meta (k, v) SELECT 'ids_upto', CAST(count(*) AS TEXT) FROM entries;
DROP INDEX entries_idkey;
",
    // v3: the merged levels below `ids` (crate::idindex), so that merging
    // into the index costs O(log n) per entry, not O(n), however large the
    // ledger grows. `ids` stays level 1 as it was. A v2 binary still running
    // would not look in the new levels, and could store a retry as a new
    // entry: the merge state moves to a new key, and the old one holds a
    // value v2 refuses, so each of its commits fails with this message.
    r"
CREATE TABLE ids_deep (
    level INTEGER NOT NULL CHECK (level >= 2),
    idkey INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (level, idkey, seq)
) STRICT, WITHOUT ROWID;
INSERT INTO meta (k, v) SELECT 'ids_merging', v FROM meta WHERE k = 'ids_merge';
INSERT OR REPLACE INTO meta (k, v) VALUES ('ids_merge',
    'migrated to schema v3: this process runs an older evident; restart it with the new binary');
",
];

/// Durability setting for commits (`PRAGMA synchronous`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync on every commit: durable against power loss (the default).
    #[default]
    Full,
    /// WAL with fewer syncs: durable against process crashes, not power loss.
    Normal,
}

/// Page size of new ledger files.
pub const PAGE_SIZE: i64 = 16 * 1024;

/// Most page cache one connection keeps, in KiB (allocated as used).
pub const CACHE_KIB: i64 = 32 * 1024;

/// Opens a connection with the ledger's settings.
pub fn open_connection(path: &std::path::Path, sync: Synchronous) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|e| StoreError::open(path, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(60)).map_err(|e| StoreError::open(path, e))?;
    // 16 KiB pages for a new file (ignored for an existing one): with ~500
    // byte leaves, 4 KiB pages leave enough unused space per page to push
    // storage past 100 bytes per entry beyond the leaf bytes.
    conn.pragma_update(None, "page_size", PAGE_SIZE).map_err(|e| StoreError::open(path, e))?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| StoreError::open(path, e))?;
    let s = match sync {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", s).map_err(|e| StoreError::open(path, e))?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(|e| StoreError::open(path, e))?;
    // Page cache of up to CACHE_KIB per connection (SQLite's default is
    // 2 MiB): a batch of thousands of entries otherwise spills dirty pages
    // to the WAL in the middle of its transaction and writes them twice.
    conn.pragma_update(None, "cache_size", -CACHE_KIB).map_err(|e| StoreError::open(path, e))?;
    Ok(conn)
}

/// Applies forward-only migrations; refuses a database newer than this binary.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew { found: version, supported: SCHEMA_VERSION });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the lock.
        let now: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if now > i as i64 {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// Checked u64 → SQLite integer.
pub fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("value {v} does not fit a SQLite integer")))
}

/// Checked SQLite integer → u64.
pub fn to_u64(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative value {v} where a count was expected")))
}

/// The idempotency key of `(producer, id)`: the first 8 bytes of
/// SHA-256(producer || 0x00 || id). Collisions only cost a comparison.
pub fn idkey(producer: &str, id: &str) -> i64 {
    let mut h = Sha256::new();
    h.update(producer.as_bytes());
    h.update([0]);
    h.update(id.as_bytes());
    let d = h.finalize();
    i64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// Number of entries.
pub fn size(conn: &Connection) -> Result<u64, StoreError> {
    let max: Option<i64> = conn.prepare_cached("SELECT max(seq) FROM entries")?.query_row([], |r| r.get(0))?;
    Ok(match max {
        Some(m) => to_u64(m)? + 1,
        None => 0,
    })
}

/// Reads a metadata value.
pub fn meta(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn.query_row("SELECT v FROM meta WHERE k = ?1", [key], |r| r.get(0)).optional()?)
}

/// Reads a tile.
pub fn tile(conn: &Connection, level: u8, idx: u64) -> Result<Option<Vec<Hash>>, StoreError> {
    let blob: Option<Vec<u8>> = conn
        .prepare_cached("SELECT hashes FROM tiles WHERE level = ?1 AND idx = ?2")?
        .query_row(params![level, to_i64(idx)?], |r| r.get(0))
        .optional()?;
    Ok(blob.map(|b| b.chunks_exact(32).filter_map(Hash::from_slice).collect()))
}

/// Reads one leaf.
pub fn leaf(conn: &Connection, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT leaf FROM entries WHERE seq = ?1")?
        .query_row([to_i64(seq)?], |r| r.get(0))
        .optional()?)
}

/// Root of a perfect subtree given its bottom row (length a power of two).
fn perfect_root(row: &[Hash]) -> Hash {
    let mut level: Vec<Hash> = row.to_vec();
    while level.len() > 1 {
        level = level.chunks_exact(2).map(|p| node_hash(&p[0], &p[1])).collect();
    }
    level.first().copied().unwrap_or_else(Hash::empty_root)
}

type TileCache = HashMap<(u8, u64), Option<Vec<Hash>>>;
type SharedTile = std::sync::Arc<Vec<Hash>>;

/// Full tiles above level 0, kept across requests. A full tile never
/// changes, so entries never go stale; the cap bounds memory (64 Ki tiles
/// of 512 bytes: every level-1 tile of a 16M-entry ledger and all above).
#[derive(Debug, Default)]
pub struct SharedTiles {
    tiles: std::sync::Mutex<HashMap<(u8, u64), SharedTile>>,
}

const SHARED_TILES_CAP: usize = 64 * 1024;

impl SharedTiles {
    fn get(&self, level: u8, idx: u64) -> Option<std::sync::Arc<Vec<Hash>>> {
        self.tiles.lock().unwrap_or_else(|p| p.into_inner()).get(&(level, idx)).cloned()
    }

    fn put(&self, level: u8, idx: u64, t: &[Hash]) {
        let mut m = self.tiles.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() < SHARED_TILES_CAP {
            m.insert((level, idx), std::sync::Arc::new(t.to_vec()));
        }
    }
}

/// A [`NodeSource`] over the store's tiles, caching tiles for one request.
#[allow(missing_debug_implementations)]
pub struct TileReader<'c> {
    conn: &'c Connection,
    cache: std::cell::RefCell<TileCache>,
    /// The writer's right edge, which holds the incomplete tiles' rows.
    frontier: Option<&'c Frontier>,
    shared: Option<&'c SharedTiles>,
}

impl<'c> TileReader<'c> {
    /// A reader over `conn`.
    pub fn new(conn: &'c Connection) -> TileReader<'c> {
        TileReader { conn, cache: Default::default(), frontier: None, shared: None }
    }

    /// A reader that also takes incomplete right-edge rows from `frontier`
    /// (of any size: rows of a larger tree agree on every node a smaller
    /// tree has) and keeps upper tiles in `shared`.
    pub fn with_caches(
        conn: &'c Connection,
        frontier: Option<&'c Frontier>,
        shared: &'c SharedTiles,
    ) -> TileReader<'c> {
        TileReader { conn, cache: Default::default(), frontier, shared: Some(shared) }
    }

    fn tile(&self, level: u8, idx: u64) -> Result<Option<Vec<Hash>>, StoreError> {
        if let Some(t) = self.cache.borrow().get(&(level, idx)) {
            return Ok(t.clone());
        }
        if level > 0
            && let Some(t) = self.shared.and_then(|s| s.get(level, idx))
        {
            return Ok(Some(t.as_ref().clone()));
        }
        let t = tile(self.conn, level, idx)?;
        if level > 0
            && let (Some(s), Some(t)) = (self.shared, &t)
        {
            s.put(level, idx, t);
        }
        self.cache.borrow_mut().insert((level, idx), t.clone());
        Ok(t)
    }

    /// Hashes of nodes at tree level `4 * tl`, indices `[lo, lo + count)`,
    /// all inside one tile.
    fn base_row(&self, tl: u8, lo: u64, count: u64) -> Result<Vec<Hash>, StoreError> {
        let ti = lo / TILE_WIDTH;
        if let Some(t) = self.tile(tl, ti)? {
            let off = (lo % TILE_WIDTH) as usize;
            return Ok(t[off..off + count as usize].to_vec());
        }
        // The tile is not full yet: the frontier holds its row if it is the
        // last tile of a tree at least this large.
        if let Some(f) = self.frontier {
            let shift = u32::from(tl) * u32::from(TILE_HEIGHT);
            let n = f.range.size().checked_shr(shift).unwrap_or(0);
            let start = n - n % TILE_WIDTH;
            if lo >= start
                && lo + count <= n
                && let Some(row) = f.partial.get(usize::from(tl))
            {
                let off = (lo - start) as usize;
                return Ok(row[off..off + count as usize].to_vec());
            }
        }
        // Otherwise rebuild its nodes from below.
        (lo..lo + count)
            .map(|j| {
                if tl == 0 {
                    let leaf = leaf(self.conn, j)?.ok_or_else(|| StoreError::MissingNode(NodeId::leaf(j)))?;
                    Ok(leaf_hash(&leaf))
                } else {
                    let below = self
                        .tile(tl - 1, j)?
                        .ok_or(StoreError::MissingNode(NodeId { level: tl * TILE_HEIGHT, index: j }))?;
                    Ok(perfect_root(&below))
                }
            })
            .collect()
    }

    /// One node.
    pub fn node(&self, id: NodeId) -> Result<Hash, StoreError> {
        let tl = id.level / TILE_HEIGHT;
        let r = id.level % TILE_HEIGHT;
        let row = self.base_row(tl, id.index << r, 1 << r)?;
        Ok(perfect_root(&row))
    }
}

impl NodeSource for TileReader<'_> {
    type Error = StoreError;
    fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, StoreError> {
        ids.iter().map(|id| self.node(*id)).collect()
    }
}

/// The writer's view of the right edge of the tree: the compact range and
/// the incomplete tile row at every tile level.
#[derive(Clone, Debug, Default)]
pub struct Frontier {
    /// Compact range of all leaves.
    pub range: CompactRange,
    /// `partial[t]`: hashes of tree level `4t` in the current incomplete tile.
    pub partial: Vec<Vec<Hash>>,
    /// Timestamp of the last entry (micros), or 0.
    pub last_ts: i64,
}

impl Frontier {
    /// Loads the frontier for the current store contents: O(log n) reads.
    pub fn load(conn: &Connection) -> Result<Frontier, StoreError> {
        let n = size(conn)?;
        let reader = TileReader::new(conn);
        let ids = evident_verify::merkle::range_nodes(0, n);
        let hashes = reader.nodes(&ids)?;
        let range = CompactRange::from_parts(n, hashes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut partial = Vec::new();
        let mut count = n; // nodes at the current tile level
        let mut tl = 0u8;
        while count > 0 {
            let lo = count - count % TILE_WIDTH;
            partial.push(reader.base_row(tl, lo, count - lo)?);
            count /= TILE_WIDTH;
            tl += 1;
        }
        let last_ts: i64 = conn
            .query_row("SELECT ts FROM entries ORDER BY seq DESC LIMIT 1", [], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        Ok(Frontier { range, partial, last_ts })
    }

    /// Appends a leaf hash, returning the tiles it completes.
    pub fn push(&mut self, h: Hash) -> Vec<(u8, u64, Vec<Hash>)> {
        let mut full = Vec::new();
        let index = self.range.size();
        // The range computes every subtree the leaf completes; those at a
        // tile boundary (tree levels 4, 8, …) are the roots of the tiles it
        // completes, so they are not hashed again.
        let mut roots = [None; 64 / TILE_HEIGHT as usize + 1];
        self.range.append_with(h, |id, hash| {
            if id.level % TILE_HEIGHT == 0 {
                roots[usize::from(id.level / TILE_HEIGHT)] = Some(hash);
            }
        });
        let mut tl = 0usize;
        let mut carry = h;
        let mut pos = index; // index of `carry` at tree level 4*tl
        loop {
            if self.partial.len() <= tl {
                self.partial.push(Vec::new());
            }
            self.partial[tl].push(carry);
            if self.partial[tl].len() as u64 == TILE_WIDTH {
                let row = std::mem::take(&mut self.partial[tl]);
                carry = roots.get(tl + 1).copied().flatten().unwrap_or_else(|| perfect_root(&row));
                full.push((tl as u8, pos / TILE_WIDTH, row));
                pos /= TILE_WIDTH;
                tl += 1;
            } else {
                break;
            }
        }
        full
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{Frontier, TILE_WIDTH, perfect_root};
    use evident_verify::hash::leaf_hash;

    /// Every full tile the frontier returns above level 0 holds the roots
    /// of the tiles below it, which it takes from the compact range rather
    /// than hashing them again; and the last row's root is the tree's.
    #[test]
    fn tile_rows_hold_the_roots_of_the_tiles_below() {
        let n = TILE_WIDTH * TILE_WIDTH * TILE_WIDTH + 37;
        let mut f = Frontier::default();
        let mut tiles: HashMap<(u8, u64), Vec<_>> = HashMap::new();
        for i in 0..n {
            for (level, idx, row) in f.push(leaf_hash(&i.to_be_bytes())) {
                tiles.insert((level, idx), row);
            }
        }
        assert_eq!(tiles.len() as u64, n / TILE_WIDTH + n / TILE_WIDTH.pow(2) + n / TILE_WIDTH.pow(3));
        for (&(level, idx), row) in tiles.iter().filter(|((l, _), _)| *l > 0) {
            for (k, h) in row.iter().enumerate() {
                let below = &tiles[&(level - 1, idx * TILE_WIDTH + k as u64)];
                assert_eq!(*h, perfect_root(below), "tile {level}/{idx} entry {k}");
            }
        }
        let top = &tiles[&(2, 0)];
        let mut whole = evident_verify::merkle::CompactRange::new();
        for i in 0..TILE_WIDTH.pow(3) {
            whole.append(leaf_hash(&i.to_be_bytes()));
        }
        assert_eq!(perfect_root(top), whole.root());
    }
}
