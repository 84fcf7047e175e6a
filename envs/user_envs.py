"""A user's own env for `env:` without editing the registry: by file, by dotted class path, or PettingZoo by name.

- `env: my_env` (a file `envs/my_env.py`) or `env: path/to/my_env.py`: the file defines one env class (more than one:
  name it by dotted path); the file is imported on the driver and sent to env runners and nodes by value, so a node
  without it still builds the env.
- `env: my_package.my_module.MyEnv`: a class importable from the current folder or the installed packages.
- `env: pettingzoo` with `env_config: {env: mpe2.simple_spread_v3, ...}`: the module of a PettingZoo env; the rest
  of `env_config` goes to its constructor (`parallel_env(**kwargs)` where the module has one, else its AEC
  `env(**kwargs)`; `api: aec` picks the AEC one).

The class may be a PettingZoo `ParallelEnv` or `AECEnv`, a gymnasium `Env` (all three built as `Class(**env_config)`),
an RLlib `MultiAgentEnv` (`Class(env_config)`, RLlib's convention) or a project `BatchedEnv` (`Class(env_config)`,
with `env_config.num_envs` games). All but the last are stepped `num_envs` copies at a time (envs/games.py).

Example:
    >>> batch = pettingzoo_batch({"env": "mpe2.simple_spread_v3", "N": 2, "num_envs": 3})
    >>> batch.num_envs, batch.possible_agents
    (3, ['agent_0', 'agent_1'])
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import os
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import ray.cloudpickle as cloudpickle  # the pickler Ray uses for its registry
from pettingzoo.utils.env import AECEnv, ParallelEnv
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from envs.batched import BatchedEnv
from envs.errors import ConfigError
from envs.games import GameCopies

ENVS_DIR = Path(__file__).resolve().parent
PETTINGZOO = "pettingzoo"
PETTINGZOO_KEYS = ("env", "api", "num_envs")  # env_config keys of `env: pettingzoo` that are not the env's own
ENV_BASES = (BatchedEnv, MultiAgentEnv, ParallelEnv, AECEnv, gym.Env)  # RLlib's MultiAgentEnv is a gymnasium Env
TAKES_CONFIG_DICT = (BatchedEnv, MultiAgentEnv)  # built as Class(env_config); the others as Class(**env_config)


def names_user_env(env: str) -> bool:
    """Whether `env:` (neither a registry name nor a gymnasium id) names a user env: a file or a dotted class path."""
    return env.endswith(".py") or "." in env or (ENVS_DIR / f"{env}.py").is_file()


def user_env_entry(env: str):
    """The registry entry (`envs.EnvEntry`) of a user env named by `env:`; ConfigError naming the file or class and
    what is wrong."""
    from envs import EnvEntry  # the registry imports this module
    env_class = _env_class(env)
    create_batch = env_class if issubclass(env_class, BatchedEnv) else functools.partial(_copies_of_class, env_class)
    return EnvEntry(check_config=functools.partial(_check_kwargs, env, env_class), create_batch=create_batch,
                    checked_at_load=True)


def _env_class(env: str) -> type:
    if env.endswith(".py") or (ENVS_DIR / f"{env}.py").is_file():
        path = Path(env) if env.endswith(".py") else ENVS_DIR / f"{env}.py"
        return _class_in_file(env, path.resolve())
    module_name, _, class_name = env.rpartition(".")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # a package in the folder train.py runs from, as `python -m` finds it
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise ConfigError(f"env '{env}': cannot import module '{module_name}': {type(error).__name__}: {error}") \
            from error
    env_class = getattr(module, class_name, None)
    if not inspect.isclass(env_class):
        raise ConfigError(f"env '{env}': module '{module_name}' has no class '{class_name}'")
    _check_base(env, env_class)
    if not _installed(module):
        cloudpickle.register_pickle_by_value(module)
    return env_class


def _class_in_file(env: str, path: Path) -> type:
    if not path.is_file():
        raise ConfigError(f"env '{env}': no file {path}")
    module_name = f"user_env_{path.stem}"
    module = import_user_file(module_name, path, f"env '{env}'")
    classes = [value for value in vars(module).values()
               if inspect.isclass(value) and value.__module__ == module_name and issubclass(value, ENV_BASES)]
    if len(classes) != 1:
        found = ", ".join(c.__name__ for c in classes) or "none"
        raise ConfigError(f"env '{env}': {path} must define one env class (a subclass of "
                          f"{', '.join(base.__name__ for base in ENV_BASES)}); it defines {found}"
                          + ("; name one by dotted path, e.g. package.module.Class" if classes else ""))
    return classes[0]


def import_user_file(module_name: str, path: Path, label: str):
    """Imports a user's Python file (an env here, a model for marlkit/models.py) as `module_name`, kept in
    `sys.modules` and sent to env runners and nodes by value (cloudpickle), so a node without the file still has it;
    ConfigError `<label>: <path> fails to import: ...` when it raises."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[module_name]
        raise ConfigError(f"{label}: {path} fails to import: {type(error).__name__}: {error}") from error
    cloudpickle.register_pickle_by_value(module)
    return module


def _check_base(env: str, env_class: type) -> None:
    if not issubclass(env_class, ENV_BASES):
        raise ConfigError(f"env '{env}': class {env_class.__name__} is not an env: it must subclass one of "
                          f"{', '.join(base.__name__ for base in ENV_BASES)}")


def _installed(module) -> bool:
    path = getattr(module, "__file__", None) or ""
    return "site-packages" in path or "dist-packages" in path


def _check_kwargs(env: str, env_class: type, env_config: dict) -> None:
    """env_config keys the class's constructor does not take (for classes built as Class(**env_config))."""
    if issubclass(env_class, TAKES_CONFIG_DICT):
        return
    _check_constructor(env, env_class, {k: v for k, v in env_config.items() if k != "num_envs"})


def _check_constructor(env: str, constructor, kwargs: dict) -> None:
    try:
        inspect.signature(constructor).bind(**kwargs)
    except TypeError as error:
        raise ConfigError(f"env '{env}': env_config does not fit {constructor.__qualname__}(): {error}") from None
    except ValueError:
        pass  # a constructor without an inspectable signature: its own errors tell


def _copies_of_class(env_class: type, env_config: dict) -> GameCopies:
    kwargs = {k: v for k, v in env_config.items() if k != "num_envs"}
    if issubclass(env_class, TAKES_CONFIG_DICT):
        return GameCopies(lambda: env_class(kwargs), env_config.get("num_envs", 1))
    return GameCopies(lambda: env_class(**kwargs), env_config.get("num_envs", 1))


def pettingzoo_constructor(env_config: dict):
    """The function of env_config.env's module that builds the env: `parallel_env`, or `env` (AEC) where it has no
    parallel one or `api: aec` asks for it."""
    name, api = env_config.get("env"), env_config.get("api", "parallel")
    if not isinstance(name, str) or not name:
        raise ConfigError("env_config.env is required for env: pettingzoo: the module of a PettingZoo env, "
                          "e.g. mpe2.simple_spread_v3 or pettingzoo.classic.tictactoe_v3")
    if api not in ("parallel", "aec"):
        raise ConfigError(f"env_config.api must be parallel or aec, got {api!r}")
    try:
        module = importlib.import_module(name)
    except Exception as error:
        raise ConfigError(f"env_config.env: cannot import '{name}': {type(error).__name__}: {error} (pip install "
                          f"the package that has it)") from None
    constructor = getattr(module, "parallel_env", None) if api == "parallel" else None
    constructor = constructor or getattr(module, "env", None)
    if constructor is None:
        raise ConfigError(f"env_config.env: module '{name}' has neither parallel_env nor env: not a PettingZoo env")
    return constructor


def check_pettingzoo_config(env_config: dict) -> None:
    constructor = pettingzoo_constructor(env_config)
    kwargs = {k: v for k, v in env_config.items() if k not in PETTINGZOO_KEYS}
    # PettingZoo's env()/parallel_env() take **kwargs and hand them to the module's raw_env class
    raw_env = getattr(importlib.import_module(env_config["env"]), "raw_env", None)
    _check_constructor(f"{PETTINGZOO}: {env_config['env']}", raw_env if inspect.isclass(raw_env) else constructor,
                       kwargs)


def pettingzoo_batch(env_config: dict) -> GameCopies:
    constructor = pettingzoo_constructor(env_config)
    kwargs = {k: v for k, v in env_config.items() if k not in PETTINGZOO_KEYS}
    parameters = inspect.signature(constructor).parameters
    if "render_mode" not in kwargs and ("render_mode" in parameters or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())):
        kwargs["render_mode"] = "rgb_array"  # PettingZoo's envs all take it: frames on request only, no window

    def make():
        with warnings.catch_warnings():  # PettingZoo 1.27 warns on every classic env built without its registry
            warnings.simplefilter("ignore", DeprecationWarning)
            return constructor(**kwargs)

    return GameCopies(make, env_config.get("num_envs", 1))
