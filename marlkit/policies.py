"""Multi-agent policies declared in YAML, which RLlib's YAML files never could express.

In an experiment's `config`:

    multiagent:
      policies: shared          # one policy for every agent (the default)
      # policies: per_agent     # one policy per agent id, named after it
      # policies: per_group     # one policy per group of the env (Unity: per behavior name without ?team=...);
      #                         # the default of envs that define groups
      # policies:               # named policies; each lists agent-id glob patterns, first match wins
      #   blue: {agents: ["blue_*"]}
      #   red: {agents: "red_*", config: {lr: 0.0001}}   # `config`: per-policy RLlib overrides
      #   rival: {agents: "agent_3", heuristic: firefighter}  # a scripted policy the env offers; never trained
      policies_to_train: [blue] # optional; default: all
      count_steps_by: env_steps # optional RLlib setting
      critic: centralized       # optional: PPO's critics (MAPPO, marlkit/mappo.py) or SAC's twin critics (MASAC,
                                # marlkit/masac.py) see the whole game; default decentralized
      mixer: qmix               # optional, DQN: the team's Q is a mix of its agents' (vdn or qmix,
      mixer_config: {embed_dim: 32}   # marlkit/mixers.py), trained on the team reward:
      team_reward: sum          # the sum (a mixer's default) or mean of the team's rewards; MASAC's default:
                                # each agent's critic learns its own reward

Agent ids and per-agent spaces come from one instance of the env built in the driver, so policies get explicit
observation/action spaces and every agent that shares a policy must have the same spaces.

Example:
    >>> layout = PolicyLayout.parse({"policies": "per_agent"})
    >>> layout.assign(["agent_0", "agent_1"])
    {'agent_0': 'agent_0', 'agent_1': 'agent_1'}
"""

from __future__ import annotations

import fnmatch
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from ray.rllib.policy.policy import Policy, PolicySpec
from ray.rllib.policy.sample_batch import SampleBatch

from envs.batched import observation_size
from envs.errors import ConfigError, closest
from marlkit.mappo import CRITICS, CentralCriticPPOPolicy
from marlkit.masac import MASACPolicy, team_action_sizes
from marlkit.mixers import MIXER_SETTINGS, MIXERS, MixerDQNPolicy, mixer_settings
from marlkit.team import TEAM, TEAM_REWARDS, team_layout

LAYOUT_KEYS = ("policies", "policies_to_train", "count_steps_by", "critic", "mixer", "mixer_config", "team_reward")
NAMED_POLICY_KEYS = ("agents", "config", "heuristic")


def _check_named_policy(pid, entry) -> None:
    """One entry of a `multiagent.policies` mapping: its keys and their types."""
    if not isinstance(entry, dict) or "agents" not in entry:
        raise ConfigError(f"config.multiagent.policies.{pid} needs `agents`: a glob pattern or a list of them")
    for key in entry:
        if key not in NAMED_POLICY_KEYS:
            raise ConfigError(
                f"config.multiagent.policies.{pid}.{key} is not a known key; use: {', '.join(NAMED_POLICY_KEYS)}"
            )
    agents = entry["agents"]
    if not isinstance(agents, (str, list)) or not agents or isinstance(agents, list) and not all(
            isinstance(agent, str) for agent in agents):
        raise ConfigError(f"config.multiagent.policies.{pid}.agents must be an agent id or glob pattern, or a "
                          f"list of them (agent_0, \"agent_*\"), got {agents!r}")
    if not isinstance(entry.get("config") or {}, dict):
        raise ConfigError(f"config.multiagent.policies.{pid}.config must be a mapping of RLlib settings")
    if "heuristic" in entry and not isinstance(entry["heuristic"], str):
        raise ConfigError(f"config.multiagent.policies.{pid}.heuristic must be the name of a scripted policy")


def _parse_mixer(block: dict) -> dict:
    """The `mixer`, `mixer_config` and `team_reward` keys of a `multiagent` block."""
    mixer = block.get("mixer")
    if mixer is not None and mixer not in MIXERS:
        raise ConfigError(f"config.multiagent.mixer: {mixer!r} is not a mixer{closest(str(mixer), MIXERS)}; use "
                          f"vdn (the sum of the agents' Q-values) or qmix (a monotonic mix conditioned on the game's "
                          f"state)")
    settings = block.get("mixer_config") or {}
    if settings and mixer != "qmix":
        raise ConfigError(f"config.multiagent.mixer_config sets QMIX's mixing network; it needs mixer: qmix, "
                          f"not {mixer}")
    if not isinstance(settings, dict):
        raise ConfigError(f"config.multiagent.mixer_config must be a mapping such as {{embed_dim: 32}}, got "
                          f"{settings!r}")
    for key, value in settings.items():
        if key not in MIXER_SETTINGS:
            raise ConfigError(f"config.multiagent.mixer_config.{key} is not a QMIX setting"
                              f"{closest(key, MIXER_SETTINGS)}; known: {', '.join(MIXER_SETTINGS)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"config.multiagent.mixer_config.{key} must be a whole number >= 1, got {value!r}")
    team_reward = block.get("team_reward")
    if team_reward is not None and team_reward not in TEAM_REWARDS:
        raise ConfigError(f"config.multiagent.team_reward must be sum or mean (of the team's agents' rewards), "
                          f"got {team_reward!r}")
    return {"mixer": mixer, "mixer_config": dict(settings), "team_reward": team_reward}


@dataclass(frozen=True)
class PolicyLayout:
    mode: str  # "shared", "per_agent", "per_group" or "named"
    patterns: dict[str, tuple[str, ...]] = field(default_factory=dict)  # named: policy id -> agent patterns
    policy_configs: dict[str, dict] = field(default_factory=dict)
    heuristics: dict[str, str] = field(default_factory=dict)  # named: policy id -> scripted policy of the env
    policies_to_train: tuple[str, ...] | None = None
    count_steps_by: str | None = None
    group_of: Callable[[str], str] | None = None  # per_group: agent id -> policy id (a module-level function)
    critic: str = "decentralized"  # or "centralized": trained policies are CentralCriticPPOPolicy (marlkit/mappo.py)
    mixer: str | None = None  # "vdn" or "qmix": the first trained policy is MixerDQNPolicy (marlkit/mixers.py)
    mixer_config: dict = field(default_factory=dict)
    team_reward: str | None = None  # "sum" or "mean"; None: a mixer's sum, MASAC's own reward per agent
    run: str | None = None  # the algorithm: with critic centralized, PPO's (MAPPO) or SAC's (MASAC)

    @classmethod
    def parse(cls, block: dict | None, group_of: Callable[[str], str] | None = None,
              run: str | None = None) -> "PolicyLayout":
        """Validates the `multiagent` block of an experiment's config; `group_of` is the env's agent grouping, `run`
        the experiment's algorithm."""
        block = {} if block is None else block
        if not isinstance(block, dict):
            raise ConfigError("config.multiagent must be a mapping with a `policies` key")
        for key in block:
            if key not in LAYOUT_KEYS:
                raise ConfigError(f"config.multiagent.{key} is not a known key; use one of: {', '.join(LAYOUT_KEYS)}")
        policies = block.get("policies", "per_group" if group_of else "shared")
        to_train = block.get("policies_to_train")
        if to_train is not None and not isinstance(to_train, list):
            raise ConfigError("config.multiagent.policies_to_train must be a list of policy ids")
        critic = block.get("critic", "decentralized")
        if critic not in CRITICS:
            raise ConfigError(f"config.multiagent.critic: {critic!r} is not a critic{closest(str(critic), CRITICS)}; "
                              f"use centralized (one critic over the whole game, MAPPO) or decentralized (the default)")
        common = dict(
            policies_to_train=None if to_train is None else tuple(to_train),
            count_steps_by=block.get("count_steps_by"),
            critic=critic,
            run=run,
            **_parse_mixer(block),
        )
        if common["team_reward"] and not (common["mixer"] or critic == "centralized" and run == "SAC"):
            raise ConfigError("config.multiagent.team_reward is the reward of a team: it needs multiagent.mixer "
                              "(DQN) or critic: centralized with run: SAC (MASAC)")
        if policies in ("shared", "per_agent"):
            return cls(mode=policies, **common)
        if policies == "per_group":
            if group_of is None:
                raise ConfigError("config.multiagent.policies: per_group needs an env that groups its agents (unity)")
            return cls(mode=policies, group_of=group_of, **common)
        if not isinstance(policies, dict) or not policies:
            raise ConfigError(
                "config.multiagent.policies must be 'shared', 'per_agent', 'per_group' or a mapping of policy id -> "
                "{agents: [...]}"
            )
        patterns, configs, scripted = {}, {}, {}
        for pid, entry in policies.items():
            _check_named_policy(pid, entry)
            agents = entry["agents"]
            patterns[str(pid)] = (agents,) if isinstance(agents, str) else tuple(agents)
            configs[str(pid)] = dict(entry.get("config") or {})
            if "heuristic" in entry:
                scripted[str(pid)] = entry["heuristic"]
        layout = cls(mode="named", patterns=patterns, policy_configs=configs, heuristics=scripted, **common)
        for pid in layout.policies_to_train or ():
            if pid not in patterns:
                raise ConfigError(f"config.multiagent.policies_to_train names '{pid}', which is not a declared policy")
            if pid in scripted:
                raise ConfigError(f"config.multiagent.policies_to_train names '{pid}', a heuristic policy (never trained)")
        if scripted and len(scripted) == len(patterns):
            raise ConfigError("config.multiagent.policies: every policy is a heuristic; declare at least one to train")
        return layout

    @property
    def team_key(self) -> str | None:
        """The `multiagent` key that makes the trained agents one team learning from whole game steps
        (marlkit/team.py): `mixer` (DQN) or `critic` (centralized, with SAC); None for independent learners."""
        if self.mixer:
            return "mixer"
        return "critic" if self.critic == "centralized" and self.run == "SAC" else None

    def policy_for(self, agent_id: str) -> str | None:
        if self.mode == "shared":
            return "shared"
        if self.mode == "per_agent":
            return str(agent_id)
        if self.mode == "per_group":
            return self.group_of(str(agent_id))
        for pid, patterns in self.patterns.items():
            if any(fnmatch.fnmatchcase(str(agent_id), p) for p in patterns):
                return pid
        return None

    def assign(self, agent_ids) -> dict[str, str]:
        """Agent id -> policy id; every agent must match a policy and every named policy an agent."""
        mapping = {}
        for aid in agent_ids:
            pid = self.policy_for(aid)
            if pid is None:
                raise ConfigError(
                    f"agent '{aid}' matches no policy in config.multiagent.policies; add a pattern for it "
                    f"(agents: {', '.join(map(str, agent_ids))})"
                )
            mapping[aid] = pid
        unused = [pid for pid in self.patterns if pid not in mapping.values()]
        if unused:
            raise ConfigError(
                f"config.multiagent.policies.{unused[0]} matches none of the env's agents: {', '.join(map(str, agent_ids))}"
            )
        return mapping

    def rllib_multiagent(self, env, env_state: bool = True) -> dict:
        """The `multiagent` dict RLlib's old API stack takes, for the agents and spaces of `env`; a centralised critic
        reads the env's global state where it has one and `env_state` (the sampler gives it: the batched runner)."""
        agent_ids = list(env.possible_agents)
        mapping = self.assign(agent_ids)
        specs = {}
        for aid, pid in mapping.items():
            spaces = (env.observation_spaces[aid], env.action_spaces[aid])
            if pid in specs and (specs[pid].observation_space, specs[pid].action_space) != spaces:
                first = next(a for a, p in mapping.items() if p == pid)
                raise ConfigError(
                    f"agents '{first}' and '{aid}' share policy '{pid}' but have different spaces "
                    f"({specs[pid].observation_space}, {specs[pid].action_space}) vs {spaces}; give them separate policies"
                )
            specs[pid] = PolicySpec(None, spaces[0], spaces[1], self.policy_configs.get(pid, {}))
        for pid, name in self.heuristics.items():
            offered = getattr(env, "scripted_policies", {})
            if name not in offered:
                raise ConfigError(
                    f"config.multiagent.policies.{pid}.heuristic: '{name}' is not a heuristic of this env"
                    f"{closest(name, offered)}; available: {', '.join(offered) or 'none'}"
                )
            model = self.policy_configs.get(pid, {}).get("model") or {}
            if model:
                raise ConfigError(f"config.multiagent.policies.{pid}: a heuristic policy acts by rule and has no "
                                  f"model; remove its config.model ({sorted(model)})")
            specs[pid] = PolicySpec(ScriptedPolicy, specs[pid].observation_space, specs[pid].action_space,
                                    {**self.policy_configs.get(pid, {}), "act": offered[name]})
        to_train = self.policies_to_train or [pid for pid in specs if pid not in self.heuristics]
        if self.critic == "centralized" and self.run != "SAC":
            width = max(observation_size(env.observation_spaces[a]) for a in agent_ids)
            state_space = getattr(env, "state_space", None) if env_state else None
            for pid in to_train:
                own = [i for i, aid in enumerate(agent_ids) if mapping[aid] == pid]
                layout = {"agents": agent_ids, "own": own, "width": width,
                          "state_size": observation_size(state_space) if state_space is not None else 0}
                specs[pid] = PolicySpec(CentralCriticPPOPolicy, specs[pid].observation_space,
                                        specs[pid].action_space, {**specs[pid].config, "central_critic": layout})
        if self.team_key:
            self._add_team(specs, mapping, agent_ids, to_train, env)
        block = {
            "policies": specs,
            "policy_mapping_fn": PolicyMapping(self),
            "policies_to_train": list(to_train) if (self.policies_to_train or self.heuristics) else None,
        }
        if self.count_steps_by:
            block["count_steps_by"] = self.count_steps_by
        return block

    def _add_team(self, specs: dict, mapping: dict, agent_ids: list, to_train, env) -> None:
        """Makes the first trained policy the host of the team of every trained policy's agents (marlkit/team.py):
        a mixer's (marlkit/mixers.py) or MASAC's centralised critics' (marlkit/masac.py)."""
        team = {pid: [i for i, aid in enumerate(agent_ids) if mapping[aid] == pid] for pid in to_train}
        members = [agent_ids[i] for indices in team.values() for i in indices]
        what = "config.multiagent.mixer mixes the Q-values" if self.mixer else \
            "config.multiagent.critic: centralized (MASAC) values the actions"
        if len(members) < 2:
            raise ConfigError(f"{what} of a team of 2 or more trained agents; this game's team is "
                              f"{members or 'empty'}; train more agents, or remove the key")
        width = max(observation_size(env.observation_spaces[a]) for a in agent_ids)
        host = next(iter(team))
        if self.mixer:
            policy_class, reward = MixerDQNPolicy, self.team_reward or "sum"
            learner = mixer_settings(self.mixer, self.mixer_config)
        else:
            spaces = [env.action_spaces[a] for a in members]
            if len({type(space) for space in spaces}) > 1:
                raise ConfigError(f"{what} of a team acting all in Box or all in Discrete spaces; this team mixes "
                                  f"{sorted({type(space).__name__ for space in spaces})}")
            discrete, sizes = team_action_sizes(spaces)
            policy_class, reward = MASACPolicy, self.team_reward
            learner = {"critic": "centralized", "discrete": discrete, "action_sizes": sizes}
        layout = team_layout(agent_ids, width, team, reward, **learner)
        specs[host] = PolicySpec(policy_class, specs[host].observation_space, specs[host].action_space,
                                 {**specs[host].config, TEAM: layout})


class PolicyMapping:
    """RLlib `policy_mapping_fn` for a layout; a picklable object rather than a lambda so checkpoints restore."""

    def __init__(self, layout: PolicyLayout):
        self.layout = layout

    def __call__(self, agent_id, episode=None, worker=None, **kwargs) -> str:
        pid = self.layout.policy_for(agent_id)
        if pid is None:
            raise ValueError(f"agent {agent_id!r} matches no policy pattern")
        return pid

    def __repr__(self) -> str:
        return f"PolicyMapping({self.layout.mode})"


class ScriptedPolicy(Policy):
    """A fixed, never-trained RLlib policy (old API stack) whose actions come from an env's scripted rule:
    config `act`, a function `act(observations (rows, size), rng) -> actions (rows, width)` on whole arrays (the
    `scripted_policies` of envs/batched.py), and optionally `seed`."""

    def __init__(self, observation_space, action_space, config):
        super().__init__(observation_space, action_space, config)
        self.act = config["act"]
        # Each scripted policy on each env runner draws its own stream: the algorithm's seed alone would give two
        # `random` policies, and every runner, the same actions.
        seed = config.get("seed")
        self.rng = np.random.default_rng(None if seed is None else [
            seed, config.get("worker_index", 0), zlib.crc32(str(config.get("__policy_id")).encode())])

    def init_view_requirements(self):
        super().init_view_requirements()
        infos = self.view_requirements[SampleBatch.INFOS]
        infos.used_for_training = infos.used_for_compute_actions = False

    def compute_actions(self, obs_batch, state_batches=None, prev_action_batch=None, prev_reward_batch=None,
                        rng: np.random.Generator | None = None, **kwargs):
        """The rule's actions; `rng`: draw from this stream instead of the policy's own (evaluations that replay
        the same games for several candidates)."""
        return self.act(np.asarray(obs_batch), rng=self.rng if rng is None else rng), [], {}

    def learn_on_batch(self, samples):
        return {}

    def compute_log_likelihoods(self, actions, obs_batch, *args, **kwargs):
        return np.zeros(len(obs_batch))

    def get_weights(self):
        return {}

    def set_weights(self, weights) -> None:
        pass

    def _get_dummy_batch_from_view_requirements(self, batch_size: int = 1):
        return SampleBatch({SampleBatch.OBS: self.observation_space.sample()[None]})
