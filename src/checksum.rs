//! The checksum of the derived files (record catalogue, graph): the CRC32C
//! of the CRC32Cs of 1 MiB chunks, so a large file is checked on every core
//! and an appended one is extended without reading it again.
//!
//! A reader that needs only part of a large file (a cold query reads ten
//! records of a million) checks only the parts it reads, against finer
//! sums kept beside the file: [`Pieces`] holds the CRC32C of each
//! [`PIECE`], and [`CheckOnRead`] checks a piece the first time something
//! reads it. The finer sums need no trust of their own: they add up (by
//! CRC combination) to the chunk sums, and so to the checksum the file's
//! header keeps.

use std::ops::Range;
use std::sync::atomic::{AtomicU8, Ordering};

use rayon::prelude::*;

/// Bytes per checksummed chunk.
pub const CHUNK: usize = 1 << 20;
/// Bytes per piece of the finer sums a reader checks as it reads: a
/// record's path costs a 64 KiB check, not a 1 MiB one.
pub const PIECE: usize = 1 << 16;

/// The CRC32C of the CRC32Cs of `bytes`' 1 MiB chunks (little-endian, in
/// order).
pub fn chunked(bytes: &[u8]) -> u32 {
    of_chunks(&chunk_sums(bytes))
}

/// The CRC32C of each 1 MiB chunk, on every core.
pub fn chunk_sums(bytes: &[u8]) -> Vec<u32> {
    bytes.par_chunks(CHUNK).map(crc32c::crc32c).collect()
}

/// The checksum of a file whose chunks have these sums.
pub fn of_chunks(chunks: &[u32]) -> u32 {
    let bytes: Vec<u8> = chunks.iter().flat_map(|c| c.to_le_bytes()).collect();
    crc32c::crc32c(&bytes)
}

/// Extends the sums of `len` bytes, cut in `part`-byte parts, with
/// appended `bytes`.
pub fn extend_sums(sums: &mut Vec<u32>, part: usize, len: u64, mut bytes: &[u8]) {
    let mut len = len as usize;
    while !bytes.is_empty() {
        let in_part = len % part;
        let (head, rest) = bytes.split_at((part - in_part).min(bytes.len()));
        match (in_part, sums.last_mut()) {
            (0, _) | (_, None) => sums.push(crc32c::crc32c(head)),
            (_, Some(last)) => *last = crc32c::crc32c_append(*last, head),
        }
        len += head.len();
        bytes = rest;
    }
}

/// The CRC32C of each [`PIECE`] of some bytes, and how many bytes: what a
/// file's chunk sums are made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pieces {
    pub len: u64,
    pub sums: Vec<u32>,
}

impl Pieces {
    /// The pieces of `bytes`, on every core.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            len: bytes.len() as u64,
            sums: bytes.par_chunks(PIECE).map(crc32c::crc32c).collect(),
        }
    }

    /// Counts appended bytes in.
    pub fn extend(&mut self, bytes: &[u8]) {
        extend_sums(&mut self.sums, PIECE, self.len, bytes);
        self.len += bytes.len() as u64;
    }

    /// The 1 MiB chunk sums these pieces add up to; `None` when there are
    /// not exactly as many pieces as the length needs.
    pub fn chunk_sums(&self) -> Option<Vec<u32>> {
        let len = usize::try_from(self.len).ok()?;
        if self.sums.len() != len.div_ceil(PIECE) {
            return None;
        }
        let per_chunk = CHUNK / PIECE;
        let past_piece = x_to_8n(PIECE);
        Some(
            self.sums
                .chunks(per_chunk)
                .enumerate()
                .map(|(c, pieces)| {
                    let start = c * CHUNK;
                    pieces
                        .iter()
                        .enumerate()
                        .skip(1)
                        .fold(pieces[0], |crc, (i, &piece)| {
                            match (len - (start + i * PIECE)).min(PIECE) {
                                PIECE => multiply(crc, past_piece) ^ piece,
                                short => combine(crc, piece, short),
                            }
                        })
                })
                .collect(),
        )
    }

    /// The file checksum ([`chunked`]) of the bytes these pieces sum.
    pub fn checksum(&self) -> Option<u32> {
        self.chunk_sums().map(|chunks| of_chunks(&chunks))
    }
}

/// CRC32C's polynomial, bit-reflected: bit 31 is x⁰.
const POLY: u32 = 0x82F6_3B78;

/// The CRC32C of A followed by B, from those of A and B and B's length:
/// `crc(A)·x^(8·len(B)) + crc(B)` modulo the polynomial (the initial and
/// final inversions cancel). The crc32c crate's own combine builds a
/// matrix per call (about 20 µs); this is a few hundred nanoseconds.
pub fn combine(crc_a: u32, crc_b: u32, len_b: usize) -> u32 {
    multiply(crc_a, x_to_8n(len_b)) ^ crc_b
}

/// `a·b` modulo the polynomial, both bit-reflected.
fn multiply(a: u32, mut b: u32) -> u32 {
    let mut product = 0;
    for bit in (0..32).rev() {
        if a >> bit & 1 == 1 {
            product ^= b;
        }
        // b·x
        b = (b >> 1) ^ (POLY & 0u32.wrapping_sub(b & 1));
    }
    product
}

/// x^(8n) modulo the polynomial, bit-reflected: squarings of x, multiplied
/// together where `8n` has a bit.
fn x_to_8n(n: usize) -> u32 {
    let mut power = 1u32 << 31; // x⁰
    let mut square = 1u32 << 23; // x⁸: the first bit of 8n is bit 3
    let mut n = n;
    while n != 0 {
        if n & 1 == 1 {
            power = multiply(power, square);
        }
        square = multiply(square, square);
        n >>= 1;
    }
    power
}

const UNCHECKED: u8 = 0;
const GOOD: u8 = 1;
const DAMAGED: u8 = 2;

/// Sums of the equal parts of some bytes (the last may be shorter), each
/// part checked the first time a read touches it. A damaged part stays
/// damaged: [`CheckOnRead::damaged`] says which one, and a reader that
/// finds one discards what it read and goes to the source of truth.
pub struct CheckOnRead {
    part: usize,
    sums: Vec<u32>,
    state: Vec<AtomicU8>,
}

impl CheckOnRead {
    /// Parts of `part` bytes with these sums; `None` unless there is one
    /// sum per part of `len` bytes.
    pub fn new(part: usize, sums: Vec<u32>, len: usize) -> Option<Self> {
        (part > 0 && sums.len() == len.div_ceil(part)).then(|| Self {
            part,
            state: sums.iter().map(|_| AtomicU8::new(UNCHECKED)).collect(),
            sums,
        })
    }

    /// The same, every part already checked (the whole was, just now).
    pub fn checked(part: usize, sums: Vec<u32>, len: usize) -> Option<Self> {
        let check = Self::new(part, sums, len)?;
        for state in &check.state {
            state.store(GOOD, Ordering::Relaxed);
        }
        Some(check)
    }

    /// Whether part `i`, whose bytes are `bytes`, matches its sum (checked
    /// once).
    pub fn part(&self, i: usize, bytes: &[u8]) -> bool {
        match self.state[i].load(Ordering::Relaxed) {
            GOOD => true,
            DAMAGED => false,
            _ => {
                let good = crc32c::crc32c(bytes) == self.sums[i];
                self.state[i].store(if good { GOOD } else { DAMAGED }, Ordering::Relaxed);
                good
            }
        }
    }

    /// Whether every part holding `all[range]` matches its sum (`all`: the
    /// whole of the checked bytes).
    pub fn range(&self, all: &[u8], range: Range<usize>) -> bool {
        if range.is_empty() {
            return true;
        }
        let parts = range.start / self.part..(range.end - 1) / self.part + 1;
        parts
            .into_iter()
            .all(|i| self.part(i, self.bytes_of(all, i)))
    }

    /// Whether every part matches its sum, checked on every core.
    pub fn all(&self, all: &[u8]) -> bool {
        (0..self.sums.len())
            .into_par_iter()
            .map(|i| self.part(i, self.bytes_of(all, i)))
            .reduce(|| true, |a, b| a && b)
    }

    /// The first part found damaged, if any.
    pub fn damaged(&self) -> Option<usize> {
        self.state
            .iter()
            .position(|s| s.load(Ordering::Relaxed) == DAMAGED)
    }

    fn bytes_of<'a>(&self, all: &'a [u8], i: usize) -> &'a [u8] {
        &all[i * self.part..((i + 1) * self.part).min(all.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn pieces_add_up_to_the_chunked_checksum_at_any_length() {
        for len in [
            0,
            1,
            PIECE - 1,
            PIECE,
            CHUNK,
            CHUNK + 1,
            2 * CHUNK + 3 * PIECE + 17,
        ] {
            let data = bytes(len);
            let whole = Pieces::of(&data);
            assert_eq!(whole.checksum(), Some(chunked(&data)), "len {len}");
            let mut appended = Pieces::default();
            for part in data.chunks(100_003) {
                appended.extend(part);
            }
            assert_eq!(appended, whole, "len {len}");
        }
        // A piece too many or too few, or a wrong one, adds up to nothing
        // or to another checksum.
        let data = bytes(CHUNK + 5);
        let mut pieces = Pieces::of(&data);
        pieces.sums.push(0);
        assert_eq!(pieces.checksum(), None);
        pieces.sums.pop();
        pieces.sums[3] ^= 1;
        assert_ne!(pieces.checksum(), Some(chunked(&data)));
    }

    #[test]
    fn combine_agrees_with_the_crate_and_with_crc_of_the_whole() {
        let data = bytes(3 * PIECE + 11);
        for split in [0, 1, 7, PIECE, 2 * PIECE + 5, data.len()] {
            let (a, b) = data.split_at(split);
            let (ca, cb) = (crc32c::crc32c(a), crc32c::crc32c(b));
            assert_eq!(
                combine(ca, cb, b.len()),
                crc32c::crc32c(&data),
                "split {split}"
            );
            assert_eq!(
                combine(ca, cb, b.len()),
                crc32c::crc32c_combine(ca, cb, b.len())
            );
        }
    }

    #[test]
    fn a_read_checks_only_the_parts_it_touches_and_remembers_damage() {
        let mut data = bytes(10 * PIECE + 5);
        let pieces = Pieces::of(&data);
        data[3 * PIECE + 9] ^= 0x40;
        let check = CheckOnRead::new(PIECE, pieces.sums.clone(), data.len()).unwrap();
        assert!(check.range(&data, 0..2 * PIECE));
        assert!(check.range(&data, 10 * PIECE..10 * PIECE + 5));
        assert!(check.range(&data, 7..7), "an empty read checks nothing");
        assert_eq!(check.damaged(), None, "the damaged part is not read yet");
        assert!(!check.range(&data, 3 * PIECE - 1..3 * PIECE + 1));
        assert_eq!(check.damaged(), Some(3));
        assert!(!check.all(&data));
        let fresh = CheckOnRead::new(PIECE, pieces.sums.clone(), data.len()).unwrap();
        assert!(!fresh.all(&data));
        assert_eq!(fresh.damaged(), Some(3));
        assert!(CheckOnRead::new(PIECE, pieces.sums, data.len() + PIECE).is_none());
    }
}
