"""``hapi import-profile``: install tables measured on a board."""

from __future__ import annotations

from pathlib import Path

import click

from hapi_dse.cli import options


@click.command("import-profile")
@options.verbosity
@click.argument(
    "tables", nargs=-1, required=True, metavar="TABLE.csv|DIR...", type=click.Path(path_type=Path)
)
@options.profiles
@options.overwrite("an installed table of the same device and model")
def import_profile(tables: tuple[Path, ...], profiles: str | None, overwrite: bool) -> None:
    """Install tables that 'hapi profile' wrote on a board (MODEL_ID.csv and its .json) into
    --profiles DIR/DEVICE/ (default ./profiles), the device named by the sidecar.

    Each table is checked as a search would check it first; a directory stands for the
    tables in it.
    """
    from hapi_dse.profiling.importing import import_tables

    for t in import_tables(tables, profiles, overwrite=overwrite):
        options.report(t.summary())
