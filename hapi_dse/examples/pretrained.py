"""A stand-in for *your* pretrained network: a small ResNet-style model in plain torch.

``tiny_resnet`` is a factory in the shape ``hapi train --backbone`` calls, returning a plain
``nn.Module`` (a stem, ``layer1``..``layer3`` of residual blocks, ``avgpool`` and ``fc``) that
hapi splits into blocks itself (:mod:`hapi_dse.models.split`). Running this module pretrains
it briefly with a plain torch loop and saves its state dict, as you would save your own::

    python -m hapi_dse.examples.pretrained runs/pretrained.pt --dataset digits --epochs 10
    hapi train --dataset digits --backbone hapi_dse.examples.pretrained:tiny_resnet \\
        --init runs/pretrained.pt --epochs 0 --out runs/mine

``OUT.json`` beside the weights records the settings and the dataset files used. The images
are hapi's splits (:func:`hapi_dse.data.load_splits`), normalised as ``hapi train``
normalises them for the same dataset and seed, so the network sees the same inputs there.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a shortcut (1x1 when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class TinyResNet(nn.Module):
    """torchvision's ResNet layout, small: stem, ``layer1``..``layer3``, ``avgpool``, ``fc``.

    The stem's max-pooling halves inputs of 16 pixels and more (28x28 -> 14x14) and is
    skipped for smaller ones (8x8 digits).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        small_input: bool = True,
        widths: Sequence[int] = (8, 16, 32),
        blocks_per_layer: int = 2,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.maxpool: nn.Module = nn.Identity() if small_input else nn.MaxPool2d(2)
        cin = widths[0]
        for i, cout in enumerate(widths):
            layer = [BasicBlock(cin if j == 0 else cout, cout, 2 if i and not j else 1)
                     for j in range(blocks_per_layer)]  # fmt: skip
            self.add_module(f"layer{i + 1}", nn.Sequential(*layer))
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name, child in self.named_children():
            if name.startswith("layer"):
                x = child(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def tiny_resnet(*, num_classes: int = 10, input_shape: Sequence[int] = (1, 8, 8)) -> TinyResNet:
    """The factory for ``--backbone hapi_dse.examples.pretrained:tiny_resnet``: a plain
    module (6 residual blocks, so 6 exit positions), as your own factory would return."""
    c, h, w = input_shape
    return TinyResNet(num_classes, in_channels=c, small_input=min(h, w) < 16)


def pretrain(
    out: Path, *, dataset: str, data_dir: str | None, epochs: int, seed: int
) -> tuple[float, float]:
    """Train :func:`tiny_resnet` with plain torch (Adam, cross-entropy) and save its state
    dict to ``out`` with ``OUT.json`` beside it. Returns the val and test accuracy."""
    from hapi_dse.atomic import atomic_path, write_json
    from hapi_dse.data import load_splits
    from hapi_dse.provenance import provenance

    data = load_splits(dataset, data_dir=data_dir, seed=seed)
    torch.manual_seed(seed)
    model = tiny_resnet(num_classes=data.num_classes, input_shape=data.input_shape)
    train = data.sets["train"]
    x, y = torch.from_numpy(train.all()), torch.from_numpy(train.labels)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y), generator=gen).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    acc = {}
    with torch.no_grad():
        for split in ("val", "test"):
            images = data.sets[split]
            pred = model(torch.from_numpy(images.all())).argmax(1).numpy()
            acc[split] = float((pred == images.labels).mean())
    with atomic_path(out) as tmp:
        torch.save(model.state_dict(), tmp)
    settings = {"dataset": dataset, "data_dir": data_dir, "epochs": epochs, "out": str(out)}
    write_json(
        out.with_suffix(".json"),
        {
            **provenance(seed=seed, inputs=data.files, settings=settings, libraries=("torch",)),
            "val_acc": acc["val"],
            "test_acc": acc["test"],
        },
    )
    return acc["val"], acc["test"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Bad input: one line and exit status 2, as hapi's commands do."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    from hapi_dse.errors import HapiError

    p = _Parser(
        prog="python -m hapi_dse.examples.pretrained",
        description="Pretrain the example network (hapi's stand-in for yours); save its "
        "state dict to OUT (and OUT.json, how it was made).",
    )
    p.add_argument("out", type=Path, metavar="OUT.pt")
    p.add_argument("--dataset", default="digits", help="digits (default) or fashion-mnist")
    p.add_argument("--data-dir", default=None, help="the dataset's files (as for hapi train)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error(f"--epochs {args.epochs}: expected at least 1")
    try:
        val, test = pretrain(
            args.out, dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs,
            seed=args.seed,
        )  # fmt: skip
    except HapiError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: val accuracy {100 * val:.1f} %, test {100 * test:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
