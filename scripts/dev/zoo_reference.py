"""torchvision's and timm's side of the model-zoo check (tests/integration/zoo.rs).
ARCH is a torchvision builder (resnet18) or a timm model as timm:NAME
(timm:convnext_tiny), built with timm.create_model(NAME, pretrained=False).

    zoo_reference.py make ARCH SEED STATE INPUTS N C H W LOGITS
        Builds torchvision.models.ARCH() from the seed (its own random
        initialisation, no download), gives every batch-norm layer random
        affine weights and the running statistics of the inputs, perturbed
        (a fresh layer's are the identity, which would hide a mix-up of
        running_mean and running_var), saves the state_dict as safetensors
        to STATE, and writes the logits in eval mode for the N×C×H×W float32
        inputs of INPUTS to LOGITS.

    zoo_reference.py load ARCH STATE INPUTS N C H W LOGITS
        Loads STATE (as `cnn export --format torchvision` writes it) into a
        fresh torchvision.models.ARCH() with strict=True and writes its
        logits for INPUTS to LOGITS.

Prints one JSON line: the parameter count, the multiply-adds per image of
the convolutions and linear layers, and the state_dict's size.
"""

import json
import sys

import numpy as np
import safetensors.torch
import torch
import torchvision


def inputs(path, n, c, h, w):
    x = np.fromfile(path, dtype="<f4").reshape(int(n), int(c), int(h), int(w))
    return torch.from_numpy(x.copy())


def logits(model, x, path):
    model.eval()
    with torch.no_grad():
        y = model(x)
    y.numpy().astype("<f4").tofile(path)


def main():
    torch.set_num_threads(2)
    mode, arch = sys.argv[1], sys.argv[2]
    if arch.startswith("timm:"):
        import timm

        def build():
            return timm.create_model(arch[len("timm:"):], pretrained=False)
    else:
        build = getattr(torchvision.models, arch)
    if mode == "make":
        seed, state, data, n, c, h, w, out = sys.argv[3:11]
        torch.manual_seed(int(seed))
        model = build()
        g = torch.Generator().manual_seed(int(seed) + 1)
        norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        with torch.no_grad():
            for m in norms:
                f = m.num_features
                m.weight.copy_(torch.rand(f, generator=g) + 0.5)
                m.bias.copy_(torch.randn(f, generator=g) * 0.1)
            for m in model.modules():
                # Layer norms likewise, and ConvNeXt's layer scales, whose
                # 1e-6 would leave the blocks out of the logits.
                if isinstance(m, torch.nn.LayerNorm):
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                # torchvision's layer_scale, timm's gamma.
                for attr in ("layer_scale", "gamma"):
                    scale = getattr(m, attr, None)
                    if isinstance(scale, torch.nn.Parameter):
                        scale.copy_(torch.rand(scale.shape, generator=g) * 0.4 + 0.1)
            # Statistics of the inputs themselves, so that no layer
            # saturates (a fresh MobileNet's ReLU6 would clip every image
            # to the same features), then made a little off (running_mean
            # and running_var must not be interchangeable).
            saved = [m.momentum for m in norms]
            for m in norms:
                m.reset_running_stats()
                m.momentum = None
            model.train()
            model(inputs(data, n, c, h, w))
            for m, momentum in zip(norms, saved):
                m.momentum = momentum
                f = m.num_features
                m.running_mean.add_(torch.randn(f, generator=g) * 0.1 * m.running_var.sqrt())
                m.running_var.mul_(torch.rand(f, generator=g) * 0.4 + 0.8)
                m.num_batches_tracked.fill_(7)
        safetensors.torch.save_file(model.state_dict(), state)
    elif mode == "load":
        state, data, n, c, h, w, out = sys.argv[3:10]
        model = build()
        model.load_state_dict(safetensors.torch.load_file(state), strict=True)
    else:
        sys.exit(f"unknown mode {mode}")
    macs = []

    def count(module, _inputs, output):
        # Multiply-adds per image of the layers that multiply (as torchinfo
        # counts them): a convolution's weights once per output position, a
        # linear layer's once.
        if isinstance(module, torch.nn.Conv2d):
            macs.append(module.weight.numel() * output.shape[2] * output.shape[3])
        elif isinstance(module, torch.nn.Linear):
            # Once per position when it runs along an image's channels.
            macs.append(module.weight.numel() * output[0, ..., 0].numel())

    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            m.register_forward_hook(count)
    x = inputs(data, n, c, h, w)
    model.eval()
    with torch.no_grad():
        model(x[:1])
    per_image = sum(macs)
    logits(model, x, out)
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"params": params, "macs": per_image, "tensors": len(model.state_dict())}))


if __name__ == "__main__":
    main()
