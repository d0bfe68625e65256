"""Options shared by several commands, defined once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

F = Callable[..., Any]


def seed(f: F) -> F:
    return click.option(
        "--seed", type=int, default=0, show_default=True, help="Random seed (recorded)."
    )(f)


def threads(default: int | None = None) -> Callable[[F], F]:
    return click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=default,
        show_default=True,
        help="Intra-op threads (torch / onnxruntime).",
    )


def model(f: F) -> F:
    return click.option(
        "--model",
        "model",
        type=click.Path(file_okay=False, path_type=str),
        default=None,
        help="Run directory from 'hapi train' (default: the bundled example).",
    )(f)


def profiles(f: F) -> F:
    return click.option(
        "--profiles",
        "profiles",
        type=click.Path(file_okay=False),
        default=None,
        help="Profile directory (then $HAPI_PROFILES, ./profiles, the installed copy).",
    )(f)


def dataset(f: F) -> F:
    from hapi_dse.data.datasets import DATASETS

    f = click.option(
        "--data-dir",
        type=click.Path(),
        default=None,
        help="Where the dataset files are (then $HAPI_DATA, then the system location).",
    )(f)
    return click.option(
        "--dataset",
        type=click.Choice(DATASETS),
        default="fashion-mnist",
        show_default=True,
        help="Dataset.",
    )(f)


def run_code(f: F) -> F:
    """``--backbone MODULE:FACTORY`` and ``--trust-run-code``: the only ways a run whose
    model.json names a backbone factory (code, not a registered name) is built (DESIGN 3).
    Shared by every command that loads a run's model."""
    f = click.option(
        "--trust-run-code",
        is_flag=True,
        help="Build the run even if its model.json names a backbone factory "
        "(package.module:factory): that imports and runs its code.",
    )(f)
    return click.option(
        "--backbone",
        "backbone",
        default=None,
        metavar="MODULE:FACTORY",
        help="Allow the run's model.json to build this backbone factory (runs its code).",
    )(f)


def overwrite(what: str) -> Callable[[F], F]:
    """``--overwrite``: replace hapi's own earlier ``what`` in the output location; anything
    else there is never replaced (README "What hapi never does")."""
    return click.option(
        "--overwrite",
        is_flag=True,
        help=f"Replace {what} (anything else there is never replaced).",
    )
