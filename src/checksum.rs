//! The checksum of the derived files (record catalogue, graph): the CRC32C
//! of the CRC32Cs of 1 MiB chunks, so a large file is checked on every core
//! and an appended one is extended without reading it again.

/// Bytes per checksummed chunk.
pub const CHUNK: usize = 1 << 20;

/// The CRC32C of the CRC32Cs of `bytes`' 1 MiB chunks (little-endian, in
/// order).
pub fn chunked(bytes: &[u8]) -> u32 {
    of_chunks(&chunk_sums(bytes))
}

/// The CRC32C of each 1 MiB chunk, on every core.
pub fn chunk_sums(bytes: &[u8]) -> Vec<u32> {
    use rayon::prelude::*;
    bytes.par_chunks(CHUNK).map(crc32c::crc32c).collect()
}

/// The checksum of a file whose chunks have these sums.
pub fn of_chunks(chunks: &[u32]) -> u32 {
    let bytes: Vec<u8> = chunks.iter().flat_map(|c| c.to_le_bytes()).collect();
    crc32c::crc32c(&bytes)
}

/// Extends the chunk checksums of `len` bytes with appended `bytes`.
pub fn extend_chunks(chunks: &mut Vec<u32>, len: u64, mut bytes: &[u8]) {
    let mut len = len as usize;
    while !bytes.is_empty() {
        let in_chunk = len % CHUNK;
        let (part, rest) = bytes.split_at((CHUNK - in_chunk).min(bytes.len()));
        match (in_chunk, chunks.last_mut()) {
            (0, _) | (_, None) => chunks.push(crc32c::crc32c(part)),
            (_, Some(last)) => *last = crc32c::crc32c_append(*last, part),
        }
        len += part.len();
        bytes = rest;
    }
}
