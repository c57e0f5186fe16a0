"""The peers of bench/ann_peers.rs: hnswlib and faiss on the same vectors.

Called by `cargo bench --bench ann_peers` with the files it wrote (raw
little-endian f32 rows, the exact top 10 of each query as u32). Prints one
JSON object per table row on stdout, in the Rust bench's `Row` fields.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

K = 10


def row(size, system, **fields):
    out = dict(size=size, system=system, build_s=None, memory_mb=None, reload_s=None,
               ef=None, recall=None, p50_ms=None, p99_ms=None, batch_qps=None, cold_ms=None)
    out.update(fields)
    print(json.dumps(out), flush=True)


def recall(found, truth):
    return sum(len(set(f[:K]) & set(t)) for f, t in zip(found, truth)) / (K * len(truth))


def one_at_a_time(search, queries):
    """Per-query latencies (ms) and results, one thread."""
    lat, found = [], []
    for q in queries:
        t = time.perf_counter()
        ids = search(q[None, :])
        lat.append((time.perf_counter() - t) * 1e3)
        found.append(list(ids))
    lat.sort()
    at = lambda p: lat[min(len(lat) - 1, round((len(lat) - 1) * p))]
    return found, at(0.5), at(0.99)


PEAK = ("\nfor line in open('/proc/self/status'):\n"
        "    if line.startswith('VmHWM:'): print(int(line.split()[1]) / 1024)\n")


def measure(search, threads, queries, truth):
    """Recall and one-thread p50/p99 of `search` (a batch of query rows to
    their ids), then its batch queries/s with `threads(2)`: the row fields."""
    threads(1)
    found, p50, p99 = one_at_a_time(lambda q: search(q)[0], queries)
    threads(2)
    t = time.perf_counter()
    search(queries)
    qps = len(queries) / (time.perf_counter() - t)
    return dict(recall=recall(found, truth), p50_ms=p50, p99_ms=p99, batch_qps=qps)


def cold(code, baseline):
    """Wall ms of a fresh Python process running `code` (p50 of 10), and
    the peak resident MB it reached above one running only `baseline`
    (the imports): what the saved index costs a process that answers."""
    times, peaks = [], []
    for _ in range(10):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code + PEAK], check=True,
                             capture_output=True, text=True).stdout
        times.append((time.perf_counter() - t) * 1e3)
        peaks.append(float(out.split()[-1]))
    base = subprocess.run([sys.executable, "-c", baseline + PEAK], check=True,
                          capture_output=True, text=True).stdout
    return sorted(times)[len(times) // 2], max(peaks) - float(base.split()[-1])


def main():
    ap = argparse.ArgumentParser()
    for name in ("size", "dim"):
        ap.add_argument("--" + name, type=int, required=True)
    for name in ("base", "queries", "truth", "work", "efs"):
        ap.add_argument("--" + name, required=True)
    a = ap.parse_args()
    base = np.fromfile(a.base, dtype="<f4").reshape(a.size, a.dim)
    queries = np.fromfile(a.queries, dtype="<f4").reshape(-1, a.dim)
    truth = np.fromfile(a.truth, dtype="<u4").reshape(-1, K).tolist()
    efs = [int(e) for e in a.efs.split(",")]
    n = a.size

    import faiss
    import hnswlib

    # hnswlib, M 16 and ef_construction 128 like ours; built on 2 threads.
    for m in (16, 32):
        t = time.perf_counter()
        index = hnswlib.Index(space="l2", dim=a.dim)
        index.init_index(max_elements=n, M=m, ef_construction=128)
        index.set_num_threads(2)
        index.add_items(base, np.arange(n))
        build = time.perf_counter() - t
        path = os.path.join(a.work, f"hnswlib-{n}-m{m}.bin")
        index.save_index(path)
        del index
        t = time.perf_counter()
        index = hnswlib.Index(space="l2", dim=a.dim)
        index.load_index(path, max_elements=n)
        reload = time.perf_counter() - t
        code = ("import hnswlib, numpy as np\n"
                f"i = hnswlib.Index(space='l2', dim={a.dim}); i.load_index({path!r})\n"
                f"q = np.fromfile({a.queries!r}, dtype='<f4')[:{a.dim}][None, :]\n"
                "i.knn_query(q, k=10)\n")
        cold_ms, memory = cold(code, "import hnswlib, numpy as np\n")
        name = f"hnswlib (M {m}, ef_construction 128)"
        row(n, name, build_s=build, memory_mb=memory, reload_s=reload)
        for ef in efs:
            index.set_ef(ef)
            row(n, "hnswlib", ef=ef, **measure(lambda q: index.knn_query(q, k=K)[0],
                                               index.set_num_threads, queries, truth))
        if m == 16:
            row(n, "hnswlib cold process (import, load, one query; 10 runs, p50)",
                cold_ms=cold_ms)
        del index

    # faiss IndexHNSWFlat, M 16, efConstruction 128, built on 2 threads.
    faiss.omp_set_num_threads(2)
    t = time.perf_counter()
    index = faiss.IndexHNSWFlat(a.dim, 16)
    index.hnsw.efConstruction = 128
    index.add(base)
    build = time.perf_counter() - t
    path = os.path.join(a.work, f"faiss-hnsw-{n}.index")
    faiss.write_index(index, path)
    del index
    t = time.perf_counter()
    index = faiss.read_index(path)
    reload = time.perf_counter() - t
    code = ("import faiss, numpy as np\n"
            f"i = faiss.read_index({path!r}); i.hnsw.efSearch = 64\n"
            f"q = np.fromfile({a.queries!r}, dtype='<f4')[:{a.dim}][None, :]\n"
            "i.search(q, 10)\n")
    cold_ms, memory = cold(code, "import faiss, numpy as np\n")
    row(n, "faiss IndexHNSWFlat (M 16, efConstruction 128)", build_s=build, memory_mb=memory,
        reload_s=reload)
    for ef in efs:
        index.hnsw.efSearch = ef
        row(n, "faiss IndexHNSWFlat", ef=ef, **measure(lambda q: index.search(q, K)[1],
                                                       faiss.omp_set_num_threads, queries, truth))
    row(n, "faiss HNSW cold process (import, read_index, one query; 10 runs, p50)",
        cold_ms=cold_ms)
    del index

    # faiss IndexFlatL2: exact, the baseline every recall is measured against.
    flat = faiss.IndexFlatL2(a.dim)
    flat.add(base)
    row(n, "faiss IndexFlatL2 (exact)", **measure(lambda q: flat.search(q, K)[1],
                                                  faiss.omp_set_num_threads, queries, truth))


if __name__ == "__main__":
    main()
