#!/usr/bin/env bash
# What Spark costs: the same folder embedded four ways, in one run.
#   1. `imgsearch ingest` (one process, every core): the baseline;
#   2. `imgsearch embed --out` as one shard (one process, no Spark), then
#      `imgsearch import`;
#   3. scripts/spark_embed.py, Spark in local mode with 2 task slots
#      (local[2]) and BENCH_SHARDS shards (default 8), each task one core,
#      then `imgsearch import`.
# Wall times, images/s, and the import's share.
# Input: BENCH_DIR (default: MNIST, all 70,000 images as PNGs, exported to
# target/bench-data/mnist70k), model BENCH_MODEL (default digits).
# Needs Java and target/venv-spark (pyspark, pyarrow; .ci/run makes it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${IMGSEARCH_DATA:-$root/../shared/data}
work=$root/target/bench-spark
bin=$root/target/release/imgsearch
py=$root/target/venv-spark/bin/python
model=${BENCH_MODEL:-digits}
shards=${BENCH_SHARDS:-8}
cd "$root"
cargo build --release
dir=${BENCH_DIR:-$root/target/bench-data/mnist70k}
if [ -z "${BENCH_DIR:-}" ] && [ ! -d "$dir" ]; then
  "$bin" dataset export mnist "$data/mnist" --out "$dir/train" --split train
  "$bin" dataset export mnist "$data/mnist" --out "$dir/test" --split test
fi
images=$(find "$dir" -type f | wc -l)
mkdir -p "$work"
now() { date +%s.%N; }
secs() { awk "BEGIN { print $2 - $1 }"; }
row() { # label seconds
  printf '| %s | %.1f | %.0f |\n' "$1" "$2" "$(awk "BEGIN { print $images / $2 }")"
}

echo "$images images in $dir, model $model, $(nproc) cores"
echo
echo "| how | wall s | images/s |"
echo "|---|---:|---:|"

rm -rf "$work/ingest-idx"; sync
t0=$(now)
"$bin" ingest "$dir" --index "$work/ingest-idx" --model "$model" >/dev/null
t1=$(now)
row "ingest, one process" "$(secs "$t0" "$t1")"

rm -rf "$work/parts-1" "$work/import-1"; sync
t0=$(now)
"$bin" embed "$dir" --out "$work/parts-1" --model "$model" >/dev/null
t1=$(now)
"$bin" import "$work/parts-1" --index "$work/import-1" >/dev/null
t2=$(now)
row "embed --out, one shard, no Spark" "$(secs "$t0" "$t1")"
row "  + import" "$(secs "$t0" "$t2")"

rm -rf "$work/parts-spark" "$work/import-spark"; sync
t0=$(now)
SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON="$py" "$py" scripts/spark_embed.py \
  --binary "$bin" --input "$dir" --out "$work/parts-spark" --shards "$shards" \
  --master 'local[2]' --model "$model" \
  --conf spark.driver.host=127.0.0.1 --conf spark.ui.enabled=false \
  >"$work/spark-summary.json" 2>"$work/spark.log"
t1=$(now)
"$bin" import "$work/parts-spark" --index "$work/import-spark" >/dev/null
t2=$(now)
row "Spark local[2], $shards shards" "$(secs "$t0" "$t1")"
row "  + import" "$(secs "$t0" "$t2")"
echo
echo "Spark's summary: $(cat "$work/spark-summary.json")"
