"""Bucket Brigade: the Rust core against the numpy reference, game rules, seeding, auto-reset, bad input, heuristics,
the RLlib env and its scripted policies."""

from __future__ import annotations

import re

import numpy as np
import pytest
from ray.rllib.utils.pre_checks.env import check_multiagent_environments

from conftest import write_yaml
from envs.bucket_brigade import SCENARIOS, Scenario, VecEnv, heuristics, obs_layout, reference
from envs import ENVS
from envs.bucket_brigade.env import FEATURE_SCALES, BucketBrigadeBatch
from envs.errors import ConfigError
from marlkit.spec import load_experiments

IMPLEMENTATIONS = {"rust": VecEnv, "reference": reference.VecEnv}
SAFE, BURNING, RUINED = 0, 1, 2
# Probabilities of 0 and 1 make every draw's outcome certain: both implementations must then agree exactly.
CERTAIN = {
    "no_fires": SCENARIOS["trivial_cooperation"],
    "all_burn_workers_save": Scenario(0.0, 1.0, 1.0, 100, 100, 0.5, 3, reward_other_house_survives=0.3,
                                      penalty_other_house_burns=0.7, distance_cost_alpha=0.1,
                                      agent_home_positions=(0, 3, 5, 8)),
    "contagion": Scenario(1.0, 1.0, 1.0, 100, 100, 0.5, 3, spread_before_burnout=True),
    "no_one_saves": Scenario(1.0, 0.0, 1.0, 10, 10, 0.5, 2),
    "continuous": Scenario(1.0, 0.5, 1.0, 100, 100, 0.5, 3, continuous=True, suppression_per_worker=0.5),
}


def random_actions(rng, num_envs: int, num_agents: int, houses: int, work: float = 0.5) -> np.ndarray:
    shape = (num_envs, num_agents)
    return np.stack([rng.integers(0, houses, shape), (rng.random(shape) < work).astype(np.int64),
                     rng.integers(0, 2, shape)], axis=-1)


def play(make, scenario, nights: int, num_envs: int = 16, num_agents: int = 4, seed: int = 0, max_nights: int = 20,
         action_seed: int = 1):
    """Trajectories (obs per night incl. reset, rewards, terminated, truncated, actions) with random actions."""
    env = make(scenario, num_envs, num_agents, seed=seed, max_nights=max_nights)
    rng = np.random.default_rng(action_seed)
    trajectory = {"obs": [env.reset().copy()], "rewards": [], "terminated": [], "truncated": [], "actions": []}
    for _ in range(nights):
        actions = random_actions(rng, num_envs, num_agents, env.num_houses)
        obs, rewards, terminated, truncated = env.step(actions)
        for key, value in zip(("obs", "rewards", "terminated", "truncated", "actions"),
                              (obs, rewards, terminated, truncated, actions)):
            trajectory[key].append(np.array(value, copy=True))
    env.close()
    return {key: np.stack(value) for key, value in trajectory.items()}


@pytest.mark.parametrize("name", CERTAIN)
def test_rust_and_reference_agree_exactly_where_nothing_is_random(name):
    rust = play(VecEnv, CERTAIN[name], nights=60)
    numpy = play(reference.VecEnv, CERTAIN[name], nights=60)
    np.testing.assert_array_equal(rust["obs"], numpy["obs"])
    np.testing.assert_allclose(rust["rewards"], numpy["rewards"], rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(rust["terminated"], numpy["terminated"])
    np.testing.assert_array_equal(rust["truncated"], numpy["truncated"])
    assert (rust["terminated"] | rust["truncated"]).any(), "no game ended: auto-reset went untested"


def test_certain_scenarios_follow_the_rules():
    """Hand-checked consequences of the rules in the certain scenarios."""
    layout = obs_layout(10, 4)
    no_one = play(VecEnv, CERTAIN["no_one_saves"], nights=3)
    # kappa 0: every fire burns out the first night; rho 1 sets every house that is still SAFE on fire (none left)
    assert (no_one["obs"][1][..., layout["houses"]] == RUINED).all()
    # team term -10 (all ruined), rest +0.5 or work -0.5, own ruined houses -2 each (houses h with h % 4 == agent)
    owned = np.array([3, 3, 2, 2])
    expected = -10 + np.where(no_one["actions"][0][..., 1] == 1, -0.5, 0.5) - 2 * owned
    np.testing.assert_allclose(no_one["rewards"][0], expected)
    # nothing burns after the first night; the game ends on the first night played at night >= min_nights (2)
    assert not no_one["terminated"][:2].any() and no_one["terminated"][2].all()


def test_beta_is_inert_in_the_canonical_order_and_live_in_the_contagion_variant():
    houses = obs_layout(10, 4)["houses"]

    def games(scenario):  # house states and rewards (observations also carry beta itself)
        run = play(VecEnv, scenario, 40)
        return run["obs"][..., houses], run["rewards"]

    base = SCENARIOS["default"]
    for mine, theirs in zip(games(base), games(base.with_options(prob_fire_spreads=0.9))):
        np.testing.assert_array_equal(mine, theirs)
    contagion = base.with_options(spread_before_burnout=True)
    assert not np.array_equal(games(contagion)[0], games(contagion.with_options(prob_fire_spreads=0.9))[0])


def first_episodes(make, scenario: str, games: int, seed: int):
    """Uniform random play: per game, the first episode's length; all reward per night; burning-house outcomes."""
    env = make(scenario, games, 4, seed=seed, max_nights=100)
    rng = np.random.default_rng(seed + 1)
    layout = obs_layout(env.num_houses, 4)
    obs = env.reset().copy()
    lengths = np.zeros(games, dtype=int)
    finished = np.zeros(games, dtype=bool)
    rewards_per_night, outcomes = [], {0: [], 1: [], 2: []}
    while not finished.all():
        actions = random_actions(rng, games, 4, env.num_houses)
        new_obs, rewards, terminated, truncated = env.step(actions)
        playing = ~finished
        lengths[playing] += 1
        rewards_per_night.append(rewards[playing].ravel().copy())
        burning = obs[:, 0, layout["houses"]] == BURNING
        workers = np.zeros_like(burning, dtype=int)
        for agent in range(4):
            np.add.at(workers, (np.arange(games), actions[:, agent, 0]), actions[:, agent, 1])
        put_out = new_obs[:, 0, layout["houses"]] != RUINED  # burn-out follows at once in the canonical order
        for k in outcomes:
            mask = burning & (workers == k) & playing[:, None]
            outcomes[k].append(put_out[mask])
        finished |= terminated | truncated
        obs = new_obs.copy()
    return lengths, np.concatenate(rewards_per_night), {k: np.concatenate(v) for k, v in outcomes.items()}


def assert_same_mean(a: np.ndarray, b: np.ndarray, what: str) -> None:
    error = np.sqrt(a.var() / len(a) + b.var() / len(b))
    assert abs(a.mean() - b.mean()) < 4 * error + 1e-9, f"{what}: {a.mean():.3f} vs {b.mean():.3f} (se {error:.3f})"


@pytest.mark.parametrize("scenario", ["default", "hard"])
def test_rust_and_reference_agree_statistically(scenario):
    rust = first_episodes(VecEnv, scenario, 3000, seed=11)
    numpy = first_episodes(reference.VecEnv, scenario, 1500, seed=12)
    assert_same_mean(rust[0].astype(float), numpy[0].astype(float), "episode length")
    assert_same_mean(rust[1], numpy[1], "reward per agent per night")
    kappa = SCENARIOS[scenario].prob_solo_agent_extinguishes_fire
    for k in (0, 1, 2):
        expected = 1 - (1 - kappa) ** k
        for name, (_, _, outcomes) in (("rust", rust), ("reference", numpy)):
            rate = outcomes[k].mean()
            error = np.sqrt(max(expected * (1 - expected), 1e-4) / len(outcomes[k]))
            assert abs(rate - expected) < 4 * error + 1e-9, f"{name}: put out with {k} workers {rate:.3f} vs {expected:.3f}"
    assert 12 < rust[0].mean() < 100  # min_nights 12: games end after at least 13 nights


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_keeps_the_invariants(name):
    scenario = SCENARIOS[name]
    houses, max_nights = scenario.num_houses, 30
    run = play(VecEnv, name, nights=80, num_envs=64, max_nights=max_nights)
    layout = obs_layout(houses, 4)
    state = run["obs"][..., 0, layout["houses"]]  # (nights + 1, envs, houses)
    night = run["obs"][..., 0, layout["night"]][..., 0]
    assert set(np.unique(state)) <= {SAFE, BURNING, RUINED}
    assert np.isfinite(run["rewards"]).all()
    bound = (scenario.team_reward_house_survives + scenario.team_penalty_house_burns + scenario.cost_to_work_one_night
             + scenario.reward_rest + scenario.distance_cost_alpha * houses
             + houses * max(scenario.reward_own_house_survives, scenario.reward_other_house_survives)
             + houses * max(scenario.penalty_own_house_burns, scenario.penalty_other_house_burns))
    assert np.abs(run["rewards"]).max() <= bound
    ended = run["terminated"] | run["truncated"]
    for t in range(80):
        fresh = ended[t - 1] if t else np.zeros(64, dtype=bool)  # this step reset the game
        assert (night[t + 1][fresh] == 0).all() and (night[t + 1][~fresh] == night[t][~fresh] + 1).all()
        playing = ~fresh
        assert ((state[t + 1] == RUINED) | (state[t] != RUINED))[playing].all(), "a ruined house recovered"
        done = run["terminated"][t]
        assert (night[t][done] >= scenario.min_nights).all() and not (state[t + 1][done] == BURNING).any()
        assert (night[t + 1][run["truncated"][t]] == max_nights).all()
        assert not (run["terminated"][t] & run["truncated"][t]).any()
    if name == "trivial_cooperation":
        assert (state == SAFE).all()
    if scenario.continuous:
        assert not (state == RUINED).any()  # continuous fires persist instead of burning out
    features = run["obs"][0, 0, 0, layout["scenario"]]
    np.testing.assert_allclose(features, scenario.features(4), rtol=1e-6)
    identity = run["obs"][0, 0, :, layout["identity"]]
    np.testing.assert_array_equal(identity, np.eye(4))


@pytest.mark.parametrize("make", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS)
def test_seeding(make):
    same = [play(make, "hard", nights=30, seed=5)["obs"] for _ in range(2)]
    np.testing.assert_array_equal(*same)
    assert not np.array_equal(same[0], play(make, "hard", nights=30, seed=6)["obs"])
    env = make("hard", 8, 4, seed=5, max_nights=20)
    first = env.reset().copy()
    env.step(random_actions(np.random.default_rng(0), 8, 4, 10))
    np.testing.assert_array_equal(env.reset(seed=5), first)


# Random fires (rho) that houses survive (kappa < 1 with workers, and rho < 1 spares a house put out), and every
# ownership term non-zero, distinct and asymmetric: each reward term leaves its own trace.
SAVES = Scenario(0.3, 0.7, 0.3, 50, 80, 0.4, 3, reward_own_house_survives=1.7, penalty_own_house_burns=2.3,
                 reward_other_house_survives=0.9, penalty_other_house_burns=0.6, reward_rest=0.25,
                 distance_cost_alpha=0.15, agent_home_positions=(1, 4, 6, 9))


def expected_rewards(scenario: Scenario, start: np.ndarray, end: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """The game's reward rule (dense, every night), written out here for one night of one game:
    houses (H,) at the start and end of the night, actions (agents, 3) -> rewards (agents,)."""
    houses, agents = len(start), len(actions)
    saved, ruined = (start != SAFE) & (end == SAFE), end == RUINED
    team = (scenario.team_reward_house_survives * np.sum(end == SAFE)
            - scenario.team_penalty_house_burns * np.sum(ruined)) / houses
    rewards = np.zeros(agents)
    for agent in range(agents):
        own = np.arange(houses) % agents == agent
        home, target = scenario.homes(agents)[agent], actions[agent, 0]
        distance = min(abs(home - target), houses - abs(home - target))
        work = actions[agent, 1] == 1
        rewards[agent] = (team + (-scenario.cost_to_work_one_night - scenario.distance_cost_alpha * distance
                                  if work else scenario.reward_rest)
                          + scenario.reward_own_house_survives * np.sum(saved & own)
                          + scenario.reward_other_house_survives * np.sum(saved & ~own)
                          - scenario.penalty_own_house_burns * np.sum(ruined & own)
                          - scenario.penalty_other_house_burns * np.sum(ruined & ~own))
    return rewards


@pytest.mark.parametrize("make", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS)
def test_rewards_follow_the_rule_exactly_when_houses_are_saved(make):
    """Every night's rewards equal the rule applied to the houses the observations show before and after it, in a
    scenario where fires are put out and stay out: own and other houses saved (both terms non-zero), own and other
    houses ruined, work at a distance and rest. The restart step after a finished game pays nothing."""
    run = play(make, SAVES, nights=120, num_envs=24, seed=3, max_nights=15)
    houses = obs_layout(10, 4)["houses"]
    saves = 0
    without_save_terms = SAVES.with_options(reward_own_house_survives=0.0, reward_other_house_survives=0.0)
    ended = np.zeros(24, dtype=bool)
    for night in range(120):
        start, end = run["obs"][night][:, 0, houses], run["obs"][night + 1][:, 0, houses]
        for game in range(24):
            if ended[game]:
                assert (run["rewards"][night][game] == 0).all()
                continue
            actions = run["actions"][night][game]
            rewards = run["rewards"][night][game]
            np.testing.assert_allclose(rewards, expected_rewards(SAVES, start[game], end[game], actions),
                                       rtol=1e-5, atol=1e-4)
            saved = (start[game] != SAFE) & (end[game] == SAFE)
            workers = np.bincount(actions[actions[:, 1] == 1, 0], minlength=10)
            assert not (saved & (workers == 0)).any(), "a fire went out with nobody working it"
            if saved.any():  # the owner gets the own-house term, the other agents the other-house term
                saves += int(saved.sum())
                assert np.abs(rewards - expected_rewards(without_save_terms, start[game], end[game], actions)).min() > 0.5
        ended = run["terminated"][night] | run["truncated"][night]
    assert saves > 20, saves


@pytest.mark.parametrize("make", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS)
def test_auto_reset_ignores_the_finished_games_actions(make):
    env = make(CERTAIN["no_one_saves"], 3, 2, seed=0, max_nights=10)
    env.reset()
    rest = np.zeros((3, 2, 3), dtype=np.int64)
    for _ in range(3):
        _, rewards, terminated, truncated = env.step(rest)
    assert terminated.all()  # all ruined at night 0; no fire left; the game ends on night 2 (>= min_nights 2)
    garbage = rest.copy()
    garbage[..., 0] = 99  # out of range: must be ignored, the games restart
    obs, rewards, terminated, truncated = env.step(garbage)
    layout = obs_layout(10, 2)
    assert (obs[..., layout["night"]] == 0).all() and (obs[..., layout["last_actions"]] == 0).all()
    assert (rewards == 0).all() and not terminated.any() and not truncated.any()
    assert (obs[..., layout["houses"]] == BURNING).all()  # rho 1: the new game starts with every house on fire


@pytest.mark.parametrize("make", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS)
def test_bad_input_is_a_clear_error_and_changes_nothing(make):
    with pytest.raises(ValueError, match="unknown Bucket Brigade scenario 'defualt'; available: default, easy"):
        make("defualt", 2)
    for kwargs, message in (({"num_envs": 0}, "num_envs must be a whole number >= 1"),
                            ({"num_envs": 2, "num_agents": 0}, "num_agents must be a whole number >= 1")):
        with pytest.raises(ValueError, match=message):
            make("default", **kwargs)
    env, twin = make("hard", 2, 3, seed=4), make("hard", 2, 3, seed=4)
    env.reset(), twin.reset()
    good = np.zeros((2, 3, 3), dtype=np.int64)
    with pytest.raises(ValueError, match=r"shape \(num_envs, num_agents, 3\) = \(2, 3, 3\).*got \(2, 3\)"):
        env.step(good[..., 0])
    with pytest.raises(TypeError, match="must be integers.*float64"):
        env.step(good.astype(np.float64))
    for field, value, message in ((0, 10, "house index out of range"), (0, -1, "house index out of range"),
                                  (1, 2, "mode must be 0 (REST) or 1 (WORK)"), (2, 5, "signal must be 0 or 1")):
        bad = good.copy()
        bad[1, 2, field] = value
        with pytest.raises(ValueError, match=re.escape(f"bad action for env 1, agent 2: {message} (got {value})")):
            env.step(bad)
    for _ in range(5):
        results = env.step(good), twin.step(good)
        for mine, theirs in zip(*results):
            np.testing.assert_array_equal(mine, theirs)


def test_native_core_refuses_impossible_sizes_without_crashing():
    with pytest.raises(ValueError, match="num_agents must be <= 255"):
        VecEnv("default", 1, 300)
    with pytest.raises(ValueError, match="refused"):
        VecEnv(SCENARIOS["default"].with_options(num_houses=1), 1, 2)
    env = VecEnv("default", 1, 2)
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):
        env.step(np.zeros((1, 2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="unknown scenario parameter"):
        SCENARIOS["default"].with_options(spread_before_burnup=True)


def heuristic_actions(name: str, burning_house: int | None, agent: int, rows: int = 4000) -> np.ndarray:
    obs = np.zeros((rows, obs_layout(10, 4)["night"].stop), dtype=np.float32)
    layout = obs_layout(10, 4)
    if burning_house is not None:
        obs[:, layout["houses"].start + burning_house] = BURNING
    obs[:, layout["identity"].start + agent] = 1
    return heuristics.act(name, obs, 10, 4, np.random.default_rng(0))


def test_heuristics_act_like_their_archetypes():
    for name in heuristics.HEURISTICS:
        actions = heuristic_actions(name, burning_house=7, agent=1)
        assert actions.shape == (4000, 3) and actions.dtype == np.int64
        assert ((actions[:, 0] >= 0) & (actions[:, 0] < 10)).all() and set(np.unique(actions[:, 1:])) <= {0, 1}
    work = {name: heuristic_actions(name, 7, 1)[:, 1].mean() for name in heuristics.ARCHETYPES}
    assert work["hero"] > work["firefighter"] > work["coordinator"] > work["free_rider"]
    assert abs(work["firefighter"] - 0.9) < 0.03 and abs(work["free_rider"] - 0.02) < 0.01
    firefighter = heuristic_actions("firefighter", burning_house=1, agent=1)  # its own house burns
    working = firefighter[:, 1] == 1
    assert (firefighter[working, 0] == 1).all()  # the only burning house is its own
    calm = heuristic_actions("firefighter", burning_house=None, agent=2)
    assert (calm[:, 0] == 2).all()  # nothing burns: stays home
    liar = heuristic_actions("liar", 7, 1)
    assert abs((liar[:, 2] != liar[:, 1]).mean() - 0.9) < 0.03
    with pytest.raises(ValueError, match="unknown heuristic 'pyromaniac'; available: firefighter"):
        heuristics.act("pyromaniac", np.zeros((1, 47)), 10, 4, np.random.default_rng(0))


def test_the_pool_plays_one_archetype_per_row_and_agent():
    """Row r of agent a plays archetype (r + a) mod 5, drawing from the stream exactly as that archetype does."""
    layout = obs_layout(10, 4)
    obs = np.zeros((20, 47), dtype=np.float32)
    obs[:, layout["houses"].start + np.array([2, 7])] = BURNING
    for agent in range(4):
        obs[:, layout["identity"]] = 0
        obs[:, layout["identity"].start + agent] = 1
        pool = heuristics.act("pool", obs, 10, 4, np.random.default_rng(5))
        archetypes = list(heuristics.ARCHETYPES)
        for row in range(20):
            name = archetypes[(row + agent) % 5]
            alone = heuristics.act(name, obs, 10, 4, np.random.default_rng(5))
            np.testing.assert_array_equal(pool[row], alone[row], err_msg=f"row {row}, agent {agent}: {name}")


def test_a_list_of_scenarios_splits_the_games_among_them(tmp_path):
    """env_config.scenario: [a, b, c] over 7 games: games 0-1 play a, 2-3 b, 4-6 c, each block exactly as its own
    core seeded with seed + block; one game (RLlib's env of num_envs 1) draws a scenario at each reset."""
    names = ["default", "easy", "hard"]
    batch = BucketBrigadeBatch({"scenario": names, "num_envs": 7, "seed": 11})
    blocks = [VecEnv(name, games, 4, seed=11 + j) for j, (name, games) in enumerate(zip(names, (2, 2, 3)))]
    obs = batch.reset()
    np.testing.assert_allclose(obs, batch.scale_observations(np.concatenate([block.reset() for block in blocks])))
    for block, rows in zip(blocks, (slice(0, 2), slice(2, 4), slice(4, 7))):
        np.testing.assert_allclose(obs[rows, :, obs_layout(10, 4)["scenario"]] * FEATURE_SCALES,
                                   np.broadcast_to(block.scenario.features(4), (rows.stop - rows.start, 4, 12)),
                                   rtol=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(30):
        actions = np.stack([rng.integers(0, 10, (7, 4)), rng.integers(0, 2, (7, 4)), rng.integers(0, 2, (7, 4))], -1)
        obs, rewards, terminated, truncated = batch.step(actions)
        parts = [block.step(part) for block, part in zip(blocks, np.split(actions, [2, 4]))]
        expected = [np.concatenate([part[column] for part in parts]) for column in range(4)]
        np.testing.assert_allclose(obs, batch.scale_observations(expected[0]))
        for got, want in zip((rewards, terminated, truncated), expected[1:]):
            np.testing.assert_array_equal(got, want)
    batch.close()
    single = ENVS["bucket_brigade"].make({"scenario": ["easy", "hard"], "seed": 2})
    drawn = {float(single.reset()[0]["agent_0"][obs_layout(10, 4)["scenario"]][5]) for _ in range(20)}
    assert drawn == {np.float32(0.01), np.float32(0.05)}  # rho of easy and hard: both are played
    single.close()
    # the batched runner's one game of a mix draws at its restarts too (next-step auto-reset: zero rewards, no flags)
    one, played, ended = BucketBrigadeBatch({"scenario": ["easy", "hard"], "seed": 2, "max_nights": 2}), set(), False
    one.reset()
    for _ in range(60):
        obs, rewards, terminated, truncated = one.step(np.zeros((1, 4, 3), np.int64))
        if ended:
            assert rewards.tolist() == [[0.0] * 4] and not terminated[0] and not truncated[0]
            played.add(float(obs[0, 0, obs_layout(10, 4)["scenario"]][5]))
        ended = bool(terminated[0] or truncated[0])
    assert played == {np.float32(0.01), np.float32(0.05)}
    one.close()
    experiment = {"run": "PPO", "env": "bucket_brigade", "config": {"num_envs_per_env_runner": 2, "env_config": {}}}
    for scenario, error in (([], "an empty list"), (["default", "v2_minimal"], "same number of houses, got default "
                                                    r"\(10\), v2_minimal \(2\)"),
                            (["easy", "hrad"], "unknown Bucket Brigade scenario 'hrad'.*did you mean 'hard'"),
                            (names, "a mix of 3 scenarios needs at least 3 games per env runner")):
        experiment["config"]["env_config"]["scenario"] = scenario
        with pytest.raises(ConfigError, match=error):
            load_experiments(write_yaml(tmp_path / "mix.yaml", {"mix": experiment}))


def test_rllib_env_passes_the_checker_and_scales_observations():
    env = ENVS["bucket_brigade"].make({"scenario": "hard", "num_agents": 3, "max_nights": 20, "seed": 3, "reward_scale": 0.01})
    check_multiagent_environments(env)
    obs, _ = env.reset(seed=3)
    assert sorted(obs) == ["agent_0", "agent_1", "agent_2"]
    layout = obs_layout(10, 3)
    row = obs["agent_1"]
    np.testing.assert_allclose(row[layout["scenario"]][2:4], [1.0, 1.0])  # A = L = 100, scaled by 100
    np.testing.assert_array_equal(row[layout["identity"]], [0, 1, 0])
    assert env.action_spaces["agent_0"].nvec.tolist() == [10, 2, 2]
    _, rewards, terminated, truncated, _ = env.step({agent: np.array([0, 0, 0]) for agent in obs})
    raw = VecEnv("hard", 1, 3, seed=3, max_nights=20)
    raw.reset()
    _, raw_rewards, _, _ = raw.step(np.zeros((1, 3, 3), dtype=np.int64))
    np.testing.assert_allclose([rewards[a] for a in sorted(rewards)], raw_rewards[0] * 0.01, rtol=1e-5)
    with pytest.raises(ValueError, match="no action for agent_2"):
        env.step({"agent_0": np.array([0, 0, 0]), "agent_1": np.array([0, 0, 0])})


def test_env_config_and_heuristic_policy_errors(tmp_path):
    def load(env_config=None, policies=None, **layout):
        experiment = {"run": "PPO", "env": "bucket_brigade", "config": {
            "env_config": env_config or {}, "multiagent": {"policies": policies or "shared", **layout}}}
        return load_experiments(write_yaml(tmp_path / "bb.yaml", {"bb": experiment}))

    with pytest.raises(ConfigError, match="unknown Bucket Brigade scenario 'greedy'.*did you mean 'greedy_neighbor'"):
        load({"scenario": "greedy"})
    with pytest.raises(ConfigError, match="env_config.max_night is not a Bucket Brigade setting.*'max_nights'"):
        load({"max_night": 5})
    with pytest.raises(ConfigError, match="env_config.num_agents must be a whole number >= 1"):
        load({"num_agents": 0})
    learner = {"agents": "agent_0"}
    with pytest.raises(ConfigError, match="'firefigher' is not a heuristic of this env.*'firefighter'"):
        load(policies={"learner": learner, "rival": {"agents": "agent_*", "heuristic": "firefigher"}})
    with pytest.raises(ConfigError, match="policies_to_train names 'rival', a heuristic policy"):
        load(policies={"learner": learner, "rival": {"agents": "agent_*", "heuristic": "hero"}},
             policies_to_train=["rival"])
    with pytest.raises(ConfigError, match=r"policies.rival: a heuristic policy acts by rule and has no model; remove "
                                          r"its config.model \(\['custom_model', 'use_lstm'\]\)"):
        load(policies={"learner": learner, "rival": {"agents": "agent_*", "heuristic": "hero",
                                                     "config": {"model": {"use_lstm": True, "custom_model": "lstm"}}}})
    with pytest.raises(ConfigError, match="every policy is a heuristic"):
        load(policies={"rival": {"agents": "agent_*", "heuristic": "hero"}})
    (experiment,) = load({"scenario": "easy", "spread_before_burnout": True},
                         policies={"learner": learner, "rival": {"agents": "agent_*", "heuristic": "hero"}})
    assert experiment.policy_layout.heuristics == {"rival": "hero"}


def test_seat_evaluation_scores_an_rllib_policy_exactly_as_the_scripted_table():
    """The learner's evaluation path (an RLlib policy on the observations it trains on, `policy_seat`) and the scripted
    table of the bench (`seat_table`) give the same figure for every scripted agent on the same games; different
    agents score differently, and the seat's figure is its reward per night played."""
    from envs.bucket_brigade.evaluation import play, policy_seat, scripted_seat, seat_reward_per_night, seat_table
    from marlkit.policies import ScriptedPolicy

    opponents = ("random", "hero", "free_rider")
    table = seat_table("chain_reaction", opponents, games=40, seed=3)
    assert sorted(table) == sorted(heuristics.HEURISTICS) and len(set(table.values())) == len(table)
    env = BucketBrigadeBatch({"scenario": "chain_reaction"})
    for name in heuristics.HEURISTICS:
        policy = ScriptedPolicy(env.observation_spaces["agent_0"], env.action_spaces["agent_0"],
                                {"act": env.scripted_policies[name], "seed": 99})
        seat = policy_seat(policy, env.scale_observations)
        assert seat_reward_per_night("chain_reaction", seat, opponents, games=40, seed=3) == table[name], name
    env.close()
    # the figure is total seat reward / nights played (first episode of each game), here with always-rest: by hand
    games = VecEnv("chain_reaction", 40, 4, seed=3, max_nights=100)
    obs, rng = games.reset(), np.random.default_rng(3)
    total, work, nights, finished = np.zeros(4), np.zeros(4), 0, np.zeros(40, dtype=bool)
    while not finished.all():
        actions = [heuristics.act(name, obs[:, agent], 10, 4, rng) for agent, name in enumerate(opponents, start=1)]
        own = np.stack([np.zeros(40, np.int64), np.zeros(40, np.int64), np.zeros(40, np.int64)], axis=1)
        actions = np.stack([own, *actions], axis=1)
        obs, rewards, terminated, truncated = games.step(actions)
        total += rewards[~finished].sum(axis=0)
        work += (actions[~finished, :, 1] == 1).sum(axis=0)
        nights += int((~finished).sum())
        finished |= terminated | truncated
    assert table["rest"] == pytest.approx(total[0] / nights, rel=1e-12)
    # the team version: every seat's reward per night and WORK share on the same games
    team = play("chain_reaction", [scripted_seat(name, "chain_reaction", 4) for name in ("rest", *opponents)],
                games=40, seed=3)
    np.testing.assert_allclose(team.reward_per_night, total / nights, rtol=1e-12)
    np.testing.assert_allclose(team.work_share, work / nights, rtol=1e-12)
    assert team.work_share[0] == 0 and team.work_share[2] > 0.95 and team.work_share[3] < 0.05  # rest, hero, free rider
