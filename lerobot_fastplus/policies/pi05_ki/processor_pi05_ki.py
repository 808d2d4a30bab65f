"""Processors of ``pi05_ki``: pi05's pipeline with a configurable text tokenizer and the FAST action step
(``policies.common.processors`` describes the steps)."""

from __future__ import annotations

from typing import Any

import torch
from lerobot.processor import PolicyAction, PolicyProcessorPipeline

from lerobot_fastplus.policies.common.processors import make_split_layout_processors
from lerobot_fastplus.policies.pi05_ki.configuration_pi05_ki import PI05KIConfig


def make_pi05_ki_pre_post_processors(
    config: PI05KIConfig,
    dataset_stats: dict[str, dict[str, torch.Tensor]] | None = None,
) -> tuple[
    PolicyProcessorPipeline[dict[str, Any], dict[str, Any]],
    PolicyProcessorPipeline[PolicyAction, PolicyAction],
]:
    """Pre- and post-processor pipelines of a pi05_ki policy (LeRobot's factory convention)."""
    return make_split_layout_processors(config, dataset_stats, config.fast_tokenizer_path)
