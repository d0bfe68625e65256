"""Opening an export: hapi's view of what ``hapi export`` wrote, checked before it is run.

:func:`open_export` opens a single-graph ``.onnx`` (its ``hapi.*`` metadata properties) or a
staged export directory (``manifest.json``, ``export.json``) as an :class:`Export`: the
recorded metadata, validated by :func:`check_meta`, and a function that runs one sample. A
staged export runs on hapi's own :mod:`~hapi_dse.deploy.staged_runtime`, never on the copy in
the directory (an export directory is data). :func:`load_runtime` imports that copy, for the
export's own end-to-end check and for tests that run the export as its user would.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hapi_dse.errors import ArtefactError, HapiError, first_line
from hapi_dse.readers import loads_json, read_json

#: version of an export's sidecar (``export.json``) and of a staged ``manifest.json``
EXPORT_SCHEMA_VERSION = 1
#: the runtime a staged export ships (a copy of :mod:`hapi_dse.deploy.staged_runtime`)
RUNTIME_FILE = "staged_runtime.py"
#: a staged export's description: stages, thresholds, temperatures
MANIFEST = "manifest.json"
#: the sidecar inside a staged export directory (a single graph's is ``NAME.export.json``)
STAGED_SIDECAR = "export.json"
#: prefix of the metadata properties of a single-graph export (``hapi.design``, ...)
META_PREFIX = "hapi."


@dataclass
class Export:
    """An opened export: how to run one sample, and what it holds."""

    path: Path
    fmt: str
    meta: dict[str, Any]
    runner: Any  # callable x -> (logits, exit_index)


def open_export(path: str | Path, threads: int = 1) -> Export:
    """Open a single-graph ``.onnx`` export or a staged export directory."""
    p = Path(path)
    if p.is_dir() or p.name == MANIFEST:
        root = p if p.is_dir() else p.parent
        if not (root / MANIFEST).is_file():
            raise ArtefactError(
                f"{root}: no manifest.json; not a 'hapi export --format staged' directory"
            )
        # hapi's own runtime, never the staged_runtime.py found in the directory: an export
        # directory is data, and code in it is not run (README "What hapi never does")
        from hapi_dse.deploy.staged_runtime import StagedModel

        try:
            # the guarded reader first: a file too deep or too large for the runtime's own
            # parser is refused in one line before the runtime reads it
            meta = read_json(root / MANIFEST)
            side = root / STAGED_SIDECAR
            if side.is_file():
                meta = {**read_json(side), **meta}
            staged = StagedModel(root, threads=threads)
        except HapiError as e:  # the readers' line names the file and the fault
            raise ArtefactError(f"{root}: not a valid staged export ({e})") from None
        except Exception as e:  # bad JSON, missing keys, onnxruntime's own exception types
            first = first_line(e)
            raise ArtefactError(f"{root}: not a valid staged export ({first})") from None
        check_meta(meta, root / MANIFEST)
        return Export(root, "staged", meta, staged.run)
    if not p.is_file():
        raise ArtefactError(f"{p}: no such file (expected a .onnx from 'hapi export')")
    from hapi_dse.onnx_tools import open_session

    try:  # the profile's session settings
        sess = open_session(p, threads=threads)
    except HapiError:
        raise
    except Exception as e:  # onnxruntime raises its own exception types
        first = first_line(e)
        raise ArtefactError(f"{p}: onnxruntime cannot load it ({first})") from None
    try:
        props = sess.get_modelmeta().custom_metadata_map
    except UnicodeDecodeError as e:  # onnxruntime decodes the properties as UTF-8
        raise ArtefactError(
            f"{p}: its metadata is not valid UTF-8 text (byte {e.start}); not a hapi export"
        ) from None
    meta = {}
    for k, v in props.items():
        if k.startswith(META_PREFIX):
            name = k[len(META_PREFIX) :]
            meta[name] = _meta_value(v, f"{p}: metadata {k}")
    if "design" not in meta:
        raise ArtefactError(
            f"{p}: not a hapi export (no hapi.design metadata); export it with 'hapi export'"
        )
    check_meta(meta, p)
    outputs = [o.name for o in sess.get_outputs()]
    if outputs[:2] != ["logits", "exit_index"]:
        raise ArtefactError(f"{p}: outputs {outputs}, expected logits and exit_index")

    def run_one(x: np.ndarray) -> tuple[np.ndarray, int]:
        z, idx = sess.run(None, {"input": x})
        return z, int(idx[0])

    return Export(p, str(meta.get("format", "onnx")), meta, run_one)


def _meta_value(text: str, where: str) -> Any:
    """A ``hapi.*`` metadata property: its JSON value, or the text itself when it is not
    JSON; a value past the readers' limits (nesting, integers) is refused in one line."""
    try:
        json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return text
    except (RecursionError, ValueError):
        pass  # too deep or an integer too long: loads_json says which, in one line
    return loads_json(text, where)


def check_meta(meta: Any, where: Path) -> None:
    """What ``hapi eval`` reads of an export's metadata (a staged ``manifest.json`` and
    ``export.json``, or a single graph's ``hapi.*`` properties): a valid design
    (:meth:`~hapi_dse.cost.design.Design.from_dict`), ``model_id`` and ``run`` strings, and
    ``slos`` as ``hapi search`` records them (:meth:`~hapi_dse.cost.slo.SLO.from_dict`).
    Checked before any sample is run."""
    import math

    from hapi_dse.cost.design import Design
    from hapi_dse.cost.slo import SLO

    fix = "export it again with 'hapi export'"
    if not isinstance(meta, dict) or "design" not in meta:
        raise ArtefactError(f"{where}: no design recorded (not a hapi export?); {fix}")
    try:
        Design.from_dict(meta["design"])
    except HapiError as e:
        raise ArtefactError(f"{where}: {e}") from None
    for key in ("model_id", "run"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise ArtefactError(f"{where}: {key} is {meta[key]!r}, expected a string; {fix}")
    for key, rule, good in (
        ("thresholds", "numbers in 0..1", lambda v: 0.0 <= v <= 1.0),
        ("temperatures", "numbers > 0", lambda v: v > 0.0),
    ):
        values = meta.get(key)
        if values is not None and not (
            isinstance(values, list)
            and all(
                isinstance(v, int | float)
                and not isinstance(v, bool)
                and math.isfinite(v)
                and good(v)
                for v in values
            )
        ):
            raise ArtefactError(
                f"{where}: {key} is {json.dumps(values, default=str)[:60]}, expected a list of "
                f"finite {rule}, one per exit; fix it there or {fix}"
            )
    slos = meta.get("slos") or []
    if not isinstance(slos, list):
        raise ArtefactError(
            f"{where}: slos is {json.dumps(slos, default=str)[:60]}, expected a list of SLOs "
            f"as 'hapi search' records them; {fix}"
        )
    for i, d in enumerate(slos):
        try:
            SLO.from_dict(d, name=f"slos[{i}]")
        except HapiError as e:
            raise ArtefactError(
                f"{where}: slos is not as 'hapi search' records them: {e}; {fix}"
            ) from None


def load_runtime(root: Path) -> Any:
    """Import the ``staged_runtime.py`` shipped in an export directory (not hapi's copy)."""
    import importlib.util

    path = Path(root) / RUNTIME_FILE
    spec = importlib.util.spec_from_file_location(f"_hapi_staged_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        raise ArtefactError(f"{path}: cannot load the staged runtime")
    mod = importlib.util.module_from_spec(spec)
    # no __pycache__ in the export: it holds only what hapi wrote (hapi_dse.ownership)
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.dont_write_bytecode = saved
    return mod
