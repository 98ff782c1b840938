"""Runs a model written by `cnn export` with ONNX Runtime, for the tests
(tests/integration/export.rs), in the venv of scripts/dev/onnx-venv.sh.

    onnx_compare.py MODEL.onnx INPUTS.f32 N C H W OUTPUTS.f32

First checks the file with ONNX's own checker (with shape inference). Then
reads N images of C x H x W float32 (little-endian, pixels scaled to [0, 1])
from INPUTS.f32, runs them through the model in batches of several sizes (1,
then up to 256: the batch dimension must be dynamic) on the CPU, and writes
the outputs, N rows of float32, to OUTPUTS.f32. Prints one JSON object
describing the model: opset, IR version, input and output names and shapes,
metadata_props, producer and the operators used.
"""

import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort


def dims(value_info):
    shape = value_info.type.tensor_type.shape
    return [d.dim_param if d.dim_param else d.dim_value for d in shape.dim]


def main():
    if len(sys.argv) != 8:
        sys.exit(__doc__)
    model_path, inputs_path = sys.argv[1], sys.argv[2]
    n, c, h, w = (int(v) for v in sys.argv[3:7])
    outputs_path = sys.argv[7]

    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("RAYON_NUM_THREADS", "2"))
    session = ort.InferenceSession(
        model_path, options, providers=["CPUExecutionProvider"]
    )
    (inp,) = session.get_inputs()
    (out,) = session.get_outputs()
    x = np.fromfile(inputs_path, dtype="<f4").reshape(n, c, h, w)
    starts = [0, 1] + list(range(257, n, 256))
    parts = [
        session.run([out.name], {inp.name: x[a:b]})[0]
        for a, b in zip(starts, starts[1:] + [n])
        if a < b
    ]
    np.concatenate(parts).astype("<f4").tofile(outputs_path)

    graph = model.graph
    print(
        json.dumps(
            {
                "ir_version": model.ir_version,
                "opset": {o.domain: o.version for o in model.opset_import},
                "producer": model.producer_name,
                "input": {"name": graph.input[0].name, "shape": dims(graph.input[0])},
                "output": {"name": graph.output[0].name, "shape": dims(graph.output[0])},
                "metadata": {p.key: p.value for p in model.metadata_props},
                "operators": sorted({node.op_type for node in graph.node}),
            }
        )
    )


if __name__ == "__main__":
    main()
