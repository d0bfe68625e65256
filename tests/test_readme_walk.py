"""README.md, walked as a reader meets it: every command of its ``sh``/``bash`` blocks and
every ``python`` block, in order, read from the file (never retyped here).

Shell commands run with ``bash -c`` in a scratch working directory (the README's commands
are written from the repository root: it holds the ``Makefile`` and a ``.venv`` link to the
virtual environment under test, whose ``bin`` is first on ``PATH``). Python blocks run in that
directory after the commands before them, each in a fresh namespace (a ``>>>`` block as a
doctest). A failing command fails the walk naming the command and its stderr's last line.

Two walks: ``test_readme_walk_quick`` (the default run) skips the commands of ``SLOW`` and
every command or block that names what they write (``WRITTEN_BY_SLOW``);
``test_readme_walk_all`` (``make test-slow``) runs every one. What cannot run in a test at
all is in ``SKIP``, what runs in another form in ``INSTEAD``, each with its reason; every
entry must match a README command, so a stale one fails the walk.

``hapi profile --device host`` times this machine, and what the worked example and the
``--verify`` example find follows from that table: the walks install instead the host
table that command measured on the development machine (``tests/data/host_table``, as in
test_readme_relative_slo.py, marked as this machine's), so the walk does not depend on
this machine's speed. The slow walk runs the command once as written, in a directory of
its own, to see that it works here.
"""

from __future__ import annotations

import doctest
import glob
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
HOST_TABLE = ROOT / "tests" / "data" / "host_table" / "host"
BIN = Path(sys.executable).parent  # the virtual environment under test
FMNIST = Path("/usr/share/datasets/fashion-mnist")

# Commands (by their start) that cannot run in a test, and why.
SKIP = {
    "make test": "runs this test suite (it would run itself)",
    "apt-get install": "installs a system package as root (the slow walk needs the dataset it "
    "installs and is skipped without it)",
    "make install": "installs packages: the walk runs in the .venv it made",
    "hapi train --dataset fashion-mnist --out runs/fmnist": "25-55 minutes of training; the "
    "README's quick training on the next line stands in for it (runs/quick, copied to "
    "runs/fmnist)",
    "pip wheel": "builds hapi's wheel from the source tree (tests/test_packaging.py builds "
    "and inspects it)",
    "pip install hapi_dse-": "installs the wheel on a board (tests/test_board_install.py; "
    "make board-check): the walk's board has the venv under test",
}

# Commands (by their start) that run in another form: why, and how (see ``Walk.sh``).
INSTEAD = {
    "make demo": "with '-o install': the install step is 'make install', skipped above",
    "hapi profile --device host": "times this machine; the host table this command measured "
    "on the development machine is installed as ./profiles/host, as it leaves it (the slow "
    "walk also runs it once as written, elsewhere)",
    "scp ": "no board over ssh: the board is the directory board/, copied to and from with cp",
}

# Commands (by regular expression) that take more than a few seconds: the slow walk only.
SLOW = {
    r"^python -m hapi_dse\.examples\.pretrained": "trains a network",
    r"^hapi train ": "trains a network",
    r"^hapi profile ": "exports segments, times them or calibrates",
    r"^hapi calibrate --measure": "times 20 graphs",
    r"--verify": "exports and times 5 designs",
    r"^hapi export ": "exports and checks a design against PyTorch",
    r"^hapi eval ": "runs an export on 10,000 images",
}

# What the SLOW commands write: a command or block that names one is slow too.
WRITTEN_BY_SLOW = (
    "runs/pretrained.pt", "runs/mine", "runs/profiles", "runs/quick", "runs/fmnist",
    "runs/kit/measured.csv", "runs/segments-fmnist", "BOARD:", "runs/my-pi4",
    "runs/host/model.onnx", "runs/model.onnx", "runs/model_staged", "runs/design.onnx",
    "runs/t412.onnx",
)  # fmt: skip

# Commands whose documented answer may be exit status 1 on a given machine, and why.
MAY_EXIT_1 = {
    "--verify": "it measures here: status 1 when no verified design meets the SLO as measured",
    "--check-slo": "status 1 when an SLO breaks as measured on this machine",
}

# The reader's own ONNX graphs that the README's 'hapi estimate' commands name.
OWN_GRAPHS = ("runs/export/model.onnx", "a.onnx", "b.onnx", "net.onnx")


@dataclass(frozen=True)
class Step:
    kind: str  # "sh" or "python"
    text: str
    line: int  # in README.md
    on_board: bool = False

    def where(self) -> str:
        return f"README.md line {self.line}: {self.text if self.kind == 'sh' else 'python block'}"


def readme_steps() -> list[Step]:
    """Every shell command and python block of README.md, in order. Continuation lines are
    joined; a block's comment saying "on the board" moves the commands after it to the
    board, until one says "back on the workstation"."""
    text = README.read_text()
    steps = []
    for m in re.finditer(r"^```(sh|bash|python)\n(.*?)^```", text, re.M | re.S):
        first = text.count("\n", 0, m.start(2)) + 1
        if m[1] == "python":
            steps.append(Step("python", m[2], first))
            continue
        board, pending, start = False, "", 0
        for i, line in enumerate(m[2].splitlines()):
            stripped = line.strip()
            if not pending and stripped.startswith("#"):
                board = ("on the board" in stripped) or (
                    board and "back on the workstation" not in stripped
                )
                continue
            if not pending:
                start = first + i
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            cmd = " ".join((pending + stripped).split())
            pending = ""
            if cmd:
                steps.append(Step("sh", cmd, start, board))
    return steps


def _code(cmd: str) -> str:
    """The command without its trailing comment, its words as written."""
    return " ".join(shlex.split(cmd, comments=True))


def _match(table: dict[str, str], cmd: str) -> str | None:
    return next((k for k in table if _code(cmd).startswith(k)), None)


def _python_code(src: str) -> str:
    """A python block without its comments (a comment may name a path it does not use)."""
    try:
        toks = tokenize.generate_tokens(io.StringIO(src).readline)
        return tokenize.untokenize(t for t in toks if t.type != tokenize.COMMENT)
    except (tokenize.TokenError, SyntaxError):
        return src


def is_slow(step: Step) -> bool:
    if step.kind == "sh" and (
        _match(SKIP, step.text) or _match(INSTEAD, step.text) == "hapi profile --device host"
    ):
        return False
    code = _code(step.text) if step.kind == "sh" else _python_code(step.text)
    return any(re.search(p, code) for p in SLOW) or any(w in code for w in WRITTEN_BY_SLOW)


def _own_graph(path: Path) -> None:
    """A small CNN in ONNX (conv, relu, pool, fc), standing for the reader's own graph."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal((10, 8)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "own",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)


def _install_host_table(work: Path) -> None:
    """./profiles/host/: the recorded host table, marked as measured on this machine."""
    import json

    from hapi_dse.search.verify import this_machine

    dst = work / "profiles" / "host"
    dst.mkdir(parents=True, exist_ok=True)
    for src in HOST_TABLE.glob("*.csv"):
        shutil.copyfile(src, dst / src.name)
        side = json.loads(src.with_suffix(".json").read_text())
        side["machine"] = this_machine()
        (dst / src.with_suffix(".json").name).write_text(json.dumps(side))


def _scp(args: list[str], work: Path, board: Path) -> None:
    """``scp -r SRC... DEST`` with ``BOARD:`` the directory ``board``, by a local copy."""

    def local(p: str, cwd: Path) -> Path:
        return board / p[len("BOARD:") :] if p.startswith("BOARD:") else cwd / p

    *srcs, dest = [a for a in args[1:] if not a.startswith("-")]
    to = local(dest, work)
    to.mkdir(parents=True, exist_ok=True)
    for s in srcs:
        found = [Path(p) for p in glob.glob(str(local(s, work)))]
        assert found or "*.whl" in s, f"scp: {s} does not exist"  # the wheel: 'pip wheel' skipped
        for p in found:
            (shutil.copytree if p.is_dir() else shutil.copy)(p, to / p.name)


class Walk:
    def __init__(self, work: Path, slow: bool) -> None:
        self.work, self.board, self.slow = work, work / "board", slow
        self.env = {k: v for k, v in os.environ.items() if k != "HAPI_PROFILES"}
        self.env |= {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.env |= {"HAPI_NO_PROGRESS": "1", "PYTHONUNBUFFERED": "1"}
        self.ran: list[str] = []
        self.used: set[str] = set()

    def sh(self, step: Step) -> None:
        if key := _match(SKIP, step.text):
            self.used.add(key)
            return
        cmd = step.text
        key = _match(INSTEAD, step.text)
        if key is not None:
            self.used.add(key)
            if key == "hapi profile --device host":
                if self.slow and not (self.work.parent / "measured-here").exists():
                    self._run(step, cmd, self.work.parent / "measured-here")
                _install_host_table(self.work)
                return
            if key == "scp ":
                _scp(shlex.split(cmd, comments=True), self.work, self.board)
                return
            cmd = f"{_code(cmd)} -o install"
        self._run(step, cmd, self.board if step.on_board else self.work)
        if _code(step.text).startswith("hapi train") and "--out runs/quick" in step.text:
            shutil.copytree(self.work / "runs/quick", self.work / "runs/fmnist")  # see SKIP

    def _run(self, step: Step, cmd: str, cwd: Path) -> None:
        cwd.mkdir(exist_ok=True)
        res = subprocess.run(
            ["bash", "-c", cmd], cwd=cwd, env=self.env, capture_output=True, text=True,
            timeout=1800,
        )  # fmt: skip
        allowed = {0} | ({1} if any(k in cmd for k in MAY_EXIT_1) else set())
        if res.returncode not in allowed:
            last = (res.stderr.strip().splitlines() or res.stdout.strip().splitlines() or [""])[-1]
            pytest.fail(f"{step.where()}\nexit status {res.returncode}: {last}", pytrace=False)
        if res.returncode == 1:  # the documented answer, said in so many words
            assert "SLO" in res.stdout + res.stderr, f"{step.where()}: status 1 without a word"
        self.ran.append(step.text)

    def python(self, step: Step, monkeypatch: pytest.MonkeyPatch) -> None:
        with monkeypatch.context() as m:
            m.chdir(self.work)
            m.setattr(sys, "path", list(sys.path))
            m.delenv("HAPI_PROFILES", raising=False)
            before = set(sys.modules)
            try:
                if step.text.lstrip().startswith(">>>"):
                    test = doctest.DocTestParser().get_doctest(
                        step.text, {}, f"README.md:{step.line}", str(README), step.line
                    )
                    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
                    runner.run(test)
                    assert runner.summarize(verbose=False).failed == 0, step.where()
                else:
                    code = compile(step.text, f"README.md:{step.line}", "exec")
                    try:
                        exec(code, {"__name__": "__readme__"})
                    except Exception as e:  # reported with the block's line
                        pytest.fail(f"{step.where()}: {type(e).__name__}: {e}", pytrace=False)
            finally:
                for name in set(sys.modules) - before:
                    if name == "staged_runtime":  # the export directory's own module
                        del sys.modules[name]
        self.ran.append(f"python block at line {step.line}")


def walk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slow: bool) -> Walk:
    work = tmp_path / "hapi"
    work.mkdir()
    shutil.copy(ROOT / "Makefile", work / "Makefile")
    (work / ".venv").symlink_to(BIN.parent)
    for g in OWN_GRAPHS:
        _own_graph(work / g)
    w = Walk(work, slow)
    for step in readme_steps():
        if is_slow(step) and not slow:
            continue
        if step.kind == "sh":
            w.sh(step)
        else:
            w.python(step, monkeypatch)
    return w


def test_the_walk_reads_every_block_and_every_entry_names_a_readme_command() -> None:
    steps = readme_steps()
    text = README.read_text()
    blocks = re.findall(r"^```(?:sh|bash|python)\n", text, re.M)
    assert len({(s.line if s.kind == "python" else s.text) for s in steps}) >= len(blocks)
    commands = [s.text for s in steps if s.kind == "sh"]
    for table in (SKIP, INSTEAD):
        for key in table:
            assert any(_code(c).startswith(key) for c in commands), f"no README command {key!r}"
    for key in MAY_EXIT_1:
        assert any(key in c for c in commands), key
    # continuation lines are joined, comments leave the command, the board is found
    assert any(c.startswith("hapi train --dataset digits --backbone") for c in commands)
    on_board = [_code(s.text) for s in steps if s.on_board]
    assert on_board and all(not c.startswith("scp -r BOARD:") for c in on_board)
    quick = [s for s in steps if not is_slow(s)]
    assert any(s.kind == "python" for s in quick)


def test_readme_walk_quick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default walk: every command and block but the slow ones, in README order."""
    w = walk(tmp_path, monkeypatch, slow=False)
    assert w.ran and (w.work / "runs/demo/pixel6/design.json").is_file()
    blocks = [r for r in w.ran if r.startswith("python block")]
    assert len(blocks) >= 2, blocks  # the cost model's and the API's
    assert (w.work / "runs/host/host/design.json").is_file()  # the worked example's search


@pytest.mark.slow
def test_readme_walk_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command and block, in README order (make test-slow)."""
    if not (FMNIST / "t10k-images-idx3-ubyte.gz").exists() and not os.environ.get("HAPI_DATA"):
        pytest.skip("needs the Fashion-MNIST IDX files (apt-get install dataset-fashion-mnist)")
    w = walk(tmp_path, monkeypatch, slow=True)
    assert w.used == set(SKIP) | set(INSTEAD)
    assert (w.work / "runs/host/model.eval.json").is_file()
    assert (w.work / "profiles/my-pi4").is_dir()  # the board's table, brought home
    assert list((w.work.parent / "measured-here/profiles/host").glob("*.csv"))
