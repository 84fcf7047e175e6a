"""A user callback for the local-mode test: records which process ran the env's episodes."""

import os

from ray.rllib.callbacks.callbacks import RLlibCallback


class RecordEpisodePid(RLlibCallback):
    def on_episode_start(self, **kwargs) -> None:
        with open(os.environ["EPISODE_PID_FILE"], "a") as file:
            file.write(f"{os.getpid()}\n")
