"""A stand-in "Unity player build": a small 2-team dodgeball game speaking the real ML-Agents gRPC protocol.

`UnityEnvironment` launches it like a real build (`StandInDodgeball.x86_64 --mlagents-port P [-nographics
-batchmode] [-logFile F]`); the game connects back to Python's gRPC server and plays the protocol of
com.unity.ml-agents 3.0.0 (communication API 1.5.0): the initialization exchange, then one Exchange per step carrying
every agent's observations, rewards, done flags, action masks and group rewards, and receiving actions, RESET, STEP
or QUIT, and side-channel messages (environment parameters).

The game: two teams (behaviors `Dodgeball?team=0` and `Dodgeball?team=1`) of `agents_per_team` agents on a square
arena. Each step an agent moves (2 continuous actions in [-1, 1]) and may throw (a discrete branch of 2; masked while
its throw recharges). A throw hits the nearest opponent with probability hit_probability * (1 - distance / 2.83);
a hit agent is out (done, reward -0.1; the thrower gets +0.1) and comes back next episode. A team that loses all its
agents loses: group reward -1 for it, +1 for the winners, to the agents still in. After `episode_length` steps the
episode is interrupted (max_step_reached). Observations: a vector (own position, throw recharge, then for every other
agent its relative position and whether it is in) and a 1xNxN depth image of the opponents around the agent.

Environment parameters it reads (floats, sent by `EnvironmentParametersChannel` before a reset): agents_per_team (2),
episode_length (100), hit_probability (0.6), and two that shape the behaviors, fixed at the first reset (as a Unity
scene's sensors and actuators are once its agents have registered): depth_size (16: the depth image is
depth_size x depth_size) and goalie (0; 1: team 1 is a behavior of its own, `Goalie?team=1`, without the depth camera
and with discrete actions only: a move branch of 5 (stay, +x, -x, +y, -y) and the throw branch). Fault injection for tests, from the environment variable
STANDIN_FAULT: `crash_at_start`, `crash_at_step:<n>`, `hang_at_step:<n>`, `version_mismatch`.
Without -nographics it needs a display (DISPLAY), as a Unity player does.
"""

from __future__ import annotations

import os
import struct
import sys
import time
import uuid
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root: envs.unity.pb_compat
from envs.unity import pb_compat  # noqa: E402

pb_compat.install()
from mlagents_envs.communicator_objects.agent_info_pb2 import AgentInfoProto  # noqa: E402
from mlagents_envs.communicator_objects.brain_parameters_pb2 import ActionSpecProto, BrainParametersProto  # noqa: E402
from mlagents_envs.communicator_objects.capabilities_pb2 import UnityRLCapabilitiesProto  # noqa: E402
from mlagents_envs.communicator_objects.command_pb2 import QUIT, RESET, STEP  # noqa: E402
from mlagents_envs.communicator_objects.header_pb2 import HeaderProto  # noqa: E402
from mlagents_envs.communicator_objects.observation_pb2 import ObservationProto  # noqa: E402
from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto  # noqa: E402
from mlagents_envs.communicator_objects.unity_output_pb2 import UnityOutputProto  # noqa: E402
from mlagents_envs.communicator_objects.unity_rl_initialization_output_pb2 import (  # noqa: E402
    UnityRLInitializationOutputProto,
)
from mlagents_envs.communicator_objects.unity_to_external_pb2_grpc import UnityToExternalProtoStub  # noqa: E402

ENVIRONMENT_PARAMETERS = uuid.UUID("534c891e-810f-11ea-a9d0-822485860400")
SPEED, RECHARGE, DIAGONAL = 0.1, 3, 2.83
GOALIE_MOVES = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], dtype=float)  # the goalie's move branch


def parse_args(argv: list[str]) -> dict:
    options = {"no_graphics": "-nographics" in argv, "port": None, "log_file": None}
    for flag, key in (("--mlagents-port", "port"), ("-logFile", "log_file")):
        if flag in argv:
            options[key] = argv[argv.index(flag) + 1]
    return options


def environment_parameters(side_channel: bytes) -> dict[str, float]:
    """Float parameters from the side-channel bytes: [16-byte uuid][int32 length][payload] repeated."""
    found, offset = {}, 0
    while offset < len(side_channel):
        channel = uuid.UUID(bytes_le=bytes(side_channel[offset:offset + 16]))
        (length,) = struct.unpack_from("<i", side_channel, offset + 16)
        payload = side_channel[offset + 20:offset + 20 + length]
        offset += 20 + length
        if channel == ENVIRONMENT_PARAMETERS:
            (key_length,) = struct.unpack_from("<i", payload, 0)
            key = payload[4:4 + key_length].decode("ascii")
            kind, value = struct.unpack_from("<if", payload, 4 + key_length)
            if kind == 0:  # FLOAT
                found[key] = value
    return found


class Dodgeball:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.settings = {"agents_per_team": 2.0, "episode_length": 100.0, "hit_probability": 0.6, "depth_size": 16.0,
                         "goalie": 0.0}
        self.sent_specs: set[str] = set()
        self.reset()

    def reset(self) -> None:
        if not self.sent_specs:  # sensors and actuators are fixed once the behavior specs are sent, as in Unity
            self.depth = max(1, int(self.settings["depth_size"]))
            self.goalie = bool(self.settings["goalie"])
            self.behaviors = ("Dodgeball?team=0", "Goalie?team=1" if self.goalie else "Dodgeball?team=1")
        self.per_team = max(1, int(self.settings["agents_per_team"]))
        count = 2 * self.per_team
        self.team = np.repeat([0, 1], self.per_team)
        self.ids = np.arange(count) + 1  # stable across episodes, like an agent's m_EpisodeId
        self.position = self.rng.uniform(-1, 1, (count, 2))
        self.recharge = np.zeros(count, dtype=int)
        self.alive = np.ones(count, dtype=bool)
        self.rewards = np.zeros(count)  # of the last step, reported with the next infos
        self.steps = 0

    def vector_observation(self, agent: int) -> list[float]:
        values = [*self.position[agent], self.recharge[agent] / RECHARGE]
        others = [i for i in range(len(self.ids)) if i != agent]
        others.sort(key=lambda i: self.team[i] != self.team[agent])  # teammates first, then opponents
        for other in others:
            values += [*(self.position[other] - self.position[agent]), float(self.alive[other])]
        return values

    def is_goalie(self, agent: int) -> bool:
        return self.goalie and self.team[agent] == 1

    def depth_image(self, agent: int) -> np.ndarray:
        """(1, N, N): per direction column, the nearest opponent's closeness fills the column from the bottom."""
        size = self.depth
        image = np.zeros((1, size, size), dtype=np.float32)
        for other in np.flatnonzero(self.alive & (self.team != self.team[agent])):
            offset = self.position[other] - self.position[agent]
            column = int((np.arctan2(offset[1], offset[0]) + np.pi) / (2 * np.pi) * size) % size
            closeness = 1 - np.linalg.norm(offset) / DIAGONAL
            rows = int(round(closeness * size))
            image[0, size - rows:, column] = np.maximum(image[0, size - rows:, column], closeness)
        return image

    def action_spec(self, team: int) -> ActionSpecProto:
        if self.goalie and team == 1:
            return ActionSpecProto(num_continuous_actions=0, num_discrete_actions=2, discrete_branch_sizes=[5, 2])
        return ActionSpecProto(num_continuous_actions=2, num_discrete_actions=1, discrete_branch_sizes=[2])

    def info(self, agent: int, reward: float = 0.0, done: bool = False, interrupted: bool = False,
             group_reward: float = 0.0) -> AgentInfoProto:
        vector = self.vector_observation(agent)
        observations = [ObservationProto(shape=[len(vector)], float_data=ObservationProto.FloatData(data=vector),
                                         name="VectorSensor")]
        if not self.is_goalie(agent):
            depth = self.depth_image(agent)
            observations.append(ObservationProto(shape=list(depth.shape), name="DepthCamera",
                                                 float_data=ObservationProto.FloatData(data=depth.ravel())))
        moves = [False] * len(GOALIE_MOVES) if self.is_goalie(agent) else []
        return AgentInfoProto(
            id=int(self.ids[agent]), reward=reward, done=done, max_step_reached=interrupted,
            group_id=int(self.team[agent]) + 1, group_reward=group_reward,
            action_mask=moves + [False, self.recharge[agent] > 0],  # True = unavailable: no throw while recharging
            observations=observations,
        )

    def step(self, actions: dict[int, tuple[np.ndarray, np.ndarray]]) -> dict[int, AgentInfoProto]:
        """Applies actions (agent index -> (continuous, discrete)); returns the final infos of agents that ended."""
        rewards = np.zeros(len(self.ids))
        for agent, (move, discrete) in actions.items():
            if self.is_goalie(agent):
                move = GOALIE_MOVES[discrete[0]]
            self.position[agent] = np.clip(self.position[agent] + SPEED * np.clip(move, -1, 1), -1, 1)
            self.recharge[agent] = max(0, self.recharge[agent] - 1)
        out = []
        for agent, (_, discrete) in actions.items():
            if discrete[-1] != 1 or self.recharge[agent] > 0 or not self.alive[agent]:
                continue
            self.recharge[agent] = RECHARGE
            targets = np.flatnonzero(self.alive & (self.team != self.team[agent]))
            if not len(targets):
                continue
            distances = np.linalg.norm(self.position[targets] - self.position[agent], axis=1)
            target = targets[np.argmin(distances)]
            if self.rng.random() < self.settings["hit_probability"] * max(0.0, 1 - distances.min() / DIAGONAL):
                self.alive[target] = False
                rewards[agent] += 0.1
                rewards[target] -= 0.1
                out.append(target)
        self.steps += 1
        ended = {agent: self.info(agent, rewards[agent], done=True) for agent in out}
        teams_in = {int(t) for t in self.team[self.alive]}
        if len(teams_in) < 2 or self.steps >= self.settings["episode_length"]:
            interrupted = len(teams_in) == 2
            for agent in np.flatnonzero(self.alive):
                group = 0.0 if interrupted else (1.0 if self.team[agent] in teams_in else -1.0)
                ended[agent] = self.info(agent, rewards[agent], done=True, interrupted=interrupted, group_reward=group)
            self.alive[:] = False
        self.rewards = rewards
        return ended

    def output(self, ended: dict[int, AgentInfoProto]) -> UnityOutputProto:
        """Every behavior's infos: agents that ended, then (auto-reset) every agent still or newly in play."""
        ended_by_team = {team: [info for agent, info in ended.items() if self.team[agent] == team] for team in (0, 1)}
        if not self.alive.any():
            self.reset()
        output = UnityOutputProto()
        for team, behavior in enumerate(self.behaviors):
            infos = output.rl_output.agentInfos[behavior].value
            infos.extend(ended_by_team[team])
            infos.extend(self.info(agent, float(self.rewards[agent]))
                         for agent in np.flatnonzero(self.alive & (self.team == team)))
            if behavior not in self.sent_specs:  # once per behavior, with its first infos
                output.rl_initialization_output.brain_parameters.append(BrainParametersProto(
                    brain_name=behavior, is_training=True, action_spec=self.action_spec(team)))
                self.sent_specs.add(behavior)
        return output

    def deciding(self, team: int) -> list[int]:
        """Agent indices of a behavior that get actions this step, in the order their infos were sent."""
        return [int(agent) for agent in np.flatnonzero(self.alive & (self.team == team))]


def fault(kind: str) -> int | None:
    spec = os.environ.get("STANDIN_FAULT", "")
    name, _, value = spec.partition(":")
    if name == kind:
        return int(value) if value else 0
    return None


def error(log, message: str) -> int:
    """Like a player build: the error goes to the log and to stderr; exit code 1."""
    log.write(message + "\n")
    sys.stderr.write(f"StandInDodgeball: {message}\n")
    return 1


def main(argv: list[str]) -> int:
    options = parse_args(argv)
    if options["log_file"]:
        Path(options["log_file"]).parent.mkdir(parents=True, exist_ok=True)
    # like a player build: the log goes to -logFile; without one, only errors reach stderr
    log = open(options["log_file"] if options["log_file"] else os.devnull, "a", buffering=1)
    log.write(f"StandInDodgeball starting: port {options['port']}, no_graphics {options['no_graphics']}, "
              f"DISPLAY {os.environ.get('DISPLAY')}\n")
    if options["port"] is None:
        return error(log, "no --mlagents-port: nothing to connect to")
    if not options["no_graphics"] and not os.environ.get("DISPLAY"):
        return error(log, "Desktop is 0 x 0 @ 0 Hz: no display (set DISPLAY, start Xvfb, or run with -nographics)")
    if fault("crash_at_start") is not None:
        return error(log, "crashing at start (STANDIN_FAULT)") + 2
    stub = UnityToExternalProtoStub(grpc.insecure_channel(f"localhost:{options['port']}"))
    try:
        return play(stub, log)
    except grpc.RpcError as closed:  # Python closed its server (the env was closed): a player build just quits
        log.write(f"connection closed by Python: {closed.code().name}\n")
        return 0


def play(stub: UnityToExternalProtoStub, log) -> int:
    """The protocol from the handshake on, until Python quits or closes the environment; the exit code."""
    version = "2.0.0" if fault("version_mismatch") is not None else "1.5.0"
    capabilities = UnityRLCapabilitiesProto(
        baseRLCapabilities=True, concatenatedPngObservations=True, compressedChannelMapping=True, hybridActions=True,
        trainingAnalytics=True, variableLengthObservation=True, multiAgentGroups=True)
    reply = stub.Exchange(UnityMessageProto(
        header=HeaderProto(status=200),
        unity_output=UnityOutputProto(rl_initialization_output=UnityRLInitializationOutputProto(
            name="StandInDodgeball", communication_version=version, package_version="3.0.0",
            capabilities=capabilities))),
        wait_for_ready=True)
    if reply.header.status != 200:
        return 0
    game = Dodgeball(seed=reply.unity_input.rl_initialization_input.seed)
    reply = stub.Exchange(UnityMessageProto(header=HeaderProto(status=200)))
    crash_at, hang_at = fault("crash_at_step"), fault("hang_at_step")
    steps = 0
    while True:
        if reply.header.status != 200:  # Python closed the environment
            log.write("closed by Python\n")
            return 0
        rl_input = reply.unity_input.rl_input
        game.settings.update(environment_parameters(rl_input.side_channel))
        ended = {}
        if rl_input.command == QUIT:
            return 0
        if rl_input.command == RESET:
            game.reset()
        elif rl_input.command == STEP:
            steps += 1
            if crash_at is not None and steps >= crash_at:
                return error(log, f"crashing at step {steps} (STANDIN_FAULT)") + 2
            if hang_at is not None and steps >= hang_at:
                log.write(f"hanging at step {steps} (STANDIN_FAULT)\n")
                time.sleep(3600)
            actions = {}
            for team, behavior in enumerate(game.behaviors):
                received = rl_input.agent_actions[behavior].value if behavior in rl_input.agent_actions else []
                for agent, action in zip(game.deciding(team), received):
                    actions[agent] = (np.array(action.continuous_actions, dtype=float),
                                      np.array(action.discrete_actions, dtype=int))
            ended = game.step(actions)
            if steps % 100 == 0:
                log.write(f"step {steps}\n")
        reply = stub.Exchange(UnityMessageProto(header=HeaderProto(status=200), unity_output=game.output(ended)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
