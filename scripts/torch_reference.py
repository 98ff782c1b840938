#!/usr/bin/env python3
"""PyTorch reference trainer for cnn's JSON model configs.

This is the reference side of scripts/bench.sh and of the checkpoint interop
check: it builds the same network as `cnn` from the same config file, trains
it on MNIST, Fashion-MNIST or CIFAR-10 with PyTorch on the CPU (or a CUDA GPU,
--device cuda) and reports throughput, accuracy and
memory in the same terms, so that the two can be compared side by side. It
also evaluates safetensors checkpoints written by itself or by `cnn train`.

    scripts/dev/torch-venv.sh    # once: creates .venv-torch
    .venv-torch/bin/python scripts/torch_reference.py train \\
        --config configs/lenet.json --data-dir ../shared/data/mnist --json \\
        --save /tmp/lenet-torch.safetensors
    .venv-torch/bin/python scripts/torch_reference.py eval \\
        --config configs/lenet.json --data-dir ../shared/data/mnist \\
        --checkpoint runs/lenet/best.safetensors --json

How it mirrors cnn:
  * The model is `nn.Sequential` stored as `layers`, one module per config
    entry (parameterless ones included), so state_dict keys are
    `layers.<index>.weight|bias|running_mean|running_var`, exactly the tensor
    names of a cnn checkpoint. Initialisation is PyTorch's default, then a
    conv2d's `init` as cnn's: "dirac" makes filters o < min(out, in) the
    identity (a one at [o, o, kh//2, kw//2]); "patch_whitening" (first
    layer only) sets the filters from `images` training images (drawn
    with the seed, another RNG than cnn's, and normalised as the network
    input): the eigenvectors of the uncentred covariance (float64) of all
    kernel-sized patches (stride 1, no padding), largest eigenvalue first,
    each made to have its largest component positive and divided by
    sqrt(eigenvalue + eps), then the same negated; the bias keeps PyTorch's
    draw (src/model/whiten.rs). A linear layer's weight is multiplied by
    its `init_scale`.
  * in_channels / in_features / num_features are inferred from the input
    shape; when a config states them they must match.
  * A trailing softmax / log_softmax is left out of the loss: the loss is
    cross-entropy (with the config's label_smoothing) on the output of the
    layer before it. Evaluation loss is plain cross-entropy, averaged per image.
  * The validation split (data.val_size images, a count or a fraction) is
    drawn from the training file with the seed; data.limit_train keeps the
    first N of the rest. The split itself differs from cnn's (another RNG),
    so the images trained on differ, but not how many.
  * Inputs are (pixel/255 - mean)/std, mean and std taken over the training
    split (data.normalize "auto"), or as data.normalize gives them, via a
    256-entry lookup table applied per batch, as cnn does.
  * Average pooling counts padding (count_include_pad=True); gelu is the
    exact (erf) form; padding "same" puts the odd extra pixel at the bottom
    and right.
  * data.dataset picks the files: MNIST/Fashion-MNIST IDX files, or
    CIFAR-10's binary batches (validation split 5,000 by default, as in cnn).
  * data.augment's random crop (padding, fill) and horizontal flip are
    applied to the uint8 images of each training batch before normalisation,
    as cnn does (other transforms are refused): the crop pads with `fill`
    or (padding_mode "reflect") the mirrored border; horizontal_flip is a
    probability, or "alternate": each image gets one random start (from
    the seed, another RNG than cnn's) and is mirrored in the epochs where
    start XOR (1-based epoch is even), as src/data/augment.rs.
    training.lr_schedule's warmup and constant/step/multistep/exponential/
    cosine/one-cycle schedules (one-cycle's anneal_strategy "cos" or
    "linear") set the rate of every step by cnn's formula (src/schedule.rs).
  * training.freeze ("<layer path>" or "<layer path>.<tensor>", as cnn's
    paths: `3`, `5.layers.0`, `0.weight`) sets requires_grad False on those
    parameters, until training.unfreeze_after epochs if given.
    training.param_groups put each parameter in the first group whose
    given selectors (layers: the layer or a block holding it; kinds: the
    config type of the layer owning it; tensors: its name) all match: its
    rate is the scheduled rate × lr_scale at every step, its weight decay
    the group's (else the optimizer's; coupled L2 for sgd/adam, decoupled
    for adamw, as cnn and torch.optim both do). A fixed-scale batch norm's
    weight is no parameter for these (cnn keeps it as a buffer).
  * training.ema keeps an average of every parameter and batch-norm
    running statistic (src/train/ema.rs): after optimizer step s
    (1-based) with s % every == 0, average = d·average + (1−d)·weights,
    d = min(decay, (1+u)/(10+u)) with warmup (default), u = s/every − 1;
    frozen parameters are left alone. The test pass and --save use it.
  * data.tta averages the test logits as src/train/eval.rs `logits`: the
    image and its mirror (flip); with translate t, half and half with the
    mean of the views shifted up-left and down-right by t (reflected
    border), each mirrored too with flip. `eval` applies the config's tta.
  * Fields of training and data that change the training and that this
    reference does not implement (mixup, class_weights, grad_clip,
    init_from, early_stopping, a balanced sampler, affine augmentation)
    are refused rather than ignored.

Speed: on the CPU a network with convolutions runs in PyTorch's
channels_last memory format (the parameters and every input batch, NHWC in
memory), PyTorch's faster layout for CPU convolutions; --no-channels-last
turns it off. On CUDA the default (contiguous) format is kept.

Timing: each epoch's clock covers only the training steps (batch assembly,
forward, backward, optimizer step and EMA update), not data loading, patch
whitening or evaluation; the test pass (no_grad, batches of
data.eval_batch_size, default 1000, with data.tta's views) is timed
separately. No validation pass is run. (scripts/time-to-accuracy.sh times
the whole process from outside.)

Standard library + numpy + torch + safetensors only. Input errors (bad
config, missing or malformed files) exit with status 2 and a message naming
the problem; other failures exit with status 1.
"""

import argparse
import contextlib
import copy
import gzip
import json
import math
import os
import resource
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn


class InputError(Exception):
    """A problem the user can fix: bad config, flag or file."""


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------

LAYER_ALIASES = {
    "maxpool2d": "max_pool2d",
    "max_pool": "max_pool2d",
    "avgpool2d": "avg_pool2d",
    "avg_pool": "avg_pool2d",
    "batchnorm2d": "batch_norm2d",
    "batchnorm1d": "batch_norm1d",
    "dense": "linear",
    "hard_sigmoid": "hardsigmoid",
    "hard_swish": "hardswish",
    "swish": "silu",
    "stochastic_depth": "drop_path",
}

# Accepted fields per layer type (besides "type"); mirrors src/layers/ (a test
# checks that the two agree).
LAYER_FIELDS = {
    "conv2d": {"in_channels", "out_channels", "kernel_size", "stride", "padding",
               "dilation", "groups", "bias", "padding_mode", "init"},
    "max_pool2d": {"kernel_size", "stride", "padding"},
    "avg_pool2d": {"kernel_size", "stride", "padding"},
    "batch_norm2d": {"num_features", "eps", "momentum", "affine", "fixed_scale"},
    "batch_norm1d": {"num_features", "eps", "momentum", "affine", "fixed_scale"},
    "relu": set(),
    "leaky_relu": {"negative_slope"},
    "sigmoid": set(),
    "tanh": set(),
    "gelu": set(),
    "relu6": set(),
    "hardsigmoid": set(),
    "hardswish": set(),
    "silu": set(),
    "layer_norm2d": {"eps"},
    "channel_linear": {"out_features", "bias"},
    "layer_scale": {"init"},
    "flatten": set(),
    "linear": {"in_features", "out_features", "bias", "init_scale"},
    "dropout": {"p"},
    "drop_path": {"p"},
    "log_softmax": set(),
    "softmax": set(),
    "global_avg_pool2d": set(),
    "global_max_pool2d": set(),
    "adaptive_avg_pool2d": {"output_size"},
    "residual": {"layers", "shortcut", "activation"},
    "concat": {"branches"},
    "gate": {"layers"},
}

# Fields cnn takes but writes into a resolved config only when they differ
# from their default (so LAYER_FIELDS, which a test compares with cnn's
# resolved examples, leaves them out).
HIDDEN_FIELDS = {}

BLOCKS = ("residual", "concat", "gate")

OUTPUT_ACTIVATIONS = ("softmax", "log_softmax")


def same_layers(given, stored):
    """Whether a config file's layers are those a checkpoint stores. The stored
    config is resolved (every default written out), so only the fields the file
    states are compared; a size written `5` equals `[5, 5]`."""
    def norm(v):
        return v[0] if isinstance(v, list) and len(v) == 2 and v[0] == v[1] else v

    def same(g, s):
        # A block's layer lists (and a concat's list of lists) compare layer
        # by layer, the same way.
        if isinstance(g, list) and g and all(isinstance(x, (dict, list)) for x in g):
            return isinstance(s, list) and len(g) == len(s) and all(same(a, b) for a, b in zip(g, s))
        if isinstance(g, dict):
            return isinstance(s, dict) and all(same(v, s.get(k)) for k, v in g.items())
        return norm(g) == norm(s)
    if not isinstance(given, list) or not isinstance(stored, list) or len(given) != len(stored):
        return False
    return same(given, stored)


def load_config_file(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise InputError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise InputError(f"config {path}: the top level must be a JSON object")
    if not config.get("name"):
        config["name"] = os.path.splitext(os.path.basename(path))[0]
    return config


def section(config, key):
    """A sub-object of the config; missing or null means all defaults."""
    value = config.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"config field `{key}` must be an object")
    return value


def opt(d, key, default):
    """d[key], or the default when the key is absent or null (cnn writes
    resolved configs with nulls for unset options)."""
    value = d.get(key)
    return default if value is None else value


def pair(value, what):
    """5 -> (5, 5); [3, 5] -> (3, 5)."""
    if isinstance(value, bool):
        raise InputError(f"{what}: expected a non-negative integer or [height, width], got {value!r}")
    if isinstance(value, int) and value >= 0:
        return (value, value)
    if (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)):
        return (value[0], value[1])
    raise InputError(f"{what}: expected a non-negative integer or [height, width], got {json.dumps(value)}")


def positive_pair(value, what):
    p = pair(value, what)
    if min(p) < 1:
        raise InputError(f"{what} is {json.dumps(value)}; it must be at least 1")
    return p


def number(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{what}: expected a number, got {json.dumps(value)}")
    return float(value)


def boolean(value, what):
    if not isinstance(value, bool):
        raise InputError(f"{what}: expected true or false, got {json.dumps(value)}")
    return value


def layer_kind(index, spec):
    if not isinstance(spec, dict):
        raise InputError(f'layer {index}: expected an object like {{"type": "relu"}}, got {json.dumps(spec)}')
    kind = spec.get("type")
    if kind is None:
        raise InputError(f'layer {index}: missing "type"; expected one of: {", ".join(LAYER_FIELDS)}')
    if not isinstance(kind, str):
        raise InputError(f'layer {index}: "type" must be a string, got {json.dumps(kind)}')
    kind = LAYER_ALIASES.get(kind, kind)
    if kind not in LAYER_FIELDS:
        raise InputError(f'layer {index}: unknown layer type "{spec["type"]}"; '
                         f'expected one of: {", ".join(LAYER_FIELDS)}')
    fields = LAYER_FIELDS[kind] | HIDDEN_FIELDS.get(kind, set())
    unknown = sorted(set(spec) - fields - {"type", "trainable", "torch_name"})
    if unknown:
        allowed = ", ".join(sorted(fields)) or "none"
        raise InputError(f"layer {index} ({kind}): unknown field `{unknown[0]}`; allowed fields: {allowed}")
    return kind


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------

def build_layer(index, kind, spec, shape):
    """One module for one config entry, given the input shape (without the
    batch dimension): (c, h, w) for images, (n,) for feature vectors. A layer
    with "trainable": false, and a batch norm's fixed scale, get
    requires_grad False. The module keeps its config type as `cnn_kind`
    (param_groups' kinds), a fixed-scale batch norm `fixed_scale` True (its
    weight is a buffer in cnn, no parameter), a patch-whitening conv2d its
    (eps, images) as `whitening` (set from the data by whiten())."""
    module = build_one(index, kind, spec, shape)
    where = f"layer {index} ({kind})" if isinstance(index, int) else f"{index} ({kind})"
    if not boolean(opt(spec, "trainable", True), f"{where}: trainable"):
        module.requires_grad_(False)
    if kind.startswith("batch_norm") and boolean(opt(spec, "fixed_scale", False), f"{where}: fixed_scale"):
        if module.weight is not None:
            module.weight.requires_grad_(False)
            module.fixed_scale = True
    module.cnn_kind = kind
    return module


def build_one(index, kind, spec, shape):
    where = f"layer {index} ({kind})" if isinstance(index, int) else f"{index} ({kind})"
    image = len(shape) == 3

    def need_image():
        if not image:
            raise InputError(f"{where}: needs an image input but gets {shape[0]} features; "
                             "put it before flatten")

    def need_flat(hint):
        if image:
            c, h, w = shape
            raise InputError(f"{where}: needs a feature vector but gets an image of "
                             f"{c}×{h}×{w} = {c * h * w} values; {hint}")

    def check_given(field, actual):
        given = spec.get(field)
        if given is not None and given != actual:
            raise InputError(f"{where}: {field} is {given} but the input has {actual}; "
                             f"remove {field} or set it to {actual}")

    if kind == "conv2d":
        need_image()
        c = shape[0]
        check_given("in_channels", c)
        if "out_channels" not in spec or spec["out_channels"] is None:
            raise InputError(f"{where}: missing field `out_channels`")
        out = spec["out_channels"]
        if isinstance(out, bool) or not isinstance(out, int) or out < 1:
            raise InputError(f"{where}: out_channels must be a positive integer, got {json.dumps(out)}")
        if "kernel_size" not in spec or spec["kernel_size"] is None:
            raise InputError(f"{where}: missing field `kernel_size`")
        kernel = positive_pair(spec["kernel_size"], f"{where}: kernel_size")
        stride = positive_pair(opt(spec, "stride", 1), f"{where}: stride")
        dilation = positive_pair(opt(spec, "dilation", 1), f"{where}: dilation")
        groups = opt(spec, "groups", 1)
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 \
                or c % groups or out % groups:
            raise InputError(f"{where}: groups is {json.dumps(groups)}; it must divide both "
                             f"in_channels ({c}) and out_channels ({out})")
        padding = opt(spec, "padding", 0)
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            if stride != (1, 1):
                raise InputError(f'{where}: padding "same" needs stride 1 (stride is {list(stride)}); '
                                 "give the padding as a number")
        else:
            if isinstance(padding, str):
                raise InputError(f'{where}: padding must be a number, [h, w], "same" or "valid", '
                                 f'got "{padding}"')
            padding = pair(padding, f"{where}: padding")
        mode = opt(spec, "padding_mode", "zeros")
        if mode not in ("zeros", "reflect", "replicate", "circular"):
            raise InputError(f'{where}: padding_mode "{mode}" is not one of zeros, reflect, replicate, circular')
        bias = boolean(opt(spec, "bias", True), f"{where}: bias")
        init, whitening = conv_init(index, where, spec, c, out, kernel, dilation, groups)
        conv = nn.Conv2d(c, out, kernel, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, bias=bias, padding_mode=mode)
        if init == "dirac":
            # torch.nn.init.dirac_ on the first min(out, in) filters only.
            with torch.no_grad():
                kh, kw = kernel
                for o in range(min(out, c)):
                    conv.weight[o].zero_()
                    conv.weight[o, o, kh // 2, kw // 2] = 1.0
        if whitening is not None:
            conv.whitening = whitening
        return conv

    if kind in ("max_pool2d", "avg_pool2d"):
        need_image()
        if "kernel_size" not in spec or spec["kernel_size"] is None:
            raise InputError(f"{where}: missing field `kernel_size`")
        kernel = positive_pair(spec["kernel_size"], f"{where}: kernel_size")
        stride = positive_pair(opt(spec, "stride", list(kernel)), f"{where}: stride")
        padding = pair(opt(spec, "padding", 0), f"{where}: padding")
        if padding[0] * 2 > kernel[0] or padding[1] * 2 > kernel[1]:
            raise InputError(f"{where}: padding {list(padding)} is more than half the kernel size {list(kernel)}")
        if kind == "max_pool2d":
            return nn.MaxPool2d(kernel, stride=stride, padding=padding)
        return nn.AvgPool2d(kernel, stride=stride, padding=padding, count_include_pad=True)

    if kind in ("batch_norm2d", "batch_norm1d"):
        if kind == "batch_norm2d":
            need_image()
        else:
            need_flat("use batch_norm2d before flatten")
        features = shape[0]
        check_given("num_features", features)
        eps = number(opt(spec, "eps", 1e-5), f"{where}: eps")
        momentum = number(opt(spec, "momentum", 0.1), f"{where}: momentum")
        if not (eps > 0 and math.isfinite(eps)):
            raise InputError(f"{where}: eps is {eps}; it must be a small positive number like 1e-5")
        if not 0 <= momentum <= 1:
            raise InputError(f"{where}: momentum is {momentum}; it must be between 0 and 1")
        affine = boolean(opt(spec, "affine", True), f"{where}: affine")
        cls = nn.BatchNorm2d if kind == "batch_norm2d" else nn.BatchNorm1d
        return cls(features, eps=eps, momentum=momentum, affine=affine)

    if kind == "linear":
        need_flat('add {"type": "flatten"} before it')
        n = shape[0]
        check_given("in_features", n)
        out = spec.get("out_features")
        if isinstance(out, bool) or not isinstance(out, int) or out < 1:
            raise InputError(f"{where}: out_features must be a positive integer, got {json.dumps(out)}")
        bias = boolean(opt(spec, "bias", True), f"{where}: bias")
        scale = number(opt(spec, "init_scale", 1.0), f"{where}: init_scale")
        if not (scale > 0 and math.isfinite(scale)):
            raise InputError(f"{where}: init_scale is {scale}; it must be a positive number such as "
                             "0.111 (1 leaves PyTorch's init)")
        linear = nn.Linear(n, out, bias=bias)
        if scale != 1.0:
            with torch.no_grad():
                linear.weight.mul_(scale)
        return linear

    if kind == "dropout":
        p = number(opt(spec, "p", 0.5), f"{where}: p")
        if not 0 <= p < 1:
            raise InputError(f"{where}: p is {p}; the drop probability must be in [0, 1)")
        return nn.Dropout(p)

    if kind in OUTPUT_ACTIVATIONS:
        need_flat("put it after the last linear layer")
        return nn.Softmax(dim=1) if kind == "softmax" else nn.LogSoftmax(dim=1)

    if kind == "leaky_relu":
        return nn.LeakyReLU(number(opt(spec, "negative_slope", 0.01), f"{where}: negative_slope"))
    if kind == "flatten":
        return nn.Flatten()
    if kind in ("global_avg_pool2d", "global_max_pool2d"):
        need_image()
        pool = nn.AdaptiveAvgPool2d(1) if kind == "global_avg_pool2d" else nn.AdaptiveMaxPool2d(1)
        return nn.Sequential(pool, nn.Flatten())
    if kind == "adaptive_avg_pool2d":
        need_image()
        return nn.AdaptiveAvgPool2d(positive_pair(spec.get("output_size"), f"{where}: output_size"))
    if kind == "residual":
        body, out = build_sequence(spec.get("layers") or [], shape, f"{where} → layers")
        shortcut = None
        if spec.get("shortcut") is not None:
            shortcut, skip = build_sequence(spec["shortcut"], shape, f"{where} → shortcut")
        else:
            skip = shape
        if out != skip:
            raise InputError(f"{where}: the block's layers output {list(out)} but its shortcut {list(skip)}")
        act = spec.get("activation")
        return Residual(body, shortcut, build_layer(index, act, {"type": act}, out) if act else None)
    if kind == "concat":
        branches = [build_sequence(b, shape, f"{where} → branches.{i}")[0]
                    for i, b in enumerate(spec.get("branches") or [])]
        return Concat(branches)
    if kind == "gate":
        need_image()
        body, _ = build_sequence(spec.get("layers") or [], shape, f"{where} → layers")
        return Gate(body)
    if kind == "layer_norm2d":
        need_image()
        eps = number(opt(spec, "eps", 1e-6), f"{where}: eps")
        return LayerNorm2d(shape[0], eps)
    if kind == "channel_linear":
        need_image()
        out = spec.get("out_features")
        if isinstance(out, bool) or not isinstance(out, int) or out < 1:
            raise InputError(f"{where}: out_features must be a positive integer, got {json.dumps(out)}")
        return ChannelLinear(shape[0], out, boolean(opt(spec, "bias", True), f"{where}: bias"))
    if kind == "layer_scale":
        need_image()
        return LayerScale(shape[0], number(opt(spec, "init", 1e-6), f"{where}: init"))
    if kind == "drop_path":
        p = number(opt(spec, "p", 0.0), f"{where}: p")
        if not 0 <= p < 1:
            raise InputError(f"{where}: p is {p}; the drop probability must be in [0, 1)")
        return StochasticDepth(p)
    return {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
            "gelu": nn.GELU, "relu6": nn.ReLU6, "hardsigmoid": nn.Hardsigmoid,
            "hardswish": nn.Hardswish, "silu": nn.SiLU}[kind]()



def conv_init(index, where, spec, c, out, kernel, dilation, groups):
    """A conv2d's `init` (src/layers/conv.rs ConvInit): ("default" | "dirac" |
    "patch_whitening", (eps, images) for patch whitening else None)."""
    init = spec.get("init")
    if init is None:
        return "default", None
    kinds = {"default": set(), "dirac": set(), "patch_whitening": {"eps", "images"}}
    if not isinstance(init, dict) or not isinstance(init.get("type"), str):
        raise InputError(f'{where}: init must be an object with a "type" ({", ".join(kinds)}), '
                         f'e.g. {{"type": "dirac"}}; got {json.dumps(init)}')
    kind = init["type"]
    if kind not in kinds:
        raise InputError(f'{where}: init.type "{kind}" is not one of {", ".join(kinds)}')
    unknown = sorted(set(init) - kinds[kind] - {"type"})
    if unknown:
        allowed = ", ".join(sorted(kinds[kind])) or "none"
        raise InputError(f"{where}: unknown field init.{unknown[0]} for init {kind}; allowed fields: {allowed}")
    if kind == "dirac" and groups != 1:
        raise InputError(f"{where}: init dirac needs groups 1 (it has {groups}); remove groups or the init")
    if kind != "patch_whitening":
        return kind, None
    if index != 0:
        raise InputError(f"{where}: init patch_whitening computes the filters from the input images, so it is "
                         "only for the first layer of the network; move the layer first or remove init")
    if groups != 1 or dilation != (1, 1):
        raise InputError(f"{where}: init patch_whitening needs groups 1 and dilation 1; remove them or the init")
    size = c * kernel[0] * kernel[1]
    if out % 2 or out > 2 * size:
        raise InputError(f"{where}: init patch_whitening makes filters in pairs (each eigenvector of the "
                         f"{size}-value patches and its negation), so out_channels must be even and at most "
                         f"{2 * size}; it is {out}")
    eps = number(opt(init, "eps", 5e-4), f"{where}: init.eps")
    if not (eps > 0 and math.isfinite(eps)):
        raise InputError(f"{where}: init.eps is {eps}; it must be a small positive number like 5e-4")
    images = opt(init, "images", 5000)
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise InputError(f"{where}: init.images is {json.dumps(images)}; use a positive number of "
                         "training images, such as 5000")
    return kind, (eps, images)


def whiten(model, train_x, train_y, mean, std, seed):
    """Sets the weight of every patch-whitening conv2d from the training
    images, as src/model/whiten.rs; returns a note per layer."""
    notes = []
    for path, module in model.named_modules():
        if getattr(module, "whitening", None) is None:
            continue
        eps, images = module.whitening
        n = min(images, len(train_y))
        if n == 0:
            raise InputError(f"{path}: init patch_whitening needs training images, and the training split is empty")
        picked = np.sort(np.random.default_rng(seed + 3).choice(len(train_y), n, replace=False))
        batcher = Batcher(mean, std)  # on the CPU, as the network's input
        kh, kw = module.kernel_size
        d = module.in_channels * kh * kw
        cov = torch.zeros(d, d, dtype=torch.float64)
        count = 0
        for lo in range(0, n, 250):
            x, _ = batcher(train_x, train_y, picked[lo: lo + 250])
            # Every kh×kw patch (stride 1, no padding) as a row of d values,
            # channel-major then row then column, as cnn orders them.
            p = F.unfold(x.double(), (kh, kw)).transpose(1, 2).reshape(-1, d)
            cov += p.T @ p
            count += p.shape[0]
        cov /= count
        values, vectors = torch.linalg.eigh(cov)
        values, vectors = values.flip(0).numpy(), vectors.flip(1).numpy()
        half = module.out_channels // 2
        rows = []
        for k in range(half):
            v = vectors[:, k]
            if v[np.argmax(np.abs(v))] < 0:  # one sign: the largest component positive
                v = -v
            rows.append(v / math.sqrt(max(values[k], 0.0) + eps))
        w = np.concatenate([np.stack(rows), -np.stack(rows)])
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(w).to(torch.float32).view_as(module.weight))
        notes.append(f"{path}: patch whitening from {n} training images ({count} patches of {d} values); "
                     f"eigenvalues {values[0]:.3e} to {values[half - 1]:.3e}")
    return notes


class Residual(nn.Module):
    """cnn's residual block: `layers(x) + shortcut(x)` (the identity when no
    shortcut is given), then the activation; tensors `layers.<i>.*` and
    `shortcut.<i>.*`, as in cnn's checkpoints."""

    def __init__(self, layers, shortcut, activation):
        super().__init__()
        self.layers = layers
        if shortcut is not None:
            self.shortcut = shortcut
        else:
            self.shortcut = None
        self.activation = activation

    def forward(self, x):
        y = self.layers(x) + (self.shortcut(x) if self.shortcut is not None else x)
        return self.activation(y) if self.activation is not None else y


class LayerNorm2d(nn.Module):
    """cnn's layer_norm2d: layer norm over each position's channels (as
    torchvision's LayerNorm2d); tensors `weight`, `bias`."""

    def __init__(self, channels, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = nn.functional.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ChannelLinear(nn.Module):
    """cnn's channel_linear: a linear layer along each position's channels
    (nn.Linear on channels-last data); tensors `weight` [out, in], `bias`."""

    def __init__(self, inputs, outputs, bias):
        super().__init__()
        # nn.Linear's initialisation, then its tensors as this module's own.
        linear = nn.Linear(inputs, outputs, bias=bias)
        self.weight = nn.Parameter(linear.weight.detach().clone())
        self.bias = nn.Parameter(linear.bias.detach().clone()) if bias else None

    def forward(self, x):
        y = nn.functional.linear(x.permute(0, 2, 3, 1), self.weight, self.bias)
        return y.permute(0, 3, 1, 2)


class LayerScale(nn.Module):
    """cnn's layer_scale: each channel times a learned factor (`weight`,
    [C, 1, 1]), as ConvNeXt's layer_scale parameter."""

    def __init__(self, channels, init):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels, 1, 1), float(init)))

    def forward(self, x):
        return x * self.weight


class StochasticDepth(nn.Module):
    """cnn's drop_path: in training, each example's input is zeroed with
    probability p and the rest scaled by 1/(1 - p) (torchvision.ops'
    StochasticDepth(p, "row"), timm's DropPath); the identity in eval."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = 1 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep


class Gate(nn.Module):
    """cnn's gate block: the input times `layers(x)` (broadcast), as
    torchvision's SqueezeExcitation; tensors `layers.<i>.*`."""

    def __init__(self, layers):
        super().__init__()
        self.layers = layers

    def forward(self, x):
        return x * self.layers(x)


class Concat(nn.Module):
    """cnn's concat block: the branches side by side on the same input,
    joined along the channels; tensors `branches.<b>.<i>.*`."""

    def __init__(self, branches):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        return torch.cat([b(x) for b in self.branches], dim=1)


def build_sequence(specs, shape, where):
    """An nn.Sequential of a list of config entries fed `shape`, and its
    output shape; `where` names the list in messages."""
    if not isinstance(specs, list):
        raise InputError(f"{where}: expected a list of layer objects")
    modules = []
    x = torch.zeros(1, *shape)
    for i, spec in enumerate(specs):
        kind = layer_kind(i, spec)
        module = build_layer(f"{where}.{i}", kind, spec, tuple(x.shape[1:]))
        module.eval()
        try:
            with torch.no_grad():
                x = module(x)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise InputError(f"{where}.{i} ({kind}) does not fit its input of shape "
                             f"{list(x.shape[1:])}: {first}") from None
        modules.append(module)
    return nn.Sequential(*modules), tuple(x.shape[1:])


class ConfigNet(nn.Module):
    """The network of a cnn config: `self.layers[i]` is config layer i."""

    def __init__(self, config):
        super().__init__()
        input_shape = config.get("input_shape")
        if (not isinstance(input_shape, list) or len(input_shape) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input_shape)):
            raise InputError(f"config field `input_shape` must be [channels, height, width], "
                             f"got {json.dumps(input_shape)}")
        num_classes = config.get("num_classes")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise InputError(f"config field `num_classes` must be a positive integer, got {json.dumps(num_classes)}")
        specs = config.get("layers")
        if not isinstance(specs, list) or not specs:
            raise InputError("config field `layers` must be a non-empty list of layer objects")

        modules, kinds = [], []
        x = torch.zeros(1, *input_shape)
        for i, spec in enumerate(specs):
            kind = layer_kind(i, spec)
            module = build_layer(i, kind, spec, tuple(x.shape[1:]))
            module.eval()
            try:
                with torch.no_grad():
                    x = module(x)
            except RuntimeError as e:
                first = str(e).strip().splitlines()[0]
                raise InputError(f"layer {i} ({kind}) does not fit its input of shape "
                                 f"{list(x.shape[1:])}: {first}") from None
            if x.numel() == 0:
                raise InputError(f"layer {i} ({kind}) leaves an empty output {list(x.shape[1:])}; "
                                 "use smaller kernels or less pooling")
            modules.append(module)
            kinds.append(kind)
        if tuple(x.shape[1:]) != (num_classes,):
            raise InputError(f"the last layer outputs {list(x.shape[1:])} but num_classes is {num_classes}; "
                             f'end with {{"type": "linear", "out_features": {num_classes}}}')
        self.layers = nn.Sequential(*modules)
        self.kinds = kinds
        # The loss is taken before a trailing softmax / log_softmax.
        self.loss_end = len(modules) - 1 if kinds[-1] in OUTPUT_ACTIVATIONS else len(modules)

    def logits(self, x):
        for module in self.layers[: self.loss_end]:
            x = module(x)
        return x

    def forward(self, x):
        return self.layers(x)


def make_optimizer(params, training, lr_override):
    """torch.optim's optimizer for training.optimizer; `params` may be a
    list of param-group dicts (extra keys such as lr_scale are kept)."""
    o = section(training, "optimizer")
    kind = opt(o, "type", "adam")
    lr = lr_override if lr_override is not None else number(opt(o, "lr", 1e-3), "training.optimizer.lr")
    wd = number(opt(o, "weight_decay", 0.0), "training.optimizer.weight_decay")
    if kind in ("adam", "adamw"):
        for key in ("momentum", "nesterov", "dampening"):
            if o.get(key) is not None:
                raise InputError(f"training.optimizer.{key} applies to sgd, not {kind}; remove it")
        betas = tuple(opt(o, "betas", [0.9, 0.999]))
        eps = number(opt(o, "eps", 1e-8), "training.optimizer.eps")
        if kind == "adam":
            return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=wd)
        wd = number(opt(o, "weight_decay", 0.01), "training.optimizer.weight_decay")
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=wd)
    if kind == "sgd":
        for key in ("betas", "eps"):
            if o.get(key) is not None:
                raise InputError(f"training.optimizer.{key} applies to adam/adamw, not sgd; remove it")
        try:
            return torch.optim.SGD(params, lr=lr, weight_decay=wd,
                                   momentum=number(opt(o, "momentum", 0.0), "training.optimizer.momentum"),
                                   dampening=number(opt(o, "dampening", 0.0), "training.optimizer.dampening"),
                                   nesterov=boolean(opt(o, "nesterov", False), "training.optimizer.nesterov"))
        except ValueError as e:
            raise InputError(f"training.optimizer: {e}") from None
    raise InputError(f'training.optimizer.type "{kind}" is not one of adam, adamw, sgd')


# Fields of `training` that change how the network is trained and that this
# reference does not implement: refused, not ignored (data.augment's affine
# is refused by Augmenter, a balanced data.sampler below).
UNIMPLEMENTED = ("class_weights", "mixup", "grad_clip", "init_from", "early_stopping")


def check_unimplemented(training, data):
    for key in UNIMPLEMENTED:
        if training.get(key) is not None:
            raise InputError(f"training.{key} is not implemented by this reference; remove it to compare")
    if opt(data, "sampler", "uniform") != "uniform":
        raise InputError(f'data.sampler "{data["sampler"]}" is not implemented by this reference '
                         '(only "uniform"); remove it to compare')


def cnn_params(model):
    """[(name, parameter, layer path, layer kind, tensor name)] of the
    parameters cnn has (a fixed-scale batch norm's weight is a buffer
    there), names as in the state_dict: `layers.<path>.<tensor>`."""
    modules = dict(model.named_modules())
    out = []
    for name, param in model.named_parameters():
        path, tensor = name.rsplit(".", 1)
        owner = modules[path]
        if tensor == "weight" and getattr(owner, "fixed_scale", False):
            continue
        out.append((name, param, path, getattr(owner, "cnn_kind", None), tensor))
    return out


def find_layer(model, entry):
    """The module path (`layers.5.layers.0`) of a config layer path (`5.layers.0`
    or `layers.5.layers.0`), or None when it names no layer."""
    full = entry if entry.startswith("layers.") else f"layers.{entry}"
    module = dict(model.named_modules()).get(full)
    return full if module is not None and hasattr(module, "cnn_kind") else None


def string_list(value, what, example):
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{what} must be a list of strings, e.g. {example}; got {json.dumps(value)}")
    return value


def freeze_names(model, training):
    """The parameter names training.freeze lists (src/train/mod.rs freeze_list)."""
    entries = string_list(opt(training, "freeze", []), "training.freeze", '["0.weight", "3"]')
    params = cnn_params(model)
    names = []
    for i, entry in enumerate(entries):
        layer = find_layer(model, entry)
        if layer is not None:
            found = [n for n, _, path, _, _ in params if path == layer or path.startswith(layer + ".")]
            if not found:
                raise InputError(f'training.freeze.{i} is "{entry}", a layer without parameters; list layers '
                                 "with weights (conv2d, linear, batch norm) or remove it")
        else:
            head, _, tensor = entry.rpartition(".")
            layer = find_layer(model, head) if head else None
            found = [n for n, _, path, _, t in params if layer is not None and path == layer and t == tensor]
            if not found:
                raise InputError(f'training.freeze.{i} is "{entry}", which names no layer or parameter of the '
                                 f"network; its layers are 0 to {len(model.layers) - 1} (inside a block, a path "
                                 "such as 5.layers.0; one tensor as 0.weight)")
        names += [n for n in found if n not in names]
    after = training.get("unfreeze_after")
    if after is not None:
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise InputError(f"training.unfreeze_after must be a number of epochs, got {json.dumps(after)}")
        if not names:
            raise InputError("training.unfreeze_after is set but training.freeze is empty; list the layers to "
                             'freeze until then (e.g. ["0", "2"]), or remove unfreeze_after')
    return names


def set_frozen(model, names, frozen, fixed):
    """requires_grad False on the parameters `names` (frozen), else back to
    True but for those in `fixed` (of a layer with "trainable": false)."""
    params = dict(model.named_parameters())
    for name in names:
        params[name].requires_grad_(not frozen and name not in fixed)


def param_groups(model, training):
    """torch param groups for training.param_groups (src/optim.rs
    assign_groups): each parameter in the first group whose given
    selectors all match, the rest in a last group of the optimizer's own
    settings. Each dict has "lr_scale"; "weight_decay" when the group
    gives one."""
    groups = opt(training, "param_groups", [])
    if not isinstance(groups, list):
        raise InputError("training.param_groups must be a list of objects like "
                         '{"kinds": ["batch_norm2d"], "tensors": ["bias"], "weight_decay": 0}')
    params = cnn_params(model)
    chosen = {}
    for i, g in enumerate(groups):
        field = f"training.param_groups.{i}"
        if not isinstance(g, dict):
            raise InputError(f"{field} must be an object, got {json.dumps(g)}")
        unknown = sorted(set(g) - {"layers", "kinds", "tensors", "lr_scale", "weight_decay"})
        if unknown:
            raise InputError(f"{field}: unknown field `{unknown[0]}`; allowed fields: "
                             "layers, kinds, tensors, lr_scale, weight_decay")
        selectors = {k: g.get(k) for k in ("layers", "kinds", "tensors")}
        if all(v is None for v in selectors.values()):
            raise InputError(f'{field} selects nothing: give "layers", "kinds" or "tensors", e.g. '
                             '{"kinds": ["batch_norm2d"], "tensors": ["bias"], "weight_decay": 0}')
        for k, v in selectors.items():
            if v is not None:
                string_list(v, f"{field}.{k}", '["bias"]')
                if not v:
                    raise InputError(f"{field}.{k} is empty; list at least one or leave it out")
        lr_scale = number(opt(g, "lr_scale", 1.0), f"{field}.lr_scale")
        if not (lr_scale > 0 and math.isfinite(lr_scale)):
            raise InputError(f"{field}.lr_scale is {lr_scale}; it must be a positive number (1 keeps the rate; "
                             "to keep parameters still, freeze them with training.freeze)")
        wd = g.get("weight_decay")
        if wd is not None:
            wd = number(wd, f"{field}.weight_decay")
            if not (wd >= 0 and math.isfinite(wd)):
                raise InputError(f"{field}.weight_decay is {wd}; it must be 0 or positive")
        layers = None
        if selectors["layers"] is not None:
            layers = []
            for entry in selectors["layers"]:
                layer = find_layer(model, entry)
                if layer is None:
                    raise InputError(f"{field}.layers: the network has no layer {entry}; its layers are 0 to "
                                     f"{len(model.layers) - 1} (inside a block, a path such as 5.layers.0)")
                layers.append(layer)
        kinds = None
        if selectors["kinds"] is not None:
            kinds = []
            for k in selectors["kinds"]:
                name = LAYER_ALIASES.get(k, k)
                if name not in LAYER_FIELDS:
                    raise InputError(f'{field}.kinds: unknown layer kind "{k}"; expected one of: '
                                     f'{", ".join(LAYER_FIELDS)}')
                kinds.append(name)
        matched = 0
        for name, _, path, kind, tensor in params:
            if ((layers is None or any(path == l or path.startswith(l + ".") for l in layers))
                    and (kinds is None or kind in kinds)
                    and (selectors["tensors"] is None or tensor in selectors["tensors"])):
                matched += 1
                chosen.setdefault(name, (i, lr_scale, wd))
        if matched == 0:
            raise InputError(f"{field} selects no parameter of this network (its layers, kinds and tensors must "
                             "all match one; batch norm with affine false has none, and running statistics are "
                             "not parameters); correct the selectors or remove the group")
    out = []
    for i in range(len(groups)):
        members = [p for name, p, *_ in params if chosen.get(name, (None,))[0] == i]
        if members:
            _, lr_scale, wd = next(c for c in chosen.values() if c[0] == i)
            group = {"params": members, "lr_scale": lr_scale}
            if wd is not None:
                group["weight_decay"] = wd
            out.append(group)
    # The rest, fixed-scale weights included (they get no gradient).
    taken = {id(p) for g in out for p in g["params"]}
    rest = [p for p in model.parameters() if id(p) not in taken]
    if rest:
        out.append({"params": rest, "lr_scale": 1.0})
    return out


def parse_ema(training):
    """training.ema as (decay, every, warmup), or None."""
    e = training.get("ema")
    if e is None:
        return None
    if not isinstance(e, dict):
        raise InputError(f'training.ema must be an object like {{"decay": 0.999}}, got {json.dumps(e)}')
    unknown = sorted(set(e) - {"decay", "every", "warmup"})
    if unknown:
        raise InputError(f"training.ema: unknown field `{unknown[0]}`; allowed fields: decay, every, warmup")
    if e.get("decay") is None:
        raise InputError('training.ema needs "decay", e.g. 0.999')
    decay = number(e["decay"], "training.ema.decay")
    if not (0 <= decay < 1):
        raise InputError(f"training.ema.decay is {decay}; it must be in [0, 1), e.g. 0.999")
    every = opt(e, "every", 1)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise InputError(f"training.ema.every is {json.dumps(every)}; update the average every 1 or more steps")
    return decay, every, boolean(opt(e, "warmup", True), "training.ema.warmup")


def ema_decay(settings, step):
    """The decay of the update after optimizer step `step` (1-based), or None
    when that step does not update the average (src/train/ema.rs)."""
    decay, every, warmup = settings
    if step == 0 or step % every:
        return None
    u = step // every - 1
    return min(decay, (1 + u) / (10 + u)) if warmup else decay


class Ema:
    """An average of the model's parameters and batch-norm running
    statistics, as cnn's `training.ema`."""

    def __init__(self, settings, model):
        self.settings = settings
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model, step):
        d = ema_decay(self.settings, step)
        if d is None:
            return
        live = model.state_dict(keep_vars=True)
        avgs, xs = [], []
        for name, avg in self.model.state_dict(keep_vars=True).items():
            x = live[name]
            if name.endswith("num_batches_tracked") or (isinstance(x, nn.Parameter) and not x.requires_grad):
                continue  # frozen parameters are left alone, as cnn does
            avgs.append(avg)
            xs.append(x.detach())
        torch._foreach_lerp_(avgs, xs, 1.0 - d)  # avg + (1 - d)(x - avg)


def parse_tta(data, shape):
    """data.tta as {"flip": bool, "translate": int}, or None."""
    t = data.get("tta")
    if t is None:
        return None
    if not isinstance(t, dict):
        raise InputError(f'data.tta must be an object like {{"flip": true, "translate": 1}}, got {json.dumps(t)}')
    unknown = sorted(set(t) - {"flip", "translate"})
    if unknown:
        raise InputError(f"data.tta: unknown field `{unknown[0]}`; allowed fields: flip, translate")
    flip = boolean(opt(t, "flip", False), "data.tta.flip")
    translate = opt(t, "translate", 0)
    if isinstance(translate, bool) or not isinstance(translate, int) or translate < 0:
        raise InputError(f"data.tta.translate must be a number of pixels (0 or more), got {json.dumps(translate)}")
    if not flip and translate == 0:
        raise InputError("data.tta has flip false and translate 0, so it would change nothing; set flip: true "
                         "and/or translate: 1, or remove data.tta")
    h, w = shape[1], shape[2]
    if translate >= min(h, w):
        raise InputError(f"data.tta.translate is {translate} but the images are {h}×{w}; shift by fewer pixels "
                         "than the image, such as 1 or 2")
    return {"flip": flip, "translate": translate}


def tta_logits(model, x, tta):
    """The logits of a batch, averaged over the views data.tta asks for
    (src/train/eval.rs `logits`)."""
    if tta is None:
        return model.logits(x)
    fmt = torch.channels_last if x.dim() == 4 and not x.is_contiguous() \
        and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format

    def mirrored(v):
        plain = model.logits(v)
        if not tta["flip"]:
            return plain
        return (plain + model.logits(v.flip(3).contiguous(memory_format=fmt))) * 0.5

    centre = mirrored(x)
    t = tta["translate"]
    if t == 0:
        return centre
    h, w = x.shape[2], x.shape[3]
    padded = F.pad(x, (t, t, t, t), mode="reflect")
    up_left = padded[:, :, :h, :w].contiguous(memory_format=fmt)
    down_right = padded[:, :, 2 * t: 2 * t + h, 2 * t: 2 * t + w].contiguous(memory_format=fmt)
    shifted = (mirrored(up_left) + mirrored(down_right)) * 0.5
    return (centre + shifted) * 0.5


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def find_idx(data_dir, stem):
    dotted = stem.replace("-idx", ".idx", 1)
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    raise InputError(f"{data_dir} has no {stem}[.gz]; it needs the four MNIST IDX files: "
                     f"{', '.join(f + '.gz' for f in IDX_FILES)}")


def read_idx(path, magic, what):
    """The IDX file's dimensions and its bytes as a uint8 array of that shape."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise InputError(f"cannot read {path} ({e}); is it a complete download?") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputError(f"{path} is too short to be an IDX {what} file ({len(raw)} bytes)")
    (got,) = struct.unpack(">I", raw[:4])
    if got != magic:
        raise InputError(f"{path} is not an IDX {what} file: magic number is 0x{got:08x}, expected 0x{magic:08x}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    need = int(np.prod(dims))
    have = len(raw) - header
    if have != need:
        state = "truncated" if have < need else "longer than its header says"
        raise InputError(f"{path} is {state}: its header promises {need} bytes of data but {have} follow")
    # A writable copy (torch.from_numpy warns about read-only buffers).
    return np.frombuffer(raw, dtype=np.uint8, count=need, offset=header).reshape(dims).copy()


def load_mnist(data_dir, input_shape, num_classes):
    """(train_images, train_labels, test_images, test_labels) as uint8 arrays,
    images shaped (N, 1, H, W)."""
    if not os.path.isdir(data_dir):
        raise InputError(f"--data-dir {data_dir}: no such directory")
    paths = [find_idx(data_dir, stem) for stem in IDX_FILES]
    out = []
    for img_path, lab_path in ((paths[0], paths[1]), (paths[2], paths[3])):
        images = read_idx(img_path, 0x803, "images")
        labels = read_idx(lab_path, 0x801, "labels")
        if len(images) != len(labels):
            raise InputError(f"{img_path} holds {len(images)} images but {lab_path} holds "
                             f"{len(labels)} labels; the files do not belong together")
        if len(labels) and labels.max() >= num_classes:
            raise InputError(f"{lab_path}: label {labels.max()} is outside the {num_classes} classes")
        images = images[:, None, :, :]
        if list(images.shape[1:]) != list(input_shape):
            raise InputError(f"{img_path}: images are {list(images.shape[1:])} but the config's "
                             f"input_shape is {list(input_shape)}")
        out += [images, labels]
    return out



CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = "test_batch.bin"
CIFAR_RECORD = 1 + 3 * 32 * 32


def load_cifar10(data_dir, input_shape, num_classes):
    """CIFAR-10's binary version (data_batch_1..5.bin and test_batch.bin, in
    data_dir or its cifar-10-batches-bin folder), as load_mnist returns MNIST:
    images shaped (N, 3, 32, 32)."""
    if not os.path.isdir(data_dir):
        raise InputError(f"--data-dir {data_dir}: no such directory")
    if list(input_shape) != [3, 32, 32] or num_classes != 10:
        raise InputError(f"CIFAR-10 images are [3, 32, 32] in 10 classes, but the config has "
                         f"input_shape {list(input_shape)} and num_classes {num_classes}")
    folder = next((d for d in (data_dir, os.path.join(data_dir, "cifar-10-batches-bin"))
                   if os.path.isfile(os.path.join(d, CIFAR_TEST))), None)
    if folder is None:
        raise InputError(f"{data_dir} has no {CIFAR_TEST}; it needs CIFAR-10's binary version "
                         f"({', '.join(CIFAR_TRAIN)}, {CIFAR_TEST}): run scripts/get-cifar10.sh {data_dir}")

    def read(names):
        parts = []
        for name in names:
            path = os.path.join(folder, name)
            try:
                raw = np.fromfile(path, dtype=np.uint8)
            except OSError as e:
                raise InputError(f"cannot read {path}: {e.strerror}") from None
            if len(raw) == 0 or len(raw) % CIFAR_RECORD:
                raise InputError(f"{path} is not a CIFAR-10 batch: {len(raw)} bytes is not a "
                                 f"multiple of {CIFAR_RECORD}")
            parts.append(raw.reshape(-1, CIFAR_RECORD))
        records = np.concatenate(parts)
        labels = records[:, 0].copy()
        if labels.max() >= num_classes:
            raise InputError(f"{folder}: label {labels.max()} is outside the 10 classes")
        return records[:, 1:].reshape(-1, 3, 32, 32).copy(), labels

    return [*read(CIFAR_TRAIN), *read([CIFAR_TEST])]


def load_data(data_dir, config):
    """The dataset the config names (data.dataset: mnist or fashion-mnist in
    IDX files, cifar10 in binary batches)."""
    dataset = opt(section(config, "data"), "dataset", "mnist")
    if dataset in ("mnist", "fashion-mnist"):
        return load_mnist(data_dir, config["input_shape"], config["num_classes"])
    if dataset == "cifar10":
        return load_cifar10(data_dir, config["input_shape"], config["num_classes"])
    raise InputError(f'data.dataset "{dataset}" is not one this reference reads (mnist, fashion-mnist, cifar10)')


class Augmenter:
    """data.augment's random crop (pad every side with `fill`, or with the
    image mirrored at its border for padding_mode "reflect", and crop back
    at a random offset) and horizontal flip (a probability, or "alternate")
    on a batch of uint8 images, drawn from numpy's generator: what cnn does
    (src/data/augment.rs), with another generator."""

    def __init__(self, augment, seed, shape, n_images):
        augment = augment or {}
        if not isinstance(augment, dict):
            raise InputError(f"data.augment must be an object, got {json.dumps(augment)}")
        unknown = sorted(set(augment) - {"random_crop", "horizontal_flip"})
        if unknown:
            raise InputError(f"data.augment.{unknown[0]} is not implemented by this reference")
        crop = augment.get("random_crop")
        self.pad, self.fill, self.reflect = 0, 0, False
        if crop is not None:
            if not isinstance(crop, dict):
                raise InputError(f'data.augment.random_crop must be an object like {{"padding": 4}}, '
                                 f"got {json.dumps(crop)}")
            unknown = sorted(set(crop) - {"padding", "fill", "padding_mode"})
            if unknown:
                raise InputError(f"data.augment.random_crop: unknown field `{unknown[0]}`; allowed fields: "
                                 "padding, fill, padding_mode")
            pad = crop.get("padding")
            if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
                raise InputError(f"data.augment.random_crop.padding must be a number of pixels, got {json.dumps(pad)}")
            h, w = shape[1], shape[2]
            if pad >= min(h, w):
                raise InputError(f"data.augment.random_crop.padding is {pad} but the images are {h}×{w}; "
                                 "use a padding smaller than the image, e.g. 4")
            fill = opt(crop, "fill", 0)
            if isinstance(fill, bool) or not isinstance(fill, int) or not 0 <= fill <= 255:
                raise InputError(f"data.augment.random_crop.fill must be a pixel value 0..255, got {json.dumps(fill)}")
            mode = opt(crop, "padding_mode", "constant")
            if mode not in ("constant", "reflect"):
                raise InputError(f'data.augment.random_crop.padding_mode "{mode}" is not one of constant, reflect')
            self.pad, self.fill, self.reflect = pad, fill, mode == "reflect"
        flip = opt(augment, "horizontal_flip", 0.0)
        self.alternate = flip == "alternate"
        if self.alternate:
            # Whether each image starts mirrored: one draw per image of the
            # set, from the seed.
            self.starts = np.random.default_rng(seed + 4).random(n_images) < 0.5
            self.flip = 0.0
        else:
            if isinstance(flip, str):
                raise InputError(f'data.augment.horizontal_flip is "{flip}"; give a probability such as 0.5, '
                                 'or "alternate"')
            self.flip = number(flip, "data.augment.horizontal_flip")
            if not 0 <= self.flip <= 1:
                raise InputError(f"data.augment.horizontal_flip is {self.flip}; it is a probability, give a value "
                                 "in [0, 1] such as 0.5")
        self.rng = np.random.default_rng(seed + 2)

    def active(self):
        return self.pad > 0 or self.flip > 0 or self.alternate

    def __call__(self, images, idx, epoch):
        """The augmented images of the batch `idx` (indices into the set
        the starts were drawn for) in the 1-based `epoch`."""
        n, c, h, w = images.shape
        out = images
        if self.pad > 0:
            p = self.pad
            if self.reflect:
                padded = np.pad(images, ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect")
            else:
                padded = np.full((n, c, h + 2 * p, w + 2 * p), self.fill, dtype=np.uint8)
                padded[:, :, p:p + h, p:p + w] = images
            dy = self.rng.integers(0, 2 * p + 1, n)
            dx = self.rng.integers(0, 2 * p + 1, n)
            rows = (dy[:, None] + np.arange(h)[None, :])[:, None, :, None]
            cols = (dx[:, None] + np.arange(w)[None, :])[:, None, None, :]
            out = padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None], rows, cols]
        if self.flip > 0 or self.alternate:
            if self.alternate:
                flip = self.starts[idx] ^ (epoch % 2 == 0)
            else:
                flip = self.rng.random(n) < self.flip
            out = out.copy() if out is images else out
            out[flip] = out[flip][:, :, :, ::-1]
        return out


def lr_at(schedule, base, epoch, step, steps_per_epoch, epochs):
    """cnn's learning rate for a step (src/schedule.rs): an optional linear
    warmup over warmup_epochs (counted in steps) in front of the schedule,
    which counts its epochs from the end of the warmup."""
    schedule = schedule or {}
    kind = opt(schedule, "type", "constant")
    warmup = float(opt(schedule, "warmup_epochs", 0.0))
    start = float(opt(schedule, "warmup_start_factor", 0.1))
    if warmup >= epochs > 0 and kind != "one_cycle":
        warmup = epochs / 2  # cnn shortens a warm-up that does not fit the same way
    spe = max(steps_per_epoch, 1)
    warmup_steps = round(warmup * spe)
    whole = math.ceil(warmup)
    e = max(epoch - whole, 0)
    if kind != "one_cycle" and schedule.get("anneal_strategy") is not None:
        raise InputError(f'training.lr_schedule.anneal_strategy is for "one_cycle", not "{kind}"; remove it')
    if kind == "constant":
        main = base
    elif kind == "step":
        main = base * opt(schedule, "gamma", 0.1) ** (e // max(opt(schedule, "step_size", 1), 1))
    elif kind == "multistep":
        main = base * opt(schedule, "gamma", 0.1) ** sum(1 for m in opt(schedule, "milestones", []) if m <= e)
    elif kind == "exponential":
        main = base * opt(schedule, "gamma", 0.95) ** e
    elif kind == "cosine":
        t_max = opt(schedule, "t_max", None) or max(epochs - whole, 1)
        eta_min = opt(schedule, "eta_min", 0.0)
        main = eta_min + (base - eta_min) * (1 + math.cos(math.pi * min(e, t_max) / t_max)) / 2
    elif kind == "one_cycle":
        # PyTorch's OneCycleLR (two phases), as src/schedule.rs.
        strategy = opt(schedule, "anneal_strategy", "cos")
        if strategy not in ("cos", "linear"):
            raise InputError(f'training.lr_schedule.anneal_strategy "{strategy}" is not one of cos, linear')
        max_lr = opt(schedule, "max_lr", None) or base
        initial = max_lr / opt(schedule, "div_factor", 25.0)
        min_lr = initial / opt(schedule, "final_div_factor", 1e4)
        total = max(epochs * spe, 2)
        up_end = opt(schedule, "pct_start", 0.3) * total - 1
        down_end = total - 1
        t = min(step, down_end)

        def anneal(a, b, frac):
            if strategy == "linear":
                return a + (b - a) * frac
            return b + (a - b) / 2 * (1 + math.cos(math.pi * frac))
        if t <= up_end:
            main = anneal(initial, max_lr, t / max(up_end, 1e-9))
        else:
            main = anneal(max_lr, min_lr, (t - up_end) / max(down_end - up_end, 1e-9))
    else:
        raise InputError(f'training.lr_schedule.type "{kind}" is not implemented by this reference')
    if step < warmup_steps:
        return main * (start + (1 - start) * step / max(warmup_steps, 1))
    return main

def default_val_size(data):
    """cnn's validation split when data.val_size is not given."""
    return 5000 if opt(data, "dataset", "mnist") == "cifar10" else 10000


def split_train(n, val_size, seed, limit_train):
    """Indices (sorted) of the training split: val_size images (a count or a
    fraction) are held out at random with the seed, then the first
    limit_train of the rest are kept."""
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)) or val_size < 0:
        raise InputError(f"data.val_size must be a count or a fraction in (0, 1), got {json.dumps(val_size)}")
    if 0 < val_size < 1:
        n_val = int(math.floor(val_size * n + 0.5))
    elif float(val_size).is_integer():
        n_val = int(val_size)
    else:
        raise InputError(f"data.val_size is {val_size}: neither a whole number of images nor a fraction")
    if n_val >= n:
        raise InputError(f"data.val_size asks for {n_val} validation images but the training file has only {n}")
    order = np.random.default_rng(seed).permutation(n)
    train = np.sort(order[n_val:])
    if limit_train is not None:
        if isinstance(limit_train, bool) or not isinstance(limit_train, int) or limit_train < 1:
            raise InputError(f"limit_train must be a positive integer, got {json.dumps(limit_train)}")
        train = train[:limit_train]
    return train


def normalization(setting, train_images):
    """(mean, std) per channel, of pixels scaled to [0, 1]."""
    channels = train_images.shape[1]
    if setting is None or setting == "auto":
        # Population statistics over every pixel of the training split, as cnn.
        # A histogram of the byte values gives both exactly, without a
        # float copy of the images.
        mean, std = [], []
        values = np.arange(256, dtype=np.float64)
        for ch in range(channels):
            plane = train_images[:, ch].reshape(-1)
            counts = np.zeros(256, dtype=np.float64)
            for lo in range(0, len(plane), 1 << 20):  # bincount widens to int64: go in chunks
                counts += np.bincount(plane[lo: lo + (1 << 20)], minlength=256)
            total = max(counts.sum(), 1.0)
            m = float((counts * values).sum() / total / 255.0)
            var = float((counts * values * values).sum() / total / (255.0 * 255.0)) - m * m
            s = math.sqrt(max(var, 0.0))
            mean.append(m)
            std.append(s if s > 1e-6 else 1.0)
        return mean, std
    if setting == "none":
        return [0.0] * channels, [1.0] * channels
    if isinstance(setting, dict) and set(setting) == {"mean", "std"}:
        mean, std = list(setting["mean"]), list(setting["std"])
        if len(mean) != channels or len(std) != channels:
            raise InputError(f"data.normalize gives {len(mean)} means and {len(std)} stds "
                             f"but the images have {channels} channel(s)")
        if not all(isinstance(s, (int, float)) and s > 0 for s in std):
            raise InputError("data.normalize.std: every std must be positive")
        return [float(m) for m in mean], [float(s) for s in std]
    raise InputError(f'data.normalize must be "auto", "none" or {{"mean": [..], "std": [..]}}, '
                     f"got {json.dumps(setting)}")


class Batcher:
    """Turns uint8 images into normalised float32 batches through a 256-entry
    lookup table per channel: (pixel/255 - mean)/std; with channels_last,
    laid out NHWC in memory (PyTorch's channels_last format)."""

    def __init__(self, mean, std, device=None, channels_last=False):
        self.channels_last = channels_last
        p = np.arange(256, dtype=np.float64) / 255.0
        tables = [((p - m) / s).astype(np.float32) for m, s in zip(mean, std)]
        self.device = torch.device(device or "cpu")
        # Channel c's table at offset 256*c, so one gather serves all channels.
        self.table = torch.from_numpy(np.concatenate(tables)).to(self.device)
        self.offsets = (torch.arange(len(mean), dtype=torch.long) * 256).view(1, -1, 1, 1).to(self.device)

    def __call__(self, images_u8, labels_u8, idx, augmented=False):
        """The images idx of images_u8, or with `augmented` images_u8 itself
        (already gathered), and the labels idx."""
        # The uint8 pixels cross to the device (a quarter of the float bytes)
        # and are looked up there.
        x = torch.from_numpy(np.ascontiguousarray(images_u8 if augmented else images_u8[idx]))
        x = x.to(self.device, non_blocking=True)
        y = torch.from_numpy(labels_u8[idx].astype(np.int64)).to(self.device, non_blocking=True)
        if self.channels_last:
            # Looked up in NHWC order, then viewed as NCHW: channels_last strides.
            x = x.permute(0, 2, 3, 1).contiguous().long()
            if self.offsets.numel() > 1:
                x = x + self.offsets.view(1, 1, 1, -1)
            return self.table[x].permute(0, 3, 1, 2), y
        x = x.long()
        if self.offsets.numel() > 1:
            x = x + self.offsets
        return self.table[x], y


def autocast(device, precision):
    """torch.autocast in bf16 for --precision bf16 (convolutions and linear
    layers in bf16, the rest in f32, as cnn's training.precision), else a
    no-op."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_precision(args, training):
    """--precision, else training.precision of the config (fp32)."""
    precision = getattr(args, "precision", None) or opt(training, "precision", "fp32")
    if precision not in ("fp32", "bf16"):
        raise InputError(f'precision "{precision}" is not one of fp32, bf16')
    return precision


def evaluate(model, batcher, images, labels, batch_size, tta=None, precision="fp32"):
    """(mean cross-entropy, correct, seconds) over all images, the logits
    averaged over data.tta's views when given."""
    model.eval()
    loss_sum, correct = 0.0, 0
    start = time.perf_counter()
    with torch.no_grad():
        for lo in range(0, len(labels), batch_size):
            x, y = batcher(images, labels, slice(lo, lo + batch_size))
            with autocast(x.device, precision):
                logits = tta_logits(model, x, tta).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(dim=1) == y).sum()
    loss_sum, correct = float(loss_sum), int(correct)  # waits for the device
    seconds = time.perf_counter() - start
    n = len(labels)
    return (loss_sum / n if n else float("nan")), correct, seconds


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------

def pick_device(name):
    """torch.device for --device (cpu, cuda, cuda:N), or an InputError."""
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise InputError(f"--device {name}: {e}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: PyTorch sees no CUDA GPU")
        if (device.index or 0) >= torch.cuda.device_count():
            raise InputError(f"--device {name}: only {torch.cuda.device_count()} GPU(s)")
    elif device.type != "cpu":
        raise InputError(f"--device {name}: use cpu, cuda or cuda:N")
    return device


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def set_threads(threads):
    if threads < 1:
        raise InputError("--threads must be at least 1")
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)


def eval_batch_size(data):
    bs = opt(data, "eval_batch_size", 1000)
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise InputError(f"data.eval_batch_size must be a positive integer, got {json.dumps(bs)}")
    return bs


def test_set(data, test_images, test_labels):
    limit = data.get("limit_test")
    if limit is not None:
        return test_images[:limit], test_labels[:limit]
    return test_images, test_labels


def uses_channels_last(model, device, args):
    """channels_last for a network with convolutions on the CPU, unless
    --no-channels-last."""
    return (device.type == "cpu" and not getattr(args, "no_channels_last", False)
            and any(isinstance(m, nn.Conv2d) for m in model.modules()))


def cmd_train(args):
    set_threads(args.threads)
    config = load_config_file(args.config)
    training, data = section(config, "training"), section(config, "data")
    check_unimplemented(training, data)
    precision = resolve_precision(args, training)
    seed = args.seed if args.seed is not None else opt(training, "seed", 42)
    torch.manual_seed(seed)
    device = pick_device(args.device)
    model = ConfigNet(config)
    fixed = {n for n, p in model.named_parameters() if not p.requires_grad}
    frozen = freeze_names(model, training)
    unfreeze_after = training.get("unfreeze_after")
    groups = param_groups(model, training)
    ema_settings = parse_ema(training)
    tta = parse_tta(data, config["input_shape"])
    schedule = training.get("lr_schedule")
    if schedule:
        lr_at(schedule, 1.0, 0, 0, 1, max(args.epochs, 1))  # its errors before the data is read

    batch_size = args.batch_size if args.batch_size is not None else opt(training, "batch_size", 64)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch size must be a positive integer, got {json.dumps(batch_size)}")
    if args.epochs < 1:
        raise InputError("--epochs must be at least 1")
    smoothing = number(opt(training, "label_smoothing", 0.0), "training.label_smoothing")
    if not 0 <= smoothing < 1:
        raise InputError(f"training.label_smoothing is {smoothing}; it must be in [0, 1)")
    # Module.to() keeps the Parameter objects, so the optimizer can hold them now.
    optimizer = make_optimizer(groups, training, args.lr)
    shuffle = boolean(opt(data, "shuffle", True), "data.shuffle")
    drop_last = boolean(opt(data, "drop_last", False), "data.drop_last")

    train_x, train_y, test_x, test_y = load_data(args.data_dir, config)
    val_size = args.val_size if args.val_size is not None else opt(data, "val_size", default_val_size(data))
    limit_train = args.limit_train if args.limit_train is not None else data.get("limit_train")
    keep = split_train(len(train_y), val_size, seed, limit_train)
    train_x, train_y = train_x[keep], train_y[keep]  # contiguous copies of the split
    n = len(train_y)
    augmenter = Augmenter(data.get("augment"), seed, config["input_shape"], n)
    mean, std = normalization(data.get("normalize"), train_x)
    for note in whiten(model, train_x, train_y, mean, std, seed):
        if not args.json:
            print(note, file=sys.stderr)
    channels_last = uses_channels_last(model, device, args)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    set_frozen(model, frozen, True, fixed)
    ema = Ema(ema_settings, model) if ema_settings else None
    batcher = Batcher(mean, std, device, channels_last)
    test_x, test_y = test_set(data, test_x, test_y)

    rng = np.random.default_rng(seed + 1)
    base_lr = optimizer.param_groups[0]["lr"]
    stop = n - n % batch_size if drop_last else n
    steps_per_epoch = -(-stop // batch_size)
    epoch_seconds, last_loss, step = [], float("nan"), 0
    for epoch in range(args.epochs):
        if frozen and unfreeze_after is not None and epoch + 1 > unfreeze_after:
            set_frozen(model, frozen, False, fixed)
        order = rng.permutation(n) if shuffle else np.arange(n)
        model.train()
        loss_sum, seen = torch.zeros((), device=device), 0
        synchronize(device)
        start = time.perf_counter()
        for lo in range(0, stop, batch_size):
            idx = order[lo: min(lo + batch_size, stop)]
            lr = lr_at(schedule, base_lr, epoch, step, steps_per_epoch, args.epochs) if schedule else base_lr
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            step += 1
            if augmenter.active():
                x, y = batcher(augmenter(train_x[idx], idx, epoch + 1), train_y, idx, augmented=True)
            else:
                x, y = batcher(train_x, train_y, idx)
            with autocast(device, precision):
                logits = model.logits(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update(model, step)
            loss_sum += loss.detach() * len(idx)
            seen += len(idx)
        synchronize(device)
        epoch_seconds.append(time.perf_counter() - start)
        last_loss = float(loss_sum) / max(seen, 1)
        if not args.json:
            print(f"epoch {epoch + 1}/{args.epochs}: train loss {last_loss:.4f}, "
                  f"{epoch_seconds[-1]:.2f} s, {seen / epoch_seconds[-1]:.0f} images/s", file=sys.stderr)
        if not math.isfinite(last_loss):
            raise RuntimeError(f"the training loss became {last_loss} in epoch {epoch + 1}; lower the learning rate")

    # With an EMA, the average is what is tested and saved, as in cnn.
    final = ema.model if ema is not None else model
    test_loss, correct, eval_seconds = evaluate(final, batcher, test_x, test_y, eval_batch_size(data), tta,
                                                precision)
    trained = n - n % batch_size if drop_last else n
    result = {
        "model": config["name"],
        "epochs": args.epochs,
        "batch_size": batch_size,
        "train_images": n,
        "images_per_second": trained * args.epochs / sum(epoch_seconds),
        "epoch_seconds": sum(epoch_seconds) / len(epoch_seconds),
        "epoch_seconds_each": epoch_seconds,
        "train_loss": last_loss,
        "test_loss": test_loss,
        "test_acc": correct / len(test_y) if len(test_y) else float("nan"),
        "eval_seconds": eval_seconds,
        "eval_images_per_second": len(test_y) / eval_seconds if eval_seconds > 0 else float("nan"),
        "peak_rss_mb": peak_rss_mb(),
        "device": str(device),
        "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "threads": args.threads,
        "channels_last": channels_last,
        "precision": precision,
        "torch_version": torch.__version__,
    }

    if args.save:
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous()
                   for k, v in final.state_dict().items() if not k.endswith("num_batches_tracked")}
        metadata = {
            "format": "torch-reference",
            "config": json.dumps(config),
            "normalization": json.dumps({"mean": mean, "std": std}),
        }
        try:
            save_file(tensors, args.save, metadata=metadata)
        except OSError as e:
            raise InputError(f"cannot write {args.save}: {e}") from None
        result["saved"] = args.save

    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['model']}: {args.epochs} epoch(s) on {n} images, batch {batch_size}, "
              f"{args.threads} thread(s): {result['images_per_second']:.0f} images/s "
              f"({result['epoch_seconds']:.2f} s/epoch); test accuracy {result['test_acc']:.4f}, "
              f"loss {test_loss:.4f} (eval {eval_seconds:.2f} s); peak RSS {result['peak_rss_mb']:.0f} MB; "
              f"torch {torch.__version__}")
    return 0


def match_tensors(tensors, model, path):
    """Maps a checkpoint's tensors onto the model's `layers.<i>.<name>` keys,
    whatever prefix the file uses (`layers.`, `model.layers.`, `0.` ...). A
    cnn checkpoint trained with an EMA holds the average as `layers.*` (what
    cnn evaluates) and the trained weights as `raw.layers.*`: the average is
    used."""
    tensors = {k: v for k, v in tensors.items()
               if not k.startswith(("optim.", "raw.")) and not k.endswith(".num_batches_tracked")}
    wanted = [k for k in model.layers.state_dict() if not k.endswith("num_batches_tracked")]
    if not wanted:
        return {}
    first = wanted[0]
    prefixes = sorted({k[: -len(first)] for k in tensors
                       if k.endswith(first) and (len(k) == len(first) or k[-len(first) - 1] == ".")},
                      key=len, reverse=True)
    for prefix in prefixes:
        if all(prefix + w in tensors for w in wanted):
            mapped = {w: tensors[prefix + w] for w in wanted}
            extra = sorted(set(tensors) - {prefix + w for w in wanted})
            if extra:
                raise InputError(f"{path} has tensors the config's model does not: {', '.join(extra[:5])}")
            return mapped
    missing = [w for w in wanted if not any(k.endswith(w) for k in tensors)]
    raise InputError(f"{path} does not fit the config: no tensor for layers.{(missing or wanted)[0]} "
                     f"(the file has: {', '.join(sorted(tensors)[:8])})")


def cmd_eval(args):
    set_threads(args.threads)
    if not os.path.isfile(args.checkpoint):
        raise InputError(f"cannot read checkpoint {args.checkpoint}: no such file")
    try:
        with safe_open(args.checkpoint, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types
        raise InputError(f"{args.checkpoint} is not a valid safetensors file: {e}") from None

    if "config" in metadata:
        try:
            config = json.loads(metadata["config"])
        except json.JSONDecodeError as e:
            raise InputError(f"the config stored in {args.checkpoint} is not valid JSON: {e}") from None
        config.setdefault("name", os.path.splitext(os.path.basename(args.checkpoint))[0])
        if args.config and not same_layers(load_config_file(args.config).get("layers"),
                                           config.get("layers")):
            print(f"warning: {args.checkpoint} carries its own config ({config['name']}), whose layers "
                  f"differ from {args.config}; using the checkpoint's", file=sys.stderr)
    elif args.config:
        config = load_config_file(args.config)
    else:
        raise InputError(f"{args.checkpoint} has no config in its metadata; pass --config FILE")

    device = pick_device(args.device)
    model = ConfigNet(config)
    weights = match_tensors(tensors, model, args.checkpoint)
    try:
        model.layers.load_state_dict({k: v.to(torch.float32) for k, v in weights.items()}, strict=False)
    except RuntimeError as e:
        raise InputError(f"{args.checkpoint} does not fit the config: {e}") from None

    data, training = section(config, "data"), section(config, "training")
    train_x, train_y, test_x, test_y = load_data(args.data_dir, config)
    if "normalization" in metadata:
        stats = json.loads(metadata["normalization"])
        mean, std = normalization({"mean": stats["mean"], "std": stats["std"]}, train_x)
    else:
        setting = data.get("normalize")
        if setting is None or setting == "auto":
            keep = split_train(len(train_y), opt(data, "val_size", default_val_size(data)), opt(training, "seed", 42),
                               data.get("limit_train"))
            train_x = train_x[keep]
        mean, std = normalization(setting, train_x)
    del train_x, train_y
    test_x, test_y = test_set(data, test_x, test_y)

    channels_last = uses_channels_last(model, device, args)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    tta = parse_tta(data, config["input_shape"])
    loss, correct, seconds = evaluate(model, Batcher(mean, std, device, channels_last), test_x, test_y,
                                      eval_batch_size(data), tta, resolve_precision(args, training))
    n = len(test_y)
    result = {
        "checkpoint": args.checkpoint,
        "model": config.get("name"),
        "samples": n,
        "correct": correct,
        "loss": loss,
        "accuracy": correct / n if n else float("nan"),
        "eval_seconds": seconds,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.checkpoint} ({result['model']}): test accuracy {result['accuracy']:.4f} "
              f"({correct}/{n}), loss {loss:.4f}, {seconds:.2f} s")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="PyTorch reference trainer for cnn model configs (MNIST, Fashion-MNIST, CIFAR-10; CPU or CUDA).")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a config and report speed, accuracy and memory")
    t.add_argument("--config", required=True, help="cnn JSON model config")
    t.add_argument("--data-dir", required=True,
                   help="directory with the four MNIST IDX files (raw or .gz), or CIFAR-10's binary batches")
    t.add_argument("--epochs", type=int, default=1, help="epochs to train (default 1; the config's epochs are ignored)")
    t.add_argument("--batch-size", type=int, help="default: training.batch_size of the config (64)")
    t.add_argument("--lr", type=float, help="default: training.optimizer.lr of the config (1e-3)")
    t.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2); inter-op is 1")
    t.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    t.add_argument("--no-channels-last", action="store_true",
                   help="keep PyTorch's contiguous (NCHW) layout on the CPU (default: channels_last for conv nets)")
    t.add_argument("--limit-train", type=int, help="train on only the first N images of the training split")
    t.add_argument("--val-size", type=float,
                   help="images held out for validation, a count or a fraction (default: data.val_size, 10000)")
    t.add_argument("--seed", type=int, help="default: training.seed of the config (42)")
    t.add_argument("--save", metavar="FILE.safetensors", help="write the trained state_dict here")
    t.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    t.add_argument("--precision", choices=["fp32", "bf16"],
                   help="bf16: torch.autocast in bf16 (default: training.precision of the config, fp32)")
    t.set_defaults(run=cmd_train)

    e = sub.add_parser("eval", help="evaluate a safetensors checkpoint (from this script or cnn) on the test set")
    e.add_argument("--config", help="cnn JSON model config (the checkpoint's own config wins when it has one)")
    e.add_argument("--data-dir", required=True,
                   help="directory with the four MNIST IDX files (raw or .gz), or CIFAR-10's binary batches")
    e.add_argument("--checkpoint", required=True, metavar="FILE.safetensors")
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    e.add_argument("--no-channels-last", action="store_true",
                   help="keep PyTorch's contiguous (NCHW) layout on the CPU (default: channels_last for conv nets)")
    e.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    e.add_argument("--precision", choices=["fp32", "bf16"],
                   help="bf16: torch.autocast in bf16 (default: training.precision of the config, fp32)")
    e.set_defaults(run=cmd_eval)

    args = parser.parse_args(argv)
    if getattr(args, "val_size", None) is not None and args.val_size.is_integer():
        args.val_size = int(args.val_size)
    try:
        return args.run(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
