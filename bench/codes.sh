#!/usr/bin/env bash
# Latent codes (`imgsearch compress`) against JPEG and WebP at the same
# bytes per image, PSNR and SSIM on luma, in one run:
#   - MNIST: the first 1,000 test images, model digits (16-float latent);
#   - Imagenette: 500 val photos (112x112 JPEGs; the originals are the
#     decoded JPEGs), models photos (128 floats) and photos-cifar32 (64).
# Decoded at the originals' size. Python with Pillow and numpy in
# target/venv-bench.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${IMGSEARCH_DATA:-$root/../shared/data}
work=$root/target/bench-codes
bin=$root/target/release/imgsearch
venv=$root/target/venv-bench
cd "$root"
cargo build --release
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q pillow numpy
fi
rm -rf "$work"; mkdir -p "$work/mnist" "$work/photos"
"$bin" dataset export mnist "$data/mnist" --out "$work/mnist-export" --split test --limit 1000 >/dev/null
# No `head` in these pipes: it would close them early, and the writer's
# SIGPIPE fails the script under pipefail. The export holds 1,000 already.
find "$work/mnist-export" -name '*.png' | while read -r f; do
  cp "$f" "$work/mnist/$(basename "$(dirname "$f")")-$(basename "$f")"
done
find "$data/imagenette/val" -name '*.JPEG' -o -name '*.jpg' | sort | awk 'NR % 7 == 0 && ++n <= 500' |
  while read -r f; do cp "$f" "$work/photos/"; done

run() { # set model bits
  local set=$1 model=$2 bits=$3
  local codes=$work/$set-$model-$bits.codes out=$work/$set-$model-$bits-decoded
  "$bin" compress "$work/$set" --model "$model" --bits "$bits" -o "$codes" >/dev/null
  "$bin" decompress "$codes" -o "$out" >/dev/null
  echo "== $set, model $model, $bits bits"
  "$venv/bin/python" bench/codes_rd.py "$work/$set" "$out" "$codes"
}
run mnist digits 8
run mnist digits 4
run photos photos 8
run photos photos-cifar32 8
