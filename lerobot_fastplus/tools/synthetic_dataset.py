"""A small, real LeRobotDataset of a synthetic 6-joint SO-100-like arm, written offline.

Trajectories are minimum-jerk moves between random waypoints (plus a slow sinusoidal sway), the
gripper alternates between open and closed, ``observation.state`` follows the commanded
``action`` with a two-frame lag and sensor noise, and a tiny rendered camera image shows where the
arm is. Everything goes through ``LeRobotDataset.create`` / ``add_frame`` / ``save_episode`` /
``finalize``, so files and ``meta/stats.json`` are exactly what LeRobot itself writes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from lerobot.datasets import LeRobotDataset
from lerobot.utils.utils import SuppressProgressBars
from tqdm.auto import tqdm

JOINT_NAMES = [
    "shoulder_pan.pos",
    "shoulder_lift.pos",
    "elbow_flex.pos",
    "wrist_flex.pos",
    "wrist_roll.pos",
    "gripper.pos",
]
# Commanded range of each joint (degrees for the arm, percent open for the gripper).
JOINT_LOW = np.array([-60.0, -90.0, -20.0, -80.0, -90.0, 0.0])
JOINT_HIGH = np.array([60.0, 20.0, 90.0, 60.0, 90.0, 60.0])
CAMERA_KEY = "observation.images.front"
TASK = "Pick the cube and place it in the box"
ROBOT_TYPE = "so100_follower"
STATE_LAG = 2


def dataset_features(image_size: int) -> dict[str, dict]:
    """LeRobot feature spec: 6-D state and action, one RGB camera stored as images (no video encoder)."""
    return {
        "observation.state": {"dtype": "float32", "shape": (6,), "names": JOINT_NAMES},
        "action": {"dtype": "float32", "shape": (6,), "names": JOINT_NAMES},
        CAMERA_KEY: {
            "dtype": "image",
            "shape": (image_size, image_size, 3),
            "names": ["height", "width", "channels"],
        },
    }


def _min_jerk(start: np.ndarray, end: np.ndarray, steps: int) -> np.ndarray:
    tau = np.linspace(0.0, 1.0, steps, endpoint=False)[:, None]
    blend = 10 * tau**3 - 15 * tau**4 + 6 * tau**5
    return start + (end - start) * blend


def synthetic_actions(episode_len: int, fps: int, rng: np.random.Generator) -> np.ndarray:
    """One episode of commanded joint positions ``[episode_len, 6]``."""
    span = JOINT_HIGH - JOINT_LOW
    point = JOINT_LOW + span * rng.uniform(0.3, 0.7, size=6)
    point[5] = JOINT_HIGH[5]  # start with the gripper open
    gripper_closed = False
    segments = []
    produced = 0
    while produced < episode_len:
        steps = int(rng.integers(15, 36))
        target = JOINT_LOW + span * rng.uniform(0.1, 0.9, size=6)
        gripper_closed = not gripper_closed
        target[5] = JOINT_LOW[5] + span[5] * (rng.uniform(0.0, 0.1) if gripper_closed else rng.uniform(0.8, 1.0))
        segments.append(_min_jerk(point, target, steps))
        point = target
        produced += steps
    actions = np.concatenate(segments)[:episode_len]

    t = np.arange(episode_len)[:, None] / fps
    freq = rng.uniform(0.2, 0.8, size=(1, 6))
    phase = rng.uniform(0.0, 2 * np.pi, size=(1, 6))
    sway = 0.02 * span * np.sin(2 * np.pi * freq * t + phase)
    sway[:, 5] = 0.0
    return np.clip(actions + sway, JOINT_LOW, JOINT_HIGH)


def render_frames(state: np.ndarray, image_size: int) -> np.ndarray:
    """A cheap top-down view ``[T, S, S, 3]`` (uint8): a square at the wrist, shaded by the gripper."""
    unit = (state - JOINT_LOW) / (JOINT_HIGH - JOINT_LOW)
    grid = np.arange(image_size)
    half = max(1, image_size // 10)
    cx = (unit[:, 0] * (image_size - 1))[:, None, None]
    cy = (unit[:, 1] * (image_size - 1))[:, None, None]
    inside = (np.abs(grid[None, :, None] - cy) <= half) & (np.abs(grid[None, None, :] - cx) <= half)
    frames = np.empty((len(state), image_size, image_size, 3), dtype=np.uint8)
    frames[...] = np.linspace(40, 120, image_size, dtype=np.uint8)[None, :, None, None]
    colour = np.stack([200 + 55 * unit[:, 5], 80 + 100 * unit[:, 2], 60 + 120 * unit[:, 4]], axis=-1)
    frames[inside] = np.repeat(colour.astype(np.uint8), inside.sum(axis=(1, 2)), axis=0)
    return frames


def make_synthetic_dataset(
    root: str | Path,
    repo_id: str = "local/fastplus_synthetic_so100",
    n_episodes: int = 20,
    episode_len: int = 100,
    image_size: int = 64,
    fps: int = 30,
    seed: int = 0,
    overwrite: bool = False,
) -> LeRobotDataset:
    """Write the dataset to ``root`` and return it opened for reading (stats computed by LeRobot).

    With ``overwrite`` an existing LeRobotDataset at ``root`` is deleted first; any other existing
    path is refused so a typo cannot wipe unrelated files.
    """
    root = Path(root)
    if root.exists():
        if not overwrite:
            raise ValueError(f"{root} already exists; pass overwrite=True or choose another directory.")
        if not (root / "meta" / "info.json").is_file() and any(root.iterdir()):
            raise ValueError(f"{root} exists and is not a LeRobotDataset; refusing to delete it. Choose another path.")
        shutil.rmtree(root)

    rng = np.random.default_rng(seed)
    dataset = LeRobotDataset.create(
        repo_id=repo_id,
        fps=fps,
        features=dataset_features(image_size),
        root=root,
        robot_type=ROBOT_TYPE,
        use_videos=False,
        image_writer_threads=2,
        video_backend="pyav",
    )
    with SuppressProgressBars():  # one bar here instead of one per saved episode
        for _ in tqdm(range(n_episodes), desc="writing synthetic episodes", disable=None):
            actions = synthetic_actions(episode_len, fps, rng)
            lagged = np.concatenate([np.repeat(actions[:1], STATE_LAG, axis=0), actions[:-STATE_LAG]])
            state = lagged + rng.normal(0.0, 0.2, size=actions.shape)
            frames = render_frames(state, image_size)
            for t in range(episode_len):
                dataset.add_frame(
                    {
                        "observation.state": state[t].astype(np.float32),
                        "action": actions[t].astype(np.float32),
                        CAMERA_KEY: frames[t],
                        "task": TASK,
                    }
                )
            dataset.save_episode()
        dataset.finalize()
    return LeRobotDataset(repo_id=repo_id, root=root, video_backend="pyav")
