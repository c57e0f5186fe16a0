use super::*;
use crate::ann::kernels::squared_distance;

/// `n` points in `dim` dimensions around 20 centres (clustered, like
/// embeddings), from a fixed seed.
fn points(n: usize, dim: usize, seed: u64) -> Vec<(u64, Vec<f32>)> {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    let centres: Vec<Vec<f32>> = (0..20)
        .map(|_| (0..dim).map(|_| 4.0 * next()).collect())
        .collect();
    (0..n as u64)
        .map(|id| {
            let c = &centres[id as usize % centres.len()];
            (id, c.iter().map(|x| x + next()).collect())
        })
        .collect()
}

fn exact(points: &[(u64, Vec<f32>)], q: &[f32], k: usize, keep: impl Fn(u64) -> bool) -> Vec<u64> {
    let mut all: Vec<(f32, u64)> = points
        .iter()
        .filter(|(id, _)| keep(*id))
        .map(|(id, v)| (squared_distance(q, v), *id))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    all.into_iter().take(k).map(|(_, id)| id).collect()
}

fn recall(
    graph: &Graph,
    points: &[(u64, Vec<f32>)],
    queries: &[(u64, Vec<f32>)],
    ef: usize,
) -> f64 {
    let mut hits = 0;
    for (_, q) in queries {
        let want = exact(points, q, 10, |_| true);
        let got: Vec<u64> = graph.search(q, 10, ef).into_iter().map(|h| h.0).collect();
        hits += got.iter().filter(|id| want.contains(id)).count();
    }
    hits as f64 / (10 * queries.len()) as f64
}

#[test]
fn search_finds_the_exact_neighbours_nearly_always() {
    let data = points(6000, 12, 1);
    let graph = Graph::empty(12, HnswParams::default(), 0);
    // In uneven calls, as ingest commits them.
    for chunk in data.chunks(700) {
        graph.insert(chunk);
    }
    assert_eq!((graph.points(), graph.max_id()), (6000, Some(5999)));
    let queries = points(200, 12, 2);
    let r = recall(&graph, &data, &queries, 64);
    assert!(r >= 0.97, "recall@10 at ef 64: {r}");
    // Hits come nearest first, with L2 (not squared) distances.
    let hits = graph.search(&queries[0].1, 10, 64);
    assert!(hits.windows(2).all(|w| w[0].1 <= w[1].1));
    let (id, d) = hits[0];
    let true_d = squared_distance(&queries[0].1, &data[id as usize].1).sqrt();
    assert!((d - true_d).abs() < 1e-4);
}

#[test]
fn the_same_points_make_the_same_graph_on_any_number_of_threads() {
    let data = points(3000, 8, 3);
    let build = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let graph = Graph::empty(8, HnswParams::default(), 0);
        pool.install(|| graph.insert(&data));
        graph.layers.into_inner()
    };
    assert_eq!(build(1), build(3));
}

#[test]
fn near_identical_points_in_one_batch_find_each_other() {
    // Pairs of almost equal vectors, inserted in one call (one batch plans
    // both members of a pair against a graph that holds neither).
    let mut data = points(400, 8, 4);
    let twins: Vec<(u64, Vec<f32>)> = data
        .iter()
        .map(|(id, v)| (id + 400, v.iter().map(|x| x + 1e-4).collect()))
        .collect();
    data.extend(twins);
    let graph = Graph::empty(8, HnswParams::default(), 0);
    graph.insert(&data);
    for (id, v) in &data[..400] {
        let hits: Vec<u64> = graph.search(v, 2, 32).into_iter().map(|h| h.0).collect();
        assert!(hits.contains(&(id + 400)), "{id}: {hits:?}");
    }
}

#[test]
fn tombstones_and_filters_apply_inside_the_walk() {
    let data = points(2000, 8, 5);
    let mut graph = Graph::empty(8, HnswParams::default(), 0);
    graph.insert(&data);
    let removed: Vec<u64> = (0..2000).filter(|id| id % 3 == 0).collect();
    graph.add_tombstones(removed.iter().copied());
    assert_eq!(graph.live_points(), 2000 - removed.len());
    let even = |id: u64| id % 2 == 0;
    for (_, q) in points(50, 8, 6) {
        let hits = graph.search_where(&q, 10, 64, even);
        assert_eq!(hits.len(), 10);
        assert!(
            hits.iter().all(|(id, _)| id % 3 != 0 && even(*id)),
            "{hits:?}"
        );
        let want = exact(&data, &q, 10, |id| id % 3 != 0 && even(id));
        let found = hits.iter().filter(|(id, _)| want.contains(id)).count();
        assert!(found >= 8, "{found} of 10");
    }
}

/// A graph of `n` 6-float points from `seed`, saved in a new folder and
/// loaded back: (the folder, the graph built, the graph loaded).
fn saved_and_loaded(n: usize, seed: u64) -> (tempfile::TempDir, Graph, Graph) {
    let dir = tempfile::tempdir().unwrap();
    let graph = Graph::empty(6, HnswParams::default(), 0);
    graph.insert(&points(n, 6, seed));
    graph.save(dir.path()).unwrap();
    let loaded = Graph::load(dir.path(), 6, HnswParams::default()).unwrap();
    (dir, graph, loaded)
}

#[test]
fn a_saved_graph_loads_equal_and_a_damaged_one_is_refused() {
    let params = HnswParams::default();
    let (dir, graph, loaded) = saved_and_loaded(1500, 7);
    assert_eq!(Graph::saved(dir.path()), Some((1500, params)));
    assert_eq!(*loaded.layers.read(), *graph.layers.read());
    let q = points(1, 6, 8).remove(0).1;
    assert_eq!(loaded.search(&q, 5, 32), graph.search(&q, 5, 32));

    let other = HnswParams { m: 8, ..params };
    assert!(Graph::load(dir.path(), 6, other)
        .unwrap_err()
        .contains("want"));
    assert!(Graph::load(dir.path(), 7, params)
        .unwrap_err()
        .contains("dim"));

    let path = dir.path().join(FILE_NAME);
    let bytes = std::fs::read(&path).unwrap();
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x40;
    std::fs::write(&path, &flipped).unwrap();
    let err = Graph::load(dir.path(), 6, params).unwrap_err();
    assert!(err.contains("checksum mismatch"), "{err}");
    std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    let err = Graph::load(dir.path(), 6, params).unwrap_err();
    assert!(err.contains("truncated"), "{err}");
    let mut header = bytes.clone();
    header[24] ^= 1; // the point count, under the header's checksum
    std::fs::write(&path, &header).unwrap();
    let err = Graph::load(dir.path(), 6, params).unwrap_err();
    assert!(err.contains("header is damaged"), "{err}");
}

#[test]
fn a_loaded_graph_grows_by_an_eighth_not_by_doubling() {
    let (_dir, _, loaded) = saved_and_loaded(4000, 9);
    let more = points(4010, 6, 9).split_off(4000);
    for (i, point) in more.iter().enumerate() {
        loaded.insert(std::slice::from_ref(point));
        let layers = loaded.layers.read();
        let rows = 4001 + i;
        // At most an eighth of room beside what the rows hold, and the
        // first insert made it, not each one (that would copy the arrays
        // every time).
        for (capacity, len) in [
            (layers.vectors.capacity(), layers.vectors.len()),
            (layers.layer0.capacity(), layers.layer0.len()),
            (layers.ids.capacity(), layers.ids.len()),
        ] {
            assert!(capacity * 8 <= len * 9 + 64, "{capacity} for {len}");
        }
        assert_eq!(layers.rows(), rows);
        assert_eq!(layers.vectors.capacity(), (4000 + 500) * 6);
    }
    let q = points(1, 6, 10).remove(0).1;
    assert_eq!(loaded.search(&q, 10, 64).len(), 10);
}

#[test]
fn a_graph_whose_checksums_match_but_whose_links_do_not_is_refused() {
    // What the checksums cannot catch (a file written wrongly, or by a
    // fuzzer that fixes them up) the structural check does.
    let graph = Graph::empty(4, HnswParams::default(), 0);
    graph.insert(&points(300, 4, 9));
    let mut layers = graph.layers.read().clone();
    layers.layer0[17] = 300;
    assert!(layers.validate().unwrap_err().contains("link"));
    let mut layers = graph.layers.read().clone();
    layers.ids.swap(3, 4);
    assert!(layers.validate().unwrap_err().contains("increasing"));
    let mut layers = graph.layers.read().clone();
    let top = layers.top_level();
    assert!(top > 0, "300 points reach layer 1");
    layers.entry = layers.levels.iter().position(|&l| l < top).unwrap() as u32;
    assert!(layers.validate().unwrap_err().contains("entry"));
}

#[test]
fn searches_run_while_a_batch_is_inserted() {
    let data = points(4000, 8, 10);
    let graph = Graph::empty(8, HnswParams::default(), 0);
    graph.insert(&data[..500]);
    let queries = points(100, 8, 11);
    std::thread::scope(|s| {
        s.spawn(|| graph.insert(&data[500..]));
        // Every answer is whole whatever the insert has reached.
        for _ in 0..20 {
            for (_, q) in &queries {
                let hits = graph.search(q, 5, 32);
                assert_eq!(hits.len(), 5);
                assert!(hits.iter().all(|(id, _)| *id < 4000));
            }
        }
    });
    assert_eq!(graph.points(), 4000);
    assert!(recall(&graph, &data, &queries, 64) >= 0.97);
}
