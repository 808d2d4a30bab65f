"""``--env.type=so101_sim``: the SO-101 MuJoCo simulator of ``lerobot-env-so101``, wired so that
``lerobot-eval`` reports honest success rates.

The third-party package's own ``--env.type=so101`` reports no ``is_success`` (LeRobot 0.6.1 then counts every
finished episode as a success), passes no task text, keeps the cube in ``observation.environment_state`` (which
the pi0 family never reads), cannot create its pick-and-place task, and defaults to an action scale its scripted
experts do not use. This env type wraps the same simulator and fixes each of those:

* ``is_success`` every step, from the task's real test: reach-and-close uses the package's
  ``is_reach_close_success`` (gripper commanded closed within 5 cm of the cube), judged at the end of the episode;
  pick-and-place uses the simulator's ``succeed`` (cube carried, resting at the goal, jaw open), which ends it;
* a task text per episode (pick-and-place names where the cube goes);
* ``obs_mode="state"``: ``observation.state`` is the robot state (14: joint positions and velocities, gripper
  command, end-effector position) followed by the privileged task state (the cube position, the goal position for
  pick-and-place, and the offsets cube - grasp point and goal - cube), which a policy reading only
  ``observation.state`` needs; the privileged part is also given as ``observation.environment_state`` for policies
  that require one (core ACT);
* ``obs_mode="camera"``: the front camera (``observation.images.front``, size configurable, shadows off) plus the
  14-D robot state, nothing privileged;
* random cube (and goal) positions and the scripted experts' ``action_scale`` (0.025 m per unit) by default.

Videos: ``lerobot-eval`` renders the first 10 episodes. ``video="schematic"`` (the default in state mode) draws a
top view with numpy, so evaluation needs no OpenGL; ``video="camera"`` renders MuJoCo's front camera (needs EGL).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from lerobot.configs import FeatureType, PolicyFeature
from lerobot.envs.configs import EnvConfig
from lerobot.utils.constants import ACTION, OBS_ENV_STATE, OBS_IMAGES, OBS_STATE

# MuJoCo picks its OpenGL backend when it is first imported; headless machines need EGL (osmesa is rarely there).
os.environ.setdefault("MUJOCO_GL", "egl")

logger = logging.getLogger(__name__)

ENV_TYPE = "so101_sim"
TASKS = ("reach_close", "pick_place")
OBS_MODES = ("state", "camera")
VIDEOS = ("schematic", "camera")
ROBOT_STATE_DIM = 14  # 6 joint positions, 6 joint velocities, gripper command, end-effector x y z
ACTION_DIM = 4  # dx, dy, dz (x action_scale metres), gripper target in [0, 1] (0 = closed)
EXPERT_ACTION_SCALE = 0.025
DEFAULT_EPISODE_LENGTH = {"reach_close": 30, "pick_place": 80}
PRIVILEGED_DIM = {"reach_close": 6, "pick_place": 12}
REACH_CLOSE_TEXT = "reach the cube and close the gripper on it"
VIDEO_HINT = (
    "so101_sim: MuJoCo could not open an OpenGL (EGL) context, so camera frames are unavailable; "
    "install an EGL library (Debian/Ubuntu: apt-get install libegl1) or keep --env.video=schematic"
)


def pick_place_text(goal_xy: np.ndarray) -> str:
    return f"pick up the cube and place it at x={goal_xy[0]:.2f} m, y={goal_xy[1]:+.2f} m"


class SO101SimTask(gym.Wrapper):
    """One SO-101 task with honest ``is_success``, a task text and the observation of ``obs_mode``."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task: str,
        obs_mode: str,
        video: str,
        image_size: int,
        random_block_position: bool,
        action_scale: float,
        episode_length: int,
    ) -> None:
        from lerobot_env_so101 import GymRenderingSpec, SO101PickCubeGymEnv, SO101PickPlaceGymEnv

        make = SO101PickPlaceGymEnv if task == "pick_place" else SO101PickCubeGymEnv
        sim = make(
            render_spec=GymRenderingSpec(height=image_size, width=image_size, camera_id="front"),
            image_obs=obs_mode == "camera",
            random_block_position=random_block_position,
            action_scale=action_scale,
        )
        sim.model.light_castshadow[:] = 0  # shadows cost ~4x the render time and carry no information here
        super().__init__(sim)
        self.task, self.obs_mode, self.video = task, obs_mode, video
        self._max_episode_steps = episode_length
        self.metadata = {**self.metadata, "render_fps": round(1 / sim.control_dt)}
        self.task_description = REACH_CLOSE_TEXT
        self._frame: np.ndarray | None = None
        self._steps = 0
        robot = gym.spaces.Box(-np.inf, np.inf, (ROBOT_STATE_DIM,), dtype=np.float32)
        if obs_mode == "camera":
            camera = gym.spaces.Box(0, 255, (image_size, image_size, 3), dtype=np.uint8)
            self.observation_space = gym.spaces.Dict({"pixels": gym.spaces.Dict({"front": camera}), "agent_pos": robot})
        else:
            extra = PRIVILEGED_DIM[task]
            self.observation_space = gym.spaces.Dict(
                {
                    "agent_pos": gym.spaces.Box(-np.inf, np.inf, (ROBOT_STATE_DIM + extra,), dtype=np.float32),
                    "environment_state": gym.spaces.Box(-np.inf, np.inf, (extra,), dtype=np.float32),
                }
            )
        self.action_space = gym.spaces.Box(
            np.array([-1, -1, -1, 0], np.float32), np.array([1, 1, 1, 1], np.float32), dtype=np.float32
        )

    # --- what the simulator knows ------------------------------------------------------------------------------

    @property
    def block_pos(self) -> np.ndarray:
        return self.env.unwrapped.data.sensor("block_pos").data.astype(np.float64).copy()

    @property
    def grasp_pos(self) -> np.ndarray:
        """The point the position action moves (the grasp point between the jaws for pick-and-place)."""
        return np.asarray(self.env.unwrapped.ik_point_pos, dtype=np.float64)

    @property
    def goal_pos(self) -> np.ndarray | None:
        return self.env.unwrapped.goal_pos if self.task == "pick_place" else None

    def privileged_state(self) -> np.ndarray:
        block, grasp = self.block_pos, self.grasp_pos
        if self.task == "pick_place":
            goal = self.goal_pos
            return np.concatenate([block, goal, block - grasp, goal - block]).astype(np.float32)
        return np.concatenate([block, block - grasp]).astype(np.float32)

    def _success(self, raw_obs: dict, info: dict) -> bool:
        if self.task == "pick_place":
            return bool(info.get("succeed", False))
        from lerobot_env_so101.scripted.reach_close import is_reach_close_success

        return is_reach_close_success(np.concatenate([raw_obs["agent_pos"], self.block_pos]))

    def _observation(self, raw_obs: dict) -> dict:
        robot = np.asarray(raw_obs["agent_pos"], dtype=np.float32)
        if self.obs_mode == "camera":
            self._frame = raw_obs["pixels"]["front"]
            return {"pixels": {"front": self._frame}, "agent_pos": robot}
        privileged = self.privileged_state()
        return {"agent_pos": np.concatenate([robot, privileged]), "environment_state": privileged}

    # --- gym API -----------------------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        raw_obs, _ = self.env.reset(seed=seed)
        self._steps = 0
        if self.task == "pick_place":
            self.task_description = pick_place_text(self.goal_pos[:2])
        return self._observation(raw_obs), {"is_success": False, "task": self.task_description}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"so101_sim takes one {ACTION_DIM}-D action [dx, dy, dz, gripper], got {action.shape}")
        raw_obs, _, terminated, _, info = self.env.step(action)
        self._steps += 1
        success = self._success(raw_obs, info)
        truncated = self._steps >= self._max_episode_steps
        info = {"is_success": success, "task": self.task_description}
        return self._observation(raw_obs), float(success), bool(terminated), truncated, info

    def render(self) -> np.ndarray:
        if self.video == "schematic":
            return self.schematic()
        if self._frame is not None and self.obs_mode == "camera":
            return self._frame
        return self.env.unwrapped.render()

    def schematic(self, size: int = 160) -> np.ndarray:
        """Top view of the workspace (x forward, y left): cube red, goal green, grasp point blue (dark = closed)."""
        frame = np.full((size, size, 3), 235, dtype=np.uint8)
        rows, cols = np.mgrid[:size, :size]

        def pixel(xy: np.ndarray) -> tuple[int, int]:  # x in [0.05, 0.45] m -> rows, y in [-0.2, 0.2] m -> cols
            return int((0.45 - xy[0]) / 0.4 * size), int((0.2 - xy[1]) / 0.4 * size)

        def disc(xy: np.ndarray, radius: int, colour: tuple[int, int, int]) -> None:
            r, c = pixel(xy)
            frame[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = colour

        if self.goal_pos is not None:
            disc(self.goal_pos, 6, (90, 200, 90))
        disc(self.block_pos, 4, (210, 50, 50))
        closed = self.env.unwrapped.get_gripper_pose()[0] < 0
        disc(self.grasp_pos, 3, (20, 20, 120) if closed else (80, 120, 240))
        return frame


@EnvConfig.register_subclass(ENV_TYPE)
@dataclass
class SO101SimEnv(EnvConfig):
    """The SO-101 arm in MuJoCo (``lerobot-env-so101``) with honest success; see the module docstring."""

    # Which task: "reach_close" (reach the cube and close the gripper on it, judged at the end of the episode) or
    # "pick_place" (carry the cube to a goal on the table and let go; the episode ends at success).
    task: str | None = "reach_close"
    # "state": robot state + cube (and goal) position + offsets in observation.state; "camera": front camera
    # (observation.images.front) + the 14-D robot state.
    obs_mode: str = "state"
    # Control steps per episode; None: 30 for reach_close, 80 for pick_place (the experts need 7-11 and ~47).
    episode_length: int | None = None
    # Camera frames are image_size x image_size pixels (camera mode and camera videos).
    image_size: int = 96
    # Videos lerobot-eval writes: "schematic" (a numpy top view, no OpenGL needed) or "camera" (MuJoCo, needs EGL).
    video: str = "schematic"
    # Metres per unit of position action; 0.025 is what the scripted experts and recorded datasets use.
    action_scale: float = EXPERT_ACTION_SCALE
    # Draw the cube (and goal) position anew at every reset, from the episode's seed.
    random_block_position: bool = True
    fps: int = 10  # the simulator's control period is 0.1 s
    features: dict[str, PolicyFeature] = field(default_factory=dict)
    features_map: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"--env.task={self.task!r} is not an so101_sim task; use one of {', '.join(TASKS)}")
        if self.obs_mode not in OBS_MODES:
            raise ValueError(f"--env.obs_mode={self.obs_mode!r} is unknown; use one of {', '.join(OBS_MODES)}")
        if self.video not in VIDEOS:
            raise ValueError(f"--env.video={self.video!r} is unknown; use one of {', '.join(VIDEOS)}")
        if self.episode_length is None:
            self.episode_length = DEFAULT_EPISODE_LENGTH[self.task]
        if self.episode_length < 1 or self.image_size < 8 or self.action_scale <= 0:
            raise ValueError(
                "so101_sim needs --env.episode_length >= 1, --env.image_size >= 8 and --env.action_scale > 0"
            )
        self.features = {ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(ACTION_DIM,))}
        self.features_map = {ACTION: ACTION, "agent_pos": OBS_STATE}
        if self.obs_mode == "camera":
            side = self.image_size
            self.features["agent_pos"] = PolicyFeature(type=FeatureType.STATE, shape=(ROBOT_STATE_DIM,))
            self.features["pixels/front"] = PolicyFeature(type=FeatureType.VISUAL, shape=(side, side, 3))
            self.features_map["pixels/front"] = f"{OBS_IMAGES}.front"
        else:
            extra = PRIVILEGED_DIM[self.task]
            self.features["agent_pos"] = PolicyFeature(type=FeatureType.STATE, shape=(ROBOT_STATE_DIM + extra,))
            self.features["environment_state"] = PolicyFeature(type=FeatureType.ENV, shape=(extra,))
            self.features_map["environment_state"] = OBS_ENV_STATE

    @property
    def gym_kwargs(self) -> dict:
        return {
            "task": self.task,
            "obs_mode": self.obs_mode,
            "video": self.video,
            "image_size": self.image_size,
            "random_block_position": self.random_block_position,
            "action_scale": self.action_scale,
            "episode_length": self.episode_length,
        }

    def make_one(self) -> SO101SimTask:
        return SO101SimTask(**self.gym_kwargs)

    def create_envs(self, n_envs: int, use_async_envs: bool = False) -> dict[str, dict[int, gym.vector.VectorEnv]]:
        env_cls = gym.vector.AsyncVectorEnv if use_async_envs and n_envs > 1 else gym.vector.SyncVectorEnv
        make = partial(SO101SimTask, **self.gym_kwargs)
        vec = env_cls([make] * n_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        return {self.task: {0: vec}}
