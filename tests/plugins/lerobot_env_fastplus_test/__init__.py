"""A LIBERO-shaped test environment for ``lerobot-eval``, loaded as the LeRobot env plugin
``lerobot_env_fastplus_test`` (``tests/test_eval_cli.py`` installs a fake distribution of that name).

It registers ``--env.type=fastplus_libero_test``: LeRobot's own ``libero`` env config, inherited unchanged
(cameras, state and action features, features map, and the ``LiberoProcessorStep`` env processor), with the
simulator swapped for a small kinematic stand-in that answers in LIBERO's gym format: ``pixels`` holds the
``image`` (agent view) and ``image2`` (wrist) cameras, ``robot_state`` the end-effector position, quaternion and
matrix, gripper and joint positions and velocities. ``lerobot-eval`` therefore runs LIBERO's whole observation
path (``preprocess_observation``, then ``LiberoProcessorStep``: 180-degree image flip, quaternion to axis-angle,
8-D state) on CPU, without LIBERO or its assets.

Scoring: reward 1 for each finite 7-D action; ``success_after`` of them in a row end the episode with success.
A working policy therefore scores ``avg_sum_reward == success_after`` and ``pc_success == 100``; a non-finite
action earns nothing and rules out success, and a wrongly shaped one raises, as LIBERO's env does.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from lerobot.envs.configs import EnvConfig, LiberoEnv

ENV_TYPE = "fastplus_libero_test"
ACTION_DIM = 7


def _box(*shape: int) -> spaces.Box:
    return spaces.Box(low=-np.inf, high=np.inf, shape=shape, dtype=np.float64)


def _rotation_matrix(quat: np.ndarray) -> np.ndarray:
    """Rotation matrix of a unit quaternion in LIBERO's (x, y, z, w) order."""
    x, y, z, w = quat
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


class FakeLiberoGymEnv(gym.Env):
    """One LIBERO-like task: a point end effector moved by the action's first three (delta) dimensions."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self, suite: str, instruction: str, episode_length: int, success_after: int, height: int, width: int
    ) -> None:
        super().__init__()
        self.task = f"{suite}_task_0"
        self.task_description = instruction
        self._max_episode_steps = episode_length
        self.success_after = success_after
        self.height, self.width = height, width
        camera = spaces.Box(low=0, high=255, shape=(height, width, 3), dtype=np.uint8)
        self.observation_space = spaces.Dict(
            {
                "pixels": spaces.Dict({"image": camera, "image2": camera}),
                "robot_state": spaces.Dict(
                    {
                        "eef": spaces.Dict({"pos": _box(3), "quat": _box(4), "mat": _box(3, 3)}),
                        "gripper": spaces.Dict({"qpos": _box(2), "qvel": _box(2)}),
                        "joints": spaces.Dict({"pos": _box(7), "vel": _box(7)}),
                    }
                ),
            }
        )
        self.action_space = spaces.Box(low=-1.0, high=1.0, shape=(ACTION_DIM,), dtype=np.float32)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self._eef = self.np_random.uniform(-0.5, 0.5, size=3)
        quat = self.np_random.normal(size=4)
        self._quat = quat / np.linalg.norm(quat)
        self._joints = self.np_random.uniform(-1.0, 1.0, size=7)
        self._gripper = 0.04
        self._finite_steps = 0
        self._all_finite = True
        return self._observation(), {"is_success": False}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"expected one {ACTION_DIM}-D LIBERO action, got shape {action.shape}")
        finite = bool(np.isfinite(action).all())
        self._all_finite &= finite
        if finite:
            self._finite_steps += 1
            delta = np.clip(action, -1.0, 1.0)
            self._eef = np.clip(self._eef + 0.05 * delta[:3], -1.0, 1.0)
            self._joints = np.clip(self._joints + 0.05 * delta[np.arange(7) % 6], -1.0, 1.0)
            self._gripper = 0.04 if delta[6] < 0 else 0.0  # LIBERO: -1 opens, +1 closes
        success = self._all_finite and self._finite_steps >= self.success_after
        info = {"is_success": success, "task": self.task}
        return self._observation(), float(finite), success, False, info

    def render(self) -> np.ndarray:
        return self._cameras()["image"][::-1, ::-1]  # LIBERO renders its agent view flipped the same way

    def _cameras(self) -> dict[str, np.ndarray]:
        rows, cols = np.mgrid[: self.height, : self.width]
        x, y = ((self._eef[:2] + 1) / 2 * [self.width - 1, self.height - 1]).astype(int)
        agent = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        agent[..., 2] = (40 + 80 * rows / self.height).astype(np.uint8)
        agent[(abs(rows - y) <= 2) & (abs(cols - x) <= 2)] = (230, 120, int(1500 * self._gripper) + 40)
        wrist = np.full((self.height, self.width, 3), int(200 * (self._eef[2] + 1) / 2), dtype=np.uint8)
        wrist[: self.height // 2, :, 0] = int(5000 * self._gripper)
        return {"image": agent, "image2": wrist}

    def _observation(self) -> dict[str, Any]:
        grip = np.array([self._gripper, -self._gripper])
        return {
            "pixels": self._cameras(),
            "robot_state": {
                "eef": {"pos": self._eef.copy(), "quat": self._quat.copy(), "mat": _rotation_matrix(self._quat)},
                "gripper": {"qpos": grip, "qvel": np.zeros(2)},
                "joints": {"pos": self._joints.copy(), "vel": np.zeros(7)},
            },
        }


@EnvConfig.register_subclass(ENV_TYPE)
@dataclass
class FakeLiberoEnvConfig(LiberoEnv):
    """LeRobot's ``libero`` config with a stand-in simulator (one task per suite in ``task``)."""

    task: str = "libero_spatial"
    episode_length: int | None = 8
    observation_height: int = 32
    observation_width: int = 32
    success_after: int = 4
    instruction: str = "pick up the black bowl and place it on the plate"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.episode_length is None or not 0 < self.success_after <= self.episode_length:
            raise ValueError(
                f"success_after={self.success_after} must be in [1, episode_length={self.episode_length}]."
            )

    def create_envs(self, n_envs: int, use_async_envs: bool = False) -> dict[str, dict[int, gym.vector.VectorEnv]]:
        make = partial(
            FakeLiberoGymEnv,
            suite=self.task,
            instruction=self.instruction,
            episode_length=self.episode_length,
            success_after=self.success_after,
            height=self.observation_height,
            width=self.observation_width,
        )
        env_cls = gym.vector.AsyncVectorEnv if use_async_envs and n_envs > 1 else gym.vector.SyncVectorEnv
        vec = env_cls([make] * n_envs, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)  # as LIBERO's
        return {self.task: {0: vec}}
