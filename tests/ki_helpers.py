"""Shared pieces of the pi05_ki tests: offline tokenizers, a tiny config, preprocessed batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lerobot.configs.types import FeatureType, PolicyFeature
from policy_helpers import CAMERA, CHUNK, DIM, RES, SPLIT, Assets, action_chunks, raw_batch  # noqa: F401
from policy_helpers import make_assets as _make_assets

from lerobot_fastplus.policies.pi05_ki.configuration_pi05_ki import PI05KIConfig


def make_config(assets: Assets, **overrides: Any) -> PI05KIConfig:
    """Tiny pi05_ki config with one 64x64 camera, 4-D state and action."""
    kwargs = {
        "device": "cpu",
        "paligemma_variant": "gemma_tiny",
        "action_expert_variant": "gemma_tiny",
        "chunk_size": CHUNK,
        "n_action_steps": CHUNK,
        "split_every": SPLIT,
        "image_resolution": (RES, RES),
        "tokenizer_max_length": 24,
        "text_tokenizer_name": str(assets.text_dir),
        "fast_tokenizer_path": str(assets.fast_dir),
        **overrides,
    }
    config = PI05KIConfig(**kwargs)
    config.input_features = {
        CAMERA: PolicyFeature(FeatureType.VISUAL, (3, RES, RES)),
        "observation.state": PolicyFeature(FeatureType.STATE, (DIM,)),
    }
    config.output_features = {"action": PolicyFeature(FeatureType.ACTION, (DIM,))}
    return config


def make_assets(root: Path) -> Assets:
    return _make_assets(root, vocab_size=512)
