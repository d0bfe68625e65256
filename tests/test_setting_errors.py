"""Configs speak Python, the CLI speaks flags: a bad setting is named by its field from the
library (``trials must be >= 1``) and by its flag from the command line (``--trials ...``),
from one error (:class:`hapi_dse.errors.SettingError`) translated by the CLI."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hapi_dse.errors import SettingError, UsageError
from hapi_dse.search.config import SearchConfig, check_config


def _refusal(**settings: object) -> str:
    cfg = dataclasses.replace(SearchConfig(devices=("pixel6",)), **settings)
    with pytest.raises(SettingError) as info:
        check_config(cfg)
    return str(info.value)


@pytest.mark.parametrize(
    "settings, text",
    [
        ({"trials": 0}, "trials must be >= 1, but got 0"),
        ({"jobs": 0}, "jobs must be >= 1, but got 0"),
        ({"timeout": -1.0}, "timeout must be > 0 seconds, but got -1"),
        ({"devices": ()}, "devices: expected one or more device names, e.g. pixel6"),
        ({"study": "s"}, "study names a study in storage; give storage URL too"),
    ],
)
def test_the_library_names_the_field(settings: dict[str, object], text: str) -> None:
    got = _refusal(**settings)
    assert got == text
    assert "--" not in got


def test_the_translation_names_each_setting_once_and_keeps_the_rest() -> None:
    e = SettingError("study", "names a study in {storage}; give {storage} URL too", ("storage",))
    flagged = e.as_flag({"study": "--study", "storage": "--storage"})
    assert str(flagged) == "--study names a study in --storage; give --storage URL too"
    assert isinstance(flagged, UsageError) and flagged.field == "study"
    # a field without a flag keeps its name (a library-only setting)
    assert str(e.as_flag({})) == str(e)


@pytest.mark.parametrize(
    "argv, line",
    [
        (["--trials", "0"], "--trials must be >= 1, but got 0"),
        (["--jobs", "0"], "--jobs must be >= 1, but got 0"),
        (["--timeout", "-1"], "--timeout must be > 0 seconds, but got -1"),
        (["--study", "s"], "--study names a study in --storage; give --storage URL too"),
    ],
)
def test_the_command_line_names_the_flag(run_cli, tmp_path: Path, argv, line) -> None:
    res = run_cli("search", "--device", "pixel6", "--out", tmp_path / "out", *argv)
    assert res.exit_code == 2
    assert res.stderr.strip() == f"hapi: error: {line}"
    assert not (tmp_path / "out").exists()


def test_every_flag_of_every_command_maps_to_its_parameter() -> None:
    """flags() gives each option's long flag under its parameter's name (and a repeatable
    one under the plural too), so a SettingError about any option finds its flag."""
    import click

    from hapi_dse.cli import COMMANDS, cli, flags

    ctx = click.Context(cli)
    for name in COMMANDS:
        cmd = cli.get_command(ctx, name)
        assert cmd is not None
        got = flags(cmd)
        for p in cmd.params:
            if isinstance(p, click.Option) and any(o.startswith("--") for o in p.opts):
                assert got[p.name] in p.opts and re.fullmatch(r"--[a-z0-9-]+", got[p.name])
                if p.multiple:
                    assert got[f"{p.name}s"] == got[p.name]


# -- every converted refusal: the field from the library, the flag from the command line ------


@dataclasses.dataclass(frozen=True)
class Refusal:
    """One setting refused: ``call`` (given tmp_path) raises the library's text ``library``;
    ``argv`` (given tmp_path) is a command line refused with ``line`` (``{tmp}`` is
    tmp_path in both texts); ``argv`` None: the library only."""

    call: Callable[[Path], object]
    library: str
    argv: Callable[[Path], list[object]] | None = None
    line: str = ""


def _train_config(tmp: Path, **kw: object) -> None:
    from hapi_dse.training.config import TrainConfig

    TrainConfig(out=tmp / "run", **kw).validate()  # type: ignore[arg-type]


def _profile_config(**kw: object) -> None:
    from hapi_dse.profiling.modes import ProfileConfig

    ProfileConfig(**kw).validate()  # type: ignore[arg-type]


def _export_config(tmp: Path, out: Path, **kw: object) -> None:
    from hapi_dse.deploy.export import ExportConfig

    ExportConfig(source=tmp / "design.json", out=out, **kw).validate()  # type: ignore[arg-type]


def _staged_onto_a_file(tmp: Path) -> None:
    (tmp / "f").write_text("x")
    _export_config(tmp, tmp / "f", fmt="staged")


def _call(name: str, *args: object, **kw: object) -> Callable[[Path], object]:
    """``module:function`` (or ``module:Class.method``) of hapi_dse called with ``args`` and
    ``kw``, imported only when run."""
    import importlib

    module, _, path = name.partition(":")

    def call(tmp: Path) -> object:
        fn: Any = importlib.import_module(f"hapi_dse.{module}")
        for attr in path.split("."):
            fn = getattr(fn, attr)
        return fn(*args, **kw)

    return call


def _export_argv(tmp: Path, *argv: str) -> list[object]:
    (tmp / "f").write_text("x")  # a file where a staged export would go
    return ["export", tmp / "design.json", *argv]


def _search(*argv: str) -> Callable[[Path], list[object]]:
    return lambda tmp: ["search", "--device", "pixel6", "--out", tmp / "out", *argv]


def _train(*argv: str) -> Callable[[Path], list[object]]:
    return lambda tmp: ["train", "--out", tmp / "run", *argv]


def _profile(*argv: str) -> Callable[[Path], list[object]]:
    def build(tmp: Path) -> list[object]:
        (tmp / "seg").mkdir(exist_ok=True)
        return ["profile", "--profiles", tmp / "profiles", *argv]

    return build


REFUSALS = {
    "train-heads": Refusal(
        lambda tmp: _train_config(tmp, heads=()),
        "heads: expected at least one head type",
    ),
    "train-epochs-0": Refusal(
        lambda tmp: _train_config(tmp, epochs=0),
        "epochs 0 needs init CHECKPOINT (a trained backbone)",
        _train("--epochs", "0"),
        "--epochs 0 needs --init CHECKPOINT (a trained backbone)",
    ),
    "train-init": Refusal(
        lambda tmp: _train_config(tmp, init=tmp / "none.pt"),
        "init {tmp}/none.pt: no such file",
        lambda tmp: ["train", "--out", tmp / "run", "--init", tmp / "none.pt"],
        "--init {tmp}/none.pt: no such file",
    ),
    "train-rates": Refusal(
        lambda tmp: _train_config(tmp, batch_size=0),
        "epochs >= 0, exit_epochs >= 1, batch_size >= 1 and lr > 0 must hold",
    ),
    "train-exit-lr": Refusal(
        lambda tmp: _train_config(tmp, exit_lr=float("nan")),
        "exit_lr nan: a learning rate must be a finite number > 0, e.g. exit_lr 0.002",
    ),
    "train-distill": Refusal(
        _call("training.config:Distill.parse", "fast"),
        "distill 'fast': expected T:alpha, e.g. 3:0.5",
        _train("--distill", "fast"),
        "--distill 'fast': expected T:alpha, e.g. 3:0.5",
    ),
    "train-image-size": Refusal(
        _call("data.folders:parse_image_size", "0"),
        "image_size '0': expected SIZE or WIDTHxHEIGHT in pixels, e.g. 64 or 64x48",
        _train("--image-size", "0"),
        "--image-size '0': expected SIZE or WIDTHxHEIGHT in pixels, e.g. 64 or 64x48",
    ),
    "train-image-size-not-a-folder": Refusal(
        _call("data.datasets:load_splits", "digits", image_size="8"),
        "image_size and channels apply to image folders, not to digits",
        _train("--dataset", "digits", "--image-size", "8"),
        "--image-size and --channels apply to image folders, not to digits",
    ),
    "train-data-dir": Refusal(
        _call("data.datasets:find_data_dir", "/nonexistent/fmnist/"),
        "data_dir /nonexistent/fmnist: no such directory",
        _train("--data-dir", "/nonexistent/fmnist/"),
        "--data-dir /nonexistent/fmnist: no such directory",
    ),
    "train-amp-on-cpu": Refusal(
        _call("training.device:select_accelerator", "auto", True, cuda=False),
        "amp: mixed precision is for CUDA only; this run is on the CPU",
    ),
    "train-backbone-factory": Refusal(
        _call("models.backbones:load_factory", ":x"),
        "backbone ':x': expected a registered name or package.module:factory",
    ),
    "profile-onnx-dir-and-model": Refusal(
        lambda tmp: _profile_config(onnx_dir="seg", model="run"),
        "onnx_dir and model exclude each other: the segments in onnx_dir were exported from "
        "a model already",
        lambda tmp: [*_profile("--onnx-dir", tmp / "seg")(tmp), "--model", tmp / "run"],
        "--onnx-dir and --model exclude each other: the segments in --onnx-dir were exported "
        "from a model already",
    ),
    "profile-export-only": Refusal(
        lambda tmp: _profile_config(mode="export-only"),
        "export_only needs export_dir DIR (where to put the segments)",
        _profile("--export-only"),
        "--export-only needs --export-dir DIR (where to put the segments)",
    ),
    "profile-modelled-energy": Refusal(
        lambda tmp: _profile_config(mode="modelled", energy_cmd="meter"),
        "energy_cmd measures energy; a modelled table has none to meter",
        _profile("--modelled", "--energy-cmd", "meter"),
        "--energy-cmd measures energy; a --modelled table has none to meter",
    ),
    "profile-device-name": Refusal(
        lambda tmp: _profile_config(device="a b"),
        "device 'a b': use letters, digits, '-', '_' or '.' (it names a directory)",
        _profile("--device", "a b"),
        "--device 'a b': use letters, digits, '-', '_' or '.' (it names a directory)",
    ),
    "profile-energy-cmd-empty": Refusal(
        _call("profiling.energy:check_energy_cmd", ""),
        "energy_cmd '' is empty: give a command that prints joules, or leave energy_cmd out "
        "(RAPL, NVML, else modelled energy)",
        lambda tmp: [*_profile("--onnx-dir", tmp / "seg")(tmp), "--energy-cmd", ""],
        "--energy-cmd '' is empty: give a command that prints joules, or leave --energy-cmd "
        "out (RAPL, NVML, else modelled energy)",
    ),
    "profile-batch": Refusal(
        lambda tmp: _profile_config(batch=0),
        "batch 0: must be >= 1",
    ),
    "export-out-suffix": Refusal(
        lambda tmp: _export_config(tmp, tmp / "m.txt"),
        "out {tmp}/m.txt: expected a file name ending in .onnx (format onnx)",
        lambda tmp: ["export", tmp / "design.json", "--out", tmp / "m.txt"],
        "--out {tmp}/m.txt: expected a file name ending in .onnx (format onnx)",
    ),
    "export-staged-onto-a-file": Refusal(
        _staged_onto_a_file,
        "out {tmp}/f: is a file; fmt staged writes a directory",
        lambda tmp: [*_export_argv(tmp, "--format", "staged"), "--out", tmp / "f"],
        "--out {tmp}/f: is a file; --format staged writes a directory",
    ),
    "export-check-samples": Refusal(
        lambda tmp: _export_config(tmp, tmp / "m.onnx", check_samples=0),
        "check_samples 0: expected >= 1",
        lambda tmp: ["export", tmp / "d.json", "--out", tmp / "m.onnx", "--check-samples", "0"],
        "--check-samples 0: expected >= 1",
    ),
    "export-opset": Refusal(
        lambda tmp: _export_config(tmp, tmp / "m.onnx", opset=6),
        "opset 6: expected {opset} (tested), at least 7",
        lambda tmp: ["export", tmp / "d.json", "--out", tmp / "m.onnx", "--opset", "6"],
        "--opset 6: expected {opset} (tested), at least 7",
    ),
    "search-slo-twice": Refusal(
        _call("cost:parse_slos", ["latency=5ms", "latency_ms=4"]),
        "slos 'latency_ms=4': latency_ms is already bounded by slos 'latency=5ms'; give each "
        "metric once",
        _search("--slo", "latency=5ms", "--slo", "latency_ms=4"),
        "--slo 'latency_ms=4': latency_ms is already bounded by --slo 'latency=5ms'; give each "
        "metric once",
    ),
    "search-slo-text": Refusal(
        _call("cost:parse_slo", "latency=-5ms"),
        "slos 'latency=-5ms': latency must be >= 0, but got -5",
        _search("--slo", "latency=-5ms"),
        "--slo 'latency=-5ms': latency must be >= 0, but got -5",
    ),
    "search-objectives": Refusal(
        _call("cost:parse_objectives", "accuracy,accuracy"),
        "objectives 'accuracy,accuracy': accuracy is listed twice",
        _search("--objectives", "accuracy,accuracy"),
        "--objectives 'accuracy,accuracy': accuracy is listed twice",
    ),
    "search-pick": Refusal(
        _call("search.picking:check_pick", "knee:3"),
        "pick knee:3: only iso_accuracy takes a value (iso_accuracy:D)",
        _search("--pick", "knee:3"),
        "--pick knee:3: only iso_accuracy takes a value (iso_accuracy:D)",
    ),
    "search-storage": Refusal(
        _call("search.storage:check_journal", "journal:"),
        "storage 'journal:': names no journal file; expected journal:FILE, e.g. journal:study.log",
        _search("--storage", "journal:"),
        "--storage 'journal:': names no journal file; expected journal:FILE, e.g. "
        "journal:study.log",
    ),
    "search-storage-url": Refusal(
        _call("search.storage:open_storage", "nonsense"),
        "storage 'nonsense': expected an Optuna storage URL: sqlite:///FILE.db, "
        "postgresql://USER@HOST:PORT/DB, or journal:FILE for a journal file",
        _search("--storage", "nonsense"),
        "--storage 'nonsense': expected an Optuna storage URL: sqlite:///FILE.db, "
        "postgresql://USER@HOST:PORT/DB, or journal:FILE for a journal file",
    ),
    "search-space": Refusal(
        _call("search.space:load_space", "missing.toml"),
        "space 'missing.toml': no such file",
        _search("--space", "missing.toml"),
        "--space 'missing.toml': no such file",
    ),
    "plot-out": Refusal(
        _call("plotting.render:output_paths", Path("x.gif"), ["d"]),
        "out x.gif: expected a file ending in .png, .svg, .pdf",
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_a_refusal_names_the_field_from_the_library(name: str, tmp_path: Path) -> None:
    case = REFUSALS[name]
    with pytest.raises(SettingError) as info:
        case.call(tmp_path)
    got = str(info.value)
    assert got == _text(case.library, tmp_path)
    assert "--" not in got.replace(str(tmp_path), "TMP")
    assert got.startswith(info.value.field)


def _text(template: str, tmp: Path) -> str:
    from hapi_dse.onnx_tools import DEFAULT_OPSET

    return template.format(tmp=tmp, opset=DEFAULT_OPSET)


@pytest.mark.parametrize("name", sorted(n for n, c in REFUSALS.items() if c.argv is not None))
def test_the_same_refusal_names_the_flag_on_the_command_line(
    name: str, run_cli, tmp_path: Path
) -> None:
    case = REFUSALS[name]
    assert case.argv is not None
    res = run_cli(*case.argv(tmp_path))
    assert res.exit_code == 2
    assert res.stderr == f"hapi: error: {_text(case.line, tmp_path)}\n"
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()


def test_a_search_worker_hands_its_setting_error_to_the_parent_whole(
    synth, run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A --jobs worker's SettingError crosses the process boundary as its parts, so the
    parent raises it again and the command line still names the flag."""
    import hapi_dse.search.workers as workers

    def refuse(url: object) -> None:  # the forked workers' storage only
        raise SettingError("storage", "'x': cannot open ({storage} refused)", ("storage",))

    monkeypatch.setattr(workers, "open_storage", refuse)
    res = run_cli(*synth.search_args(tmp_path / "out", "--jobs", "2", trials=20))
    assert res.exit_code == 2
    assert res.stderr == "hapi: error: --storage 'x': cannot open (--storage refused)\n"


# -- the rule from now on: a library refusal names no flag ------------------------------------

#: raise sites outside hapi_dse/cli/ whose message may still spell a flag: (module, a piece
#: of the message, {} for each formatted value). A command line quoted for the user to run
#: ('hapi search --out DIR') is always allowed and needs no entry.
FLAG_ALLOWED = {
    # A file's content or a missing file (DataError, ArtefactError): not a bad setting, and
    # these classes carry no refs; the hint names the flag that fixes it.
    ("data/datasets.py", "or point --data-dir / $HAPI_DATA at the IDX files"),
    ("data/datasets.py", "--dataset {}: no such directory or .npz file"),  # DataError: tested
    ("data/folders.py", "; pass --image-size (e.g. --image-size {}x{}) to resize"),
    ("data/folders.py", "a side; pass --image-size (e.g. --image-size 224) to resize"),
    ("deploy/inputs.py", "/model.json: no dataset recorded; pass --dataset"),
    ("deploy/inputs.py", "; --trial needs the whole directory"),
    ("run.py", ": pass --backbone {} to run it, or --trust-run-code"),
    ("run.py", "or pass --model RUN_DIR"),
    ("training/trainer.py", "--init {}: cannot load a state dict"),
    ("training/trainer.py", "--init {}: holds a {}, not a state dict"),
    ("training/trainer.py", "lower --lr or --exit-lr and train again"),
    ("search/storage.py", "--storage {}: cannot open the journal"),
    ("search/storage.py", "--storage {}: the journal is corrupt"),
    ("search/storage.py", "--storage {}: cannot write ({}); every trial written before"),
    ("search/storage.py", "cannot write the shared journal of --jobs in"),
    ("profiling/importing.py", "); pass --overwrite to replace it, or --profiles OTHER_DIR"),
    # outdirs names its destination by the caller's label (a flag: --out, --export-dir...),
    # and a folder output's hint the caller's overwrite_flag (--overwrite, profile's --force);
    # a single file's hint names --overwrite, the flag of every command that writes one
    ("outdirs.py", ": exists and hapi did not write it; pass --overwrite to replace it"),
    # a refusal led by a path, not by the setting (a SettingError's text starts with it)
    ("profiling/importing.py", " is already installed there (--profiles {})"),
    ("profiling/runner.py", "Pass --profiles OTHER_DIR to keep both, or --force"),
    # an automatic energy meter (RAPL, NVML): no setting chose it
    ("profiling/energy.py", "or leave --energy-cmd out for modelled energy"),
    # 'hapi calibrate' names these arguments kit_dir and measure_dir, the library out and
    # directory: no one name serves both
    ("profiling/calibrate.py", "--export-kit {}: not a directory"),
    ("profiling/calibrate.py", "--export-kit {}: already holds .onnx files"),
    ("profiling/calibrate.py", "--measure {}: no .onnx files in it"),
}

_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
_COMMAND_LINE = re.compile(r"'hapi [^']*'")


def _raised_texts(exc: object) -> list[str]:
    """The strings a ``raise`` builds: each f-string whole ({} for a value), each other
    string constant."""
    import ast

    assert isinstance(exc, ast.AST)
    out, inside = [], set()
    for node in ast.walk(exc):
        if isinstance(node, ast.JoinedStr):
            out.append(
                "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            )
            inside |= {id(n) for n in ast.walk(node)}
    out += [
        n.value
        for n in ast.walk(exc)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in inside
    ]
    return out


def test_no_library_refusal_spells_a_flag() -> None:
    """Outside hapi_dse/cli/, a bad setting is a SettingError naming its field, and the CLI
    names the flag: no ``raise`` builds a message with a literal ``--flag`` but those of
    :data:`FLAG_ALLOWED` (and command lines quoted to run)."""
    import ast

    import hapi_dse

    root = Path(hapi_dse.__file__).parent
    found, used = [], set()
    for path in sorted(root.rglob("*.py")):
        module = path.relative_to(root).as_posix()
        if module.startswith("cli/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            for text in _raised_texts(node.exc):
                if not _FLAG.search(_COMMAND_LINE.sub("", text)):
                    continue
                allowed = {(m, piece) for m, piece in FLAG_ALLOWED if m == module and piece in text}
                used |= allowed
                if not allowed:
                    found.append(f"hapi_dse/{module}:{node.lineno}: {text!r}")
    assert not found, "raise SettingError(field, message, refs) instead:\n" + "\n".join(found)
    assert not FLAG_ALLOWED - used, f"allowed but gone: {sorted(FLAG_ALLOWED - used)}"
