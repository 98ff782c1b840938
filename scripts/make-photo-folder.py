#!/usr/bin/env python3
"""make-photo-folder.py CIFAR_DIR OUT N [--size 500x375] [--quality 90]

Writes the first N CIFAR-10 training images as an image folder of JPEG
photos, OUT/<class>/<index>.jpg, each upscaled (bicubic) to the given size
(default 500x375, the typical size of an ImageNet or Pets photo): real
images for measuring a photo pipeline on a machine without ImageNet
(scripts/bench-photos.sh, the README's worked example). The upscale is
blurred, so these compress better and decode a little faster than camera
photos of the same size. CIFAR_DIR holds CIFAR-10's binary batches
(scripts/get-cifar10.sh). Needs Pillow (`pip install pillow`; the torch venv
of scripts/dev/torch-venv.sh has it). Files already there are kept, so a
rerun only adds what is missing.
"""

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor

try:
    from PIL import Image
except ImportError:
    sys.exit("make-photo-folder.py needs Pillow: pip install pillow "
             "(or run it with the python that scripts/dev/torch-venv.sh prints)")

CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck"]
RECORD = 1 + 3 * 32 * 32
PER_FILE = 10_000


def write(job):
    cifar, out, start, count, size, quality = job
    path = os.path.join(cifar, f"data_batch_{start // PER_FILE + 1}.bin")
    if not os.path.isfile(path):
        path = os.path.join(cifar, "cifar-10-batches-bin", os.path.basename(path))
    with open(path, "rb") as f:
        f.seek((start % PER_FILE) * RECORD)
        data = f.read(count * RECORD)
    for k in range(count):
        rec = data[k * RECORD:(k + 1) * RECORD]
        path = os.path.join(out, CLASSES[rec[0]], f"{start + k:06d}.jpg")
        if os.path.exists(path):
            continue
        planes = rec[1:]
        rgb = bytes(planes[c * 1024 + i] for i in range(1024) for c in range(3))
        img = Image.frombytes("RGB", (32, 32), rgb).resize(size, Image.BICUBIC)
        img.save(path, quality=quality)
    return count


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    p.add_argument("cifar_dir")
    p.add_argument("out")
    p.add_argument("n", type=int)
    p.add_argument("--size", default="500x375")
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    a = p.parse_args()
    if not 0 < a.n <= 50_000:
        sys.exit("make-photo-folder.py: N must be 1 to 50000 (CIFAR-10's training images)")
    w, h = (int(v) for v in a.size.split("x"))
    for c in CLASSES:
        os.makedirs(os.path.join(a.out, c), exist_ok=True)
    chunk = 500
    jobs = [(a.cifar_dir, a.out, s, min(chunk, a.n - s, PER_FILE - s % PER_FILE), (w, h), a.quality)
            for s in range(0, a.n, chunk)]
    with ProcessPoolExecutor(a.jobs) as pool:
        done = sum(pool.map(write, jobs))
    print(f"{done} photos of {w}x{h} in {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
