#!/usr/bin/env bash
# Ingest throughput on real-photo-sized JPEGs: 500 at 1920x1080 and 200 at
# 4032x3024, made from ../shared/data/imagenette (bench/make_photos.py).
# For each set, in one run:
#   - the JPEG decoders side by side, one thread (bench/jpeg_decoders.rs);
#   - each ingest stage alone, then the whole pipeline, in one process
#     (bench/ingest_stages.rs);
#   - the CLI's whole `imgsearch ingest` under GNU time (peak RSS), on all
#     cores and on one (RAYON_NUM_THREADS=1), for rates per core;
#   - the baseline: Pillow (libjpeg-turbo) `draft` + `load`, in 2 processes
#     and in 1 (bench/pillow_draft.py).
# With BENCH_BASELINE_BIN=/path/to/an/older/imgsearch it also runs that
# binary's whole ingest on the same files (the "before" column), and with
# BENCH_MNIST=1 MNIST as 70,000 PNGs.
# Data goes to target/bench-data/, the Python venv to target/venv-bench/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${IMGSEARCH_DATA:-$root/../shared/data}
work=$root/target/bench-data
bin=$root/target/release/imgsearch
venv=$root/target/venv-bench
model=${BENCH_MODEL:-photos}
cd "$root"
cargo build --release --benches
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q pillow numpy
fi
py=$venv/bin/python
"$py" bench/make_photos.py "$data" "$work/photos-1080p" 500 1920 1080
"$py" bench/make_photos.py "$data" "$work/photos-12mp" 200 4032 3024
side=$("$bin" models --json | "$py" -c "import json,sys; print(next(m['info']['input_size'] for m in json.load(sys.stdin) if m['name']=='$model'))")

cli_ingest() { # binary dir label [env...]
  local exe=$1 dir=$2 label=$3; shift 3
  rm -rf "$work/cli-index"
  env "$@" /usr/bin/time -f "$label: %e s wall, peak RSS %M KB" \
    "$exe" ingest "$dir" --index "$work/cli-index" --model "$model" --json \
    > "$work/cli-report.json"
  "$py" -c "import json; r=json.load(open('$work/cli-report.json')); s=r.get('stages', {}); print(f\"  {r['encoded']} encoded, {r['failed']} failed, {r['images_per_second']:.0f} images/s; busy: \" + ', '.join(f'{k} {v:.2f}' for k,v in s.items()))"
}

run_set() { # dir
  echo "== $1 (model $model, input $side px)"
  BENCH_PHOTOS_DIR="$1" BENCH_MODEL="$model" cargo bench -q --bench jpeg_decoders
  BENCH_INGEST_DIR="$1" BENCH_MODEL="$model" cargo bench -q --bench ingest_stages
  sync; cli_ingest "$bin" "$1" "CLI whole ingest, all cores"
  cli_ingest "$bin" "$1" "CLI whole ingest, one core" RAYON_NUM_THREADS=1 taskset -c 0
  if [ -n "${BENCH_BASELINE_BIN:-}" ]; then
    cli_ingest "$BENCH_BASELINE_BIN" "$1" "baseline binary, whole ingest, all cores"
  fi
  echo "Pillow draft + load, 2 processes: $("$py" bench/pillow_draft.py "$1" 2 "$side")"
  echo "Pillow draft + load, 1 process:   $("$py" bench/pillow_draft.py "$1" 1 "$side")"
}
run_set "$work/photos-1080p"
run_set "$work/photos-12mp"

if [ "${BENCH_MNIST:-0}" = 1 ]; then
  if [ ! -d "$work/mnist70k" ]; then
    "$bin" dataset export mnist "$data/mnist" --out "$work/mnist70k/train" --split train
    "$bin" dataset export mnist "$data/mnist" --out "$work/mnist70k/test" --split test
  fi
  echo "== $work/mnist70k (digits)"
  BENCH_INGEST_DIR="$work/mnist70k" BENCH_MODEL=digits cargo bench -q --bench ingest_stages
  model=digits cli_ingest "$bin" "$work/mnist70k" "CLI whole ingest, all cores"
fi
