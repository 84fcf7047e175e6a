"""What train.py and rollout.py share: one-line errors instead of tracebacks, and mapping-valued flags."""

from __future__ import annotations

import sys
from typing import Callable

import yaml

from envs.errors import ConfigError
from marlkit.errors import RunFailure


def parse_mapping(flag: str, text: str, example: str) -> dict:
    """A flag's JSON/YAML mapping value, e.g. --stop '{training_iteration: 5}'; ConfigError otherwise."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise ConfigError(f"{flag} must be a mapping such as '{example}', got {text!r}")
    return value


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Runs a CLI entry point; ConfigError becomes `error: ...` on stderr and exit code 2, RunFailure the same line
    and exit code 1.

    With `--debug` in the arguments the full traceback is shown instead.
    """
    args = sys.argv[1:] if argv is None else argv
    if "--debug" in args:
        sys.exit(main(args))
    try:
        sys.exit(main(args))
    except ConfigError as error:
        _leave_ray()
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except RunFailure as error:
        _leave_ray()
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        _leave_ray()
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def _leave_ray() -> None:
    """Disconnects from Ray (stopping the instance this process started) before the final line is printed: Ray
    forwards its actors' output asynchronously, and a line such as `(PPO pid=...) SystemExit: 1` arriving after the
    error would otherwise end stderr."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
