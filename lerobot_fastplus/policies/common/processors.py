"""Processor pipelines shared by the plugin's pi0-family policies (pi05_ki, pi0_fast with the split layout).

Input: rename, batch dim, relative actions (optional), normalise, the pi0.5 prompt with the discretised state
(``Task: <task>, State: <bins>;\\nAction: ``, core pi05's step), text tokenization (``text_tokenizer_name``,
a hub id or a local directory), split-layout FAST tokens of the normalised target chunk (training batches only;
the step embeds the tokenizer in the processor JSON), device. Output: unnormalise, absolute actions, CPU.
Core step classes are reused, so the saved JSON stays readable by LeRobot.
"""

from __future__ import annotations

from typing import Any

import torch
from lerobot.configs import PreTrainedConfig
from lerobot.policies.pi05.processor_pi05 import Pi05PrepareStateTokenizerProcessorStep
from lerobot.processor import (
    AbsoluteActionsProcessorStep,
    PolicyAction,
    PolicyProcessorPipeline,
    ProcessorStep,
    RelativeActionsProcessorStep,
    TokenizerProcessorStep,
    make_default_policy_processor_steps,
    make_policy_processor_pipelines,
)

from lerobot_fastplus.fast_action_step import FastActionTokenizerStep


def make_split_layout_processors(
    config: PreTrainedConfig,
    dataset_stats: dict[str, dict[str, torch.Tensor]] | None,
    fast_tokenizer_path: str,
) -> tuple[
    PolicyProcessorPipeline[dict[str, Any], dict[str, Any]],
    PolicyProcessorPipeline[PolicyAction, PolicyAction],
]:
    """Pre- and post-processors for a pi0-family config with ``text_tokenizer_name``, ``split_every`` and
    ``max_action_tokens``; ``fast_tokenizer_path`` is the FAST tokenizer (local directory or hub id)."""
    relative_step = RelativeActionsProcessorStep(
        enabled=config.use_relative_actions,
        exclude_joints=config.relative_exclude_joints,
        action_names=config.action_feature_names,
    )
    steps = make_default_policy_processor_steps(config, dataset_stats)
    input_steps: list[ProcessorStep] = [
        steps.rename_observations,
        steps.add_batch_dim,
        relative_step,
        steps.normalize,  # before the prompt (state bins) and FAST (normalised actions) steps
        Pi05PrepareStateTokenizerProcessorStep(max_state_dim=config.max_state_dim),
        TokenizerProcessorStep(
            tokenizer_name=config.text_tokenizer_name,
            max_length=config.tokenizer_max_length,
            padding_side="right",
            padding="max_length",
        ),
        FastActionTokenizerStep(
            tokenizer_path=fast_tokenizer_path,
            chunk_size=config.chunk_size,
            split_every=config.split_every,
            max_tokens=config.max_action_tokens,
        ),
        steps.to_device,
    ]
    output_steps: list[ProcessorStep] = [
        steps.unnormalize,
        AbsoluteActionsProcessorStep(enabled=config.use_relative_actions, relative_step=relative_step),
        steps.to_cpu,
    ]
    return make_policy_processor_pipelines(input_steps=input_steps, output_steps=output_steps)
