"""The baseline for ingest speed: Pillow (libjpeg-turbo) decoding each JPEG
with `draft()`, its DCT-domain downscaling, then `load()`. Nothing else: no
hashing, no resize to the model's input, no model, no store.

    python bench/pillow_draft.py DIR [PROCESSES] [SIDE]

`draft('RGB', (SIDE, SIDE))` picks the smallest scale (1/1 to 1/8) that keeps
both sides at least SIDE, as imgsearch does for its model's input. Prints
one JSON line: files, seconds, images per second, processes.
"""

import json
import os
import sys
import time
from multiprocessing import Pool

from PIL import Image


def decode(args):
    path, side = args
    with Image.open(path) as img:
        img.draft("RGB", (side, side))
        img.load()
        return img.size


def main():
    folder = sys.argv[1]
    processes = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    side = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    files = sorted(
        os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(".jpg")
    )
    work = [(f, side) for f in files]
    with Pool(processes) as pool:
        pool.map(decode, work[: processes * 2])  # start the workers
        started = time.perf_counter()
        sizes = pool.map(decode, work, chunksize=8)
        seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "files": len(files),
                "seconds": round(seconds, 3),
                "images_per_second": round(len(files) / seconds, 1),
                "processes": processes,
                "decoded_size": list(sizes[0]),
            }
        )
    )


if __name__ == "__main__":
    main()
