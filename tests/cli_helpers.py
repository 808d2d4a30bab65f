"""Pieces shared by the ``lerobot-train`` subprocess tests of the plugin's policies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent

# Head of a script run in a fresh process: loads a checkpoint the way lerobot-eval / lerobot-rollout do
# (make_policy + processors from the checkpoint) and preprocesses the first frame of the dataset into `batch`.
# Each test appends the lines that act and print their JSON result.
ACT_PRELUDE = """
import json, sys
import torch
from lerobot.configs import PreTrainedConfig
from lerobot.datasets import LeRobotDataset
from lerobot.policies import make_policy, make_pre_post_processors
from lerobot.utils.import_utils import register_third_party_plugins

register_third_party_plugins()
ckpt, root, repo_id = sys.argv[1:4]
cfg = PreTrainedConfig.from_pretrained(ckpt)
cfg.pretrained_path = ckpt
dataset = LeRobotDataset(repo_id, root=root, video_backend="pyav")
policy = make_policy(cfg, ds_meta=dataset.meta)
pre, post = make_pre_post_processors(cfg, pretrained_path=ckpt)
frame = dataset[0]
obs = {k: v for k, v in frame.items() if k.startswith("observation.")}
obs["task"] = frame["task"]
batch = pre(obs)
"""


def run(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a command offline with its own LeRobot home; fail the test with the end of its output."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_LEROBOT_HOME": str(cwd / "hf_lerobot_home")}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args[:2])} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result
