"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never a part."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, writer) -> None:
    """Calls writer(temporary path) and renames the result over `path`: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    os.chmod(staging, 0o644)  # mkstemp's 0600 would make shared results unreadable to the group
    try:
        writer(Path(staging))
        os.replace(staging, path)
    finally:
        Path(staging).unlink(missing_ok=True)


def write_json(path: Path, document) -> None:
    atomic_write(path, lambda staging: staging.write_text(json.dumps(document, indent=1, default=str) + "\n"))
