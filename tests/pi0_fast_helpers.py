"""Shared pieces of the pi0_fast tests: offline tokenizers, a tiny config, preprocessed batches, core's tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lerobot.policies.pi0_fast.modeling_pi0_fast as core_modeling
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.pi0_fast.configuration_pi0_fast import PI0FastConfig as CorePI0FastConfig
from policy_helpers import CAMERA, CHUNK, DIM, RES, SPLIT, Assets, action_chunks, raw_batch  # noqa: F401
from policy_helpers import make_assets as _make_assets

from lerobot_fastplus.policies.common.backbone import TINY_VARIANT
from lerobot_fastplus.policies.pi0_fast.configuration_pi0_fast import PI0FastConfig
from testing_support.core_tiny import core_sizes


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
        "text_tokenizer_name": str(assets.text_dir),
        "action_tokenizer_name": str(assets.fast_dir),
        **overrides,
    }
    return set_features(PI0FastConfig(**kwargs), camera)


def core_tiny_model(config: CorePI0FastConfig) -> core_modeling.PI0FastPytorch:
    """LeRobot's *core* ``PI0FastPytorch`` at the tiny variant (its hard-coded sizes swapped during construction),
    with SigLIP at ``config.image_resolution``: the same parameters as the plugin's tiny model."""
    sizes = {config.paligemma_variant: TINY_VARIANT}
    with core_sizes(core_modeling, sizes, TINY_VARIANT, config.image_resolution[0]):
        return core_modeling.PI0FastPytorch(config)


def make_assets(root: Path) -> Assets:
    return _make_assets(root, vocab_size=400)
