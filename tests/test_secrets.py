"""Secrets: a storage password is never recorded (sidecars, search outputs) nor printed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hapi_dse.provenance import command_line, provenance, redact

SECRET = "hunter2"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("postgresql://user:hunter2@db.example/hapi", "postgresql://user:***@db.example/hapi"),
        (
            "--storage=postgresql+psycopg2://user:hunter2@db:5432/hapi",
            "--storage=postgresql+psycopg2://user:***@db:5432/hapi",
        ),
        ("mysql://u:hun/ter:2@db/hapi", "mysql://u:***@db/hapi"),  # '/' and ':' in it
        ("mysql://u:hunter@2@db/hapi", "mysql://u:***@db/hapi"),  # an unescaped '@'
        ("postgresql://:hunter2@db/hapi", "postgresql://:***@db/hapi"),
        ("postgresql://u@db/hapi?password=hunter2&x=1", "postgresql://u@db/hapi?password=***&x=1"),
        (
            "--storage 'postgresql://u:hunter2@db/hapi': cannot open (no route)",
            "--storage 'postgresql://u:***@db/hapi': cannot open (no route)",
        ),
        # any query parameter whose name says secret, a raw space in a quoted URL (#22 class 4)
        ("postgresql://u@h:1/db?sslpassword=hunter2", "postgresql://u@h:1/db?sslpassword=***"),
        ("sqlite:///x.db?api_token=hunter2&mode=ro", "sqlite:///x.db?api_token=***&mode=ro"),
        ("redis://h/0?SecretKey=hunter2", "redis://h/0?SecretKey=***"),
        ("'postgresql://u:hun ter2@h/db': refused", "'postgresql://u:***@h/db': refused"),
        # nothing to hide: unchanged
        ("sqlite:///runs/study.db", "sqlite:///runs/study.db"),
        ("postgresql://u@db:5432/hapi", "postgresql://u@db:5432/hapi"),
        ("journal:/tmp/study.log", "journal:/tmp/study.log"),
        ("latency=50ms", "latency=50ms"),
    ],
)
def test_redact_removes_every_url_password(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_a_library_message_quoting_pieces_of_a_password_is_scrubbed() -> None:
    """SQLAlchemy splits ``u:a@b:SECRET@host`` at the first '@' and reports the port
    'SECRET@host': the URL's own secrets are scrubbed from the message (#22 class 4)."""
    url = f"postgresql://u:abc@def:{SECRET}@127.0.0.1:1/db"
    message = f"invalid literal for int() with base 10: '{SECRET}@127.0.0.1'"
    assert SECRET not in redact(message, secrets_of=url)
    assert redact("no secret here", secrets_of=url) == "no secret here"


def test_redact_is_the_one_implementation() -> None:
    from hapi_dse.search import config

    assert config.redact is redact and redact(None) is None


def test_recorded_command_line_has_no_password(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = [
        "/usr/bin/hapi",
        "search",
        "--storage",
        f"postgresql://me:{SECRET}@db.example:5432/hapi",
        f"--storage=postgresql://me:{SECRET}@db.example/hapi",
        "--slo",
        "latency=50ms",
    ]
    assert command_line(argv) == (
        "hapi search --storage postgresql://me:***@db.example:5432/hapi "
        "--storage=postgresql://me:***@db.example/hapi --slo latency=50ms"
    )
    monkeypatch.setattr(sys, "argv", argv)
    block = provenance(seed=0, settings={"storage": redact(argv[3])})
    text = json.dumps(block)
    assert SECRET not in text and "me:***@db.example" in block["command"]


def test_search_with_a_password_in_storage_writes_it_nowhere(
    synth, run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real search on a ``postgresql://`` URL with a password (served by a journal file
    here, as no server is at hand): no output file and no console line holds the password."""
    from hapi_dse.search import study

    url = f"postgresql://me:{SECRET}@db.example:5432/hapi"
    journal = f"journal:{tmp_path / 'study.log'}"
    real_open = study.open_storage
    seen: list[str | None] = []

    def fake_open(u: str | None):
        seen.append(u)
        return real_open(journal if u == url else u)

    monkeypatch.setattr(study, "open_storage", fake_open)
    out = tmp_path / "out"
    args = synth.search_args(out, "--storage", url, trials=12)
    monkeypatch.setattr(sys, "argv", ["hapi", *args])
    res = run_cli(*args)
    assert res.exit_code == 0, res.stderr
    assert url in seen  # the password did reach the storage
    assert SECRET not in res.stdout + res.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "search.json" for p in files)
    for p in files:
        assert SECRET.encode() not in p.read_bytes(), p
    side = json.loads(next(p for p in files if p.name == "search.json").read_text())
    assert "me:***@db.example" in json.dumps(side)


def test_storage_errors_print_no_password(synth, run_cli, tmp_path: Path) -> None:
    """SQLite refuses credentials; the error it raises quotes the URL: redacted too."""
    res = run_cli(
        *synth.search_args(
            tmp_path / "out", "--storage", f"sqlite://me:{SECRET}@//{tmp_path / 'x.db'}", trials=2
        )
    )
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "--storage" in res.stderr
    assert SECRET not in res.stdout + res.stderr
    assert not (tmp_path / "out").exists() or not any(
        SECRET.encode() in p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()
    )


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u@127.0.0.1:1/db?sslpassword={SECRET}",
        f"postgresql://u:abc@def:{SECRET}@127.0.0.1:1/db",
        f"postgresql://u:pa {SECRET}@127.0.0.1:1/db",
    ],
)
def test_no_form_of_a_storage_secret_is_printed_or_recorded(run_cli, tmp_path, url) -> None:
    """The three leaks of #22 class 4: a secret query parameter, a port error quoting what
    follows a password's '@', a password with a raw space."""
    res = run_cli("search", "--device", "pixel6", "--trials", "30", "--out", tmp_path / "o",
                  "--storage", url)  # fmt: skip
    assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.stderr
    assert SECRET not in res.stdout + res.stderr and "***" in res.stderr
    assert SECRET not in command_line(["hapi", "search", "--storage", url])
