"""Orchestration for YAML-described multi-agent RL experiments on Ray Tune + RLlib (envs/ knows the simulators;
this package knows RLlib and Tune).

Modules, one concern each:
    spec             experiment YAML: the declared keys (`ExperimentKeys`), loading and checking each experiment
    experiment_blocks  the curriculum, scheduler and wandb blocks of an experiment
    env_checks       an experiment's settings checked against one instance of its env (agents, spaces, models);
                     the agents and spaces found go to the plan
    rllib_settings   RLlib's settings in `config`: classic keys translated, values checked, RLlib's own validation
    algorithms       the RLlib algorithm of each `run:` name (DQN and SAC fixed for the old stack), refusals,
                     the action spaces each takes
    replay           DQN's and SAC's replay buffers (RLlib's, uniform and prioritized) with rows in numpy columns
    plan             what trials run with beyond the file: the sampler, the env's device, restarts of crashed games,
                     each trial's policies with their default models, the centralised critic's memory
    policies         the multi-agent policy layout declared in YAML, scripted policies
    mappo            the centralised critic (MAPPO)
    game_values      the batched sampler's hooks for policies that see the whole game (mappo, team implement them)
    team             a team of policies learning from whole game steps, hosted by its first policy
    mixers           VDN and QMIX for DQN (`multiagent.mixer`)
    masac            MASAC: SAC with centralised twin critics (`multiagent.critic: centralized`)
    models           the custom-model registry (`model/<name>.py` -> `CustomModel`)
    default_models   each policy's default model, from its own observation space
    layers           network parts the shipped models share
    batched_runner   the env runner that samples batched envs (envs/batched.py) as whole arrays for PPO, DQN and SAC
                     (RLlib's stock sampler gets them through envs/rllib_adapters.py)
    batch_columns    the batched runner's training columns: GAE, n-step transitions, replay weights, sequences
    game_episodes    the batched runner's episode bookkeeping (ids, lengths, returns, metrics of finished episodes)
    stock_runner     RLlib's stock sampler, closing its envs when it cannot be built
    preflight        the checks before anything trains: resources the cluster can give, --restore and --resume
                     targets, writable output folders
    launch           Ray start-up and the Tune run of train.py and the suite
    local_mode       --local-mode: trials one after another in the driver process
    checkpoints      finding, checking and saving checkpoints; resume from the newest readable one
    callbacks        RLlib callbacks of every run (env steps/s, placement, machine, --restore, videos, curricula)
    result_logs      result rows (re-written on resume) and the logger callbacks (W&B)
    rollout          evaluation episodes, rollout files and summaries (rollout.py, the suite's evaluation)
    video            mp4 writing and the virtual display
    benchmark        the architecture benchmark suite (benchmark.py); benchmark_results: its results file, table
                     and speed comparison; benchmarl_reference: BenchMARL beside it; plots: its figures
    cli              what the CLIs share: errors printed as one line, mapping-valued flags
    errors           a run that could not go on (RunFailure) and a trial's exception line; bad input raises
                     envs.errors.ConfigError
    files            atomic writes
"""
