"""A small, real LeRobotDataset of a synthetic 6-joint SO-100-like arm, written offline.

Trajectories are minimum-jerk moves between random waypoints (plus a slow sinusoidal sway), the
gripper alternates between open and closed, ``observation.state`` follows the commanded
``action`` with a two-frame lag and sensor noise, and a tiny rendered camera image shows where the
arm is. Everything goes through ``LeRobotDataset.create`` / ``add_frame`` / ``save_episode`` /
``finalize``, so files and ``meta/stats.json`` are exactly what LeRobot itself writes.

The defaults give that SO-100 layout; keyword arguments change the camera names, the action and state
sizes and the task (e.g. LIBERO's layout: cameras ``image`` and ``image2``, 7-D action, 8-D state). The
last action dimension is always the gripper; extra arm joints reuse the SO-100 joint ranges in turn.

``reach_targets=n`` writes a task that a policy can learn from the camera and the task text instead: each
episode names one of ``n`` coloured markers ("move the arm toward the red marker"), the camera shows that
marker in its own corner, and the arm sweeps toward it at a constant joint velocity of its own, opening or
closing the gripper on the way. Where the arm starts varies per episode, so the next actions relative to the
current state depend on the marker only, while the absolute positions depend on the state as well.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
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
TASK = "Pick the cube and place it in the box"
ROBOT_TYPE = "so100_follower"
STATE_LAG = 2
STATE_NOISE = 0.2  # standard deviation of the state sensor noise (degrees / percent)


@dataclass(frozen=True)
class ReachTarget:
    name: str
    colour: tuple[int, int, int]
    # Sweep direction of the five SO-100 arm joints and the gripper (+1 toward the upper limit, -1 toward the lower
    # one, 0 still); the first two joints place the arm in the image, so the arm moves toward the marker's corner.
    direction: tuple[int, int, int, int, int, int]


REACH_TARGETS = (
    ReachTarget("red", (230, 40, 40), (1, 1, -1, 1, 0, -1)),
    ReachTarget("green", (40, 200, 60), (-1, 1, 1, -1, 1, 1)),
    ReachTarget("blue", (50, 80, 240), (1, -1, 1, 0, -1, 1)),
    ReachTarget("yellow", (240, 220, 40), (-1, -1, -1, 1, 1, -1)),
)
# Arm speed of the reach task (share of each moving joint's range per second) and spread of its start pose.
REACH_SPEED = 0.15
REACH_START_SPREAD = 0.15
REACH_STATE_NOISE = 0.05


def joint_limits(action_dim: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Commanded range of each action dimension: arm joints (SO-100's five, in turn), then the gripper."""
    if action_dim < 2:
        raise ValueError(f"action_dim={action_dim}: the synthetic arm needs at least one joint and a gripper (>= 2).")
    arm = np.arange(action_dim - 1) % 5
    return np.append(JOINT_LOW[arm], JOINT_LOW[5]), np.append(JOINT_HIGH[arm], JOINT_HIGH[5])


def _names(action_dim: int, state_dim: int) -> tuple[list[str], list[str]]:
    action = JOINT_NAMES if action_dim == 6 else [f"joint_{i}.pos" for i in range(action_dim - 1)] + ["gripper.pos"]
    return action, action + [f"gripper_{i}.pos" for i in range(1, state_dim - action_dim + 1)]


def dataset_features(
    image_size: int, cameras: Sequence[str] = ("front",), action_dim: int = 6, state_dim: int | None = None
) -> dict[str, dict]:
    """LeRobot feature spec: state and action (6-D by default), RGB cameras stored as images (no video encoder).

    A state larger than the action repeats the gripper (e.g. LIBERO's two gripper fingers)."""
    state_dim = action_dim if state_dim is None else state_dim
    if state_dim < action_dim:
        raise ValueError(f"state_dim={state_dim} must be >= action_dim={action_dim} (the state follows the action).")
    action_names, state_names = _names(action_dim, state_dim)
    image = {"dtype": "image", "shape": (image_size, image_size, 3), "names": ["height", "width", "channels"]}
    return {
        "observation.state": {"dtype": "float32", "shape": (state_dim,), "names": state_names},
        "action": {"dtype": "float32", "shape": (action_dim,), "names": action_names},
        **{f"observation.images.{camera}": dict(image) for camera in cameras},
    }


def _min_jerk(start: np.ndarray, end: np.ndarray, steps: int) -> np.ndarray:
    tau = np.linspace(0.0, 1.0, steps, endpoint=False)[:, None]
    blend = 10 * tau**3 - 15 * tau**4 + 6 * tau**5
    return start + (end - start) * blend


def synthetic_actions(episode_len: int, fps: int, rng: np.random.Generator, action_dim: int = 6) -> np.ndarray:
    """One episode of commanded joint positions ``[episode_len, action_dim]`` (the gripper last)."""
    low, high = joint_limits(action_dim)
    span = high - low
    point = low + span * rng.uniform(0.3, 0.7, size=action_dim)
    point[-1] = high[-1]  # start with the gripper open
    gripper_closed = False
    segments = []
    produced = 0
    while produced < episode_len:
        steps = int(rng.integers(15, 36))
        target = low + span * rng.uniform(0.1, 0.9, size=action_dim)
        gripper_closed = not gripper_closed
        target[-1] = low[-1] + span[-1] * (rng.uniform(0.0, 0.1) if gripper_closed else rng.uniform(0.8, 1.0))
        segments.append(_min_jerk(point, target, steps))
        point = target
        produced += steps
    actions = np.concatenate(segments)[:episode_len]

    t = np.arange(episode_len)[:, None] / fps
    freq = rng.uniform(0.2, 0.8, size=(1, action_dim))
    phase = rng.uniform(0.0, 2 * np.pi, size=(1, action_dim))
    sway = 0.02 * span * np.sin(2 * np.pi * freq * t + phase)
    sway[:, -1] = 0.0
    return np.clip(actions + sway, low, high)


def reach_task(target: ReachTarget) -> str:
    return f"move the arm toward the {target.name} marker"


def reach_words(n_targets: int = len(REACH_TARGETS)) -> list[str]:
    """Every word of the reach tasks (for a word-level test text tokenizer)."""
    return sorted({word for target in REACH_TARGETS[:n_targets] for word in reach_task(target).split()})


def reach_actions(
    target: ReachTarget, episode_len: int, fps: int, rng: np.random.Generator, action_dim: int = 6
) -> np.ndarray:
    """One reach episode ``[episode_len, action_dim]``: a constant-velocity sweep centred on a random pose."""
    low, high = joint_limits(action_dim)
    span = high - low
    direction = np.append(np.asarray(target.direction[:5])[np.arange(action_dim - 1) % 5], target.direction[5])
    centre = low + span * rng.uniform(0.5 - REACH_START_SPREAD, 0.5 + REACH_START_SPREAD, action_dim)
    t = np.arange(episode_len)[:, None] - (episode_len - 1) / 2
    return np.clip(centre + t * (REACH_SPEED / fps) * span * direction, low, high)


def render_frames(state: np.ndarray, image_size: int, view: int = 0, marker: ReachTarget | None = None) -> np.ndarray:
    """A cheap view ``[T, S, S, 3]`` (uint8) of the arm state ``[T, action_dim]``: a square placed by two arm
    joints (``view`` 0: the first two, top-down; each further view the next two), shaded by the gripper, in front
    of the reach ``marker`` (if any), drawn in the corner those two joints sweep toward."""
    low, high = joint_limits(state.shape[1])
    unit = (state - low) / (high - low)
    n_arm = state.shape[1] - 1
    joint_x, joint_y = (2 * view) % n_arm, (2 * view + 1) % n_arm
    grid = np.arange(image_size)
    half = max(1, image_size // 10)
    frames = np.empty((len(state), image_size, image_size, 3), dtype=np.uint8)
    frames[...] = np.linspace(40, 120, image_size, dtype=np.uint8)[None, :, None, None]
    if marker is not None:
        size = 2 * max(1, image_size // 8) + 1
        x, y = (image_size - size if marker.direction[j % 5] > 0 else 0 for j in (joint_x, joint_y))
        frames[:, y : y + size, x : x + size] = marker.colour
    cx = (unit[:, joint_x] * (image_size - 1))[:, None, None]
    cy = (unit[:, joint_y] * (image_size - 1))[:, None, None]
    inside = (np.abs(grid[None, :, None] - cy) <= half) & (np.abs(grid[None, None, :] - cx) <= half)
    colour = np.stack([200 + 55 * unit[:, -1], 80 + 100 * unit[:, 2 % n_arm], 60 + 120 * unit[:, 4 % n_arm]], axis=-1)
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
    cameras: Sequence[str] = ("front",),
    action_dim: int = 6,
    state_dim: int | None = None,
    task: str = TASK,
    reach_targets: int = 0,
) -> LeRobotDataset:
    """Write the dataset to ``root`` and return it opened for reading (stats computed by LeRobot).

    With ``overwrite`` an existing LeRobotDataset at ``root`` is deleted first; any other existing
    path is refused so a typo cannot wipe unrelated files. ``cameras`` are the names after
    ``observation.images.`` (each a different view of the arm); ``state_dim`` defaults to ``action_dim``.
    ``reach_targets=n`` (1..4) writes the reach task (module docstring): episode ``e`` reaches for marker
    ``e % n`` and ``task`` is not used.
    """
    if not 0 <= reach_targets <= len(REACH_TARGETS):
        raise ValueError(f"reach_targets={reach_targets} must be in [0, {len(REACH_TARGETS)}] (0: waypoint motion).")
    features = dataset_features(image_size, cameras, action_dim, state_dim)  # validates the sizes first
    state_dim = features["observation.state"]["shape"][0]
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
        features=features,
        root=root,
        robot_type=ROBOT_TYPE,
        use_videos=False,
        image_writer_threads=2,
        video_backend="pyav",
    )
    with SuppressProgressBars():  # one bar here instead of one per saved episode
        for episode in tqdm(range(n_episodes), desc="writing synthetic episodes", disable=None):
            target = REACH_TARGETS[episode % reach_targets] if reach_targets else None
            if target is None:
                actions, episode_task = synthetic_actions(episode_len, fps, rng, action_dim), task
            else:
                actions, episode_task = reach_actions(target, episode_len, fps, rng, action_dim), reach_task(target)
            lagged = np.concatenate([np.repeat(actions[:1], STATE_LAG, axis=0), actions[:-STATE_LAG]])
            lagged = np.concatenate([lagged, np.repeat(lagged[:, -1:], state_dim - action_dim, axis=1)], axis=1)
            state = lagged + rng.normal(0.0, REACH_STATE_NOISE if target else STATE_NOISE, size=lagged.shape)
            frames = {
                f"observation.images.{camera}": render_frames(state[:, :action_dim], image_size, view, target)
                for view, camera in enumerate(cameras)
            }
            for t in range(episode_len):
                dataset.add_frame(
                    {
                        "observation.state": state[t].astype(np.float32),
                        "action": actions[t].astype(np.float32),
                        **{key: camera_frames[t] for key, camera_frames in frames.items()},
                        "task": episode_task,
                    }
                )
            dataset.save_episode()
        dataset.finalize()
    return LeRobotDataset(repo_id=repo_id, root=root, video_backend="pyav")
