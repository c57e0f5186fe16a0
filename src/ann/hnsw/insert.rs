//! Inserting a batch of points: plan every point's links in parallel while
//! searches go on, then apply them all at once.
//!
//! A point inserted alone (Malkov & Yashunin's INSERT) searches the graph
//! on each of its layers with `ef_construction` candidates, links to up to
//! `M` of them chosen by the neighbour-selection heuristic, and each of
//! those links back, pruning its own list by the same heuristic when it
//! is full. Here a batch's points do the same against the graph as it was
//! before the batch, plus the batch's earlier points (compared directly,
//! so near-identical images in one batch still link to each other). The
//! batch is small beside the graph (see [`batch_len`]), so this is the
//! graph one-at-a-time insertion makes, built on every core.
//!
//! Both phases only read the graph: planning the new points' links and
//! the back links' pruned lists. The write that follows appends rows and
//! copies lists, so searches wait for microseconds, not for the search
//! work. The plan depends only on the graph and the batch, never on
//! threads or timing: the same points make the same graph.

use std::collections::BTreeMap;

use rayon::prelude::*;

use super::layers::{Layers, Near, MAX_LEVEL, NONE};
use crate::ann::kernels::squared_distance;

/// How many points to plan against the same graph: a small share of it
/// (so the batch barely changes what a point would find), at most 256 (so
/// the write that applies it stays short).
pub fn batch_len(rows: usize) -> usize {
    (rows / 16).clamp(1, 256)
}

/// A point's layer, drawn from its id (Malkov & Yashunin: `⌊−ln U · mL⌋`
/// with `mL = 1/ln M`). Hashing the id, not a random generator, makes the
/// graph a function of its points.
pub fn level_of(id: u64, m: usize) -> u8 {
    // splitmix64: a well-mixed 64-bit hash of the id.
    let mut z = id.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    // U in (0, 1].
    let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let level = (-u.ln() / (m.max(2) as f64).ln()).floor();
    level.min(MAX_LEVEL as f64) as u8
}

/// A graph with a batch of new points beside it: row numbers at and past
/// `graph.rows()` are the batch's, in order.
struct WithBatch<'a> {
    graph: &'a Layers,
    batch: &'a [(u64, Vec<f32>)],
}

impl WithBatch<'_> {
    fn vector(&self, row: u32) -> &[f32] {
        match (row as usize).checked_sub(self.graph.rows()) {
            Some(i) => &self.batch[i].1,
            None => self.graph.vector(row),
        }
    }

    fn distance(&self, a: u32, b: u32) -> f32 {
        squared_distance(self.vector(a), self.vector(b))
    }

    /// The neighbour-selection heuristic (Malkov & Yashunin, Algorithm 4,
    /// without extending or keeping pruned candidates): from `candidates`,
    /// nearest first, keep one only if it is nearer to the base point than
    /// to any kept one, up to `keep`. Links so spread in all directions,
    /// which is what keeps clustered data navigable.
    fn select(&self, candidates: impl IntoIterator<Item = Near>, keep: usize) -> Vec<u32> {
        let mut kept: Vec<u32> = Vec::with_capacity(keep);
        for c in candidates {
            if kept.len() == keep {
                break;
            }
            if kept.iter().all(|&k| self.distance(c.row, k) >= c.distance) {
                kept.push(c.row);
            }
        }
        kept
    }
}

/// Two lists, each nearest first, as one (without copying either).
fn merged<'a>(a: &'a [Near], b: &'a [Near]) -> impl Iterator<Item = Near> + 'a {
    let (mut a, mut b) = (a.iter().copied().peekable(), b.iter().copied().peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if y < x => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

/// A new point's links, layer 0 first.
type Plan = Vec<Vec<u32>>;

/// Plans the links of the batch's `i`th point (row `graph.rows() + i`).
fn plan(with: &WithBatch, i: usize, level: u8, levels: &[u8], ef_construction: usize) -> Plan {
    let graph = with.graph;
    let q = with.batch[i].1.as_slice();
    let base = graph.rows() as u32;
    let mut plan: Plan = vec![Vec::new(); level as usize + 1];
    let mut entries: Vec<Near> = Vec::new();
    if graph.entry != NONE {
        let mut at = Near {
            distance: squared_distance(q, graph.vector(graph.entry)),
            row: graph.entry,
        };
        let top = graph.top_level();
        for layer in (level.saturating_add(1)..=top).rev() {
            at = graph.greedy(q, at, layer);
        }
        entries.push(at);
    }
    for layer in (0..=level).rev() {
        let searched = !entries.is_empty() && layer <= graph.top_level();
        if searched {
            // This layer's nearest are where the next layer's search starts.
            entries = graph.search_layer(q, &entries, ef_construction, layer, &|_| true);
        }
        let found: &[Near] = if searched { &entries } else { &[] };
        // The batch's earlier points on this layer, compared directly.
        let mut mates: Vec<Near> = (0..i)
            .filter(|&j| levels[j] >= layer)
            .map(|j| Near {
                distance: squared_distance(q, &with.batch[j].1),
                row: base + j as u32,
            })
            .collect();
        mates.sort_unstable();
        plan[layer as usize] = with.select(merged(found, &mates), graph.m);
    }
    plan
}

/// A row's new list on one layer, after its back links.
struct Relinked {
    row: u32,
    layer: u8,
    links: Vec<u32>,
}

/// Plans a batch: every new point's links, and the lists that gain a back
/// link to one, pruned where they overflow. Reads the graph only.
fn plan_batch(
    graph: &Layers,
    batch: &[(u64, Vec<f32>)],
    ef_construction: usize,
) -> (Vec<u8>, Vec<Plan>, Vec<Relinked>) {
    let with = WithBatch { graph, batch };
    let levels: Vec<u8> = batch.iter().map(|(id, _)| level_of(*id, graph.m)).collect();
    let plans: Vec<Plan> = (0..batch.len())
        .into_par_iter()
        .map(|i| plan(&with, i, levels[i], &levels, ef_construction))
        .collect();
    // Back links, grouped by the list they go into; a BTreeMap, so the
    // lists come out in one order whatever the threads did.
    let base = graph.rows() as u32;
    let mut back: BTreeMap<(u32, u8), Vec<u32>> = BTreeMap::new();
    for (i, plan) in plans.iter().enumerate() {
        for (layer, links) in plan.iter().enumerate() {
            for &to in links {
                back.entry((to, layer as u8))
                    .or_default()
                    .push(base + i as u32);
            }
        }
    }
    let back: Vec<((u32, u8), Vec<u32>)> = back.into_iter().collect();
    let relinked = back
        .into_par_iter()
        .map(|((row, layer), new)| {
            let current: Vec<u32> = match (row as usize).checked_sub(graph.rows()) {
                Some(i) => plans[i][layer as usize].clone(),
                None => graph.links(row, layer).collect(),
            };
            let mut links = current;
            links.extend(new);
            let slots = graph.slots(layer);
            if links.len() > slots {
                let mut candidates: Vec<Near> = links
                    .iter()
                    .map(|&n| Near {
                        distance: with.distance(row, n),
                        row: n,
                    })
                    .collect();
                candidates.sort_unstable();
                links = with.select(candidates, slots);
            }
            Relinked { row, layer, links }
        })
        .collect();
    (levels, plans, relinked)
}

/// A planned batch, ready to apply.
pub struct Planned {
    levels: Vec<u8>,
    plans: Vec<Plan>,
    relinked: Vec<Relinked>,
    /// Rows when planned: applying to any other graph would be wrong.
    rows: usize,
}

/// Plans inserting `batch` (new, increasing ids) into `graph`.
pub fn prepare(graph: &Layers, batch: &[(u64, Vec<f32>)], ef_construction: usize) -> Planned {
    let (levels, plans, relinked) = plan_batch(graph, batch, ef_construction);
    Planned {
        levels,
        plans,
        relinked,
        rows: graph.rows(),
    }
}

/// Applies a plan from [`prepare`] to the graph it was made on.
pub fn apply(graph: &mut Layers, batch: &[(u64, Vec<f32>)], planned: Planned) {
    assert_eq!(
        graph.rows(),
        planned.rows,
        "a plan applies to its own graph"
    );
    graph.reserve_rows(batch.len());
    for (((id, vector), &level), plan) in batch.iter().zip(&planned.levels).zip(&planned.plans) {
        let row = graph.push_row(*id, level, vector);
        for (layer, links) in plan.iter().enumerate() {
            graph.slot_array_mut(row, layer as u8)[..links.len()].copy_from_slice(links);
        }
        if graph.entry == NONE || level > graph.top_level() {
            graph.entry = row;
        }
    }
    for Relinked { row, layer, links } in planned.relinked {
        let slots = graph.slot_array_mut(row, layer);
        slots[..links.len()].copy_from_slice(&links);
        slots[links.len()..].fill(NONE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_thin_out_by_m_per_layer() {
        let m = 16;
        let levels: Vec<u8> = (0..100_000).map(|id| level_of(id, m)).collect();
        let on = |l: u8| levels.iter().filter(|&&x| x >= l).count();
        // 1/16 of points reach layer 1, 1/256 layer 2 (within sampling).
        assert!((5_500..7_000).contains(&on(1)), "{}", on(1));
        assert!((250..550).contains(&on(2)), "{}", on(2));
        assert_eq!(level_of(42, m), level_of(42, m));
    }
}
