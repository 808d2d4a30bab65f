"""Both policies at the published widths (gemma_2b backbone, gemma_300m expert, the full 257,152-id vocabulary,
the 27-layer So400m SigLIP at 224 px) with the Gemma depth reduced to 2, in bf16: initialised from a checkpoint
that LeRobot's core pi05 / pi0_fast saved in bf16, then one action and one training step. Slow (minutes, ~10 GB
of RAM, most of it for building the core checkpoint, in its own process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, smooth_chunks
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.factory import make_pre_post_processors
from safetensors import safe_open

from lerobot_fastplus.fast import FastTokenizer
from lerobot_fastplus.policies.common import write_paligemma_layout_tokenizer
from lerobot_fastplus.policies.common.backbone import GEMMA_VARIANTS
from lerobot_fastplus.policies.pi0_fast.configuration_pi0_fast import PI0FastConfig
from lerobot_fastplus.policies.pi0_fast.modeling_pi0_fast import PI0FastPolicy
from lerobot_fastplus.policies.pi05_ki.configuration_pi05_ki import FAST_ID_BASE, PI05KIConfig
from lerobot_fastplus.policies.pi05_ki.modeling_pi05_ki import PI05KIPolicy
from testing_support.core_tiny import with_depth

pytestmark = pytest.mark.slow

DEPTH, DIM, RES, CHUNK = 2, 6, 224, 20
BACKBONE, EXPERT = f"gemma_2b_depth{DEPTH}", f"gemma_300m_depth{DEPTH}"
CAMERA = "observation.images.front"
TASK = "pick the cube"

SAVE_CORE = f"""
import sys
sys.path.insert(0, {str(REPO_ROOT)!r})
import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.pi0_fast import PI0FastConfig
from lerobot.policies.pi05 import PI05Config
from lerobot_fastplus.policies.common.backbone import GEMMA_VARIANTS
from testing_support.core_tiny import core_pi0_fast_with_variant, core_pi05_with_variants, with_depth

GEMMA_VARIANTS["{BACKBONE}"] = with_depth("gemma_2b", {DEPTH})
GEMMA_VARIANTS["{EXPERT}"] = with_depth("gemma_300m", {DEPTH})
policy, out = sys.argv[1:3]
common = dict(device="cpu", dtype="bfloat16", chunk_size={CHUNK}, n_action_steps={CHUNK})
config = PI05Config(**common) if policy == "pi05" else PI0FastConfig(**common)
config.input_features = {{"{CAMERA}": PolicyFeature(FeatureType.VISUAL, (3, {RES}, {RES})),
                         "observation.state": PolicyFeature(FeatureType.STATE, ({DIM},))}}
config.output_features = {{"action": PolicyFeature(FeatureType.ACTION, ({DIM},))}}
torch.manual_seed(0)
if policy == "pi05":
    core = core_pi05_with_variants(config, "{BACKBONE}", "{EXPERT}")
else:
    core = core_pi0_fast_with_variant(config, "{BACKBONE}")
core.save_pretrained(out)
"""


@pytest.fixture
def real_width(monkeypatch) -> None:
    monkeypatch.setitem(GEMMA_VARIANTS, BACKBONE, with_depth("gemma_2b", DEPTH))
    monkeypatch.setitem(GEMMA_VARIANTS, EXPERT, with_depth("gemma_300m", DEPTH))


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("real_width_tokenizers")
    fast = FastTokenizer.fit(0.9 * smooth_chunks(400, 10, DIM).clip(-1, 1), vocab_size=1024).save(root / "fast")
    return fast, write_paligemma_layout_tokenizer(root / "text", TASK.split())


def core_checkpoint(policy: str, out: Path) -> Path:
    """Build and save the core checkpoint in its own process (core builds in fp32 first: ~10 GB)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", SAVE_CORE, policy, str(out)], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def set_features(config):
    config.input_features = {
        CAMERA: PolicyFeature(FeatureType.VISUAL, (3, RES, RES)),
        "observation.state": PolicyFeature(FeatureType.STATE, (DIM,)),
    }
    config.output_features = {"action": PolicyFeature(FeatureType.ACTION, (DIM,))}
    return config


def assert_equals_the_file(policy: torch.nn.Module, path: Path) -> None:
    """Every tensor, dtype included, read back one at a time (the file is opened per tensor)."""
    state = policy.state_dict()
    with safe_open(path / "model.safetensors", framework="pt") as file:
        keys = list(file.keys())
    assert sorted(keys) == sorted(state)
    for key in keys:
        with safe_open(path / "model.safetensors", framework="pt") as file:
            expected = file.get_tensor(key)
        assert state[key].dtype == expected.dtype and torch.equal(state[key], expected), key
        del expected


def batches(config, stats) -> tuple[dict, dict]:
    pre, _ = make_pre_post_processors(config, dataset_stats=stats)
    gen = torch.Generator().manual_seed(0)
    actions = torch.tensor(0.8 * smooth_chunks(1, CHUNK, DIM).clip(-1, 1), dtype=torch.float32)
    observation = {
        CAMERA: torch.rand(1, 3, RES, RES, generator=gen),
        "observation.state": actions[:, 0],
        "task": [TASK],
    }
    sample = {**observation, "action": actions, "action_is_pad": torch.zeros(1, CHUNK, dtype=torch.bool)}
    return pre(observation), pre(sample)


def identity_stats() -> dict:
    ones = torch.ones(DIM)
    stat = {"mean": 0 * ones, "std": ones, "min": -ones, "max": ones, "q01": -ones, "q99": ones}
    return {"action": stat, "observation.state": stat}


def train_step(policy: torch.nn.Module, batch: dict) -> dict:
    policy.train()
    loss, logs = policy.forward(batch)
    loss.backward()
    trainable = [p for p in policy.parameters() if p.requires_grad and p.grad is not None]
    steepest = max(trainable, key=lambda p: p.grad.float().abs().max().item())
    before = steepest.detach().clone()
    torch.optim.SGD(trainable, lr=1e-2).step()
    assert not torch.equal(before, steepest)
    return logs


def test_pi05_ki_from_a_bf16_core_pi05_checkpoint(real_width, tokenizers, tmp_path) -> None:
    fast, text = tokenizers
    ckpt = core_checkpoint("pi05", tmp_path / "core_pi05")
    config = set_features(
        PI05KIConfig(
            device="cpu",
            dtype="bfloat16",
            paligemma_variant=BACKBONE,
            action_expert_variant=EXPERT,
            chunk_size=CHUNK,
            n_action_steps=CHUNK,
            fast_tokenizer_path=str(fast),
            text_tokenizer_name=str(text),
            init_from=str(ckpt),
        )
    )
    policy = PI05KIPolicy(config)
    assert_equals_the_file(policy, ckpt)
    n = policy.layout.n_fast_ids
    assert policy.model.layout_to_vocab.tolist() == [*(FAST_ID_BASE - torch.arange(n)).tolist(), 257024, 257025, 257026]
    assert policy.model.action_vocab.tolist() == [*(FAST_ID_BASE - torch.arange(n)).tolist(), 257025, 257026]

    observation, sample = batches(config, identity_stats())
    policy.eval()
    action = policy.select_action(observation)
    assert action.shape == (1, DIM) and torch.isfinite(action).all()

    logs = train_step(policy, sample)
    embed = policy.model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight
    expert = policy.model.paligemma_with_expert.gemma_expert.model.layers[0].mlp.up_proj.weight
    assert embed.grad[policy.model.action_vocab].abs().sum() > 0  # the FAST cross-entropy reaches the backbone
    assert expert.grad.abs().sum() > 0  # the flow loss trains the expert
    assert torch.isfinite(torch.tensor([logs["fast_ce_loss"], logs["flow_loss"]])).all()


def test_pi0_fast_from_a_bf16_core_pi0_fast_checkpoint(real_width, tokenizers, tmp_path) -> None:
    fast, text = tokenizers
    ckpt = core_checkpoint("pi0_fast", tmp_path / "core_pi0_fast")
    config = set_features(
        PI0FastConfig(
            device="cpu",
            dtype="bfloat16",
            paligemma_variant=BACKBONE,
            chunk_size=CHUNK,
            n_action_steps=CHUNK,
            action_tokenizer_name=str(fast),
            text_tokenizer_name=str(text),
            init_from=str(ckpt),
        )
    )
    policy = PI0FastPolicy(config)
    assert_equals_the_file(policy, ckpt)
    n = policy.model.n_fast
    fast_ids = (config.fast_id_base - torch.arange(n)).tolist()
    assert policy.model.local_to_vocab.tolist() == [*fast_ids, *config.action_special_ids]
    assert policy.model.candidate_vocab.tolist() == [*fast_ids, *config.action_special_ids[1:]]
    assert policy.model.start_ids.tolist() == [config.action_bos_token_id]

    observation, sample = batches(config, identity_stats())
    policy.eval()
    action = policy.select_action(observation)
    assert action.shape == (1, DIM) and torch.isfinite(action).all()

    logs = train_step(policy, sample)
    embed = policy.model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight
    assert embed.grad[policy.model.candidate_vocab].abs().sum() > 0  # the head (tied embedding) rows of the targets
    assert torch.isfinite(torch.tensor(logs["ce_loss"]))
