"""The ``hapi`` command line: a thin shell over the library.

Commands live in their own modules and are imported only when invoked, so ``hapi --help``
stays instant. This module is the only place that maps errors to exit codes: a
:class:`~hapi_dse.errors.HapiError` or a click usage error becomes one line on stderr and
exit status 2; Ctrl-C (SIGINT) or SIGTERM becomes one line and exit status 130, after the
same cleanup (SIGTERM is raised as :class:`Terminated`, a ``KeyboardInterrupt``). A
command that imports a package this install lacks (the base install of a board has neither
torch nor optuna) becomes one line naming the extra that installs it (:data:`EXTRAS`).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import signal
import sys
import threading
from typing import Any

import click

from hapi_dse import __version__
from hapi_dse.errors import HapiError, SettingError, interrupt_in

__all__ = ["EXTRAS", "Terminated", "cli", "flags", "main", "missing_package"]

# name -> (module, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("hapi_dse.cli.train_cmd", "train", "Train an overprovisioned early-exit network."),
    "profile": ("hapi_dse.cli.profile_cmd", "profile", "Build a device latency/energy table."),
    "import-profile": (
        "hapi_dse.cli.import_cmd",
        "import_profile",
        "Install tables measured on a board.",
    ),
    "devices": ("hapi_dse.cli.profile_cmd", "devices", "List the devices hapi knows."),
    "estimate": (
        "hapi_dse.cli.estimate_cmd",
        "estimate",
        "Model the latency of any ONNX graph on a device.",
    ),
    "calibrate": (
        "hapi_dse.cli.calibrate_cmd",
        "calibrate",
        "Fit a device spec from timings on the device.",
    ),
    "search": ("hapi_dse.cli.search_cmd", "search", "Search early-exit designs under SLOs."),
    "plot": ("hapi_dse.cli.plot_cmd", "plot", "Plot Pareto fronts of search results."),
    "export": ("hapi_dse.cli.deploy_cmd", "export", "Export a design to ONNX with exits inside."),
    "eval": ("hapi_dse.cli.deploy_cmd", "eval_", "Measure an exported model vs the prediction."),
}


#: import name -> (distribution, the extra of setup.cfg that installs it). The base install
#: (a board: hapi profile --onnx-dir, devices, eval, import-profile) has none of these.
EXTRAS: dict[str, tuple[str, str]] = {
    "torch": ("torch", "train"),
    "onnxscript": ("onnxscript", "train"),
    "sklearn": ("scikit-learn", "train"),
    "optuna": ("optuna", "search"),
    "yaml": ("PyYAML", "search"),
    "matplotlib": ("matplotlib", "search"),
    "psycopg2": ("psycopg2-binary", "postgres"),
}
#: import names of the base install's own dependencies
BASE_PACKAGES = frozenset(
    {"click", "numpy", "onnx", "onnxruntime", "pandas", "Pillow", "scipy", "tomli"}
)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every cleanup written for an interrupt runs."""


class _Interrupt(BaseException):
    """An interrupt carried past click (which would print a blank line and raise Abort)."""


class LazyGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:
            raise _Interrupt() from e
        except SettingError as e:  # the library names the field; the user typed the flag
            name = ctx.invoked_subcommand
            cmd = self.get_command(ctx, name) if name else None
            raise e.as_flag(flags(cmd) if cmd is not None else {}) from e

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [n for n, (mod, _, _) in COMMANDS.items() if importlib.util.find_spec(mod)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[cmd_name]
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:
                return None
            raise  # a dependency: _main says which, in one line
        cmd: click.Command = getattr(mod, attr)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, COMMANDS[n][2]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hapi")
@click.option("-v", "--verbose", count=True, help="More log output (repeatable).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(verbose: int, quiet: bool) -> None:
    """hapi: hardware-aware design-space exploration of early-exit networks.

    Train once, profile each device, search each device under its SLOs, export.
    """
    from hapi_dse.cli.options import set_verbosity

    set_verbosity(verbose, quiet)


#: the signals main()'s handlers received during the command: an error raised after one (a
#: library that caught the interrupt and raised its own error) still ends as an interrupt
_RECEIVED: list[int] = []


def _terminated(signum: int, frame: Any) -> None:
    _RECEIVED.append(signum)
    raise Terminated


def _keyboard_interrupt(signum: int, frame: Any) -> None:
    _RECEIVED.append(signum)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> Any:
    """Entry point: run the CLI, mapping user errors to one stderr line and exit status 2,
    and interrupts (SIGINT, SIGTERM) to one line and exit status 130."""
    saved: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        if saved[signal.SIGTERM] is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _terminated)
        if saved[signal.SIGINT] is signal.default_int_handler:
            signal.signal(signal.SIGINT, _keyboard_interrupt)
    _RECEIVED.clear()
    try:
        return _main(argv)
    except SystemExit as e:
        if e.code == 130 and argv is None:  # the process ends on an interrupt: let no other
            saved = {}  # Ctrl-C turn the exit into a traceback or a death by SIGINT
            # nor a library's exit hook add lines to the one (an interrupted import can leave
            # torch's loggers half set up, and its exit hook then logs cache statistics)
            logging.disable(logging.CRITICAL)
        raise
    finally:  # for callers that go on (tests): as it was
        for signum, handler in saved.items():
            if handler is not None:
                signal.signal(signum, handler)


def _ignore_interrupts() -> None:
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


def _main(argv: list[str] | None) -> Any:
    try:
        return cli.main(args=argv, prog_name="hapi", standalone_mode=False)
    except HapiError as e:
        if _RECEIVED or interrupt_in(e) is not None:  # the error of an interrupted library
            _interrupted(interrupt_in(e) or _signal_interrupt())
        click.echo(f"hapi: error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        msg = e.format_message().replace("\n", " ")
        ctx = getattr(e, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else ""
        click.echo(f"hapi: error: {where}{msg}", err=True)
        sys.exit(2)
    except click.Abort:
        click.echo("hapi: aborted", err=True)
        sys.exit(130)
    except (KeyboardInterrupt, _Interrupt) as e:
        _interrupted(e)
    except BrokenPipeError:
        sys.exit(0)
    except ModuleNotFoundError as e:  # e.g. torch or optuna on a board (the base install)
        if not e.name or e.name.split(".")[0] == "hapi_dse":
            raise
        cmd = next((a for a in (argv if argv is not None else sys.argv[1:]) if a in COMMANDS), "")
        click.echo(f"hapi: error: {missing_package(cmd, e.name)}", err=True)
        sys.exit(2)
    except Exception as e:  # a bug keeps its traceback, unless an interrupt caused it
        if _RECEIVED or interrupt_in(e) is not None:
            _interrupted(interrupt_in(e) or _signal_interrupt())
        raise


def flags(command: click.Command) -> dict[str, str]:
    """``{parameter name: its long flag}`` of ``command`` (``{"trials": "--trials"}``): how
    a :class:`~hapi_dse.errors.SettingError` names a setting on the command line. A
    repeatable flag fills a tuple whose field is its plural (``--device`` fills
    ``devices``, ``--slo`` ``slos``): both names map to it."""
    out = {}
    for p in command.params:
        if isinstance(p, click.Option) and p.name:
            long = [o for o in p.opts if o.startswith("--")]
            out[p.name] = (long or p.opts)[0]
            if p.multiple:
                out.setdefault(f"{p.name}s", out[p.name])
    return out


def _signal_interrupt() -> KeyboardInterrupt:
    """The interrupt of the first signal received (its error hid the interrupt itself)."""
    return Terminated() if _RECEIVED and _RECEIVED[0] == signal.SIGTERM else KeyboardInterrupt()


def _interrupted(e: BaseException) -> None:
    """End the command as interrupted: one line, exit status 130."""
    _ignore_interrupts()  # another Ctrl-C must not cut the one line short
    how = " by SIGTERM" if isinstance(e.__cause__ or e, Terminated) else ""
    newline = "\n" if not how and sys.stderr.isatty() else ""  # after the terminal's ^C
    click.echo(f"{newline}hapi: interrupted{how}; nothing half-written was kept", err=True)
    sys.exit(130)


def missing_package(command: str, module: str) -> str:
    """The one line for ``hapi COMMAND`` failing to import ``module``: which package is
    missing and the pip command that installs it (its extra, see :data:`EXTRAS`)."""
    top = module.split(".")[0]
    dist, extra = EXTRAS.get(top, (top, None))
    where = f"'hapi {command}'" if command else "hapi"
    if extra is not None:
        fix = f"pip install 'hapi-dse[{extra}]'"
    elif top in BASE_PACKAGES:  # installed with --no-deps, or uninstalled since
        fix = "pip install 'hapi-dse' (hapi's own dependencies)"
    else:
        fix = f"pip install {dist}"
    return f"{where} needs {dist}, which is not installed here: {fix}"
