"""Where hapi looks for the files it ships and the files users bring.

What ships is in the package: ``hapi_dse/shipped_profiles/`` (the shipped devices' specs and
their tables of the bundled example; ``make example`` rewrites them) and
``hapi_dse/shipped_search_spaces`` (a link to the repository's ``search_spaces/``), so they
are found from a source checkout, an editable install and a wheel alike. ``./profiles`` is
the user's own (git-ignored in this repository): what ``hapi profile`` and ``hapi
import-profile`` write, read before the shipped copy.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED_PROFILES = PACKAGE_DIR / "shipped_profiles"
SHIPPED_SEARCH_SPACES = PACKAGE_DIR / "shipped_search_spaces"
SPECS_SUBDIR = "specs"


def profile_search_path(profiles: str | Path | None = None) -> list[Path]:
    """``--profiles DIR``, then ``$HAPI_PROFILES``, then ``./profiles``, then the shipped copy."""
    out: list[Path] = []
    env = os.environ.get("HAPI_PROFILES")
    if env and os.path.exists(env) and not os.path.isdir(env):  # as --profiles FILE is
        from hapi_dse.errors import UsageError

        raise UsageError(
            f"$HAPI_PROFILES {env!r} is a file, not a profile directory: point it at the "
            "directory that holds DEVICE/MODEL_ID.csv tables, or unset it"
        )
    for d in (profiles, env, "profiles", SHIPPED_PROFILES):
        if d:
            p = Path(d)
            if p.is_dir() and all(p.resolve() != q.resolve() for q in out):
                out.append(p)
    return out


def default_profiles_out(profiles: str | Path | None = None) -> Path:
    """Where ``hapi profile`` writes: ``--profiles DIR`` or ``./profiles``."""
    return Path(profiles) if profiles else Path("profiles")
