//! Block checksums of the flat file, kept beside it in `vectors.flat.sum`,
//! so damage (flipped bits, zeroed rows of the same file size) is found
//! when the file is opened instead of silently hiding images from search.
//!
//! One CRC32C per block of [`BLOCK_ROWS`] rows; the last block may be
//! partial and is extended as rows are appended (CRC32C continues over
//! appended bytes, so nothing is re-read). Written after the header, by
//! [`crate::fsutil::write_atomically`]; a sum file that does not cover
//! exactly the header's rows (a crash between the two writes) fails the
//! check like damage does, and the flat file is rebuilt from the store.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Rows per checksum.
pub const BLOCK_ROWS: usize = 4096;
const MAGIC: &[u8; 8] = b"ISFSUM01";

/// Checksums of the first `rows` rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sums {
    rows: usize,
    blocks: Vec<u32>,
}

impl Sums {
    /// The sums of `data`, whole rows of `row_bytes` each, block by block
    /// on every core (a cold query checks a million rows' sums first).
    pub fn of(data: &[u8], row_bytes: usize) -> Self {
        use rayon::prelude::*;
        let whole = data.len() / row_bytes * row_bytes;
        Self {
            rows: whole / row_bytes,
            blocks: data[..whole]
                .par_chunks(BLOCK_ROWS * row_bytes)
                .map(crc32c::crc32c)
                .collect(),
        }
    }

    /// Rows summed.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Each block's sum, in order.
    pub fn into_blocks(self) -> Vec<u32> {
        self.blocks
    }

    /// Counts appended rows in.
    pub fn extend(&mut self, mut data: &[u8], row_bytes: usize) {
        while !data.is_empty() {
            let in_block = self.rows % BLOCK_ROWS;
            let take = (BLOCK_ROWS - in_block).min(data.len() / row_bytes);
            let (rows, rest) = data.split_at(take * row_bytes);
            if in_block == 0 {
                self.blocks.push(crc32c::crc32c(rows));
            } else {
                let last = self.blocks.last_mut().expect("a partial block");
                *last = crc32c::crc32c_append(*last, rows);
            }
            self.rows += take;
            data = rest;
        }
    }

    /// Where the sums of the flat file at `flat` are kept.
    pub fn path(flat: &Path) -> PathBuf {
        let mut name = flat.as_os_str().to_owned();
        name.push(".sum");
        PathBuf::from(name)
    }

    /// The sums saved at `path`, or `None` when there are none readable.
    pub fn read(path: &Path) -> Option<Self> {
        let bytes = std::fs::read(path).ok()?;
        if bytes.len() < 16 || &bytes[..8] != MAGIC || (bytes.len() - 16) % 4 != 0 {
            return None;
        }
        let rows = u64::from_le_bytes(bytes[8..16].try_into().ok()?) as usize;
        let blocks: Vec<u32> = bytes[16..]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        (blocks.len() == rows.div_ceil(BLOCK_ROWS)).then_some(Self { rows, blocks })
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        crate::fsutil::write_atomically(
            path,
            |out| {
                out.write_all(MAGIC)?;
                out.write_all(&(self.rows as u64).to_le_bytes())?;
                for b in &self.blocks {
                    out.write_all(&b.to_le_bytes())?;
                }
                Ok(())
            },
            |_, e| e,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appending_in_any_pieces_gives_the_same_sums() {
        let row = 12;
        let data: Vec<u8> = (0..(BLOCK_ROWS * 2 + 77) * row).map(|i| i as u8).collect();
        let whole = Sums::of(&data, row);
        let mut pieces = Sums::default();
        for chunk in data.chunks(row * 1000) {
            pieces.extend(chunk, row);
        }
        assert_eq!(whole, pieces);
        assert_eq!(whole.blocks.len(), 3);
        let mut damaged = data.clone();
        damaged[row * 5000..row * 5001].fill(0);
        assert_ne!(Sums::of(&damaged, row), whole);

        let dir = tempfile::tempdir().unwrap();
        let path = Sums::path(&dir.path().join("vectors.flat"));
        whole.write(&path).unwrap();
        assert_eq!(Sums::read(&path), Some(whole));
    }
}
