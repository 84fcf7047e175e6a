"""Environment registry: the `env:` names an experiment YAML may use.

`ENVS` maps a name to an env class whose constructor takes the `env_config` dict. A class may define a static
`check_config(env_config)` that raises `marlkit.errors.ConfigError`; it runs before Ray starts.
To add an environment, add one entry here.
"""

from envs.vmas_env import VmasEnv

ENVS = {
    "vmas": VmasEnv,
}
