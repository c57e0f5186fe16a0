//! The graph as flat arrays, and the walk over them.
//!
//! A point is a row: its store id, top layer, vector and links sit at the
//! row's index in arrays of their own, so a walk reads a point's vector
//! and links from two contiguous blocks, with no pointer, lock or
//! reference count in between. Links name rows as `u32`.
//!
//! Layer 0 gives every row `2M` slots; a point on the layers above has `M`
//! slots on each of them, kept in one array for the few points that are
//! (about 1 in `M`). Unused slots hold [`NONE`], after the last link.

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::ann::kernels::{l2sq, squared_distance};

/// An empty link slot, or no row.
pub const NONE: u32 = u32::MAX;

/// The highest layer a point can reach.
pub const MAX_LEVEL: u8 = 16;

/// The most links a walk expands at once (layer 0 of a graph with `M` up to
/// 64); [`Layers::validate`] refuses a graph with more.
pub const MAX_SLOTS: usize = 128;

/// Asks the CPU to start loading `v` into cache (no effect on the result).
#[inline(always)]
fn prefetch(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in v.chunks(16) {
        // SAFETY: prefetching is a hint; it reads nothing and cannot fault,
        // and the pointer is into a live slice.
        #[allow(unused_unsafe)]
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
        }
    }
}

/// The arrays. Rows are in increasing id order: the graph only appends.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layers {
    pub dim: usize,
    /// `M`: links per point on the upper layers; layer 0 keeps `2M`.
    pub m: usize,
    /// Row → store id, strictly increasing.
    pub ids: Vec<u64>,
    /// Row → the highest layer it is on.
    pub levels: Vec<u8>,
    /// Row `r`'s vector at `r * dim`.
    pub vectors: Vec<f32>,
    /// Row `r`'s layer-0 links at `r * 2M`.
    pub layer0: Vec<u32>,
    /// Row → where its upper layers' links start in `upper` (layer `l` at
    /// `+ (l - 1) * M`), [`NONE`] for a row on layer 0 only. Derived from
    /// `levels`, never saved.
    pub upper_at: Vec<u32>,
    /// The upper layers' links, `level * M` slots per row that has any.
    pub upper: Vec<u32>,
    /// Where every search starts: a row on the top layer ([`NONE`]: empty).
    pub entry: u32,
}

/// A candidate row and its squared distance to the query, ordered by
/// distance (then row, so that the order, and with it the graph a build
/// makes, never depends on chance).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Near {
    pub distance: f32,
    pub row: u32,
}

impl Eq for Near {}

impl Ord for Near {
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then(self.row.cmp(&other.row))
    }
}

impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A walk's working memory, one per thread and reused, so a walk
/// allocates only its answer (allocation was a fifth of a build's time):
/// which rows it has seen, a mark per row stamped with the walk's
/// generation so that starting a walk clears nothing, and its two heaps.
#[derive(Default)]
struct Visited {
    marks: Vec<u32>,
    generation: u32,
    candidates: BinaryHeap<Reverse<Near>>,
    found: BinaryHeap<Near>,
}

thread_local! {
    static VISITED: RefCell<Visited> = const {
        RefCell::new(Visited {
            marks: Vec::new(),
            generation: 0,
            candidates: BinaryHeap::new(),
            found: BinaryHeap::new(),
        })
    };
}

impl Visited {
    /// Starts a walk over `rows` rows; returns its generation.
    fn start(&mut self, rows: usize) -> u32 {
        if self.marks.len() < rows {
            self.marks.resize(rows, 0);
        }
        if self.generation == u32::MAX {
            self.marks.fill(0);
            self.generation = 0;
        }
        self.generation += 1;
        self.generation
    }

    /// Marks `row`; false if this walk had marked it already.
    #[inline]
    fn first_visit(&mut self, row: u32, generation: u32) -> bool {
        let mark = &mut self.marks[row as usize];
        let first = *mark != generation;
        *mark = generation;
        first
    }
}

impl Layers {
    pub fn empty(dim: usize, m: usize) -> Self {
        Self {
            dim,
            m,
            entry: NONE,
            ..Self::default()
        }
    }

    pub fn rows(&self) -> usize {
        self.ids.len()
    }

    /// Slots per row on layer 0 (`2M`).
    pub fn m0(&self) -> usize {
        2 * self.m
    }

    /// Slots per row on `layer`.
    pub fn slots(&self, layer: u8) -> usize {
        if layer == 0 {
            self.m0()
        } else {
            self.m
        }
    }

    pub fn vector(&self, row: u32) -> &[f32] {
        let at = row as usize * self.dim;
        &self.vectors[at..at + self.dim]
    }

    /// Where `row`'s slots on `layer` (which it must be on) start, in
    /// `layer0` or `upper`.
    fn slots_at(&self, row: u32, layer: u8) -> usize {
        match layer {
            0 => row as usize * self.m0(),
            _ => self.upper_at[row as usize] as usize + (layer as usize - 1) * self.m,
        }
    }

    /// `row`'s slots on `layer`.
    pub fn slot_array(&self, row: u32, layer: u8) -> &[u32] {
        let (at, n) = (self.slots_at(row, layer), self.slots(layer));
        match layer {
            0 => &self.layer0[at..at + n],
            _ => &self.upper[at..at + n],
        }
    }

    pub fn slot_array_mut(&mut self, row: u32, layer: u8) -> &mut [u32] {
        let (at, n) = (self.slots_at(row, layer), self.slots(layer));
        match layer {
            0 => &mut self.layer0[at..at + n],
            _ => &mut self.upper[at..at + n],
        }
    }

    /// `row`'s links on `layer`.
    pub fn links(&self, row: u32, layer: u8) -> impl Iterator<Item = u32> + '_ {
        self.slot_array(row, layer)
            .iter()
            .copied()
            .take_while(|&n| n != NONE)
    }

    pub fn top_level(&self) -> u8 {
        match self.entry {
            NONE => 0,
            entry => self.levels[entry as usize],
        }
    }

    /// Makes room for `rows` more rows, growing each per-row array by at
    /// least an eighth rather than by doubling: a graph read from its file
    /// is allocated to its exact size, and `serve` inserting a handful of
    /// images into a million-point graph would otherwise double its
    /// vectors and links (200 MB more) for them.
    pub fn reserve_rows(&mut self, rows: usize) {
        fn grow<T>(array: &mut Vec<T>, per_row: usize, rows: usize, have: usize) {
            let needed = rows * per_row;
            if array.capacity() - array.len() < needed {
                array.reserve_exact(needed.max(have / 8 * per_row));
            }
        }
        let (have, m0, dim) = (self.rows(), self.m0(), self.dim);
        grow(&mut self.ids, 1, rows, have);
        grow(&mut self.levels, 1, rows, have);
        grow(&mut self.upper_at, 1, rows, have);
        grow(&mut self.vectors, dim, rows, have);
        grow(&mut self.layer0, m0, rows, have);
    }

    /// Appends a row with no links yet.
    pub fn push_row(&mut self, id: u64, level: u8, vector: &[f32]) -> u32 {
        let row = self.rows() as u32;
        self.ids.push(id);
        self.levels.push(level);
        self.vectors.extend_from_slice(vector);
        self.layer0.resize(self.layer0.len() + self.m0(), NONE);
        if level > 0 {
            self.upper_at.push(self.upper.len() as u32);
            self.upper
                .resize(self.upper.len() + level as usize * self.m, NONE);
        } else {
            self.upper_at.push(NONE);
        }
        row
    }

    /// `upper_at` from `levels` (after a load).
    pub fn index_upper(&mut self) {
        let mut at = 0usize;
        self.upper_at = self
            .levels
            .iter()
            .map(|&level| match level {
                0 => NONE,
                _ => {
                    let start = at as u32;
                    at += level as usize * self.m;
                    start
                }
            })
            .collect();
    }

    /// Greedy descent on one layer: moves to whichever linked row is
    /// nearer to `q` until none is.
    pub fn greedy(&self, q: &[f32], mut at: Near, layer: u8) -> Near {
        loop {
            let mut moved = false;
            for row in self.links(at.row, layer) {
                let near = Near {
                    distance: squared_distance(q, self.vector(row)),
                    row,
                };
                if near < at {
                    (at, moved) = (near, true);
                }
            }
            if !moved {
                return at;
            }
        }
    }

    /// Best-first search of one layer from `entries` (Malkov & Yashunin's
    /// SEARCH-LAYER): keeps the `ef` nearest rows that `admit` lets
    /// through, and walks through every row, admitted or not, so a filter
    /// or a removed point never cuts the graph. Nearest first.
    pub fn search_layer(
        &self,
        q: &[f32],
        entries: &[Near],
        ef: usize,
        layer: u8,
        admit: &dyn Fn(u32) -> bool,
    ) -> Vec<Near> {
        #[cfg(target_arch = "x86_64")]
        if crate::ann::kernels::avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA, the features the
            // function enables.
            return unsafe { self.search_layer_avx2(q, entries, ef, layer, admit) };
        }
        self.walk_layer(q, entries, ef, layer, admit)
    }

    /// [`Layers::walk_layer`] compiled for AVX2 and FMA, so the distance
    /// kernel inlines into the walk: at 16 floats a distance is a handful
    /// of instructions, and a call per distance (with its feature check)
    /// cost as much again.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn search_layer_avx2(
        &self,
        q: &[f32],
        entries: &[Near],
        ef: usize,
        layer: u8,
        admit: &dyn Fn(u32) -> bool,
    ) -> Vec<Near> {
        self.walk_layer(q, entries, ef, layer, admit)
    }

    #[inline(always)]
    fn walk_layer(
        &self,
        q: &[f32],
        entries: &[Near],
        ef: usize,
        layer: u8,
        admit: &dyn Fn(u32) -> bool,
    ) -> Vec<Near> {
        // Taken out of the thread-local for the walk (and put back), so
        // the walk is this function's own code, compiled with its
        // caller's target features, not a closure's.
        let mut visited = VISITED.with(|v| std::mem::take(&mut *v.borrow_mut()));
        let generation = visited.start(self.rows());
        let mut candidates = std::mem::take(&mut visited.candidates);
        let mut found = std::mem::take(&mut visited.found);
        candidates.clear();
        found.clear();
        for &entry in entries {
            if visited.first_visit(entry.row, generation) {
                candidates.push(Reverse(entry));
                if admit(entry.row) {
                    found.push(entry);
                }
            }
        }
        while found.len() > ef {
            found.pop();
        }
        while let Some(Reverse(nearest)) = candidates.pop() {
            // Stop once the nearest unexpanded candidate is farther
            // than the worst of a full result list.
            if found.len() >= ef && found.peek().is_some_and(|worst| nearest > *worst) {
                break;
            }
            // The unvisited links first, their vectors prefetched, so
            // the memory reads overlap instead of stalling one by one
            // (a million points' vectors and links are far past cache).
            let mut fresh = [NONE; MAX_SLOTS];
            let mut n_fresh = 0;
            for row in self.links(nearest.row, layer) {
                if visited.first_visit(row, generation) && n_fresh < MAX_SLOTS {
                    prefetch(self.vector(row));
                    fresh[n_fresh] = row;
                    n_fresh += 1;
                }
            }
            for &row in &fresh[..n_fresh] {
                let near = Near {
                    distance: l2sq(q, self.vector(row)),
                    row,
                };
                if found.len() < ef || found.peek().is_some_and(|worst| near < *worst) {
                    candidates.push(Reverse(near));
                    if admit(row) {
                        found.push(near);
                        if found.len() > ef {
                            found.pop();
                        }
                    }
                }
            }
        }
        let mut nearest_first: Vec<Near> = found.drain().collect();
        nearest_first.sort_unstable();
        (visited.candidates, visited.found) = (candidates, found);
        VISITED.with(|v| *v.borrow_mut() = visited);
        nearest_first
    }

    /// The `ef` nearest admitted rows to `q` (squared distances), nearest
    /// first: greedy descent to layer 1, then [`Layers::search_layer`] on
    /// layer 0.
    pub fn search(&self, q: &[f32], ef: usize, admit: &dyn Fn(u32) -> bool) -> Vec<Near> {
        if self.entry == NONE {
            return Vec::new();
        }
        let mut at = Near {
            distance: squared_distance(q, self.vector(self.entry)),
            row: self.entry,
        };
        for layer in (1..=self.top_level()).rev() {
            at = self.greedy(q, at, layer);
        }
        self.search_layer(q, &[at], ef, 0, admit)
    }

    /// Checks what a loaded graph promises before anything walks it: every
    /// array has its row count's size, ids increase, levels are in range,
    /// the entry is on the top layer and every link names a row.
    pub fn validate(&self) -> Result<(), String> {
        let rows = self.rows();
        if self.m0() > MAX_SLOTS {
            return Err(format!("M is {} (at most {})", self.m, MAX_SLOTS / 2));
        }
        if rows >= NONE as usize {
            return Err(format!("{rows} points is more than a graph holds"));
        }
        if self.levels.len() != rows
            || self.vectors.len() != rows * self.dim
            || self.layer0.len() != rows * self.m0()
        {
            return Err("its arrays disagree on the number of points".into());
        }
        if self.ids.windows(2).any(|w| w[0] >= w[1]) {
            return Err("its ids are not in increasing order".into());
        }
        if let Some(level) = self.levels.iter().find(|&&l| l > MAX_LEVEL) {
            return Err(format!("a point on layer {level} (at most {MAX_LEVEL})"));
        }
        let upper_slots: usize = self.levels.iter().map(|&l| l as usize * self.m).sum();
        if self.upper.len() != upper_slots {
            return Err("its upper layers do not match its points' levels".into());
        }
        let top = self.levels.iter().copied().max();
        match (self.entry, top) {
            (NONE, None) => {}
            (entry, Some(top)) if (entry as usize) < rows && self.levels[entry as usize] == top => {
            }
            _ => return Err("its entry point is not on its top layer".into()),
        }
        let linked = |n: &u32| *n == NONE || (*n as usize) < rows;
        if !self.layer0.iter().all(linked) || !self.upper.iter().all(linked) {
            return Err("a link names a point the graph does not hold".into());
        }
        Ok(())
    }
}
