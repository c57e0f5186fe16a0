#!/usr/bin/env bash
# Regenerates the default models embedded in the binary, from ../shared/data
# (or $IMGSEARCH_DATA), with imgsearch's own `train` command and the exact
# settings used for the shipped files. Usage:
#
#   scripts/train-default-models.sh [digits] [digits-denoise] [fashion] [photos] [photos-cifar32]   # default: all
#
# Training is deterministic for a given seed and thread count; the shipped
# models were trained with RAYON_NUM_THREADS=1 (two models at a time on a
# 2-core machine, which is faster than one model on both cores).
# Afterwards rebuild (`cargo build --release`) to embed the new files.
# OUT=dir writes the models there instead of assets/models (to compare
# candidates before replacing the shipped files).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${IMGSEARCH_DATA:-$root/../shared/data}
work=${WORK:-$root/target/default-models-data}
bin=$root/target/release/imgsearch
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}
[ -x "$bin" ] || cargo build --release --manifest-path "$root/Cargo.toml"
out=${OUT:-$root/assets/models}
mkdir -p "$work" "$out"

export_once() { # name src out
  [ -d "$work/$3" ] || "$bin" dataset export "$1" "$data/$2" --out "$work/$3" --split train
}

train_one() {
  case "$1" in
    digits)
      export_once mnist mnist mnist-train
      "$bin" train "$work/mnist-train" --out "$out/digits.safetensors" \
        --data-name "MNIST train (60000 images)" \
        --size 28 --channels 1 --latent 16 --widths 32,64 \
        --epochs 24 --batch 128 --lr 2e-3 --loss bce --noise 0.3 --val 0.1 --seed 1 ;;
    digits-denoise)
      # The denoiser: trained on noise at the top of the range it is
      # benchmarked on (σ 0.3 and 0.5), with a wider latent to keep strokes.
      export_once mnist mnist mnist-train
      "$bin" train "$work/mnist-train" --out "$out/digits-denoise.safetensors" \
        --data-name "MNIST train (60000 images)" \
        --size 28 --channels 1 --latent 32 --widths 32,64 \
        --epochs 20 --batch 128 --lr 2e-3 --loss bce --noise 0.5 --val 0.1 --seed 1 ;;
    fashion)
      export_once fashion-mnist fashion-mnist fashion-train
      "$bin" train "$work/fashion-train" --out "$out/fashion.safetensors" \
        --data-name "Fashion-MNIST train (60000 images)" \
        --size 28 --channels 1 --latent 16 --widths 32,64 \
        --epochs 24 --batch 128 --lr 2e-3 --loss bce --noise 0 --val 0.1 --seed 1 ;;
    photos)
      # Real photographs at 64x64, centre-cropped, with augmentation; the
      # embedding is the head: mean/std of every encoder block's channels
      # plus block 1's channel co-occurrences, PCA-projected to 128 floats.
      "$bin" train "$data/imagenette/train" --out "$out/photos.safetensors" \
        --data-name "Imagenette train (9469 photographs, 112x112 JPEG)" \
        --size 64 --channels 3 --latent 128 --widths 32,64,128,256 --prep crop --augment \
        --pool 1,2,3,4 --gram 1 --embedding 128 --whitening 0.25 \
        --epochs 5 --batch 64 --lr 2e-3 --loss bce --noise 0 --normalize gain --val 0.05 --seed 1 ;;
    photos-cifar32)
      # The default `photos` until version 2 of the model file: kept so
      # indexes built with it still open (it is a version-1 file: squash, no head).
      export_once cifar10 cifar-10-jpeg cifar-train
      "$bin" train "$work/cifar-train" --out "$out/photos-cifar32.safetensors" \
        --data-name "CIFAR-10 train records 0-29999 (JPEG-decoded copy)" \
        --size 32 --channels 3 --latent 64 --widths 32,64,128 \
        --epochs 10 --batch 128 --lr 2e-3 --loss bce --noise 0 --normalize gain --val 0.1 --seed 1 ;;
    *) echo "unknown default model: $1 (digits, digits-denoise, fashion, photos, photos-cifar32)" >&2; exit 2 ;;
  esac
}

models=("$@")
[ ${#models[@]} -gt 0 ] || models=(digits digits-denoise fashion photos photos-cifar32)
for m in "${models[@]}"; do
  start=$(date +%s)
  train_one "$m"
  echo "$m: trained in $(( $(date +%s) - start )) s"
done
