"""One plain-name rule: ``hapi_dse/profiling/names.py`` defines it (``valid_name``,
``NAME_RULE``); the staged runtime shipped inside an export cannot import hapi and keeps a
copy, held here to the same answer on every name tried."""

from __future__ import annotations

import random
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hapi_dse.profiling.names import NAME_RULE, valid_name

#: names at the edges of the rule: empty, dots, hidden files, separators of either system,
#: drive letters, non-ASCII letters and digits, controls, NUL, spaces, lone surrogates, long
EDGES: list[Any] = [
    "",
    ".",
    "..",
    "...",
    ".hidden",
    "..x",
    "x.",
    "x..y",
    "-",
    "_",
    "-x",
    "_x",
    "a/b",
    "/abs",
    "a/",
    "a\\b",
    "\\",
    "C:x",
    "x:y",
    "a b",
    " ",
    " a",
    "a\tb",
    "a\nb",
    "a\rb",
    "\x00",
    "a\x00b",
    "\x7f",
    "é",
    "caf\u00e9",
    "\u0130",  # dotted capital I: lower() would make it two characters
    "\uff11",  # fullwidth digit one: isdigit() and isalnum(), not ASCII
    "\u0663",  # Arabic-Indic digit three
    "\u00b2",  # superscript two
    "\u2028",
    "\ufeffa",
    "\ud800",
    "\U0001f600",
    "stage_0.onnx",
    "head_3_linear.onnx",
    "resnet20-0123abcd",
    "jetson_nano.fp16",
    "A" * 255,
    "a" * 256,
    "b" * 4096,
    None,
    42,
    b"stage_0.onnx",
    ["stage_0.onnx"],
]


@pytest.fixture(scope="module")
def generated() -> list[str]:
    """Every code point alone, many inside a plain name, every pair over an alphabet of the
    characters that matter, and seeded random strings over it."""
    names = [chr(c) for c in range(0x110000)]
    names += [f"a{chr(c)}b" for c in [*range(0x800), *range(0x800, 0x110000, 127)]]
    alphabet = [*"aZ09-_./\\: \t\n\x00\x7f", "é", "\uff11", "\u2028", "\ud800"]
    names += [a + b for a in alphabet for b in alphabet]
    rng = random.Random(24)
    names += ["".join(rng.choices(alphabet, k=rng.randint(1, 12))) for _ in range(20_000)]
    return names


@pytest.fixture(scope="module")
def runtime() -> ModuleType:
    pytest.importorskip("onnxruntime")
    from hapi_dse.deploy import staged_runtime

    return staged_runtime


def test_the_runtime_states_the_same_rule(runtime: ModuleType) -> None:
    assert runtime.NAME_RULE == NAME_RULE


@pytest.mark.parametrize("name", EDGES, ids=repr)
def test_the_runtime_and_hapi_agree_on_edge_names(runtime: ModuleType, name: Any) -> None:
    assert runtime.valid_name(name) == valid_name(name)


def test_the_runtime_and_hapi_agree_on_every_generated_name(
    runtime: ModuleType, generated: list[str]
) -> None:
    names = generated
    differ = [n for n in names if runtime.valid_name(n) != valid_name(n)]
    assert not differ, [ascii(n) for n in differ[:10]]
    accepted = sum(map(valid_name, names))
    assert 0 < accepted < len(names)  # the names tried fall on both sides of the rule


def test_what_the_rule_accepts_is_one_file_inside_its_directory(generated: list[str]) -> None:
    """The point of the rule: an accepted name never names a path elsewhere, on any system."""
    from pathlib import PurePosixPath, PureWindowsPath

    for name in [*EDGES, *generated]:
        if valid_name(name):
            for pure in (PurePosixPath, PureWindowsPath):
                assert pure(name).name == name and pure(name).parts == (name,), ascii(name)


@pytest.mark.parametrize("name", ["stage_0.onnx", "x y.onnx", "é.onnx", "a\x00.onnx", ".x"])
def test_the_runtime_opens_a_stage_file_by_the_rule(
    runtime: ModuleType, tmp_path: Path, name: str
) -> None:
    if valid_name(name):
        assert runtime.stage_file(tmp_path, name) == tmp_path / name
    else:
        with pytest.raises(ValueError, match="is not a plain file name inside") as e:
            runtime.stage_file(tmp_path, name)
        assert NAME_RULE in str(e.value) and len(str(e.value).splitlines()) == 1


def test_the_runtime_still_names_nothing_of_hapi(runtime: ModuleType) -> None:
    text = Path(str(runtime.__file__)).read_text()
    assert "hapi_dse" not in text  # its copy of the rule imports nothing
