//! The catalogue's writer, kept by an open [`crate::index::Index`]: told of
//! every change the store commits, and the only thing that marks the
//! catalogue clean.
//!
//! The order of a commit: [`CatalogueWriter::begin`] (the header says
//! dirty, synced), the store's transaction, the flat file's append, then
//! [`CatalogueWriter::record`]. [`CatalogueWriter::save`] runs after the
//! store and the flat file are synced, and is what says clean. A kill
//! anywhere between leaves the header dirty, so readers open the store
//! instead, and the next writer rebuilds the catalogue from the store.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{
    encode_sums, load, CatalogueError, Checking, Header, Loaded, Meta, RowFields, CLEAN, DIRTY,
    FILE_NAME, HEADER, NO_LABEL, PATH_HASHED, REMOVED, ROW, STRINGS_NAME, SUMS_NAME,
};
use crate::ann::FlatVectors;
use crate::checksum::Pieces;
use crate::fsutil;
use crate::store::{Applied, ModelStamp, Record, Store, StoreError};

pub struct CatalogueWriter {
    dir: PathBuf,
    /// The header as it will be written next (its state aside).
    header: Header,
    /// The rows as they are on disk (without the header): what the rows'
    /// checksum is computed from, and where an id's row is found.
    rows: Vec<u8>,
    rows_file: File,
    strings_file: File,
    /// The strings' piece sums, the last piece's extended as strings are
    /// appended (the strings are not kept in memory).
    strings_pieces: Pieces,
    /// Whether the header on disk says dirty.
    dirty: bool,
    /// A write failed part way: the files may not match `rows` and
    /// `header`, so they stay dirty until the next writer rebuilds them.
    failed: bool,
}

impl CatalogueWriter {
    /// Opens the catalogue in `dir` (`flat` caught up with `store` already),
    /// rebuilding it from the flat file's rows and the store when it cannot
    /// be trusted; says why it was rebuilt, if it was.
    pub fn open(
        dir: &Path,
        store: &Store,
        flat: &mut FlatVectors,
        stamp: &ModelStamp,
    ) -> Result<(Self, Option<String>), CatalogueError> {
        let why = match load(dir, Checking::Whole) {
            Ok(loaded) => match disagreement(&loaded, store, flat, stamp)? {
                None => {
                    if loaded.header.state == CLEAN
                        && super::read_sums(dir, &loaded.header).is_none()
                    {
                        // Made before the piece sums (or they were lost):
                        // saved now, so readers check only what they read.
                        let sums = encode_sums(&Pieces::of(&loaded.rows), &loaded.strings_pieces);
                        let path = dir.join(SUMS_NAME);
                        fsutil::write_bytes_atomically(&path, &sums)
                            .map_err(|source| CatalogueError::Io { path, source })?;
                    }
                    let rows = loaded.rows.to_vec();
                    let writer = Self::with(dir, loaded.header, rows, loaded.strings_pieces)?;
                    return Ok((writer, None));
                }
                Some(why) => why,
            },
            Err(why) => why,
        };
        Ok((Self::write_fresh(dir, store, flat, stamp)?, Some(why)))
    }

    /// Writes the catalogue afresh for `flat`'s rows from `store`, clean,
    /// replacing the files atomically.
    pub fn write_fresh(
        dir: &Path,
        store: &Store,
        flat: &mut FlatVectors,
        stamp: &ModelStamp,
    ) -> Result<Self, CatalogueError> {
        let meta = Meta::of(store)?;
        debug_assert_eq!(&meta.stamp, stamp);
        let mut strings = meta.encode();
        let meta_len = strings.len() as u32;
        let mut rows = Vec::with_capacity(flat.rows() * ROW);
        let mut removed = 0;
        // Both in id order: a merge. Records the flat file lacks (none,
        // once it is caught up) are passed over.
        let mut records = store.records().peekable();
        for id in flat.row_ids() {
            let mut record = None;
            while let Some(item) = records.peek() {
                match item {
                    Ok((at, _)) if *at < id => {
                        records.next();
                    }
                    Ok((at, _)) if *at == id => {
                        record = records.next().and_then(Result::ok).map(|(_, r)| r);
                        break;
                    }
                    Ok(_) => break,
                    Err(_) => return Err(records.next().expect("peeked").unwrap_err().into()),
                }
            }
            removed += u64::from(record.is_none());
            rows.extend(row_of(id, record.as_ref(), &mut strings).encode());
        }
        let generation = rand::random();
        flat.set_generation(generation)?;
        let (rows_pieces, strings_pieces) = (Pieces::of(&rows), Pieces::of(&strings));
        let header = Header {
            state: CLEAN,
            generation,
            rows: flat.rows() as u64,
            last_id: flat.last_id(),
            removed,
            strings_len: strings.len() as u64,
            rows_crc: rows_pieces.checksum().expect("pieces of these rows"),
            strings_crc: strings_pieces.checksum().expect("pieces of these strings"),
            meta_at: 0,
            meta_len,
        };
        // The strings first: a crash between the two renames leaves the old
        // header over the new strings, which fails its checksum (a rebuild,
        // never a wrong answer). Piece sums that are not the header's add
        // up to another checksum, and are passed over.
        let io = |path: PathBuf| move |source| CatalogueError::Io { path, source };
        let strings_path = dir.join(STRINGS_NAME);
        fsutil::write_bytes_atomically(&strings_path, &strings).map_err(io(strings_path))?;
        let sums_path = dir.join(SUMS_NAME);
        fsutil::write_bytes_atomically(&sums_path, &encode_sums(&rows_pieces, &strings_pieces))
            .map_err(io(sums_path))?;
        let path = dir.join(FILE_NAME);
        let mut file = Vec::with_capacity(HEADER + rows.len());
        file.extend_from_slice(&header.encode());
        file.extend_from_slice(&rows);
        fsutil::write_bytes_atomically(&path, &file).map_err(io(path))?;
        Self::with(dir, header, rows, strings_pieces)
    }

    fn with(
        dir: &Path,
        header: Header,
        rows: Vec<u8>,
        strings_pieces: Pieces,
    ) -> Result<Self, CatalogueError> {
        let open = |name: &str| {
            let path = dir.join(name);
            OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|source| CatalogueError::Io { path, source })
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            header,
            rows,
            rows_file: open(FILE_NAME)?,
            strings_file: open(STRINGS_NAME)?,
            strings_pieces,
            dirty: header.state == DIRTY,
            failed: false,
        })
    }

    /// Marks the catalogue dirty on disk before the store changes.
    pub fn begin(&mut self) -> Result<(), CatalogueError> {
        if self.dirty {
            return Ok(());
        }
        let header = Header {
            state: DIRTY,
            ..self.header
        };
        self.write_at(FILE_NAME, 0, &header.encode())?;
        self.sync(FILE_NAME)?;
        self.dirty = true;
        Ok(())
    }

    /// Mirrors what the store just committed: `added` are the batch's new
    /// records (the flat file holds their rows now), `applied` what
    /// [`Store::apply`] said it did.
    pub fn record(
        &mut self,
        store: &Store,
        added: &[(u64, &Record)],
        applied: &Applied,
    ) -> Result<(), CatalogueError> {
        debug_assert!(self.dirty, "begin() comes before the store changes");
        let result = self.try_record(store, added, applied);
        self.failed |= result.is_err();
        result
    }

    fn try_record(
        &mut self,
        store: &Store,
        added: &[(u64, &Record)],
        applied: &Applied,
    ) -> Result<(), CatalogueError> {
        let mut strings = Vec::new();
        let mut rows = Vec::new();
        let base = self.header.strings_len;
        for &(id, record) in added {
            if self.header.last_id.is_some_and(|last| id <= last) {
                continue;
            }
            let mut row = row_of(id, Some(record), &mut strings);
            row.at += base;
            rows.extend(row.encode());
            self.header.last_id = Some(id);
        }
        self.append_strings(&strings)?;
        let at = (HEADER + self.rows.len()) as u64;
        self.write_at(FILE_NAME, at, &rows)?;
        self.rows.extend(&rows);
        self.header.rows = (self.rows.len() / ROW) as u64;

        for &id in &applied.changed {
            let (Some(i), Some(record)) = (self.row_index(id), store.record(id)?) else {
                continue;
            };
            let mut strings = Vec::new();
            let mut row = row_of(id, Some(&record), &mut strings);
            row.at += self.header.strings_len;
            self.append_strings(&strings)?;
            self.put_row(i, row)?;
        }
        for &id in &applied.removed {
            let Some(i) = self.row_index(id) else {
                continue;
            };
            let row = RowFields::decode(&self.rows[i * ROW..]);
            if row.flags & REMOVED == 0 {
                // The row a rebuild would write: a removed record keeps no
                // path or label (its bytes go at the next rewrite).
                self.put_row(i, row_of(id, None, &mut Vec::new()))?;
                self.header.removed += 1;
            }
        }
        Ok(())
    }

    /// Says clean: call it once the store is synced. The store's meta
    /// (roots, label counts) is recorded as it is now, and the flat file
    /// (which holds the rows recorded here) is synced with the new
    /// generation.
    pub fn save(&mut self, store: &Store, flat: &mut FlatVectors) -> Result<(), CatalogueError> {
        if !self.dirty || self.failed {
            return Ok(());
        }
        let meta = Meta::of(store)?.encode();
        let meta_at = self.header.strings_len;
        self.append_strings(&meta)?;
        (self.header.meta_at, self.header.meta_len) = (meta_at, meta.len() as u32);
        self.sync(STRINGS_NAME)?;
        let generation = rand::random();
        flat.set_generation(generation)?;
        self.header.generation = generation;
        self.header.state = CLEAN;
        let rows_pieces = Pieces::of(&self.rows);
        self.header.rows_crc = rows_pieces.checksum().expect("pieces of these rows");
        self.header.strings_crc = (self.strings_pieces.checksum()).expect("pieces of the strings");
        // The piece sums before the header that they must add up to, so a
        // reader of the new header finds them (a crash between the two
        // leaves the old header, still dirty).
        let sums = encode_sums(&rows_pieces, &self.strings_pieces);
        let sums_path = self.dir.join(SUMS_NAME);
        fsutil::write_bytes_atomically(&sums_path, &sums).map_err(|source| {
            self.failed = true;
            CatalogueError::Io {
                path: sums_path.clone(),
                source,
            }
        })?;
        let header = self.header.encode();
        self.write_at(FILE_NAME, 0, &header)?;
        self.sync(FILE_NAME)?;
        self.dirty = false;
        Ok(())
    }

    fn append_strings(&mut self, bytes: &[u8]) -> Result<(), CatalogueError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.write_at(STRINGS_NAME, self.header.strings_len, bytes)?;
        self.strings_pieces.extend(bytes);
        self.header.strings_len += bytes.len() as u64;
        Ok(())
    }

    fn put_row(&mut self, i: usize, row: RowFields) -> Result<(), CatalogueError> {
        let bytes = row.encode();
        self.write_at(FILE_NAME, (HEADER + i * ROW) as u64, &bytes)?;
        self.rows[i * ROW..(i + 1) * ROW].copy_from_slice(&bytes);
        Ok(())
    }

    fn row_index(&self, id: u64) -> Option<usize> {
        let id_at = |i: usize| RowFields::decode(&self.rows[i * ROW..]).id;
        crate::sorted::position_of(self.rows.len() / ROW, id_at, id)
    }

    fn write_at(&mut self, name: &str, at: u64, bytes: &[u8]) -> Result<(), CatalogueError> {
        let file = if name == FILE_NAME {
            &self.rows_file
        } else {
            &self.strings_file
        };
        let written = file.write_all_at(bytes, at);
        self.failed |= written.is_err();
        written.map_err(|source| CatalogueError::Io {
            path: self.dir.join(name),
            source,
        })
    }

    fn sync(&mut self, name: &str) -> Result<(), CatalogueError> {
        let file = if name == FILE_NAME {
            &self.rows_file
        } else {
            &self.strings_file
        };
        file.sync_data().map_err(|source| CatalogueError::Io {
            path: self.dir.join(name),
            source,
        })
    }
}

/// Why a loaded catalogue does not agree with the store and flat file a
/// writer opened, or `None` when it does.
fn disagreement(
    loaded: &Loaded,
    store: &Store,
    flat: &FlatVectors,
    stamp: &ModelStamp,
) -> Result<Option<String>, StoreError> {
    let header = &loaded.header;
    let stored_stamp = Meta::decode(&loaded.strings, header).ok().map(|m| m.stamp);
    // Rows written before paths were hashed are still right, but a lookup
    // by path must read every such row's path: rewritten once.
    let unhashed = || {
        loaded.rows.chunks_exact(ROW).any(|r| {
            let flags = u32::from_le_bytes(r[24..28].try_into().expect("4 bytes"));
            flags & (REMOVED | PATH_HASHED) == 0
        })
    };
    Ok(if header.state != CLEAN {
        Some("left dirty: a writer stopped before it finished".into())
    } else if header.rows != flat.rows() as u64
        || header.last_id != flat.last_id()
        || header.generation != flat.generation()
    {
        Some("made for another state of the flat file".into())
    } else if header.removed != store.tombstone_count()?
        || header.rows - header.removed.min(header.rows) != store.live_count()?
    {
        Some("behind the store".into())
    } else if stored_stamp.as_ref() != Some(stamp) {
        Some("made for another model".into())
    } else if unhashed() {
        Some("made before its rows kept their path's hash".into())
    } else {
        None
    })
}

/// A row for `id`, its strings appended to `strings` (offsets relative to
/// the start of `strings`); a removed row when `record` is `None`.
fn row_of(id: u64, record: Option<&Record>, strings: &mut Vec<u8>) -> RowFields {
    let at = strings.len() as u64;
    match record {
        Some(record) => {
            strings.extend_from_slice(&record.path);
            let label_len = match &record.label {
                Some(label) => {
                    strings.extend_from_slice(label.as_bytes());
                    label.len() as u32
                }
                None => NO_LABEL,
            };
            RowFields {
                id,
                at,
                path_len: record.path.len() as u32,
                label_len,
                flags: PATH_HASHED,
                path_hash: crc32c::crc32c(&record.path),
            }
        }
        None => RowFields {
            id,
            at,
            path_len: 0,
            label_len: NO_LABEL,
            flags: REMOVED,
            path_hash: 0,
        },
    }
}
