"""User-facing errors: one line that names the problem and what to do, and a non-zero exit."""

from __future__ import annotations

import difflib
import sys
from typing import Callable, Iterable


class ConfigError(Exception):
    """A problem in what the user gave us (YAML, paths, flags); printed as one line, without a traceback."""


def closest(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest candidate, or ''.

    A candidate that starts with `name` (a truncated key such as `grace` for `grace_period`) wins over spelling
    similarity.
    """
    name, candidates = str(name), [str(c) for c in candidates]
    match = [c for c in candidates if c.startswith(name) and len(name) >= 3]
    match = match or difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Runs a CLI entry point; ConfigError becomes `error: ...` on stderr and exit code 2.

    With `--debug` in the arguments the full traceback is shown instead.
    """
    args = sys.argv[1:] if argv is None else argv
    if "--debug" in args:
        sys.exit(main(args))
    try:
        sys.exit(main(args))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
