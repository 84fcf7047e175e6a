"""User-facing errors: one line that names the problem and what to do, and a non-zero exit."""

from __future__ import annotations

import difflib
import re
from typing import Iterable


class ConfigError(Exception):
    """A problem in what the user gave us (YAML, paths, flags); printed as one line, without a traceback."""


class RunFailure(Exception):
    """A run that could not go on (a full disk): printed as one line that says what was kept; exit code 1."""


def closest(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest candidate, or ''.

    A candidate that starts with `name` (a truncated key such as `grace` for `grace_period`) wins over spelling
    similarity.
    """
    name, candidates = str(name), [str(c) for c in candidates]
    match = [c for c in candidates if c.startswith(name) and len(name) >= 3]
    match = match or difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def exception_line(text: str) -> str:
    """The exception line (`RuntimeError: ...`) that ends an error traceback, else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    exceptions = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b.*: ", line)]
    return (exceptions or lines or ["unknown error"])[-1]
