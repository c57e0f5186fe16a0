//! Rewriting the database into a fresh folder, so that sled gives back the
//! space it keeps for overwritten and dropped data. sled has no vacuum of
//! its own: after the v4 → v5 migration a 1M store's folder held 1,192 MB,
//! where a new store of the same rows holds 530 MB.
//!
//! The copy is made beside the database (`db.rewrite`) while the store is
//! open, so sled's lock keeps every other process out of `db` meanwhile.
//! The two folders are then swapped in one step (`renameat2` with
//! `RENAME_EXCHANGE`), so `db` is at every moment a whole database: the
//! old one or the copy. What a kill leaves at `db.rewrite` (a copy cut
//! short, or the old database after the swap) is removed by the next open,
//! once it holds sled's lock on `db`.

use std::path::{Path, PathBuf};

use super::{open_db, Store, StoreError};

/// Pairs copied per `apply_batch`. Measured at 1M records (a 1,192 MB
/// database after the v4 → v5 migration): 1,024 took 17 s and left
/// 545 MB, 8,192 took 18 s and left 452–462 MB, 65,536 took 33 s.
/// Unbatched inserts (14.5 s) left 590–700 MB, and a thread per tree
/// was slower (24 s): sled's one log is shared.
const COPY_BATCH: usize = 8192;

/// What a rewrite gave back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Bytes the database's folder held before, and holds now.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Where the copy of the database in `dir` is made.
pub(super) fn rewrite_dir(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".rewrite");
    PathBuf::from(name)
}

/// Removes what a rewrite killed part way left beside `dir`. Called only
/// while this process holds sled's lock on `dir`: a rewrite in progress
/// holds it too, so its copy is never taken for a leftover.
pub(super) fn remove_leftover(dir: &Path) -> Result<(), StoreError> {
    let leftover = rewrite_dir(dir);
    match std::fs::remove_dir_all(&leftover) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(StoreError::Rewrite {
            path: leftover,
            error,
        }),
        _ => Ok(()),
    }
}

impl Store {
    /// Copies every tree into a new database beside `dir` (where this
    /// store is open) and swaps it in; the old folder is then removed.
    /// Ids, counters and the schema version are copied as they are, so the
    /// files derived from the store (flat vectors, catalogue, graph) stay
    /// in step with it.
    ///
    /// On a full disk, or a file system that cannot swap two folders in one
    /// step ([`StoreError::CannotSwap`]), the copy is removed and the store
    /// is left as it was.
    pub fn rewrite(self, dir: &Path) -> Result<Rewritten, StoreError> {
        let copy_dir = rewrite_dir(dir);
        let bytes_before = crate::fsutil::dir_size(dir);
        let copied = remove_leftover(dir)
            .and_then(|()| self.copy_into(&copy_dir))
            .and_then(|()| {
                exchange(dir, &copy_dir).map_err(|error| match error.raw_os_error() {
                    Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
                        StoreError::CannotSwap {
                            path: dir.to_path_buf(),
                        }
                    }
                    _ => StoreError::Rewrite {
                        path: dir.to_path_buf(),
                        error,
                    },
                })
            });
        // After the swap the old database sits at `copy_dir`; before it,
        // what is there is an unfinished copy. Either way it goes, once
        // this handle on the old database is closed.
        drop(self);
        remove_closed(&copy_dir);
        copied?;
        crate::fsutil::sync_parent(dir).map_err(|error| StoreError::Rewrite {
            path: dir.to_path_buf(),
            error,
        })?;
        Ok(Rewritten {
            bytes_before,
            bytes_after: crate::fsutil::dir_size(dir),
        })
    }

    /// Writes every tree of this store, pair by pair, into a new database
    /// at `copy_dir`, flushed and closed when this returns.
    fn copy_into(&self, copy_dir: &Path) -> Result<(), StoreError> {
        let copy = open_db(copy_dir)?;
        for name in self.db.tree_names() {
            copy_tree(&self.db.open_tree(&name)?, &copy.open_tree(&name)?)?;
        }
        copy.flush()?;
        Ok(())
    }
}

/// Copies every pair of `from` into the empty tree `to`.
fn copy_tree(from: &sled::Tree, to: &sled::Tree) -> Result<(), sled::Error> {
    let (mut batch, mut pending) = (sled::Batch::default(), 0);
    for pair in from.iter() {
        let (key, value) = pair?;
        batch.insert(key, value);
        pending += 1;
        if pending == COPY_BATCH {
            to.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    to.apply_batch(batch)
}

/// Removes the folder of a database this process has just closed. sled
/// lets go of its files a moment after the last handle is dropped, so a
/// removal that meets a file written meanwhile is tried again; one that
/// still fails leaves the folder to the next open's [`remove_leftover`].
fn remove_closed(dir: &Path) {
    for _ in 0..50 {
        match std::fs::remove_dir_all(dir) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            _ => return,
        }
    }
}

/// Swaps the folders at `a` and `b` in one step.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c_path = |path: &Path| {
        CString::new(path.as_os_str().as_bytes())
            .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))
    };
    let (a, b) = (c_path(a)?, c_path(b)?);
    // SAFETY: both are NUL-terminated paths that outlive the call.
    let status = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if status == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere there is no one-step swap of two folders, and two renames
/// would leave a moment with no database at `a`.
#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from_raw_os_error(libc::ENOSYS))
}
