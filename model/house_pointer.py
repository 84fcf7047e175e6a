"""Bucket Brigade policy that scores every house with one shared network ("pointer" logits over the ring).

`custom_model: house_pointer` (env: bucket_brigade, actions MultiDiscrete([houses, 2, 2]) = (house, mode, signal)).
`custom_model_config`:
    hiddens      sizes of the MLP over the whole observation (default [128, 128])
    house_hidden size of the per-house layer (default 32)
    activation   "tanh" (default), "relu" or "elu"

An MLP reads the whole observation row. Each house's logit comes from the same small network applied to that house's
own features (SAFE / BURNING / RUINED one-hot, owned by this agent, ring distance from this agent's house) joined with
the MLP's output, so what the learner learns about one burning house holds for every house: the choice of house
does not have to be learnt ten times over. Mode and signal logits and the value come from the MLP. The game's rules,
rewards and observations are untouched; the model only shares weights across houses. With `multiagent.critic:
centralized` (marlkit/mappo.py) its value network goes and the centralised critic uses its activation.

The observation row's layout (envs/bucket_brigade/scenarios.py `obs_layout`) is derived from the action space (the
number of houses) and the row's size, so the file stands alone (remote nodes get it by value).

Example (YAML):
    model:
      custom_model: house_pointer
      custom_model_config: {hiddens: [128, 128], house_hidden: 32}
"""

import torch
from torch import nn
from ray.rllib.models.torch.torch_modelv2 import TorchModelV2

from marlkit.layers import ACTIVATIONS, CentralCritic, mlp

NUM_SCENARIO_FEATURES = 12  # envs/bucket_brigade/scenarios.py
BURNING, RUINED = 1, 2


class CustomModel(TorchModelV2, nn.Module):
    def __init__(self, obs_space, action_space, num_outputs, model_config, name,
                 hiddens=(128, 128), house_hidden=32, activation="tanh"):
        TorchModelV2.__init__(self, obs_space, action_space, num_outputs, model_config, name)
        nn.Module.__init__(self)
        nvec = getattr(action_space, "nvec", None)
        if nvec is None or list(nvec[1:]) != [2, 2]:
            raise ValueError(f"model 'house_pointer' is for Bucket Brigade's MultiDiscrete([houses, 2, 2]) actions, "
                             f"got {action_space}")
        size = obs_space.shape[0]
        self.houses = int(nvec[0])
        self.agents = (size - self.houses - NUM_SCENARIO_FEATURES - 1) // 6
        self.identity = slice(size - 1 - self.agents, size - 1)
        self.trunk, out_size = mlp(size, hiddens, activation)
        self.house_net = nn.Sequential(nn.Linear(5 + out_size, house_hidden), ACTIVATIONS[activation](),
                                       nn.Linear(house_hidden, 1))
        self.mode_and_signal = nn.Linear(out_size, 4)
        self.value_net = nn.Sequential(mlp(size, hiddens, activation)[0], nn.Linear(out_size, 1))
        self._activation = activation
        positions = torch.arange(self.houses)
        self.register_buffer("positions", positions, persistent=False)
        self._obs = None

    def make_central_critic(self, input_size, num_values, hiddens):
        """The centralised critic (marlkit/mappo.py) replaces the per-agent value network."""
        self.value_net = None
        return CentralCritic(input_size, num_values, hiddens, self._activation)

    def house_features(self, obs: torch.Tensor) -> torch.Tensor:
        """(rows, houses, 5): state one-hot (SAFE, BURNING, RUINED), owned by this agent, ring distance / houses."""
        states = obs[:, :self.houses].round().long().clamp(0, RUINED)
        agent = obs[:, self.identity].argmax(dim=1, keepdim=True)
        own = (self.positions % self.agents == agent).float()
        home = agent % self.houses
        distance = (self.positions - home).abs()
        distance = torch.minimum(distance, self.houses - distance).float() / self.houses
        return torch.cat([nn.functional.one_hot(states, 3).float(), own.unsqueeze(-1), distance.unsqueeze(-1)], dim=-1)

    def forward(self, input_dict, state, seq_lens):
        obs = input_dict["obs_flat"].float()
        self._obs = obs
        features = self.trunk(obs)
        per_house = torch.cat([self.house_features(obs),
                               features.unsqueeze(1).expand(-1, self.houses, -1)], dim=-1)
        house_logits = self.house_net(per_house).squeeze(-1)
        return torch.cat([house_logits, self.mode_and_signal(features)], dim=1), state

    def value_function(self):
        return self.value_net(self._obs).squeeze(1)
