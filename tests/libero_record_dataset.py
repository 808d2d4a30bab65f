"""Record a small LeRobotDataset from LeRobot's real LIBERO env (MuJoCo), with scripted motion.

Run as a script (in its own process: MuJoCo's renderer and LIBERO's module state stay out of pytest's)::

    python tests/libero_record_dataset.py --root=<new dir> --suite=libero_spatial --task_id=0 \\
        --n_episodes=3 --steps=24 --size=64

Every frame is what ``lerobot-eval`` gives a policy: the env's observation through LeRobot's
``preprocess_observation`` and LIBERO's env processor (``LiberoProcessorStep``: 180-degree image flip, 8-D state),
so the dataset's features (camera names and sizes, state size, task string) are the env's, not hand-written. The
action is the 7-D command sent to the env: a smooth end-effector sweep of its own per episode (6-D delta pose in
[-1, 1]) and the gripper opening, then closing. Prints one JSON line with the dataset's features and the measured
seconds per reset and per env step.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from lerobot.datasets import LeRobotDataset
from lerobot.envs import preprocess_observation
from lerobot.envs.configs import LiberoEnv
from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE

FPS = 20  # LiberoEnv's control rate


def scripted_actions(steps: int, rng: np.random.Generator) -> np.ndarray:
    """``[steps, 7]``: sinusoidal end-effector deltas with a random phase and amplitude, gripper open then closed."""
    t = np.arange(steps)[:, None] / steps
    amplitude = rng.uniform(0.2, 0.8, size=(1, 6)) * np.array([1, 1, 1, 0.3, 0.3, 0.3])
    phase = rng.uniform(0, 2 * np.pi, size=(1, 6))
    pose = amplitude * np.sin(2 * np.pi * t + phase)
    gripper = np.where(t < 0.5, -1.0, 1.0)
    return np.concatenate([pose, gripper], axis=1).astype(np.float32)


def dataset_frame(observation: dict, action: np.ndarray, task: str) -> dict:
    """One LeRobotDataset frame from a processed observation batch of one env (images back to uint8 HWC)."""
    frame = {ACTION: action, "task": task, OBS_STATE: observation[OBS_STATE][0].numpy()}
    for key, value in observation.items():
        if key.startswith(f"{OBS_IMAGES}."):
            frame[key] = (value[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return frame


def features_of(frame: dict) -> dict[str, dict]:
    features = {}
    for key, value in frame.items():
        if key.startswith(f"{OBS_IMAGES}."):
            features[key] = {"dtype": "image", "shape": value.shape, "names": ["height", "width", "channels"]}
        elif key != "task":
            features[key] = {"dtype": "float32", "shape": value.shape, "names": None}
    return features


def record(root: Path, suite: str, task_id: int, n_episodes: int, steps: int, size: int, seed: int) -> dict:
    env_cfg = LiberoEnv(task=suite, task_ids=[task_id], observation_height=size, observation_width=size)
    env = env_cfg.create_envs(n_envs=1, use_async_envs=False)[suite][task_id]
    env_preprocessor, _ = env_cfg.get_env_processors()
    rng = np.random.default_rng(seed)
    dataset, resets, env_steps = None, [], []
    try:
        for episode in range(n_episodes):
            start = time.perf_counter()
            raw, _ = env.reset(seed=[seed + episode])
            resets.append(time.perf_counter() - start)
            task = env.call("task_description")[0]
            for action in scripted_actions(steps, rng):
                observation = preprocess_observation(raw)
                observation["task"] = [task]
                frame = dataset_frame(env_preprocessor(observation), action, task)
                if dataset is None:
                    dataset = LeRobotDataset.create(
                        f"local/libero_sim_{suite}", fps=FPS, features=features_of(frame), root=root, use_videos=False
                    )
                dataset.add_frame(frame)
                start = time.perf_counter()
                raw, *_ = env.step(action[None])
                env_steps.append(time.perf_counter() - start)
            dataset.save_episode()
    finally:
        env.close()
    dataset.finalize()
    return {
        "repo_id": dataset.repo_id,
        "task": task,
        "features": {key: list(dataset.features[key]["shape"]) for key in features_of(frame)},
        "reset_s": resets,
        "step_s": env_steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--suite", default="libero_spatial")
    parser.add_argument("--task_id", type=int, default=0)
    parser.add_argument("--n_episodes", type=int, default=3)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    info = record(args.root, args.suite, args.task_id, args.n_episodes, args.steps, args.size, args.seed)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
