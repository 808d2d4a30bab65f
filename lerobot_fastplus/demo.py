"""fastplus-demo: make a small synthetic LeRobotDataset offline, train a FAST tokenizer on it, report.

It runs the same code as ``fastplus-train-tokenizer`` on a real LeRobotDataset written with
``LeRobotDataset.create`` (6-D SO-100-like arm, one 64x64 camera stored as images), so it shows the
whole tool chain in well under a minute on a laptop CPU, with no network. Re-running replaces the
demo dataset.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lerobot_fastplus.tools.synthetic_dataset import make_synthetic_dataset
from lerobot_fastplus.tools.train_tokenizer import ToolResult, TrainTokenizerConfig, run_cli, train

DEMO_REPO_ID = "local/fastplus_demo_so100"


@dataclass
class DemoConfig:
    # Everything goes here: dataset/, tokenizer/, report.json, report.png.
    output_dir: str = "outputs/fastplus_demo"
    n_episodes: int = 20
    episode_len: int = 100
    image_size: int = 64
    fps: int = 30
    seed: int = 0
    # Tokenizer: chunks of `horizon` steps, BPE vocabulary size.
    horizon: int = 10
    vocab_size: int = 1024
    # Split-token layout section: a policy chunk of `chunk_size` steps cut every `split_every` steps.
    chunk_size: int = 50
    split_every: int = 10


def run_demo(cfg: DemoConfig) -> ToolResult:
    out = Path(cfg.output_dir)
    dataset_root = out / "dataset"
    start = time.perf_counter()
    dataset = make_synthetic_dataset(
        dataset_root,
        repo_id=DEMO_REPO_ID,
        n_episodes=cfg.n_episodes,
        episode_len=cfg.episode_len,
        image_size=cfg.image_size,
        fps=cfg.fps,
        seed=cfg.seed,
        overwrite=True,
    )
    made_s = time.perf_counter() - start
    print(f"wrote a LeRobotDataset of {dataset.num_episodes} episodes / {dataset.num_frames} frames in {made_s:.1f} s")

    result = train(
        TrainTokenizerConfig(
            repo_id=DEMO_REPO_ID,
            root=str(dataset_root),
            horizon=cfg.horizon,
            vocab_size=cfg.vocab_size,
            output_dir=str(out),
            chunk_size=cfg.chunk_size,
            split_every=cfg.split_every,
            seed=cfg.seed,
            overwrite=True,
        )
    )
    report = result.report
    print(
        f"\nDemo done in {time.perf_counter() - start:.1f} s. A {cfg.horizon}-step chunk of {report.action_dim}-D "
        f"actions takes {report.tokens_per_chunk.mean:.1f} FAST tokens on average instead of "
        f"{report.naive_tokens_per_chunk} ({report.compression:.1f}x fewer), and decodes back with MSE "
        f"{report.errors.mse_normalized:.1e} in normalised units. The demo dataset is in {dataset_root}; the "
        "tokenizer and report are listed above.\n"
        f"Same on your own data: fastplus-train-tokenizer --root=<dataset dir> --output_dir=<dir>; "
        f"check it later with fastplus-check-tokenizer --tokenizer=<dir>/tokenizer --root=<dataset dir>."
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(DemoConfig, run_demo, argv)


if __name__ == "__main__":
    sys.exit(main())
