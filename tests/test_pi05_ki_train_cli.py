"""``lerobot-train --policy.type=pi05_ki`` end to end, in subprocesses: train a few steps, reload the checkpoint
with ``--policy.path`` semantics in a fresh process and act, resume training (tiny variant, CPU, offline)."""

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
chunk = policy.predict_action_chunk(batch)
print(json.dumps({"type": policy.config.type, "action": list(action.shape), "chunk": list(chunk.shape),
                  "finite": bool(torch.isfinite(action).all() and torch.isfinite(chunk).all())}))
"""
)


def tokenizers_for(dataset: LeRobotDataset, root: Path, words: list[str], vocab_size: int) -> tuple[Path, Path]:
    chunks = load_action_chunks(dataset, 10, stride=2, show_progress=False)
    fast = FastTokenizer.fit(chunks.normalized, vocab_size=vocab_size).save(root / "fast")
    return fast, write_paligemma_layout_tokenizer(root / "text", words)


def train_args(
    repo_id: str, root: Path, fast: Path, text: Path, out: Path, steps: int, extra: tuple[str, ...] = ()
) -> list[str]:
    return [
        str(BIN / "lerobot-train"),
        "--policy.type=pi05_ki",
        f"--dataset.repo_id={repo_id}",
        f"--dataset.root={root}",
        "--dataset.video_backend=pyav",
        "--policy.paligemma_variant=gemma_tiny",
        "--policy.action_expert_variant=gemma_tiny",
        "--policy.device=cpu",
        "--policy.image_resolution=[64,64]",
        "--policy.tokenizer_max_length=48",
        f"--policy.text_tokenizer_name={text}",
        f"--policy.fast_tokenizer_path={fast}",
        f"--policy.chunk_size={CHUNK}",
        f"--policy.n_action_steps={CHUNK}",
        "--policy.push_to_hub=false",
        f"--steps={steps}",
        "--batch_size=2",
        f"--save_freq={steps}",
        "--log_freq=1",
        f"--output_dir={out}",
        "--num_workers=0",
        "--wandb.enable=false",
        *extra,
    ]


def train_reload_act(
    repo_id: str, root: Path, dim: int, words: list[str], tmp: Path, vocab_size: int = 512, extra: tuple[str, ...] = ()
) -> Path:
    """Train 2 steps (``extra``: more lerobot-train flags), check the logged KI metrics and the checkpoint, act from
    it in a fresh process."""
    dataset = LeRobotDataset(repo_id, root=root, video_backend="pyav")
    fast, text = tokenizers_for(dataset, tmp, words, vocab_size)
    out = tmp / "train"
    log = run(train_args(repo_id, root, fast, text, out, steps=2, extra=extra), tmp)
    logged = log.stdout + log.stderr
    for metric in ("loss:", "flow_loss:", "fast_ce_loss:", "fast_token_accuracy:"):
        assert metric in logged, metric
    ckpt = out / "checkpoints" / "000002" / "pretrained_model"
    assert json.loads((ckpt / "config.json").read_text())["type"] == "pi05_ki"
    assert (ckpt / "fast_tokenizer" / "tokenizer.json").is_file()
    assert "fastplus_fast_action_tokens" in (ckpt / "policy_preprocessor.json").read_text()

    acted = run([sys.executable, "-c", ACT_SCRIPT, str(ckpt), str(root), repo_id], tmp)
    result = json.loads(acted.stdout.strip().splitlines()[-1])
    assert result == {"type": "pi05_ki", "action": [1, dim], "chunk": [1, CHUNK, dim], "finite": True}
    return out


def test_train_reload_and_resume_on_a_synthetic_dataset(tmp_path) -> None:
    root = tmp_path / "synthetic"
    make_synthetic_dataset(root, n_episodes=4, episode_len=60, image_size=32)
    out = train_reload_act("local/fastplus_synthetic_so100", root, 6, TASK.split(), tmp_path)

    config = out / "checkpoints" / "last" / "pretrained_model" / "train_config.json"
    run(
        [str(BIN / "lerobot-train"), f"--config_path={config}", "--resume=true", "--steps=3", "--save_freq=3"], tmp_path
    )
    state = json.loads((out / "checkpoints" / "000003" / "training_state" / "training_step.json").read_text())
    assert state["step"] == 3


@pytest.mark.slow
def test_train_and_reload_on_real_g1_images(tmp_path) -> None:
    root = shared_dataset("g1_bottle_pick")
    tasks = LeRobotDataset("local/g1_bottle_pick", root=root, video_backend="pyav").meta.tasks.index
    words = sorted({word for task in tasks for word in task.replace(",", " ").replace(".", " ").split()})
    # its stats.json quantiles are narrow (per-episode means): normalised actions span a wide DCT range
    train_reload_act("local/g1_bottle_pick", root, 26, words, tmp_path, vocab_size=4096)


@pytest.mark.slow
@pytest.mark.parametrize("cameras", [(), ("--policy.empty_cameras=1",)], ids=["prompt_only", "empty_camera"])
def test_train_and_reload_on_real_state_only_so101(tmp_path, cameras) -> None:
    """A dataset without camera: the prefix is the prompt alone, or one blank masked camera with empty_cameras."""
    root = shared_dataset("so101_record_test")
    words = LeRobotDataset("local/so101_record_test", root=root).meta.tasks.index[0].split()
    train_reload_act("local/so101_record_test", root, 6, words, tmp_path, extra=cameras)
