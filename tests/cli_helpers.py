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


def fake_plugin_pythonpath(site: Path, *packages: Path) -> str:
    """A ``PYTHONPATH`` under which LeRobot's ``register_third_party_plugins`` imports each plugin package.

    Discovery goes through installed distributions (``importlib.metadata``), so for every package directory this
    writes ``<name>-0.0.0.dist-info/METADATA`` (``Name: <name>``) into ``site``; the result puts ``site``, each
    package's parent folder and any inherited ``PYTHONPATH`` on the path of a subprocess.
    """
    entries = [str(site)]
    for package in packages:
        dist_info = site / f"{package.name}-0.0.0.dist-info"
        dist_info.mkdir(parents=True, exist_ok=True)
        (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package.name}\nVersion: 0.0.0\n")
        entries.append(str(package.resolve().parent))
    if os.environ.get("PYTHONPATH"):
        entries.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(entries)


def run_expecting_failure(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a command like :func:`run`, but require it to fail (non-zero exit); returns its output for checks."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_LEROBOT_HOME": str(cwd / "hf_lerobot_home")}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode != 0, (
        f"{' '.join(args[:2])} succeeded but should have failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result
