"""What an export or an evaluation reads: the design file, the run, the dataset split.

A design comes from ``hapi search`` (``RESULT_DIR/DEVICE/design.json``, or any trial of
``RESULT_DIR/DEVICE/trials.csv``) or any file with the same keys. The samples are the run's
own split (same dataset, seed and ``--limit`` as ``hapi train``, read from ``train.json``),
normalised with the run's ``model.json`` statistics, so that sample ``i`` here is sample
``i`` of ``exits_<split>.npz``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hapi_dse.cost.design import Design
from hapi_dse.cost.metrics import find_metric
from hapi_dse.errors import ArtefactError, HapiError, SettingError, UsageError
from hapi_dse.provenance import sha256_file
from hapi_dse.readers import read_csv, read_json
from hapi_dse.run import RunDir, run_for_result
from hapi_dse.training_id import check_same_training


@dataclass(frozen=True)
class DesignFile:
    """A validated design and where it came from."""

    design: Design
    doc: dict[str, Any]
    path: Path
    sha256: str

    @property
    def model_id(self) -> str | None:
        mid = self.doc.get("model_id")
        return str(mid) if mid else None


def _find_in_result(p: Path, name: str, missing: str) -> Path:
    """``DIR/name``, or ``DIR/DEVICE/name`` when exactly one device folder has it."""
    if not p.exists():
        raise ArtefactError(f"{p}: no such file or directory (expected {missing})")
    if (p / name).is_file():
        return p / name
    found = sorted(p.glob(f"*/{name}"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ArtefactError(
            f"{p}: no {name} in it or in a device subdirectory; run 'hapi search --out DIR' "
            f"first or pass {missing}"
        )
    names = ", ".join(str(f.parent.name) for f in found)
    raise UsageError(
        f"{p}: holds results for several devices ({names}); pass one of them, "
        f"e.g. {found[0].parent}"
    )


def find_design(source: str | Path) -> Path:
    """``design.json`` itself, ``DIR/design.json``, or ``DIR/DEVICE/design.json`` if unique."""
    p = Path(source)
    if p.is_file():
        return p
    if p.is_dir() and not (p / "design.json").is_file() and not any(p.glob("*/design.json")):
        why = infeasible_search(p)
        if why is not None:
            raise ArtefactError(why)
    return _find_in_result(p, "design.json", "a search result directory or a design.json")


def infeasible_search(p: Path) -> str | None:
    """Why a search result ``p`` (or one of its device folders) holds no ``design.json``: the
    search found no feasible design. Says under which SLOs, how close its closest trial came
    and which ``--slo`` it would meet, from ``search.json``; None when no search.json there
    says the search was infeasible (older results say less, but say it too)."""
    found = (
        [p / "search.json"] if (p / "search.json").is_file() else sorted(p.glob("*/search.json"))
    )
    for f in found:
        try:
            doc = read_json(f)
        except HapiError:
            continue
        if isinstance(doc, dict) and doc.get("feasible") is False:
            return f"{f.parent}: {_infeasible_text(doc)}"
    return None


def _infeasible_text(doc: dict[str, Any]) -> str:
    from hapi_dse.cost.slo import SLO
    from hapi_dse.search.relax import relax_flags

    slos = []
    recorded = doc.get("slos")
    for d in recorded if isinstance(recorded, list) else []:
        try:
            slo = SLO.from_dict(d)
        except HapiError:
            continue  # a hint in an error message, not a check: a bad entry is left out
        if slo.text and slo.relative is not None:
            m = find_metric(slo.metric)
            unit = f" {m.unit}" if m is not None and m.unit else ""
            slos.append(f"{slo.text} (= {slo.value:.4g}{unit})")
        elif slo.text:
            slos.append(slo.text)
    under = f" under {'SLOs' if len(slos) > 1 else 'SLO'} {', '.join(slos)}" if slos else ""
    text = f"the search found no feasible design{under}, so it wrote no design.json"
    closest = doc.get("closest")
    first = closest[0] if isinstance(closest, list) and closest else None
    trial = first.get("trial") if isinstance(first, dict) else None
    if isinstance(trial, int) and not isinstance(trial, bool):
        broken = first.get("broken") if isinstance(first, dict) else None
        had = [b for b in broken if isinstance(b, str)] if isinstance(broken, list) else []
        if had:
            text += f"; the closest trial, {trial}, had {'; '.join(had)}"
        else:
            text += f"; the closest trial is {trial}"
    elif isinstance(doc.get("verify"), dict) and doc["verify"].get("verified_trials"):
        text += "; no verified design met every SLO as measured on this machine"
    eg = relax_flags(doc.get("relax"))
    if eg is not None:
        text += f"; relax the SLO (e.g. {eg}) and run 'hapi search' again"
    else:
        text += "; relax an SLO and run 'hapi search' again"
    if isinstance(trial, int) and not isinstance(trial, bool):
        text += f", or export that trial anyway with --trial {trial}"
    return text


def find_trials(source: str | Path) -> Path:
    """``trials.csv`` itself, ``DIR/trials.csv``, ``DIR/DEVICE/trials.csv`` if unique, or the
    ``trials.csv`` beside a ``design.json``."""
    p = Path(source)
    if p.is_file():
        return p if p.name == "trials.csv" else p.parent / "trials.csv"
    return _find_in_result(p, "trials.csv", "a search result directory")


def load_design(source: str | Path, trial: int | None = None) -> DesignFile:
    """The design of ``source`` (a search result or a ``design.json``), or with ``trial`` the
    design of that trial of the search, rebuilt exactly from its row of ``trials.csv``."""
    if trial is not None:
        return load_trial(source, trial)
    path = find_design(source)
    doc = read_json(path)  # one line for any parse failure or limit
    if not isinstance(doc, dict) or "exits" not in doc:
        raise ArtefactError(f"{path}: not a design (expected keys policy, policy_params, exits)")
    design = Design.from_dict(doc)
    return DesignFile(design=design, doc=doc, path=path, sha256=sha256_file(path))


def load_trial(source: str | Path, trial: int) -> DesignFile:
    """Trial ``trial`` of a search result: its ``trials.csv`` row as a design, with the model
    and device of the ``search.json`` beside it."""
    path = find_trials(source)
    need = ("trial", "state", "policy", "patience", "exits")
    try:
        rows = read_csv(path)
        if not set(need) <= set(rows.fieldnames):
            raise ValueError(f"expected the columns {', '.join(need)}")
        complete = [int(r["trial"]) for r in rows if r["state"] == "COMPLETE"]
    except (HapiError, ValueError) as e:
        raise ArtefactError(
            f"{path}: not a readable trials table of 'hapi search' ({e}); rerun the search"
        ) from None
    valid = f"the COMPLETE trials are {_ranges(complete)}" if complete else "no trial is COMPLETE"
    row = next((r for r in rows if r["trial"] == str(trial)), None)
    if row is None:
        raise SettingError("trial", f"{trial}: no such trial in {path}; {valid}")
    if row["state"] != "COMPLETE":
        raise SettingError(
            "trial",
            f"{trial}: trial {trial} of {path} is {row['state']}, only COMPLETE trials "
            f"have a design; {valid}",
        )
    info = path.parent / "search.json"
    try:
        search = read_json(info)
        if not isinstance(search, dict):
            raise ValueError("not a JSON object")
    except (HapiError, ValueError) as e:
        raise ArtefactError(
            f"{info}: cannot read the search's model and device ({e}); --trial needs the "
            "whole directory 'hapi search' wrote"
        ) from None
    try:
        patience = int(row["patience"] or 0)
        design = Design.from_compact(row["exits"], row["policy"], patience)
        Design.from_dict(design.to_dict())  # the ranges a design file must respect
    except (HapiError, ValueError) as e:
        raise ArtefactError(f"{path}: trial {trial}: {e}") from None
    doc = {
        "model_id": search.get("model_id"),
        "device": search.get("device"),
        **design.to_dict(),
        "slos": search.get("slos") or [],  # the SLOs it was searched under (hapi eval)
        "trial": trial,
        "provenance": search.get("provenance"),  # the run it was searched on
    }
    return DesignFile(design=design, doc=doc, path=path, sha256=sha256_file(path))


def _ranges(numbers: list[int], most: int = 6) -> str:
    """``0-4, 6, 8-149``: sorted integers as ranges, the first ``most`` of them."""
    spans: list[list[int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    text = [f"{a}" if a == b else f"{a}-{b}" for a, b in spans[:most]]
    return ", ".join(text) + (", ..." if len(spans) > most else "")


def design_run(design: DesignFile, model: str | Path | None) -> RunDir:
    """The run the design was searched on: ``--model``, else the run its search recorded
    (when still there), else the bundled example; ids must match."""
    run = run_for_result(model, design.doc)
    mid = design.model_id
    if mid is not None:  # a design that names no model has nothing to check
        holder = "--model" if model is not None else "the bundled example"
        check_same_training(
            f"{design.path}: design",
            mid,
            run,
            holder=f"{holder} {run.path}",
            fix=f"pass --model with the run directory of {mid}",
        )
    check_design(design.design, run, design.path)
    return run


def check_design(design: Design, run: RunDir, where: Path | str) -> None:
    columns = {(int(c["position"]), str(c["head"])) for c in run.model["columns"]}
    for e in design.exits:
        if (e.position, e.head) not in columns or e.head == "final":
            heads = sorted({h for _, h in columns} - {"final"})
            raise UsageError(
                f"{where}: exit {e.position}:{e.head} does not exist in model {run.model_id}: "
                f"positions 0..{run.num_blocks - 1}, heads {', '.join(heads)}"
            )


def exit_temperatures(design: Design, run: RunDir) -> list[float]:
    """The calibration temperature of each exit of the design (model.json ``temperatures``)."""
    cols = [(int(c["position"]), str(c["head"])) for c in run.model["columns"]]
    temps = run.model.get("temperatures")
    if temps is None or len(temps) != len(cols):
        raise ArtefactError(
            f"{run.path}/model.json: 'temperatures' missing or not one per "
            "column; retrain with this version of hapi"
        )
    return [float(temps[cols.index((e.position, e.head))]) for e in design.exits]


def _dataset_sha256(run: RunDir) -> str | None:
    """The content hash of the image folder or ``.npz`` the run was trained on, if any."""
    try:
        doc = read_json(run.path / "train.json")
        return str(doc["inputs"]["dataset"]["sha256"])
    except (HapiError, KeyError, TypeError):
        return None


def train_settings(run: RunDir) -> dict[str, Any]:
    p = run.path / "train.json"
    try:
        settings = read_json(p).get("settings") or {}
    except (HapiError, AttributeError):
        settings = {}
    return dict(settings) if isinstance(settings, dict) else {}


def _per_channel(values: float | list[float] | tuple[float, ...]) -> np.ndarray:
    """A recorded mean or std (a number, or one per channel) as float32 ``(1, C, 1, 1)``."""
    return np.asarray(values, np.float32).reshape(1, -1, 1, 1)


@dataclass
class Samples:
    x: np.ndarray  # (n, C, H, W) float32, normalised as in training
    y: np.ndarray  # (n,) int64
    dataset: str
    split: str


def load_samples(
    run: RunDir,
    split: str = "test",
    *,
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    first: int | None = None,
) -> Samples:
    """The run's ``split`` (same seed and limit as training), normalised like the model;
    with ``first``, only its first ``first`` samples are read (an image folder's split is
    decoded into memory here)."""
    from hapi_dse.data import load_splits

    if split not in ("train", "val", "test"):
        raise SettingError("split", f"{split!r}: expected train, val or test")
    settings = train_settings(run)
    name = dataset or str(run.model.get("dataset") or settings.get("dataset") or "")
    if not name:
        raise ArtefactError(f"{run.path}/model.json: no dataset recorded; pass --dataset")
    trained_on = run.model.get("dataset")
    same = trained_on in (None, name) or Path(name).resolve() == Path(str(trained_on)).resolve()
    recorded = _dataset_sha256(run)
    # an image folder or .npz elsewhere may be the run's own, moved: its content hash says
    maybe_same = same or (recorded is not None and Path(name).exists())
    folder = Path(name).is_dir()

    def load(reproduce: bool) -> Any:  # the run's split, or the dataset's own by seed 0
        return load_splits(
            name,
            data_dir=data_dir or settings.get("data_dir"),
            seed=int(settings.get("seed", 0)) if reproduce else 0,
            limit=settings.get("limit") if reproduce else None,
            image_size=settings.get("image_size") if folder else None,  # the model's input
            channels=settings.get("channels") if folder else None,
        )

    data = load(maybe_same)
    if maybe_same and not same and (data.identity or {}).get("sha256") != recorded:
        data = load(False)
    images = data.sets[split]
    n = len(images) if first is None else min(first, len(images))
    x = images.take(np.arange(n))
    shape = tuple(int(d) for d in run.model["arch"]["input_shape"])
    if tuple(x.shape[1:]) != shape:
        raise SettingError(
            "dataset",
            f"{name}: images of shape {tuple(x.shape[1:])}, but model {run.model_id} takes {shape}",
        )
    norm = run.model.get("normalization") or {}
    mean = _per_channel(norm.get("mean", data.mean))
    std = _per_channel(norm.get("std", data.std))
    ours = _per_channel(data.mean), _per_channel(data.std)
    if not (np.array_equal(mean, ours[0]) and np.array_equal(std, ours[1])):
        # bit-identical inputs when the run's split is reproduced exactly, else renormalised
        raw = x * ours[1] + ours[0]
        x = ((raw - mean) / std).astype(np.float32)
    return Samples(
        x=np.ascontiguousarray(x, np.float32), y=data.y[split][:n], dataset=name, split=split
    )
