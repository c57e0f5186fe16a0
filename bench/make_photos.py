"""Photo-sized JPEGs for the ingest benchmark, made from Imagenette.

Each 112-pixel Imagenette photo is cropped to the target's aspect ratio,
upscaled (Lanczos), given sensor-like grain so that the file is as large as a
camera's (an upscaled thumbnail alone compresses to a fraction of that) and
saved as a baseline JPEG at quality 90 with 4:2:0 chroma.

    python bench/make_photos.py DATA_DIR OUT_DIR COUNT WIDTH HEIGHT

Deterministic: the same sources (every k-th train file, sorted) and the same
grain seed, so every run measures the same bytes.
"""

import os
import sys

import numpy as np
from PIL import Image


def sources(data_dir, count):
    root = os.path.join(data_dir, "imagenette", "train")
    files = sorted(
        os.path.join(d, f)
        for d, _, names in os.walk(root)
        for f in names
        if f.lower().endswith((".jpg", ".jpeg", ".png"))
    )
    step = max(1, len(files) // count)
    return files[::step][:count]


def main():
    data_dir, out_dir, count, width, height = sys.argv[1:6]
    count, width, height = int(count), int(width), int(height)
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(17)
    for i, path in enumerate(sources(data_dir, count)):
        out = os.path.join(out_dir, f"photo-{i:04d}.jpg")
        if os.path.exists(out):
            continue
        img = Image.open(path).convert("RGB")
        w, h = img.size
        # Crop to the target's aspect ratio, then upscale.
        crop_h = min(h, round(w * height / width))
        crop_w = min(w, round(crop_h * width / height))
        left, top = (w - crop_w) // 2, (h - crop_h) // 2
        img = img.crop((left, top, left + crop_w, top + crop_h))
        img = img.resize((width, height), Image.LANCZOS)
        pixels = np.asarray(img, dtype=np.int16)
        grain = rng.normal(0, 6, size=(height, width, 1)).astype(np.int16)
        pixels = np.clip(pixels + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(out, quality=90, subsampling=2)
    total = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    print(f"{out_dir}: {count} JPEGs at {width}x{height}, {total / count / 1e6:.2f} MB each")


if __name__ == "__main__":
    main()
