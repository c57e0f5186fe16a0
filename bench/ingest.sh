#!/usr/bin/env bash
# Ingest throughput on (a) MNIST as 70,000 PNGs and (b) 500 large JPEGs
# (1920x1080, generated): each stage alone and the whole pipeline in one
# process (bench/ingest_stages.rs), then the CLI's whole ingest with its
# peak RSS (GNU time). Data goes to target/bench-data/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${IMGSEARCH_DATA:-$root/../shared/data}
work=$root/target/bench-data
bin=$root/target/release/imgsearch
cd "$root"
cargo build --release --benches --examples
if [ ! -d "$work/mnist70k" ]; then
  "$bin" dataset export mnist "$data/mnist" --out "$work/mnist70k/train" --split train
  "$bin" dataset export mnist "$data/mnist" --out "$work/mnist70k/test" --split test
fi
cargo run --release --example make_photos -- "$work/photos500" 500

run_set() { # dir model
  echo "== $1 ($2)"
  BENCH_INGEST_DIR="$1" BENCH_MODEL="$2" cargo bench --bench ingest_stages
  rm -rf "$work/cli-index"
  /usr/bin/time -f "CLI whole ingest: %e s wall, peak RSS %M KB" \
    "$bin" ingest "$1" --index "$work/cli-index" --model "$2"
  /usr/bin/time -f "CLI second ingest (unchanged): %e s wall, peak RSS %M KB" \
    "$bin" ingest "$1" --index "$work/cli-index" --model "$2"
}
run_set "$work/mnist70k" digits
run_set "$work/photos500" photos
