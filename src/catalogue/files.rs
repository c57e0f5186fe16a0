//! The catalogue's files on disk: mapped, and checked against the header's
//! checksums (whole, or piece by piece through `records.sum`); and the
//! piece sums' own format. What the checks promise is in the module above.

use std::path::Path;

use super::{Header, RowFields, FILE_NAME, HEADER, ROW, STRINGS_NAME, SUMS_MAGIC, SUMS_NAME};
use crate::checksum::{CheckOnRead, Pieces, PIECE};

/// Part of a file, memory-mapped: a reader of a million records touches
/// their pages once (the checksums) instead of copying 60 MB.
pub(super) struct Mapped {
    /// `None` for an empty part (an empty file cannot be mapped).
    map: Option<memmap2::Mmap>,
    start: usize,
    len: usize,
}

impl Mapped {
    /// `len` bytes of `path` from `start`, or `None` if the file is shorter.
    /// `populate`: every page is about to be read (a whole check), so they
    /// are faulted in at once; otherwise only the pages read are.
    fn open(
        path: &Path,
        start: usize,
        len: usize,
        populate: bool,
    ) -> std::io::Result<Option<Self>> {
        let file = std::fs::File::open(path)?;
        let end = start.saturating_add(len);
        if (file.metadata()?.len() as u128) < end as u128 {
            return Ok(None);
        }
        // SAFETY: the catalogue's files are never truncated: writers write
        // at offsets within or past the end, and rewrites replace a file by
        // rename, so the mapped range stays valid. What a concurrent writer
        // changes in place can only make a reader's view inconsistent, and
        // every read of it is bounds-checked.
        let map = match end {
            0 => None,
            _ => {
                let mut options = memmap2::MmapOptions::new();
                if populate {
                    options.populate();
                }
                Some(unsafe { options.map(&file)? })
            }
        };
        Ok(Some(Self { map, start, len }))
    }
}

impl std::ops::Deref for Mapped {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.map {
            Some(map) => &map[self.start..self.start + self.len],
            None => &[],
        }
    }
}

/// Both files, mapped, with what checks them against their header.
pub(super) struct Loaded {
    pub(super) header: Header,
    /// The rows, without the header.
    pub(super) rows: Mapped,
    pub(super) strings: Mapped,
    pub(super) rows_check: CheckOnRead,
    pub(super) strings_check: CheckOnRead,
    /// The strings' piece sums, which a writer goes on extending.
    pub(super) strings_pieces: Pieces,
}

/// How a catalogue is checked against its header's checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Checking {
    /// Both files whole, now: what a writer, which reads all of them, needs.
    Whole,
    /// Piece by piece as they are read, where `records.sum` adds up to the
    /// header's checksums (whole, now, where it does not).
    OnRead,
}

/// Maps `dir`'s catalogue and checks what the header promises (all of it,
/// or what can be checked before a read, see [`Checking`]), or says why it
/// cannot be trusted. A clean header is not asked for here: the reader asks
/// for it, the writer knows what a dirty one means.
pub(super) fn load(dir: &Path, checking: Checking) -> Result<Loaded, String> {
    let path = dir.join(FILE_NAME);
    let head = match std::fs::File::open(&path) {
        Ok(mut file) => {
            let mut head = [0u8; HEADER];
            std::io::Read::read_exact(&mut file, &mut head)
                .map_err(|_| "not a record catalogue".to_string())?;
            head
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("missing".into()),
        Err(e) => return Err(format!("unreadable: {e}")),
    };
    let header = Header::decode(&head).ok_or("not a record catalogue")?;
    // A damaged count can be any number: checked, not multiplied blindly.
    let rows_len = usize::try_from(header.rows)
        .ok()
        .and_then(|rows| rows.checked_mul(ROW))
        .ok_or("a row count past memory")?;
    let strings_len = usize::try_from(header.strings_len).map_err(|_| "strings past memory")?;
    let saved = match checking {
        Checking::OnRead => read_sums(dir, &header),
        Checking::Whole => None,
    };
    let populate = saved.is_none();
    let rows = Mapped::open(&path, HEADER, rows_len, populate)
        .map_err(|e| format!("unreadable: {e}"))?
        .ok_or("torn: shorter than its row count")?;
    let strings = Mapped::open(&dir.join(STRINGS_NAME), 0, strings_len, populate)
        .map_err(|e| format!("strings unreadable: {e}"))?
        .ok_or("torn: strings shorter than the header says")?;
    let (rows_check, strings_check, strings_pieces) = match saved {
        Some((rows_pieces, strings_pieces)) => (
            CheckOnRead::new(PIECE, rows_pieces.sums, rows.len()),
            CheckOnRead::new(PIECE, strings_pieces.sums.clone(), strings.len()),
            strings_pieces,
        ),
        None => {
            let (rows_pieces, strings_pieces) =
                rayon::join(|| Pieces::of(&rows), || Pieces::of(&strings));
            if rows_pieces.checksum() != Some(header.rows_crc) {
                return Err("damaged rows (checksum)".into());
            }
            if strings_pieces.checksum() != Some(header.strings_crc) {
                return Err("damaged strings (checksum)".into());
            }
            (
                CheckOnRead::checked(PIECE, rows_pieces.sums, rows.len()),
                CheckOnRead::checked(PIECE, strings_pieces.sums.clone(), strings.len()),
                strings_pieces,
            )
        }
    };
    let (Some(rows_check), Some(strings_check)) = (rows_check, strings_check) else {
        unreachable!("one sum per piece: counted from the same lengths")
    };
    let last_row = rows.len().checked_sub(ROW);
    if last_row.is_some_and(|at| !rows_check.range(&rows, at..at + ROW)) {
        return Err("damaged rows (checksum)".into());
    }
    let last_row_id = last_row.map(|at| RowFields::decode(&rows[at..]).id);
    if last_row_id != header.last_id {
        return Err("its last id is not its last row's".into());
    }
    if header.meta_at.saturating_add(header.meta_len as u64) > strings.len() as u64 {
        return Err("its meta lies past the strings".into());
    }
    Ok(Loaded {
        header,
        rows,
        strings,
        rows_check,
        strings_check,
        strings_pieces,
    })
}

/// The piece sums saved in `records.sum`, when they were saved for this
/// header: both files' lengths, and pieces that add up to its checksums.
pub(super) fn read_sums(dir: &Path, header: &Header) -> Option<(Pieces, Pieces)> {
    let bytes = std::fs::read(dir.join(SUMS_NAME)).ok()?;
    let (magic, rest) = bytes.split_first_chunk::<8>()?;
    if magic != SUMS_MAGIC {
        return None;
    }
    let mut words = rest
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes(w.try_into().unwrap()));
    let mut u64_next = || Some(u64::from(words.next()?) | u64::from(words.next()?) << 32);
    let (rows_len, strings_len) = (u64_next()?, u64_next()?);
    if rows_len != header.rows.checked_mul(ROW as u64)? || strings_len != header.strings_len {
        return None;
    }
    let mut take = |len: u64| -> Option<Pieces> {
        let count = usize::try_from(len).ok()?.div_ceil(PIECE);
        let sums: Vec<u32> = words.by_ref().take(count).collect();
        (sums.len() == count).then_some(Pieces { len, sums })
    };
    let (rows, strings) = (take(rows_len)?, take(strings_len)?);
    let adds_up = rows.checksum() == Some(header.rows_crc)
        && strings.checksum() == Some(header.strings_crc)
        && words.next().is_none();
    adds_up.then_some((rows, strings))
}

/// `records.sum`'s bytes for pieces of the rows and the strings.
pub fn encode_sums(rows: &Pieces, strings: &Pieces) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + 4 * (rows.sums.len() + strings.sums.len()));
    out.extend_from_slice(SUMS_MAGIC);
    out.extend_from_slice(&rows.len.to_le_bytes());
    out.extend_from_slice(&strings.len.to_le_bytes());
    for sum in rows.sums.iter().chain(&strings.sums) {
        out.extend_from_slice(&sum.to_le_bytes());
    }
    out
}
