"""The learning study's policies: core pi05, pi05_ki and pi0_fast built from the same initial weights, each with its
own processors, optimizer and random stream, and one optimizer step."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import torch
from lerobot.configs import FeatureType, NormalizationMode
from lerobot.datasets import LeRobotDatasetMetadata
from lerobot.policies import PreTrainedPolicy, make_pre_post_processors
from lerobot.policies.pi05 import PI05Config, PI05Policy
from lerobot.processor import tokenizer_processor
from lerobot.utils.constants import ACTION
from lerobot.utils.feature_utils import dataset_to_policy_features
from lerobot.utils.random_utils import get_rng_state, seeded_context, set_rng_state, set_seed
from transformers import AutoTokenizer

from lerobot_fastplus.data.chunks import parse_normalization_mode
from lerobot_fastplus.policies.common.backbone import TINY_VARIANT
from lerobot_fastplus.policies.pi0_fast.configuration_pi0_fast import PI0FastConfig
from lerobot_fastplus.policies.pi0_fast.modeling_pi0_fast import PI0FastPolicy
from lerobot_fastplus.policies.pi05_ki.configuration_pi05_ki import PI05KIConfig
from lerobot_fastplus.policies.pi05_ki.modeling_pi05_ki import PI05KIPolicy
from study.config import MAX_ACTION_TOKENS, TRAINED, StudyConfig
from testing_support.core_tiny import core_pi05_tiny

CORE_PI05_TEXT_TOKENIZER = "google/paligemma-3b-pt-224"  # hard-coded in core pi05's processor


@dataclass
class Trainee:
    """One trained policy with its processors, optimizer and private random stream."""

    name: str
    policy: PreTrainedPolicy
    pre: Any
    post: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    grad_clip: float
    rng: dict[str, Any]
    losses: list[dict[str, float]] = field(default_factory=list)
    update_s: list[float] = field(default_factory=list)
    update_cpu_s: list[float] = field(default_factory=list)
    preprocess_s: list[float] = field(default_factory=list)


def prompt_only_core_pi05(policy: PI05Policy) -> None:
    """Core pi05 without camera: no image tokens, as pi05_ki and pi0_fast (its ``_preprocess_images`` raises)."""
    policy._preprocess_images = lambda batch: ([], [])


def policy_features(meta: LeRobotDatasetMetadata, image_free: bool) -> tuple[dict, dict]:
    """Input / output features as LeRobot's make_policy derives them, optionally without cameras."""
    features = dataset_to_policy_features(meta.features)
    outputs = {k: f for k, f in features.items() if f.type is FeatureType.ACTION}
    inputs = {k: f for k, f in features.items() if k not in outputs}
    if image_free:
        inputs = {k: f for k, f in inputs.items() if f.type is not FeatureType.VISUAL}
    return inputs, outputs


def make_configs(cfg: StudyConfig, meta: LeRobotDatasetMetadata, text_dir: str, fast_dir: str) -> dict:
    mode = parse_normalization_mode(cfg.normalization)
    size = cfg.resolved_image_size()
    common = {
        "device": cfg.device,
        "dtype": cfg.dtype,
        "chunk_size": cfg.chunk_size,
        "n_action_steps": cfg.n_action_steps,
        "image_resolution": (size, size),
        "tokenizer_max_length": cfg.prompt_length,
        "paligemma_variant": cfg.paligemma_variant,
        "optimizer_lr": cfg.lr,
        "scheduler_decay_lr": cfg.lr / 10,
        "normalization_mapping": {"VISUAL": NormalizationMode.IDENTITY, "STATE": mode, "ACTION": mode},
        "use_relative_actions": cfg.relative_actions,
        "relative_exclude_joints": list(cfg.relative_exclude_joints),
    }
    layout = {"split_every": cfg.split_every, "max_action_tokens": MAX_ACTION_TOKENS}
    # core pi05's config accepts only the published variants; core_pi05_tiny builds the tiny sizes regardless
    core_variants = {"paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m"}
    if cfg.paligemma_variant != TINY_VARIANT:
        core_variants = {"paligemma_variant": cfg.paligemma_variant, "action_expert_variant": cfg.action_expert_variant}
    configs = {
        "pi05": PI05Config(**{**common, **core_variants}),
        "pi05_ki": PI05KIConfig(
            **common,
            **layout,
            action_expert_variant=cfg.action_expert_variant,
            text_tokenizer_name=text_dir,
            fast_tokenizer_path=fast_dir,
        ),
        "pi0_fast": PI0FastConfig(
            **common,
            **layout,
            text_tokenizer_name=text_dir,
            action_tokenizer_name=fast_dir,
            action_layout="split",
        ),
    }
    inputs, outputs = policy_features(meta, cfg.image_free)
    names = meta.features[ACTION].get("names")
    for config in configs.values():
        config.input_features, config.output_features = dict(inputs), dict(outputs)
        config.action_feature_names = list(names) if isinstance(names, list) else None
    return configs


@contextmanager
def local_core_text_tokenizer(text_dir: str) -> Iterator[None]:
    """Core pi05's processor loads the gated PaliGemma tokenizer by hub id; point that id at ``text_dir``."""

    class Redirect:
        @staticmethod
        def from_pretrained(name: str, **kwargs: Any) -> Any:
            return AutoTokenizer.from_pretrained(text_dir if name == CORE_PI05_TEXT_TOKENIZER else name, **kwargs)

    with mock.patch.object(tokenizer_processor, "AutoTokenizer", Redirect):
        yield


def build_policies(cfg: StudyConfig, configs: dict, stats: dict, seed: int, text_dir: str) -> dict[str, Trainee]:
    """pi05_ki from the seed; core pi05 loads its whole state dict, pi0_fast its PaliGemma tensors."""
    set_seed(seed)
    reference = PI05KIPolicy(configs["pi05_ki"])
    weights = reference.state_dict()
    trainees = {}
    for name in cfg.policies:
        config = configs[name]
        if name == "pi05_ki":
            policy = reference
        elif name == "pi05":
            policy = (core_pi05_tiny if cfg.paligemma_variant == TINY_VARIANT else PI05Policy)(config)
            policy.load_state_dict(weights, strict=True)
            if not config.image_features:
                prompt_only_core_pi05(policy)
        else:
            policy = PI0FastPolicy(config)
            own = policy.state_dict()
            missing = sorted(own.keys() - weights.keys())
            if missing:
                raise RuntimeError(f"pi0_fast tensors absent from pi05_ki's state dict: {missing[:5]}")
            policy.load_state_dict({key: weights[key] for key in own}, strict=True)
        policy.to(cfg.device)
        with local_core_text_tokenizer(text_dir) if name == "pi05" else nullcontext():
            pre, post = make_pre_post_processors(config, dataset_stats=stats)
        optimizer = config.get_optimizer_preset().build(policy.get_optim_params())
        scheduler = config.get_scheduler_preset().build(optimizer, cfg.steps)
        with seeded_context(seed * 1000 + TRAINED.index(name) + 1):  # independent of which others run
            rng = get_rng_state()
        trainees[name] = Trainee(name, policy, pre, post, optimizer, scheduler, config.optimizer_grad_clip_norm, rng)
    return trainees


@contextmanager
def random_stream(trainee: Trainee) -> Iterator[None]:
    """Run with the trainee's own random state (noise and flow times come from torch's global generator)."""
    outer = get_rng_state()
    set_rng_state(trainee.rng)
    try:
        yield
    finally:
        trainee.rng = get_rng_state()
        set_rng_state(outer)


def train_step(trainee: Trainee, raw: dict[str, Any]) -> None:
    with random_stream(trainee):
        start = time.perf_counter()
        batch = trainee.pre(dict(raw))
        trainee.preprocess_s.append(time.perf_counter() - start)
        policy = trainee.policy
        policy.train()
        start, cpu = time.perf_counter(), time.process_time()
        loss, logs = policy.forward(batch)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), trainee.grad_clip)
        trainee.optimizer.step()
        trainee.optimizer.zero_grad(set_to_none=True)
        trainee.scheduler.step()
        if is_cuda(policy):
            torch.cuda.synchronize()
        trainee.update_s.append(time.perf_counter() - start)
        trainee.update_cpu_s.append(time.process_time() - cpu)
    scalars = {k: float(v) for k, v in logs.items() if isinstance(v, int | float)}  # core pi05 also logs lists
    trainee.losses.append({**scalars, "grad_norm": float(grad_norm)})


def is_cuda(policy: PreTrainedPolicy) -> bool:
    return str(policy.config.device).startswith("cuda")
