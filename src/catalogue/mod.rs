//! The record catalogue: for each row of the flat vector file, what a search
//! reports about it (path, label, or that it was removed), mirrored from the
//! store into two plain files, so that a one-shot query answers without
//! opening sled.
//!
//! Why: sled's open rebuilds its page table in proportion to the store's
//! size (0.7 s at a million images), while a query needs only the model,
//! the flat vectors and a handful of records.
//!
//! Files (little-endian):
//! - `records.cat`: an 80-byte header, then one 32-byte row per row of
//!   `vectors.flat`, in the same order (id order; removed ids stay until
//!   compaction, as in the flat file): id u64, offset u64 into
//!   `records.str`, path length u32, label length u32 ([`NO_LABEL`] for
//!   none), flags u32 ([`REMOVED`], [`PATH_HASHED`]), and the CRC32C of
//!   the path u32 when the flags say so (zero before it was kept: such rows
//!   are told apart by their path bytes alone).
//! - `records.sum`: the CRC32C of each 64 KiB piece of both files as the
//!   writer last said clean (see [`crate::checksum::Pieces`]), so a reader
//!   checks only the pieces it reads. It is trusted only when its pieces add
//!   up to the header's checksums; otherwise (missing, damaged, from another
//!   save) the reader checks both files whole, as it would without it.
//! - `records.str`: the bytes rows point into, and the index's [`Meta`]
//!   (JSON: model stamp, schema version, roots, label counts) that `status`
//!   shows. Append-only: a moved record's new path, or new meta, is
//!   appended and pointed to; the old bytes go at the next rewrite
//!   (compaction).
//!
//! The header: `MAGIC`, state u32 ([`CLEAN`] or [`DIRTY`]), generation u32,
//! rows u64, last id u64 (`u64::MAX`: none), removed rows u64, strings
//! length u64, checksum of the rows u32, checksum of the strings u32 (see
//! [`checksum`]), meta offset u64 and length u32, reserved to 80 bytes.
//!
//! Trust (see `writer.rs` for the writer's side): a writer marks the header
//! dirty, synced, before its first change to the store, and clean again
//! only once the store, the flat file and both catalogue files are synced,
//! with the checksums of both files in the header. A reader trusts the
//! catalogue only when it is clean, both checksums match, and its rows,
//! last id and generation equal the flat file's; otherwise it opens the
//! store. With `records.sum`, "both checksums match" is checked piece by
//! piece as the reader reads: a damaged piece is remembered
//! ([`Catalogue::damage`]), reads from it give nothing, and the reader
//! discards its answer and opens the store. The generation is a new random number each time the writer says
//! clean, written into the flat file's header first: a catalogue from
//! another moment (a removal since, a file put back from a copy) does not
//! pass for this one even when its rows do. The store's schema version 4
//! bars an imgsearch that does not keep the catalogue from writing to the
//! store behind it (and so does every later version).

mod files;
mod writer;

use std::path::{Path, PathBuf};

use rayon::prelude::*;

pub use files::encode_sums;
use files::{load, read_sums, Checking, Loaded, Mapped};
pub use writer::CatalogueWriter;

use crate::store::{ModelStamp, StoreError};

pub const FILE_NAME: &str = "records.cat";
pub const STRINGS_NAME: &str = "records.str";
pub const SUMS_NAME: &str = "records.sum";
const MAGIC: &[u8; 8] = b"ISCATLG1";
const SUMS_MAGIC: &[u8; 8] = b"ISCATSM1";
const HEADER: usize = 80;
const ROW: usize = 32;

/// Header state: every file is synced and agrees with the store.
pub const CLEAN: u32 = 0;
/// Header state: a writer may have changed the store since the catalogue
/// was last made to agree with it.
pub const DIRTY: u32 = 1;
/// A row's label length when it has none.
pub const NO_LABEL: u32 = u32::MAX;
/// Row flag: the record was removed from the store (a tombstone).
pub const REMOVED: u32 = 1;
/// Row flag: the row's last field is the CRC32C of its path, so a lookup by
/// path reads the strings of the rows that match it and of no others.
pub const PATH_HASHED: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("cannot write the record catalogue {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Flat(#[from] crate::ann::FlatError),
}

/// The checksum the header keeps of each file: the CRC32C of the CRC32Cs
/// of its 1 MiB chunks (little-endian, in order), checked on every core:
/// a cold query at a million images checks 60 MB of catalogue before it
/// trusts it.
pub use crate::checksum::chunked as checksum;
use crate::checksum::{CheckOnRead, PIECE};

/// The fixed-size header, as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Header {
    state: u32,
    generation: u32,
    rows: u64,
    last_id: Option<u64>,
    removed: u64,
    strings_len: u64,
    rows_crc: u32,
    strings_crc: u32,
    meta_at: u64,
    meta_len: u32,
}

impl Header {
    fn encode(&self) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&self.state.to_le_bytes());
        h[12..16].copy_from_slice(&self.generation.to_le_bytes());
        h[16..24].copy_from_slice(&self.rows.to_le_bytes());
        h[24..32].copy_from_slice(&self.last_id.unwrap_or(u64::MAX).to_le_bytes());
        h[32..40].copy_from_slice(&self.removed.to_le_bytes());
        h[40..48].copy_from_slice(&self.strings_len.to_le_bytes());
        h[48..52].copy_from_slice(&self.rows_crc.to_le_bytes());
        h[52..56].copy_from_slice(&self.strings_crc.to_le_bytes());
        h[56..64].copy_from_slice(&self.meta_at.to_le_bytes());
        h[64..68].copy_from_slice(&self.meta_len.to_le_bytes());
        h
    }

    fn decode(h: &[u8]) -> Option<Self> {
        if h.len() < HEADER || &h[..8] != MAGIC {
            return None;
        }
        let u32_at = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().expect("8 bytes"));
        Some(Self {
            state: u32_at(8),
            generation: u32_at(12),
            rows: u64_at(16),
            last_id: Some(u64_at(24)).filter(|&id| id != u64::MAX),
            removed: u64_at(32),
            strings_len: u64_at(40),
            rows_crc: u32_at(48),
            strings_crc: u32_at(52),
            meta_at: u64_at(56),
            meta_len: u32_at(64),
        })
    }
}

/// One row, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RowFields {
    id: u64,
    at: u64,
    path_len: u32,
    label_len: u32,
    flags: u32,
    path_hash: u32,
}

impl RowFields {
    fn encode(&self) -> [u8; ROW] {
        let mut r = [0u8; ROW];
        r[..8].copy_from_slice(&self.id.to_le_bytes());
        r[8..16].copy_from_slice(&self.at.to_le_bytes());
        r[16..20].copy_from_slice(&self.path_len.to_le_bytes());
        r[20..24].copy_from_slice(&self.label_len.to_le_bytes());
        r[24..28].copy_from_slice(&self.flags.to_le_bytes());
        r[28..32].copy_from_slice(&self.path_hash.to_le_bytes());
        r
    }

    fn decode(r: &[u8]) -> Self {
        let u32_at = |at: usize| u32::from_le_bytes(r[at..at + 4].try_into().expect("4 bytes"));
        Self {
            id: u64::from_le_bytes(r[..8].try_into().expect("8 bytes")),
            at: u64::from_le_bytes(r[8..16].try_into().expect("8 bytes")),
            path_len: u32_at(16),
            label_len: u32_at(20),
            flags: u32_at(24),
            path_hash: u32_at(28),
        }
    }
}

/// What `status` shows besides the rows, as of the writer's last save:
/// read from the store then, so a cold `status` needs no sled.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub stamp: ModelStamp,
    pub schema_version: u32,
    /// Ingested roots, as path bytes (as the store keeps them).
    pub roots: Vec<Vec<u8>>,
    /// Live images per label.
    pub labels: std::collections::BTreeMap<String, u64>,
}

impl Meta {
    /// The store's meta now.
    fn of(store: &crate::store::Store) -> Result<Self, StoreError> {
        Ok(Self {
            stamp: store
                .model_stamp()?
                .ok_or_else(|| StoreError::CorruptMeta {
                    key: "model",
                    message: "no model stamp".into(),
                })?,
            schema_version: store.schema_version()?,
            roots: store
                .roots()?
                .iter()
                .map(|r| crate::store::path_to_bytes(r))
                .collect(),
            labels: store.label_counts()?,
        })
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("meta serializes")
    }

    fn decode(strings: &[u8], header: &Header) -> Result<Self, String> {
        let at = header.meta_at as usize;
        strings
            .get(at..at + header.meta_len as usize)
            .and_then(|bytes| serde_json::from_slice(bytes).ok())
            .ok_or_else(|| "an unreadable meta".to_string())
    }
}

/// One record as the catalogue holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row<'a> {
    pub id: u64,
    /// The canonical path's bytes (empty for a removed record).
    pub path: &'a [u8],
    pub label: Option<&'a str>,
    pub removed: bool,
}

/// A catalogue a reader may trust: clean, with both checksums matching,
/// checked whole or piece by piece as it is read (see [`Catalogue::damage`]).
pub struct Catalogue {
    header: Header,
    rows: Mapped,
    strings: Mapped,
    rows_check: CheckOnRead,
    strings_check: CheckOnRead,
}

impl Catalogue {
    /// Opens `dir`'s catalogue for reading, or says why it cannot be
    /// trusted (missing, torn, damaged, or a writer's changes unfinished).
    /// With its piece sums, only the pieces read are checked, as they are
    /// read: a caller asks [`Catalogue::damage`] before it trusts what it read.
    pub fn open(dir: &Path) -> Result<Self, String> {
        let loaded = load(dir, Checking::OnRead)?;
        if loaded.header.state != CLEAN {
            return Err("a writer's changes are unfinished".into());
        }
        Ok(Self {
            header: loaded.header,
            rows: loaded.rows,
            strings: loaded.strings,
            rows_check: loaded.rows_check,
            strings_check: loaded.strings_check,
        })
    }

    /// What was found damaged so far, if anything: reads from there gave
    /// nothing, and the store has the truth.
    pub fn damage(&self) -> Option<String> {
        let at = |piece: usize| piece * PIECE;
        match (self.rows_check.damaged(), self.strings_check.damaged()) {
            (Some(piece), _) => Some(format!(
                "the record catalogue's rows are damaged at byte {} (checksum)",
                HEADER + at(piece)
            )),
            (None, Some(piece)) => Some(format!(
                "the record catalogue's strings are damaged at byte {} (checksum)",
                at(piece)
            )),
            (None, None) => None,
        }
    }

    /// The index's model stamp, roots and counts as of the last save.
    pub fn meta(&self) -> Result<Meta, String> {
        let at = self.header.meta_at as usize;
        if !self
            .strings_check
            .range(&self.strings, at..at + self.header.meta_len as usize)
        {
            return Err("damaged meta (checksum)".into());
        }
        Meta::decode(&self.strings, &self.header)
    }

    /// Rows, removed ones included: the flat file's row count.
    pub fn rows(&self) -> usize {
        self.rows.len() / ROW
    }

    pub fn last_id(&self) -> Option<u64> {
        self.header.last_id
    }

    /// Whether this catalogue was saved beside `flat` as it is now: the
    /// same rows, last id and generation.
    pub fn describes(&self, flat: &crate::ann::FlatVectors) -> bool {
        self.rows() == flat.rows()
            && self.last_id() == flat.last_id()
            && self.header.generation == flat.generation()
    }

    /// Rows of live records.
    pub fn live(&self) -> u64 {
        self.header.rows.saturating_sub(self.header.removed)
    }

    /// Every row, in id order; none if either file is damaged (both are
    /// checked whole first, on every core).
    pub fn iter(&self) -> impl Iterator<Item = Row<'_>> + '_ {
        let whole = rayon::join(
            || self.rows_check.all(&self.rows),
            || self.strings_check.all(&self.strings),
        );
        let rows = if whole == (true, true) {
            self.rows()
        } else {
            0
        };
        (0..rows).filter_map(|i| self.row(i))
    }

    /// The ids of removed rows, sorted.
    pub fn removed_ids(&self) -> Vec<u64> {
        if self.header.removed == 0 {
            return Vec::new();
        }
        self.iter().filter(|r| r.removed).map(|r| r.id).collect()
    }

    /// The live record with this id.
    pub fn find(&self, id: u64) -> Option<Row<'_>> {
        // The search reads ids from pieces not checked yet; the row it ends
        // at is checked before it is believed, and a miss is believed only
        // once every row is checked (it is rare: searches find stored ids).
        let id_at = |i: usize| RowFields::decode(&self.rows[i * ROW..]).id;
        match crate::sorted::position_of(self.rows(), id_at, id) {
            Some(i) => self.row(i).filter(|r| r.id == id && !r.removed),
            None => {
                self.rows_check.all(&self.rows);
                None
            }
        }
    }

    /// The live record stored under `path` (a scan: paths are not sorted).
    pub fn id_for_path(&self, path: &[u8]) -> Option<u64> {
        // Most rows are passed over on their path's length and hash (a
        // million of them for every query file under the index's roots);
        // a row that matches is checked, row and path, before it is
        // believed, and a miss only once every row is checked.
        let (len, hash) = (path.len() as u32, crc32c::crc32c(path));
        let found = self
            .rows
            .par_chunks_exact(ROW)
            .enumerate()
            .filter(|(_, r)| r[16..20] == len.to_le_bytes())
            .filter(|(_, r)| {
                let f = RowFields::decode(r);
                f.flags & REMOVED == 0 && (f.flags & PATH_HASHED == 0 || f.path_hash == hash)
            })
            .find_first(|&(i, _)| self.row(i).is_some_and(|row| row.path == path));
        match found {
            Some((i, _)) => self.row(i).filter(|r| !r.removed).map(|r| r.id),
            None => {
                self.rows_check.all(&self.rows);
                None
            }
        }
    }

    /// Row `i`, or `None` where its row or strings are damaged.
    fn row(&self, i: usize) -> Option<Row<'_>> {
        if !self.rows_check.range(&self.rows, i * ROW..(i + 1) * ROW) {
            return None;
        }
        let f = RowFields::decode(&self.rows[i * ROW..]);
        let label = match f.label_len {
            NO_LABEL => None,
            len => {
                Some(std::str::from_utf8(self.bytes(f.at + f.path_len as u64, len)?).unwrap_or(""))
            }
        };
        Some(Row {
            id: f.id,
            path: self.bytes(f.at, f.path_len)?,
            label,
            removed: f.flags & REMOVED != 0,
        })
    }

    /// `len` string bytes at `at`, checked; `None` where they are damaged,
    /// and empty if out of bounds (which the checksums make impossible
    /// short of a bug, but a reader never panics on what it reads from
    /// disk).
    fn bytes(&self, at: u64, len: u32) -> Option<&[u8]> {
        let Some(range) = usize::try_from(at)
            .ok()
            .and_then(|at| Some(at..at.checked_add(len as usize)?))
            .filter(|range| range.end <= self.strings.len())
        else {
            return Some(&[]);
        };
        self.strings_check
            .range(&self.strings, range.clone())
            .then(|| &self.strings[range])
    }
}

#[cfg(test)]
mod tests;
