"""What is on disk, for tests that promise "nothing changed"."""

from __future__ import annotations

import hashlib
from pathlib import Path


def tree_snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` (``root`` included, as ``.``) with its content's sha256,
    its link target, or ``dir``/``other``; empty when ``root`` does not exist."""
    out = {}
    for p in [root, *sorted(root.rglob("*"))] if root.exists() or root.is_symlink() else []:
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + str(p.readlink())
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir" if p.is_dir() else "other"
    return out
