"""Shared test fixtures: offline settings and real chunks from ../shared/data.

Tests may import ``lerobot_fastplus``, ``testing_support`` (code only tests and benchmarks use; the repo root goes on
``sys.path`` here, however pytest is started) and the helpers in this folder (``cli_helpers``, ``policy_helpers``,
..., importable because pytest puts this folder there); ``plugins/`` holds stand-in LeRobot plugins for subprocesses.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SHARED_DATA = Path(os.environ.get("FASTPLUS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    root = SHARED_DATA / name
    if not (root / "meta" / "info.json").is_file():
        pytest.skip(f"real dataset {name} not found under {SHARED_DATA} (set FASTPLUS_SHARED_DATA to its folder)")
    return root


def real_action_chunks(name: str, horizon: int, stride: int = 1, quantiles: str = "stats") -> np.ndarray:
    """Windows of `horizon` actions that stay inside one episode, q01/q99-normalised to about [-1, 1].

    ``quantiles="stats"`` uses meta/stats.json (what lerobot-train uses); ``"frames"`` recomputes them
    over all frames (g1_bottle_pick's stored quantiles are per-episode means and much narrower).
    """
    import json

    import pandas as pd

    root = shared_dataset(name)
    frames = pd.concat(
        pd.read_parquet(p, columns=["action", "episode_index"]) for p in sorted(root.glob("data/*/*.parquet"))
    )
    actions = np.stack(frames["action"].to_numpy()).astype(np.float64)
    episodes = frames["episode_index"].to_numpy()
    if quantiles == "stats":
        stats = json.loads((root / "meta" / "stats.json").read_text())["action"]
        q01, q99 = np.asarray(stats["q01"]), np.asarray(stats["q99"])
    else:
        q01, q99 = np.quantile(actions, 0.01, axis=0), np.quantile(actions, 0.99, axis=0)
    normed = 2 * (actions - q01) / np.maximum(q99 - q01, 1e-8) - 1
    windows = []
    for episode in np.unique(episodes):
        seq = normed[episodes == episode]
        windows += [seq[s : s + horizon] for s in range(0, len(seq) - horizon + 1, stride)]
    return np.stack(windows)


def fit_reference(chunks: np.ndarray, vocab_size: int, directory: Path) -> Path:
    """A tokenizer fitted by the reference implementation (LeRobot's copy), saved in the published layout."""
    from lerobot.policies.molmoact2.molmoact2_hf_model.action_tokenizer import UniversalActionProcessor

    logging.disable(logging.WARNING)
    try:
        reference = UniversalActionProcessor.fit(list(chunks[:1500]), vocab_size=vocab_size)
    finally:
        logging.disable(logging.NOTSET)
    reference.tokenizer.save_pretrained(directory)
    config = {"min_token": reference.min_token, "scale": reference.scale, "vocab_size": reference.vocab_size}
    (directory / "processor_config.json").write_text(json.dumps(config))
    return directory


def smooth_chunks(n: int, horizon: int, dim: int, seed: int = 0) -> np.ndarray:
    """Random smooth trajectories in about [-1, 1]: integrated noise plus a slow sinusoid."""
    rng = np.random.default_rng(seed)
    drift = np.cumsum(rng.normal(0, 0.05, size=(n, horizon, dim)), axis=1)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, dim))
    t = np.linspace(0, 1, horizon)[None, :, None]
    return np.clip(0.6 * np.sin(2 * np.pi * t + phase) + drift + rng.uniform(-0.3, 0.3, size=(n, 1, dim)), -1.5, 1.5)


@pytest.fixture(scope="module")
def smooth() -> np.ndarray:
    """400 smooth 10 x 7 chunks, shared by the tokenizer tests."""
    return smooth_chunks(400, 10, 7, seed=1)


@pytest.fixture(scope="module")
def tokenizer(smooth: np.ndarray):
    """A FAST tokenizer fitted on ``smooth`` (vocabulary 512)."""
    from lerobot_fastplus.fast import FastTokenizer

    return FastTokenizer.fit(smooth, vocab_size=512)
