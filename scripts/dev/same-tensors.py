#!/usr/bin/env python3
"""same-tensors.py A B: whether two safetensors files hold the same tensors,
bit for bit (names, dtypes, shapes, bytes; the metadata, which holds
timings and run ids, left out). Exit 0 and "N tensors equal", else exit 1
naming what differs. Used by same-bits.sh, test-slurm.sh and
bench-distributed.sh."""
import json
import struct
import sys


def tensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in header.items()}


a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
if a.keys() != b.keys():
    sys.exit(f"different tensors: {sorted(a.keys() ^ b.keys())}")
bad = [k for k in a if a[k] != b[k]]
if bad:
    sys.exit(f"{len(bad)} of {len(a)} tensors differ, e.g. {sorted(bad)[:3]}")
print(f"  {len(a)} tensors equal")
