"""Processors of the plugin's ``pi0_fast``.

Split layout (the default): the pipeline of ``policies.common.processors`` (pi0.5 prompt ending in
``Action: ``, configurable text tokenizer, split-layout FAST tokens). ``action_layout='core'`` gives core
pi0_fast's own pipeline (its prompt and ``<bos> Action: ... |`` tokens), for checkpoints trained by core.
"""

from __future__ import annotations

from typing import Any

import torch
from lerobot.policies.pi0_fast.processor_pi0_fast import (
    make_pi0_fast_pre_post_processors as make_core_pi0_fast_pre_post_processors,
)
from lerobot.processor import PolicyAction, PolicyProcessorPipeline

from lerobot_fastplus.policies.common.processors import make_split_layout_processors
from lerobot_fastplus.policies.pi0_fast.configuration_pi0_fast import PI0FastConfig


def make_pi0_fast_pre_post_processors(
    config: PI0FastConfig,
    dataset_stats: dict[str, dict[str, torch.Tensor]] | None = None,
) -> tuple[
    PolicyProcessorPipeline[dict[str, Any], dict[str, Any]],
    PolicyProcessorPipeline[PolicyAction, PolicyAction],
]:
    """Pre- and post-processor pipelines of a pi0_fast policy (LeRobot's factory convention)."""
    if config.action_layout == "core":
        return make_core_pi0_fast_pre_post_processors(config, dataset_stats)
    return make_split_layout_processors(config, dataset_stats, config.action_tokenizer_name)
