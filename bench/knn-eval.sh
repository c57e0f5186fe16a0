#!/usr/bin/env bash
# kNN classification benchmark end to end: exports each dataset's splits
# as labelled PNG folders, ingests train into an index per model, evaluates
# test with `eval` (raw-pixel baseline in the same run, PCA beside it), and
# writes the table into bench/RESULTS.md between the knn-eval markers.
#
#   bench/knn-eval.sh                 # models that exist (defaults + target/bench-models)
#   TRAIN=1 bench/knn-eval.sh         # first train the missing latent sizes (8, 32)
#
# Training one extra 28x28 model takes about 40 minutes on one core
# (bench/train-bench-models.sh); the whole run without training about 15.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ "${TRAIN:-0}" = 1 ]; then
  for m in digits8 digits32 fashion8 fashion32; do
    [ -f "target/bench-models/$m.safetensors" ] || bench/train-bench-models.sh "$m"
  done
fi
mkdir -p target/knn-eval
cargo bench --bench knn_eval | tee target/knn-eval/output.txt
table=$(grep '^|' target/knn-eval/output.txt)
bench/write-results.sh knn-eval "kNN classification through ingest and eval" bench/knn-eval.sh "$table"
