//! A flat, memory-mapped copy of the store's embeddings for exact search.
//!
//! `vectors.flat` sits beside the sled store. It exists for the cold path:
//! a one-shot `imgsearch query` maps it and scans every row (SIMD, all
//! cores) in milliseconds, where reloading the HNSW graph would take
//! seconds to tens of seconds at a million images.
//!
//! Layout (little-endian): a 32-byte header (`MAGIC`, dim: u32, generation:
//! u32, rows: u64, last_id: u64), then rows of `id: u64` + `dim × f32`, in
//! increasing id order. Store ids are never reused and embeddings never
//! change, so the file is append-only; removed ids are filtered with the
//! store's tombstones and dropped when the file is rewritten on compaction.
//!
//! Crash safety: rows are appended after the store commits them, and the
//! header's row count is only advanced after the rows are synced. Anything
//! past the header's count is ignored and truncated on the next write, and
//! rows the store has but the file lacks are appended on open. The file is
//! derived: losing it costs one rebuild from the store, never data.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod scan;
mod sums;

use crate::checksum::CheckOnRead;
pub use scan::BATCH_FROM;
pub use sums::{Sums, BLOCK_ROWS};

use crate::ann::kernels::floats;
use crate::store::{Store, StoreError};

pub const FILE_NAME: &str = "vectors.flat";
const MAGIC: &[u8; 8] = b"ISFLAT01";
const HEADER: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum FlatError {
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct FlatVectors {
    path: PathBuf,
    dim: usize,
    /// Rows known good (synced and counted in the header, or appended by us).
    rows: usize,
    last_id: Option<u64>,
    /// Rows appended since the header was last written.
    unsynced: bool,
    /// Sorted ids that are rows here but no longer live in the store.
    tombstones: Vec<u64>,
    /// The file as mapped for the current `rows`; reset by appends.
    map: OnceLock<Option<std::sync::Arc<memmap2::Mmap>>>,
    /// Block checksums of the `rows` rows, saved beside the file on sync.
    sums: Sums,
    /// For a file opened by [`FlatVectors::open_checked_on_read`]: the saved
    /// block sums, each block checked when a read first touches it. `None`
    /// when every row was checked on open or written here.
    check: Option<CheckOnRead>,
    /// Set by the record catalogue's writer each time it says clean, and
    /// kept in its header too: a reader trusts the pair only when the two
    /// agree, so a catalogue from another moment (a removal later, a file
    /// put back from a copy) is not read beside this file.
    generation: u32,
}

/// How the file was brought up to date on open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FlatOpen {
    /// Rows appended from the store (0 when the file was current).
    pub caught_up: usize,
    /// Whether the file was missing, unreadable or damaged and was written
    /// afresh.
    pub rebuilt: bool,
    /// Whether a file was there but could not be used: unreadable, made for
    /// other vectors, or damaged (its block checksums did not match).
    pub damaged: bool,
}

impl FlatVectors {
    /// Opens `dir/vectors.flat`, appending what the store has and the file
    /// lacks, or writing it afresh from the store when it is missing or
    /// does not match `dim`.
    pub fn open(dir: &Path, store: &Store, dim: usize) -> Result<(Self, FlatOpen), FlatError> {
        let path = dir.join(FILE_NAME);
        let opened = Self::open_verified(dir, dim);
        let (mut flat, rebuilt, damaged) = match opened {
            Some(flat) => (flat, false, false),
            None => {
                let existed = path.exists();
                let mut flat = Self::with(path, dim, 0, None);
                flat.write_header()?;
                // Sums now, even for no rows: an empty store appends nothing
                // and a missing `.sum` would mean a rebuild on every open.
                flat.sums
                    .write(&Sums::path(&flat.path))
                    .map_err(|e| flat.io_err(e))?;
                (flat, true, existed)
            }
        };
        flat.tombstones = store.tombstones()?;
        let mut caught_up = 0;
        let mut batch = Vec::new();
        for item in store.vectors_after(flat.last_id) {
            batch.push(item?);
            if batch.len() == 4096 {
                caught_up += batch.len();
                flat.append(&batch)?;
                batch.clear();
            }
        }
        caught_up += batch.len();
        flat.append(&batch)?;
        flat.sync()?;
        Ok((
            flat,
            FlatOpen {
                caught_up,
                rebuilt,
                damaged,
            },
        ))
    }

    /// Opens `dir/vectors.flat` as it is, without the store: `None` unless
    /// its header, last row and block checksums all agree. What a cold
    /// reader trusts (with the record catalogue saying the file is
    /// current); [`FlatVectors::open`] goes on to catch it up.
    pub fn open_verified(dir: &Path, dim: usize) -> Option<Self> {
        let path = dir.join(FILE_NAME);
        let (rows, last_id, generation) = read_header(&path, dim)?;
        let mut flat = Self::with(path.clone(), dim, rows, last_id);
        flat.generation = generation;
        if flat.last_row_id() != last_id {
            return None;
        }
        flat.sums = Sums::of(flat.data(), flat.row_bytes());
        // Damaged, saved for other rows, or missing (a file from before
        // checksums, or a lost `.sum`: it cannot be verified).
        (Sums::read(&Sums::path(&path)).as_ref() == Some(&flat.sums)).then_some(flat)
    }

    /// Opens `dir/vectors.flat` as it is, without the store, for a reader
    /// that checks each block of rows against its saved sum the first time
    /// it reads it: a scan checks each block as it scores it, while the
    /// block is in cache, instead of reading the file twice. `None` unless
    /// the header, the saved sums (for exactly its rows) and the last row
    /// agree; a block found damaged later is remembered
    /// ([`FlatVectors::damage`]) and its rows are never answered.
    pub fn open_checked_on_read(dir: &Path, dim: usize) -> Option<Self> {
        let path = dir.join(FILE_NAME);
        let (rows, last_id, generation) = read_header(&path, dim)?;
        let mut flat = Self::with(path.clone(), dim, rows, last_id);
        flat.generation = generation;
        let saved = Sums::read(&Sums::path(&path)).filter(|s| s.rows() == rows)?;
        let rb = flat.row_bytes();
        flat.check = Some(CheckOnRead::new(
            BLOCK_ROWS * rb,
            saved.into_blocks(),
            rows * rb,
        )?);
        let data = flat.data();
        if data.len() != rows * rb {
            return None;
        }
        // The last row is read here, so checked before it is believed.
        let last_row = data.len().checked_sub(rb);
        if last_row.is_some_and(|at| !flat.check.as_ref().unwrap().range(data, at..at + rb)) {
            return None;
        }
        (flat.last_row_id() == last_id).then_some(flat)
    }

    /// The id in the file's last row. The header's last id is outside the
    /// block checksums, the last row's own id is inside them, and the two
    /// must agree: a wrong last id made catch-up skip or repeat the
    /// store's newest vectors.
    fn last_row_id(&self) -> Option<u64> {
        let data = self.data();
        let at = data.len().checked_sub(self.row_bytes())?;
        Some(u64::from_le_bytes(
            data[at..at + 8].try_into().expect("8 bytes"),
        ))
    }

    /// Where a reader that checks on read found the file damaged, if it
    /// did: what it read there was not answered, and the store has the truth.
    pub fn damage(&self) -> Option<String> {
        let block = self.check.as_ref()?.damaged()?;
        Some(format!(
            "{} is damaged in rows {}..{} (checksum)",
            self.path.display(),
            block * BLOCK_ROWS,
            ((block + 1) * BLOCK_ROWS).min(self.rows)
        ))
    }

    /// Whether block `i` of rows (`bytes`) may be read: checked on open or
    /// written here, or checked now against its saved sum.
    fn block_ok(&self, i: usize, bytes: &[u8]) -> bool {
        self.check.as_ref().is_none_or(|c| c.part(i, bytes))
    }

    /// Whether every row may be read (see [`FlatVectors::block_ok`]).
    fn all_ok(&self) -> bool {
        self.check.as_ref().is_none_or(|c| c.all(self.data()))
    }

    fn with(path: PathBuf, dim: usize, rows: usize, last_id: Option<u64>) -> Self {
        Self {
            path,
            dim,
            rows,
            last_id,
            unsynced: false,
            tombstones: Vec::new(),
            map: OnceLock::new(),
            sums: Sums::default(),
            check: None,
            generation: 0,
        }
    }

    fn io_err(&self, source: std::io::Error) -> FlatError {
        FlatError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn row_bytes(&self) -> usize {
        8 + 4 * self.dim
    }

    /// Floats per vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Rows in the file, tombstones included.
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn live(&self) -> usize {
        self.rows.saturating_sub(self.tombstones.len())
    }

    /// The newest id among the rows, tombstones included.
    pub fn last_id(&self) -> Option<u64> {
        self.last_id
    }

    /// The record catalogue's generation this file was last saved beside.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Records the record catalogue's new generation in the header, synced
    /// (rows appended since are synced first, as [`FlatVectors::sync`] would).
    pub fn set_generation(&mut self, generation: u32) -> Result<(), FlatError> {
        self.sync()?;
        self.generation = generation;
        self.write_header()
    }

    /// Every row's id, tombstones included, in order.
    pub fn row_ids(&self) -> impl Iterator<Item = u64> + '_ {
        let data = if self.all_ok() { self.data() } else { &[] };
        data.chunks_exact(self.row_bytes())
            .map(|r| u64::from_le_bytes(r[..8].try_into().expect("8 bytes")))
    }

    /// The removed ids among the rows, sorted.
    pub fn tombstones(&self) -> &[u64] {
        &self.tombstones
    }

    /// Replaces the removed ids (sorted), for a reader that learned them
    /// from somewhere other than the store.
    pub fn set_tombstones(&mut self, sorted_ids: Vec<u64>) {
        self.tombstones = sorted_ids;
    }

    /// Appends (id, vector) rows; ids must be newer than every row here.
    pub fn append(&mut self, points: &[(u64, Vec<f32>)]) -> Result<(), FlatError> {
        let points: Vec<_> = points
            .iter()
            .filter(|(id, _)| self.last_id.is_none_or(|last| *id > last))
            .collect();
        if points.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(points.len() * self.row_bytes());
        for (id, v) in &points {
            assert_eq!(v.len(), self.dim, "vector of the wrong dimension");
            buf.extend_from_slice(&id.to_le_bytes());
            for x in v {
                buf.extend_from_slice(&x.to_le_bytes());
            }
        }
        let offset = (HEADER + self.rows * self.row_bytes()) as u64;
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new().write(true).open(&self.path)?;
            // Drops rows past the header's count left by a crash.
            f.set_len(offset)?;
            f.seek(SeekFrom::Start(offset))?;
            f.write_all(&buf)
        };
        write().map_err(|e| self.io_err(e))?;
        self.sums.extend(&buf, self.row_bytes());
        self.rows += points.len();
        self.last_id = points.last().map(|(id, _)| *id);
        self.unsynced = true;
        self.map = OnceLock::new();
        Ok(())
    }

    /// Makes appended rows durable, then counts them in the header.
    pub fn sync(&mut self) -> Result<(), FlatError> {
        if !self.unsynced {
            return Ok(());
        }
        File::open(&self.path)
            .and_then(|f| f.sync_data())
            .map_err(|e| self.io_err(e))?;
        self.write_header()?;
        self.sums
            .write(&Sums::path(&self.path))
            .map_err(|e| self.io_err(e))?;
        self.unsynced = false;
        Ok(())
    }

    fn write_header(&mut self) -> Result<(), FlatError> {
        let mut h = [0u8; HEADER];
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&(self.dim as u32).to_le_bytes());
        h[12..16].copy_from_slice(&self.generation.to_le_bytes());
        h[16..24].copy_from_slice(&(self.rows as u64).to_le_bytes());
        h[24..32].copy_from_slice(&self.last_id.map_or(u64::MAX, |i| i).to_le_bytes());
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&self.path)?;
            f.write_all(&h)?;
            f.sync_data()
        };
        write().map_err(|e| self.io_err(e))
    }

    /// Marks ids as removed: they stay in the file until [`FlatVectors::rewrite`].
    pub fn add_tombstones(&mut self, ids: impl IntoIterator<Item = u64>) {
        self.tombstones.extend(ids);
        self.tombstones.sort_unstable();
        self.tombstones.dedup();
    }

    /// Writes the file afresh from the store's live vectors (compaction).
    /// The new file replaces the old one atomically.
    pub fn rewrite(&mut self, store: &Store) -> Result<usize, FlatError> {
        let tmp_path = self.path.with_extension("flat.tmp");
        let mut fresh = Self::with(tmp_path.clone(), self.dim, 0, None);
        fresh.write_header()?;
        let mut batch = Vec::new();
        for item in store.vectors_after(None) {
            batch.push(item?);
            if batch.len() == 4096 {
                fresh.append(&batch)?;
                batch.clear();
            }
        }
        fresh.append(&batch)?;
        fresh.sync()?;
        // Written even for an empty store, where sync had nothing to do.
        fresh
            .sums
            .write(&Sums::path(&tmp_path))
            .map_err(|e| fresh.io_err(e))?;
        // The sums first: a crash between the renames leaves new sums over
        // the old file, which fails the check and rebuilds (never trusts).
        std::fs::rename(Sums::path(&tmp_path), Sums::path(&self.path))
            .map_err(|e| self.io_err(e))?;
        std::fs::rename(&tmp_path, &self.path).map_err(|e| self.io_err(e))?;
        fresh.path = self.path.clone();
        *self = fresh;
        Ok(self.rows)
    }

    /// The rows as mapped bytes (empty when there are none).
    fn data(&self) -> &[u8] {
        let map = self.map.get_or_init(|| {
            if self.rows == 0 {
                return None;
            }
            let file = File::open(&self.path).ok()?;
            // SAFETY: the file is only appended to past `rows`, and rewrites
            // replace it by rename, so the mapped range never changes under us.
            // Populated: the scan reads every page, and faulting them in one
            // call costs less than one fault per page run.
            if self.check.is_none() {
                let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) };
                return map.ok().map(std::sync::Arc::new);
            }
            // A cold reader (checking on read) has a query to decode and
            // embed before it scans: the pages are faulted in on a thread
            // of their own meanwhile, and a scan that gets there first
            // faults in the rest itself.
            let map = std::sync::Arc::new(unsafe { memmap2::MmapOptions::new().map(&file) }.ok()?);
            let populating = map.clone();
            std::thread::spawn(move || populating.advise(memmap2::Advice::PopulateRead));
            Some(map)
        });
        match map {
            Some(m) => {
                let end = (HEADER + self.rows * self.row_bytes()).min(m.len());
                &m[HEADER..end]
            }
            None => &[],
        }
    }

    fn is_dead(&self, id: u64) -> bool {
        !self.tombstones.is_empty() && self.tombstones.binary_search(&id).is_ok()
    }

    /// The stored vector of a live id (binary search over the id-ordered rows).
    pub fn get(&self, id: u64) -> Option<Vec<f32>> {
        if self.is_dead(id) {
            return None;
        }
        let data = self.data();
        let rb = self.row_bytes();
        let n = data.len() / rb;
        let id_at = |i: usize| u64::from_le_bytes(data[i * rb..i * rb + 8].try_into().unwrap());
        // Ids on the way may be read from blocks not checked yet: the row
        // found is checked before it is believed, and a miss only once every
        // block is.
        let Some(i) = crate::sorted::position_of(n, id_at, id) else {
            self.all_ok();
            return None;
        };
        let row = i * rb..(i + 1) * rb;
        let checked = self
            .check
            .as_ref()
            .is_none_or(|c| c.range(data, row.clone()));
        checked.then(|| floats(&data[row][8..]).into_owned())
    }

    /// Every live (id, vector), in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, std::borrow::Cow<'_, [f32]>)> + '_ {
        let data = if self.all_ok() { self.data() } else { &[] };
        data.chunks_exact(self.row_bytes())
            .map(|r| {
                (
                    u64::from_le_bytes(r[..8].try_into().unwrap()),
                    floats(&r[8..]),
                )
            })
            .filter(|(id, _)| !self.is_dead(*id))
    }
}

/// The dimension `dir/vectors.flat`'s header declares, if it has one: lets
/// a reader open the file while it learns the model's from elsewhere.
pub fn header_dim(dir: &Path) -> Option<usize> {
    let mut h = [0u8; 12];
    File::open(dir.join(FILE_NAME))
        .ok()?
        .read_exact(&mut h)
        .ok()?;
    (&h[..8] == MAGIC).then(|| u32::from_le_bytes(h[8..12].try_into().unwrap()) as usize)
}

/// Reads and checks the header: (rows, last id), or `None` when the file is
/// missing, foreign, of another dimension or shorter than its count says.
fn read_header(path: &Path, dim: usize) -> Option<(usize, Option<u64>, u32)> {
    let mut f = File::open(path).ok()?;
    let mut h = [0u8; HEADER];
    f.read_exact(&mut h).ok()?;
    let u64_at = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().unwrap());
    if &h[..8] != MAGIC || u32::from_le_bytes(h[8..12].try_into().unwrap()) as usize != dim {
        return None;
    }
    let rows = usize::try_from(u64_at(16)).ok()?;
    let last_id = Some(u64_at(24)).filter(|&i| i != u64::MAX);
    let len = f.metadata().ok()?.len();
    // A damaged count can be any number: checked, not multiplied blindly.
    let needed = rows
        .checked_mul(8 + 4 * dim)
        .and_then(|bytes| bytes.checked_add(HEADER))?;
    if len < needed as u64 || (rows > 0) != last_id.is_some() {
        return None;
    }
    let generation = u32::from_le_bytes(h[12..16].try_into().unwrap());
    Some((rows, last_id, generation))
}

#[cfg(test)]
mod tests;
