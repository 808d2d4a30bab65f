"""Pieces shared by the pi05_ki and pi0_fast tests: offline tokenizers, identity stats, raw batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from conftest import smooth_chunks

from lerobot_fastplus.fast import FastTokenizer
from lerobot_fastplus.policies.common import write_paligemma_layout_tokenizer

CHUNK, SPLIT, DIM, RES = 20, 10, 4, 64
TASK = "pick the red cube"
CAMERA = "observation.images.cam"


@dataclass(frozen=True)
class Assets:
    fast_dir: Path
    text_dir: Path
    stats: dict[str, dict[str, torch.Tensor]]


def action_chunks(batch_size: int, seed: int) -> np.ndarray:
    """Smooth action chunks in [-0.9, 0.9]."""
    return 0.9 * np.clip(smooth_chunks(batch_size, CHUNK, DIM, seed=seed), -1, 1)


def make_assets(root: Path, vocab_size: int) -> Assets:
    """A FAST tokenizer fitted on sub-chunks of the test actions, a local text tokenizer, identity stats."""
    chunks = np.concatenate([action_chunks(8, seed) for seed in range(8)] + [action_chunks(200, 100)])
    fast = FastTokenizer.fit(chunks.reshape(-1, SPLIT, DIM), vocab_size=vocab_size)
    ones = np.ones(DIM, dtype=np.float32)
    stat = {"q01": -ones, "q99": ones, "mean": 0 * ones, "std": ones, "min": -ones, "max": ones}
    stats = {key: {k: torch.tensor(v) for k, v in stat.items()} for key in ("action", "observation.state")}
    return Assets(fast.save(root / "fast"), write_paligemma_layout_tokenizer(root / "text", TASK.split()), stats)


def raw_batch(batch_size: int, seed: int = 0, with_action: bool = True) -> dict[str, Any]:
    """An unprocessed batch (seed < 8: FAST encodes it without clipping) with random images."""
    gen = torch.Generator().manual_seed(seed)
    actions = torch.tensor(action_chunks(batch_size, seed), dtype=torch.float32)
    batch: dict[str, Any] = {
        CAMERA: torch.rand(batch_size, 3, RES, RES, generator=gen),
        "observation.state": actions[:, 0] + 0.01,
        "task": [TASK] * batch_size,
    }
    if with_action:
        batch["action"] = actions
        batch["action_is_pad"] = torch.zeros(batch_size, CHUNK, dtype=torch.bool)
    return batch
