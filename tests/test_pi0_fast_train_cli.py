"""``lerobot-train --policy.type=pi0_fast`` end to end, in subprocesses: train a few steps, reload the checkpoint the
way lerobot-eval / lerobot-rollout do in a fresh process and act (tiny variant, CPU, offline)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from cli_helpers import ACT_PRELUDE, BIN, run
from conftest import shared_dataset
from lerobot.datasets import LeRobotDataset

from lerobot_fastplus.data.chunks import load_action_chunks
from lerobot_fastplus.fast import FastTokenizer
from lerobot_fastplus.policies.common import write_paligemma_layout_tokenizer
from testing_support.synthetic_dataset import TASK, make_synthetic_dataset

CHUNK = 20
ACT_SCRIPT = (
    ACT_PRELUDE
    + """
action = post(policy.select_action(batch))
print(json.dumps({"policy": type(policy).__module__, "layout": policy.config.action_layout,
                  "action": list(action.shape), "finite": bool(torch.isfinite(action).all()),
                  "reported": policy.last_decode is not None and len(policy.last_decode.missing_steps) == 1}))
"""
)


def train_reload_act(repo_id: str, root: Path, dim: int, words: list[str], tmp: Path, *extra: str) -> None:
    """Fit the tokenizers, train 2 steps, check the logged metrics and the checkpoint, act from it in a fresh
    process."""
    dataset = LeRobotDataset(repo_id, root=root, video_backend="pyav")
    chunks = load_action_chunks(dataset, 10, mode="MEAN_STD", show_progress=False)  # pi0_fast normalises MEAN_STD
    fast = FastTokenizer.fit(chunks.normalized, vocab_size=512).save(tmp / "fast")
    text = write_paligemma_layout_tokenizer(tmp / "text", words)
    out = tmp / "train"
    args = [
        str(BIN / "lerobot-train"),
        "--policy.type=pi0_fast",
        f"--dataset.repo_id={repo_id}",
        f"--dataset.root={root}",
        "--dataset.video_backend=pyav",
        "--policy.paligemma_variant=gemma_tiny",
        "--policy.device=cpu",
        "--policy.image_resolution=[64,64]",
        "--policy.tokenizer_max_length=64",
        f"--policy.text_tokenizer_name={text}",
        f"--policy.action_tokenizer_name={fast}",
        f"--policy.chunk_size={CHUNK}",
        f"--policy.n_action_steps={CHUNK}",
        "--policy.push_to_hub=false",
        "--steps=2",
        "--batch_size=2",
        "--save_freq=2",
        "--log_freq=1",
        f"--output_dir={out}",
        "--num_workers=0",
        "--wandb.enable=false",
        *extra,
    ]
    trained = run(args, tmp)
    logged = trained.stdout + trained.stderr
    for metric in ("loss:", "ce_loss:", "token_accuracy:"):
        assert metric in logged, metric
    ckpt = out / "checkpoints" / "000002" / "pretrained_model"
    config = json.loads((ckpt / "config.json").read_text())
    assert (config["type"], config["action_layout"]) == ("pi0_fast", "split")
    assert (ckpt / "fast_tokenizer" / "tokenizer.json").is_file()
    assert "fastplus_fast_action_tokens" in (ckpt / "policy_preprocessor.json").read_text()

    acted = run([sys.executable, "-c", ACT_SCRIPT, str(ckpt), str(root), repo_id], tmp)
    result = json.loads(acted.stdout.strip().splitlines()[-1])
    assert result == {
        "policy": "lerobot_fastplus.policies.pi0_fast.modeling_pi0_fast",
        "layout": "split",
        "action": [1, dim],
        "finite": True,
        "reported": True,
    }


def test_train_and_reload_on_a_synthetic_dataset(tmp_path) -> None:
    root = tmp_path / "synthetic"
    make_synthetic_dataset(root, n_episodes=3, episode_len=50, image_size=32)
    train_reload_act("local/fastplus_synthetic_so100", root, 6, TASK.split(), tmp_path)


def test_train_and_reload_on_real_state_only_so101(tmp_path) -> None:
    root = shared_dataset("so101_record_test")
    words = ["Pick", "the", "orange", "cube", "and", "place", "it", "in", "the", "box"]
    train_reload_act("local/so101_record_test", root, 6, words, tmp_path)


@pytest.mark.slow
def test_train_and_reload_on_real_g1_images(tmp_path) -> None:
    root = shared_dataset("g1_bottle_pick")
    words = ["Pick", "up", "the", "yellow", "bottle", "on", "the", "table"]
    train_reload_act("local/g1_bottle_pick", root, 26, words, tmp_path, "--policy.max_action_tokens=384")
