#!/usr/bin/env python3
"""Rate-distortion of latent codes against JPEG and WebP at the same bytes.

    python bench/codes_rd.py ORIGINALS_DIR DECODED_DIR CODES_FILE

ORIGINALS_DIR holds the images given to `imgsearch compress`, DECODED_DIR
what `imgsearch decompress` made of CODES_FILE (PNGs named after the
originals, at their size). For each original, JPEG and WebP are encoded
with Pillow at the highest quality whose file is no larger than the codes'
bytes per image (the codes file's size over its image count, header
included), or at quality 1 when even that is larger. Neither codec can
make a file that small at full size (their headers alone are larger), so
each is also run at the same bytes the way a person would make it fit:
downscaled (Lanczos) to the largest of a ladder of sizes, at the highest
quality, whose file fits the budget, the best PSNR of those kept, and
scaled back up (bicubic) to be compared. Prints one table row per codec:
mean bytes per image, mean PSNR (dB) and mean SSIM on luma (7x7 box
windows), how many images the codec could not fit, and for the downscaled
rows the mean side kept.
"""

import io
import os
import sys

import numpy as np
from PIL import Image


def luma(img):
    return np.asarray(img.convert("L"), dtype=np.float64)


def psnr(a, b):
    mse = np.mean((a - b) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def box(x, k=7):
    """Mean over k x k windows (valid positions), by summed-area tables."""
    s = np.pad(x, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return (s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]) / (k * k)


def ssim(a, b):
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ma, mb = box(a), box(b)
    va, vb = box(a * a) - ma**2, box(b * b) - mb**2
    cov = box(a * b) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return float(s.mean())


def fit(img, fmt, budget):
    """The largest encoding of `img` in `fmt` no bigger than `budget` bytes
    (binary search on quality), else quality 1; returns (bytes, decoded)."""
    def enc(q):
        buf = io.BytesIO()
        img.save(buf, fmt, quality=q)
        return buf.getvalue()

    lo, hi, best = 1, 100, None
    while lo <= hi:
        q = (lo + hi) // 2
        data = enc(q)
        if len(data) <= budget:
            best, lo = data, q + 1
        else:
            hi = q - 1
    fitted = best is not None
    data = best if fitted else enc(1)
    return data, Image.open(io.BytesIO(data)), fitted


SCALES = (1.0, 0.75, 0.5, 0.375, 0.25, 0.1875, 0.125)


def fit_scaled(img, fmt, budget):
    """The best-PSNR fitting encoding of `img` downscaled by one of SCALES,
    decoded and scaled back to `img`'s size; None when nothing fits.
    Returns (bytes, decoded, scale)."""
    a = luma(img)
    best = None
    for f in SCALES:
        size = (max(2, round(img.width * f)), max(2, round(img.height * f)))
        small = img.resize(size, Image.LANCZOS)
        data, dec, fitted = fit(small, fmt, budget)
        if not fitted:
            continue
        back = dec.resize(img.size, Image.BICUBIC)
        p = psnr(a, luma(back))
        if best is None or p > best[0]:
            best = (p, data, back, f)
    return None if best is None else best[1:]


def main(originals, decoded, codes):
    names = sorted(os.listdir(decoded))
    per_image = os.path.getsize(codes) / len(names)
    stems = {os.path.splitext(n)[0]: n for n in os.listdir(originals)}
    rows = {"latent codes": [], "JPEG": [], "WebP": [],
            "JPEG, downscaled to fit": [], "WebP, downscaled to fit": []}
    over = {label: 0 for label in rows if label != "latent codes"}
    scales = {"JPEG, downscaled to fit": [], "WebP, downscaled to fit": []}
    for name in names:
        orig = Image.open(os.path.join(originals, stems[os.path.splitext(name)[0]]))
        mode = "L" if orig.mode in ("L", "1", "I;16") else "RGB"
        orig = orig.convert(mode)
        a = luma(orig)
        ours = Image.open(os.path.join(decoded, name))
        rows["latent codes"].append((per_image, psnr(a, luma(ours)), ssim(a, luma(ours))))
        for fmt, label in (("JPEG", "JPEG"), ("WEBP", "WebP")):
            data, img, fitted = fit(orig, fmt, per_image)
            over[label] += not fitted
            b = luma(img)
            rows[label].append((len(data), psnr(a, b), ssim(a, b)))
            scaled = f"{label}, downscaled to fit"
            found = fit_scaled(orig, fmt, per_image)
            if found is None:
                over[scaled] += 1
                continue
            data, img, f = found
            b = luma(img)
            rows[scaled].append((len(data), psnr(a, b), ssim(a, b)))
            scales[scaled].append(f * orig.width)
    print(f"{len(names)} images, codes {per_image:.1f} bytes per image")
    print("| codec | bytes/image | PSNR dB | SSIM | images over the budget | mean side kept |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, r in rows.items():
        side = f"{np.mean(scales[label]):.1f} px" if scales.get(label) else ""
        if not r:
            print(f"| {label} | | | | {over.get(label, 0)} | |")
            continue
        r = np.array(r)
        print(
            f"| {label} | {r[:, 0].mean():.1f} | {r[:, 1].mean():.2f} | {r[:, 2].mean():.3f} | "
            f"{over.get(label, 0)} | {side} |"
        )


if __name__ == "__main__":
    main(*sys.argv[1:4])
