"""Options shared by several commands, defined once.

A name, default, type and help a user sees in two commands is written here, once; a factory
takes what differs between them (a default, a help text). Choices and names in help come
from the registries that define them (datasets, metrics). Nothing here imports torch or
onnxruntime: ``hapi --help`` and ``hapi search --help`` stay instant.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import click

F = Callable[..., Any]
Decorator = Callable[[F], F]


def comma_list(text: str) -> tuple[str, ...]:
    """A comma-separated option's items, stripped, blanks dropped: ``"a, b,,c"`` is
    ``("a", "b", "c")``."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


#: the seeds every command takes: numpy's and torch's generators accept 0..2**32 - 1
SEED_RANGE = click.IntRange(0, 2**32 - 1)


def seed(f: F) -> F:
    return click.option(
        "--seed",
        type=SEED_RANGE,
        default=0,
        show_default=True,
        help="Random seed, 0..4294967295 (recorded).",
    )(f)


def threads(
    default: int | None = None, help: str = "Intra-op threads (torch / onnxruntime)."
) -> Decorator:
    return click.option(
        "--threads",
        type=click.IntRange(min=1, max=1024),
        default=default,
        show_default=default is not None,
        help=help,
    )


def spec(help: str = "Spec file to use instead of the one found for --device.") -> Decorator:
    """``--spec FILE``: a device spec instead of ``specs/DEVICE.toml`` on the search path."""
    return click.option(
        "--spec", type=click.Path(dir_okay=False, exists=True), default=None, help=help
    )


def model(
    help: str = "Run directory from 'hapi train' (default: the bundled example).",
) -> Decorator:
    """``--model RUN``; ``help`` says what stands in when it is left out."""
    return click.option(
        "--model",
        "model",
        type=click.Path(file_okay=False, path_type=str),
        default=None,
        help=help,
    )


def profiles(f: F) -> F:
    return click.option(
        "--profiles",
        "profiles",
        type=click.Path(file_okay=False),
        default=None,
        help="Profile directory (then $HAPI_PROFILES, ./profiles, the installed copy).",
    )(f)


def device(help: str) -> Decorator:
    """``--device NAME`` of one profile table (default ``host``, this machine)."""
    return click.option("--device", default="host", show_default=True, help=help)


def data_dir(f: F) -> F:
    return click.option(
        "--data-dir",
        type=click.Path(),
        default=None,
        help="Where the dataset files are (then $HAPI_DATA, then the system location).",
    )(f)


def dataset(default: str | None = "fashion-mnist", help: str = "Dataset.") -> Decorator:
    """``--dataset``: a name of :data:`~hapi_dse.data.datasets.DATASETS`, an image folder or a
    ``.npz`` file (checked when loaded); and ``--data-dir``."""
    from hapi_dse.data.datasets import DATASETS

    def deco(f: F) -> F:
        return click.option(
            "--dataset",
            metavar="NAME|DIR|FILE.npz",
            default=default,
            show_default=default is not None,
            help=f"{help} {', '.join(DATASETS)}, an image folder (one subfolder per class, "
            "optionally inside train/ val/ test/) or a .npz file (x, y...).",
        )(data_dir(f))

    return deco


def out(
    help: str,
    *,
    kind: Literal["file", "dir", "any"] = "any",
    required: bool = False,
    dest: str = "out",
) -> Decorator:
    """``--out PATH`` (a :class:`~pathlib.Path`): a file, a directory, or either."""
    return click.option(
        "--out",
        dest,
        type=click.Path(file_okay=kind != "dir", dir_okay=kind != "file", path_type=Path),
        required=required,
        default=None,
        help=help,
    )


def limit(help: str, *, minimum: int | None = None) -> Decorator:
    """``--limit N``: the first N samples only (checked against ``minimum`` here, else by
    the library)."""
    kind = int if minimum is None else click.IntRange(min=minimum)
    return click.option("--limit", type=kind, default=None, help=help)


def warmup(default: int, *, minimum: int, help: str) -> Decorator:
    """``--warmup N``: untimed calls before the timing starts."""
    return click.option(
        "--warmup",
        type=click.IntRange(min=minimum),
        default=default,
        show_default=True,
        help=help,
    )


def metric_names(*, slo: bool = False) -> str:
    """The metrics one may search on, pick by and plot (with ``slo``: bound with ``--slo``),
    comma-separated, from :data:`~hapi_dse.cost.metrics.METRIC_TABLE`."""
    from hapi_dse.cost.metrics import METRIC_TABLE

    return ", ".join(m.name for m in METRIC_TABLE if (m.slo if slo else m.objective))


def run_code(f: F) -> F:
    """``--backbone MODULE:FACTORY`` and ``--trust-run-code``: the only ways a run whose
    model.json names a backbone factory (code, not a registered name) is built (DESIGN 3).
    Shared by every command that loads a run's model, which receives both flags as one
    ``code`` argument (:class:`~hapi_dse.run.CodeTrust`), built here."""

    @functools.wraps(f)
    def with_code(*args: Any, trust_run_code: bool, backbone: str | None, **kw: Any) -> Any:
        from hapi_dse.run import CodeTrust

        return f(*args, code=CodeTrust(trust=trust_run_code, backbone=backbone), **kw)

    flagged = click.option(
        "--trust-run-code",
        is_flag=True,
        help="Build the run even if its model.json names a backbone factory "
        "(package.module:factory): that imports and runs its code.",
    )(with_code)
    return click.option(
        "--backbone",
        "backbone",
        default=None,
        metavar="MODULE:FACTORY",
        help="Allow the run's model.json to build this backbone factory (runs its code).",
    )(flagged)


def overwrite(what: str) -> Decorator:
    """``--overwrite``: replace hapi's own earlier ``what`` in the output location; anything
    else there is never replaced (README "What hapi never does")."""
    return click.option(
        "--overwrite",
        is_flag=True,
        help=f"Replace {what} (anything else there is never replaced).",
    )


# -- verbosity: one logging level decides what is shown ----------------------------------------
#: where ``-q`` is kept: the meta of click's context, one per invocation, shared by the group
#: and the command (``hapi -q search`` and ``hapi search -q``)
_QUIET = "hapi.quiet"


def set_verbosity(verbose: int, quiet: bool) -> None:
    """``-q``: warnings and errors only (no summary, no progress bar); ``-v``: more log
    output, ``-vv`` debug."""
    import logging
    import sys

    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    click.get_current_context().meta[_QUIET] = quiet


def quiet() -> bool:
    """Whether ``-q`` was given (before or after the command's name)."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and bool(ctx.meta.get(_QUIET, False))


def progress() -> bool:
    """Whether the command shows progress bars (the library's ``progress=``): not with
    ``-q``; on a terminal only, and not in CI or with ``HAPI_NO_PROGRESS`` (the library
    checks those)."""
    return not quiet()


def report(text: str) -> None:
    """Print a command's summary on stdout, unless ``-q``."""
    if not quiet():
        click.echo(text)


def _quiet_flag(_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        set_verbosity(0, True)


def _verbose_count(_ctx: click.Context, _param: click.Parameter, value: int) -> None:
    if value:
        set_verbosity(value, False)


def verbosity(f: F) -> F:
    """``-v``/``-q`` after the command's name too (``hapi search ... -q``), as before it."""
    f = click.option(
        "-q",
        "--quiet",
        is_flag=True,
        expose_value=False,
        callback=_quiet_flag,
        help="Only warnings and errors.",
    )(f)
    return click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=_verbose_count,
        help="More log output (repeatable).",
    )(f)
