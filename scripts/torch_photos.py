#!/usr/bin/env python3
"""The PyTorch peer of cnn's photo pipeline, for scripts/bench-photos.sh.

Trains a torchvision network (ResNet-18 by default; any builder of the
zoo's: resnet50, mobilenet_v2, efficientnet_b0, ...; random initialisation,
a new head for the folder's classes) on an image folder the way a torchvision
user would write it: ImageFolder, a DataLoader with worker processes, and
the transforms cnn's `data.augment` names (RandomResizedCrop, flip,
TrivialAugmentWide, RandomErasing after Normalize), Adam at 1e-3,
channels-last. Then it evaluates images through Resize(256) + CenterCrop.
Prints one JSON object: training and evaluation images/s (decoding
included: nothing is cached), the share of the time the training loop
waited for the loader, and peak RSS (this process, and the largest worker).
"""

import argparse
import json
import resource
import time

import torch
import torchvision
from torch.utils.data import DataLoader, Subset
from torchvision import transforms as T

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--arch", default="resnet18",
                   help="a torchvision.models builder: resnet18, resnet50, mobilenet_v2, efficientnet_b0, ...")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-images", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    p.add_argument("--plain", action="store_true", help="no augmentation: resize and crop only")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    norm = [T.ToTensor(), T.Normalize(MEAN, STD)]
    if a.plain:
        train_tf = T.Compose([T.Resize(256), T.CenterCrop(224), *norm])
    else:
        train_tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(),
                              T.TrivialAugmentWide(), *norm, T.RandomErasing(p=0.25)])
    eval_tf = T.Compose([T.Resize(256), T.CenterCrop(224), *norm])
    folder = torchvision.datasets.ImageFolder(a.data_dir, transform=train_tf)
    classes = len(folder.classes)
    n = a.steps * a.batch_size
    order = torch.randperm(len(folder)).tolist()
    train = DataLoader(Subset(folder, order[:n]), batch_size=a.batch_size, shuffle=True,
                       num_workers=a.workers, drop_last=True)
    model = getattr(torchvision.models, a.arch)(num_classes=classes)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16")

    model.train()
    waited = 0.0
    start = time.perf_counter()
    mark = start
    for x, y in train:
        waited += time.perf_counter() - mark
        x = x.to(memory_format=torch.channels_last)
        with autocast:
            loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mark = time.perf_counter()
    train_s = time.perf_counter() - start

    evalset = torchvision.datasets.ImageFolder(a.data_dir, transform=eval_tf)
    m = min(a.eval_images, len(evalset))
    loader = DataLoader(Subset(evalset, order[len(order) - m:]),
                        batch_size=a.batch_size, num_workers=a.workers)
    model.eval()
    correct = 0
    start = time.perf_counter()
    with torch.no_grad(), autocast:
        for x, y in loader:
            correct += (model(x.to(memory_format=torch.channels_last)).argmax(1) == y).sum().item()
    eval_s = time.perf_counter() - start
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    worker_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({
        "arch": a.arch,
        "images": n,
        "images_per_second": n / train_s,
        "loader_wait_share": waited / train_s,
        "eval_images": m,
        "eval_images_per_second": m / eval_s,
        "peak_rss_mb": kib / 1024,
        "worker_peak_rss_mb": worker_kib / 1024,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }))


if __name__ == "__main__":
    main()
