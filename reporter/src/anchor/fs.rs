//! The `fs` anchor store: read-only files under a root directory, created
//! by hard-linking a fully written and fsynced temporary file, so the final
//! name never exists with partial content and is never replaced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Anchor, AnchorError, AnchorReceipt, BACKEND_FS, hex, rfc3339_secs, sha256_reader, validate_name};

/// Anchors objects as read-only files under `root` (the embedded default).
///
/// Protection is what a file system can give: the final name is created
/// with `link(2)`, which never replaces an existing name, and the file is
/// mode `0444`. Anyone with write access to the directory can still delete
/// it; use `s3` for storage that the operator cannot alter.
#[derive(Clone, Debug)]
pub struct FsAnchor {
    /// The directory that holds the anchored files; created when missing.
    pub root: PathBuf,
}

/// Distinguishes temporary files of concurrent writers in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl FsAnchor {
    /// A store rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsAnchor { root: root.into() }
    }

    /// Blocking form of [`Anchor::check`]: creates the root and verifies
    /// that it is a directory in which files can be created.
    pub fn check_blocking(&self) -> Result<(), AnchorError> {
        let root = self.prepare_root()?;
        let probe = root.join(format!(".evident-check-{}", unique_suffix()));
        let root_err = |what, source| AnchorError::FsRoot { root: self.root.clone(), what, source };
        File::options()
            .write(true)
            .create_new(true)
            .open(&probe)
            .map_err(|e| root_err("cannot create a file in it", e))?;
        fs::remove_file(&probe).map_err(|e| root_err("cannot remove a file from it", e))?;
        Ok(())
    }

    /// Blocking form of [`Anchor::put`].
    pub fn put_blocking(&self, name: &str, bytes: &[u8]) -> Result<AnchorReceipt, AnchorError> {
        self.put_with(name, hex(&super::sha256(bytes)), |temp| write_temp(temp, bytes))
    }

    /// Anchors the file at `src` under `name`, streaming it: memory stays
    /// at one 64 KiB buffer whatever the file's size. The copy is hashed
    /// as it is written and must match the hash taken first, so a file
    /// that changes meanwhile is refused rather than anchored under a
    /// digest it does not have.
    pub fn put_file_blocking(&self, name: &str, src: &Path) -> Result<AnchorReceipt, AnchorError> {
        let read_err = |source| AnchorError::FsRead { path: src.to_owned(), source };
        let digest = sha256_reader(File::open(src).map_err(read_err)?, |_| Ok(())).map_err(read_err)?;
        let new_sha256 = hex(&digest);
        let want = new_sha256.clone();
        self.put_with(name, new_sha256, |temp| {
            let copied = copy_temp(src, temp)?;
            if hex(&copied) == want {
                Ok(())
            } else {
                Err(io::Error::other(format!("{} changed while it was being anchored", src.display())))
            }
        })
    }

    /// The write-once protocol: adopt or refuse an existing object, else
    /// `write` a temporary file and link it under the final name.
    fn put_with(
        &self,
        name: &str,
        new_sha256: String,
        write: impl FnOnce(&Path) -> io::Result<()>,
    ) -> Result<AnchorReceipt, AnchorError> {
        validate_name(name)?;
        let root = self.prepare_root()?;
        let path = root.join(name);

        if let Some(existing) = self.existing(&path, name)? {
            return adopt(existing, new_sha256);
        }

        let dir = create_parents(&root, &path)?;
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let temp = TempFile::new(dir.join(format!(".{file_name}.tmp-{}", unique_suffix())));
        write(&temp.path).map_err(|e| AnchorError::FsWrite {
            path: temp.path.clone(),
            what: "writing and syncing the temporary file",
            source: e,
        })?;

        // link(2) fails if the name exists, so a concurrent or earlier writer
        // is never replaced; the loser compares contents like any re-put.
        match fs::hard_link(&temp.path, &path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                drop(temp);
                return match self.existing(&path, name)? {
                    Some(existing) => adopt(existing, new_sha256),
                    None => Err(AnchorError::FsWrite {
                        path,
                        what: "linking the final name (it appeared and vanished)",
                        source: e,
                    }),
                };
            }
            Err(e) => {
                return Err(AnchorError::FsWrite { path, what: "linking the final name", source: e });
            }
        }
        sync_dir(&dir).map_err(|e| AnchorError::FsWrite {
            path: path.clone(),
            what: "syncing the directory after linking",
            source: e,
        })?;
        temp.remove().map_err(|e| AnchorError::FsWrite {
            path: path.clone(),
            what: "removing the temporary file",
            source: e,
        })?;
        // Not needed for the anchor's durability; keeps a crash from
        // resurrecting the temporary name.
        sync_dir(&dir).map_err(|e| AnchorError::FsWrite {
            path: path.clone(),
            what: "syncing the directory after removing the temporary file",
            source: e,
        })?;

        let meta = fs::symlink_metadata(&path).map_err(|e| AnchorError::FsRead { path: path.clone(), source: e })?;
        Ok(receipt(&path, name, new_sha256, &meta, false))
    }

    /// Blocking form of [`Anchor::get_existing`].
    pub fn get_existing_blocking(&self, name: &str) -> Result<Option<AnchorReceipt>, AnchorError> {
        validate_name(name)?;
        let root = self.prepare_root()?;
        let path = root.join(name);
        self.existing(&path, name)
    }

    /// Creates the root if needed and returns its canonical (absolute) path.
    fn prepare_root(&self) -> Result<PathBuf, AnchorError> {
        let root_err = |what, source| AnchorError::FsRoot { root: self.root.clone(), what, source };
        fs::create_dir_all(&self.root).map_err(|e| root_err("cannot create it", e))?;
        let root = fs::canonicalize(&self.root).map_err(|e| root_err("cannot resolve it", e))?;
        let meta = fs::metadata(&root).map_err(|e| root_err("cannot read its metadata", e))?;
        if !meta.is_dir() {
            return Err(root_err("not a directory", io::Error::new(io::ErrorKind::NotADirectory, "not a directory")));
        }
        Ok(root)
    }

    /// The receipt of the file at `path`, if it exists.
    fn existing(&self, path: &Path, name: &str) -> Result<Option<AnchorReceipt>, AnchorError> {
        let read_err = |source| AnchorError::FsRead { path: path.to_owned(), source };
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        if !meta.file_type().is_file() {
            return Err(AnchorError::Unverifiable {
                location: path.display().to_string(),
                reason: "it is not a regular file".to_owned(),
            });
        }
        let mut file = File::open(path).map_err(read_err)?;
        let digest = sha256_reader(&mut file, |_| Ok(())).map_err(read_err)?;
        // Re-read the metadata from the open file so size and hash describe
        // the same inode.
        let meta = file.metadata().map_err(read_err)?;
        Ok(Some(receipt(path, name, hex(&digest), &meta, true)))
    }
}

impl Anchor for FsAnchor {
    async fn check(&self) -> Result<(), AnchorError> {
        let this = self.clone();
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || this.check_blocking())
            .await
            .map_err(|source| AnchorError::Task { path: root, source })?
    }

    async fn put(&self, name: &str, bytes: &[u8]) -> Result<AnchorReceipt, AnchorError> {
        validate_name(name)?;
        let this = self.clone();
        let path = self.root.join(name);
        let (name, bytes) = (name.to_owned(), bytes.to_vec());
        tokio::task::spawn_blocking(move || this.put_blocking(&name, &bytes))
            .await
            .map_err(|source| AnchorError::Task { path, source })?
    }

    async fn get_existing(&self, name: &str) -> Result<Option<AnchorReceipt>, AnchorError> {
        validate_name(name)?;
        let this = self.clone();
        let path = self.root.join(name);
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || this.get_existing_blocking(&name))
            .await
            .map_err(|source| AnchorError::Task { path, source })?
    }
}

/// Same SHA-256: the existing receipt (adopted); different: refused.
fn adopt(existing: AnchorReceipt, new_sha256: String) -> Result<AnchorReceipt, AnchorError> {
    if existing.sha256 == new_sha256 {
        Ok(existing)
    } else {
        Err(AnchorError::Conflict { location: existing.location, existing_sha256: existing.sha256, new_sha256 })
    }
}

fn receipt(path: &Path, name: &str, sha256: String, meta: &fs::Metadata, adopted: bool) -> AnchorReceipt {
    let anchored_at = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .and_then(rfc3339_secs);
    AnchorReceipt {
        backend: BACKEND_FS.to_owned(),
        location: path.display().to_string(),
        endpoint: None,
        region: None,
        bucket: None,
        key: name.to_owned(),
        version_id: None,
        etag: None,
        sha256,
        size: meta.len(),
        object_lock_mode: None,
        retain_until: None,
        legal_hold: None,
        anchored_at,
        adopted,
    }
}

/// Creates the directories between `root` and `path`'s parent, syncing each
/// parent whose entry list changed, and returns the parent.
fn create_parents(root: &Path, path: &Path) -> Result<PathBuf, AnchorError> {
    let parent = path.parent().unwrap_or(root).to_owned();
    let Ok(relative) = parent.strip_prefix(root) else {
        return Ok(parent);
    };
    let mut dir = root.to_owned();
    for component in relative.components() {
        let next = dir.join(component);
        match fs::create_dir(&next) {
            Ok(()) => sync_dir(&dir).map_err(|e| AnchorError::FsWrite {
                path: next.clone(),
                what: "syncing the parent of a new directory",
                source: e,
            })?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && next.is_dir() => {}
            Err(e) => {
                return Err(AnchorError::FsWrite { path: next, what: "creating the directory", source: e });
            }
        }
        dir = next;
    }
    Ok(parent)
}

/// Creates the temporary file: new, owner-only while written.
fn create_temp(temp: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(temp)
}

/// Makes a written temporary file read-only (the final name never appears
/// writable) and syncs its data and metadata.
fn seal_temp(file: &File) -> io::Result<()> {
    file.set_permissions(read_only(file)?)?;
    file.sync_all()
}

/// Writes `bytes` to a new file at `temp`, makes it read-only, and syncs
/// data and metadata.
fn write_temp(temp: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = create_temp(temp)?;
    file.write_all(bytes)?;
    seal_temp(&file)
}

/// Copies `src` to a new file at `temp` like [`write_temp`], returning the
/// SHA-256 of the bytes written.
fn copy_temp(src: &Path, temp: &Path) -> io::Result<[u8; 32]> {
    let from = File::open(src)?;
    let mut file = create_temp(temp)?;
    let digest = sha256_reader(from, |piece| file.write_all(piece))?;
    seal_temp(&file)?;
    Ok(digest)
}

#[cfg(unix)]
fn read_only(_file: &File) -> io::Result<fs::Permissions> {
    Ok(std::os::unix::fs::PermissionsExt::from_mode(0o444))
}

#[cfg(not(unix))]
fn read_only(file: &File) -> io::Result<fs::Permissions> {
    let mut p = file.metadata()?.permissions();
    p.set_readonly(true);
    Ok(p)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Directories cannot be opened for syncing on this platform.
    Ok(())
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{}-{}-{nanos}", std::process::id(), TEMP_COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A temporary file that is removed when dropped unless [`TempFile::remove`]
/// already removed it, so no error path leaves it behind.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    fn new(path: PathBuf) -> Self {
        TempFile { path, armed: true }
    }

    fn remove(mut self) -> io::Result<()> {
        self.armed = false;
        fs::remove_file(&self.path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}
