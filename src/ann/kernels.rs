//! Distance kernels and the top-k list every exact search keeps: the
//! inner loops of the flat scan and of filtered lookups.
//!
//! Each kernel is written once, portably, in a shape the compiler
//! vectorises (independent accumulators, fixed-width blocks); on x86-64 the
//! same code is also compiled with AVX2 (and FMA) and picked at run time.

/// Rows computed together; a multiple of the widest SIMD vector.
pub const LANES: usize = 32;

/// Keeps the `k` smallest distances pushed so far (ties: earliest first).
pub struct TopK<T> {
    k: usize,
    best: Vec<(T, f32)>,
}

impl<T> TopK<T> {
    pub fn new(k: usize) -> Self {
        Self {
            k: k.max(1),
            best: Vec::with_capacity(k + 1),
        }
    }

    pub fn push(&mut self, item: T, distance: f32) {
        if self.best.len() == self.k && distance >= self.best[self.k - 1].1 {
            return;
        }
        let at = self.best.partition_point(|&(_, d)| d <= distance);
        self.best.insert(at, (item, distance));
        self.best.truncate(self.k);
    }

    /// Whether `distance` would enter the list now.
    pub fn admits(&self, distance: f32) -> bool {
        self.best.len() < self.k || distance < self.best[self.k - 1].1
    }

    /// The distance a new item must beat to enter (infinite until full).
    pub fn threshold(&self) -> f32 {
        if self.best.len() < self.k {
            f32::INFINITY
        } else {
            self.best[self.k - 1].1
        }
    }

    /// Adds everything another list kept.
    pub fn merge(&mut self, other: TopK<T>) {
        for (item, d) in other.best {
            self.push(item, d);
        }
    }

    /// Nearest first.
    pub fn into_sorted(self) -> Vec<(T, f32)> {
        self.best
    }
}

/// Squared distances from two queries at once (`q2` may be `q` again) to
/// every row of a dimension-major tile of `out.len()` padded rows.
pub fn tile_distances(columns: &[f32], qs: [&[f32]; 2], out: &mut [f32], out2: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, the one feature the function enables.
        unsafe { tile_distances_avx2(columns, qs, out, out2) };
        return;
    }
    tile_distances_portable(columns, qs, out, out2);
}

/// [`tile_distances_portable`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2 (check with `is_x86_feature_detected!`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile_distances_avx2(columns: &[f32], qs: [&[f32]; 2], out: &mut [f32], out2: &mut [f32]) {
    tile_distances_portable(columns, qs, out, out2)
}
/// Two queries at once: `LANES` rows' accumulators for each stay in
/// registers across the dimensions, and each column load serves both.
#[inline(always)]
fn tile_distances_portable(
    columns: &[f32],
    [q, q2]: [&[f32]; 2],
    out: &mut [f32],
    out2: &mut [f32],
) {
    let padded = out.len();
    let blocks = out
        .chunks_exact_mut(LANES)
        .zip(out2.chunks_exact_mut(LANES));
    for (start, (o, o2)) in (0..padded).step_by(LANES).zip(blocks) {
        let (mut acc, mut acc2) = ([0f32; LANES], [0f32; LANES]);
        for (d, (&qd, &qd2)) in q.iter().zip(q2).enumerate() {
            let col: &[f32; LANES] = columns[d * padded + start..][..LANES].try_into().unwrap();
            for l in 0..LANES {
                let (t, t2) = (col[l] - qd, col[l] - qd2);
                acc[l] += t * t;
                acc2[l] += t2 * t2;
            }
        }
        o.copy_from_slice(&acc);
        o2.copy_from_slice(&acc2);
    }
}

/// A row's floats: borrowed straight from the map where alignment allows.
pub fn floats(bytes: &[u8]) -> std::borrow::Cow<'_, [f32]> {
    match bytemuck::try_cast_slice::<u8, f32>(bytes) {
        Ok(v) if cfg!(target_endian = "little") => std::borrow::Cow::Borrowed(v),
        _ => std::borrow::Cow::Owned(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
    }
}

/// Squared L2 distance from `q` to every row of `chunk` into `out`.
pub fn squared_distances(chunk: &[u8], row_bytes: usize, q: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA, the features the function enables.
        unsafe { squared_distances_avx2(chunk, row_bytes, q, out) };
        return;
    }
    squared_distances_portable(chunk, row_bytes, q, out);
}

/// [`squared_distances_portable`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA (check with `is_x86_feature_detected!`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn squared_distances_avx2(chunk: &[u8], row_bytes: usize, q: &[f32], out: &mut [f32]) {
    if q.len() % 8 != 0 || q.is_empty() {
        // Same code, compiled with 8-wide vectors.
        return squared_distances_portable(chunk, row_bytes, q, out);
    }
    use std::arch::x86_64::*;
    let rows = (chunk.len() / row_bytes).min(out.len());
    assert!(
        row_bytes >= 8 + 4 * q.len(),
        "a row holds an id and the query's floats"
    );
    let groups = rows / 8;
    let base = chunk.as_ptr();
    for g in 0..groups {
        // One accumulator per row, then the eight horizontal sums at once:
        // summing each row's lanes alone costs as much as its arithmetic.
        let mut acc = [_mm256_setzero_ps(); 8];
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: row `g * 8 + r` lies inside `chunk` (rows ≤ its
            // length / row_bytes), and its floats inside the row (asserted).
            let row = base.add((g * 8 + r) * row_bytes + 8) as *const f32;
            for (c, qc) in q.chunks_exact(8).enumerate() {
                let d = _mm256_sub_ps(
                    _mm256_loadu_ps(row.add(c * 8)),
                    _mm256_loadu_ps(qc.as_ptr()),
                );
                *acc = _mm256_fmadd_ps(d, d, *acc);
            }
        }
        let h01 = _mm256_hadd_ps(acc[0], acc[1]);
        let h23 = _mm256_hadd_ps(acc[2], acc[3]);
        let h45 = _mm256_hadd_ps(acc[4], acc[5]);
        let h67 = _mm256_hadd_ps(acc[6], acc[7]);
        // Rows 0–3 in each 128-bit half, then rows 4–7.
        let h0123 = _mm256_hadd_ps(h01, h23);
        let h4567 = _mm256_hadd_ps(h45, h67);
        let sums = _mm256_add_ps(
            _mm256_permute2f128_ps(h0123, h4567, 0x20),
            _mm256_permute2f128_ps(h0123, h4567, 0x31),
        );
        _mm256_storeu_ps(out[g * 8..g * 8 + 8].as_mut_ptr(), sums);
    }
    let done = groups * 8;
    squared_distances_portable(&chunk[done * row_bytes..], row_bytes, q, &mut out[done..]);
}

#[inline(always)]
fn squared_distances_portable(chunk: &[u8], row_bytes: usize, q: &[f32], out: &mut [f32]) {
    for (row, d) in chunk.chunks_exact(row_bytes).zip(out.iter_mut()) {
        *d = l2sq(&floats(&row[8..]), q);
    }
}

/// Squared L2 distance between two vectors, with AVX2 and FMA where the
/// CPU has them (the graph's distance: one pair at a time).
#[inline]
pub fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA, the features the function enables.
        return unsafe { l2sq_avx2(a, b) };
    }
    l2sq(a, b)
}

/// Whether this CPU has AVX2 and FMA, the features the `*_avx2` paths
/// (here and in the graph's walk) are compiled for. Cached by std.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// [`l2sq`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA (check with `is_x86_feature_detected!`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn l2sq_avx2(a: &[f32], b: &[f32]) -> f32 {
    l2sq(a, b)
}

/// Squared distance with eight independent accumulators, so the loop
/// vectorises (a single running sum would serialise on the additions).
#[inline(always)]
pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let t = x[i] - y[i];
            acc[i] += t * t;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_kernel_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        assert!((l2sq(&a, &b) - naive).abs() < 1e-4);
        assert!((squared_distance(&a, &b) - naive).abs() < 1e-4);
    }

    #[test]
    fn row_distances_match_naive_for_every_row_count_and_dim() {
        for dim in [3, 8, 16, 24, 64] {
            let row_bytes = 8 + 4 * dim;
            for rows in [0, 1, 7, 8, 9, 31] {
                let vectors: Vec<Vec<f32>> = (0..rows)
                    .map(|r| {
                        (0..dim)
                            .map(|i| ((r * 31 + i) as f32 * 0.37).sin())
                            .collect()
                    })
                    .collect();
                let mut chunk = Vec::new();
                for (r, v) in vectors.iter().enumerate() {
                    chunk.extend((r as u64).to_le_bytes());
                    chunk.extend(v.iter().flat_map(|x| x.to_le_bytes()));
                }
                // An odd start: the map gives rows at any 4-byte offset.
                let mut shifted = vec![0u8; 4];
                shifted.extend(&chunk);
                let q: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.11).cos()).collect();
                let mut out = vec![f32::NAN; rows];
                squared_distances(&shifted[4..], row_bytes, &q, &mut out);
                for (v, d) in vectors.iter().zip(&out) {
                    let naive: f32 = v.iter().zip(&q).map(|(x, y)| (x - y) * (x - y)).sum();
                    assert!(
                        (d - naive).abs() < 1e-4,
                        "dim {dim}, rows {rows}: {d} vs {naive}"
                    );
                }
            }
        }
    }

    #[test]
    fn top_k_keeps_the_smallest_in_order() {
        let mut top = TopK::new(3);
        for (i, d) in [5.0, 1.0, 4.0, 2.0, 3.0].into_iter().enumerate() {
            top.push(i, d);
        }
        assert_eq!(top.threshold(), 3.0);
        assert!(!top.admits(3.0));
        assert_eq!(top.into_sorted(), [(1, 1.0), (3, 2.0), (4, 3.0)]);
    }
}
