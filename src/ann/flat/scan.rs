//! Exact search over the flat file: how a scan is scheduled over cores and
//! caches. A few queries scan row chunks in parallel; a batch transposes
//! groups of rows into [`Tile`]s and runs blocks of queries over each tile
//! while it is in cache. The arithmetic lives in [`crate::ann::kernels`].

use rayon::prelude::*;

use super::FlatVectors;
use crate::ann::kernels::{floats, squared_distances, tile_distances, TopK, LANES};

/// Rows scanned per parallel work item (a few hundred KB: cache-sized):
/// one checksummed block, so a reader that checks on read checks each block
/// just before it scores it, while it is in cache.
const CHUNK_ROWS: usize = super::BLOCK_ROWS;
/// From this many queries on, a search transposes the rows into tiles
/// (see [`Tile`]) and runs blocks of queries against each tile.
pub const BATCH_FROM: usize = 8;
/// Queries per parallel task in a batched search.
const QUERY_BLOCK: usize = 32;
/// Bytes of transposed floats per tile: small enough to stay in L2 while a
/// block of queries runs over it.
const TILE_BYTES: usize = 128 * 1024;
/// Tiles transposed at a time, so a batched search over a large file holds
/// a bounded copy (about 32 MiB) rather than the whole file.
const TILE_GROUP: usize = 256;

impl FlatVectors {
    /// The `k` nearest live rows to each query (ids and Euclidean distances,
    /// nearest first), keeping only ids that pass `keep`. One pass over the
    /// file serves every query: a few queries scan row chunks in parallel; a
    /// batch runs blocks of queries in parallel over transposed tiles.
    pub fn search(
        &self,
        queries: &[&[f32]],
        k: usize,
        keep: &(dyn Fn(u64) -> bool + Sync),
    ) -> Vec<Vec<(u64, f32)>> {
        let tops = if queries.len() >= BATCH_FROM {
            self.search_tiled(queries, k, keep)
        } else {
            self.search_rows(queries, k, keep)
        };
        tops.into_iter()
            .map(|t| {
                t.into_sorted()
                    .into_iter()
                    .map(|(id, d)| (id, d.sqrt()))
                    .collect()
            })
            .collect()
    }

    /// Few queries: row chunks in parallel, each query over each chunk.
    fn search_rows(
        &self,
        queries: &[&[f32]],
        k: usize,
        keep: &(dyn Fn(u64) -> bool + Sync),
    ) -> Vec<TopK<u64>> {
        let fresh = || queries.iter().map(|_| TopK::new(k)).collect::<Vec<_>>();
        let merge = |mut a: Vec<TopK<u64>>, b: Vec<TopK<u64>>| {
            for (x, y) in a.iter_mut().zip(b) {
                x.merge(y);
            }
            a
        };
        self.data()
            .par_chunks(CHUNK_ROWS * self.row_bytes())
            .enumerate()
            .fold(fresh, |mut tops, (block, chunk)| {
                // A damaged block is never answered (a reader that checks
                // on read goes to the store).
                if self.block_ok(block, chunk) {
                    self.score(chunk, queries, &mut tops, keep);
                }
                tops
            })
            .reduce(fresh, merge)
    }

    /// Offers every row of `chunk` to each query's list.
    fn score(
        &self,
        chunk: &[u8],
        queries: &[&[f32]],
        tops: &mut [TopK<u64>],
        keep: &(dyn Fn(u64) -> bool + Sync),
    ) {
        let rb = self.row_bytes();
        let mut dist = vec![0f32; chunk.len() / rb];
        for (q, top) in queries.iter().zip(tops.iter_mut()) {
            squared_distances(chunk, rb, q, &mut dist);
            for (row, &d) in chunk.chunks_exact(rb).zip(&dist) {
                // Filters only run for rows that would make the list.
                if !top.admits(d) {
                    continue;
                }
                let id = u64::from_le_bytes(row[..8].try_into().unwrap());
                if !self.is_dead(id) && keep(id) {
                    top.push(id, d);
                }
            }
        }
    }

    /// Many queries: a group of rows is transposed into tiles once, then
    /// blocks of queries run in parallel, each over every tile while the
    /// tile is in cache. Work splits by query, so it scales with cores
    /// however few rows there are.
    fn search_tiled(
        &self,
        queries: &[&[f32]],
        k: usize,
        keep: &(dyn Fn(u64) -> bool + Sync),
    ) -> Vec<TopK<u64>> {
        let (rb, dim) = (self.row_bytes(), self.dim);
        let tile_rows = (TILE_BYTES / (4 * dim.max(1)))
            .next_multiple_of(LANES)
            .max(LANES);
        let mut tops: Vec<TopK<u64>> = queries.iter().map(|_| TopK::new(k)).collect();
        if !self.all_ok() {
            // Damaged: nothing is answered (the reader goes to the store).
            return tops;
        }
        for group in self.data().chunks(TILE_GROUP * tile_rows * rb) {
            let tiles: Vec<Tile> = group
                .par_chunks(tile_rows * rb)
                .map(|rows| Tile::new(rows, rb, dim))
                .collect();
            queries
                .par_chunks(QUERY_BLOCK)
                .zip(tops.par_chunks_mut(QUERY_BLOCK))
                .for_each(|(qs, ts)| {
                    let (mut a, mut b) = (vec![0f32; tile_rows], vec![0f32; tile_rows]);
                    for tile in &tiles {
                        let n = tile.padded();
                        // Queries go in pairs: each column load serves two.
                        for (pair, tops) in qs.chunks(2).zip(ts.chunks_mut(2)) {
                            tile.distances(pair[0], pair.get(1).copied(), &mut a[..n], &mut b[..n]);
                            for (top, dist) in tops.iter_mut().zip([&a[..n], &b[..n]]) {
                                self.admit(top, &tile.ids, dist, keep);
                            }
                        }
                    }
                });
        }
        tops
    }

    /// Offers a tile's rows to `top`. Once the list is full most blocks of
    /// rows hold no candidate: a block is tested at once (vectorised), and
    /// single rows are looked at only where one is.
    #[inline]
    fn admit(
        &self,
        top: &mut TopK<u64>,
        ids: &[u64],
        dist: &[f32],
        keep: &(dyn Fn(u64) -> bool + Sync),
    ) {
        let mut bar = top.threshold();
        for (ids, ds) in ids.chunks(LANES).zip(dist.chunks(LANES)) {
            if !ds.iter().fold(false, |any, &d| any | (d < bar)) {
                continue;
            }
            for (&id, &d) in ids.iter().zip(ds) {
                if d < bar && !self.is_dead(id) && keep(id) {
                    top.push(id, d);
                    bar = top.threshold();
                }
            }
        }
    }
}

/// Rows stored dimension-major (`x[d][row]`), padded to [`LANES`] rows, so
/// the distance loop runs down the rows with every vector lane busy: the
/// layout a batch of small-dimension queries needs (row-major rows of 16
/// floats would spend as long on the horizontal sums as on the maths).
struct Tile {
    ids: Vec<u64>,
    /// `dim × padded` floats.
    columns: Vec<f32>,
}

impl Tile {
    fn new(rows: &[u8], row_bytes: usize, dim: usize) -> Self {
        let n = rows.len() / row_bytes;
        let padded = n.next_multiple_of(LANES);
        let mut columns = vec![0f32; dim * padded];
        let mut ids = Vec::with_capacity(n);
        for (r, row) in rows.chunks_exact(row_bytes).enumerate() {
            ids.push(u64::from_le_bytes(row[..8].try_into().unwrap()));
            for (d, v) in floats(&row[8..]).iter().enumerate() {
                columns[d * padded + r] = *v;
            }
        }
        Self { ids, columns }
    }

    fn padded(&self) -> usize {
        self.ids.len().next_multiple_of(LANES)
    }

    /// Squared distances from `q` (and from `q2`, when given, into `out2`)
    /// to every row, padding rows included.
    fn distances(&self, q: &[f32], q2: Option<&[f32]>, out: &mut [f32], out2: &mut [f32]) {
        tile_distances(&self.columns, [q, q2.unwrap_or(q)], out, out2);
    }
}
