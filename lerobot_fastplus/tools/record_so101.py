"""fastplus-record-so101: record scripted SO-101 demonstrations in MuJoCo as a LeRobotDataset v3.

    fastplus-record-so101 --task=reach_close --n_episodes=100 --output_dir=outputs/so101_sim/reach_close

The dataset's features are what ``lerobot-eval --env.type=so101_sim`` gives a policy in the same ``--obs_mode``,
so ``lerobot-train --dataset.root=<output_dir>`` and then ``lerobot-eval --env.type=so101_sim --env.task=<task>``
work without renaming anything. Evaluate on seeds the recording did not use (they are in
``meta/so101_sim.json``; ``lerobot-eval --seed=`` sets the first).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lerobot_fastplus.tools.cli import run_cli


@dataclass
class RecordSO101Config:
    # "reach_close" or "pick_place" (see --env.task of lerobot-eval --env.type=so101_sim).
    task: str = "reach_close"
    # "state" (robot + cube/goal positions and offsets) or "camera" (front camera + robot state).
    obs_mode: str = "state"
    n_episodes: int = 100
    # Episode e uses simulator seed seed + e (cube and goal positions); evaluate from a seed past the last one.
    seed: int = 0
    # Standard deviation of the Gaussian noise added to the executed position action (action units; the stored
    # label stays the expert's). 0 records the plain expert.
    noise: float = 0.2
    # Control steps per episode; None: the env's default (30 for reach_close, 80 for pick_place).
    episode_length: int | None = None
    # Camera frames are image_size x image_size (camera mode).
    image_size: int = 96
    # The dataset folder; None: outputs/so101_sim/<task>_<obs_mode>.
    output_dir: str | None = None
    repo_id: str = "local/so101_sim"
    # Replace an earlier recording at output_dir (never anything else).
    overwrite: bool = False
    # Also write an offline stand-in for the PaliGemma text tokenizer that knows the recording's task words (what
    # --policy.text_tokenizer_name of a tiny pi05_ki / pi0_fast needs without the gated download); None: skip.
    text_tokenizer_dir: str | None = None


def record(cfg: RecordSO101Config) -> None:
    from lerobot_fastplus.envs.so101_recording import record_demonstrations
    from lerobot_fastplus.envs.so101_sim import SO101SimEnv
    from lerobot_fastplus.policies.common import write_dataset_words_tokenizer

    env_cfg = SO101SimEnv(
        task=cfg.task, obs_mode=cfg.obs_mode, episode_length=cfg.episode_length, image_size=cfg.image_size
    )
    if cfg.n_episodes < 1 or cfg.noise < 0:
        raise ValueError("--n_episodes must be >= 1 and --noise >= 0")
    root = Path(cfg.output_dir or f"outputs/so101_sim/{cfg.task}_{cfg.obs_mode}")
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        probe = root.parent / f".{root.name}.write_test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise ValueError(f"cannot write under {root.parent} ({err.strerror}); pass a writable --output_dir") from err
    summary = record_demonstrations(
        env_cfg, root, cfg.repo_id, cfg.n_episodes, seed=cfg.seed, noise=cfg.noise, overwrite=cfg.overwrite
    )
    if cfg.text_tokenizer_dir:
        write_dataset_words_tokenizer(summary.root, cfg.text_tokenizer_dir)
        print(f"text tokenizer with the task words: {cfg.text_tokenizer_dir}")
    last = cfg.seed + cfg.n_episodes - 1
    print(
        f"recorded {summary.episodes} episodes ({summary.frames} frames) of {cfg.task} to {summary.root}; "
        f"the noisy expert succeeded in {summary.expert_successes}; seeds {cfg.seed}..{last}: "
        f"evaluate with lerobot-eval --seed={last + 1} or later"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(RecordSO101Config, record, argv)


if __name__ == "__main__":
    sys.exit(main())
