#!/usr/bin/env python3
"""Writes configs/zoo/*.json: torchvision's ImageNet networks as cnn configs.

Each config is the network exactly as torchvision's builder of the same name
defines it (same layers, same order, same tensor shapes), and every layer
with tensors carries `torch_name`, its module's name in torchvision's
state_dict (`layer1.0.conv1`): the declared name table `cnn import` and
`cnn export --names torchvision` go by. Run it after changing a family here;
tests/integration/zoo.rs checks each config against torchvision itself.

    python3 scripts/dev/make_zoo.py            # writes configs/zoo/
    python3 scripts/dev/make_zoo.py --check    # exit 1 if they differ
"""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
ZOO = ROOT / "configs" / "zoo"

# torchvision's ImageNet statistics (of pixels in [0, 1]).
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def conv(out, k, name, stride=1, padding=None, groups=1, bias=False):
    layer = {"type": "conv2d", "out_channels": out, "kernel_size": k}
    if stride != 1:
        layer["stride"] = stride
    layer["padding"] = k // 2 if padding is None else padding
    if groups != 1:
        layer["groups"] = groups
    layer["bias"] = bias
    layer["torch_name"] = name
    return layer


def bn(name):
    return {"type": "batch_norm2d", "torch_name": name}


RELU = {"type": "relu"}


def basic(prefix, planes, stride, project):
    """torchvision's BasicBlock (expansion 1)."""
    block = {
        "type": "residual",
        "layers": [
            conv(planes, 3, f"{prefix}.conv1", stride),
            bn(f"{prefix}.bn1"),
            RELU,
            conv(planes, 3, f"{prefix}.conv2"),
            bn(f"{prefix}.bn2"),
        ],
    }
    if project:
        block["shortcut"] = [
            conv(planes, 1, f"{prefix}.downsample.0", stride),
            bn(f"{prefix}.downsample.1"),
        ]
    block["activation"] = "relu"
    return block


def bottleneck(prefix, planes, stride, project):
    """torchvision's Bottleneck (ResNet v1.5: the stride on the 3x3)."""
    block = {
        "type": "residual",
        "layers": [
            conv(planes, 1, f"{prefix}.conv1"),
            bn(f"{prefix}.bn1"),
            RELU,
            conv(planes, 3, f"{prefix}.conv2", stride),
            bn(f"{prefix}.bn2"),
            RELU,
            conv(planes * 4, 1, f"{prefix}.conv3"),
            bn(f"{prefix}.bn3"),
        ],
    }
    if project:
        block["shortcut"] = [
            conv(planes * 4, 1, f"{prefix}.downsample.0", stride),
            bn(f"{prefix}.downsample.1"),
        ]
    block["activation"] = "relu"
    return block


def resnet(name, block, depths, params, gmacs):
    expansion = 4 if block is bottleneck else 1
    layers = [
        conv(64, 7, "conv1", 2, 3),
        bn("bn1"),
        RELU,
        {"type": "max_pool2d", "kernel_size": 3, "stride": 2, "padding": 1},
    ]
    inplanes = 64
    for stage, (planes, depth) in enumerate(zip([64, 128, 256, 512], depths), 1):
        for i in range(depth):
            stride = 2 if stage > 1 and i == 0 else 1
            project = i == 0 and (stride != 1 or inplanes != planes * expansion)
            layers.append(block(f"layer{stage}.{i}", planes, stride, project))
            inplanes = planes * expansion
    layers += [
        {"type": "global_avg_pool2d"},
        {"type": "flatten"},
        {"type": "linear", "out_features": 1000, "torch_name": "fc"},
    ]
    kind = "bottleneck" if block is bottleneck else "basic"
    return {
        "name": name,
        "description": (
            f"torchvision's {name} (He et al. 2016; torchvision.models.{name}): a 7x7 stride-2 stem and "
            f"max pooling, four stages of {'/'.join(map(str, depths))} {kind} residual blocks "
            f"(64, 128, 256, 512 {'bottleneck ' if expansion == 4 else ''}channels; each later stage "
            "halves the size in its first block, with a 1x1 projection shortcut), global average pooling "
            f"and a 1000-class linear layer; {params:,} parameters, {gmacs} GMACs at 224x224. Every layer "
            "with tensors names its torchvision module (torch_name), so cnn import reads torchvision's "
            "and timm's state_dicts into it"
        ),
        "input_shape": [3, 224, 224],
        "num_classes": 1000,
        "data": {"dataset": "imagefolder", "normalize": IMAGENET, "resize": {"shorter_side": 256}},
        "layers": layers,
    }


def configs():
    return {
        "resnet18": resnet("resnet18", basic, [2, 2, 2, 2], 11_689_512, 1.81),
        "resnet50": resnet("resnet50", bottleneck, [3, 4, 6, 3], 25_557_032, 4.09),
    }


def render(config):
    # One layer per line at the top level, blocks with one inner layer per line.
    lines = ["{"]
    items = [(k, v) for k, v in config.items() if k != "layers"]
    for k, v in items:
        lines.append(f"  {json.dumps(k)}: {json.dumps(v)},")
    lines.append('  "layers": [')
    out = []
    for layer in config["layers"]:
        if layer["type"] != "residual":
            out.append("    " + json.dumps(layer))
            continue
        parts = ['    {"type": "residual", "layers": [']
        parts.append(",\n".join("      " + json.dumps(x) for x in layer["layers"]))
        tail = "    ]"
        if "shortcut" in layer:
            tail += ', "shortcut": [\n' + ",\n".join("      " + json.dumps(x) for x in layer["shortcut"]) + "\n    ]"
        tail += f', "activation": {json.dumps(layer["activation"])}}}'
        out.append("\n".join(parts) + "\n" + tail)
    lines.append(",\n".join(out))
    lines.append("  ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == config
    return text


def main():
    check = "--check" in sys.argv[1:]
    ZOO.mkdir(parents=True, exist_ok=True)
    stale = []
    for name, config in configs().items():
        path = ZOO / f"{name}.json"
        text = render(config)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("out of date (run scripts/dev/make_zoo.py): " + ", ".join(stale), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
