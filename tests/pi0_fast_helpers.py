"""Shared pieces of the pi0_fast tests: offline tokenizers, a tiny config, preprocessed batches, core's tiny model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import lerobot.policies.pi0_fast.modeling_pi0_fast as core_modeling
import numpy as np
import torch
from conftest import smooth_chunks
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.pi0_fast.configuration_pi0_fast import PI0FastConfig as CorePI0FastConfig

from lerobot_fastplus.fast import FastTokenizer
from lerobot_fastplus.policies.common import write_paligemma_layout_tokenizer
from lerobot_fastplus.policies.common.backbone import GEMMA_VARIANTS, TINY_VARIANT, paligemma_hf_config
from lerobot_fastplus.policies.pi0_fast.configuration_pi0_fast import PI0FastConfig

CHUNK, SPLIT, DIM, RES = 20, 10, 4, 64
TASK = "pick the red cube"
CAMERA = "observation.images.cam"


@dataclass(frozen=True)
class Assets:
    fast_dir: Path
    text_dir: Path
    stats: dict[str, dict[str, torch.Tensor]]


def action_chunks(batch_size: int, seed: int) -> np.ndarray:
    """Smooth action chunks in [-0.9, 0.9]."""
    return 0.9 * np.clip(smooth_chunks(batch_size, CHUNK, DIM, seed=seed), -1, 1)


def make_assets(root: Path) -> Assets:
    """A FAST tokenizer fitted on sub-chunks of the test actions, a local text tokenizer, identity stats."""
    chunks = np.concatenate([action_chunks(8, seed) for seed in range(8)] + [action_chunks(200, 100)])
    fast = FastTokenizer.fit(chunks.reshape(-1, SPLIT, DIM), vocab_size=400)
    ones = np.ones(DIM, dtype=np.float32)
    stat = {"q01": -ones, "q99": ones, "mean": 0 * ones, "std": ones, "min": -ones, "max": ones}
    stats = {key: {k: torch.tensor(v) for k, v in stat.items()} for key in ("action", "observation.state")}
    return Assets(fast.save(root / "fast"), write_paligemma_layout_tokenizer(root / "text", TASK.split()), stats)


def set_features(config: Any, camera: bool = True) -> Any:
    config.input_features = {"observation.state": PolicyFeature(FeatureType.STATE, (DIM,))}
    if camera:
        config.input_features[CAMERA] = PolicyFeature(FeatureType.VISUAL, (3, RES, RES))
    config.output_features = {"action": PolicyFeature(FeatureType.ACTION, (DIM,))}
    return config


def make_config(assets: Assets, camera: bool = True, **overrides: Any) -> PI0FastConfig:
    """Tiny pi0_fast config (split layout) with one 64x64 camera (optional), 4-D state and action."""
    kwargs = {
        "device": "cpu",
        "paligemma_variant": "gemma_tiny",
        "chunk_size": CHUNK,
        "n_action_steps": CHUNK,
        "split_every": SPLIT,
        "image_resolution": (RES, RES),
        "tokenizer_max_length": 24,
        "max_action_tokens": 96,
        "max_decoding_steps": 96,
        "text_tokenizer_name": str(assets.text_dir),
        "action_tokenizer_name": str(assets.fast_dir),
        **overrides,
    }
    return set_features(PI0FastConfig(**kwargs), camera)


def raw_batch(batch_size: int, seed: int = 0, with_action: bool = True) -> dict[str, Any]:
    """An unprocessed batch (seed < 8: FAST encodes it without clipping) with random images."""
    gen = torch.Generator().manual_seed(seed)
    actions = torch.tensor(action_chunks(batch_size, seed), dtype=torch.float32)
    batch: dict[str, Any] = {
        CAMERA: torch.rand(batch_size, 3, RES, RES, generator=gen),
        "observation.state": actions[:, 0] + 0.01,
        "task": [TASK] * batch_size,
    }
    if with_action:
        batch["action"] = actions
        batch["action_is_pad"] = torch.zeros(batch_size, CHUNK, dtype=torch.bool)
    return batch


def core_tiny_model(config: CorePI0FastConfig) -> core_modeling.PI0FastPytorch:
    """LeRobot's *core* ``PI0FastPytorch`` at the tiny variant (its hard-coded sizes swapped during construction),
    with SigLIP at ``config.image_resolution``: the same parameters as the plugin's tiny model."""
    build = core_modeling.PaliGemmaForConditionalGenerationWithPiGemma
    resolution = config.image_resolution[0]

    def tiny(config: Any) -> Any:
        config.vision_config = paligemma_hf_config(TINY_VARIANT, resolution).vision_config
        return build(config=config)

    with (
        mock.patch.object(core_modeling, "get_gemma_config", lambda variant: GEMMA_VARIANTS[TINY_VARIANT]),
        mock.patch.object(core_modeling, "PaliGemmaForConditionalGenerationWithPiGemma", tiny),
    ):
        return core_modeling.PI0FastPytorch(config)
