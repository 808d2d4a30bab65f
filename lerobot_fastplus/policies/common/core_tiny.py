"""LeRobot's *core* pi05 at the tiny variant, for parity tests and benchmarks against the plugin's policies.

Core pi05 hard-codes the published Gemma sizes and So400m SigLIP. ``core_pi05_tiny`` builds the unmodified
core classes while the two module-level builders they call are swapped for the tiny ones (only during
construction), so the result has exactly the parameters of a plugin policy with ``gemma_tiny`` variants.
"""

from __future__ import annotations

from unittest import mock

import lerobot.policies.pi05.modeling_pi05 as core_pi05
from lerobot.policies.pi05 import PI05Config, PI05Policy
from transformers import PaliGemmaConfig

from lerobot_fastplus.policies.common.backbone import GEMMA_VARIANTS, TINY_VARIANT, paligemma_hf_config


def core_pi05_tiny(config: PI05Config) -> PI05Policy:
    """A core ``PI05Policy`` whose backbone and expert are ``gemma_tiny`` (config variants are ignored)."""
    build_paligemma = core_pi05.PaliGemmaForConditionalGenerationWithPiGemma

    def tiny_paligemma(config: PaliGemmaConfig) -> core_pi05.PaliGemmaForConditionalGenerationWithPiGemma:
        tiny = paligemma_hf_config(TINY_VARIANT, config.vision_config.image_size)
        config.vision_config = tiny.vision_config
        return build_paligemma(config=config)

    with (
        mock.patch.object(core_pi05, "get_gemma_config", lambda variant: GEMMA_VARIANTS[TINY_VARIANT]),
        mock.patch.object(core_pi05, "PaliGemmaForConditionalGenerationWithPiGemma", tiny_paligemma),
    ):
        return PI05Policy(config)
