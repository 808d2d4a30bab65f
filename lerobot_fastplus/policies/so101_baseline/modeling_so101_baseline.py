"""The so101_sim baseline policies: one action per step, no learning."""

from __future__ import annotations

import numpy as np
import torch
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.utils.constants import OBS_STATE

from lerobot_fastplus.envs.so101_recording import SO101Expert
from lerobot_fastplus.envs.so101_sim import ROBOT_STATE_DIM
from lerobot_fastplus.policies.so101_baseline.configuration_so101_baseline import SO101BaselineConfig

GRIPPER_COMMAND = ROBOT_STATE_DIM - 4  # index of the gripper command ([-1, 1], -1 closed) in the robot state


class SO101BaselinePolicy(PreTrainedPolicy):
    config_class = SO101BaselineConfig
    name = "so101_baseline"

    def __init__(self, config: SO101BaselineConfig, **kwargs) -> None:
        super().__init__(config)
        self._anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # gives the module a device
        self._rng = np.random.default_rng(config.seed)
        self._experts: list[SO101Expert] = []

    def reset(self) -> None:
        self._experts = []

    def get_optim_params(self) -> dict:
        return self.parameters()

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError("baselines are not trained")

    def predict_action_chunk(self, batch: dict, **kwargs) -> torch.Tensor:
        return self.select_action(batch)[:, None]

    @torch.no_grad()
    def select_action(self, batch: dict, **kwargs) -> torch.Tensor:
        state = batch[OBS_STATE].detach().cpu().numpy().astype(np.float64)
        n = len(state)
        kind = self.config.kind
        if kind == "expert":
            while len(self._experts) < n:
                self._experts.append(SO101Expert(self.config.task, self.config.action_scale))
            actions = np.stack([expert.act(row) for expert, row in zip(self._experts, state, strict=False)])
        elif kind == "hold":
            actions = np.zeros((n, 4))
            actions[:, 3] = (state[:, GRIPPER_COMMAND] + 1) / 2
        elif kind == "random":
            actions = self._rng.uniform([-1, -1, -1, 0], [1, 1, 1, 1], size=(n, 4))
        else:
            actions = np.tile(np.asarray(self.config.mean_action, dtype=np.float64), (n, 1))
        return torch.as_tensor(actions, dtype=torch.float32, device=batch[OBS_STATE].device)
