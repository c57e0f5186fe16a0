//! An experiment for the graph proposal in `bench/RESULTS.md`: the graph
//! hnsw_rs built, copied as it is into flat arrays and searched by a loop
//! of our own. The graph (its layers and links) is held equal, so what
//! this measures beside hnsw_rs's own search is the cost of its data
//! structures (an `Arc` per point and per candidate, a hash set of visited
//! points, a lock per node) against arrays: a vector block in row order,
//! `2M` link slots per point on layer 0, a visited array stamped with a
//! generation per query.
//!
//! Not used by imgsearch: it has no inserts, tombstones or saved form.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use imgsearch::ann::kernels::squared_distance;
use imgsearch::ann::Graph;

const NONE: u32 = u32::MAX;

pub struct FlatGraph {
    dim: usize,
    /// Row `i`'s vector at `i * dim`.
    vectors: Vec<f32>,
    /// Row `i`'s store id.
    ids: Vec<u64>,
    /// Layer-0 slots per point (`2M`).
    m0: usize,
    /// Row `i`'s layer-0 neighbours at `i * m0`, `NONE` past the last.
    layer0: Vec<u32>,
    /// Layers 1 and up: each point on it and its neighbours.
    upper: Vec<HashMap<u32, Vec<u32>>>,
    entry: u32,
}

/// A total order on distances for the heaps.
#[derive(Clone, Copy, PartialEq)]
struct D(f32);
impl Eq for D {}
impl Ord for D {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl PartialOrd for D {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

thread_local! {
    /// Per thread: the generation each row was last visited in.
    static VISITED: RefCell<(Vec<u32>, u32)> = const { RefCell::new((Vec::new(), 0)) };
}

impl FlatGraph {
    /// Copies `graph`'s points and links (`m`: its `M`).
    pub fn from_graph(graph: &Graph, m: usize) -> Self {
        let mut points: Vec<(u64, Vec<f32>, Vec<Vec<u64>>)> = graph.layers().collect();
        points.sort_by_key(|p| p.0);
        let row_of: HashMap<u64, u32> = points
            .iter()
            .enumerate()
            .map(|(row, p)| (p.0, row as u32))
            .collect();
        let dim = points.first().map_or(0, |p| p.1.len());
        let m0 = 2 * m;
        let mut flat = Self {
            dim,
            vectors: Vec::with_capacity(points.len() * dim),
            ids: Vec::with_capacity(points.len()),
            m0,
            layer0: vec![NONE; points.len() * m0],
            upper: Vec::new(),
            entry: 0,
        };
        let mut top = 0;
        for (row, (id, vector, layers)) in points.iter().enumerate() {
            flat.ids.push(*id);
            flat.vectors.extend_from_slice(vector);
            // A point is on the layers it has a list for.
            for (layer, neighbours) in layers.iter().enumerate() {
                let rows = neighbours.iter().filter_map(|n| row_of.get(n).copied());
                if layer == 0 {
                    for (slot, r) in flat.layer0[row * m0..(row + 1) * m0].iter_mut().zip(rows) {
                        *slot = r;
                    }
                } else {
                    while flat.upper.len() < layer {
                        flat.upper.push(HashMap::new());
                    }
                    flat.upper[layer - 1].insert(row as u32, rows.collect());
                    if layer > top {
                        (top, flat.entry) = (layer, row as u32);
                    }
                }
            }
        }
        flat
    }

    /// Bytes the arrays take.
    pub fn bytes(&self) -> usize {
        self.vectors.len() * 4
            + self.ids.len() * 8
            + self.layer0.len() * 4
            + self
                .upper
                .iter()
                .map(|l| l.values().map(|v| 8 + 24 + v.len() * 4).sum::<usize>())
                .sum::<usize>()
    }

    fn distance(&self, q: &[f32], row: u32) -> f32 {
        let at = row as usize * self.dim;
        squared_distance(q, &self.vectors[at..at + self.dim])
    }

    /// The `k` nearest ids to `q` with L2 distances: greedy descent through
    /// the upper layers, then a best-first search of layer 0 keeping `ef`.
    pub fn search(&self, q: &[f32], k: usize, ef: usize) -> Vec<(u64, f32)> {
        if self.ids.is_empty() {
            return Vec::new();
        }
        let ef = ef.max(k);
        let mut at = self.entry;
        let mut d = self.distance(q, at);
        for layer in self.upper.iter().rev() {
            loop {
                let mut moved = false;
                for &n in layer.get(&at).map_or(&[][..], Vec::as_slice) {
                    let dn = self.distance(q, n);
                    if dn < d {
                        (d, at, moved) = (dn, n, true);
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        VISITED.with(|cell| {
            let (visited, generation) = &mut *cell.borrow_mut();
            if visited.len() != self.ids.len() || *generation == u32::MAX {
                *visited = vec![0; self.ids.len()];
                *generation = 0;
            }
            *generation += 1;
            let generation = *generation;
            let mut candidates = BinaryHeap::with_capacity(ef * 4);
            let mut best: BinaryHeap<(D, u32)> = BinaryHeap::with_capacity(ef + 1);
            visited[at as usize] = generation;
            candidates.push(Reverse((D(d), at)));
            best.push((D(d), at));
            while let Some(Reverse((D(dc), c))) = candidates.pop() {
                if best.len() >= ef && dc > best.peek().expect("non-empty").0 .0 {
                    break;
                }
                let links = &self.layer0[c as usize * self.m0..(c as usize + 1) * self.m0];
                for &n in links.iter().take_while(|&&n| n != NONE) {
                    if visited[n as usize] == generation {
                        continue;
                    }
                    visited[n as usize] = generation;
                    let dn = self.distance(q, n);
                    if best.len() < ef || dn < best.peek().expect("non-empty").0 .0 {
                        candidates.push(Reverse((D(dn), n)));
                        best.push((D(dn), n));
                        if best.len() > ef {
                            best.pop();
                        }
                    }
                }
            }
            let mut found: Vec<(u64, f32)> = best
                .into_iter()
                .map(|(D(d), row)| (self.ids[row as usize], d.sqrt()))
                .collect();
            found.sort_by(|a, b| a.1.total_cmp(&b.1));
            found.truncate(k);
            found
        })
    }
}
