#!/usr/bin/env python3
"""Cut a small real subset of an IDX dataset (MNIST, Fashion-MNIST) for tests.

Usage: scripts/dev/make_fixture.py SRC_DIR DEST_DIR N_TRAIN N_TEST

Keeps the first N_TRAIN training and N_TEST test images with their labels,
rewriting the IDX headers, gzip-compressed. Standard library only.
"""
import gzip
import os
import struct
import sys


def read(path):
    for p in (path, path + ".gz"):
        if os.path.exists(p):
            opener = gzip.open if p.endswith(".gz") else open
            with opener(p, "rb") as f:
                return f.read()
    sys.exit(f"missing {path}[.gz]")


def cut(src, dest, name, n):
    data = read(os.path.join(src, name))
    magic, count = struct.unpack(">II", data[:8])
    dims = (magic & 0xFF)
    header = 4 + 4 * dims
    shape = struct.unpack(">" + "I" * dims, data[4:header])
    if n > count:
        sys.exit(f"{name} has only {count} items")
    item = 1
    for d in shape[1:]:
        item *= d
    out = struct.pack(">I", magic) + struct.pack(">I", n) + data[8:header] + data[header:header + n * item]
    # mtime=0 keeps the output byte-for-byte reproducible.
    with open(os.path.join(dest, name + ".gz"), "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
            f.write(out)


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    src, dest, n_train, n_test = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    os.makedirs(dest, exist_ok=True)
    cut(src, dest, "train-images-idx3-ubyte", n_train)
    cut(src, dest, "train-labels-idx1-ubyte", n_train)
    cut(src, dest, "t10k-images-idx3-ubyte", n_test)
    cut(src, dest, "t10k-labels-idx1-ubyte", n_test)


if __name__ == "__main__":
    main()
