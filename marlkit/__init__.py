"""Orchestration for YAML-described multi-agent RL experiments on Ray Tune + RLlib.

Modules, one concern each:
    errors    the one-line user-facing error type
    cli       what the CLIs share: errors printed as one line, mapping-valued flags
    spec      loading and validating experiment YAML, translating renamed RLlib keys
    models    the custom-model registry (`model/<name>.py` -> `CustomModel`)
    policies  the multi-agent policy layout declared in YAML
    launch    Ray start-up and the Tune run (or the in-process local mode)
    callbacks RLlib callbacks shared by every run (env steps/s, --restore, evaluation videos)
    checkpoints  finding, validating and restoring training checkpoints
    rollout   evaluation episodes, rollout files and summaries (rollout.py, evaluation videos)
    video     mp4 writing and the virtual display
"""
