"""Scripted demonstrations of the ``so101_sim`` tasks, recorded as a LeRobotDataset v3.

The experts are ``lerobot-env-so101``'s own (reach-and-close and ``PickPlaceController``), driven only by what a
policy sees in state mode (``observation.state``), so the same expert also runs as a baseline policy through
``lerobot-eval``. DART-style noise: the executed action is the expert's plus Gaussian noise on the position part
(except while the expert holds still to grasp or release), while the stored label stays the expert's, so the data
covers the states an imperfect policy visits and says how to get back.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lerobot_fastplus.envs.so101_sim import ROBOT_STATE_DIM, SO101SimEnv

SIM_META_FILE = "so101_sim.json"  # written under the dataset's meta/: how and from which seeds it was recorded
# The simulator's robot state: the 5 arm joints (the gripper appears only as its command, in [-1, 1], -1 closed).
JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")
ROBOT_STATE_NAMES = (
    *(f"{j}.pos" for j in JOINTS),
    *(f"{j}.vel" for j in JOINTS),
    "gripper.command",
    "ee.x",
    "ee.y",
    "ee.z",
)
PRIVILEGED_NAMES = {
    "reach_close": ("cube.x", "cube.y", "cube.z", "cube_to_grasp.x", "cube_to_grasp.y", "cube_to_grasp.z"),
    "pick_place": (
        "cube.x",
        "cube.y",
        "cube.z",
        "goal.x",
        "goal.y",
        "goal.z",
        "cube_to_grasp.x",
        "cube_to_grasp.y",
        "cube_to_grasp.z",
        "goal_to_cube.x",
        "goal_to_cube.y",
        "goal_to_cube.z",
    ),
}
ACTION_NAMES = ("dx", "dy", "dz", "gripper")


class SO101Expert:
    """The package's scripted expert for one task, acting from ``so101_sim``'s state-mode ``observation.state``."""

    def __init__(self, task: str, action_scale: float) -> None:
        from lerobot_env_so101.scripted.pick_place import PickPlaceController

        self.task, self.action_scale = task, action_scale
        self._controller = PickPlaceController(action_scale=action_scale) if task == "pick_place" else None

    def reset(self) -> None:
        if self._controller is not None:
            self._controller.reset()

    def act(self, state: np.ndarray) -> np.ndarray:
        state = np.asarray(state, dtype=np.float64)
        cube = state[ROBOT_STATE_DIM : ROBOT_STATE_DIM + 3]
        if self._controller is None:
            from lerobot_env_so101.scripted.reach_close import scripted_reach_close

            return scripted_reach_close(np.concatenate([state[:ROBOT_STATE_DIM], cube]), self.action_scale)
        goal = state[ROBOT_STATE_DIM + 3 : ROBOT_STATE_DIM + 6]
        grasp = cube - state[ROBOT_STATE_DIM + 6 : ROBOT_STATE_DIM + 9]
        return self._controller.act(grasp, cube, goal)


@dataclass
class RecordingSummary:
    root: Path
    episodes: int
    frames: int
    expert_successes: int  # episodes the noisy expert finished with is_success


def dataset_features(env_cfg: SO101SimEnv) -> dict[str, dict]:
    """LeRobotDataset features of a recording: exactly what ``so101_sim`` gives a policy in the same mode."""
    action = {"dtype": "float32", "shape": (len(ACTION_NAMES),), "names": list(ACTION_NAMES)}
    if env_cfg.obs_mode == "camera":
        side = env_cfg.image_size
        return {
            "observation.state": {"dtype": "float32", "shape": (ROBOT_STATE_DIM,), "names": list(ROBOT_STATE_NAMES)},
            "observation.images.front": {
                "dtype": "image",
                "shape": (side, side, 3),
                "names": ["height", "width", "channels"],
            },
            "action": action,
        }
    privileged = list(PRIVILEGED_NAMES[env_cfg.task])
    return {
        "observation.state": {
            "dtype": "float32",
            "shape": (ROBOT_STATE_DIM + len(privileged),),
            "names": [*ROBOT_STATE_NAMES, *privileged],
        },
        "observation.environment_state": {"dtype": "float32", "shape": (len(privileged),), "names": privileged},
        "action": action,
    }


def record_demonstrations(
    env_cfg: SO101SimEnv,
    root: Path,
    repo_id: str,
    n_episodes: int,
    seed: int = 0,
    noise: float = 0.2,
    overwrite: bool = False,
    progress: bool = True,
) -> RecordingSummary:
    """Record ``n_episodes`` noisy-expert episodes (seeds ``seed .. seed + n_episodes - 1``) under ``root``.

    Episodes run ``env_cfg.episode_length`` steps, or end at the simulator's own termination (pick-and-place
    success, the cube pushed out of the workspace). The expert always acts from the privileged state; what is stored
    is what a policy sees in ``env_cfg.obs_mode``.
    """
    from lerobot.datasets import LeRobotDataset
    from lerobot.utils.utils import SuppressProgressBars

    root = Path(root)
    if root.exists():
        if not overwrite:
            raise ValueError(f"{root} already exists; choose another --output_dir or pass --overwrite=true")
        if not (root / "meta" / SIM_META_FILE).is_file():
            raise ValueError(f"{root} exists and is not an so101_sim recording; refusing to replace it")
        shutil.rmtree(root)
    env = env_cfg.make_one()
    expert = SO101Expert(env_cfg.task, env_cfg.action_scale)
    rng = np.random.default_rng(seed)
    dataset = LeRobotDataset.create(
        repo_id=repo_id, fps=env_cfg.fps, features=dataset_features(env_cfg), root=root, use_videos=False
    )
    frames = successes = 0
    seeds = list(range(seed, seed + n_episodes))
    bar = tqdm(seeds, desc=f"recording {env_cfg.task}", disable=not progress, unit="episode")
    with SuppressProgressBars():  # one bar for the recording, not one of the datasets library per saved episode
        for episode_seed in bar:
            obs, info = env.reset(seed=episode_seed)
            expert.reset()
            for _ in range(env_cfg.episode_length):
                privileged = env.privileged_state()
                state = np.concatenate([obs["agent_pos"][:ROBOT_STATE_DIM], privileged]).astype(np.float32)
                label = expert.act(state).astype(np.float32)
                frame = {"action": label, "task": info["task"]}
                if "pixels" in obs:  # camera mode: what the camera policy will see, nothing privileged
                    frame["observation.state"] = obs["agent_pos"]
                    frame["observation.images.front"] = obs["pixels"]["front"]
                else:
                    frame["observation.state"] = state
                    frame["observation.environment_state"] = privileged
                dataset.add_frame(frame)
                frames += 1
                executed = label.astype(np.float64).copy()
                if np.any(executed[:3]):  # a zero command holds the pose (the expert's grasp); noise would undo it
                    executed[:3] = np.clip(executed[:3] + rng.normal(0.0, noise, 3), -1.0, 1.0)
                obs, _, terminated, truncated, info = env.step(executed)
                if terminated or truncated:
                    break
            successes += bool(info["is_success"])
            dataset.save_episode()
    dataset.finalize()
    meta = {
        "env": {"type": "so101_sim", **_fields(env_cfg)},
        "episode_seeds": seeds,
        "dart_noise_std": noise,
        "expert_successes": successes,
    }
    (root / "meta" / SIM_META_FILE).write_text(json.dumps(meta, indent=2))
    return RecordingSummary(root, n_episodes, frames, successes)


def recorded_seeds(root: Path) -> list[int]:
    """Episode seeds a recording used (evaluate on others)."""
    return json.loads((Path(root) / "meta" / SIM_META_FILE).read_text())["episode_seeds"]


def _fields(env_cfg: SO101SimEnv) -> dict:
    keep = ("task", "obs_mode", "episode_length", "image_size", "video", "action_scale", "random_block_position")
    return {k: v for k, v in asdict(env_cfg).items() if k in keep}
