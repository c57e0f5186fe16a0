#!/usr/bin/env bash
# Trains the extra models the latent-kNN benchmark compares beside the
# defaults (other latent sizes), with the same settings as the defaults
# (scripts/train-default-models.sh) except the latent size. Writes to
# target/bench-models/. Usage: bench/train-bench-models.sh [digits8] ...
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${IMGSEARCH_DATA:-$root/../shared/data}
work=${WORK:-$root/target/default-models-data}
out=$root/target/bench-models
bin=$root/target/release/imgsearch
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}
[ -x "$bin" ] || cargo build --release --manifest-path "$root/Cargo.toml"
mkdir -p "$work" "$out"

models=("$@")
[ ${#models[@]} -gt 0 ] || models=(digits8)
for m in "${models[@]}"; do
  case "$m" in
    digits*) ds=mnist src=mnist dir=mnist-train recipe="--epochs 24 --noise 0.3" ;;
    fashion*) ds=fashion-mnist src=fashion-mnist dir=fashion-train recipe="--epochs 24 --noise 0" ;;
    *) echo "unknown bench model: $m" >&2; exit 2 ;;
  esac
  latent=${m//[!0-9]/}
  [ -d "$work/$dir" ] || "$bin" dataset export $ds "$data/$src" --out "$work/$dir" --split train
  start=$(date +%s)
  "$bin" train "$work/$dir" --out "$out/$m.safetensors" --data-name "$ds train (60000 images)" \
    --size 28 --channels 1 --latent "$latent" --widths 32,64 \
    $recipe --batch 128 --lr 2e-3 --loss bce --val 0.1 --seed 1
  echo "$m: trained in $(( $(date +%s) - start )) s"
done
