"""The peer of the ants/bees benchmark: the plain fine-tuning recipe of the transfer-learning tutorial, as a
plain PyTorch loop with nothing of lightnets' training code (only its model class, image folder reader and
PIL transforms, the same ones torchvision's tutorial uses under these names).

All layers trained, BatchNorm in training mode as in the tutorial, SGD lr 0.01 momentum 0.9 weight decay 4e-5,
batch 16, cosine decay per step to 0.1x, RandomResizedCrop 224 + horizontal flip; evaluation resize 256 /
centre crop 224; ImageNet mean / std.  Wall time runs from the call (data loading included).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from lightnets.data import ImageFolder, collate_skip_none
from lightnets.data.transforms import (
    CenterCrop,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ToTensor,
)
from lightnets.registry import create_model

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def run_peer(
    root: Path, weights: Path, *, model: str = "shufflenet_v2_x1_0", epochs: int = 10, workers: int = 2,
    log_fn: Callable[[str], None] = print,
) -> list[dict]:  # fmt: skip
    """Train the peer; one row per epoch: epoch, train_loss, val_top1, wall_s."""
    start = time.perf_counter()
    torch.manual_seed(0)
    train_tf = Compose([RandomResizedCrop(224), RandomHorizontalFlip(), ToTensor(), Normalize(MEAN, STD)])
    eval_tf = Compose([Resize(256), CenterCrop(224), ToTensor(), Normalize(MEAN, STD)])
    train_ds = ImageFolder(root / "train", train_tf)
    val_ds = ImageFolder(root / "val", eval_tf, classes=train_ds.classes)
    train_dl = DataLoader(train_ds, batch_size=16, shuffle=True, num_workers=workers, collate_fn=collate_skip_none)
    val_dl = DataLoader(val_ds, batch_size=64, num_workers=workers, collate_fn=collate_skip_none)
    net = create_model(model, weights=str(weights), num_classes=len(train_ds.classes))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-5)
    total = epochs * len(train_dl)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / total)))
    rows = []
    for epoch in range(epochs):
        net.train()
        loss_sum, seen = 0.0, 0
        for batch in train_dl:
            if batch is None:
                continue
            x, y = batch
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum, seen = loss_sum + loss.item() * len(y), seen + len(y)
        net.eval()
        correct, n = 0, 0
        with torch.no_grad():
            for batch in val_dl:
                if batch is None:
                    continue
                x, y = batch
                correct += (net(x).argmax(1) == y).sum().item()
                n += len(y)
        rows.append({"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "val_top1": correct / n,
                     "wall_s": time.perf_counter() - start})  # fmt: skip
        log_fn(f"peer epoch {epoch + 1}/{epochs}  loss {rows[-1]['train_loss']:.4f}  val_top1 {rows[-1]['val_top1']:.4f}"
               f"  {rows[-1]['wall_s']:.1f} s")  # fmt: skip
    return rows
