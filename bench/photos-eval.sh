#!/usr/bin/env bash
# Search quality on real photographs, every method in one run of
# `cargo bench --bench photos_eval` (see its header), written into
# bench/RESULTS.md between the photos-eval markers.
#
#   bench/photos-eval.sh                                  # photos vs photos-cifar32 vs baselines
#   PHOTOS_HEADS='1,2,3:128:0.25;1,2,3,4:256:0.25' bench/photos-eval.sh   # plus head shapes
#
# About 20 minutes on 2 cores (most of it raw-pixel PCA and 40,000 CIFAR images).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p target/photos-eval
cargo bench --bench photos_eval | tee target/photos-eval/output.txt
table=$(grep '^|' target/photos-eval/output.txt | sed 's/^| method |/\n| method |/')
bench/write-results.sh photos-eval "Real photographs: the photos model against colour histograms and pixels" bench/photos-eval.sh "$table"
