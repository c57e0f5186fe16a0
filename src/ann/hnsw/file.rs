//! The graph's saved form: one file, `graph.hnsw`, written whole and
//! renamed into place, read back straight into its arrays.
//!
//! ```text
//! header (64 bytes, little-endian)
//!   0  magic "imgHNSW\0"         8  format version (u32)
//!   12 dim (u32)                 16 M (u32)
//!   20 ef_construction (u32)     24 points (u64)
//!   32 upper-layer slots (u64)   40 entry row (u32, u32::MAX: empty)
//!   44 checksum of the body      48 checksum of bytes 0..48
//!   52 zero
//! body
//!   ids       points × u64
//!   vectors   points × dim × f32
//!   layer 0   points × 2M × u32
//!   upper     upper-layer slots × u32
//!   levels    points × u8
//! ```
//!
//! The body's checksum is [`crate::checksum`]'s, per section, combined; a
//! load checks it, then [`Layers::validate`], before anything walks the
//! graph. Loading is a read per array: no parsing, no allocation per point.

use std::io::{Read, Write};
use std::path::Path;

use super::layers::Layers;
use super::HnswParams;
use crate::checksum;

/// The graph's file in an index folder.
pub const FILE_NAME: &str = "graph.hnsw";
const MAGIC: &[u8; 8] = b"imgHNSW\0";
/// Bump on any change to the layout; an older file is rebuilt from the store.
const VERSION: u32 = 1;
const HEADER_LEN: usize = 64;

/// What the header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub dim: usize,
    pub params: HnswParams,
    pub points: usize,
    upper_slots: usize,
    entry: u32,
    body_sum: u32,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(self.dim as u32).to_le_bytes());
        b[16..20].copy_from_slice(&(self.params.m as u32).to_le_bytes());
        b[20..24].copy_from_slice(&(self.params.ef_construction as u32).to_le_bytes());
        b[24..32].copy_from_slice(&(self.points as u64).to_le_bytes());
        b[32..40].copy_from_slice(&(self.upper_slots as u64).to_le_bytes());
        b[40..44].copy_from_slice(&self.entry.to_le_bytes());
        b[44..48].copy_from_slice(&self.body_sum.to_le_bytes());
        let sum = crc32c::crc32c(&b[0..48]);
        b[48..52].copy_from_slice(&sum.to_le_bytes());
        b
    }

    fn decode(b: &[u8; HEADER_LEN]) -> Result<Self, String> {
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        if &b[0..8] != MAGIC {
            return Err("not a graph file".into());
        }
        if u32_at(8) != VERSION {
            return Err(format!(
                "graph file format {} (this imgsearch reads {VERSION})",
                u32_at(8)
            ));
        }
        if crc32c::crc32c(&b[0..48]) != u32_at(48) {
            return Err("its header is damaged (checksum mismatch)".into());
        }
        let size =
            |v: u64| usize::try_from(v).map_err(|_| "its sizes are out of range".to_string());
        Ok(Self {
            dim: u32_at(12) as usize,
            params: HnswParams {
                m: u32_at(16) as usize,
                ef_construction: u32_at(20) as usize,
            },
            points: size(u64_at(24))?,
            upper_slots: size(u64_at(32))?,
            entry: u32_at(40),
            body_sum: u32_at(44),
        })
    }

    /// Bytes the body takes, if that fits in a `usize`.
    fn body_len(&self) -> Option<usize> {
        let n = self.points;
        let m0 = self.params.m.checked_mul(2)?;
        n.checked_mul(8)?
            .checked_add(n.checked_mul(self.dim)?.checked_mul(4)?)?
            .checked_add(n.checked_mul(m0)?.checked_mul(4)?)?
            .checked_add(self.upper_slots.checked_mul(4)?)?
            .checked_add(n)
    }
}

/// The checksum of the body: each section's, combined in order (the
/// sections are checksummed side by side).
fn body_sum(layers: &Layers) -> u32 {
    let sections: [&[u8]; 5] = [
        bytemuck::cast_slice(&layers.ids),
        bytemuck::cast_slice(&layers.vectors),
        bytemuck::cast_slice(&layers.layer0),
        bytemuck::cast_slice(&layers.upper),
        &layers.levels,
    ];
    use rayon::prelude::*;
    let sums: Vec<u32> = sections.par_iter().map(|s| checksum::chunked(s)).collect();
    checksum::of_chunks(&sums)
}

/// Writes `layers` with `params` to `out`.
pub fn write(out: &mut impl Write, layers: &Layers, params: HnswParams) -> std::io::Result<()> {
    let header = Header {
        dim: layers.dim,
        params,
        points: layers.rows(),
        upper_slots: layers.upper.len(),
        entry: layers.entry,
        body_sum: body_sum(layers),
    };
    out.write_all(&header.encode())?;
    out.write_all(bytemuck::cast_slice(&layers.ids))?;
    out.write_all(bytemuck::cast_slice(&layers.vectors))?;
    out.write_all(bytemuck::cast_slice(&layers.layer0))?;
    out.write_all(bytemuck::cast_slice(&layers.upper))?;
    out.write_all(&layers.levels)
}

/// The header of the graph file in `dir`.
pub fn read_header(dir: &Path) -> Result<Header, String> {
    let mut file =
        std::fs::File::open(dir.join(FILE_NAME)).map_err(|_| "no saved graph".to_string())?;
    let mut bytes = [0u8; HEADER_LEN];
    file.read_exact(&mut bytes)
        .map_err(|_| "the graph file is truncated".to_string())?;
    Header::decode(&bytes)
}

/// Reads the graph in `dir`, checked; why not, when it cannot be used.
pub fn read(dir: &Path, dim: usize, params: HnswParams) -> Result<Layers, String> {
    let path = dir.join(FILE_NAME);
    let mut file = std::fs::File::open(&path).map_err(|_| "no saved graph".to_string())?;
    let mut head = [0u8; HEADER_LEN];
    let truncated = |_| format!("{} is truncated", path.display());
    file.read_exact(&mut head).map_err(truncated)?;
    let header = Header::decode(&head).map_err(|e| format!("{}: {e}", path.display()))?;
    if header.dim != dim || header.params != params {
        return Err(format!(
            "saved graph has dim {} and {:?}; want {dim} and {params:?}",
            header.dim, header.params
        ));
    }
    // The sizes come from the header: check them against the file before
    // allocating anything, so a damaged header cannot ask for terabytes.
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    let body_len = header.body_len();
    if body_len.map(|b| (HEADER_LEN + b) as u64) != Some(file_len) {
        return Err(format!(
            "{} is truncated or damaged (its size disagrees with its header)",
            path.display()
        ));
    }
    let n = header.points;
    let mut layers = Layers::empty(dim, params.m);
    layers.ids = vec![0; n];
    layers.vectors = vec![0.0; n * dim];
    layers.layer0 = vec![0; n * layers.m0()];
    layers.upper = vec![0; header.upper_slots];
    layers.levels = vec![0; n];
    layers.entry = header.entry;
    let mut file = std::io::BufReader::with_capacity(1 << 20, file);
    let read = |file: &mut std::io::BufReader<std::fs::File>, into: &mut [u8]| {
        file.read_exact(into).map_err(truncated)
    };
    read(&mut file, bytemuck::cast_slice_mut(&mut layers.ids))?;
    read(&mut file, bytemuck::cast_slice_mut(&mut layers.vectors))?;
    read(&mut file, bytemuck::cast_slice_mut(&mut layers.layer0))?;
    read(&mut file, bytemuck::cast_slice_mut(&mut layers.upper))?;
    read(&mut file, &mut layers.levels)?;
    if body_sum(&layers) != header.body_sum {
        return Err(format!("{} is damaged (checksum mismatch)", path.display()));
    }
    layers
        .validate()
        .map_err(|e| format!("{} is damaged: {e}", path.display()))?;
    layers.index_upper();
    Ok(layers)
}
