"""Workflow 1, as a user runs it: ``fastplus-train-tokenizer`` on a dataset, then ``lerobot-train --config_path``
with a file from ``configs/`` plus CLI overrides; the checkpoint alone (tokenizer directory deleted) acts in a
fresh process. Tiny variant, CPU, offline."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from cli_helpers import ACT_PRELUDE, BIN, run

from lerobot_fastplus.fast import FastTokenizer
from lerobot_fastplus.policies.common import write_paligemma_layout_tokenizer
from testing_support.synthetic_dataset import TASK, make_synthetic_dataset

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
REPO_ID = "local/fastplus_synthetic_so100"
CHUNK = 20
ACT_SCRIPT = (
    ACT_PRELUDE
    + """
action = post(policy.select_action(batch))
print(json.dumps({"type": policy.config.type, "action": list(action.shape),
                  "finite": bool(torch.isfinite(action).all())}))
"""
)
# (config file, normalisation its policy trains with, flag naming the FAST tokenizer, extra overrides)
WORKFLOWS = {
    "pi05_ki": (
        "pi05_ki_so100.json",
        "QUANTILES",
        "--policy.fast_tokenizer_path",
        ["--policy.init_from=null", "--policy.action_expert_variant=gemma_tiny"],
    ),
    "pi0_fast": (
        "pi0_fast_so100.json",
        "MEAN_STD",
        "--policy.action_tokenizer_name",
        ["--policy.init_from=null"],
    ),
}


@pytest.mark.slow  # ~40 s each; the quick suite trains both policies through lerobot-train in the *_train_cli tests
@pytest.mark.parametrize("policy_type", sorted(WORKFLOWS))
def test_tokenizer_then_lerobot_train_with_a_config_file(policy_type, tmp_path) -> None:
    config_file, mode, tokenizer_flag, extra = WORKFLOWS[policy_type]
    root = tmp_path / "dataset"
    make_synthetic_dataset(root, repo_id=REPO_ID, n_episodes=4, episode_len=60, image_size=32)
    run(
        [
            str(BIN / "fastplus-train-tokenizer"),
            f"--root={root}",
            f"--normalization_mode={mode}",
            "--vocab_size=512",
            f"--chunk_size={CHUNK}",
            f"--output_dir={tmp_path / 'fast'}",
        ],
        tmp_path,
    )
    text = write_paligemma_layout_tokenizer(tmp_path / "text", TASK.split())
    out = tmp_path / "train"
    run(
        [
            str(BIN / "lerobot-train"),
            f"--config_path={CONFIGS / config_file}",
            f"--dataset.repo_id={REPO_ID}",
            f"--dataset.root={root}",
            "--dataset.video_backend=pyav",
            f"{tokenizer_flag}={tmp_path / 'fast' / 'tokenizer'}",
            f"--policy.text_tokenizer_name={text}",
            "--policy.paligemma_variant=gemma_tiny",
            "--policy.image_resolution=[64,64]",
            "--policy.tokenizer_max_length=48",
            "--policy.device=cpu",
            "--policy.dtype=float32",
            f"--policy.chunk_size={CHUNK}",
            f"--policy.n_action_steps={CHUNK}",
            "--steps=2",
            "--batch_size=2",
            "--save_freq=2",
            "--num_workers=0",
            f"--output_dir={out}",
            *extra,
        ],
        tmp_path,
    )

    ckpt = out / "checkpoints" / "000002" / "pretrained_model"
    config = json.loads((ckpt / "config.json").read_text())
    assert (config["type"], config["chunk_size"], config["paligemma_variant"]) == (policy_type, CHUNK, "gemma_tiny")
    for name in (
        "model.safetensors",
        "train_config.json",
        "policy_postprocessor.json",
        "fast_tokenizer/tokenizer.json",
    ):
        assert (ckpt / name).is_file(), name
    steps = json.loads((ckpt / "policy_preprocessor.json").read_text())["steps"]
    fast_step = next(step for step in steps if step.get("registry_name") == "fastplus_fast_action_tokens")
    embedded = FastTokenizer.from_dict(fast_step["config"]["tokenizer"])
    assert embedded.to_dict() == FastTokenizer.load(tmp_path / "fast" / "tokenizer").to_dict()

    shutil.rmtree(tmp_path / "fast")  # the checkpoint must not need the tokenizer directory any more
    acted = run([sys.executable, "-c", ACT_SCRIPT, str(ckpt), str(root), REPO_ID], tmp_path)
    assert json.loads(acted.stdout.strip().splitlines()[-1]) == {"type": policy_type, "action": [1, 6], "finite": True}
