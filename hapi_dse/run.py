"""The run directory written by ``hapi train`` and read by every later stage (no torch here).

Layout (contract, DESIGN 2.1): ``model.json``, ``weights.pt``, ``exits_val.npz``,
``exits_test.npz``, ``train.json``, ``flops.csv``.
"""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from hapi_dse.errors import ArtefactError, HapiError, first_line
from hapi_dse.exit_stats import ExitStats
from hapi_dse.outdirs import OUTPUT_KINDS
from hapi_dse.provenance import sha256_file
from hapi_dse.readers import read_csv, read_json, torch_load_weights

RUN_FILES: tuple[str, ...] = OUTPUT_KINDS["run"]["names"]  # what 'hapi train' writes
EXAMPLES_DIR = Path(__file__).parent / "examples"
DEFAULT_EXAMPLE = "fashion-mnist"

_PLAIN = (bool, int, float, str, type(None))

#: the sha256 of a run's ``weights.pt`` as model.json records it: a ``weights.pt`` that does
#: not match is refused (integrity). The identity every artefact compares is ``model_id``,
#: which covers the weights too (:func:`hapi_dse.models.early_exit.model_id`)
WEIGHTS_KEY = "weights_sha256"
_HEX = frozenset("0123456789abcdef")


def _is_sha256(value: Any) -> bool:
    """Whether ``value`` is a recorded digest: 64 lowercase hex digits."""
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


def _digest(value: Any, where: str | Path, key: str, name: str, fix: str = "") -> str | None:
    """A recorded digest ``key`` of the file ``name``: the digest, or ``None`` when not
    recorded; anything but 64 hex digits is refused (``fix``: what the message adds)."""
    if value is None:
        return None
    if _is_sha256(value):
        return str(value)
    raise ArtefactError(
        f"{where}: {key} is {str(value)[:80]!r}, expected the sha256 of {name} (64 hex digits){fix}"
    )


def weights_digest(value: Any, where: str | Path) -> str | None:
    """A recorded ``weights_sha256``: the digest, or ``None`` when not recorded (a run
    older than the key: accepted); anything but 64 hex digits is refused."""
    return _digest(value, where, WEIGHTS_KEY, "weights.pt")


#: the sha256 of each exit statistics file as model.json records it, by split (``{"val": ...,
#: "test": ...}``): statistics of another training copied into a run are refused, as a swapped
#: weights.pt is (a run older than the key is accepted)
STATS_KEY = "exits_sha256"


def stats_digest(record: Any, split: str, where: str | Path) -> str | None:
    """The recorded sha256 of ``exits_{split}.npz`` in model.json's :data:`STATS_KEY`, or
    ``None`` when not recorded; a record that is not an object of 64-hex-digit digests is
    refused."""
    if record is None:
        return None
    if not isinstance(record, dict):
        raise ArtefactError(
            f"{where}: {STATS_KEY} is {str(record)[:80]!r}, expected an object with the "
            "sha256 of exits_val.npz and exits_test.npz; rerun 'hapi train'"
        )
    return _digest(
        record.get(split),
        where,
        f"{STATS_KEY}.{split}",
        f"exits_{split}.npz",
        "; rerun 'hapi train'",
    )


@dataclass(frozen=True)
class CodeTrust:
    """Which code a run directory's model.json may run when its model is built.

    A run directory is data (DESIGN 3: never execute code named by a file it reads): by
    default (:data:`REGISTERED_ONLY`) only registered backbones are built; ``backbone``
    allows the one factory it names (``--backbone MODULE:FACTORY``), ``trust`` any
    (``--trust-run-code``). The CLI fills it from those two flags
    (:func:`hapi_dse.cli.options.run_code`), the API from its ``trust_code=`` and
    ``backbone=`` keywords; every step in between passes it on unchanged to
    :meth:`RunDir.check_arch`.
    """

    trust: bool = False
    backbone: str | None = None

    def allows(self, name: str) -> bool:
        """Whether a model.json naming backbone ``name`` may be built: a registered name
        always, a ``package.module:factory`` only when trusted or named."""
        return ":" not in name or self.trust or name == self.backbone


#: the default: a run directory builds registered backbones only, no code it names
REGISTERED_ONLY = CodeTrust()


def _plain_value(v: Any) -> bool:
    if isinstance(v, list):
        return all(_plain_value(x) for x in v)
    return isinstance(v, _PLAIN)


def _check_model_json(p: Path, data: dict[str, Any]) -> None:
    """Types and ranges of the model.json keys every command reads (DESIGN 2.1)."""

    def fail(key: str, rule: str, value: Any) -> ArtefactError:
        shown = json.dumps(value, default=str)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return ArtefactError(f"{p}: {key} must be {rule}, got {shown}; rerun 'hapi train'")

    def is_int(v: Any, low: int = 0) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= low

    def is_num(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    mid = data["model_id"]
    if not isinstance(mid, str) or not mid:
        raise fail("model_id", "a non-empty string", mid)
    arch = data["arch"]
    if not isinstance(arch, dict):
        raise fail("arch", "an object", arch)
    if "num_classes" in arch and not is_int(arch["num_classes"], 1):
        raise fail("arch.num_classes", "an integer >= 1", arch["num_classes"])
    if "heads" in arch and not (
        isinstance(arch["heads"], list) and all(isinstance(h, str) and h for h in arch["heads"])
    ):
        raise fail("arch.heads", "a list of head types", arch["heads"])
    shape = arch.get("input_shape", [1])
    if not (isinstance(shape, list) and shape and all(is_int(d, 1) for d in shape)):
        raise fail("arch.input_shape", "a list of sizes >= 1, e.g. [1, 28, 28]", shape)
    exits = data["exits"]
    if not (
        isinstance(exits, list)
        and exits
        and all(isinstance(e, dict) and is_int(e.get("position")) for e in exits)
    ):
        raise fail("exits", "a non-empty list of objects with a 'position' >= 0", exits)
    cols = data["columns"]
    if not (
        isinstance(cols, list)
        and cols
        and all(
            isinstance(c, dict) and is_int(c.get("position")) and isinstance(c.get("head"), str)
            for c in cols
        )
    ):
        raise fail("columns", "a non-empty list of {position, head} objects", cols)
    temps = data.get("temperatures")
    if temps is not None and not (
        isinstance(temps, list)
        and len(temps) == len(cols)
        and all(is_num(t) and t > 0 for t in temps)
    ):
        raise fail(
            "temperatures", f"a list of {len(cols)} finite numbers > 0 (one per column)", temps
        )

    def per_channel(v: Any, positive: bool) -> bool:  # a number, or one per channel
        values = v if isinstance(v, list) and v else [v]
        return all(is_num(x) and (x > 0 or not positive) for x in values)

    norm = data.get("normalization")
    if norm is not None and not (
        isinstance(norm, dict)
        and per_channel(norm.get("mean", 0.0), False)
        and per_channel(norm.get("std", 1.0), True)
    ):
        raise fail(
            "normalization",
            "{mean, std}, each a finite number or a list of one per channel, std > 0",
            norm,
        )
    for key in ("dataset",):
        if key in data and data[key] is not None and not isinstance(data[key], str):
            raise fail(key, "a string", data[key])


class RunDir:
    """A run directory, validated on open; torch is needed only to build the model."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise ArtefactError(f"{self.path}: no such run directory (from 'hapi train --out')")
        missing = [
            f
            for f in ("model.json", "exits_val.npz", "exits_test.npz")
            if not (self.path / f).is_file()
        ]
        if missing:
            raise ArtefactError(f"{self.path}: not a run directory, missing {', '.join(missing)}")

    @cached_property
    def model(self) -> dict[str, Any]:
        p = self.path / "model.json"
        data: dict[str, Any] = read_json(p)  # one line for any parse failure or limit
        if not isinstance(data, dict):
            raise ArtefactError(
                f"{p}: expected a JSON object (model_id, arch, exits, columns...), got a "
                f"{type(data).__name__}; rerun 'hapi train'"
            )
        for key in ("model_id", "arch", "exits", "columns"):
            if key not in data:
                raise ArtefactError(f"{p}: missing key {key!r}")
        _check_model_json(p, data)
        return data

    @property
    def model_id(self) -> str:
        return str(self.model["model_id"])

    @cached_property
    def weights_sha256(self) -> str | None:
        """The sha256 of ``weights.pt``, checked against model.json's record when it has one
        (a swapped ``weights.pt`` is refused; runs older than the key are accepted); the
        record alone without ``weights.pt``, ``None`` when neither exists."""
        recorded = weights_digest(self.model.get(WEIGHTS_KEY), self.path / "model.json")
        p = self.path / "weights.pt"
        if not p.is_file():
            return recorded
        return self._checked_sha256(p, recorded, WEIGHTS_KEY, "weights.pt")

    @property
    def num_blocks(self) -> int:
        return len(self.model["exits"])

    def stats(self, split: str) -> ExitStats:
        if split not in ("val", "test"):
            raise ValueError(split)
        classes = self.model["arch"].get("num_classes")
        stats = ExitStats.load(self.path / f"exits_{split}.npz", classes)
        want = [(int(c["position"]), str(c["head"])) for c in self.model["columns"]]
        have = list(zip(stats.position.tolist(), stats.head.tolist(), strict=True))
        if have != want:
            i = next(
                (i for i, (a, b) in enumerate(zip(have, want, strict=False)) if a != b),
                min(len(have), len(want)),
            )
            got = have[i] if i < len(have) else "none"
            says = want[i] if i < len(want) else "none"
            raise ArtefactError(
                f"{self.path / f'exits_{split}.npz'}: its columns (position, head) do not match "
                f"model.json's 'columns': column {i} is {got}, model.json says {says} "
                f"({len(have)} vs {len(want)} columns); the statistics belong to another "
                "model: rerun 'hapi train'"
            )
        self._check_stats_digest(split)
        return stats

    def _check_stats_digest(self, split: str) -> None:
        """Refuse an ``exits_{split}.npz`` whose sha256 is not the one model.json records (the
        statistics of another training of the same architecture: its columns match, its
        figures do not belong to this model_id)."""
        recorded = stats_digest(self.model.get(STATS_KEY), split, self.path / "model.json")
        if recorded is None:
            return
        p = self.path / f"exits_{split}.npz"
        self._checked_sha256(p, recorded, f"{STATS_KEY}.{split}", "the exit statistics")

    def _checked_sha256(self, p: Path, recorded: str | None, key: str, what: str) -> str:
        """The sha256 of the run's file ``p``; one that is not the digest model.json records
        under ``key`` (``what``: the file in words) is refused."""
        actual = sha256_file(p)
        if recorded is not None and actual != recorded:
            raise ArtefactError(
                f"{p}: sha256 {actual[:12]}... is not the {key} {recorded[:12]}... that "
                f"model.json records for {self.model_id} ({what} of another training?); "
                f"restore this run's {p.name} or train again"
            )
        return actual

    def flops(self) -> list[dict[str, Any]]:
        p = self.path / "flops.csv"
        if not p.is_file():
            raise ArtefactError(f"{p}: file not found")
        try:
            rows = list(read_csv(p))
            for i, r in enumerate(rows):
                for col in ("position", "flops", "params"):
                    v = r.get(col)
                    if v is None or not v.strip().isdigit():
                        raise ValueError(f"line {i + 2}: {col} is {v!r}, expected an integer >= 0")
                    r[col] = int(v)
        except ValueError as e:
            raise ArtefactError(f"{p}: not a flops table of 'hapi train' ({e})") from None
        return rows

    def check_arch(self, code: CodeTrust = REGISTERED_ONLY) -> None:
        """Refuse a model.json whose backbone is code (``package.module:factory``) unless
        ``code`` allows it (:class:`CodeTrust`: ``--backbone MODULE:FACTORY`` names that
        factory, or ``--trust-run-code``): a run directory is data (DESIGN 3: never execute
        code named by a file it reads). ``backbone_kwargs`` must be plain JSON data."""
        p = self.path / "model.json"
        arch = self.model["arch"]
        if not isinstance(arch, dict):
            raise ArtefactError(f"{p}: 'arch' must be an object")
        name = arch.get("backbone")
        if not isinstance(name, str):
            raise ArtefactError(f"{p}: arch.backbone must be a backbone name, got {name!r}")
        if not code.allows(name):
            from hapi_dse.models.backbones import BACKBONES

            raise ArtefactError(
                f"{p} names backbone {name!r}, which is code, not a registered backbone "
                f"({', '.join(BACKBONES.names())}): pass --backbone {name} to run it, "
                "or --trust-run-code"
            )
        kw = arch.get("backbone_kwargs", {})
        if not isinstance(kw, dict) or not all(
            isinstance(k, str) and _plain_value(v) for k, v in kw.items()
        ):
            raise ArtefactError(
                f"{p}: arch.backbone_kwargs must map names to numbers, strings, booleans "
                f"or lists of them, got {json.dumps(kw)[:80]}"
            )
        need = [k for k in ("heads", "input_shape", "num_classes") if k not in arch]
        if need:  # what building the network needs (their types: _check_model_json)
            raise ArtefactError(f"{p}: arch lacks {', '.join(need)}; rerun 'hapi train'")

    def load_model(self, code: CodeTrust = REGISTERED_ONLY) -> Any:
        """The trained :class:`~hapi_dse.models.early_exit.EarlyExitNet`, in eval mode.

        Builds only a registered backbone unless code was allowed (see :meth:`check_arch`).
        """
        from hapi_dse.models.early_exit import build

        self.check_arch(code)
        net = build(self.model["arch"])
        p = self.path / "weights.pt"
        _ = self.weights_sha256  # a swapped weights.pt is refused
        try:
            state = torch_load_weights(p)
            net.load_state_dict(state)
        except FileNotFoundError:
            raise ArtefactError(f"{p}: file not found") from None
        except Exception as e:  # random bytes make torch's unpickler raise
            # almost anything (UnpicklingError, EOFError, BadZipFile, even IndexError)
            first = first_line(e, limit=120) if str(e).strip() else ""
            if isinstance(e, pickle.UnpicklingError):  # torch's text is a page of advice
                first = "not a PyTorch state dict"
            raise ArtefactError(
                f"{p}: cannot load weights ({type(e).__name__}{': ' + first if first else ''}); "
                "expected the state dict 'hapi train' wrote: restore it or train again"
            ) from None
        return net.eval()

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"


def bundled_example(name: str = DEFAULT_EXAMPLE) -> Path:
    return EXAMPLES_DIR / name


def resolve_run(model: str | Path | None) -> RunDir:
    """``--model`` or, when omitted, the bundled example shipped with the package."""
    if model is None:
        p = bundled_example()
        if not (p / "model.json").is_file():
            raise ArtefactError(
                f"the bundled example is missing from {p}; rebuild it with 'make example' "
                "or pass --model RUN_DIR"
            )
        return RunDir(p)
    return RunDir(model)


def recorded_run(doc: Any) -> RunDir | None:
    """The run a search result was searched on, as its ``design.json`` or ``search.json``
    records it (the directory of the exit statistics it read), if that run is still there
    and is the model the result names; else None."""
    from hapi_dse.training_id import same_training

    try:
        stats = Path(doc["provenance"]["inputs"]["exits_val"]["path"])
        run = RunDir(stats.parent)
        return run if same_training(doc.get("model_id"), run.model_id) else None
    except (KeyError, TypeError, HapiError, OSError):
        return None


def run_for_result(model: str | Path | None, doc: Any) -> RunDir:
    """``--model``; else the run recorded in the result ``doc`` (:func:`recorded_run`);
    else the bundled example."""
    if model is None:
        run = recorded_run(doc)
        if run is not None:
            return run
    return resolve_run(model)
