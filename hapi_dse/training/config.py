"""``hapi train``'s settings (:class:`TrainConfig`, :class:`Distill`), checked before any
work starts. No torch here: ``hapi train --help`` reads its defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hapi_dse.errors import SettingError, UsageError


@dataclass(frozen=True)
class Distill:
    """Knowledge distillation (Hinton et al. 2015): soft targets at temperature ``T``."""

    temperature: float
    alpha: float

    @classmethod
    def parse(cls, text: str) -> Distill:
        t, sep, a = text.partition(":")
        try:
            if not sep:
                raise ValueError
            out = cls(float(t), float(a))
        except ValueError:
            raise SettingError("distill", f"{text!r}: expected T:alpha, e.g. 3:0.5") from None
        if not (math.isfinite(out.temperature) and out.temperature > 0) or not 0 <= out.alpha <= 1:
            raise SettingError(
                "distill", f"{text!r}: T must be > 0 (and finite) and alpha in 0..1, e.g. 3:0.5"
            )
        return out


@dataclass
class TrainConfig:
    """Every setting of ``hapi train`` (recorded in ``train.json``); ``out`` is the run
    directory to write."""

    out: Path
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    backbone: str = "resnet32"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    heads: tuple[str, ...] = ("linear", "conv", "mlp")
    epochs: int = 20
    exit_epochs: int = 8
    batch_size: int = 128
    lr: float = 0.1
    exit_lr: float = 2e-3
    weight_decay: float = 5e-4
    distill: Distill | None = None
    init: Path | None = None
    augment: bool = True
    seed: int = 0
    threads: int | None = None
    limit: int | None = None
    image_size: str | None = None  # image folders: SIZE or WIDTHxHEIGHT to resize to
    channels: int | None = None  # image folders: 1 (grey) or 3 (RGB); default from the files
    accelerator: str = "auto"  # auto (cuda when available), cpu or cuda
    amp: bool | None = None  # mixed precision on CUDA (None: off); refused on the CPU
    overwrite: bool = False  # replace a previous run in ``out``

    def validate(self) -> None:
        from hapi_dse.models.backbones import BACKBONES
        from hapi_dse.models.heads import HEADS

        if ":" not in self.backbone and self.backbone not in BACKBONES:
            BACKBONES.get(self.backbone)  # raises the 'unknown backbone' error
        for h in self.heads:
            HEADS.get(h)
        if not self.heads:
            raise SettingError("heads", ": expected at least one head type")
        if self.epochs < 0 or self.exit_epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise SettingError(
                "epochs",
                ">= 0, {exit_epochs} >= 1, {batch_size} >= 1 and {lr} > 0 must hold",
                ("exit_epochs", "batch_size", "lr"),
            )
        for name, rate in (("lr", self.lr), ("exit_lr", self.exit_lr)):
            if not (math.isfinite(rate) and rate > 0):  # NaN passes 'rate <= 0'
                raise SettingError(
                    name,
                    f"{rate}: a learning rate must be a finite number > 0, e.g. "
                    f"{{{name}}} {0.1 if name == 'lr' else 0.002}",
                    (name,),
                )
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UsageError(f"weight decay {self.weight_decay}: must be a finite number >= 0")
        if self.limit is not None and self.limit < 1:
            raise SettingError("limit", f"{self.limit}: expected a number of images >= 1")
        if self.channels not in (None, 1, 3):
            raise SettingError("channels", f"{self.channels}: expected 1 (grey) or 3 (RGB)")
        if self.image_size is not None:
            from hapi_dse.data.folders import parse_image_size

            parse_image_size(self.image_size)
        if self.init is None and self.epochs == 0:
            raise SettingError(
                "epochs", "0 needs {init} CHECKPOINT (a trained backbone)", ("init",)
            )
        if self.init is not None and not Path(self.init).is_file():
            raise SettingError("init", f"{self.init}: no such file")
