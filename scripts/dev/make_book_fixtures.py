#!/usr/bin/env python3
"""Cut the small real fixtures the book's examples run on (scripts/dev/doc-check.sh).

Usage: scripts/dev/make_book_fixtures.py CIFAR_DIR

From CIFAR-10's binary version (scripts/get-cifar10.sh):

  tests/fixtures/cifar10-small/  the six batch files, the first 20 images of
                                 each training file and 50 test images
  tests/fixtures/pets/           an image folder, cat/ and dog/, 24 PNGs each
                                 from the test file: "your own photos" for the
                                 book's fine-tuning chapter

Standard library only.
"""
import os
import struct
import sys
import zlib

RECORD = 1 + 3 * 32 * 32


def png(path, pixels, w, h, channels=3):
    stride = w * channels
    rows = b"".join(b"\x00" + pixels[y * stride:(y + 1) * stride] for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2 if channels == 3 else 0, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(rows, 9)))
        f.write(chunk(b"IEND", b""))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    src = sys.argv[1]
    root = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
    small = os.path.join(root, "cifar10-small")
    os.makedirs(small, exist_ok=True)
    for name, n in [(f"data_batch_{i}.bin", 20) for i in range(1, 6)] + [("test_batch.bin", 50)]:
        with open(os.path.join(src, name), "rb") as f:
            data = f.read(n * RECORD)
        with open(os.path.join(small, name), "wb") as f:
            f.write(data)
    with open(os.path.join(src, "test_batch.bin"), "rb") as f:
        test = f.read()
    wanted = {3: "cat", 5: "dog"}
    counts = {3: 0, 5: 0}
    for i in range(len(test) // RECORD):
        r = test[i * RECORD:(i + 1) * RECORD]
        label = r[0]
        if label not in wanted or counts[label] >= 24:
            continue
        planes = r[1:]
        rgb = bytes(planes[c * 1024 + p] for p in range(1024) for c in range(3))
        d = os.path.join(root, "pets", wanted[label])
        os.makedirs(d, exist_ok=True)
        png(os.path.join(d, f"{wanted[label]}-{counts[label]:02}.png"), rgb, 32, 32)
        counts[label] += 1
        if all(c >= 24 for c in counts.values()):
            break
    import gzip
    with gzip.open(os.path.join(root, "mnist-small", "t10k-images-idx3-ubyte.gz")) as f:
        images = f.read()[16:]
    with gzip.open(os.path.join(root, "mnist-small", "t10k-labels-idx1-ubyte.gz")) as f:
        labels = f.read()[8:]
    digits = os.path.join(root, "digits")
    os.makedirs(digits, exist_ok=True)
    for i in range(3):
        png(os.path.join(digits, f"digit-{i}-is-{labels[i]}.png"), images[i * 784:(i + 1) * 784], 28, 28, 1)


main()
