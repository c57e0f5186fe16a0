#!/usr/bin/env bash
# The graph beside hnswlib and faiss on the same vectors (bench/ann_peers.rs).
# Makes target/venv-peers with the peers from PyPI, builds the CLI, runs the
# bench. BENCH_SIZES=100000,1000000 adds the million (about 15 minutes more).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x target/venv-peers/bin/python ]; then
    python3 -m venv target/venv-peers
    target/venv-peers/bin/pip install -q numpy hnswlib faiss-cpu
fi
cargo build --release --bin imgsearch
cargo bench --bench ann_peers
