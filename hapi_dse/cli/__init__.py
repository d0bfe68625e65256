"""The ``hapi`` command line: a thin shell over the library.

Commands live in their own modules and are imported only when invoked, so ``hapi --help``
stays instant. This module is the only place that maps errors to exit codes: a
:class:`~hapi_dse.errors.HapiError` or a click usage error becomes one line on stderr and
exit status 2.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from typing import Any

import click

from hapi_dse import __version__
from hapi_dse.errors import HapiError

__all__ = ["cli", "main"]

# name -> (module, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("hapi_dse.cli.train_cmd", "train", "Train an overprovisioned early-exit network."),
    "profile": ("hapi_dse.cli.profile_cmd", "profile", "Build a device latency/energy table."),
    "devices": ("hapi_dse.cli.profile_cmd", "devices", "List the devices hapi knows."),
    "search": ("hapi_dse.cli.search_cmd", "search", "Search early-exit designs under SLOs."),
    "plot": ("hapi_dse.cli.plot_cmd", "plot", "Plot Pareto fronts of search results."),
    "export": ("hapi_dse.cli.deploy_cmd", "export", "Export a design to ONNX with exits inside."),
    "eval": ("hapi_dse.cli.deploy_cmd", "eval_", "Measure an exported model vs the prediction."),
}


class LazyGroup(click.Group):
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
            raise
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
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)


def main(argv: list[str] | None = None) -> Any:
    """Entry point: run the CLI, mapping user errors to one stderr line and exit status 2."""
    try:
        return cli.main(args=argv, prog_name="hapi", standalone_mode=False)
    except HapiError as e:
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
    except KeyboardInterrupt:
        click.echo("hapi: interrupted; nothing half-written was kept", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
