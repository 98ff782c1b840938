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
# Photos in folders, evaluated as torchvision evaluates ImageNet, 128 at a
# time (a thousand 224-px images at once would take gigabytes).
DATA = {"dataset": "imagefolder", "normalize": IMAGENET, "resize": {"shorter_side": 256},
        "eval_batch_size": 128}


def named(tv, tm=None):
    """A torch_name: torchvision's module, or one per source where timm's differs."""
    return tv if tm is None else {"torchvision": tv, "timm": tm}


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
        "data": DATA,
        "layers": layers,
    }


def make_divisible(v, divisor=8):
    """torchvision's _make_divisible: the nearest multiple of 8, never 10% below."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def conv_bn_act(out, k, name, act, stride=1, groups=1, eps=None, momentum=None, timm=None):
    """torchvision's Conv2dNormActivation: conv (no bias), batch norm, activation.
    `timm`: timm's names of the conv and the norm, when timm has the family."""
    tm_conv, tm_bn = timm or (None, None)
    norm = bn(named(f"{name}.1", tm_bn))
    if eps is not None:
        norm = {"type": "batch_norm2d", "eps": eps, "momentum": momentum, "torch_name": f"{name}.1"}
    layers = [conv(out, k, named(f"{name}.0", tm_conv), stride, (k - 1) // 2, groups), norm]
    if act is not None:
        layers.append({"type": act})
    return layers


def squeeze_excitation(channels, squeeze, name, act, gate, timm=None):
    """torchvision.ops.SqueezeExcitation: pool, fc1, act, fc2, gate, times the input
    (timm's SqueezeExcite under `timm`: conv_reduce, conv_expand)."""
    return {"type": "gate", "layers": [
        {"type": "adaptive_avg_pool2d", "output_size": 1},
        conv(squeeze, 1, named(f"{name}.fc1", timm and f"{timm}.conv_reduce"), bias=True),
        {"type": act},
        conv(channels, 1, named(f"{name}.fc2", timm and f"{timm}.conv_expand"), bias=True),
        {"type": gate},
    ]}


def inverted(layers, residual, drop=0.0):
    """An inverted residual: the layers alone, or a residual block around them."""
    if not residual:
        return layers
    if drop > 0:
        layers = layers + [{"type": "drop_path", "p": drop}]
    return [{"type": "residual", "layers": layers}]


def imagenet(name, description, layers, timm=None):
    names = (f"its torchvision module and its module in timm's {timm} (torch_name), so cnn import reads "
             "torchvision's and timm's state_dicts into it") if timm else (
             "its torchvision module (torch_name), so cnn import reads torchvision's state_dicts into it")
    return {
        "name": name,
        "description": description + ". Every layer with tensors names " + names,
        "input_shape": [3, 224, 224],
        "num_classes": 1000,
        "data": DATA,
        "layers": layers,
    }


def head(channels, name, timm=None):
    return [
        {"type": "global_avg_pool2d"},
        {"type": "dropout", "p": 0.2},
        {"type": "linear", "out_features": 1000, "torch_name": named(name, timm)},
    ]


def mobilenet_v2():
    layers = conv_bn_act(32, 3, "features.0", "relu6", stride=2, timm=("conv_stem", "bn1"))
    setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
               [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]
    inp, index = 32, 1
    for stage, (t, c, n, s) in enumerate(setting):
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = int(round(inp * t))
            prefix = f"features.{index}.conv"
            tm = f"blocks.{stage}.{i}"
            block, at = [], 0
            if t != 1:
                block += conv_bn_act(hidden, 1, f"{prefix}.0", "relu6", timm=(f"{tm}.conv_pw", f"{tm}.bn1"))
                at = 1
            # timm's first block is depthwise-separable: conv_dw, bn1, conv_pw, bn2.
            dw = (f"{tm}.conv_dw", f"{tm}.bn2" if t != 1 else f"{tm}.bn1")
            project = (f"{tm}.conv_pwl", f"{tm}.bn3") if t != 1 else (f"{tm}.conv_pw", f"{tm}.bn2")
            block += conv_bn_act(hidden, 3, f"{prefix}.{at}", "relu6", stride=stride, groups=hidden, timm=dw)
            block += [conv(c, 1, named(f"{prefix}.{at + 1}", project[0]), padding=0),
                      bn(named(f"{prefix}.{at + 2}", project[1]))]
            layers += inverted(block, stride == 1 and inp == c)
            inp, index = c, index + 1
    layers += conv_bn_act(1280, 1, f"features.{index}", "relu6", timm=("conv_head", "bn2"))
    layers += head(1280, "classifier.1", "classifier")
    return imagenet(
        "mobilenet_v2",
        "torchvision's mobilenet_v2 (Sandler et al. 2018; torchvision.models.mobilenet_v2): a stride-2 "
        "3x3 stem, 17 inverted residual blocks (1x1 expansion, 3x3 depthwise convolution, 1x1 "
        "projection; ReLU6; a residual connection where the shape allows), a 1x1 convolution to 1280 "
        "channels, global average pooling, dropout 0.2 and a 1000-class linear layer; 3,504,872 "
        "parameters, 0.30 GMACs at 224x224",
        layers,
        "mobilenetv2_100",
    )


def mobilenet_v3_large():
    eps, momentum = 0.001, 0.01
    cba = lambda *a, **k: conv_bn_act(*a, eps=eps, momentum=momentum, **k)  # noqa: E731
    layers = cba(16, 3, "features.0", "hardswish", stride=2)
    setting = [
        (16, 3, 16, 16, False, "relu", 1), (16, 3, 64, 24, False, "relu", 2),
        (24, 3, 72, 24, False, "relu", 1), (24, 5, 72, 40, True, "relu", 2),
        (40, 5, 120, 40, True, "relu", 1), (40, 5, 120, 40, True, "relu", 1),
        (40, 3, 240, 80, False, "hardswish", 2), (80, 3, 200, 80, False, "hardswish", 1),
        (80, 3, 184, 80, False, "hardswish", 1), (80, 3, 184, 80, False, "hardswish", 1),
        (80, 3, 480, 112, True, "hardswish", 1), (112, 3, 672, 112, True, "hardswish", 1),
        (112, 5, 672, 160, True, "hardswish", 2), (160, 5, 960, 160, True, "hardswish", 1),
        (160, 5, 960, 160, True, "hardswish", 1),
    ]
    for index, (inp, k, exp, out, se, act, stride) in enumerate(setting, 1):
        prefix = f"features.{index}.block"
        block, at = [], 0
        if exp != inp:
            block += cba(exp, 1, f"{prefix}.0", act)
            at = 1
        block += cba(exp, k, f"{prefix}.{at}", act, stride=stride, groups=exp)
        at += 1
        if se:
            block.append(squeeze_excitation(exp, make_divisible(exp // 4), f"{prefix}.{at}", "relu", "hardsigmoid"))
            at += 1
        block += cba(out, 1, f"{prefix}.{at}", None)
        layers += inverted(block, stride == 1 and inp == out)
    layers += cba(960, 1, f"features.{len(setting) + 1}", "hardswish")
    layers += [
        {"type": "global_avg_pool2d"},
        {"type": "linear", "out_features": 1280, "torch_name": "classifier.0"},
        {"type": "hardswish"},
        {"type": "dropout", "p": 0.2},
        {"type": "linear", "out_features": 1000, "torch_name": "classifier.3"},
    ]
    return imagenet(
        "mobilenet_v3_large",
        "torchvision's mobilenet_v3_large (Howard et al. 2019; torchvision.models.mobilenet_v3_large): "
        "a stride-2 3x3 stem with hard-swish, 15 inverted residual blocks (3x3 or 5x5 depthwise "
        "convolutions, ReLU or hard-swish, squeeze-and-excitation gates with a hard sigmoid in 8 of "
        "them), a 1x1 convolution to 960 channels, global average pooling, a 1280-wide hidden layer "
        "with hard-swish and dropout 0.2, and a 1000-class linear layer; batch norm with eps 0.001 and "
        "momentum 0.01; 5,483,032 parameters, 0.22 GMACs at 224x224",
        layers,
    )


def efficientnet_b0():
    layers = conv_bn_act(32, 3, "features.0", "silu", stride=2, timm=("conv_stem", "bn1"))
    setting = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
               (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]
    total = sum(s[-1] for s in setting)
    block_id = 0
    for stage, (t, k, stride, inp, out, n) in enumerate(setting, 1):
        for i in range(n):
            if i > 0:
                inp, stride = out, 1
            drop = 0.2 * block_id / total
            prefix = f"features.{stage}.{i}.block"
            tm = f"blocks.{stage - 1}.{i}"
            exp = make_divisible(inp * t)
            block, at = [], 0
            if exp != inp:
                block += conv_bn_act(exp, 1, f"{prefix}.0", "silu", timm=(f"{tm}.conv_pw", f"{tm}.bn1"))
                at = 1
            # timm's first stage is depthwise-separable: conv_dw, bn1, se, conv_pw, bn2.
            dw = (f"{tm}.conv_dw", f"{tm}.bn2" if at else f"{tm}.bn1")
            project = (f"{tm}.conv_pwl", f"{tm}.bn3") if at else (f"{tm}.conv_pw", f"{tm}.bn2")
            block += conv_bn_act(exp, k, f"{prefix}.{at}", "silu", stride=stride, groups=exp, timm=dw)
            block.append(squeeze_excitation(exp, max(1, inp // 4), f"{prefix}.{at + 1}", "silu", "sigmoid",
                                            timm=f"{tm}.se"))
            block += conv_bn_act(out, 1, f"{prefix}.{at + 2}", None, timm=project)
            layers += inverted(block, stride == 1 and inp == out, round(drop, 6))
            block_id += 1
    layers += conv_bn_act(1280, 1, "features.8", "silu", timm=("conv_head", "bn2"))
    layers += head(1280, "classifier.1", "classifier")
    return imagenet(
        "efficientnet_b0",
        "torchvision's efficientnet_b0 (Tan and Le 2019; torchvision.models.efficientnet_b0): a stride-2 "
        "3x3 stem with SiLU, 16 MBConv blocks in 7 stages (1x1 expansion by 6, 3x3 or 5x5 depthwise "
        "convolution, squeeze-and-excitation with SiLU and a sigmoid, 1x1 projection; stochastic depth "
        "rising to 0.1875 on the residual ones), a 1x1 convolution to 1280 channels, global average "
        "pooling, dropout 0.2 and a 1000-class linear layer; 5,288,548 parameters, 0.39 GMACs at 224x224",
        layers,
        "efficientnet_b0",
    )


def convnext_tiny():
    ln = lambda tv, tm: {"type": "layer_norm2d", "eps": 1e-6, "torch_name": named(tv, tm)}  # noqa: E731
    layers = [conv(96, 4, named("features.0.0", "stem.0"), 4, 0, bias=True), ln("features.0.1", "stem.1")]
    setting = [(96, 192, 3), (192, 384, 3), (384, 768, 9), (768, None, 3)]
    total = sum(n for _, _, n in setting)
    block_id, index = 0, 1
    for stage, (dim, out, n) in enumerate(setting):
        for i in range(n):
            prefix = f"features.{index}.{i}"
            tm = f"stages.{stage}.blocks.{i}"
            drop = round(0.1 * block_id / (total - 1), 6)
            body = [
                conv(dim, 7, named(f"{prefix}.block.0", f"{tm}.conv_dw"), 1, 3, dim, bias=True),
                ln(f"{prefix}.block.2", f"{tm}.norm"),
                {"type": "channel_linear", "out_features": 4 * dim,
                 "torch_name": named(f"{prefix}.block.3", f"{tm}.mlp.fc1")},
                {"type": "gelu"},
                {"type": "channel_linear", "out_features": dim,
                 "torch_name": named(f"{prefix}.block.5", f"{tm}.mlp.fc2")},
                {"type": "layer_scale", "init": 1e-6, "torch_name": named(f"{prefix}.layer_scale", f"{tm}.gamma")},
            ]
            layers += inverted(body, True, drop)
            block_id += 1
        index += 1
        if out is not None:
            down = f"stages.{stage + 1}.downsample"
            layers += [ln(f"features.{index}.0", f"{down}.0"),
                       conv(out, 2, named(f"features.{index}.1", f"{down}.1"), 2, 0, bias=True)]
            index += 1
    layers += [
        {"type": "adaptive_avg_pool2d", "output_size": 1},
        ln("classifier.0", "head.norm"),
        {"type": "flatten"},
        {"type": "linear", "out_features": 1000, "torch_name": named("classifier.2", "head.fc")},
    ]
    return imagenet(
        "convnext_tiny",
        "torchvision's convnext_tiny (Liu et al. 2022; torchvision.models.convnext_tiny): a 4x4 stride-4 "
        "stem with layer norm, four stages of 3/3/9/3 ConvNeXt blocks (7x7 depthwise convolution, layer "
        "norm over the channels, a 4x wider linear layer along them with GELU and one back, a layer "
        "scale from 1e-6, stochastic depth rising to 0.1) at 96, 192, 384 and 768 channels with a layer "
        "norm and a 2x2 stride-2 convolution between stages, global average pooling, a layer norm and "
        "a 1000-class linear layer; 28,589,128 parameters, 4.46 GMACs at 224x224",
        layers,
        "convnext_tiny",
    )


def configs():
    return {
        "resnet18": resnet("resnet18", basic, [2, 2, 2, 2], 11_689_512, 1.81),
        "resnet50": resnet("resnet50", bottleneck, [3, 4, 6, 3], 25_557_032, 4.09),
        "mobilenet_v2": mobilenet_v2(),
        "mobilenet_v3_large": mobilenet_v3_large(),
        "efficientnet_b0": efficientnet_b0(),
        "convnext_tiny": convnext_tiny(),
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
        if "activation" in layer:
            tail += f', "activation": {json.dumps(layer["activation"])}'
        tail += "}"
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
