"""A ``lerobot-train --policy.type=pi05_ki`` run killed (SIGKILL) mid-training resumes from its last complete
checkpoint with ``--config_path=<ckpt>/pretrained_model/train_config.json --resume=true`` and loses nothing.

How LeRobot writes checkpoints (``lerobot.common.train_utils``): each ``save_freq`` steps it writes
``checkpoints/<step>/pretrained_model`` (weights, configs, processors; this plugin adds ``fast_tokenizer/``) and
``checkpoints/<step>/training_state`` (optimizer, scheduler, RNG, step), and only then points the ``last`` symlink
at that directory. A kill during a save therefore leaves a partial step directory that ``last`` never names.

Exactness: the killed-and-resumed run must end with the same weights and optimizer state, bit for bit, as an
uninterrupted run of the same length (training here is deterministic: both runs' step-2 checkpoints are equal).
Two settings make that comparison possible. The learning-rate schedule is given explicitly
(``scheduler_decay_steps`` = the run length), since LeRobot rescales the default one to ``--steps``, which differs
between the runs. And the flow-matching term is switched off (``flow_loss_weight=0``; the FAST cross-entropy still
trains the backbone): LeRobot restores the RNG state and only then creates the DataLoader iterator, which draws a
seed from the global torch RNG, so after a resume the flow noise and times are drawn one step later in the stream
than in an uninterrupted run (measured: same batch, weights, learning rate and cross-entropy at step 3, different
flow loss). That is a LeRobot resume detail, not lost state; everything a checkpoint holds is compared here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import BIN, run
from safetensors.torch import load_file

from lerobot_fastplus.data.chunks import load_action_chunks
from lerobot_fastplus.fast import FastTokenizer
from lerobot_fastplus.policies.common import write_paligemma_layout_tokenizer
from testing_support.synthetic_dataset import TASK, make_synthetic_dataset

REPO_ID = "local/fastplus_synthetic_so100"
CHUNK = 20
STEPS = 4  # the comparison point: two checkpoints, at steps 2 and 4
KILL_TIMEOUT_S = 600
SAVED = ("pretrained_model/model.safetensors", "training_state/optimizer_state.safetensors")


def train_args(root: Path, fast: Path, text: Path, out: Path, steps: int) -> list[str]:
    return [
        str(BIN / "lerobot-train"),
        "--policy.type=pi05_ki",
        f"--dataset.repo_id={REPO_ID}",
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
        "--policy.flow_loss_weight=0",
        "--policy.scheduler_warmup_steps=1",
        f"--policy.scheduler_decay_steps={STEPS}",
        "--policy.push_to_hub=false",
        f"--steps={steps}",
        "--save_freq=2",
        "--batch_size=2",
        "--log_freq=1",
        "--seed=7",
        f"--output_dir={out}",
        "--num_workers=0",
        "--wandb.enable=false",
    ]


def file_digests(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def kill_after_first_checkpoint(args: list[str], out: Path, cwd: Path) -> None:
    """Run ``args`` (a long run writing to ``out``) and SIGKILL it as soon as ``checkpoints/last`` exists."""
    last = out / "checkpoints" / "last"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_LEROBOT_HOME": str(cwd / "hf_lerobot_home")}
    with open(cwd / "killed.log", "w") as log:
        process = subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + KILL_TIMEOUT_S
        try:
            while not last.is_symlink() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            process.kill()  # SIGKILL: no cleanup, no final save
            process.wait()
    assert last.is_symlink(), f"no checkpoint before the run ended:\n{(cwd / 'killed.log').read_text()[-4000:]}"
    assert process.returncode == -9, f"the run ended on its own (rc={process.returncode}) instead of being killed"


def logged_steps(output: str) -> list[int]:
    return [int(step) for step in re.findall(r"\bstep:(\d+) smpl:", output)]


def assert_same_tensors(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> None:
    assert expected.keys() == actual.keys()
    different = {key: (actual[key] - value).abs().max().item() for key, value in expected.items()}
    different = {key: diff for key, diff in different.items() if not torch.equal(actual[key], expected[key])}
    assert not different, f"{len(different)} of {len(expected)} tensors differ (max abs difference): {different}"


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_complete_checkpoint_and_loses_nothing(tmp_path) -> None:
    root = tmp_path / "synthetic"
    dataset = make_synthetic_dataset(root, repo_id=REPO_ID, n_episodes=3, episode_len=40, image_size=32)
    chunks = load_action_chunks(dataset, 10, stride=2, show_progress=False)
    fast = FastTokenizer.fit(chunks.normalized, vocab_size=512).save(tmp_path / "fast")
    text = write_paligemma_layout_tokenizer(tmp_path / "text", TASK.split())

    reference = tmp_path / "reference"
    run(train_args(root, fast, text, reference, steps=STEPS), tmp_path)

    out = tmp_path / "killed"
    kill_after_first_checkpoint(train_args(root, fast, text, out, steps=1000), out, tmp_path)
    checkpoints = out / "checkpoints"
    assert os.readlink(checkpoints / "last") == "000002"  # relative link to the first complete checkpoint
    step2 = checkpoints / "000002"
    assert json.loads((step2 / "training_state" / "training_step.json").read_text())["step"] == 2
    before = file_digests(step2)
    assert set(SAVED) <= before.keys()
    for name in SAVED:  # up to the kill, the killed run is the reference run (same seed, data order, schedule)
        assert_same_tensors(load_file(reference / "checkpoints" / "000002" / name), load_file(step2 / name))
    # A kill during the next save leaves a partial step directory; make sure there is one, `last` must ignore it.
    (checkpoints / "000004" / "pretrained_model").mkdir(parents=True, exist_ok=True)
    (checkpoints / "000004" / "pretrained_model" / "model.safetensors").write_bytes(b"partial")

    config = checkpoints / "last" / "pretrained_model" / "train_config.json"
    resumed = run(
        [str(BIN / "lerobot-train"), f"--config_path={config}", "--resume=true", f"--steps={STEPS}"], tmp_path
    )
    logged = resumed.stdout + resumed.stderr
    assert "Resuming data order at epoch 0, sample 4" in logged  # 2 steps x batch 2 already seen
    assert logged_steps(logged) == [3, 4]  # starts after the checkpointed step, ends at the new step count

    assert file_digests(step2) == before  # the checkpoint it resumed from is untouched
    assert os.readlink(checkpoints / "last") == "000004"
    for name in SAVED:
        assert_same_tensors(
            load_file(reference / "checkpoints" / "000004" / name), load_file(checkpoints / "000004" / name)
        )
    assert (checkpoints / "000004" / "training_state" / "training_step.json").read_text() == (
        reference / "checkpoints" / "000004" / "training_state" / "training_step.json"
    ).read_text()
