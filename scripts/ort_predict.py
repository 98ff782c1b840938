"""Classify image files with a model written by `cnn export`, in ONNX Runtime:
the ONNX side of scripts/predict-bench.sh, and an example of serving the
exported model without cnn.

    ort_predict.py MODEL.onnx IMAGE_OR_DIR... [--batch-size 256] [--threads 2]

Folders are searched recursively for .png/.jpg/.jpeg/.bmp/.pgm/.ppm files,
in name order. Images are decoded with Pillow on --threads threads,
converted to gray or RGB as the model takes, resized to its input size when
they differ (no digit centring: for MNIST-style 28x28 digits this is what
`cnn predict --preprocess stretch` sees), scaled to [0, 1] and run in batches.
Prints one JSON object per image on stdout ({path, class, label,
probability}), like `cnn predict --jsonl`; on stderr, the time spent
decoding and in the model.

Needs onnxruntime, numpy and pillow (scripts/dev/onnx-venv.sh makes a venv
with them).
"""

import argparse
import concurrent.futures
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort
from PIL import Image

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".pnm")


def image_files(args):
    for a in args:
        if os.path.isdir(a):
            found = []
            for root, dirs, files in os.walk(a):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found += [
                    os.path.join(root, f)
                    for f in files
                    if f.lower().endswith(EXTENSIONS) and not f.startswith(".")
                ]
            yield from sorted(found)
        else:
            yield a


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("images", nargs="+")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    classes = json.loads(meta["classes"])
    (inp,) = session.get_inputs()
    (out,) = session.get_outputs()
    _, c, h, w = inp.shape
    mode = "RGB" if c == 3 else "L"

    def load(path):
        with Image.open(path) as im:
            im = im.convert(mode)
            if im.size != (w, h):
                im = im.resize((w, h), Image.BILINEAR)
            x = np.asarray(im, dtype=np.float32) / 255.0
        return x.transpose(2, 0, 1) if c == 3 else x[None]

    files = list(image_files(args.images))
    decode = model = 0.0
    write = sys.stdout.write
    with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
        for start in range(0, len(files), args.batch_size):
            paths = files[start : start + args.batch_size]
            t0 = time.perf_counter()
            x = np.stack(list(pool.map(load, paths)))
            t1 = time.perf_counter()
            scores = session.run([out.name], {inp.name: x})[0]
            t2 = time.perf_counter()
            decode += t1 - t0
            model += t2 - t1
            if out.name != "probabilities":
                e = np.exp(scores - scores.max(axis=1, keepdims=True))
                scores = e / e.sum(axis=1, keepdims=True)
            best = scores.argmax(axis=1)
            for path, k, row in zip(paths, best, scores):
                write(
                    json.dumps(
                        {
                            "path": path,
                            "class": int(k),
                            "label": classes[k],
                            "probability": float(row[k]),
                        }
                    )
                    + "\n"
                )
            sys.stdout.flush()
    print(
        f"ort_predict: {len(files)} images, decoding {decode:.2f} s, model {model:.2f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
