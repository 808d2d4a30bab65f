"""Data-parallel training: ``accelerate launch`` runs ``lerobot-train`` in 2 processes (CPU, gloo backend) for
pi05_ki and pi0_fast; the ranks end with bit-identical parameters, and one checkpoint is written, by rank 0.

The 2-process runs go through ``tests/ddp_probe.py``: LeRobot's own ``lerobot-train`` entry point, which in addition
writes per rank the digests of its parameters, the dataset indices it trained on and the checkpoints it saved.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ki_helpers
import pi0_fast_helpers
import pytest
import torch
from cli_helpers import BIN, run
from ddp_probe import FIND_UNUSED_ENV, REPORT_DIR_ENV, digests
from lerobot.datasets import LeRobotDataset
from lerobot.policies.factory import make_pre_post_processors
from safetensors.torch import load_file

from lerobot_fastplus.data.chunks import load_action_chunks
from lerobot_fastplus.fast import FastTokenizer
from lerobot_fastplus.policies.common import write_paligemma_layout_tokenizer
from lerobot_fastplus.policies.pi0_fast.modeling_pi0_fast import PI0FastPolicy
from lerobot_fastplus.policies.pi05_ki.modeling_pi05_ki import PI05KIPolicy
from testing_support.synthetic_dataset import TASK, make_synthetic_dataset

REPO_ID = "local/fastplus_synthetic_so100"
STEPS, BATCH, CHUNK = 3, 2, 20
PALIGEMMA_LM_HEAD = "model.paligemma_with_expert.paligemma.lm_head.weight"
PI05_KI_LM_HEADS = {PALIGEMMA_LM_HEAD, "model.paligemma_with_expert.gemma_expert.lm_head.weight"}
# `accelerate config` answers for 2 processes on one machine. On a machine without GPUs, MULTI_GPU only picks
# accelerate's torchrun launcher; lerobot-train then builds its Accelerator with cpu=True (--policy.device=cpu),
# which makes it MULTI_CPU with the gloo backend.
ACCELERATE_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
num_machines: 1
num_processes: 2
machine_rank: 0
mixed_precision: 'no'
gpu_ids: all
rdzv_backend: static
same_network: true
use_cpu: false
"""


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> ki_helpers.Assets:
    return ki_helpers.make_assets(tmp_path_factory.mktemp("ddp_assets"))


@pytest.mark.parametrize("policy_type", ["pi05_ki", "pi0_fast"])
def test_every_trainable_parameter_gets_a_gradient(policy_type: str, assets: ki_helpers.Assets) -> None:
    """What DDP needs to run without ``find_unused_parameters``: one training loss reaches every parameter that
    requires a gradient. pi05_ki's two LM heads and pi0_fast's (split layout: the head is the tied input embedding),
    which no loss reaches, are frozen."""
    helpers, policy_class = {"pi05_ki": (ki_helpers, PI05KIPolicy), "pi0_fast": (pi0_fast_helpers, PI0FastPolicy)}[
        policy_type
    ]
    config = helpers.make_config(assets)
    torch.manual_seed(0)
    policy = policy_class(config)
    preprocessor = make_pre_post_processors(config, dataset_stats=assets.stats)[0]
    policy.train()
    loss, _ = policy.forward(preprocessor(helpers.raw_batch(2)))
    loss.backward()

    named = dict(policy.named_parameters())
    without_gradient = sorted(name for name, param in named.items() if param.requires_grad and param.grad is None)
    assert without_gradient == [], f"DDP would need find_unused_parameters=True for {without_gradient}"
    frozen = {name for name, param in named.items() if not param.requires_grad}
    assert frozen == (PI05_KI_LM_HEADS if policy_type == "pi05_ki" else {PALIGEMMA_LM_HEAD})


def policy_flags(policy_type: str, tmp: Path, dataset: LeRobotDataset) -> list[str]:
    """The tiny-policy flags of the single-process CLI tests, with tokenizers fitted on the dataset."""
    text = write_paligemma_layout_tokenizer(tmp / "text", TASK.split())
    mode = "QUANTILES" if policy_type == "pi05_ki" else "MEAN_STD"  # each policy's action normalisation
    chunks = load_action_chunks(dataset, 10, stride=2, mode=mode, show_progress=False)
    fast = FastTokenizer.fit(chunks.normalized, vocab_size=512).save(tmp / "fast")
    common = [
        f"--policy.type={policy_type}",
        "--policy.paligemma_variant=gemma_tiny",
        f"--policy.text_tokenizer_name={text}",
    ]
    if policy_type == "pi05_ki":
        return [
            *common,
            "--policy.action_expert_variant=gemma_tiny",
            f"--policy.fast_tokenizer_path={fast}",
            "--policy.tokenizer_max_length=48",
        ]
    return [
        *common,
        f"--policy.action_tokenizer_name={fast}",
        "--policy.tokenizer_max_length=64",
    ]


def launch_two_ranks(
    policy_type: str, tmp: Path, monkeypatch: pytest.MonkeyPatch, find_unused: bool
) -> tuple[list[dict[str, Any]], Path, str]:
    """Train STEPS steps with ``accelerate launch`` on 2 CPU processes; return both ranks' reports, the output
    directory and the log."""
    root = tmp / "synthetic"
    make_synthetic_dataset(root, n_episodes=4, episode_len=60, image_size=32)
    dataset = LeRobotDataset(REPO_ID, root=root, video_backend="pyav")
    config = tmp / "accelerate.yaml"
    config.write_text(ACCELERATE_CONFIG)
    reports, out = tmp / "reports", tmp / "train"
    reports.mkdir()
    monkeypatch.setenv(REPORT_DIR_ENV, str(reports))
    if not find_unused:
        monkeypatch.setenv(FIND_UNUSED_ENV, "0")
    args = [
        str(BIN / "accelerate"),
        "launch",
        f"--config_file={config}",
        "--main_process_port=0",  # accelerate picks a free port
        str(Path(__file__).with_name("ddp_probe.py")),
        *policy_flags(policy_type, tmp, dataset),
        f"--dataset.repo_id={REPO_ID}",
        f"--dataset.root={root}",
        "--dataset.video_backend=pyav",
        "--policy.device=cpu",
        "--policy.image_resolution=[64,64]",
        f"--policy.chunk_size={CHUNK}",
        f"--policy.n_action_steps={CHUNK}",
        "--policy.push_to_hub=false",
        f"--steps={STEPS}",
        f"--batch_size={BATCH}",
        f"--save_freq={STEPS}",
        "--log_freq=1",
        f"--output_dir={out}",
        "--num_workers=0",
        "--wandb.enable=false",
    ]
    result = run(args, tmp)
    found = sorted(p.name for p in reports.iterdir())
    assert found == ["rank0.json", "rank1.json"], f"expected one report per rank, found {found}"
    return [json.loads((reports / name).read_text()) for name in found], out, result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("policy_type", "find_unused"),
    [("pi05_ki", True), ("pi05_ki", False), ("pi0_fast", True)],
    ids=["pi05_ki-lerobot_ddp_kwargs", "pi05_ki-find_unused_parameters_false", "pi0_fast-lerobot_ddp_kwargs"],
)
def test_two_process_training_keeps_ranks_identical_and_checkpoints_once(
    policy_type: str, find_unused: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``find_unused=True`` is lerobot-train's own DDP setting; ``False`` makes DDP raise if a parameter gets no
    gradient."""
    (rank0, rank1), out, log = launch_two_ranks(policy_type, tmp_path, monkeypatch, find_unused)

    for rank, report in enumerate((rank0, rank1)):
        setup = {key: report[key] for key in ("rank", "world_size", "distributed_type", "backend", "wrapper")}
        assert setup == {
            "rank": rank,
            "world_size": 2,
            "distributed_type": "DistributedType.MULTI_CPU",
            "backend": "gloo",
            "wrapper": "DistributedDataParallel",
        }
        assert report["find_unused_parameters"] is find_unused
        assert len(report["batches"]) == STEPS and all(len(batch) == BATCH for batch in report["batches"])
    assert f"Effective batch size: {BATCH} x 2 = {2 * BATCH}" in log

    # The ranks trained on different frames, so only the gradient all-reduce can keep their parameters equal.
    seen = [{index for batch in report["batches"] for index in batch} for report in (rank0, rank1)]
    assert not seen[0] & seen[1], f"both ranks trained on frames {sorted(seen[0] & seen[1])}"
    assert rank0["prepared"] == rank1["prepared"]
    differ = sorted(name for name in rank0["final"] if rank0["final"][name] != rank1["final"][name])
    assert differ == [], f"{len(differ)} parameters differ between the ranks after training, e.g. {differ[:3]}"

    trainable = set(rank0["trainable"])
    unchanged = {name for name in rank0["final"] if rank0["final"][name] == rank0["prepared"][name]}
    assert not unchanged & trainable, f"trainable parameters unchanged by training: {sorted(unchanged & trainable)}"
    assert unchanged == set(rank0["final"]) - trainable  # frozen ones stay as they were
    assert unchanged == (PI05_KI_LM_HEADS if policy_type == "pi05_ki" else {PALIGEMMA_LM_HEAD})

    # One checkpoint, written by rank 0 only, holding rank 0's final parameters.
    assert (rank0["saves"], rank1["saves"]) == ([STEPS], [])
    checkpoints = out / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [f"{STEPS:06d}", "last"]
    assert (checkpoints / "last").resolve() == (checkpoints / f"{STEPS:06d}").resolve()
    assert [p.name for p in out.iterdir()] == ["checkpoints"]
    ckpt = checkpoints / f"{STEPS:06d}"
    assert json.loads((ckpt / "training_state" / "training_step.json").read_text()) == {
        "step": STEPS,
        "num_processes": 2,
        "batch_size": BATCH,
    }
    assert json.loads((ckpt / "pretrained_model" / "config.json").read_text())["type"] == policy_type
    assert digests(load_file(ckpt / "pretrained_model" / "model.safetensors").items()) == rank0["final"]
