"""Command lines for tests of hapi's CLI: the arguments that most ``hapi search`` and
``hapi train`` calls share, so that a test spells out only the ones it is about.

Every value is given as a string (paths included), as on a command line; ``extra`` comes
last, so that an option it repeats wins (argparse keeps the last one).
"""

from __future__ import annotations

from pathlib import Path


def search_args(
    model: str | Path,
    profiles: str | Path,
    out: str | Path,
    *extra: object,
    device: str | None = "devA",
    trials: int | str | None = None,
    seed: int | str | None = None,
) -> list[str]:
    """``search --model MODEL --profiles PROFILES [--device DEVICE] --out OUT [--trials N]
    [--seed S] EXTRA...``: ``device=None`` leaves ``--device`` to ``extra``."""
    args = ["search", "--model", str(model), "--profiles", str(profiles)]
    if device is not None:
        args += ["--device", device]
    args += ["--out", str(out)]
    if trials is not None:
        args += ["--trials", str(trials)]
    if seed is not None:
        args += ["--seed", str(seed)]
    return [*args, *map(str, extra)]


#: what :func:`train_args` passes unless told otherwise: one epoch of resnet20 with linear
#: heads, on sklearn's digits
TRAIN_DEFAULTS: dict[str, object] = {
    "dataset": "digits",
    "backbone": "resnet20",
    "heads": "linear",
    "epochs": 1,
    "exit_epochs": 1,
}


def train_args(out: str | Path, *extra: object, **options: object) -> list[str]:
    """``train --OPTION VALUE... --out OUT EXTRA...``: the options are :data:`TRAIN_DEFAULTS`
    updated with ``options`` (``exit_epochs=2`` gives ``--exit-epochs 2``; a value of
    ``None`` leaves that option out)."""
    args = ["train"]
    for name, value in {**TRAIN_DEFAULTS, **options}.items():
        if value is not None:
            args += ["--" + name.replace("_", "-"), str(value)]
    return [*args, "--out", str(out), *map(str, extra)]


def quick_train_args(out: str | Path, *extra: object, **options: object) -> list[str]:
    """:func:`train_args` of the quickest real training (64 digits, one batch of 64, one
    thread), for tests that train only to have a run directory at all."""
    return train_args(out, *extra, **{"batch_size": 64, "limit": 64, "threads": 1, **options})
